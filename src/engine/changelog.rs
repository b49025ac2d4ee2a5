//! The `_<t>_ghc` changelog table: heartbeats and state markers written on the applier and read
//! back through the binary log, which proves the stream is live and measures its lag.

use mysql_async::{Conn, Value, prelude::Queryable};

use super::ddl::drop_table_if_exists;
use super::error::{Result, SqlContext};
use crate::sql::qualified;

pub const HEARTBEAT_ID: u64 = 1;
pub const STATE_ID: u64 = 2;
pub const THROTTLE_ID: u64 = 3;

/// State markers, as gh-ost writes them.
pub const STATE_GHOST_TABLE_MIGRATED: &str = "GhostTableMigrated";
pub const STATE_READ_RANGE: &str = "ReadMigrationRangeValues";
pub const STATE_ALL_EVENTS_UP_TO_LOCK: &str = "AllEventsUpToLockProcessed";
pub const STATE_MIGRATED: &str = "Migrated";

#[derive(Clone, Debug)]
pub struct Changelog {
    table: String,
    schema: String,
    name: String,
}

impl Changelog {
    pub fn new(schema: &str, name: &str) -> Self {
        Self {
            table: qualified(schema, name),
            schema: schema.to_string(),
            name: name.to_string(),
        }
    }

    pub async fn recreate(&self, conn: &mut Conn) -> Result<()> {
        drop_table_if_exists(conn, &self.schema, &self.name).await?;
        conn.query_drop(format!(
            "CREATE TABLE {} (\
               id BIGINT UNSIGNED AUTO_INCREMENT, \
               last_update TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP, \
               hint VARCHAR(64) CHARSET ascii NOT NULL, \
               value VARCHAR(4096) CHARSET ascii NOT NULL, \
               PRIMARY KEY (id), UNIQUE KEY hint_uidx (hint)\
             ) AUTO_INCREMENT=256 COMMENT='ghost changelog'",
            self.table
        ))
        .await
        .sql_context(|| format!("creating {}", self.table))
    }

    pub async fn drop_table(&self, conn: &mut Conn) -> Result<()> {
        drop_table_if_exists(conn, &self.schema, &self.name).await
    }

    async fn write(&self, conn: &mut Conn, id: u64, hint: &str, value: &str) -> Result<()> {
        conn.exec_drop(
            format!(
                "INSERT INTO {} (id, hint, value) VALUES (NULLIF(?, 0), ?, ?) \
                 ON DUPLICATE KEY UPDATE last_update = NOW(), value = VALUES(value)",
                self.table
            ),
            (id, hint, value),
        )
        .await
        .sql_context(|| format!("writing {hint} to {}", self.table))
    }

    pub async fn write_heartbeat(&self, conn: &mut Conn) -> Result<()> {
        self.write(conn, HEARTBEAT_ID, "heartbeat", &now_rfc3339())
            .await
    }

    pub async fn write_state(&self, conn: &mut Conn, state: &str) -> Result<()> {
        self.write(conn, STATE_ID, "state", state).await?;
        let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        self.write(conn, 0, &format!("state at {nanos}"), state)
            .await
    }

    /// A row of its own under `hint` (e.g. the cut-over record), replaced on each write.
    pub async fn write_record(&self, conn: &mut Conn, hint: &str, value: &str) -> Result<()> {
        self.write(conn, 0, hint, value).await
    }

    /// The statement that marks a copy transaction: a row whose value starts with `tag` and
    /// changes on every write (an update that changes nothing is not logged).
    pub fn copy_mark(&self, tag: &str) -> (String, Vec<Value>) {
        (
            format!(
                "INSERT INTO {} (hint, value) VALUES ('copy', CONCAT(?, ' ', UUID())) \
                 ON DUPLICATE KEY UPDATE value = VALUES(value)",
                self.table
            ),
            vec![Value::from(tag)],
        )
    }

    pub async fn write_throttle(&self, conn: &mut Conn, reason: &str) -> Result<()> {
        let value: String = reason.chars().filter(char::is_ascii).take(4096).collect();
        self.write(conn, THROTTLE_ID, "throttle", &value).await
    }
}

/// The longest value a changelog row holds (its `value` column).
pub const VALUE_MAX: usize = 4096;

/// `json` with every non-ASCII character escaped (`\uXXXX`): the changelog's value column is
/// ASCII.
pub fn ascii_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// What a changelog row seen in the binary log means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangelogEvent {
    Heartbeat(chrono::DateTime<chrono::Utc>),
    State(String),
    Other,
}

/// Interprets the after image of a changelog row (`id, last_update, hint, value`).
pub fn interpret(after: &[Value]) -> ChangelogEvent {
    let text = |v: Option<&Value>| match v {
        Some(Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    };
    let hint = text(after.get(2));
    let value = text(after.get(3));
    match hint.as_str() {
        "heartbeat" => chrono::DateTime::parse_from_rfc3339(&value)
            .map(|t| ChangelogEvent::Heartbeat(t.with_timezone(&chrono::Utc)))
            .unwrap_or(ChangelogEvent::Other),
        "state" => ChangelogEvent::State(value),
        _ => ChangelogEvent::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interprets_changelog_rows() {
        let row = |hint: &str, value: &str| {
            vec![
                Value::UInt(1),
                Value::Bytes(b"x".to_vec()),
                Value::Bytes(hint.as_bytes().to_vec()),
                Value::Bytes(value.as_bytes().to_vec()),
            ]
        };
        assert_eq!(
            interpret(&row("state", "GhostTableMigrated")),
            ChangelogEvent::State("GhostTableMigrated".into())
        );
        let now = now_rfc3339();
        assert!(matches!(
            interpret(&row("heartbeat", &now)),
            ChangelogEvent::Heartbeat(_)
        ));
        assert_eq!(
            interpret(&row("heartbeat", "garbage")),
            ChangelogEvent::Other
        );
        assert_eq!(
            interpret(&row("copy iteration 3", "x")),
            ChangelogEvent::Other
        );
    }
}
