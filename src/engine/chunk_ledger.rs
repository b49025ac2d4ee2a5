//! Which copied chunks the checksum has already found equal, and which changed since.
//!
//! While a single copier walks a single integer key, the checksum compares the chunks copied so
//! far at consistent points during the copy. A chunk found equal stays so until a change reaches
//! it: a binlog change to the original (so the applier's work is still checked) or any write to
//! the ghost table seen in the binlog (writes from outside the migration). Its key is recorded:
//! rows of an equal chunk that nothing changed are equal still, in both tables. The final gate
//! then compares the chunks not known equal, the open end above the last one, and the recorded
//! keys one by one.
//!
//! Keys are integers here, ordered as the server orders them; the ledger is not used otherwise.

use std::collections::{BTreeSet, HashMap};

use mysql_async::Value;

use super::checksum::KeyRange;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not compared, or found different, or changed too much since.
    Unverified,
    /// Handed to a comparison at a consistent point; keys changed since are recorded.
    Pending,
    /// Equal at a consistent point; keys changed since are recorded.
    Verified,
}

/// Keys recorded for one chunk before comparing the whole chunk again is the cheaper way.
const MAX_CHANGED_KEYS_PER_CHUNK: usize = 5_000;

/// The copied chunks in key order: chunk `i` holds the keys in (`bounds[i-1]`, `bounds[i]`],
/// chunk 0 every key up to `bounds[0]`.
#[derive(Debug, Default)]
pub struct ChunkLedger {
    bounds: Vec<i128>,
    states: Vec<State>,
    /// Per pending or verified chunk, the keys changed (in either table) since its point: at
    /// the gate only those rows are compared again, not the whole chunk.
    changed: HashMap<usize, BTreeSet<i128>>,
    /// Chunks `..covered` were part of a consistent point: a change to them matters.
    covered: usize,
}

/// Chunks `from..to` of the ledger, to be compared at one consistent point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkSpan {
    pub from: usize,
    pub to: usize,
}

/// What the gate still compares: whole key ranges, and single keys of chunks otherwise equal.
#[derive(Debug, Default)]
pub struct LeftToCompare {
    pub ranges: Vec<KeyRange>,
    /// Per chunk, the keys changed since it was found equal, with the chunk's whole range (what
    /// is compared when those keys differ).
    pub keys: Vec<(KeyRange, Vec<Value>)>,
}

impl ChunkLedger {
    /// A chunk copied through `through`, above every earlier one. False when it is not: the
    /// ledger is then unusable and the caller drops it.
    #[must_use]
    pub fn copied(&mut self, through: i128) -> bool {
        if self.bounds.last().is_some_and(|&last| through <= last) {
            return false;
        }
        self.bounds.push(through);
        self.states.push(State::Unverified);
        true
    }

    /// The highest key a consistent point taken now would cover (the last copied chunk's).
    pub fn copied_through(&self) -> Option<i128> {
        self.bounds.last().copied()
    }

    /// Chunks copied since the last point, not yet handed to a comparison.
    pub fn uncovered(&self) -> usize {
        self.bounds.len() - self.covered
    }

    /// A consistent point was taken: every chunk copied so far is covered from now on, and those
    /// not known equal are handed to a comparison at that point.
    pub fn take_point(&mut self) -> Vec<ChunkSpan> {
        self.covered = self.bounds.len();
        let mut spans: Vec<ChunkSpan> = Vec::new();
        for i in 0..self.covered {
            if self.states[i] != State::Unverified {
                continue;
            }
            self.states[i] = State::Pending;
            self.changed.remove(&i);
            match spans.last_mut() {
                Some(span) if span.to == i => span.to = i + 1,
                _ => spans.push(ChunkSpan { from: i, to: i + 1 }),
            }
        }
        spans
    }

    /// A key changed (in either table): recorded for its chunk, if covered and not already
    /// left to a whole comparison.
    pub fn changed(&mut self, key: i128) {
        let i = self.bounds[..self.covered].partition_point(|&bound| bound < key);
        if i == self.covered || self.states[i] == State::Unverified {
            return;
        }
        let keys = self.changed.entry(i).or_default();
        keys.insert(key);
        if keys.len() > MAX_CHANGED_KEYS_PER_CHUNK {
            self.unverify(i);
        }
    }

