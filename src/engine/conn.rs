//! Connection settings for one MySQL/MariaDB endpoint. The password never appears in Debug output.

use std::fmt;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};

use super::error::{EngineError, Result, SqlContext};
use super::tls::{TlsConfig, TlsVerify};

/// A secret string: printable only through `expose()`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Secret,
    /// Default schema for the session, if any.
    pub database: Option<String>,
    /// TLS for this endpoint; None: clear text.
    pub tls: Option<TlsConfig>,
    /// gh-ost's `--mysql-timeout`: bounds connecting, and is each session's
    /// `net_read_timeout`/`net_write_timeout`. None: the driver's and server's defaults.
    pub timeout: Option<Duration>,
}

impl ConnectionConfig {
    pub fn new(
        host: impl Into<String>,
        port: u16,
        user: impl Into<String>,
        password: Secret,
    ) -> Self {
        Self {
            host: host.into(),
            port,
            user: user.into(),
            password,
            database: None,
            tls: None,
            timeout: None,
        }
    }

    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout.filter(|t| !t.is_zero());
        self
    }

    pub fn with_tls(mut self, tls: Option<TlsConfig>) -> Self {
        self.tls = tls;
        self
    }

    pub fn with_database(mut self, database: impl Into<String>) -> Self {
        self.database = Some(database.into());
        self
    }

    /// `host:port`, for messages.
    pub fn endpoint(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn opts(&self, certificate_name: Option<String>) -> Opts {
        OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(Some(self.password.expose().to_string()))
            .db_name(self.database.clone())
            // Loopback TCP must stay TCP: the server's socket may authenticate as another user.
            .prefer_socket(false)
            // With TLS asked for, a server that cannot do it fails the connection: no fallback.
            .ssl_opts(self.tls.as_ref().map(|tls| tls.ssl_opts(certificate_name)))
            .init(self.session_timeouts())
            .into()
    }

    /// The server's side of `--mysql-timeout`: whole seconds, at least one.
    fn session_timeouts(&self) -> Vec<String> {
        self.timeout
            .map(|t| {
                let seconds = t.as_secs_f64().ceil().max(1.0) as u64;
                vec![format!(
                    "SET SESSION net_read_timeout = {seconds}, net_write_timeout = {seconds}"
                )]
            })
            .unwrap_or_default()
    }

    pub async fn connect(&self) -> Result<Conn> {
        let certificate_name = match &self.tls {
            Some(tls) if tls.verify == TlsVerify::Ca => Some(
                super::tls::peer_name::certificate_name(
                    &self.host,
                    self.port,
                    tls.ca.as_ref(),
                    self.timeout,
                )
                .await?,
            ),
            _ => None,
        };
        let connecting = Conn::new(self.opts(certificate_name));
        let connected = match self.timeout {
            Some(limit) => match tokio::time::timeout(limit, connecting).await {
                Ok(result) => result,
                // An I/O error, so the reconnect logic treats it like any other network failure.
                Err(_) => Err(mysql_async::Error::Io(mysql_async::IoError::Io(
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "no connection within --mysql-timeout={}s",
                            limit.as_secs_f64()
                        ),
                    ),
                ))),
            },
            None => connecting.await,
        };
        connected.map_err(|source| match &source {
            // The server answered: the connection works, the database name does not.
            mysql_async::Error::Server(e) if e.code == 1049 => EngineError::Refused(format!(
                "database `{}` does not exist on {}: check --database (SHOW DATABASES lists them)",
                self.database.as_deref().unwrap_or_default(),
                self.endpoint()
            )),
            // 3159: the server accepts only TLS (MySQL). MariaDB says 1045, like a wrong password.
            mysql_async::Error::Server(e) if self.tls.is_none() && matches!(e.code, 3159 | 1045) => {
                EngineError::Refused(format!(
                    "cannot connect to {}: {}; if the server accepts only TLS connections, pass --ssl \
                     (and --ssl-ca=<CA bundle> when its certificate is not from a public CA; \
                     spec.connection.tls in Kubernetes)",
                    self.endpoint(),
                    super::error::server_error_text(&source)
                ))
            }
            _ => EngineError::Connect {
                endpoint: self.endpoint(),
                source,
            },
        })
    }
}

/// How to open a session again: the endpoint and the statements that prepare it (time zone,
/// sql_mode, character set). Every long-lived session of a migration is opened through one, so
/// a session the server killed, a reset connection or a restarted server is replaced by an
/// identical one.
#[derive(Clone, Debug)]
pub struct SessionFactory {
    endpoint: ConnectionConfig,
    init: Vec<String>,
}

/// How long a ping may take before the session counts as gone.
const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl SessionFactory {
    pub fn new(endpoint: ConnectionConfig, init: Vec<String>) -> Self {
        Self { endpoint, init }
    }

    pub fn endpoint(&self) -> &ConnectionConfig {
        &self.endpoint
    }

    /// A new, prepared session.
    pub async fn open(&self) -> Result<Conn> {
        let mut conn = self.endpoint.connect().await?;
        for statement in &self.init {
            conn.query_drop(statement)
                .await
                .sql_context(|| format!("preparing a session on {}", self.endpoint.endpoint()))?;
        }
        Ok(conn)
    }

    /// Replaces `conn` with a new session when it no longer answers. Returns whether it did; an
    /// error when it could not (the server is still away: the caller's next attempt retries).
    pub async fn revive(&self, conn: &mut Conn) -> Result<bool> {
        let alive = matches!(
            tokio::time::timeout(PING_TIMEOUT, conn.ping()).await,
            Ok(Ok(()))
        );
        if alive {
            return Ok(false);
        }
        let fresh = self.open().await?;
        let dead = std::mem::replace(conn, fresh);
        // The old session is gone or hung; dropping it closes the socket.
        drop(dead);
        tracing::info!(endpoint = %self.endpoint.endpoint(), "a lost session was replaced");
        Ok(true)
    }
}

/// Runs `body` in one transaction on `conn` (`what` names it in errors, e.g. "a copy
/// transaction"): committed when it succeeds, rolled back (best effort: the transaction is
/// abandoned either way) when it fails.
pub async fn in_transaction<T>(
    conn: &mut Conn,
    what: &str,
    body: impl AsyncFnOnce(&mut Conn) -> Result<T>,
) -> Result<T> {
    conn.query_drop("START TRANSACTION")
        .await
        .sql_context(|| format!("starting {what}"))?;
    match body(conn).await {
        Ok(value) => {
            conn.query_drop("COMMIT")
                .await
                .sql_context(|| format!("committing {what}"))?;
            Ok(value)
        }
        Err(e) => {
            let _ = conn.query_drop("ROLLBACK").await;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let cfg = ConnectionConfig::new("127.0.0.1", 3306, "u", Secret::new("hunter2"));
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn endpoint_brackets_ipv6() {
        let cfg = ConnectionConfig::new("::1", 3306, "u", Secret::default());
        assert_eq!(cfg.endpoint(), "[::1]:3306");
    }
}
