//! Turns row changes from the streamer into statements on the target (ghost) table, and applies
//! them in batches, one transaction per batch.

mod batch;

use mysql_async::{Conn, Value, prelude::Queryable};

pub use batch::KeyWindow;

use super::conn::in_transaction;
use super::copier::fail_on_warnings;
use super::error::{EngineError, Result, SqlContext};
use super::json_value;
use super::schema::{ColumnKind, ColumnSchema, TableSchema};
use super::streamer::{ChangeKind, RowChange};
use crate::sql::dml::{
    ColumnSlot, count_matching, delete_by_key, insert_ignore_into, replace_into, update_by_key,
};
use crate::sql::{is_bare_word, qualified, quote_literal};

/// Session settings shared by the copy and apply sessions: an explicit 0 stays in an
/// AUTO_INCREMENT column, strict mode unless disabled, zero dates when allowed (gh-ost's
/// `--allow-zero-in-date`).
pub fn sql_mode_expression(allow_zero_in_date: bool, strict: bool) -> String {
    let base = if allow_zero_in_date {
        "REPLACE(REPLACE(@@session.sql_mode, 'NO_ZERO_IN_DATE', ''), 'NO_ZERO_DATE', '')"
    } else {
        "@@session.sql_mode"
    };
    let extra = if strict {
        "'NO_AUTO_VALUE_ON_ZERO,STRICT_ALL_TABLES'"
    } else {
        "'NO_AUTO_VALUE_ON_ZERO'"
    };
    format!("CONCAT_WS(',', {base}, {extra})")
}

/// Prepares a session to write binlog-decoded values: raw bytes for text (each placeholder
/// reinterprets them in the column's charset), UTC for TIMESTAMP.
pub async fn prepare_apply_session(conn: &mut Conn, allow_zero_in_date: bool) -> Result<()> {
    prepare_apply_session_with(conn, allow_zero_in_date, false).await
}

pub async fn prepare_apply_session_with(
    conn: &mut Conn,
    allow_zero_in_date: bool,
    strict: bool,
) -> Result<()> {
    conn.query_drop(format!(
        "SET NAMES binary, time_zone = '+00:00', sql_mode = {}",
        sql_mode_expression(allow_zero_in_date, strict)
    ))
    .await
    .sql_context(|| "preparing the apply session".into())
}

/// The placeholder that turns a bound binlog value of `source` into the value the copy would have
/// written into `target`.
pub fn placeholder(source: &ColumnSchema, target: &ColumnSchema, time_zone: &str) -> String {
    match (source.kind, target.kind) {
        (ColumnKind::Text, _) => {
            let Some(src_cs) = source.charset.as_deref().filter(|c| is_bare_word(c)) else {
                return "?".into();
            };
            let value = format!("CONVERT(? USING {src_cs})");
            text_in_target(value, src_cs, target)
        }
        // ENUM arrives as its index; a text column wants the member's name.
        (ColumnKind::Enum, ColumnKind::Text) => match enum_members(&source.column_type) {
            Some(members) => text_in_target(
                format!("CONVERT(ELT(?, {members}) USING utf8mb4)"),
                "utf8mb4",
                target,
            ),
            None => "?".into(),
        },
        // The copy ran in the server's time zone, so a DATETIME became TIMESTAMP in that zone.
        (ColumnKind::DateTime { .. }, ColumnKind::Timestamp { .. }) => {
            format!("CONVERT_TZ(?, {}, '+00:00')", quote_literal(time_zone))
        }
        (ColumnKind::Json, _) | (_, ColumnKind::Json) => {
            "CAST(CONVERT(? USING utf8mb4) AS JSON)".into()
        }
        _ => "?".into(),
    }
}

/// Converts a text expression in `source_charset` to the target column's charset and collation,
/// so it compares and assigns exactly like the target's own values.
fn text_in_target(value: String, source_charset: &str, target: &ColumnSchema) -> String {
    match (
        &target.kind,
        target.charset.as_deref(),
        target.collation.as_deref(),
    ) {
        (ColumnKind::Text, Some(cs), Some(coll)) if is_bare_word(cs) && is_bare_word(coll) => {
            if cs.eq_ignore_ascii_case(source_charset) {
                format!("{value} COLLATE {coll}")
            } else {
                format!("CONVERT({value} USING {cs}) COLLATE {coll}")
            }
        }
        _ => value,
    }
}

