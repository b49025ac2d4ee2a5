//! Parallel row copy (`--copy-threads`, `spec.copy.threads`): chunk boundaries are still found
//! one after another along the key, but each chunk is copied on its own session by one of N
//! workers, while this task keeps applying binlog changes. Chunks are disjoint key ranges, and each
//! copy is `INSERT IGNORE … SELECT … LOCK IN SHARE MODE` in one transaction, so the order in
//! which they land does not matter: as in the serial copy, a copied row is the row as of its copy,
//! and every later change follows through the binlog. The checkpoint saves the low-water mark, the
//! end of the last chunk below which every chunk is copied.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use mysql_async::Conn;
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::row_copy::{ChunkAttempts, MovingRate};
use super::{Live, Run};
use crate::engine::checksum::KeyRange;
use crate::engine::chunk_size::ChunkSizer;
use crate::engine::copier::{ChunkResult, KeyTuple};
use crate::engine::error::{EngineError, Result};

/// One chunk handed to a worker.
struct Chunk {
    lower: KeyTuple,
    first: bool,
    upper: KeyTuple,
    attempts: ChunkAttempts,
    done: bool,
}

type Finished = (Option<Conn>, u64, Result<ChunkResult>);

impl Run {
    /// Copies (`lower`, `max`] ([`lower`, `max`] when `first`) with `threads` workers.
    pub(super) async fn copy_rows_parallel(
        &mut self,
        live: &mut Live,
        start: (KeyTuple, bool),
        max: KeyTuple,
        threads: usize,
    ) -> Result<()> {
        info!(workers = threads, "copying rows in parallel");
        let mut idle: Vec<Conn> = Vec::with_capacity(threads);
        for _ in 0..threads {
            idle.push(self.open_copy_session().await?);
        }
        let (mut lower, mut first) = start;
        let mut chunks: BTreeMap<u64, Chunk> = BTreeMap::new();
        let mut retry: VecDeque<u64> = VecDeque::new();
        let mut running: JoinSet<Finished> = JoinSet::new();
        let mut next_seq = 0u64;
        let mut open_failures = 0u32;
        let mut exhausted = false;
        let (mut rate, mut sizer) = self.copy_pace();
        loop {
            self.check_abort()?;
            while let Some(joined) = running.try_join_next() {
                self.chunk_finished(
                    live,
                    joined,
                    &mut chunks,
                    &mut retry,
                    &mut idle,
                    &mut rate,
                    &mut sizer,
                )
                .await?;
            }
            if exhausted && retry.is_empty() && running.is_empty() {
                return Ok(());
            }
            // Throttled: no new chunk; the running ones finish.
            let throttled = self.throttled(live)?;
            if throttled {
                self.rate_paused(&mut rate);
            } else {
                self.drain_events(live, 10).await?;
            }
            let wants_chunk = !retry.is_empty() || !exhausted;
            if !throttled && wants_chunk && idle.is_empty() && running.is_empty() {
                // Every session was lost (a restarted server): open one again, within the
                // retry budget.
                match self.open_copy_session().await {
                    Ok(conn) => {
                        open_failures = 0;
                        idle.push(conn);
                    }
                    Err(e) => {
                        open_failures += 1;
                        self.retry_or_fail("opening a copy session", open_failures, e)
                            .await?;
                    }
                }
            }
            if !throttled && wants_chunk {
                if let Some(conn) = idle.pop() {
                    let seq = match retry.pop_front() {
                        Some(seq) => Some(seq),
                        None => {
                            let size = sizer.next(self.controls.borrow().chunk_size);
                            match live
                                .copier
                                .next_chunk_end(&mut live.copy_conn, &lower, first, &max, size)
                                .await?
                            {
                                Some(upper) => {
                                    let seq = next_seq;
                                    next_seq += 1;
                                    chunks.insert(
                                        seq,
                                        Chunk {
                                            lower: lower.clone(),
                                            first,
                                            upper: upper.clone(),
                                            attempts: ChunkAttempts::default(),
                                            done: false,
                                        },
                                    );
                                    lower = upper;
                                    first = false;
                                    Some(seq)
                                }
                                None => {
                                    exhausted = true;
                                    None
                                }
                            }
                        }
                    };
                    match seq.and_then(|seq| chunks.get(&seq).map(|c| (seq, c))) {
                        Some((seq, chunk)) => {
                            self.spawn_chunk(&mut running, live, conn, seq, chunk)
                        }
                        None => idle.push(conn),
                    }
                    continue;
                }
            }
            // Every worker busy (or throttled): apply changes until one finishes.
            tokio::select! {
                Some(joined) = running.join_next() => {
                    self.chunk_finished(live, joined, &mut chunks, &mut retry, &mut idle, &mut rate, &mut sizer)
                        .await?;
                }
                msg = live.events.recv(), if !throttled => match msg {
                    Some(msg) => self.handle_stream_msg(live, msg).await?,
                    None => return Err(EngineError::Stream("the binlog stream task ended".into())),
                },
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    fn spawn_chunk(
        &self,
        running: &mut JoinSet<Finished>,
        live: &Live,
        mut conn: Conn,
        seq: u64,
        chunk: &Chunk,
    ) {
        let copier = live.copier.clone();
        let check = self.cfg.panic_on_warnings.then_some(live.ghost_key.clone());
        let nice_ratio = self.controls.borrow().nice_ratio;
        let (lower, first, upper) = (chunk.lower.clone(), chunk.first, chunk.upper.clone());
        running.spawn(async move {
            let result = copier
                .copy_chunk(&mut conn, &lower, first, &upper, check.as_deref(), &[])
                .await;
            if let Ok(done) = &result {
                if nice_ratio > 0.0 {
                    tokio::time::sleep(done.elapsed.mul_f64(nice_ratio)).await;
                }
            }
            // A session whose statement failed may be broken: the caller opens a new one.
            let conn = result.is_ok().then_some(conn);
            (conn, seq, result)
        });
    }

    #[allow(clippy::too_many_arguments)]
    async fn chunk_finished(
        &mut self,
        live: &mut Live,
        joined: std::result::Result<Finished, tokio::task::JoinError>,
        chunks: &mut BTreeMap<u64, Chunk>,
        retry: &mut VecDeque<u64>,
        idle: &mut Vec<Conn>,
        rate: &mut MovingRate,
        sizer: &mut ChunkSizer,
    ) -> Result<()> {
        let (conn, seq, result) =
            joined.map_err(|e| EngineError::Stream(format!("a copy worker stopped: {e}")))?;
        match conn {
            Some(conn) => idle.push(conn),
            // A server that is away (restarting) is waited for like a failed chunk: the next
            // attempt opens the session again.
            None => match self.open_copy_session().await {
                Ok(conn) => idle.push(conn),
                Err(e) => warn!(error = %e, "cannot open a copy session yet"),
            },
        }
        match result {
            Ok(done) => {
                if let Some(chunk) = chunks.get_mut(&seq) {
                    chunk.done = true;
                    if done.skipped_on_other_key {
                        live.skipped_ranges.push(KeyRange {
                            after: (!chunk.first).then(|| chunk.lower.clone()),
                            through: Some(chunk.upper.clone()),
                        });
                    }
                }
                sizer.observe(done.elapsed);
                self.chunk_copied(rate, sizer, &done);
                // The low-water mark: every chunk up to it is copied.
                let mut low_water = None;
                while let Some(entry) = chunks.first_entry() {
                    if !entry.get().done {
                        break;
                    }
                    low_water = Some(entry.remove().upper);
                }
                if let Some(key) = low_water {
                    self.maybe_checkpoint(live, Some(&key), false, false).await;
                }
                Ok(())
            }
            Err(e) => {
                let attempt = match chunks.get_mut(&seq) {
                    Some(chunk) => chunk.attempts.record(&e),
                    None => 1,
                };
                warn!(error = %e, attempt, "a parallel copy chunk failed");
                self.chunk_failed(attempt, e).await?;
                retry.push_back(seq);
                Ok(())
            }
        }
    }
}
