//! The checksum during the row copy: every so often, between two chunks, a consistent point is
//! taken (as the gate takes its own), and a background task compares the chunks copied since on
//! one snapshot, beside the single copier. Chunks found equal are kept in a [`ChunkLedger`] with
//! the keys changed in them since: by a binlog change to the original, or by any write to the
//! ghost table the stream sees. The gate at the end then compares only what is left
//! (`verify.rs`). One copier and a single integer key only; otherwise the gate compares all.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::{Conn, prelude::Queryable};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::{Live, Run};
use crate::engine::checksum::{ChecksumPlan, KeyRange};
use crate::engine::chunk_ledger::{ChunkLedger, ChunkSpan, LeftToCompare, integer_key};
use crate::engine::error::{EngineError, Result};
use crate::engine::schema::{ColumnKind, TableSchema};
use crate::engine::streamer::{RowChange, WatchedTable};

/// Copy time between two points at least: each point holds a brief read lock on the original.
const POINT_INTERVAL: Duration = Duration::from_secs(1);
/// Chunks copied since the last point before another is taken.
const MIN_CHUNKS_PER_POINT: usize = 1;
/// What one comparison query aims to take: long enough that round trips vanish, short enough
/// that a difference is narrowed to copy chunks quickly.
const GROUP_TIME: Duration = Duration::from_millis(200);
/// Most copy chunks compared in one query.
const MAX_GROUP: usize = 256;

pub(super) struct EarlyChecksum {
    ledger: ChunkLedger,
    /// The key column's index in the original's row images.
    source_key: usize,
    /// The stream reports ghost-table writes up to this key (see `WatchedTable`).
    watched_up_to: Arc<Mutex<Option<i128>>>,
    in_flight: Option<Comparison>,
    /// Ghost-table rows the stream decoded for their key.
    ghost_rows_read: Arc<AtomicU64>,
    last_point: Instant,
    points: u32,
}

/// A comparison running in the background, with the chunks it was given.
struct Comparison {
    spans: Vec<ChunkSpan>,
    task: JoinHandle<Result<Vec<(usize, bool)>>>,
}

impl Drop for Comparison {
    fn drop(&mut self) {
        // A migration that fails or ends leaves no query running behind it.
        self.task.abort();
    }
}

impl EarlyChecksum {
    pub(super) fn new(
        source_key: usize,
        watched_up_to: Arc<Mutex<Option<i128>>>,
        ghost_rows_read: Arc<AtomicU64>,
    ) -> Self {
        Self {
            ledger: ChunkLedger::default(),
            source_key,
            watched_up_to,
            in_flight: None,
            ghost_rows_read,
            last_point: Instant::now(),
            points: 0,
        }
    }

    /// A chunk was copied through `upper`. False when its key cannot be placed in the ledger.
    #[must_use]
    pub(super) fn copied(&mut self, upper: &[mysql_async::Value]) -> bool {
        match upper {
            [key] => integer_key(key).is_some_and(|key| self.ledger.copied(key)),
            _ => false,
        }
    }

    /// A binlog change to the original: its before and after keys.
    pub(super) fn row_changed(&mut self, change: &RowChange) {
        for image in [&change.before, &change.after].into_iter().flatten() {
            match image.get(self.source_key).and_then(integer_key) {
                Some(key) => self.ledger.changed(key),
                None => self.ledger.changed_anywhere(),
            }
        }
    }

    /// A write to the ghost table the stream saw (None: its key could not be read).
    pub(super) fn ghost_written(&mut self, key: Option<i128>) {
        match key {
            Some(key) => self.ledger.changed(key),
            None => self.ledger.changed_anywhere(),
        }
    }

    fn set_watch_limit(&self, limit: Option<i128>) {
        let mut up_to = match self.watched_up_to.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *up_to = limit;
    }