/// `enum('a','b')` -> `'a','b'` (already quoted by the server).
fn enum_members(column_type: &str) -> Option<String> {
    let start = column_type.find('(')? + 1;
    let end = column_type.rfind(')')?;
    (end > start).then(|| column_type[start..end].to_string())
}

/// The statement a parameter list belongs to, to build it again with other placeholders.
#[derive(Clone, Copy)]
enum Shape {
    InsertIgnore,
    Replace,
    Update,
}

/// Kinds whose equal values have equal binlog bytes: what [`ApplyPlan::lane_statements`] hashes.
fn equal_by_bytes(kind: &ColumnKind) -> bool {
    matches!(
        kind,
        ColumnKind::Integer { .. }
            | ColumnKind::Decimal
            | ColumnKind::Date
            | ColumnKind::DateTime { .. }
            | ColumnKind::Timestamp { .. }
            | ColumnKind::Time { .. }
            | ColumnKind::Year
            | ColumnKind::Binary
    )
}

/// One statement with its bound values.
#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Value>,
}

/// How a change's row image is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// gh-ost's: `INSERT IGNORE` for inserts, `UPDATE` by key for updates. A row the copy skipped
    /// stays missing, and a collision on another unique key is a warning, never a deleted row.
    InsertOrUpdate,
    /// Every insert and update writes the whole after image with `REPLACE`, so a row the copy
    /// skipped (a unique value still held by another row's stale copy) is written by its next
    /// change. Safe only when every unique key of the target is enforced by the source too:
    /// then a collision is always with a stale value that a later change moves away.
    Replace,
}

/// How changes of one source table map onto a target table: which source columns are written,
/// under which target names, and which identify a row.
#[derive(Clone, Debug)]
pub struct ApplyPlan {
    written: Vec<usize>,
    key: Vec<usize>,
    mode: WriteMode,
    /// REPLACE mode writes each batch as its keys' last states (`batch.rs`).
    coalesce: bool,
    /// Two keys are the same row exactly when their binlog values are the same bytes (no
    /// collation, padding or signed zero makes different bytes equal), in both tables.
    key_equal_by_bytes: bool,
    target: String,
    slots: Vec<ColumnSlot>,
    key_slots: Vec<ColumnSlot>,
    insert_sql: String,
    replace_sql: String,
    delete_sql: String,
    update_sql: String,
    key_count_sql: String,
    row_count_sql: String,
}

impl ApplyPlan {
    /// `column_map` pairs source column names with target column names (shared columns only);
    /// `key` names the source columns of the unique key shared by both tables; `time_zone` is the
    /// server's `@@global.time_zone` (the copy's zone).
    pub fn new(
        source: &TableSchema,
        target: &TableSchema,
        column_map: &[(String, String)],
        key: &[String],
        time_zone: &str,
    ) -> Result<Self> {
        let target_name = qualified(&target.schema, &target.name);
        let find = |table: &TableSchema, name: &str| {
            table
                .column_index(name)
                .ok_or_else(|| EngineError::UnsupportedTable {
                    table: table.qualified_name(),
                    reason: format!("column `{name}` is not in the table"),
                })
        };
        let target_of = |source_name: &str| {
            column_map
                .iter()
                .find(|(s, _)| s.eq_ignore_ascii_case(source_name))
                .map(|(_, t)| t.clone())
        };
        let mut written = Vec::new();
        let mut slots = Vec::new();
        for (source_name, target_name) in column_map {
            let s = find(source, source_name)?;
            let t = find(target, target_name)?;
            if source.columns[s].generated || target.columns[t].generated {
                continue;
            }
            written.push(s);
            slots.push(ColumnSlot {
                name: target.columns[t].name.clone(),
                placeholder: placeholder(&source.columns[s], &target.columns[t], time_zone),
            });
        }
        let mut key_indexes = Vec::new();
        let mut key_slots = Vec::new();
        let mut key_equal_by_bytes = true;
        for name in key {
            let s = find(source, name)?;
            let t = find(target, &target_of(name).unwrap_or_else(|| name.clone()))?;
            key_equal_by_bytes &=
                equal_by_bytes(&source.columns[s].kind) && equal_by_bytes(&target.columns[t].kind);
            key_indexes.push(s);
            key_slots.push(ColumnSlot {
                name: target.columns[t].name.clone(),
                placeholder: placeholder(&source.columns[s], &target.columns[t], time_zone),
            });
        }
        if key_indexes.is_empty() {
            return Err(EngineError::UnsupportedTable {
                table: source.qualified_name(),
                reason: "no unique key to identify rows".into(),
            });
        }
        Ok(Self {
            insert_sql: insert_ignore_into(&target_name, &slots),
            replace_sql: replace_into(&target_name, &slots),
            delete_sql: delete_by_key(&target_name, &key_slots),
            update_sql: update_by_key(&target_name, &slots, &key_slots),
            key_count_sql: count_matching(&target_name, &key_slots, &[]),
            row_count_sql: count_matching(&target_name, &key_slots, &slots),
            written,
            key: key_indexes,
            mode: WriteMode::InsertOrUpdate,
            coalesce: false,
            target: target_name,
            slots,
            key_slots,
            key_equal_by_bytes,
        })
    }

