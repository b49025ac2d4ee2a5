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
    /// `@@lower_case_table_names`: 0 keeps table names as given, 1 and 2 fold them for lookups
    /// and metadata locks.
    pub lower_case_table_names: u8,
}

/// Column names of the replica status (`SHOW REPLICA STATUS` renamed them on MySQL 8.0.22; MariaDB
/// kept the old ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaStatusColumns {
    pub source_host: &'static str,
    pub source_port: &'static str,
    pub io_running: &'static str,
    pub sql_running: &'static str,
    pub seconds_behind: &'static str,
}

/// How the atomic cut-over swaps the tables on this server (`engine::cutover`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutOverAlgorithm {
    /// RENAME TABLE under LOCK TABLES, in the locking session (MySQL 8.0.13+).
    LockedRename,
    /// A RENAME in a second session, held back by a gate table (MariaDB, older MySQL).
    GatedRename,
}

/// How the gated cut-over sees that its RENAME is queued on the original table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueCheck<'a> {
    /// The RENAME's session waits for a table lock (MariaDB's PROCESSLIST) while it holds this
    /// table's lock, the one it takes right before the original's (a zero-wait read of it times
    /// out; MariaDB allows `lock_wait_timeout = 0`): it waits on the original. Holding the lock
    /// alone is not enough: the RENAME may not have asked for the original's yet.
    LockProbe(&'a str),
    /// The original is the RENAME's first lock: its session waiting for a table lock at all
    /// means waiting there (MariaDB's PROCESSLIST; it replaces characters it cannot show).
    Processlist,
    /// performance_schema shows the pending lock on the original (MySQL before 8.0.13).
    PerformanceSchema,
}