    /// Applies a finished comparison's verdicts (a failed one leaves its chunks to the gate).
    /// Returns the chunks known equal now.
    async fn collect(&mut self, wait: bool) -> u64 {
        let Some(mut comparison) = self.in_flight.take() else {
            return self.ledger.verified() as u64;
        };
        if !wait && !comparison.task.is_finished() {
            self.in_flight = Some(comparison);
            return self.ledger.verified() as u64;
        }
        match (&mut comparison.task).await {
            Ok(Ok(verdicts)) => {
                let equal = verdicts.iter().filter(|(_, equal)| *equal).count();
                for (chunk, equal) in verdicts {
                    self.ledger.compared(chunk, equal);
                }
                info!(
                    compared = comparison
                        .spans
                        .iter()
                        .map(|s| s.to - s.from)
                        .sum::<usize>(),
                    equal,
                    verified = self.ledger.verified(),
                    "checksum during the copy: chunks compared"
                );
            }
            Ok(Err(e)) => {
                warn!(error = %e, "checksum during the copy: a comparison failed; the gate compares those chunks");
                comparison
                    .spans
                    .iter()
                    .for_each(|s| self.ledger.abandoned(s));
            }
            Err(e) => {
                warn!(error = %e, "checksum during the copy: a comparison ended; the gate compares those chunks");
                comparison
                    .spans
                    .iter()
                    .for_each(|s| self.ledger.abandoned(s));
            }
        }
        self.ledger.verified() as u64
    }

    fn due(&self) -> bool {
        self.in_flight.is_none()
            && self.ledger.uncovered() >= MIN_CHUNKS_PER_POINT
            && self.last_point.elapsed() >= POINT_INTERVAL
    }

    /// What the final gate still compares, at its consistent point just taken. The ledger stops
    /// here: nothing reports keys to it any more.
    pub(super) fn left_to_compare(self) -> (LeftToCompare, usize, u64) {
        self.set_watch_limit(None);
        (
            self.ledger.left_to_compare(),
            self.ledger.verified(),
            self.ghost_rows_read.load(Ordering::Relaxed),
        )
    }
}

impl Drop for EarlyChecksum {
    fn drop(&mut self) {
        // The stream stops decoding the ghost table's rows.
        self.set_watch_limit(None);
    }
}

impl Run {
    /// The checksum during the copy, when it can run: the gate is on, one copier starts a fresh
    /// copy (after `--resume` the gate compares all), and the shared key is a single integer
    /// column on both sides. The stream is told to watch the ghost table from here on.
    pub(super) fn start_early_checksum(
        &self,
        key_columns: &[String],
        column_map: &[(String, String)],
        ghost: &TableSchema,
        copy_tag: &str,
    ) -> Option<EarlyChecksum> {
        let cfg = &self.cfg;
        if !(cfg.checksum && cfg.checksum_during_copy)
            || cfg.copy_threads > 1
            || self.resume_from.is_some()
        {
            return None;
        }
        let [column] = key_columns else {
            return None;
        };
        let integer_at = |table: &TableSchema, name: &str| {
            table
                .column_index(name)
                .filter(|&i| matches!(table.columns[i].kind, ColumnKind::Integer { .. }))
        };
        let source_key = integer_at(&self.original, column)?;
        let ghost_column = column_map
            .iter()
            .find(|(source, _)| source.eq_ignore_ascii_case(column))
            .map(|(_, target)| target.as_str())?;
        let key_column = integer_at(ghost, ghost_column)?;
        let up_to = Arc::new(Mutex::new(None));
        let watched = WatchedTable {
            schema: Arc::new(ghost.clone()),
            key_column,
            up_to: up_to.clone(),
            marker_table: (self.cfg.database.clone(), self.names.changelog.clone()),
            copy_tag: copy_tag.to_string(),
            rows_read: Arc::new(AtomicU64::new(0)),
        };
        let rows_read = watched.rows_read.clone();
        if self.watched.set(watched).is_err() {
            return None;
        }
        info!("the checksum runs during the row copy, at consistent points");
        Some(EarlyChecksum::new(source_key, up_to, rows_read))
    }