    /// The same plan writing with `mode`.
    pub fn with_mode(mut self, mode: WriteMode) -> Self {
        self.mode = mode;
        self
    }

    /// The same plan collapsing each batch to its keys' last states when in REPLACE mode.
    pub fn with_coalescing(mut self, coalesce: bool) -> Self {
        self.coalesce = coalesce;
        self
    }

    pub fn mode(&self) -> WriteMode {
        self.mode
    }

    /// Why batches cannot be applied in lanes ([`ApplyPlan::lane_statements`]), or None.
    pub fn lanes_refused(&self) -> Option<&'static str> {
        if self.mode != WriteMode::Replace || !self.coalesce {
            return Some(
                "changes are not coalesced (--coalesce-changes, and every unique key of the new \
                 table enforced by the original)",
            );
        }
        if !self.key_equal_by_bytes {
            // Lanes are chosen by the key's bytes: a key moved from 'a' to 'A' under a _ci
            // collation would put the delete of 'a' and the image of 'A' (the same row to the
            // server) in two lanes, and the delete could land last.
            return Some(
                "the shared key has a column compared by collation, padding or as a float \
                 (text, CHAR/BINARY, FLOAT); lanes need integer, decimal, temporal or VARBINARY \
                 key columns",
            );
        }
        None
    }

    /// A row with `image`'s key exists in the target.
    pub async fn has_key(&self, conn: &mut Conn, image: &[Value]) -> Result<bool> {
        let params: Vec<Value> = self.key.iter().map(|&i| image[i].clone()).collect();
        self.count(conn, &self.key_count_sql, params).await
    }

    /// The target holds exactly `image` (its key and every written column).
    pub async fn has_row(&self, conn: &mut Conn, image: &[Value]) -> Result<bool> {
        let mut params: Vec<Value> = self.key.iter().map(|&i| image[i].clone()).collect();
        params.extend(self.written.iter().map(|&i| image[i].clone()));
        self.count(conn, &self.row_count_sql, params).await
    }

    async fn count(&self, conn: &mut Conn, sql: &str, params: Vec<Value>) -> Result<bool> {
        let n: Option<u64> = conn
            .exec_first(sql, params)
            .await
            .sql_context(|| "looking for a row in the target table".into())?;
        Ok(n.unwrap_or(0) > 0)
    }

    /// A plan onto a table with the same definition (identity column map).
    pub fn identity(source: &TableSchema, target: &TableSchema, key: &[String]) -> Result<Self> {
        let map: Vec<(String, String)> = source
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.name.clone()))
            .collect();
        Self::new(source, target, &map, key, "SYSTEM")
    }

    /// `statement` with every JSON expression among its first `slots.len()` parameters (one per
    /// written column, in order) put in place of that column's placeholder
    /// (`engine::json_value`). Most rows have none and keep the prepared text.
    fn with_json_expressions(&self, statement: Statement, shape: Shape) -> Statement {
        let written = self.slots.len().min(statement.params.len());
        if !statement.params[..written]
            .iter()
            .any(|p| json_value::expression(p).is_some())
        {
            return statement;
        }
        let mut slots = self.slots.clone();
        let mut params = Vec::with_capacity(statement.params.len());
        for (i, param) in statement.params.into_iter().enumerate() {
            match json_value::expression(&param).filter(|_| i < written) {
                Some(expr) => {
                    slots[i].placeholder = expr.sql;
                    params.extend(
                        expr.params
                            .into_iter()
                            .map(|p| Value::Bytes(p.into_bytes())),
                    );
                }
                None => params.push(param),
            }
        }
        let sql = match shape {
            Shape::InsertIgnore => insert_ignore_into(&self.target, &slots),
            Shape::Replace => replace_into(&self.target, &slots),
            Shape::Update => update_by_key(&self.target, &slots, &self.key_slots),
        };
        Statement { sql, params }
    }

    /// The statements that apply `change` to the target. An update that moves the key becomes a
    /// delete of the old key plus an insert of the new row.
    pub fn statements(&self, change: &RowChange) -> Result<Vec<Statement>> {
        fn image<'a>(
            change: &RowChange,
            img: &'a Option<Vec<Value>>,
            what: &str,
        ) -> Result<&'a Vec<Value>> {
            img.as_ref().ok_or_else(|| missing_image(change, what))
        }
        let pick =
            |row: &[Value], idx: &[usize]| idx.iter().map(|&i| row[i].clone()).collect::<Vec<_>>();
        let (write_sql, write_shape) = match self.mode {
            WriteMode::InsertOrUpdate => (&self.insert_sql, Shape::InsertIgnore),
            WriteMode::Replace => (&self.replace_sql, Shape::Replace),
        };
        let write = |after: &[Value]| {
            self.with_json_expressions(
                Statement {
                    sql: write_sql.clone(),
                    params: pick(after, &self.written),
                },
                write_shape,
            )
        };
        Ok(match change.kind {
            ChangeKind::Insert => {
                let after = image(change, &change.after, "after")?;
                vec![write(after)]
            }
            ChangeKind::Delete => {
                let before = image(change, &change.before, "before")?;
                vec![Statement {
                    sql: self.delete_sql.clone(),
                    params: pick(before, &self.key),
                }]
            }
            ChangeKind::Update => {
                let before = image(change, &change.before, "before")?;
                let after = image(change, &change.after, "after")?;
                let old_key = pick(before, &self.key);
                let key_kept = old_key == pick(after, &self.key);
                if key_kept && self.mode == WriteMode::Replace {
                    vec![write(after)]
                } else if key_kept {
                    let mut params = pick(after, &self.written);
                    params.extend(old_key);
                    vec![self.with_json_expressions(
                        Statement {
                            sql: self.update_sql.clone(),
                            params,
                        },
                        Shape::Update,
                    )]
                } else {
                    vec![
                        Statement {
                            sql: self.delete_sql.clone(),
                            params: old_key,
                        },
                        write(after),
                    ]
                }
            }
        })
    }

    /// Applies one change on `conn` (a session prepared with [`prepare_apply_session`]).
    pub async fn apply(&self, conn: &mut Conn, change: &RowChange) -> Result<()> {
        for statement in self.statements(change)? {
            conn.exec_drop(&statement.sql, statement.params)
                .await
                .sql_context(|| format!("applying {:?} at {}", change.kind, change.event_end))?;
        }
        Ok(())
    }

    /// Applies a batch of changes in one transaction. With `check_warnings` (the ghost table's
    /// migration key name), a warning other than a duplicate on that key fails the batch.
    /// `under_lock`: the session holds LOCK TABLES with autocommit off, where START TRANSACTION
    /// would release the lock; the batch then ends with COMMIT alone.
    /// Changes to keys in `window` are left to the row copy ([`KeyWindow`]).
    pub async fn apply_batch(
        &self,
        conn: &mut Conn,
        changes: &[RowChange],
        window: Option<&KeyWindow>,
        check_warnings: Option<&str>,
        under_lock: bool,
    ) -> Result<()> {
        let statements = self.batch_statements(changes, window)?;
        if !under_lock {
            return in_transaction(conn, "an apply transaction", async |conn: &mut Conn| {
                run_statements(conn, statements, check_warnings).await
            })
            .await;
        }
        match run_statements(conn, statements, check_warnings).await {
            Ok(()) => conn
                .query_drop("COMMIT")
                .await
                .sql_context(|| "committing an apply batch under the cut-over lock".into()),
            Err(e) => {
                let _ = conn.query_drop("ROLLBACK").await;
                Err(e)
            }
        }
    }

    /// Applies a batch over several sessions at once, one transaction each, split by key
    /// ([`ApplyPlan::lane_statements`]). Every session's transaction ends before this returns;
    /// on an error some may have committed, and applying the same batch again is correct.
    pub async fn apply_batch_in_lanes(
        &self,
        conns: &mut [Conn],
        changes: &[RowChange],
        window: Option<&KeyWindow>,
        check_warnings: Option<&str>,
    ) -> Result<()> {
        let lanes = self.lane_statements(changes, window, conns.len())?;
        let work = conns
            .iter_mut()
            .zip(lanes)
            .filter(|(_, statements)| !statements.is_empty())
            .map(|(conn, statements)| {
                in_transaction(
                    conn,
                    "an apply transaction",
                    async move |conn: &mut Conn| {
                        run_statements(conn, statements, check_warnings).await
                    },
                )
            });
        // All of them, not the first error: a session dropped mid-statement would be left in an
        // unknown state.
        futures_util::future::join_all(work)
            .await
            .into_iter()
            .collect::<Result<Vec<()>>>()
            .map(|_| ())
    }
}

