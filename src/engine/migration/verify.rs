//! The checksum gate's orchestration (the SQL is `engine::checksum`): take a consistent point,
//! compare every chunk, copy the differing chunks again, and check those again at a new point.
//! Binlog changes keep being applied between chunks, so the backlog does not grow meanwhile.

use std::time::{Duration, Instant};

use mysql_async::{Conn, prelude::Queryable};
use tracing::{info, warn};

use super::row_copy::ChunkAttempts;
use super::{Live, Run, Wait};
use crate::engine::checksum::{ChecksumPlan, KeyRange};
use crate::engine::chunk_size::ChunkSizer;
use crate::engine::copier::KeyTuple;
use crate::engine::error::{EngineError, Result, SqlContext};
use crate::engine::progress::Phase;
use crate::sql::qualified;

/// What a checksum chunk of the whole-table walk aims to take: long enough that the per-chunk
/// round trips vanish, short enough that binlog changes are applied often.
const CHUNK_TIME: Duration = Duration::from_millis(200);

/// Changed keys compared in one query at the gate.
const KEYS_PER_QUERY: usize = 1000;

/// Rounds of compare → copy again → compare before the migration fails.
const MAX_ROUNDS: u32 = 3;
/// Attempts at the brief read lock that takes a consistent point.
const LOCK_ATTEMPTS: u32 = 5;

/// A span of the table to walk, and the key range the snapshot holds.
struct Walk<'a> {
    span: KeyRange,
    min: &'a KeyTuple,
    max: &'a KeyTuple,
}

/// How a walk sizes its chunks.
enum Sizing {
    /// Toward `CHUNK_TIME`, from the copy's chunk-size.
    Adaptive(ChunkSizer),
    /// The copy's chunk-size.
    Fixed,
}

/// Two read views of one consistent point: the original's chunks are digested on one while the
/// ghost's are on the other.
struct Snapshots {
    source: Conn,
    ghost: Conn,
}

impl Run {
    /// Compares both tables when `cfg.checksum` is on; with it off, still the chunks whose copy
    /// skipped a row on another unique key. Ok once they match.
    pub(super) async fn verify(&mut self, live: &mut Live) -> Result<()> {
        let skipped = std::mem::take(&mut live.skipped_ranges);
        let (plan, mut only) = match (live.checksum.clone(), skipped.is_empty()) {
            (Some(plan), _) => (plan, None),
            (None, false) => {
                info!(
                    chunks = skipped.len(),
                    "the row copy skipped rows whose unique value another row held; checking those chunks"
                );
                (live.verify_plan.clone(), Some(skipped))
            }
            (None, true) => return Ok(()),
        };
        self.progress.send_modify(|p| {
            p.phase = Phase::Verifying;
            p.message = "comparing both tables before the cut-over".into();
        });
        if only.is_none() {
            self.settle_early_checksum(live).await?;
        } else {
            live.early = None;
        }
        if !plan.not_compared.is_empty() {
            info!(
                columns = %plan.not_compared.join(", "),
                "checksum: columns whose type the ALTER changes are counted, not compared"
            );
        }
        for round in 1..=MAX_ROUNDS {
            let differing = self
                .checksum_pass_retrying(live, &plan, only.as_deref(), round)
                .await?;
            self.progress.send_modify(|p| p.checksum_passes = round);
            if differing.is_empty() {
                info!(round, "checksum: both tables match");
                self.progress.send_modify(|p| p.message.clear());
                return Ok(());
            }
            warn!(
                round,
                chunks = differing.len(),
                "checksum: chunks differ; copying them again"
            );
            for range in &differing {
                self.check_abort()?;
                let mut attempts = ChunkAttempts::default();
                let rows = loop {
                    match plan.recopy(&mut live.copy_conn, range).await {
                        Ok(rows) => break rows,
                        Err(e) => {
                            self.retry_or_fail("copying a chunk again", attempts.record(&e), e)
                                .await?;
                            self.revive_sessions(live).await;
                        }
                    }
                };
                self.progress.send_modify(|p| p.chunks_recopied += 1);
                info!(?range, rows, "checksum: chunk copied again");
                self.drain_events(live, 10).await?;
            }
            only = Some(differing);
        }
        let first = only.and_then(|ranges| ranges.into_iter().next());
        if live.checksum.is_none() {
            return Err(EngineError::Checksum(format!(
                "rows the copy skipped, because another row of the new table held one of their \
                 unique values, are still missing after {MAX_ROUNDS} rounds of copying them again \
                 (first chunk: {first:?}): the new table's unique keys do not hold for the table's \
                 data (e.g. a new UNIQUE key over duplicate values); remove the duplicates or the \
                 key from the ALTER, then run again; the original is untouched"
            )));
        }
        Err(EngineError::Checksum(format!(
            "the ghost table still differs from the original after {MAX_ROUNDS} rounds of copying \
             the differing chunks again (first: {first:?}); the original is untouched — look for \
             writes to the ghost table from outside the migration, or an ALTER that changes \
             values (e.g. a new UNIQUE key over duplicates), then run again; \
             --checksum=false skips this gate"
        )))
    }

