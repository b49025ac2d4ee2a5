//! Row copy: the table is walked in chunks along the shared unique key, each chunk copied with
//! `INSERT IGNORE … SELECT … LOCK IN SHARE MODE` in one transaction. A chunk is a key range
//! (lower bound exclusive or inclusive, upper bound inclusive), so ranges are disjoint and can be
//! persisted and handed to several workers.

use std::time::{Duration, Instant};

use mysql_async::{Conn, Row, Value, prelude::Queryable};

use super::conn::in_transaction;
use super::error::{EngineError, Result, SqlContext};
use crate::sql::{qualified, quote_ident, quoted_list};

/// A key value: one value per key column.
pub type KeyTuple = Vec<Value>;

/// Builds `(k1, k2) <op> (?, ?)` in the index-friendly expanded form gh-ost uses:
/// `(k1 > ?) OR (k1 = ? AND k2 > ?)` [`OR (k1 = ? AND k2 = ?)` when inclusive].
pub fn tuple_comparison(
    columns: &[String],
    greater: bool,
    inclusive: bool,
) -> (String, Vec<usize>) {
    let op = if greater { ">" } else { "<" };
    let mut terms = Vec::new();
    let mut param_order = Vec::new();
    for i in 0..columns.len() {
        let mut parts = Vec::new();
        for (j, col) in columns.iter().enumerate().take(i) {
            parts.push(format!("{} = ?", quote_ident(col)));
            param_order.push(j);
        }
        parts.push(format!("{} {op} ?", quote_ident(&columns[i])));
        param_order.push(i);
        terms.push(format!("({})", parts.join(" AND ")));
    }
    if inclusive {
        let eq: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(j, c)| {
                param_order.push(j);
                format!("{} = ?", quote_ident(c))
            })
            .collect();
        terms.push(format!("({})", eq.join(" AND ")));
    }
    (format!("({})", terms.join(" OR ")), param_order)
}

fn bind(order: &[usize], values: &[Value]) -> Vec<Value> {
    order.iter().map(|&i| values[i].clone()).collect()
}

/// The copy plan for one table: what is selected, inserted, and along which key.
#[derive(Clone, Debug)]
pub struct Copier {
    source: String,
    ghost: String,
    key_name: String,
    key_columns: Vec<String>,
    /// ENUM key columns are read as their member index (`col+0`): compared with a number, an ENUM
    /// compares by index, which is also its index order; compared with a string it would not be.
    enum_keys: Vec<bool>,
    source_columns: Vec<String>,
    ghost_columns: Vec<String>,
    share_lock: &'static str,
    /// The ghost table's name for the copy key, whose duplicates are expected.
    ghost_key_name: String,
    /// A statement each copy transaction runs first, with its parameters: it marks the
    /// transaction in the binlog as the copy's (`Changelog::copy_mark`).
    mark: Option<(String, Vec<Value>)>,
    /// Reads take no row locks: READ COMMITTED, a consistent read of the original
    /// (`--copy-without-locks`; `row_copy.rs` says when that is safe).
    lock_free: bool,
}

/// The unique key the copy walks.
#[derive(Clone, Debug)]
pub struct CopyKey {
    pub name: String,
    pub columns: Vec<String>,
    /// Which of `columns` are ENUMs (read and compared by member index).
    pub enum_columns: Vec<bool>,
}

/// The result of one chunk.
#[derive(Clone, Debug)]
pub struct ChunkResult {
    pub upper: KeyTuple,
    pub rows: u64,
    pub elapsed: Duration,
    /// The copy skipped a row because another row of the ghost table holds one of its unique
    /// values (a value that row no longer has in the original, or a real duplicate under a new
    /// unique key). The chunk is checked again once the binlog has caught up.
    pub skipped_on_other_key: bool,
}

impl Copier {
    pub fn new(
        schema: &str,
        source_table: &str,
        ghost_table: &str,
        key: CopyKey,
        column_map: &[(String, String)],
        share_lock: &'static str,
    ) -> Self {
        Self {
            source: qualified(schema, source_table),
            ghost: qualified(schema, ghost_table),
            key_name: key.name,
            key_columns: key.columns,
            enum_keys: key.enum_columns,
            source_columns: column_map.iter().map(|(s, _)| s.clone()).collect(),
            ghost_columns: column_map.iter().map(|(_, g)| g.clone()).collect(),
            share_lock,
            ghost_key_name: String::new(),
            mark: None,
            lock_free: false,
        }
    }

