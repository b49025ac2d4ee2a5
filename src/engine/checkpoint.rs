//! Checkpoints in `_<t>_ghk`: where a restarted engine continues. A checkpoint is only written at
//! a consistent point: every binlog change up to `position` is applied to the ghost table and
//! every key up to `copied_through` is copied. Resuming replays the stream from `position` (the
//! apply is idempotent) and copies after `copied_through` (`INSERT IGNORE` is idempotent too).

use mysql_async::{Conn, Value, prelude::Queryable};
use serde_json::json;

use super::ddl::drop_table_if_exists;
use super::error::{EngineError, Result, SqlContext};
use super::position::{BinlogCoordinates, BinlogPosition};
use crate::sql::qualified;

#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub position: BinlogPosition,
    /// The largest key copied; None before the first chunk.
    pub copied_through: Option<Vec<Value>>,
    pub copy_complete: bool,
    pub rows_copied: u64,
    pub events_applied: u64,
    /// Written after a successful cut-over: `position` is where the swapped table's own changes
    /// begin, which `--revert` streams from.
    pub is_cut_over: bool,
    /// What the run that wrote it does (table, ALTER, options that change the result), so a
    /// `--resume` with another command is refused. None in checkpoints of older versions.
    pub run: Option<String>,
}

#[derive(Clone, Debug)]
pub struct CheckpointTable {
    table: String,
    schema: String,
    name: String,
}

impl CheckpointTable {
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
               gh_ost_chk_id BIGINT AUTO_INCREMENT PRIMARY KEY, \
               gh_ost_chk_timestamp BIGINT, \
               gh_ost_chk_coords TEXT CHARSET ascii, \
               gh_ost_chk_iteration BIGINT, \
               gh_ost_rows_copied BIGINT, \
               gh_ost_dml_applied BIGINT, \
               gh_ost_is_cutover TINYINT(1) DEFAULT '0', \
               ghost_gtid TEXT CHARSET ascii, \
               ghost_copied_through MEDIUMTEXT CHARSET ascii, \
               ghost_copy_complete TINYINT(1) NOT NULL DEFAULT 0, \
               ghost_run TEXT CHARSET utf8mb4\
             ) COMMENT='ghost checkpoints'",
            self.table
        ))
        .await
        .sql_context(|| format!("creating {}", self.table))
    }

    pub async fn drop_table(&self, conn: &mut Conn) -> Result<()> {
        drop_table_if_exists(conn, &self.schema, &self.name).await
    }

    pub async fn write(
        &self,
        conn: &mut Conn,
        checkpoint: &Checkpoint,
        iteration: u64,
    ) -> Result<()> {
        let copied = checkpoint.copied_through.as_deref().map(encode_key);
        conn.exec_drop(
            format!(
                "INSERT INTO {} (gh_ost_chk_timestamp, gh_ost_chk_coords, gh_ost_chk_iteration, gh_ost_rows_copied, \
                 gh_ost_dml_applied, ghost_gtid, ghost_copied_through, ghost_copy_complete, gh_ost_is_cutover, \
                 ghost_run) VALUES (UNIX_TIMESTAMP(NOW()), ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                self.table
            ),
            (
                checkpoint.position.coordinates.to_string(),
                iteration,
                checkpoint.rows_copied,
                checkpoint.events_applied,
                checkpoint.position.gtid.clone(),
                copied,
                checkpoint.copy_complete,
                checkpoint.is_cut_over,
                checkpoint.run.clone(),
            ),
        )
        .await
        .sql_context(|| format!("writing a checkpoint to {}", self.table))
    }

    /// The newest checkpoint of a copy in progress.
    pub async fn latest(&self, conn: &mut Conn) -> Result<Option<Checkpoint>> {
        self.newest(conn, false).await
    }

    /// The newest cut-over checkpoint (`--revert` starts from it).
    pub async fn latest_cut_over(&self, conn: &mut Conn) -> Result<Option<Checkpoint>> {
        self.newest(conn, true).await
    }

    async fn newest(&self, conn: &mut Conn, cut_over: bool) -> Result<Option<Checkpoint>> {
        type CheckpointRow = (
            String,
            Option<String>,
            Option<String>,
            bool,
            u64,
            u64,
            Option<String>,
        );
        let row: Option<CheckpointRow> = conn
            .exec_first(
                format!(
                    "SELECT gh_ost_chk_coords, ghost_gtid, ghost_copied_through, ghost_copy_complete, \
                     gh_ost_rows_copied, gh_ost_dml_applied, ghost_run FROM {} \
                     WHERE COALESCE(gh_ost_is_cutover, 0) = ? ORDER BY gh_ost_chk_id DESC LIMIT 1",
                    self.table
                ),
                (cut_over,),
            )
            .await
            .sql_context(|| format!("reading the last checkpoint from {}", self.table))?;
        let Some((coords, gtid, copied, complete, rows, events, run)) = row else {
            return Ok(None);
        };
        Ok(Some(Checkpoint {
            position: BinlogPosition {
                coordinates: BinlogCoordinates::parse(&coords)?,
                gtid,
            },
            copied_through: copied.as_deref().map(decode_key).transpose()?,
            copy_complete: complete,
            rows_copied: rows,
            events_applied: events,
            is_cut_over: cut_over,
            run,
        }))
    }
}

