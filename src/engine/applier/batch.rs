//! What one apply batch writes.
//!
//! In `Replace` mode every insert and update already writes the whole after image, so a batch
//! collapses to each key's last state: its final image, or gone. Those are written as one
//! multi-row `DELETE` for the gone keys, then multi-row `REPLACE`s for the images: a few round
//! trips instead of one per change. Deletes go first so a final image never meets a row that the
//! batch removes; final images of different keys never collide, because a batch ends where the
//! source's rows were consistent (its unique keys enforced row by row).
//!
//! `InsertOrUpdate` mode (a new unique key the source does not enforce) keeps gh-ost's statement
//! per change: there an insert must not overwrite, so intermediate images cannot be skipped. So
//! does `--coalesce-changes=false`.
//!
//! In both modes a change to a key the copy has not reached yet ([`KeyWindow`]) is left out: the
//! copy reads that row later, under its shared lock, with this change already committed.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use mysql_async::Value;

use super::{ApplyPlan, Shape, Statement, WriteMode, missing_image};
use crate::engine::chunk_ledger::integer_key as integer;
use crate::engine::error::Result;
use crate::engine::json_value;
use crate::engine::streamer::{ChangeKind, RowChange};
use crate::sql::dml::{delete_by_keys, replace_rows_into};

/// Most rows in one multi-row statement: large enough to make round trips rare, small enough to
/// keep few distinct prepared statements (sizes are powers of two) and packets modest.
const MAX_ROWS_PER_STATEMENT: usize = 128;
/// Placeholders in one statement stay under the protocol's 65,535.
const MAX_PARAMS_PER_STATEMENT: usize = 60_000;

/// Keys of a single integer key column that the row copy has yet to read: (`after`, `through`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyWindow {
    after: i128,
    through: i128,
}

impl KeyWindow {
    /// The keys after `lower` (from `lower` on, when `lower_included`) up to `max`, the copy's
    /// last key. None unless both bounds are single integers: other keys would need the
    /// server's collation to be ordered here.
    pub fn not_yet_copied(lower: &[Value], lower_included: bool, max: &[Value]) -> Option<Self> {
        let ([lower], [max]) = (lower, max) else {
            return None;
        };
        let lower = integer(lower)?;
        Some(Self {
            after: if lower_included { lower - 1 } else { lower },
            through: integer(max)?,
        })
    }

    /// The window without the keys up to `floor`: the ghost table's highest key when the copy
    /// starts. A row already there (written by the binlog before the copy began, or by an earlier
    /// run before `--resume`) is one the copy's `INSERT IGNORE` would keep as it is, so its
    /// changes must be applied. None when nothing is left.
    pub fn above(self, floor: Option<&Value>) -> Option<Self> {
        let Some(floor) = floor else {
            return Some(self);
        };
        // A floor that is not an integer cannot be placed: no window at all is the safe side.
        let after = self.after.max(integer(floor)?);
        (after < self.through).then_some(Self { after, ..self })
    }

    pub fn contains(&self, key: &[Value]) -> bool {
        match key {
            [v] => integer(v).is_some_and(|k| k > self.after && k <= self.through),
            _ => false,
        }
    }
}

/// A change's before and after images, each present when its kind has one.
type BeforeAfter<'a> = (Option<&'a [Value]>, Option<&'a [Value]>);

/// A key's state at the end of the batch.
enum Last<'a> {
    Image(&'a [Value]),
    Gone,
}

impl ApplyPlan {
    /// The statements that apply `changes` (one batch, applied in one transaction), leaving out
    /// keys inside `window`.
    pub fn batch_statements(
        &self,
        changes: &[RowChange],
        window: Option<&KeyWindow>,
    ) -> Result<Vec<Statement>> {
        let mut lanes = self.lane_statements(changes, window, 1)?;
        Ok(lanes.pop().unwrap_or_default())
    }