    /// A pass, repeated at a new consistent point when a session or the server goes away, within
    /// the retry budget.
    async fn checksum_pass_retrying(
        &mut self,
        live: &mut Live,
        plan: &ChecksumPlan,
        only: Option<&[KeyRange]>,
        round: u32,
    ) -> Result<Vec<KeyRange>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.checksum_pass(live, plan, only, round).await {
                Ok(differing) => return Ok(differing),
                Err(e @ (EngineError::Cancelled(_) | EngineError::Checksum(_))) => return Err(e),
                Err(e) => {
                    self.retry_or_fail("the checksum", attempt, e).await?;
                    self.revive_sessions(live).await;
                }
            }
        }
    }

    /// One comparison at a new consistent point, of the whole table (`only` None) or of the
    /// given ranges; returns the ranges that differ.
    async fn checksum_pass(
        &mut self,
        live: &mut Live,
        plan: &ChecksumPlan,
        only: Option<&[KeyRange]>,
        round: u32,
    ) -> Result<Vec<KeyRange>> {
        let mut snapshots = self.consistent_point(live, round).await?;
        let result = self.compare_chunks(live, plan, only, &mut snapshots).await;
        // The snapshots only read; ending them releases their read views (purge may go on).
        for mut snapshot in [snapshots.source, snapshots.ghost] {
            let _ = snapshot.query_drop("COMMIT").await;
            let _ = snapshot.disconnect().await;
        }
        result
    }

    async fn compare_chunks(
        &mut self,
        live: &mut Live,
        plan: &ChecksumPlan,
        only: Option<&[KeyRange]>,
        snapshots: &mut Snapshots,
    ) -> Result<Vec<KeyRange>> {
        let Snapshots {
            source: snapshot,
            ghost,
        } = snapshots;
        let mut differing = Vec::new();
        let mut checked = 0u64;
        let mut check = |this: &mut Self, source_rows: u64| {
            checked += source_rows;
            this.progress.send_modify(|p| {
                p.message = format!("comparing both tables: {checked} rows match so far");
            });
        };
        if let Some(ranges) = only {
            for range in ranges {
                self.between_chunks(live).await?;
                let (source, ghost) = plan.compare(snapshot, ghost, range).await?;
                if source != ghost {
                    differing.push(range.clone());
                }
                check(self, source.rows);
            }
            return Ok(differing);
        }
        // What the checksum during the copy left (it stops here: a retried pass compares all).
        let (mut spans, keyed) = match live.early.take() {
            Some(early) => {
                let (left, verified, ghost_rows_read) = early.left_to_compare();
                info!(
                    verified_chunks = verified,
                    ranges = left.ranges.len(),
                    changed_keys = left.keys.iter().map(|(_, keys)| keys.len()).sum::<usize>(),
                    ghost_rows_read,
                    "checksum: comparing what the checksum during the copy did not find equal, \
                     and the rows changed since"
                );
                (left.ranges, left.keys)
            }
            None => (vec![KeyRange::ALL], Vec::new()),
        };
        // Rows changed in chunks found equal, a batch of keys at a time; a batch that differs
        // has its chunks compared whole below (and narrowed to copy-sized chunks there).
        let mut batch: (Vec<KeyRange>, Vec<mysql_async::Value>) = Default::default();
        let mut keyed = keyed.into_iter().peekable();
        while let Some((range, keys)) = keyed.next() {
            batch.0.push(range);
            batch.1.extend(keys);
            if batch.1.len() < KEYS_PER_QUERY && keyed.peek().is_some() {
                continue;
            }
            self.between_chunks(live).await?;
            let (source, ghost_digest) = plan.compare_keys(snapshot, ghost, &batch.1).await?;
            if source != ghost_digest {
                spans.append(&mut batch.0);
            }
            check(self, source.rows);
            batch = Default::default();
        }
        // The whole table, read inside the snapshot; the ends are open.
        let Some((min, max)) = live.copier.key_range(snapshot).await? else {
            let (source, ghost) = plan.compare(snapshot, ghost, &KeyRange::ALL).await?;
            if source != ghost {
                differing.push(KeyRange::ALL);
            }
            return Ok(differing);
        };
        let copy_chunk = self.controls.borrow().chunk_size;
        let mut sizing = Sizing::Adaptive(ChunkSizer::new(Some(CHUNK_TIME), copy_chunk));
        for span in spans {
            let walk = Walk {
                span,
                min: &min,
                max: &max,
            };
            let found = self
                .walk(live, plan, snapshot, ghost, &walk, &mut sizing, &mut check)
                .await?;
            differing.extend(found);
        }
        Ok(differing)
    }

    /// Compares `walk.span` chunk by chunk. Chunks follow `sizing`: the whole-table walk grows
    /// them toward `CHUNK_TIME` (a fixed copy-sized chunk cost a round trip and a key lookup per
    /// thousand rows, most of the gate's time), and a chunk that differs is walked again in
    /// copy-sized chunks, so only those are copied again.
    #[allow(clippy::too_many_arguments)]
    async fn walk(
        &mut self,
        live: &mut Live,
        plan: &ChecksumPlan,
        snapshot: &mut Conn,
        ghost: &mut Conn,
        walk: &Walk<'_>,
        sizing: &mut Sizing,
        report: &mut (dyn FnMut(&mut Self, u64) + Send),
    ) -> Result<Vec<KeyRange>> {
        let mut differing = Vec::new();
        let bound = walk.span.through.as_ref().unwrap_or(walk.max);
        let mut after = walk.span.after.clone();
        loop {
            self.between_chunks(live).await?;
            let copy_chunk = self.controls.borrow().chunk_size;
            let rows = match sizing {
                Sizing::Adaptive(sizer) => sizer.next(copy_chunk),
                Sizing::Fixed => copy_chunk,
            };
            let (lower, first) = match &after {
                Some(key) => (key.clone(), false),
                None => (walk.min.clone(), true),
            };
            let end = live
                .copier
                .next_chunk_end(snapshot, &lower, first, bound, rows)
                .await?;
            let last = end.as_ref().is_none_or(|end| end == bound);
            let range = KeyRange {
                after: after.clone(),
                through: if last {
                    walk.span.through.clone()
                } else {
                    end.clone()
                },
            };
            let started = Instant::now();
            let (source, ghost_digest) = plan.compare(snapshot, ghost, &range).await?;
            if let Sizing::Adaptive(sizer) = sizing {
                sizer.observe(started.elapsed());
            }
            if source != ghost_digest {
                let narrow = matches!(sizing, Sizing::Adaptive(_))
                    && source.rows.max(ghost_digest.rows) > copy_chunk;
                if narrow {
                    let inner = Walk {
                        span: range.clone(),
                        ..*walk
                    };
                    let found = Box::pin(self.walk(
                        live,
                        plan,
                        snapshot,
                        ghost,
                        &inner,
                        &mut Sizing::Fixed,
                        &mut |_: &mut Self, _| {},
                    ))
                    .await?;
                    if found.is_empty() {
                        // The parts matched though the whole did not: never let that pass.
                        warn!(
                            ?range,
                            "checksum: a chunk differs but none of its parts does"
                        );
                        differing.push(range);
                    } else {
                        differing.extend(found);
                    }
                } else {
                    differing.push(range);
                }
            }
            report(self, source.rows);
            if last {
                return Ok(differing);
            }
            after = end;
        }
    }

    /// Between chunks: stop on panic, apply pending changes, wait out throttling.
    async fn between_chunks(&mut self, live: &mut Live) -> Result<()> {
        loop {
            self.check_abort()?;
            self.drain_events(live, 10).await?;
            if !self.throttled(live)? {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A point where the ghost table holds every change made to the original, retried within
    /// `LOCK_ATTEMPTS`; see [`Run::locked_point`].
    async fn consistent_point(&mut self, live: &mut Live, round: u32) -> Result<Snapshots> {
        let timeout = self.cfg.cut_over_lock_timeout;
        let mut last_error = String::new();
        for attempt in 1..=LOCK_ATTEMPTS {
            self.check_abort()?;
            // The lock is held until the marker comes back through the (maybe replica's) binlog:
            // take it only when that is quick, as the cut-over does.
            self.wait_for_low_lag(live, timeout).await?;
            let marker = format!("checksum point {round}.{attempt}");
            match self.locked_point(live, &marker, 2, timeout).await {
                Ok(mut snapshots) => {
                    if let (Some(ghost), Some(source)) = (snapshots.pop(), snapshots.pop()) {
                        return Ok(Snapshots { source, ghost });
                    }
                    last_error = "no snapshot was opened".into();
                }
                Err(e @ EngineError::Cancelled(_)) => return Err(e),
                Err(e) => {
                    warn!(error = %e, attempt, "checksum: no consistent point yet; retrying");
                    last_error = e.to_string();
                    self.drain_events(live, 10).await?;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        Err(EngineError::RetriesExhausted {
            what: "taking a consistent point for the checksum".into(),
            attempts: LOCK_ATTEMPTS,
            last: last_error,
        })
    }

    /// One attempt at a point where the ghost table holds every change made to the original:
    /// the original is read-locked (waiting at most `lock_wait`), the changelog state `marker`
    /// written after the lock is waited for through the binlog (so every earlier change is
    /// applied), and `count` consistent snapshots are opened before the lock is released.
    /// Writes to the original wait for about as long as a cut-over's lock.
    pub(super) async fn locked_point(
        &mut self,
        live: &mut Live,
        marker: &str,
        count: usize,
        lock_wait: Duration,
    ) -> Result<Vec<Conn>> {
        let original = qualified(&self.cfg.database, &self.cfg.table);
        let mut lock = self.applier_cfg.connect().await?;
        let result = async {
            lock.query_drop(format!(
                "SET SESSION lock_wait_timeout = {}",
                lock_wait.as_secs().max(1)
            ))
            .await
            .sql_context(|| "setting the lock timeout".into())?;
            lock.query_drop(format!("LOCK TABLES {original} READ"))
                .await
                .sql_context(|| format!("LOCK TABLES {original} READ for the checksum"))?;
            let locked_at = Instant::now();
            let snapshots = self.snapshots_under_lock(live, marker, count).await;
            let _ = lock.query_drop("UNLOCK TABLES").await;
            if snapshots.is_ok() {
                info!(
                    marker,
                    lock_millis = locked_at.elapsed().as_millis() as u64,
                    "checksum: consistent point taken; writes to the table waited this long"
                );
            }
            snapshots
        }
        .await;
        let _ = lock.disconnect().await;
        result
    }

    /// Applies changes until the last heartbeat seen is younger than `limit`.
    async fn wait_for_low_lag(&mut self, live: &mut Live, limit: Duration) -> Result<()> {
        loop {
            self.between_chunks(live).await?;
            let lag_ok = live
                .last_heartbeat
                .is_some_and(|at| (chrono::Utc::now() - at).to_std().unwrap_or_default() < limit);
            if lag_ok {
                return Ok(());
            }
            match tokio::time::timeout(Duration::from_millis(100), live.events.recv()).await {
                Ok(Some(msg)) => self.handle_stream_msg(live, msg).await?,
                Ok(None) => return Err(EngineError::Stream("the binlog stream task ended".into())),
                Err(_) => {}
            }
        }
    }

    async fn snapshots_under_lock(
        &mut self,
        live: &mut Live,
        marker: &str,
        count: usize,
    ) -> Result<Vec<Conn>> {
        self.changelog()
            .write_state(&mut self.ddl_conn, marker)
            .await?;
        self.wait_for_state(live, marker, Wait::Total(self.cfg.cut_over_lock_timeout))
            .await?;
        // Nothing changes the original until the lock is released, and its changes are applied
        // only after this returns, so every snapshot sees the same point.
        let mut snapshots = Vec::with_capacity(count);
        for _ in 0..count {
            snapshots.push(self.open_snapshot().await?);
        }
        Ok(snapshots)
    }

    async fn open_snapshot(&self) -> Result<Conn> {
        let mut snapshot = self.applier_cfg.connect().await?;
        snapshot
            .query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .await
            .sql_context(|| "preparing the checksum session".into())?;
        snapshot
            .query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            .await
            .sql_context(|| "opening the checksum snapshot".into())?;
        Ok(snapshot)
    }
}