/// Runs one batch's statements in order on `conn`; see [`ApplyPlan::apply_batch`].
async fn run_statements(
    conn: &mut Conn,
    statements: Vec<Statement>,
    check_warnings: Option<&str>,
) -> Result<()> {
    let total = statements.len();
    for (i, statement) in statements.into_iter().enumerate() {
        conn.exec_drop(&statement.sql, statement.params)
            .await
            .sql_context(|| format!("applying statement {} of {total}", i + 1))?;
        if let Some(key) = check_warnings {
            fail_on_warnings(conn, key, &format!("statement {} of {total}", i + 1)).await?;
        }
    }
    Ok(())
}

/// A row event without the image its kind needs (`what`: "before" or "after").
fn missing_image(change: &RowChange, what: &str) -> EngineError {
    EngineError::Stream(format!(
        "{:?} on {} without a {what} image",
        change.kind,
        change.table.qualified_name()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::schema::classify;

    fn col(
        name: &str,
        data_type: &str,
        column_type: &str,
        charset: Option<&str>,
        collation: Option<&str>,
    ) -> ColumnSchema {
        ColumnSchema {
            name: name.into(),
            data_type: data_type.into(),
            column_type: column_type.into(),
            kind: classify(data_type, column_type, None, Some(0)),
            nullable: true,
            charset: charset.map(str::to_string),
            collation: collation.map(str::to_string),
            generated: false,
        }
    }

    #[test]
    fn placeholders_follow_source_and_target() {
        let latin = col(
            "t",
            "varchar",
            "varchar(10)",
            Some("latin1"),
            Some("latin1_swedish_ci"),
        );
        let utf = col(
            "t",
            "varchar",
            "varchar(10)",
            Some("utf8mb4"),
            Some("utf8mb4_general_ci"),
        );
        assert_eq!(
            placeholder(&latin, &latin, "SYSTEM"),
            "CONVERT(? USING latin1) COLLATE latin1_swedish_ci"
        );
        assert_eq!(
            placeholder(&latin, &utf, "SYSTEM"),
            "CONVERT(CONVERT(? USING latin1) USING utf8mb4) COLLATE utf8mb4_general_ci"
        );
        let en = col(
            "e",
            "enum",
            "enum('a','b,c')",
            Some("utf8mb4"),
            Some("utf8mb4_general_ci"),
        );
        assert_eq!(
            placeholder(&en, &utf, "SYSTEM"),
            "CONVERT(ELT(?, 'a','b,c') USING utf8mb4) COLLATE utf8mb4_general_ci"
        );
        let dt = col("d", "datetime", "datetime", None, None);
        let ts = col("d", "timestamp", "timestamp", None, None);
        assert_eq!(
            placeholder(&dt, &ts, "SYSTEM"),
            "CONVERT_TZ(?, 'SYSTEM', '+00:00')"
        );
        assert_eq!(placeholder(&dt, &dt, "SYSTEM"), "?");
    }

    #[test]
    fn sql_mode_keeps_zero_and_strictness() {
        assert_eq!(
            sql_mode_expression(false, true),
            "CONCAT_WS(',', @@session.sql_mode, 'NO_AUTO_VALUE_ON_ZERO,STRICT_ALL_TABLES')"
        );
        assert!(sql_mode_expression(true, false).contains("REPLACE(REPLACE("));
    }
}
