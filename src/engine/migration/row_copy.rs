//! The row copy: chunk after chunk along the shared key (one copier here; several in
//! `parallel_copy.rs`), binlog changes applied between chunks, its pace and its retries.

use std::time::{Duration, Instant};

use mysql_async::Value;
use tracing::{info, warn};

use super::{Live, Run};
use crate::engine::applier::{KeyWindow, WriteMode};
use crate::engine::checksum::KeyRange;
use crate::engine::chunk_ledger::integer_key;
use crate::engine::chunk_size::ChunkSizer;
use crate::engine::copier::{ChunkResult, KeyTuple};
use crate::engine::error::{EngineError, Result, is_lock_wait};
use crate::engine::gone_keys::GoneKeys;
use crate::engine::hooks::{HookPoint, env_last_batch_copy_error};
use crate::engine::schema::ColumnKind;

/// A copy session's `innodb_lock_wait_timeout`, in seconds (or the server's, when lower). A copy
/// that waits for a row lock longer than this gives up and tries again with a smaller chunk: a
/// deadlock InnoDB cannot see (a replica's workers committing in order, one of them waiting for
/// the copy's shared locks) then costs seconds instead of the server's 50.
pub(super) const COPY_LOCK_WAIT_SECS: u32 = 3;
/// So many ended lock waits count as one failed attempt: before giving up, a copy waits for row
/// locks as long in total as gh-ost would (its retries times the server's default 50 s).
const LOCK_WAITS_PER_ATTEMPT: u32 = 50 / COPY_LOCK_WAIT_SECS;

/// Failed attempts at one chunk, with ended lock waits weighed as above.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ChunkAttempts {
    failures: u32,
    lock_waits: u32,
}

impl ChunkAttempts {
    /// Records a failure; returns the attempt number the retry budget is checked against.
    pub(super) fn record(&mut self, error: &EngineError) -> u32 {
        if is_lock_wait(error) {
            self.lock_waits += 1;
        } else {
            self.failures += 1;
        }
        self.failures + self.lock_waits.div_ceil(LOCK_WAITS_PER_ATTEMPT)
    }
}

/// Rows per second over a sliding window, so the ETA follows the current pace.
pub(super) struct MovingRate {
    window: Duration,
    samples: std::collections::VecDeque<(Instant, u64)>,
}

impl MovingRate {
    pub(super) fn new(window: Duration) -> Self {
        Self {
            window,
            samples: std::collections::VecDeque::new(),
        }
    }

    pub(super) fn reset(&mut self) {
        self.samples.clear();
    }