    /// A change whose key cannot be placed: nothing covered is known equal any more.
    pub fn changed_anywhere(&mut self) {
        for i in 0..self.covered {
            self.unverify(i);
        }
    }

    fn unverify(&mut self, i: usize) {
        self.states[i] = State::Unverified;
        self.changed.remove(&i);
    }

    /// A comparison's verdict on chunk `i`: equal or not at its point.
    pub fn compared(&mut self, i: usize, equal: bool) {
        match self.states.get(i) {
            Some(State::Pending) if equal => self.states[i] = State::Verified,
            Some(_) => self.unverify(i),
            None => {}
        }
    }

    /// A comparison that ended without verdicts (it failed, or was not waited for).
    pub fn abandoned(&mut self, span: &ChunkSpan) {
        for i in span.from..span.to.min(self.states.len()) {
            self.compared(i, false);
        }
    }

    /// The key range of chunk `i`.
    pub fn range(&self, i: usize) -> KeyRange {
        self.span_range(&ChunkSpan { from: i, to: i + 1 })
    }

    /// The key range of chunks `from..to`.
    pub fn span_range(&self, span: &ChunkSpan) -> KeyRange {
        KeyRange {
            after: span
                .from
                .checked_sub(1)
                .map(|p| vec![key_value(self.bounds[p])]),
            through: Some(vec![key_value(self.bounds[span.to - 1])]),
        }
    }

    /// Chunks equal at a point (some rows of them may have changed since).
    pub fn verified(&self) -> usize {
        self.states
            .iter()
            .filter(|s| **s == State::Verified)
            .count()
    }

    /// What the final gate still has to compare: each run of chunks not known equal, the open
    /// end above the last chunk (rows inserted there after the copy began), and the keys changed
    /// in the chunks that were equal. With no chunk at all, the whole table.
    pub fn left_to_compare(&self) -> LeftToCompare {
        let mut left = LeftToCompare::default();
        let mut run: Option<usize> = None;
        for i in 0..=self.states.len() {
            let open = i < self.states.len() && self.states[i] != State::Verified;
            match (open, run) {
                (true, None) => run = Some(i),
                (false, Some(from)) => {
                    left.ranges
                        .push(self.span_range(&ChunkSpan { from, to: i }));
                    run = None;
                }
                _ => {}
            }
            if !open && i < self.states.len() {
                if let Some(keys) = self.changed.get(&i).filter(|k| !k.is_empty()) {
                    let keys = keys.iter().map(|&k| key_value(k)).collect();
                    left.keys.push((self.range(i), keys));
                }
            }
        }
        // The tail joins a run that ends at the last chunk.
        match left.ranges.last_mut() {
            Some(last) if self.states.last().is_some_and(|s| *s != State::Verified) => {
                last.through = None;
            }
            _ => left.ranges.push(KeyRange {
                after: self.bounds.last().map(|&last| vec![key_value(last)]),
                through: None,
            }),
        }
        left
    }
}

