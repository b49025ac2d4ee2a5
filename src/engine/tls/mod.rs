//! TLS to the servers: what the user asked for (gh-ost's `--ssl*` flags, or a SchemaMigration's
//! `spec.connection.tls`), turned into the driver's options for every connection the engine
//! opens. rustls, never OpenSSL. A connection that asked for TLS never falls back to clear text:
//! the driver fails the connection instead.

use std::fmt;
use std::path::PathBuf;

use mysql_async::prelude::Queryable;
use mysql_async::{ClientIdentity, Conn, SslOpts};

use crate::engine::error::{EngineError, Result, SqlContext};

pub mod peer_name;

/// How the server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVerify {
    /// Encrypt, trust any certificate (gh-ost's `--ssl-allow-insecure`; `mode: required`).
    None,
    /// The certificate chains to a trusted CA, whatever host name it is for (`verify-ca`).
    Ca,
    /// The CA and the host name (gh-ost's `--ssl`; `verify-identity`).
    Identity,
}

/// PEM text, from a file or already in memory (the operator reads it from a Secret).
#[derive(Clone, PartialEq, Eq)]
pub enum Pem {
    File(PathBuf),
    Inline(Vec<u8>),
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::File(path) => write!(f, "File({})", path.display()),
            // A client key is a secret: never printed.
            Pem::Inline(bytes) => write!(f, "Inline(<{} bytes>)", bytes.len()),
        }
    }
}

/// The driver's "path or bytes" for a Pem (its type is not exported: the call site infers it).
macro_rules! pem_source {
    ($pem:expr) => {
        match $pem {
            Pem::File(path) => path.clone().into(),
            Pem::Inline(bytes) => bytes.clone().into(),
        }
    };
}

impl Pem {
    /// A file must be there and readable before the first connection, so a typo fails at once
    /// and names the file.
    fn check(&self, what: &str) -> Result<()> {
        let Pem::File(path) = self else {
            return Ok(());
        };
        std::fs::read(path)
            .map(|_| ())
            .map_err(|e| EngineError::Refused(format!("{what} {}: {e}", path.display())))
    }
}

/// TLS for every connection to the servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// CA certificates (PEM) trusted instead of the built-in roots (Mozilla's, compiled in).
    pub ca: Option<Pem>,
    /// A client certificate chain and its key (PEM), for servers that require one.
    pub client: Option<(Pem, Pem)>,
    pub verify: TlsVerify,
}

impl TlsConfig {
    /// Checks that every file named exists and can be read.
    pub fn check_files(&self) -> Result<()> {
        if let Some(ca) = &self.ca {
            ca.check("the CA certificate")?;
        }
        if let Some((cert, key)) = &self.client {
            cert.check("the client certificate")?;
            key.check("the client key")?;
        }
        Ok(())
    }

    /// The driver's options. `certificate_name`: for `verify-ca`, the name the server's
    /// certificate is checked against instead of the host (see `peer_name`).
    pub fn ssl_opts(&self, certificate_name: Option<String>) -> SslOpts {
        let mut ssl = SslOpts::default()
            .with_danger_accept_invalid_certs(self.verify == TlsVerify::None)
            .with_danger_tls_hostname_override(certificate_name);
        if let Some(ca) = &self.ca {
            ssl = ssl
                .with_root_certs(vec![pem_source!(ca)])
                .with_disable_built_in_roots(true);
        }
        if let Some((cert, key)) = &self.client {
            ssl = ssl.with_client_identity(Some(ClientIdentity::new(
                pem_source!(cert),
                pem_source!(key),
            )));
        }
        ssl
    }
}

/// The TLS version and cipher of `conn`'s session, as the server sees it (`TLSv1.3
/// TLS_AES_256_GCM_SHA384`); None in clear text.
pub async fn session_tls(conn: &mut Conn) -> Result<Option<String>> {
    let rows: Vec<(String, String)> = conn
        .query("SHOW SESSION STATUS WHERE Variable_name IN ('Ssl_version', 'Ssl_cipher')")
        .await
        .sql_context(|| "reading the session's TLS status".into())?;
    let value = |name: &str| {
        rows.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    Ok(match (value("Ssl_version"), value("Ssl_cipher")) {
        (Some(version), Some(cipher)) => Some(format!("{version} {cipher}")),
        (Some(version), None) => Some(version),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_inline_pem() {
        let tls = TlsConfig {
            ca: None,
            client: Some((
                Pem::Inline(b"-----BEGIN CERTIFICATE-----".to_vec()),
                Pem::Inline(b"-----BEGIN PRIVATE KEY----- secret".to_vec()),
            )),
            verify: TlsVerify::Identity,
        };
        let shown = format!("{tls:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("bytes"), "{shown}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let tls = TlsConfig {
            ca: Some(Pem::File("/nonexistent/ca.pem".into())),
            client: None,
            verify: TlsVerify::Ca,
        };
        let err = tls.check_files().unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
