//! Turns row changes from the streamer into statements on the target (ghost) table.

use mysql_async::{Conn, Value, prelude::Queryable};

use super::error::{EngineError, Result, SqlContext};
use super::schema::TableSchema;
use super::streamer::{ChangeKind, RowChange};
use crate::sql::dml::{ColumnSlot, delete_by_key, replace_into, update_by_key};
use crate::sql::qualified;

/// Prepares a session to write binlog-decoded values: raw bytes for text (each placeholder
/// reinterprets them in the column's charset), UTC for TIMESTAMP, an explicit 0 kept in an
/// AUTO_INCREMENT column, and zero dates accepted when the user allowed them (gh-ost's
/// `--allow-zero-in-date`).
pub async fn prepare_apply_session(conn: &mut Conn, allow_zero_in_date: bool) -> Result<()> {
    let sql_mode = if allow_zero_in_date {
        "REPLACE(REPLACE(@@session.sql_mode, 'NO_ZERO_IN_DATE', ''), 'NO_ZERO_DATE', '')"
    } else {
        "@@session.sql_mode"
    };
    conn.query_drop(format!(
        "SET NAMES binary, time_zone = '+00:00', \
         sql_mode = CONCAT_WS(',', {sql_mode}, 'NO_AUTO_VALUE_ON_ZERO')"
    ))
    .await
    .sql_context(|| "preparing the apply session".into())
}

/// One statement with its bound values.
#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Value>,
}

/// How changes of one source table map onto a target table: which source columns are written, under
/// which target names, and which identify a row.
#[derive(Clone, Debug)]
pub struct ApplyPlan {
    written: Vec<usize>,
    key: Vec<usize>,
    replace_sql: String,
    delete_sql: String,
    update_sql: String,
}

impl ApplyPlan {
    /// `column_map` pairs source column names with target column names (shared columns only);
    /// `key` names the source columns of the unique key shared by both tables.
    pub fn new(
        source: &TableSchema,
        target_schema: &str,
        target_table: &str,
        column_map: &[(String, String)],
        key: &[String],
    ) -> Result<Self> {
        let target = qualified(target_schema, target_table);
        let lookup = |name: &str| {
            source
                .column_index(name)
                .ok_or_else(|| EngineError::UnsupportedTable {
                    table: source.qualified_name(),
                    reason: format!("column `{name}` is not in the table"),
                })
        };
        let mut written = Vec::new();
        let mut slots = Vec::new();
        for (source_name, target_name) in column_map {
            let index = lookup(source_name)?;
            if source.columns[index].generated {
                continue;
            }
            written.push(index);
            slots.push(ColumnSlot {
                name: target_name.clone(),
                placeholder: source.columns[index].placeholder(),
            });
        }
        let mut key_indexes = Vec::new();
        let mut key_slots = Vec::new();
        for name in key {
            let index = lookup(name)?;
            let target_name = column_map
                .iter()
                .find(|(s, _)| s.eq_ignore_ascii_case(name))
                .map(|(_, t)| t.clone())
                .unwrap_or_else(|| name.clone());
            key_indexes.push(index);
            key_slots.push(ColumnSlot {
                name: target_name,
                placeholder: source.columns[index].placeholder(),
            });
        }
        if key_indexes.is_empty() {
            return Err(EngineError::UnsupportedTable {
                table: source.qualified_name(),
                reason: "no unique key to identify rows".into(),
            });
        }
        Ok(Self {
            replace_sql: replace_into(&target, &slots),
            delete_sql: delete_by_key(&target, &key_slots),
            update_sql: update_by_key(&target, &slots, &key_slots),
            written,
            key: key_indexes,
        })
    }

    /// The statements that apply `change` to the target. An update that moves the key becomes a
    /// delete of the old key plus a replace of the new row.
    pub fn statements(&self, change: &RowChange) -> Result<Vec<Statement>> {
        fn image<'a>(
            change: &RowChange,
            img: &'a Option<Vec<Value>>,
            what: &str,
        ) -> Result<&'a Vec<Value>> {
            img.as_ref().ok_or_else(|| {
                EngineError::Stream(format!(
                    "{:?} on {} without a {what} image",
                    change.kind,
                    change.table.qualified_name()
                ))
            })
        }
        let pick =
            |row: &[Value], idx: &[usize]| idx.iter().map(|&i| row[i].clone()).collect::<Vec<_>>();
        Ok(match change.kind {
            ChangeKind::Insert => {
                let after = image(change, &change.after, "after")?;
                vec![Statement {
                    sql: self.replace_sql.clone(),
                    params: pick(after, &self.written),
                }]
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
                if old_key == pick(after, &self.key) {
                    let mut params = pick(after, &self.written);
                    params.extend(old_key);
                    vec![Statement {
                        sql: self.update_sql.clone(),
                        params,
                    }]
                } else {
                    vec![
                        Statement {
                            sql: self.delete_sql.clone(),
                            params: old_key,
                        },
                        Statement {
                            sql: self.replace_sql.clone(),
                            params: pick(after, &self.written),
                        },
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
}