impl ServerInfo {
    /// Reads `@@version` / `@@version_comment` and classifies the server.
    pub async fn detect(conn: &mut Conn) -> Result<Self> {
        let row: Option<(String, String, u8)> = conn
            .query_first("SELECT @@version, @@version_comment, @@lower_case_table_names")
            .await
            .sql_context(|| "reading server version".into())?;
        let (version_string, comment, lower_case_table_names) = row.unwrap_or_default();
        let mut info = Self::from_strings(&version_string, &comment);
        info.lower_case_table_names = lower_case_table_names;
        Ok(info)
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
            lower_case_table_names: 0,
        }
    }

    /// A schema or table name as this server stores it: `lower_case_table_names=1` keeps every
    /// name in lower case (and so do its binlog and information_schema).
    pub fn stored_name(&self, name: &str) -> String {
        if self.lower_case_table_names == 1 {
            name.to_lowercase()
        } else {
            name.to_string()
        }
    }

    /// Table names are compared (and locked) folded to lower case.
    pub fn folds_table_names(&self) -> bool {
        self.lower_case_table_names != 0
    }

    /// RENAME TABLE may run under LOCK TABLES (MySQL 8.0.13, WL#9826); MariaDB refuses it.
    pub fn cut_over_algorithm(&self) -> CutOverAlgorithm {
        match self.flavor {
            Flavor::MySql if self.version >= (8, 0, 13) => CutOverAlgorithm::LockedRename,
            _ => CutOverAlgorithm::GatedRename,
        }
    }

    /// How the gated cut-over sees its RENAME queued on the original; `locked_before` is the
    /// table the RENAME locks right before the original, if any.
    pub fn rename_queue_check<'a>(&self, locked_before: Option<&'a str>) -> QueueCheck<'a> {
        match (self.flavor, locked_before) {
            (Flavor::MySql, _) => QueueCheck::PerformanceSchema,
            (Flavor::MariaDb, Some(name)) => QueueCheck::LockProbe(name),
            (Flavor::MariaDb, None) => QueueCheck::Processlist,
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

    /// The replica status's column names.
    pub fn replica_status_columns(&self) -> ReplicaStatusColumns {
        match self.flavor {
            Flavor::MySql if self.version >= (8, 0, 22) => ReplicaStatusColumns {
                source_host: "Source_Host",
                source_port: "Source_Port",
                io_running: "Replica_IO_Running",
                sql_running: "Replica_SQL_Running",
                seconds_behind: "Seconds_Behind_Source",
            },
            _ => ReplicaStatusColumns {
                source_host: "Master_Host",
                source_port: "Master_Port",
                io_running: "Slave_IO_Running",
                sql_running: "Slave_SQL_Running",
                seconds_behind: "Seconds_Behind_Master",
            },
        }
    }

    /// The variable that says a replica writes what it applies to its own binlog.
    pub fn log_replica_updates_sql(&self) -> &'static str {
        match self.flavor {
            Flavor::MySql if self.version >= (8, 0, 26) => "SELECT @@global.log_replica_updates",
            _ => "SELECT @@global.log_slave_updates",
        }
    }

    /// The executed GTID state: MariaDB's `gtid_binlog_pos`, MySQL's `gtid_executed`.
    pub fn gtid_state_sql(&self) -> &'static str {
        match self.flavor {
            Flavor::MariaDb => "SELECT @@global.gtid_binlog_pos",
            Flavor::MySql => "SELECT @@global.gtid_executed",
        }
    }

    /// Waits (state, seconds) until a replica has applied a GTID state; 0 when it has.
    pub fn wait_for_gtid_sql(&self) -> &'static str {
        match self.flavor {
            // 0 reached, -1 timed out.
            Flavor::MariaDb => "SELECT MASTER_GTID_WAIT(?, ?)",
            // 0 reached, 1 timed out.
            Flavor::MySql => "SELECT WAIT_FOR_EXECUTED_GTID_SET(?, ?)",
        }
    }

    /// Uses the REPLICA words (MySQL 8.0.22, MariaDB 10.5.1); MySQL 8.4 removed the SLAVE ones.
    fn says_replica(&self) -> bool {
        match self.flavor {
            Flavor::MySql => self.version >= (8, 0, 22),
            Flavor::MariaDb => self.version >= (10, 5, 1),
        }
    }

    /// Stops replication on this replica, I/O thread first (`--test-on-replica`).
    pub fn stop_replication_sql(&self) -> [&'static str; 2] {
        if self.says_replica() {
            ["STOP REPLICA IO_THREAD", "STOP REPLICA SQL_THREAD"]
        } else {
            ["STOP SLAVE IO_THREAD", "STOP SLAVE SQL_THREAD"]
        }
    }

    /// Starts replication on this replica again.
    pub fn start_replication_sql(&self) -> &'static str {
        if self.says_replica() {
            "START REPLICA"
        } else {
            "START SLAVE"
        }
    }

    /// Current binary log coordinates of this server.
    pub async fn binlog_coordinates(&self, conn: &mut Conn) -> Result<BinlogCoordinates> {
        Ok(self.binlog_status(conn).await?.0)
    }

    /// Current binary log coordinates, with MySQL's executed GTID set at exactly that point (the
    /// status row's `Executed_Gtid_Set`; None on MariaDB, whose state `BINLOG_GTID_POS` gives).
    pub async fn binlog_status(
        &self,
        conn: &mut Conn,
    ) -> Result<(BinlogCoordinates, Option<String>)> {
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
        let gtids: Option<String> = match self.flavor {
            Flavor::MySql => row
                .get::<Option<String>, _>("Executed_Gtid_Set")
                .flatten()
                .map(|s| s.replace('\n', "")),
            Flavor::MariaDb => None,
        };
        match (file, pos) {
            (Some(file), Some(pos)) => Ok((BinlogCoordinates { file, pos }, gtids)),
            _ => Err(EngineError::ServerConfig(format!(
                "{sql} returned an unexpected row shape"
            ))),
        }
    }

    /// The server's GTID position right now, in the form the stream can start from.
    pub async fn gtid_position(&self, conn: &mut Conn) -> Result<String> {
        let sql = self.gtid_state_sql();
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
        assert_eq!(
            mysql84.stop_replication_sql(),
            ["STOP REPLICA IO_THREAD", "STOP REPLICA SQL_THREAD"]
        );
        assert_eq!(mysql84.start_replication_sql(), "START REPLICA");

        let mysql57 = ServerInfo::from_strings("5.7.44-log", "MySQL Community Server (GPL)");
        assert_eq!(mysql57.binlog_status_sql(), "SHOW MASTER STATUS");
        assert_eq!(mysql57.replica_status_sql(), "SHOW SLAVE STATUS");
        assert_eq!(mysql57.start_replication_sql(), "START SLAVE");

        let proxied = ServerInfo::from_strings("5.5.5-10.6.12-MariaDB", "");
        assert_eq!(proxied.version, (10, 6, 12));
        assert!(proxied.is_mariadb());
    }

    #[test]
    fn cut_over_algorithm_follows_the_server() {
        let maria = ServerInfo::from_strings("11.8.3-MariaDB", "");
        assert_eq!(maria.cut_over_algorithm(), CutOverAlgorithm::GatedRename);
        assert_eq!(
            maria.rename_queue_check(Some("_t_gho")),
            QueueCheck::LockProbe("_t_gho")
        );
        assert_eq!(maria.rename_queue_check(None), QueueCheck::Processlist);
        let mysql = ServerInfo::from_strings("9.7.4", "MySQL Community Server - GPL");
        assert_eq!(mysql.cut_over_algorithm(), CutOverAlgorithm::LockedRename);
        let mysql80 = ServerInfo::from_strings("8.0.12", "MySQL Community Server - GPL");
        assert_eq!(mysql80.cut_over_algorithm(), CutOverAlgorithm::GatedRename);
        assert_eq!(
            mysql80.rename_queue_check(Some("_t_gho")),
            QueueCheck::PerformanceSchema
        );
    }
}