    /// Between two copy chunks: takes in a finished comparison, and when one is due takes a
    /// consistent point and starts comparing the chunks copied since the last one.
    pub(super) async fn early_checksum_step(&mut self, live: &mut Live) -> Result<()> {
        let Some(early) = live.early.as_mut() else {
            return Ok(());
        };
        let verified = early.collect(false).await;
        self.progress.send_if_modified(|p| {
            std::mem::replace(&mut p.chunks_verified_during_copy, verified) != verified
        });
        if !early.due() {
            return Ok(());
        }
        // The point's marker must come back while the original is locked: only at low lag.
        let limit = self.cfg.cut_over_lock_timeout;
        let lag_ok = live
            .last_heartbeat
            .is_some_and(|at| (chrono::Utc::now() - at).to_std().unwrap_or_default() < limit);
        if !lag_ok {
            return Ok(());
        }
        // The limit goes up before the chunks become pending, so no write after the point is
        // filtered out by the stream; writes seen between here and the snapshot mark their
        // chunks changed, which only costs a comparison at the gate.
        early.set_watch_limit(early.ledger.copied_through());
        let spans = early.ledger.take_point();
        early.points += 1;
        early.last_point = Instant::now();
        let work: Vec<Vec<(usize, KeyRange)>> = spans
            .iter()
            .map(|s| (s.from..s.to).map(|i| (i, early.ledger.range(i))).collect())
            .collect();
        let marker = format!("copy checksum point {}", early.points);
        let point = self
            .locked_point(live, &marker, 1, Duration::from_secs(1))
            .await;
        let Some(early) = live.early.as_mut() else {
            return Ok(());
        };
        match point {
            Ok(mut snapshots) => {
                let Some(snapshot) = snapshots.pop() else {
                    spans.iter().for_each(|s| early.ledger.abandoned(s));
                    return Ok(());
                };
                let plan = live.verify_plan.clone();
                early.in_flight = Some(Comparison {
                    spans,
                    task: tokio::spawn(compare_in_groups(plan, snapshot, work)),
                });
                Ok(())
            }
            Err(e @ EngineError::Cancelled(_)) => Err(e),
            Err(e) => {
                // Nothing is lost: the gate compares these chunks.
                warn!(error = %e, "checksum during the copy: no consistent point this time");
                spans.iter().for_each(|s| early.ledger.abandoned(s));
                Ok(())
            }
        }
    }

    /// Before the gate's point: waits for the comparison still running, applying changes
    /// meanwhile.
    pub(super) async fn settle_early_checksum(&mut self, live: &mut Live) -> Result<()> {
        loop {
            let Some(early) = live.early.as_mut() else {
                return Ok(());
            };
            match &early.in_flight {
                Some(c) if !c.task.is_finished() => {}
                _ => {
                    let verified = early.collect(true).await;
                    self.progress
                        .send_modify(|p| p.chunks_verified_during_copy = verified);
                    return Ok(());
                }
            }
            self.check_abort()?;
            self.drain_events(live, 10).await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The value this run's copy transactions mark themselves with: unlike any other run's.
pub(super) fn copy_tag(ghost_table: &str) -> String {
    use std::hash::BuildHasher;
    // RandomState is seeded at random per process: a tag no other run or session shares.
    let nonce = std::collections::hash_map::RandomState::new().hash_one(ghost_table);
    format!("ghost-copy {nonce:016x}")
}

/// Compares the chunks of each run on one snapshot (both tables in one read view), in groups
/// grown toward `GROUP_TIME`; a group that differs is compared again chunk by chunk, so each
/// chunk gets its own verdict.
async fn compare_in_groups(
    plan: ChecksumPlan,
    mut snapshot: Conn,
    runs: Vec<Vec<(usize, KeyRange)>>,
) -> Result<Vec<(usize, bool)>> {
    let mut verdicts = Vec::new();
    let mut group = 16usize;
    let result: Result<()> = async {
        for run in &runs {
            let mut at = 0;
            while at < run.len() {
                let chunks = &run[at..(at + group).min(run.len())];
                let range = KeyRange {
                    after: chunks[0].1.after.clone(),
                    through: chunks[chunks.len() - 1].1.through.clone(),
                };
                let started = Instant::now();
                let (source, ghost) = plan.compare_on_one(&mut snapshot, &range).await?;
                let took = started.elapsed().max(Duration::from_millis(1));
                if source == ghost {
                    verdicts.extend(chunks.iter().map(|(i, _)| (*i, true)));
                } else {
                    for (i, range) in chunks {
                        let (source, ghost) = plan.compare_on_one(&mut snapshot, range).await?;
                        verdicts.push((*i, source == ghost));
                    }
                }
                at += chunks.len();
                let scaled = chunks.len() as f64 * GROUP_TIME.as_secs_f64() / took.as_secs_f64();
                group = (scaled as usize).clamp(1, MAX_GROUP);
            }
        }
        Ok(())
    }
    .await;
    let _ = snapshot.query_drop("COMMIT").await;
    let _ = snapshot.disconnect().await;
    result.map(|()| verdicts)
}