    /// The ghost table's highest key up to `max` (None when no row is there): rows the binlog,
    /// or an earlier run, wrote before the copy reached them. Only for a single non-ENUM key
    /// column the ghost table keeps; an error otherwise, as the highest key cannot be told.
    pub async fn ghost_high_water(&self, conn: &mut Conn, max: &[Value]) -> Result<Option<Value>> {
        let cannot_tell = || {
            EngineError::Refused(format!(
                "the highest copied key of {} cannot be read for key ({})",
                self.ghost,
                quoted_list(&self.key_columns)
            ))
        };
        let ([column], [false], [max]) =
            (self.key_columns.as_slice(), self.enum_keys.as_slice(), max)
        else {
            return Err(cannot_tell());
        };
        let Some(index) = self.source_columns.iter().position(|c| c == column) else {
            return Err(cannot_tell());
        };
        let ghost_column = quote_ident(&self.ghost_columns[index]);
        let highest: Option<Value> = conn
            .exec_first(
                format!(
                    "SELECT MAX({ghost_column}) FROM {} WHERE {ghost_column} <= ?",
                    self.ghost
                ),
                (max.clone(),),
            )
            .await
            .sql_context(|| format!("reading the highest key of {}", self.ghost))?;
        Ok(highest.filter(|v| *v != Value::NULL))
    }

    /// The ghost table's name of the copy key (`PRIMARY`, or the unique key holding its columns).
    pub fn with_ghost_key_name(mut self, name: &str) -> Self {
        self.ghost_key_name = name.to_string();
        self
    }

    /// From now on the copy reads without row locks.
    pub fn read_without_locks(&mut self) {
        self.lock_free = true;
    }

    /// From now on the copy reads under shared row locks again.
    pub fn read_with_locks(&mut self) {
        self.lock_free = false;
    }

    /// From now on each copy transaction runs `statement` first.
    pub fn mark_transactions(&mut self, statement: (String, Vec<Value>)) {
        self.mark = Some(statement);
    }

