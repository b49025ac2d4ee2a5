//! Keys whose last change seen in the binlog was a delete, for a row copy that reads without row
//! locks (`--copy-without-locks`).
//!
//! Such a copy reads the original as of its statement's start. A transaction's events can reach
//! the binlog stream just before its commit is visible to new reads, so a delete may be applied
//! to the ghost table and then a copy still sees the row and writes it back. Inserts and updates
//! are safe already: the applier writes whole rows with REPLACE, and the copy's INSERT IGNORE
//! never overwrites a row. So each copy transaction deletes again, after its insert, the keys in
//! its chunk that are gone; later changes to them are applied after it, as ever.

use std::collections::BTreeSet;

use mysql_async::Value;

use super::chunk_ledger::integer_key;
use super::streamer::RowChange;

/// Gone keys held at most; beyond, the copy goes back to locking reads.
const MAX_GONE_KEYS: usize = 1_000_000;

#[derive(Debug)]
pub struct GoneKeys {
    keys: BTreeSet<i128>,
    /// The key column's index in the original's row images.
    key_column: usize,
}

impl GoneKeys {
    pub fn new(key_column: usize) -> Self {
        Self {
            keys: BTreeSet::new(),
            key_column,
        }
    }

    /// A change to the original, in binlog order. False when its keys cannot be read, or too
    /// many keys are held: the copy must then lock again.
    #[must_use]
    pub fn observe(&mut self, change: &RowChange) -> bool {
        let key = |image: &Option<Vec<Value>>| {
            image
                .as_ref()
                .map(|row| row.get(self.key_column).and_then(integer_key))
        };
        let (before, after) = (key(&change.before), key(&change.after));
        if matches!(before, Some(None)) || matches!(after, Some(None)) {
            return false;
        }
        if let Some(Some(before)) = before {
            if after != Some(Some(before)) {
                self.keys.insert(before);
            }
        }
        if let Some(Some(after)) = after {
            self.keys.remove(&after);
        }
        self.keys.len() <= MAX_GONE_KEYS
    }

    /// The gone keys in (`after`, `through`] (from the lowest, without `after`).
    pub fn in_chunk(&self, after: Option<i128>, through: i128) -> Vec<Value> {
        let keys: Box<dyn Iterator<Item = &i128>> = match after {
            Some(after) if after >= through => return Vec::new(),
            Some(after) => Box::new(self.keys.range(after + 1..=through)),
            None => Box::new(self.keys.range(..=through)),
        };
        keys.map(|&k| match i64::try_from(k) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::UInt(u64::try_from(k).unwrap_or(u64::MAX)),
        })
        .collect()
    }

    /// The copy is past `through`: it never reads those keys again.
    pub fn passed(&mut self, through: i128) {
        self.keys = self.keys.split_off(&(through + 1));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::position::BinlogCoordinates;
    use crate::engine::schema::TableSchema;
    use crate::engine::streamer::ChangeKind;

    fn change(kind: ChangeKind, before: Option<i64>, after: Option<i64>) -> RowChange {
        let image = |k: Option<i64>| k.map(|k| vec![Value::Int(k), Value::Bytes(b"x".to_vec())]);
        RowChange {
            table: Arc::new(TableSchema {
                schema: "db".into(),
                name: "t".into(),
                columns: Vec::new(),
            }),
            kind,
            before: image(before),
            after: image(after),
            event_end: BinlogCoordinates::new("bin.000001", 4),
            gtid: None,
            timestamp: 0,
        }
    }

    fn keys(gone: &GoneKeys, after: Option<i128>, through: i128) -> Vec<i64> {
        gone.in_chunk(after, through)
            .iter()
            .filter_map(|v| match v {
                Value::Int(i) => Some(*i),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_last_change_decides_whether_a_key_is_gone() {
        let mut gone = GoneKeys::new(0);
        assert!(gone.observe(&change(ChangeKind::Delete, Some(5), None)));
        assert!(gone.observe(&change(ChangeKind::Delete, Some(9), None)));
        assert!(gone.observe(&change(ChangeKind::Insert, None, Some(9))));
        // A key moved from 20 to 30: 20 is gone, 30 is not.
        assert!(gone.observe(&change(ChangeKind::Delete, Some(30), None)));
        assert!(gone.observe(&change(ChangeKind::Update, Some(20), Some(30))));
        // An update in place leaves its key present.
        assert!(gone.observe(&change(ChangeKind::Update, Some(40), Some(40))));
        assert_eq!(keys(&gone, None, 100), [5, 20]);
    }

    #[test]
    fn a_chunk_gets_its_own_keys_and_the_copy_forgets_what_it_passed() {
        let mut gone = GoneKeys::new(0);
        for k in [1, 10, 11, 20, 21] {
            assert!(gone.observe(&change(ChangeKind::Delete, Some(k), None)));
        }
        assert_eq!(
            keys(&gone, Some(10), 20),
            [11, 20],
            "after is left out, through kept"
        );
        assert_eq!(keys(&gone, None, 10), [1, 10]);
        assert_eq!(keys(&gone, Some(20), 20), Vec::<i64>::new());
        gone.passed(20);
        assert_eq!(keys(&gone, None, 100), [21]);
    }

    #[test]
    fn an_unreadable_key_stops_the_copy_without_locks() {
        let mut gone = GoneKeys::new(0);
        let mut null_key = change(ChangeKind::Delete, Some(1), None);
        null_key.before = Some(vec![Value::NULL]);
        assert!(!gone.observe(&null_key));
    }
}
