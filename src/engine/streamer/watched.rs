//! A table whose row events are read only for their keys: the ghost table, while the checksum
//! runs during the row copy (`engine::chunk_ledger`). Its changes are never applied; each row's
//! key goes out as [`StreamItem::WatchedKey`] when it is at or below the watched limit. The
//! copy's own transactions are known by a mark and not decoded: most of the ghost table's rows
//! are the copy's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mysql_async::Value;
use mysql_async::binlog::events::{RowsEventData, TableMapEvent};

use super::StreamItem;
use crate::engine::chunk_ledger::integer_key;
use crate::engine::schema::TableSchema;
use crate::engine::values::to_param;

/// The watched table and the highest key whose changes matter (None: none do yet, and nothing
/// is decoded). The migration raises the limit before each consistent point, so a write after
/// the point is never filtered out by a limit from before it.
#[derive(Clone, Debug)]
pub struct WatchedTable {
    pub schema: Arc<TableSchema>,
    /// The key column's index in `schema`: a single integer column.
    pub key_column: usize,
    pub up_to: Arc<Mutex<Option<i128>>>,
    /// The table (the changelog) where each copy transaction first writes a row whose value
    /// starts with `copy_tag`: the rest of that transaction is the copy's rows, above every
    /// watched key, and is skipped undecoded.
    pub marker_table: (String, String),
    pub copy_tag: String,
    /// Rows decoded for their key so far (the copy's own rows are not, when their statements
    /// are logged with their text).
    pub rows_read: Arc<AtomicU64>,
}

impl WatchedTable {
    /// Whether a row written to `marker_table` is a copy transaction's mark.
    pub(super) fn marks_copy(&self, after: Option<&[Value]>) -> bool {
        let tag = self.copy_tag.as_bytes();
        !tag.is_empty()
            && after.is_some_and(|row| {
                row.iter()
                    .any(|v| matches!(v, Value::Bytes(b) if b.starts_with(tag)))
            })
    }

    fn limit(&self) -> Option<i128> {
        match self.up_to.lock() {
            Ok(limit) => *limit,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    /// The keys of a rows event's images at or below the limit. A row whose key cannot be read
    /// gives `WatchedKey(None)`: the caller then trusts no earlier comparison.
    pub(super) fn keys(
        &self,
        rows: &RowsEventData<'_>,
        tme: &TableMapEvent<'_>,
    ) -> Vec<StreamItem> {
        let Some(limit) = self.limit() else {
            return Vec::new();
        };
        let column = &self.schema.columns[self.key_column];
        let mut items = Vec::new();
        for row in rows.rows(tme) {
            self.rows_read.fetch_add(1, Ordering::Relaxed);
            let Ok((before, after)) = row else {
                items.push(StreamItem::WatchedKey(None));
                continue;
            };
            for mut image in [before, after].into_iter().flatten() {
                let key = image
                    .take(self.key_column)
                    .and_then(|value| to_param(column, value).ok())
                    .and_then(|value| integer_key(&value));
                match key {
                    Some(key) if key > limit => {}
                    key => items.push(StreamItem::WatchedKey(key)),
                }
            }
        }
        items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched(tag: &str) -> WatchedTable {
        WatchedTable {
            schema: Arc::new(TableSchema {
                schema: "db".into(),
                name: "_t_gho".into(),
                columns: Vec::new(),
            }),
            key_column: 0,
            up_to: Arc::new(Mutex::new(None)),
            marker_table: ("db".into(), "_t_ghc".into()),
            copy_tag: tag.into(),
            rows_read: Arc::new(AtomicU64::new(0)),
        }
    }

    #[test]
    fn only_a_value_that_starts_with_the_tag_marks_the_copy() {
        let w = watched("ghost-copy 00ff");
        let row = |value: &str| {
            vec![
                Value::UInt(300),
                Value::Bytes(b"copy".to_vec()),
                Value::Bytes(value.as_bytes().to_vec()),
            ]
        };
        assert!(w.marks_copy(Some(&row("ghost-copy 00ff 5f0c-uuid"))));
        assert!(
            !w.marks_copy(Some(&row("ghost-copy 00fe 5f0c-uuid"))),
            "another run's"
        );
        assert!(
            !w.marks_copy(Some(&row("x ghost-copy 00ff"))),
            "not at the start"
        );
        assert!(!w.marks_copy(None), "a delete marks nothing");
        assert!(
            !watched("").marks_copy(Some(&row("anything"))),
            "no tag, no mark"
        );
    }
}
