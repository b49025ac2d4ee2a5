//! Connection settings for one MySQL/MariaDB endpoint. The password never appears in Debug output.

use std::fmt;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};

use super::error::{EngineError, Result, SqlContext};

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
        }
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

    pub fn opts(&self) -> Opts {
        OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(Some(self.password.expose().to_string()))
            .db_name(self.database.clone())
            // Loopback TCP must stay TCP: the server's socket may authenticate as another user.
            .prefer_socket(false)
            .into()
    }

    pub async fn connect(&self) -> Result<Conn> {
        Conn::new(self.opts())
            .await
            .map_err(|source| EngineError::Connect {
                endpoint: self.endpoint(),
                source,
            })
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
