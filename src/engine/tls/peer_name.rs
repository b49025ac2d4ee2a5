//! `verify-ca`: the server's certificate must chain to the CA, whatever host name it names.
//! mysql_async's rustls path cannot skip only the name check (its skip is inert with current
//! rustls, blackbeam/mysql_async#404), so the name is learnt first: a handshake up to the
//! server's certificate, checked against the CA, reads the names the certificate is for. The
//! real connection then verifies the chain *and* one of those names, which is what `verify-ca`
//! promises: a certificate from that CA, for a name it was issued for.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Pem;
use crate::engine::error::{EngineError, Result};

/// How long the probe may take when the user set no `--mysql-timeout`.
const DEFAULT_LIMIT: Duration = Duration::from_secs(10);

/// The MySQL protocol's capability bits the SSL request needs.
const CLIENT_LONG_PASSWORD: u32 = 0x1;
const CLIENT_PROTOCOL_41: u32 = 0x200;
const CLIENT_SSL: u32 = 0x800;
const CLIENT_SECURE_CONNECTION: u32 = 0x8000;

/// A name the server's certificate (checked against `ca`, or the built-in roots) is valid for.
pub async fn certificate_name(
    host: &str,
    port: u16,
    ca: Option<&Pem>,
    limit: Option<Duration>,
) -> Result<String> {
    let endpoint = format!("{host}:{port}");
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    match tokio::time::timeout(limit, probe(host, port, ca)).await {
        Ok(result) => result
            .map_err(|why| EngineError::Refused(format!("TLS (verify-ca) to {endpoint}: {why}"))),
        Err(_) => Err(EngineError::Refused(format!(
            "TLS (verify-ca) to {endpoint}: no certificate within {}s",
            limit.as_secs_f64()
        ))),
    }
}

async fn probe(host: &str, port: u16, ca: Option<&Pem>) -> std::result::Result<String, String> {
    let mut stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let greeting = read_packet(&mut stream).await?;
    if greeting.first() == Some(&0xff) {
        return Err(format!(
            "the server refused the connection: {}",
            String::from_utf8_lossy(greeting.get(9..).unwrap_or_default())
        ));
    }
    if server_capabilities(&greeting)? & CLIENT_SSL == 0 {
        return Err("the server does not offer TLS (ssl_cert/ssl_key are not set)".into());
    }
    stream
        .write_all(&ssl_request())
        .await
        .map_err(|e| format!("cannot ask for TLS: {e}"))?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots(ca)?), provider.clone())
            .build()
            .map_err(|e| format!("cannot build the certificate verifier: {e}"))?;
    let seen = Arc::new(Mutex::new(None));
    let recorder = Arc::new(NameRecorder {
        inner: verifier,
        seen: seen.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot configure TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(recorder)
        .with_no_client_auth();
    let server_name = ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host:?} is not a host name TLS can check: {e}"))?;
    // The recorder ends the handshake once it has seen the certificate: only its verdict counts.
    let _ = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, stream)
        .await;
    let verdict = seen
        .lock()
        .map_err(|_| "the certificate check panicked".to_string())?
        .take();
    verdict.unwrap_or_else(|| Err("the server sent no certificate".into()))
}

/// One protocol packet's payload.
async fn read_packet(stream: &mut TcpStream) -> std::result::Result<Vec<u8>, String> {
    let mut header = [0u8; 4];
    stream
        .read_exact(&mut header)
        .await
        .map_err(|e| format!("no greeting from the server: {e}"))?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    let mut payload = vec![0u8; len];
    stream
        .read_exact(&mut payload)
        .await
        .map_err(|e| format!("a cut greeting from the server: {e}"))?;
    Ok(payload)
}

/// The capability flags of the server's greeting (protocol 10).
fn server_capabilities(greeting: &[u8]) -> std::result::Result<u32, String> {
    let unreadable = || "an unreadable greeting from the server".to_string();
    if greeting.first() != Some(&10) {
        return Err(unreadable());
    }
    // protocol, version (NUL-terminated), thread id (4), scramble (8), filler (1), caps (2)
    let version_end = greeting
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(unreadable)?;
    let at = version_end + 1 + 4 + 8 + 1;
    let lower = greeting.get(at..at + 2).ok_or_else(unreadable)?;
    // charset (1) and status (2), then the upper half of the flags
    let upper = greeting.get(at + 5..at + 7).unwrap_or(&[0, 0]);
    Ok(u32::from_le_bytes([lower[0], lower[1], upper[0], upper[1]]))
}