/// An integer key value as the server compares it: `Bytes` as sent in the text protocol.
pub fn integer_key(value: &Value) -> Option<i128> {
    match value {
        Value::Int(i) => Some(i128::from(*i)),
        Value::UInt(u) => Some(i128::from(*u)),
        Value::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

fn key_value(key: i128) -> Value {
    match i64::try_from(key) {
        Ok(i) => Value::Int(i),
        // Above i64: a BIGINT UNSIGNED key (integer keys fit i64 or u64).
        Err(_) => Value::UInt(u64::try_from(key).unwrap_or(u64::MAX)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(bounds: &[i128]) -> ChunkLedger {
        let mut ledger = ChunkLedger::default();
        for &b in bounds {
            assert!(ledger.copied(b));
        }
        ledger
    }

    fn all_equal(bounds: &[i128]) -> ChunkLedger {
        let mut l = ledger(bounds);
        l.take_point();
        for i in 0..bounds.len() {
            l.compared(i, true);
        }
        l
    }

    fn key(k: &Option<Vec<Value>>) -> Option<i128> {
        k.as_ref().and_then(|k| integer_key(&k[0]))
    }

    fn ranges(left: &LeftToCompare) -> Vec<(Option<i128>, Option<i128>)> {
        left.ranges
            .iter()
            .map(|r| (key(&r.after), key(&r.through)))
            .collect()
    }

    fn keys(left: &LeftToCompare) -> Vec<(Option<i128>, Vec<i128>)> {
        left.keys
            .iter()
            .map(|(range, keys)| {
                let keys = keys.iter().filter_map(integer_key).collect();
                (key(&range.through), keys)
            })
            .collect()
    }

    #[test]
    fn a_point_hands_over_what_is_not_known_equal() {
        let mut l = ledger(&[10, 20, 30]);
        assert_eq!(l.take_point(), [ChunkSpan { from: 0, to: 3 }]);
        l.compared(0, true);
        l.compared(1, false);
        l.compared(2, true);
        assert!(l.copied(40));
        assert_eq!(
            l.take_point(),
            [ChunkSpan { from: 1, to: 2 }, ChunkSpan { from: 3, to: 4 }]
        );
    }

    #[test]
    fn keys_changed_after_the_point_are_compared_again_even_when_the_chunk_was_equal() {
        let mut l = ledger(&[10, 20]);
        l.take_point();
        l.changed(15);
        l.compared(0, true);
        l.compared(1, true);
        assert_eq!(l.verified(), 2);
        l.changed(10);
        l.changed(15);
        let left = l.left_to_compare();
        assert_eq!(keys(&left), [(Some(10), vec![10]), (Some(20), vec![15])]);
        assert_eq!(ranges(&left), [(Some(20), None)], "only the open end");
    }

    #[test]
    fn changes_above_the_covered_chunks_or_to_unverified_ones_are_not_recorded() {
        let mut l = all_equal(&[10, 20]);
        assert!(l.copied(30));
        l.changed(25);
        l.changed(1000);
        l.changed(-5);
        let left = l.left_to_compare();
        assert_eq!(
            keys(&left),
            [(Some(10), vec![-5])],
            "keys below the first bound are chunk 0's"
        );
        assert_eq!(ranges(&left), [(Some(20), None)]);
    }

    #[test]
    fn too_many_changed_keys_leave_the_whole_chunk_to_the_gate() {
        let mut l = all_equal(&[100_000]);
        for k in 0..=MAX_CHANGED_KEYS_PER_CHUNK as i128 {
            l.changed(k);
        }
        assert_eq!(l.verified(), 0);
        let left = l.left_to_compare();
        assert!(left.keys.is_empty());
        assert_eq!(ranges(&left), [(None, None)]);
    }

    #[test]
    fn a_change_that_cannot_be_placed_unverifies_everything() {
        let mut l = ledger(&[10, 20]);
        l.take_point();
        l.compared(0, true);
        l.changed_anywhere();
        l.compared(1, true);
        assert_eq!(l.verified(), 0);
    }

    #[test]
    fn the_final_gate_gets_runs_and_the_open_end() {
        let mut l = all_equal(&[10, 20, 30, 40]);
        l.compared(1, false);
        l.compared(2, false);
        assert_eq!(
            ranges(&l.left_to_compare()),
            [(Some(10), Some(30)), (Some(40), None)]
        );

        let mut l = all_equal(&[10, 20, 30, 40]);
        l.compared(0, false);
        l.compared(3, false);
        assert_eq!(
            ranges(&l.left_to_compare()),
            [(None, Some(10)), (Some(30), None)],
            "runs join the tail"
        );

        assert_eq!(
            ranges(&ChunkLedger::default().left_to_compare()),
            [(None, None)],
            "nothing copied: the whole table"
        );
    }

    #[test]
    fn chunks_must_ascend_and_big_keys_keep_their_sign() {
        let mut l = ledger(&[5]);
        assert!(!l.copied(5));
        assert!(l.copied(i128::from(u64::MAX)));
        assert_eq!(l.range(1).through, Some(vec![Value::UInt(u64::MAX)]));
        assert_eq!(l.range(0).after, None);
        assert_eq!(l.range(1).after, Some(vec![Value::Int(5)]));
    }

    #[test]
    fn an_abandoned_comparison_leaves_its_chunks_to_the_gate() {
        let mut l = ledger(&[10, 20]);
        let spans = l.take_point();
        l.changed(5);
        l.abandoned(&spans[0]);
        assert_eq!(l.verified(), 0);
        assert!(l.left_to_compare().keys.is_empty());
        assert_eq!(l.take_point(), [ChunkSpan { from: 0, to: 2 }]);
    }
}