/// A key tuple as JSON with a type tag per value, so every value comes back bit-identical.
pub fn encode_key(values: &[Value]) -> String {
    let items: Vec<serde_json::Value> = values
        .iter()
        .map(|v| match v {
            Value::NULL => json!(["null"]),
            Value::Int(i) => json!(["i", i.to_string()]),
            Value::UInt(u) => json!(["u", u.to_string()]),
            Value::Float(f) => json!(["f", f.to_bits()]),
            Value::Double(d) => json!(["d", d.to_bits().to_string()]),
            Value::Bytes(b) => json!(["b", hex::encode(b)]),
            Value::Date(y, mo, d, h, mi, s, us) => json!(["date", y, mo, d, h, mi, s, us]),
            Value::Time(neg, d, h, m, s, us) => json!(["time", neg, d, h, m, s, us]),
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

pub fn decode_key(text: &str) -> Result<Vec<Value>> {
    let bad = |reason: &str| {
        EngineError::Refused(format!(
            "the checkpoint's key is unreadable ({reason}); start over without --resume"
        ))
    };
    let parsed: serde_json::Value = serde_json::from_str(text).map_err(|_| bad("not JSON"))?;
    let items = parsed.as_array().ok_or_else(|| bad("not a list"))?;
    items
        .iter()
        .map(|item| {
            let parts = item.as_array().ok_or_else(|| bad("not a tagged value"))?;
            let tag = parts
                .first()
                .and_then(|t| t.as_str())
                .ok_or_else(|| bad("no tag"))?;
            let num = |i: usize| {
                parts
                    .get(i)
                    .and_then(|v| v.as_u64())
                    .ok_or_else(|| bad("bad number"))
            };
            let text = |i: usize| {
                parts
                    .get(i)
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| bad("bad text"))
            };
            Ok(match tag {
                "null" => Value::NULL,
                "i" => Value::Int(text(1)?.parse().map_err(|_| bad("bad integer"))?),
                "u" => Value::UInt(text(1)?.parse().map_err(|_| bad("bad integer"))?),
                "f" => Value::Float(f32::from_bits(num(1)? as u32)),
                "d" => Value::Double(f64::from_bits(
                    text(1)?.parse().map_err(|_| bad("bad double"))?,
                )),
                "b" => Value::Bytes(hex::decode(text(1)?).map_err(|_| bad("bad hex"))?),
                "date" => Value::Date(
                    num(1)? as u16,
                    num(2)? as u8,
                    num(3)? as u8,
                    num(4)? as u8,
                    num(5)? as u8,
                    num(6)? as u8,
                    num(7)? as u32,
                ),
                "time" => Value::Time(
                    parts
                        .get(1)
                        .and_then(|v| v.as_bool())
                        .ok_or_else(|| bad("bad sign"))?,
                    num(2)? as u32,
                    num(3)? as u8,
                    num(4)? as u8,
                    num(5)? as u8,
                    num(6)? as u32,
                ),
                _ => return Err(bad("unknown tag")),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_exactly() {
        let key = vec![
            Value::NULL,
            Value::Int(i64::MIN),
            Value::UInt(u64::MAX),
            Value::Float(-0.1),
            Value::Double(f64::MIN_POSITIVE),
            Value::Bytes(vec![0, 255, 0]),
            Value::Date(2024, 2, 29, 13, 14, 15, 123456),
            Value::Time(true, 34, 22, 59, 59, 999000),
        ];
        let text = encode_key(&key);
        assert_eq!(decode_key(&text).unwrap(), key);
    }

    #[test]
    fn refuses_garbage() {
        assert!(decode_key("nope").is_err());
        assert!(decode_key("[[\"zz\", 1]]").is_err());
        assert!(decode_key("[[\"i\", \"x\"]]").is_err());
    }
}