    /// The statements for `changes` split into `lanes` by a hash of each key, for sessions that
    /// apply them at the same time: each key's last state is in one lane only, and applying a
    /// lane again writes the same rows (a failed batch is simply applied again). Lanes may meet on
    /// another unique key only where a lane's `REPLACE` removes a stale row whose own last state
    /// is in another lane (last images never collide): that lane writes it after, or already
    /// moved it away. Without coalescing there are no last states: one lane.
    pub fn lane_statements(
        &self,
        changes: &[RowChange],
        window: Option<&KeyWindow>,
        lanes: usize,
    ) -> Result<Vec<Vec<Statement>>> {
        let outside = |key: &[Value]| window.is_none_or(|w| !w.contains(key));
        if self.mode == WriteMode::InsertOrUpdate || !self.coalesce {
            let mut statements = Vec::with_capacity(changes.len());
            for change in changes {
                if let Some(change) = self.trimmed(change, &outside) {
                    statements.extend(self.statements(&change)?);
                }
            }
            return Ok(vec![statements]);
        }
        let lanes = lanes.max(1);
        let mut split: Vec<Vec<(Vec<Value>, Last<'_>)>> = (0..lanes).map(|_| Vec::new()).collect();
        for (key, last) in self.last_states(changes)? {
            if outside(&key) {
                split[lane_of(&key, lanes)].push((key, last));
            }
        }
        Ok(split
            .into_iter()
            .map(|lasts| self.last_state_statements(lasts))
            .collect())
    }

    /// A multi-row `DELETE` for the gone keys, then multi-row `REPLACE`s for the final images.
    fn last_state_statements(&self, lasts: Vec<(Vec<Value>, Last<'_>)>) -> Vec<Statement> {
        let mut gone = Vec::new();
        let mut images = Vec::new();
        for (key, last) in lasts {
            match last {
                Last::Gone => gone.push(key),
                Last::Image(after) => images.push(after),
            }
        }
        let mut statements = Vec::new();
        let key_width = self.key_slots.len().max(1);
        for group in groups(gone.len(), key_width) {
            let keys: Vec<Vec<Value>> = gone.drain(..group).collect();
            statements.push(Statement {
                sql: delete_by_keys(&self.target, &self.key_slots, group),
                params: keys.into_iter().flatten().collect(),
            });
        }
        // A JSON value is written through an expression of its own, so its row is a statement of
        // its own (`with_json_expressions`); the rest share multi-row statements.
        let (with_json, plain): (Vec<&[Value]>, Vec<&[Value]>) = images
            .into_iter()
            .partition(|after| self.has_json_expression(after));
        let mut plain = plain.into_iter();
        for group in groups(plain.len(), self.slots.len().max(1)) {
            let params = plain
                .by_ref()
                .take(group)
                .flat_map(|after| self.written.iter().map(|&i| after[i].clone()))
                .collect();
            statements.push(Statement {
                sql: replace_rows_into(&self.target, &self.slots, group),
                params,
            });
        }
        for after in with_json {
            statements.push(self.with_json_expressions(
                Statement {
                    sql: self.replace_sql.clone(),
                    params: self.written.iter().map(|&i| after[i].clone()).collect(),
                },
                Shape::Replace,
            ));
        }
        statements
    }

    /// Each key's last state in `changes`, in the order keys first appear. Keys are told apart by
    /// their bytes: two spellings the server's collation equates (a key moved from `a` to `A`)
    /// cannot both have an image at the end of a batch, and deletes are written first.
    fn last_states<'a>(&self, changes: &'a [RowChange]) -> Result<Vec<(Vec<Value>, Last<'a>)>> {
        let mut lasts: Vec<(Vec<Value>, Last<'a>)> = Vec::with_capacity(changes.len());
        let mut index: HashMap<String, usize> = HashMap::with_capacity(changes.len());
        let mut set = |key: Vec<Value>, last: Last<'a>| {
            let id = key
                .iter()
                .map(|v| v.as_sql(false))
                .collect::<Vec<_>>()
                .join("\u{0}");
            match index.get(&id) {
                Some(&i) => lasts[i].1 = last,
                None => {
                    index.insert(id, lasts.len());
                    lasts.push((key, last));
                }
            }
        };
        for change in changes {
            let (before, after) = self.images(change)?;
            if let Some(before) = before {
                let old_key = self.key_of(before);
                if after.is_none_or(|after| self.key_of(after) != old_key) {
                    set(old_key, Last::Gone);
                }
            }
            if let Some(after) = after {
                set(self.key_of(after), Last::Image(after));
            }
        }
        Ok(lasts)
    }

    /// `change` without what falls inside the window (`outside` is false for those keys): None
    /// when nothing is left; a key-moving update with one side inside becomes the delete or the
    /// insert of the other side.
    fn trimmed(
        &self,
        change: &RowChange,
        outside: &impl Fn(&[Value]) -> bool,
    ) -> Option<RowChange> {
        let keep_before = change
            .before
            .as_deref()
            .is_some_and(|b| outside(&self.key_of(b)));
        let keep_after = change
            .after
            .as_deref()
            .is_some_and(|a| outside(&self.key_of(a)));
        let kind = match (change.kind, keep_before, keep_after) {
            (ChangeKind::Update, true, true) => ChangeKind::Update,
            (ChangeKind::Update, true, false) | (ChangeKind::Delete, true, _) => ChangeKind::Delete,
            (ChangeKind::Update, false, true) | (ChangeKind::Insert, _, true) => ChangeKind::Insert,
            _ => return None,
        };
        let mut kept = change.clone();
        kept.kind = kind;
        if kind == ChangeKind::Insert {
            kept.before = None;
        }
        if kind == ChangeKind::Delete {
            kept.after = None;
        }
        Some(kept)
    }

    /// The before and after images `change`'s kind needs; an error when one is missing.
    fn images<'a>(&self, change: &'a RowChange) -> Result<BeforeAfter<'a>> {
        let (before, after) = (change.before.as_deref(), change.after.as_deref());
        let (needs_before, needs_after) = match change.kind {
            ChangeKind::Insert => (false, true),
            ChangeKind::Delete => (true, false),
            ChangeKind::Update => (true, true),
        };
        let missing = if needs_before && before.is_none() {
            Some("before")
        } else if needs_after && after.is_none() {
            Some("after")
        } else {
            None
        };
        if let Some(what) = missing {
            return Err(missing_image(change, what));
        }
        Ok((
            before.filter(|_| needs_before),
            after.filter(|_| needs_after),
        ))
    }

    fn key_of(&self, image: &[Value]) -> Vec<Value> {
        self.key.iter().map(|&i| image[i].clone()).collect()
    }

    fn has_json_expression(&self, after: &[Value]) -> bool {
        self.written
            .iter()
            .any(|&i| json_value::expression(&after[i]).is_some())
    }
}