/// The client's SSLRequest: flags, max packet, utf8mb4, 23 zero bytes, as sequence 1.
fn ssl_request() -> Vec<u8> {
    let flags = CLIENT_LONG_PASSWORD | CLIENT_PROTOCOL_41 | CLIENT_SSL | CLIENT_SECURE_CONNECTION;
    let mut packet = vec![32, 0, 0, 1];
    packet.extend_from_slice(&flags.to_le_bytes());
    packet.extend_from_slice(&(16u32 << 20).to_le_bytes());
    packet.push(45);
    packet.extend_from_slice(&[0; 23]);
    packet
}

fn roots(ca: Option<&Pem>) -> std::result::Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    let Some(ca) = ca else {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return Ok(store);
    };
    let text = match ca {
        Pem::File(path) => std::fs::read(path)
            .map_err(|e| format!("cannot read the CA certificate {}: {e}", path.display()))?,
        Pem::Inline(bytes) => bytes.clone(),
    };
    for cert in CertificateDer::pem_slice_iter(&text) {
        let cert = cert.map_err(|e| format!("the CA bundle is not PEM: {e}"))?;
        store
            .add(cert)
            .map_err(|e| format!("the CA bundle holds an unusable certificate: {e}"))?;
    }
    if store.is_empty() {
        return Err("the CA bundle holds no certificate".into());
    }
    Ok(store)
}

/// Checks the chain with webpki and keeps a name the certificate is for; then stops.
#[derive(Debug)]
struct NameRecorder {
    inner: Arc<WebPkiServerVerifier>,
    seen: Arc<Mutex<Option<std::result::Result<String, String>>>>,
}

impl ServerCertVerifier for NameRecorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let verdict = match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(_) => Ok(server_name.to_str().into_owned()),
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                presented,
                ..
            })) => presented
                .iter()
                .find_map(|name| usable_name(name))
                .ok_or_else(|| {
                    format!(
                        "the certificate names no host name or address ({presented:?}); \
                             issue it with a subjectAltName, or use mode required"
                    )
                }),
            Err(e) => Err(format!("the server's certificate is not trusted: {e}")),
        };
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(verdict);
        }
        Err(rustls::Error::General("certificate read".into()))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A name from webpki's list of presented names (`DnsName("db.example")`,
/// `IpAddress(10.0.0.1)`) that a connection can be checked against; a wildcard's `*` becomes a
/// label it matches.
fn usable_name(presented: &str) -> Option<String> {
    if let Some(dns) = presented
        .strip_prefix("DnsName(\"")
        .and_then(|rest| rest.strip_suffix("\")"))
    {
        let name = match dns.strip_prefix("*.") {
            Some(parent) => format!("verify-ca.{parent}"),
            None => dns.to_string(),
        };
        return ServerName::try_from(name.clone()).ok().map(|_| name);
    }
    let ip = presented.strip_prefix("IpAddress(")?.strip_suffix(')')?;
    ip.parse::<IpAddr>().ok().map(|ip| ip.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_webpki_presents_them() {
        assert_eq!(
            usable_name("DnsName(\"db.example.com\")").as_deref(),
            Some("db.example.com")
        );
        assert_eq!(
            usable_name("DnsName(\"*.rds.amazonaws.com\")").as_deref(),
            Some("verify-ca.rds.amazonaws.com")
        );
        assert_eq!(
            usable_name("IpAddress(127.0.0.1)").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            usable_name("IpAddress(2001:db8::1)").as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(usable_name("UniformResourceIdentifier(\"x\")"), None);
        assert_eq!(usable_name("DirectoryName"), None);
    }

    #[test]
    fn the_ssl_request_is_32_bytes_after_its_header() {
        let packet = ssl_request();
        assert_eq!(packet.len(), 36);
        assert_eq!(&packet[..4], &[32, 0, 0, 1]);
        let flags = u32::from_le_bytes([packet[4], packet[5], packet[6], packet[7]]);
        assert_ne!(flags & CLIENT_SSL, 0);
    }

    #[test]
    fn capabilities_from_a_greeting() {
        let mut greeting = vec![10];
        greeting.extend_from_slice(b"9.7.0\0");
        greeting.extend_from_slice(&[1, 0, 0, 0]);
        greeting.extend_from_slice(&[0; 8]);
        greeting.push(0);
        greeting.extend_from_slice(&0xffffu16.to_le_bytes());
        greeting.push(45);
        greeting.extend_from_slice(&[2, 0]);
        greeting.extend_from_slice(&0x0001u16.to_le_bytes());
        let flags = server_capabilities(&greeting).expect("flags");
        assert_eq!(flags, 0x0001_ffff);
        assert!(server_capabilities(&[9, 0]).is_err());
    }
}