    /// `total` rows copied so far, the last `chunk_rows` of them in `chunk_time`.
    pub(super) fn record(&mut self, total: u64, chunk_rows: u64, chunk_time: Duration) {
        let now = Instant::now();
        if self.samples.is_empty() {
            // A fresh window starts where the first chunk started.
            self.samples
                .push_back((now - chunk_time, total.saturating_sub(chunk_rows)));
        }
        self.samples.push_back((now, total));
        while self.samples.len() > 2
            && self
                .samples
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > self.window)
        {
            self.samples.pop_front();
        }
    }

    pub(super) fn per_second(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some((t0, r0)), Some((t1, r1))) if t1 > t0 && r1 >= r0 => {
                (r1 - r0) as f64 / t1.duration_since(*t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

impl Run {
    /// Copies every chunk, applying binlog changes first whenever there are some.
    pub(super) async fn copy_rows(
        &mut self,
        live: &mut Live,
        range: Option<(KeyTuple, KeyTuple)>,
        copied_through: Option<KeyTuple>,
    ) -> Result<()> {
        let Some((min, max)) = range else {
            return Ok(());
        };
        // A resume continues after the last key the checkpoint saw copied.
        let (lower, first) = match copied_through {
            Some(key) => (key, false),
            None => (min, true),
        };
        if self.cfg.copy_threads > 1 {
            return self
                .copy_rows_parallel(live, (lower, first), max, self.cfg.copy_threads)
                .await;
        }
        let result = self.copy_rows_serially(live, lower, first, max).await;
        // Past the copy (or on its failure) every change is applied again.
        live.copy_window = None;
        live.gone = None;
        result
    }

    /// One copier, chunk after chunk, applying the binlog's changes between chunks.
    async fn copy_rows_serially(
        &mut self,
        live: &mut Live,
        mut lower: KeyTuple,
        mut first: bool,
        max: KeyTuple,
    ) -> Result<()> {
        let (mut rate, mut sizer) = self.copy_pace();
        // Failures of the chunk at `lower`, kept when a lock wait has it cut again smaller.
        let mut attempts = ChunkAttempts::default();
        let mut window_floor = self.copy_window_floor(live, &max).await;
        loop {
            if let Some(floor) = &window_floor {
                live.copy_window = KeyWindow::not_yet_copied(&lower, first, &max)
                    .and_then(|w| w.above(floor.as_ref()));
            }
            self.check_abort()?;
            // Throttling pauses both sides: queued changes wait in the bounded channel (and, past
            // it, in the server's binlog) until the throttle lifts.
            if self.throttled(live)? {
                self.rate_paused(&mut rate);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            self.drain_events(live, 10).await?;
            let controls = self.controls.borrow().clone();
            let size = sizer.next(controls.chunk_size);
            let mut attempt = 0;
            let next = loop {
                attempt += 1;
                match live
                    .copier
                    .next_chunk_end(&mut live.copy_conn, &lower, first, &max, size)
                    .await
                {
                    Ok(next) => break next,
                    Err(e) => {
                        self.retry_or_fail("finding the next chunk", attempt, e)
                            .await?;
                        self.revive_sessions(live).await;
                    }
                }
            };
            let Some(upper) = next else {
                return Ok(());
            };
            let check = self.cfg.panic_on_warnings.then_some(live.ghost_key.clone());
            let chunk_lower = (!first).then(|| lower.clone());
            let gone = gone_in_chunk(live, &lower, first, &upper);
            let chunk = match live
                .copier
                .copy_chunk(
                    &mut live.copy_conn,
                    &lower,
                    first,
                    &upper,
                    check.as_deref(),
                    &gone,
                )
                .await
            {
                Ok(chunk) => chunk,
                Err(e) => {
                    let lock_wait = is_lock_wait(&e);
                    self.chunk_failed(attempts.record(&e), e).await?;
                    self.revive_sessions(live).await;
                    if lock_wait {
                        // Fewer rows hold fewer locks: the chunk is cut again, smaller.
                        sizer.back_off();
                    } else if window_floor.is_some() {
                        // A chunk whose COMMIT lost its answer may have committed: its rows are
                        // in the ghost table now, and the floor must cover them.
                        window_floor = self.copy_window_floor(live, &max).await;
                    }
                    continue;
                }
            };
            attempts = ChunkAttempts::default();
            if let (Some(gone), Some(through)) = (live.gone.as_mut(), single_integer(&upper)) {
                gone.passed(through);
            }
            if chunk.skipped_on_other_key {
                live.skipped_ranges.push(KeyRange {
                    after: chunk_lower,
                    through: Some(upper.clone()),
                });
            }
            if live
                .early
                .as_mut()
                .is_some_and(|early| !early.copied(&upper))
            {
                warn!(
                    ?upper,
                    "a chunk's key cannot be placed; the checksum compares the whole table at the end"
                );
                live.early = None;
            }
            lower = upper;
            first = false;
            sizer.observe(chunk.elapsed);
            self.maybe_checkpoint(live, Some(&lower), false, false)
                .await;
            self.chunk_copied(&mut rate, &sizer, &chunk);
            self.early_checksum_step(live).await?;
            if controls.nice_ratio > 0.0 {
                tokio::time::sleep(chunk.elapsed.mul_f64(controls.nice_ratio)).await;
            }
        }
    }

    /// With `--copy-without-locks`, where it is safe: the copy then reads the original without
    /// row locks, and deletes again after each chunk the keys that are gone (`GoneKeys`). Safe
    /// where every insert and update is applied as a whole row that the copy's `INSERT IGNORE`
    /// never overwrites (`WriteMode::Replace`), one copier walks a single integer key, and no
    /// change is left to the copy (`--skip-uncopied-changes` would leave an update it cannot
    /// see).
    pub(super) fn start_copy_without_locks(
        &self,
        live: &mut Live,
        key_columns: &[String],
        write_mode: WriteMode,
    ) {
        if !self.cfg.copy_without_locks {
            return;
        }
        let key_column = match key_columns {
            [column] => self
                .original
                .column_index(column)
                .filter(|&i| matches!(self.original.columns[i].kind, ColumnKind::Integer { .. })),
            _ => None,
        };
        let refused = if write_mode != WriteMode::Replace {
            Some("the new table has a unique key the original does not enforce")
        } else if self.cfg.copy_threads > 1 {
            Some("--copy-threads is above 1")
        } else if self.cfg.skip_uncopied_changes {
            Some("--skip-uncopied-changes leaves changes to the copy")
        } else if key_column.is_none() {
            Some("the shared key is not a single integer column")
        } else {
            None
        };
        match (refused, key_column) {
            (None, Some(key_column)) => {
                info!("the row copy reads the original without row locks");
                live.copier.read_without_locks();
                live.gone = Some(GoneKeys::new(key_column));
            }
            (reason, _) => warn!(
                reason = reason.unwrap_or_default(),
                "--copy-without-locks: the row copy reads under shared row locks instead"
            ),
        }
    }

    /// Whether changes above the copy may be left to it (`--skip-uncopied-changes`), and from
    /// which key on: Some(floor) when they may, with the ghost table's highest key at the copy's
    /// start, the rows the copy's `INSERT IGNORE` would not overwrite (None: no row yet). Nothing
    /// is applied between this read and the copy's first window, both in this task.
    async fn copy_window_floor(&self, live: &mut Live, max: &KeyTuple) -> Option<Option<Value>> {
        if !(self.cfg.skip_uncopied_changes && live.copy_window_allowed) {
            return None;
        }
        match live.copier.ghost_high_water(&mut live.copy_conn, max).await {
            Ok(floor) => Some(floor),
            Err(e) => {
                // Every change is applied then, as without the option.
                warn!(error = %e, "cannot read the ghost table's highest key; every change is applied");
                None
            }
        }
    }

    /// A copy's rate window and chunk sizer, from the configuration and the current controls.
    pub(super) fn copy_pace(&self) -> (MovingRate, ChunkSizer) {
        (
            MovingRate::new(Duration::from_secs(10)),
            ChunkSizer::new(
                self.cfg.target_chunk_time,
                self.controls.borrow().chunk_size,
            ),
        )
    }

    /// No rate while nothing moves (throttled): the ETA says "unknown" instead of a stale guess.
    pub(super) fn rate_paused(&self, rate: &mut MovingRate) {
        rate.reset();
        self.progress.send_if_modified(|p| {
            let changed = p.eta_seconds.is_some();
            p.eta_seconds = None;
            p.rows_per_second = 0.0;
            changed
        });
    }

    /// A chunk is in: rows, rate, ETA and the current chunk size.
    pub(super) fn chunk_copied(
        &self,
        rate: &mut MovingRate,
        sizer: &ChunkSizer,
        chunk: &ChunkResult,
    ) {
        self.progress.send_modify(|p| {
            p.chunk_size = sizer.current();
            p.rows_copied += chunk.rows;
            rate.record(p.rows_copied, chunk.rows, chunk.elapsed);
            p.rows_per_second = rate.per_second();
            p.eta_seconds = (p.rows_per_second > 0.0).then(|| {
                let left = p.rows_estimate.saturating_sub(p.rows_copied) as f64;
                (left / p.rows_per_second).ceil() as u64
            });
        });
    }

    /// A chunk's attempt failed: gh-ost's batch-copy-retry hook (informational, never aborts),
    /// then wait for a retry or give up.
    pub(super) async fn chunk_failed(&self, attempt: u32, error: EngineError) -> Result<()> {
        let snapshot = self.progress.borrow().clone();
        let extra = [env_last_batch_copy_error(&error.to_string())];
        let _ = self
            .hooks
            .fire(HookPoint::BatchCopyRetry, &snapshot, &extra)
            .await;
        self.retry_or_fail("row copy", attempt, error).await
    }
}

/// The gone keys the chunk after `lower` (from it, when `first`) through `upper` deletes again;
/// a bound that is not a single integer puts the copy back under row locks.
fn gone_in_chunk(live: &mut Live, lower: &KeyTuple, first: bool, upper: &KeyTuple) -> Vec<Value> {
    let Some(gone) = &live.gone else {
        return Vec::new();
    };
    let after = if first {
        Some(None)
    } else {
        single_integer(lower).map(Some)
    };
    match (after, single_integer(upper)) {
        (Some(after), Some(through)) => gone.in_chunk(after, through),
        _ => {
            warn!("a chunk's bounds are not integers; the copy reads under row locks again");
            live.gone = None;
            live.copier.read_with_locks();
            Vec::new()
        }
    }
}

fn single_integer(key: &KeyTuple) -> Option<i128> {
    match key.as_slice() {
        [value] => integer_key(value),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::error::sql_error as server_error;

    #[test]
    fn lock_waits_weigh_less_than_other_failures() {
        let mut attempts = ChunkAttempts::default();
        assert_eq!(attempts.record(&server_error(1205)), 1);
        for _ in 1..LOCK_WAITS_PER_ATTEMPT {
            assert_eq!(attempts.record(&server_error(1213)), 1);
        }
        assert_eq!(attempts.record(&server_error(1205)), 2);
        assert_eq!(
            attempts.record(&server_error(2013)),
            3,
            "a lost session counts whole"
        );
    }

    #[test]
    fn moving_rate_follows_the_recent_pace() {
        let mut rate = MovingRate::new(Duration::from_secs(10));
        assert_eq!(rate.per_second(), 0.0);
        rate.record(1000, 1000, Duration::from_millis(500));
        let r = rate.per_second();
        assert!(r > 1500.0 && r < 2100.0, "{r}");
        rate.reset();
        // After a pause, the rate is the new chunk's, not the whole history's.
        rate.record(5000, 100, Duration::from_millis(100));
        let r = rate.per_second();
        assert!(r > 800.0 && r < 1100.0, "{r}");
    }
}
