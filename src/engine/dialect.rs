//! Everything that differs between MariaDB and MySQL lives here, so the rest of the engine asks
//! one question ("which statement?") instead of sniffing versions itself.

use mysql_async::{Conn, Row, prelude::Queryable};

use super::error::{EngineError, Result, SqlContext};
use super::position::BinlogCoordinates;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    MariaDb,
    MySql,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerInfo {
    pub flavor: Flavor,
    pub version: (u16, u16, u16),
    pub version_string: String,
}

impl ServerInfo {
    /// Reads `@@version` / `@@version_comment` and classifies the server.
    pub async fn detect(conn: &mut Conn) -> Result<Self> {
        let row: Option<(String, String)> = conn
            .query_first("SELECT @@version, @@version_comment")
            .await
            .sql_context(|| "reading server version".into())?;
        let (version_string, comment) = row.unwrap_or_default();
        Ok(Self::from_strings(&version_string, &comment))
    }

    pub fn from_strings(version_string: &str, comment: &str) -> Self {
        let is_maria = version_string.to_ascii_lowercase().contains("mariadb")
            || comment.to_ascii_lowercase().contains("mariadb");
        Self {
            flavor: if is_maria {
                Flavor::MariaDb
            } else {
                Flavor::MySql
            },
            version: parse_version(version_string),
            version_string: version_string.to_string(),
        }
    }

    pub fn is_mariadb(&self) -> bool {
        self.flavor == Flavor::MariaDb
    }

    /// The statement that shows the current binary log file and position.
    pub fn binlog_status_sql(&self) -> &'static str {
        match self.flavor {
            // MySQL 8.2 added the new name; 8.4 removed the old one.
            Flavor::MySql if self.version >= (8, 2, 0) => "SHOW BINARY LOG STATUS",
            _ => "SHOW MASTER STATUS",
        }
    }

    /// Shared-lock clause for consistent chunk reads.
    pub fn share_lock_clause(&self) -> &'static str {
        match self.flavor {
            Flavor::MySql if self.version >= (8, 0, 0) => "FOR SHARE",
            _ => "LOCK IN SHARE MODE",
        }
    }

    /// The statement that shows replication status on a replica.
    pub fn replica_status_sql(&self) -> &'static str {
        match self.flavor {
            Flavor::MySql if self.version >= (8, 0, 22) => "SHOW REPLICA STATUS",
            Flavor::MariaDb if self.version >= (10, 5, 1) => "SHOW REPLICA STATUS",
            _ => "SHOW SLAVE STATUS",
        }
    }

    /// Current binary log coordinates of this server.
    pub async fn binlog_coordinates(&self, conn: &mut Conn) -> Result<BinlogCoordinates> {
        let sql = self.binlog_status_sql();
        let row: Option<Row> = conn
            .query_first(sql)
            .await
            .sql_context(|| format!("{sql} (needs BINLOG MONITOR / REPLICATION CLIENT)"))?;
        let row = row.ok_or_else(|| {
            EngineError::ServerConfig(format!(
                "{sql} returned nothing: binary logging is off; start the server with log_bin"
            ))
        })?;
        let file: Option<String> = row.get(0);
        let pos: Option<u64> = row.get(1);
        match (file, pos) {
            (Some(file), Some(pos)) => Ok(BinlogCoordinates { file, pos }),
            _ => Err(EngineError::ServerConfig(format!(
                "{sql} returned an unexpected row shape"
            ))),
        }
    }

    /// The server's GTID position right now, in the form the stream can start from.
    pub async fn gtid_position(&self, conn: &mut Conn) -> Result<String> {
        let sql = match self.flavor {
            Flavor::MariaDb => "SELECT @@global.gtid_binlog_pos",
            Flavor::MySql => "SELECT @@global.gtid_executed",
        };
        let pos: Option<Option<String>> = conn
            .query_first(sql)
            .await
            .sql_context(|| "reading GTID position".into())?;
        Ok(pos.flatten().unwrap_or_default().replace('\n', ""))
    }
}

fn parse_version(version: &str) -> (u16, u16, u16) {
    // "10.11.19-MariaDB-0+deb12u1-log", "8.4.2", "5.5.5-10.11.6-MariaDB" (old proxies).
    let trimmed = version.strip_prefix("5.5.5-").unwrap_or(version);
    let mut parts = trimmed
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u16>().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_servers() {
        let maria = ServerInfo::from_strings("10.11.19-MariaDB-0+deb12u1-log", "Debian 12");
        assert_eq!(maria.flavor, Flavor::MariaDb);
        assert_eq!(maria.version, (10, 11, 19));
        assert_eq!(maria.binlog_status_sql(), "SHOW MASTER STATUS");
        assert_eq!(maria.share_lock_clause(), "LOCK IN SHARE MODE");

        let mysql84 = ServerInfo::from_strings("8.4.2", "MySQL Community Server - GPL");
        assert_eq!(mysql84.flavor, Flavor::MySql);
        assert_eq!(mysql84.binlog_status_sql(), "SHOW BINARY LOG STATUS");
        assert_eq!(mysql84.share_lock_clause(), "FOR SHARE");

        let mysql57 = ServerInfo::from_strings("5.7.44-log", "MySQL Community Server (GPL)");
        assert_eq!(mysql57.binlog_status_sql(), "SHOW MASTER STATUS");
        assert_eq!(mysql57.replica_status_sql(), "SHOW SLAVE STATUS");

        let proxied = ServerInfo::from_strings("5.5.5-10.6.12-MariaDB", "");
        assert_eq!(proxied.version, (10, 6, 12));
        assert!(proxied.is_mariadb());
    }
}
