//! Typed engine errors. Every variant says what went wrong and, where the user can act, how to fix it.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error("{context}: {}", server_error_text(.source))]
    Sql {
        context: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error("server configuration refused: {0}")]
    ServerConfig(String),
    #[error("table {table} is not supported: {reason}")]
    UnsupportedTable { table: String, reason: String },
    #[error(
        "{}: `{table}` does not exist in `{schema}`; check --database and --table",
        super::wording::cannot_find_table(.schema, .table)
    )]
    TableNotFound { schema: String, table: String },
    #[error("binlog stream: {0}")]
    Stream(String),
    #[error(
        "binlog stream failed at {position} and could not reconnect after {attempts} attempts: {last_error}"
    )]
    StreamGaveUp {
        position: String,
        attempts: u32,
        last_error: String,
    },
    #[error("cannot decode column `{column}` of {table}: {reason}")]
    Decode {
        table: String,
        column: String,
        reason: String,
    },
    #[error("table {table} changed while it was being followed: {reason}")]
    SchemaChanged { table: String, reason: String },
    #[error("{0}")]
    Refused(String),
    /// gh-ost's wording, which its test corpus and users' alerting match on.
    #[error("ERROR warnings detected in {0}")]
    Warnings(String),
    #[error("cut-over failed: {0}")]
    CutOver(String),
    #[error("checksum: {0}")]
    Checksum(String),
    #[error("migration cancelled: {0}")]
    Cancelled(String),
    #[error("{what} failed after {attempts} attempts: {last}")]
    RetriesExhausted {
        what: String,
        attempts: u32,
        last: String,
    },
    #[error("invalid position {input:?}: {reason}")]
    InvalidPosition { input: String, reason: String },
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Server errors in the form MySQL users know from the client and from gh-ost:
/// `Error 1067 (42000): Invalid default value for 'dt'`.
pub fn server_error_text(error: &mysql_async::Error) -> String {
    match error {
        mysql_async::Error::Server(s) => format!("Error {} ({}): {}", s.code, s.state, s.message),
        other => other.to_string(),
    }
}

/// A session or the server went away (killed, reset, restarted, timed out): the operation may
/// succeed on a new session, so it is retried within the retry budget.
pub fn is_connection_error(error: &EngineError) -> bool {
    let source = match error {
        EngineError::Connect { source, .. } | EngineError::Sql { source, .. } => source,
        _ => return false,
    };
    match source {
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => true,
        // Server shutdown, gone away, lost connection, connection killed (MariaDB), query
        // interrupted by a KILL, the wait for a lock ended by a restart, too many connections.
        // Never a refusal such as a wrong password: retrying that cannot help.
        mysql_async::Error::Server(s) => {
            matches!(s.code, 1053 | 2006 | 2013 | 1927 | 1317 | 3169 | 1040)
        }
        _ => false,
    }
}

/// A row-lock wait ended (1205, lock wait timeout) or InnoDB chose this transaction as a
/// deadlock's victim (1213): the same statement can succeed once the other side moves on.
pub fn is_lock_wait(error: &EngineError) -> bool {
    matches!(server_code(error), Some(1205 | 1213))
}

/// Error 1061: an index of that name exists already.
pub fn is_duplicate_key_name(error: &EngineError) -> bool {
    server_code(error) == Some(1061)
}

fn server_code(error: &EngineError) -> Option<u16> {
    match error {
        EngineError::Sql {
            source: mysql_async::Error::Server(s),
            ..
        } => Some(s.code),
        _ => None,
    }
}

/// Attaches a human context to a mysql_async error.
pub trait SqlContext<T> {
    fn sql_context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> SqlContext<T> for std::result::Result<T, mysql_async::Error> {
    fn sql_context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| EngineError::Sql {
            context: context(),
            source,
        })
    }
}

/// A statement's server error with `code`, for tests of the classifiers above.
#[cfg(test)]
pub(crate) fn sql_error(code: u16) -> EngineError {
    EngineError::Sql {
        context: "c".into(),
        source: tests::server_error(code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn server_error(code: u16) -> mysql_async::Error {
        mysql_async::Error::Server(mysql_async::ServerError {
            code,
            message: "m".into(),
            state: "HY000".into(),
        })
    }

    #[test]
    fn only_lost_sessions_are_connection_errors() {
        let connect = |code| EngineError::Connect {
            endpoint: "h:1".into(),
            source: server_error(code),
        };
        assert!(
            !is_connection_error(&connect(1045)),
            "a wrong password is final"
        );
        assert!(
            is_connection_error(&connect(1040)),
            "too many connections passes"
        );
        assert!(is_connection_error(&sql_error(2013)));
        assert!(is_connection_error(&sql_error(1927)));
        assert!(!is_connection_error(&sql_error(1062)));
        assert!(!is_connection_error(&EngineError::Refused("no".into())));
    }

    #[test]
    fn lock_waits_and_deadlocks_are_told_apart() {
        assert!(is_lock_wait(&sql_error(1205)));
        assert!(is_lock_wait(&sql_error(1213)));
        assert!(!is_lock_wait(&sql_error(2013)));
        assert!(!is_lock_wait(&EngineError::Refused("no".into())));
    }
}