/// The lane of `key`: a hash of its bytes, the same for the same key in every batch.
fn lane_of(key: &[Value], lanes: usize) -> usize {
    if lanes <= 1 {
        return 0;
    }
    let mut hasher = DefaultHasher::new();
    for value in key {
        value.as_sql(false).hash(&mut hasher);
    }
    (hasher.finish() % lanes as u64) as usize
}

/// Row counts of the statements for `rows` rows of `params_per_row` placeholders: powers of two,
/// largest first, each within the statement limits.
fn groups(rows: usize, params_per_row: usize) -> Vec<usize> {
    let cap = MAX_ROWS_PER_STATEMENT.min((MAX_PARAMS_PER_STATEMENT / params_per_row).max(1));
    let cap = 1usize << cap.ilog2();
    let mut left = rows;
    let mut out = Vec::new();
    while left > 0 {
        let size = cap.min(1usize << left.ilog2());
        out.push(size);
        left -= size;
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::position::BinlogCoordinates;
    use crate::engine::schema::{ColumnSchema, TableSchema, classify};

    fn table() -> Arc<TableSchema> {
        table_keyed_by("int")
    }

    /// `d`.`t` (`id` of `key_type`, `v` INT).
    fn table_keyed_by(key_type: &str) -> Arc<TableSchema> {
        let column = |name: &str, data_type: &str, column_type: &str| ColumnSchema {
            name: name.into(),
            data_type: data_type.into(),
            column_type: column_type.into(),
            kind: classify(data_type, column_type, None, Some(0)),
            nullable: false,
            charset: None,
            collation: None,
            generated: false,
        };
        Arc::new(TableSchema {
            schema: "d".into(),
            name: "t".into(),
            columns: vec![column("id", key_type, key_type), column("v", "int", "int")],
        })
    }

    fn plan(mode: WriteMode) -> ApplyPlan {
        let t = table();
        ApplyPlan::identity(&t, &t, &["id".into()])
            .unwrap()
            .with_mode(mode)
            .with_coalescing(true)
    }

    fn change(
        kind: ChangeKind,
        before: Option<(i64, i64)>,
        after: Option<(i64, i64)>,
    ) -> RowChange {
        let image = |(id, v): (i64, i64)| vec![Value::Int(id), Value::Int(v)];
        RowChange {
            table: table(),
            kind,
            before: before.map(image),
            after: after.map(image),
            event_end: BinlogCoordinates::new("b.000001", 4),
            gtid: None,
            timestamp: 0,
        }
    }

    fn ins(id: i64, v: i64) -> RowChange {
        change(ChangeKind::Insert, None, Some((id, v)))
    }
    fn upd(from: (i64, i64), to: (i64, i64)) -> RowChange {
        change(ChangeKind::Update, Some(from), Some(to))
    }
    fn del(id: i64, v: i64) -> RowChange {
        change(ChangeKind::Delete, Some((id, v)), None)
    }

    fn shown(statements: &[Statement]) -> Vec<String> {
        statements
            .iter()
            .map(|s| {
                let params: Vec<String> = s.params.iter().map(|p| p.as_sql(false)).collect();
                format!("{} [{}]", s.sql, params.join(","))
            })
            .collect()
    }

    #[test]
    fn a_batch_is_each_keys_last_state_deletes_first() {
        let changes = [
            ins(1, 10),
            upd((1, 10), (1, 11)),
            ins(2, 20),
            del(2, 20),
            upd((3, 30), (4, 30)), // a key move: 3 is gone, 4 has the image
            upd((1, 11), (1, 12)),
            del(5, 50),
            ins(5, 51), // deleted then inserted again: the image wins
        ];
        let got = shown(
            &plan(WriteMode::Replace)
                .batch_statements(&changes, None)
                .unwrap(),
        );
        assert_eq!(
            got,
            [
                "DELETE FROM `d`.`t` WHERE (`id` <=> ?) OR (`id` <=> ?) [2,3]",
                "REPLACE INTO `d`.`t` (`id`, `v`) VALUES (?, ?), (?, ?) [1,12,4,30]",
                "REPLACE INTO `d`.`t` (`id`, `v`) VALUES (?, ?) [5,51]",
            ]
        );
    }

    #[test]
    fn lanes_split_the_last_states_by_key() {
        let mut changes = Vec::new();
        for id in 1..=40 {
            changes.push(ins(id, id * 10));
            changes.push(upd((id, id * 10), (id, id * 10 + 1)));
        }
        changes.push(upd((7, 71), (107, 71))); // a key move: 7 gone, 107 written
        changes.push(del(8, 81));
        let plan = plan(WriteMode::Replace);
        let lanes = plan.lane_statements(&changes, None, 3).unwrap();
        assert_eq!(lanes.len(), 3);
        // Each lane's keys, in statement order: deletes come first within a lane.
        let keys_of = |statements: &[Statement]| -> Vec<(bool, i64)> {
            statements
                .iter()
                .flat_map(|s| {
                    let delete = s.sql.starts_with("DELETE");
                    let step = if delete { 1 } else { 2 };
                    s.params
                        .iter()
                        .step_by(step)
                        .map(move |p| (delete, p.as_sql(false).parse::<i64>().unwrap()))
                })
                .collect()
        };
        let mut all: Vec<(bool, i64)> = Vec::new();
        for lane in &lanes {
            assert!(!lane.is_empty(), "40 keys over 3 lanes leave none empty");
            let keys = keys_of(lane);
            let first_image = keys.iter().position(|(delete, _)| !delete);
            assert!(
                first_image.is_none_or(|i| keys[i..].iter().all(|(delete, _)| !delete)),
                "deletes first: {keys:?}"
            );
            all.extend(keys);
        }
        all.sort();
        let mut single = keys_of(&plan.batch_statements(&changes, None).unwrap());
        single.sort();
        assert_eq!(
            all, single,
            "the lanes together write what one batch writes"
        );
        let mut ids: Vec<i64> = all.iter().map(|(_, id)| *id).collect();
        ids.dedup();
        assert_eq!(ids.len(), all.len(), "each key in one lane only");
        assert!(all.contains(&(true, 7)) && all.contains(&(false, 107)));
        // The same key lands in the same lane every time.
        assert_eq!(plan.lane_statements(&changes, None, 3).unwrap(), lanes);
    }

    #[test]
    fn lanes_need_coalescing_and_a_key_compared_by_bytes() {
        assert_eq!(plan(WriteMode::Replace).lanes_refused(), None);
        assert!(plan(WriteMode::InsertOrUpdate).lanes_refused().is_some());
        assert!(
            plan(WriteMode::Replace)
                .with_coalescing(false)
                .lanes_refused()
                .is_some()
        );
        for (key_type, by_bytes) in [
            ("bigint", true),
            ("decimal", true),
            ("datetime", true),
            ("varbinary", true),
            // 'a' and 'A' (a _ci collation), 'a' and 'a ' (PAD SPACE), 0 and -0.
            ("varchar", false),
            ("char", false),
            ("binary", false),
            ("double", false),
        ] {
            let t = table_keyed_by(key_type);
            let refused = ApplyPlan::identity(&t, &t, &["id".into()])
                .unwrap()
                .with_mode(WriteMode::Replace)
                .with_coalescing(true)
                .lanes_refused();
            assert_eq!(refused.is_none(), by_bytes, "{key_type}: {refused:?}");
        }
    }

    #[test]
    fn without_coalescing_there_is_one_lane() {
        let plan = plan(WriteMode::Replace).with_coalescing(false);
        let lanes = plan
            .lane_statements(&[ins(1, 10), ins(2, 20), ins(3, 30)], None, 4)
            .unwrap();
        assert_eq!(lanes.len(), 1);
        assert_eq!(lanes[0].len(), 3);
    }

    #[test]
    fn without_coalescing_every_change_is_its_own_statement() {
        let plan = plan(WriteMode::Replace).with_coalescing(false);
        let got = shown(
            &plan
                .batch_statements(&[ins(1, 10), upd((1, 10), (1, 11))], None)
                .unwrap(),
        );
        assert_eq!(got.len(), 2);
        assert!(got[1].ends_with("[1,11]"), "{got:?}");
    }

    #[test]
    fn changes_the_copy_will_read_are_left_to_it() {
        // Copied through key 10, the copy ends at 100.
        let window =
            KeyWindow::not_yet_copied(&[Value::Int(10)], false, &[Value::Int(100)]).unwrap();
        let changes = [
            ins(5, 1),            // copied already: written
            ins(50, 1),           // the copy will read it
            upd((7, 1), (70, 1)), // moved ahead of the copy: only the delete of 7
            upd((60, 1), (8, 1)), // moved behind it: only the image of 8
            del(99, 1),           // not copied yet: nothing to delete
            ins(101, 1),          // past the copy's end: written
        ];
        for mode in [WriteMode::Replace, WriteMode::InsertOrUpdate] {
            let got = shown(
                &plan(mode)
                    .batch_statements(&changes, Some(&window))
                    .unwrap(),
            );
            let text = got.join("\n");
            for absent in ["[50", "70", "[60", "99"] {
                assert!(!text.contains(absent), "{mode:?}: {absent} in {text}");
            }
            for present in ["5,1", "8,1", "101,1", "7"] {
                assert!(
                    text.contains(present),
                    "{mode:?}: {present} missing from {text}"
                );
            }
        }
        // gh-ost's statements stay one per change: the key move behind the copy is an insert.
        let got = shown(
            &plan(WriteMode::InsertOrUpdate)
                .batch_statements(&changes, Some(&window))
                .unwrap(),
        );
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(
            got[2].starts_with("INSERT IGNORE") && got[2].ends_with("[8,1]"),
            "{got:?}"
        );
    }

    #[test]
    fn a_change_without_its_image_is_an_error() {
        let mut broken = upd((1, 1), (1, 2));
        broken.before = None;
        let err = plan(WriteMode::Replace)
            .batch_statements(&[broken], None)
            .unwrap_err();
        assert!(err.to_string().contains("without a before image"), "{err}");
    }

    #[test]
    fn groups_are_powers_of_two_within_limits() {
        assert_eq!(groups(0, 3), Vec::<usize>::new());
        assert_eq!(groups(1, 3), vec![1]);
        assert_eq!(groups(100, 3), vec![64, 32, 4]);
        assert_eq!(groups(300, 3), vec![128, 128, 32, 8, 4]);
        // 1,000 columns: at most 60 rows, so 32 per statement.
        assert_eq!(groups(70, 1000), vec![32, 32, 4, 2]);
        assert_eq!(groups(2, 70_000), vec![1, 1]);
    }

    #[test]
    fn the_window_holds_integer_keys_not_yet_copied() {
        let w = KeyWindow::not_yet_copied(&[Value::UInt(10)], false, &[Value::Int(20)]).unwrap();
        assert!(!w.contains(&[Value::UInt(10)]));
        assert!(w.contains(&[Value::Int(11)]));
        assert!(w.contains(&[Value::Bytes(b"20".to_vec())]));
        assert!(!w.contains(&[Value::UInt(21)]));
        assert!(!w.contains(&[Value::NULL]));
        let first = KeyWindow::not_yet_copied(&[Value::Int(1)], true, &[Value::Int(5)]).unwrap();
        assert!(first.contains(&[Value::Int(1)]));
        assert!(!first.contains(&[Value::Int(0)]));
        // Composite and non-integer keys are never skipped.
        assert!(
            KeyWindow::not_yet_copied(
                &[Value::Int(1), Value::Int(2)],
                false,
                &[Value::Int(5), Value::Int(1)]
            )
            .is_none()
        );
        assert!(
            KeyWindow::not_yet_copied(
                &[Value::Bytes(b"a".to_vec())],
                false,
                &[Value::Bytes(b"z".to_vec())]
            )
            .is_none()
        );
    }

    #[test]
    fn rows_already_in_the_ghost_table_raise_the_windows_floor() {
        let w = || KeyWindow::not_yet_copied(&[Value::Int(10)], false, &[Value::Int(20)]).unwrap();
        let raised = w().above(Some(&Value::UInt(15))).unwrap();
        assert!(!raised.contains(&[Value::Int(15)]), "a row there already");
        assert!(raised.contains(&[Value::Int(16)]));
        assert_eq!(
            w().above(Some(&Value::Int(5))),
            Some(w()),
            "below the copy: no change"
        );
        assert_eq!(w().above(None), Some(w()), "an empty ghost table");
        assert_eq!(
            w().above(Some(&Value::Int(20))),
            None,
            "every key has a row already"
        );
        assert_eq!(
            w().above(Some(&Value::Double(1.5))),
            None,
            "unplaceable floor: no window"
        );
    }
}