    fn key_list(&self, desc: bool) -> String {
        self.key_columns
            .iter()
            .map(|c| format!("{}{}", quote_ident(c), if desc { " DESC" } else { "" }))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn select_key(&self) -> String {
        self.key_columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if self.enum_keys.get(i).copied().unwrap_or(false) {
                    format!("{}+0 AS {}", quote_ident(c), quote_ident(c))
                } else {
                    quote_ident(c)
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Smallest and largest key, or None for an empty table.
    pub async fn key_range(&self, conn: &mut Conn) -> Result<Option<(KeyTuple, KeyTuple)>> {
        let mut bounds = Vec::new();
        for desc in [false, true] {
            let row: Option<Row> = conn
                .exec_first(
                    format!(
                        "SELECT {} FROM {} FORCE INDEX ({}) ORDER BY {} LIMIT 1",
                        self.select_key(),
                        self.source,
                        quote_ident(&self.key_name),
                        self.key_list(desc)
                    ),
                    (),
                )
                .await
                .sql_context(|| format!("reading the key range of {}", self.source))?;
            match row {
                Some(row) => bounds.push(row.unwrap()),
                None => return Ok(None),
            }
        }
        let max = bounds.pop().unwrap_or_default();
        let min = bounds.pop().unwrap_or_default();
        Ok(Some((min, max)))
    }

    /// The chunk after `lower` (exclusive; inclusive when `first`), at most `chunk_size` rows,
    /// not past `max`. None when no row is left.
    pub async fn next_chunk_end(
        &self,
        conn: &mut Conn,
        lower: &KeyTuple,
        first: bool,
        max: &KeyTuple,
        chunk_size: u64,
    ) -> Result<Option<KeyTuple>> {
        let (lower_cond, lower_order) = tuple_comparison(&self.key_columns, true, first);
        let (upper_cond, upper_order) = tuple_comparison(&self.key_columns, false, true);
        let mut params = bind(&lower_order, lower);
        params.extend(bind(&upper_order, max));
        let offset_sql = format!(
            "SELECT {} FROM {} FORCE INDEX ({}) WHERE {lower_cond} AND {upper_cond} ORDER BY {} LIMIT 1 OFFSET {}",
            self.select_key(),
            self.source,
            quote_ident(&self.key_name),
            self.key_list(false),
            chunk_size.saturating_sub(1)
        );
        let row: Option<Row> = conn
            .exec_first(offset_sql, params.clone())
            .await
            .sql_context(|| format!("finding the next chunk of {}", self.source))?;
        if let Some(row) = row {
            return Ok(Some(row.unwrap()));
        }
        // The last, partial chunk: the largest key among the remaining rows.
        let tail_sql = format!(
            "SELECT {key} FROM (SELECT {key} FROM {} FORCE INDEX ({}) WHERE {lower_cond} AND {upper_cond} \
             ORDER BY {} LIMIT {chunk_size}) AS chunk ORDER BY {} LIMIT 1",
            self.source,
            quote_ident(&self.key_name),
            self.key_list(false),
            self.key_list(true),
            key = self.select_key(),
        );
        let row: Option<Row> = conn
            .exec_first(tail_sql, params)
            .await
            .sql_context(|| format!("finding the last chunk of {}", self.source))?;
        Ok(row.map(Row::unwrap))
    }

    /// Copies the rows with key in (`lower`, `upper`] ([`lower`, `upper`] when `first`) in one
    /// transaction, then deletes the ghost rows of `gone` (keys whose last change seen was a
    /// delete: a read without locks may still see them). With `check_warnings`, any warning
    /// other than a duplicate on the migration key fails the chunk (gh-ost's
    /// `--panic-on-warnings`).
    pub async fn copy_chunk(
        &self,
        conn: &mut Conn,
        lower: &KeyTuple,
        first: bool,
        upper: &KeyTuple,
        check_warnings: Option<&str>,
        gone: &[Value],
    ) -> Result<ChunkResult> {
        let started = Instant::now();
        let (lower_cond, lower_order) = tuple_comparison(&self.key_columns, true, first);
        let (upper_cond, upper_order) = tuple_comparison(&self.key_columns, false, true);
        let mut params = bind(&lower_order, lower);
        params.extend(bind(&upper_order, upper));
        let insert = format!(
            "INSERT IGNORE INTO {} ({}) SELECT {} FROM {} FORCE INDEX ({}) WHERE {lower_cond} AND {upper_cond} {}",
            self.ghost,
            quoted_list(&self.ghost_columns),
            quoted_list(&self.source_columns),
            self.source,
            quote_ident(&self.key_name),
            if self.lock_free { "" } else { self.share_lock }
        );
        if self.lock_free {
            // For the next transaction only: a consistent read of the original, no row locks.
            conn.query_drop("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
                .await
                .sql_context(|| "choosing the copy's isolation level".into())?;
        }
        let delete_gone = match (gone, self.key_columns.as_slice()) {
            ([], _) => None,
            (gone, [key]) => {
                let Some(index) = self.source_columns.iter().position(|c| c == key) else {
                    return Err(EngineError::Refused(format!(
                        "the key column {key} of {} is not copied",
                        self.source
                    )));
                };
                Some(format!(
                    "DELETE FROM {} WHERE {} IN ({})",
                    self.ghost,
                    quote_ident(&self.ghost_columns[index]),
                    vec!["?"; gone.len()].join(", ")
                ))
            }
            _ => {
                return Err(EngineError::Refused(format!(
                    "rows gone from {} are known by a single-column key only",
                    self.source
                )));
            }
        };
        let (rows, skipped_on_other_key) =
            in_transaction(conn, "a copy transaction", async |conn: &mut Conn| {
                if let Some((mark, mark_params)) = &self.mark {
                    conn.exec_drop(mark, mark_params.clone())
                        .await
                        .sql_context(|| "marking a copy transaction in the changelog".into())?;
                }
                conn.exec_drop(&insert, params)
                    .await
                    .sql_context(|| format!("copying a chunk of {}", self.source))?;
                let rows = conn.affected_rows();
                let warnings = conn.get_warnings();
                if let Some(ghost_key) = check_warnings {
                    fail_on_warnings(conn, ghost_key, "row copy").await?;
                }
                let skipped = warnings > 0
                    && skipped_on_other_key(conn, &self.ghost_key_name, warnings).await?;
                if let Some(delete) = &delete_gone {
                    conn.exec_drop(delete, gone.to_vec())
                        .await
                        .sql_context(|| format!("deleting rows gone from {}", self.source))?;
                }
                Ok((rows, skipped))
            })
            .await?;
        Ok(ChunkResult {
            upper: upper.clone(),
            rows,
            elapsed: started.elapsed(),
            skipped_on_other_key,
        })
    }
}

/// After an `INSERT IGNORE` with `count` warnings: whether any row was skipped for a duplicate on
/// a key other than `migration_key` (a duplicate on the migration key is a row the binlog
/// already wrote). When the server lists fewer warnings than it counted, assume so.
async fn skipped_on_other_key(conn: &mut Conn, migration_key: &str, count: u16) -> Result<bool> {
    let warnings: Vec<(String, u32, String)> = conn
        .query("SHOW WARNINGS")
        .await
        .sql_context(|| "reading the copy's warnings".into())?;
    if warnings.len() < usize::from(count) {
        return Ok(true);
    }
    Ok(warnings.iter().any(|(_, code, message)| {
        *code == 1062 && !is_migration_key_duplicate(message, migration_key)
    }))
}

/// `SHOW WARNINGS` after a statement: duplicates on the migration key are expected (the copy and
/// the binlog both write a row); anything else means data would change.
pub async fn fail_on_warnings(conn: &mut Conn, migration_key: &str, what: &str) -> Result<()> {
    let warnings: Vec<(String, u32, String)> = conn
        .query("SHOW WARNINGS")
        .await
        .sql_context(|| "reading warnings".into())?;
    // Every offending warning is reported, as gh-ost does: the first is often a consequence.
    let offending: Vec<String> = warnings
        .into_iter()
        .filter(|(_, _, message)| !is_migration_key_duplicate(message, migration_key))
        .map(|(level, code, message)| format!("{level}: {message} (code {code})"))
        .collect();
    if offending.is_empty() {
        return Ok(());
    }
    Err(EngineError::Warnings(format!(
        "{what}: {} (--panic-on-warnings)",
        offending.join("; ")
    )))
}

/// `Duplicate entry '…' for key 'PRIMARY'` or, on MySQL 8.0.19+, `… for key '_t_gho.PRIMARY'`.
pub fn is_migration_key_duplicate(message: &str, migration_key: &str) -> bool {
    if !message.starts_with("Duplicate entry") {
        return false;
    }
    let Some(pos) = message.rfind("for key '") else {
        return false;
    };
    let key = message[pos + 9..].trim_end_matches('\'');
    let key = key.rsplit('.').next().unwrap_or(key);
    key == migration_key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_tuple_comparisons() {
        let cols = vec!["a".to_string(), "b".to_string()];
        let (sql, order) = tuple_comparison(&cols, true, false);
        assert_eq!(sql, "((`a` > ?) OR (`a` = ? AND `b` > ?))");
        assert_eq!(order, vec![0, 0, 1]);
        let (sql, order) = tuple_comparison(&cols, false, true);
        assert_eq!(
            sql,
            "((`a` < ?) OR (`a` = ? AND `b` < ?) OR (`a` = ? AND `b` = ?))"
        );
        assert_eq!(order, vec![0, 0, 1, 0, 1]);
        let (sql, _) = tuple_comparison(&["id".to_string()], true, true);
        assert_eq!(sql, "((`id` > ?) OR (`id` = ?))");
    }

    #[test]
    fn recognises_duplicates_on_the_migration_key() {
        assert!(is_migration_key_duplicate(
            "Duplicate entry '5' for key 'PRIMARY'",
            "PRIMARY"
        ));
        assert!(is_migration_key_duplicate(
            "Duplicate entry '5' for key '_t_gho.PRIMARY'",
            "PRIMARY"
        ));
        assert!(!is_migration_key_duplicate(
            "Duplicate entry 'x' for key 'uk_name'",
            "PRIMARY"
        ));
        assert!(!is_migration_key_duplicate(
            "Data truncated for column 'a' at row 1",
            "PRIMARY"
        ));
    }
}
