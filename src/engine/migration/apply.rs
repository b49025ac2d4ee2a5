//! Applying the binlog: stream items become batches of whole source transactions, written to
//! the ghost table by `engine::applier`; changelog rows (heartbeats, state markers) are noted.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::warn;

use super::row_copy::ChunkAttempts;
use super::{Live, MAX_PENDING_ROWS, Run, StreamMsg, Wait};
use crate::engine::changelog::{ChangelogEvent, interpret};
use crate::engine::error::{EngineError, Result};
use crate::engine::streamer::StreamItem;

/// Row events one unit of `drain_events`' budget allows: what 100 batches of gh-ost's default
/// 10 events were, before batches grew to 1000.
const DRAIN_ROWS_PER_BATCH: usize = 1000;

impl Run {
    /// Applies what the stream has delivered. `batches` limits the work (0: only what is already
    /// queued, one pass): about `batches` × 1000 row events, so the copy between two calls gets
    /// its turn whatever `--dml-batch-size` is.
    pub(super) async fn drain_events(&mut self, live: &mut Live, batches: usize) -> Result<()> {
        let mut done = 0;
        let applied_before = self.progress.borrow().events_applied;
        let row_budget = (batches * DRAIN_ROWS_PER_BATCH) as u64;
        loop {
            match live.events.try_recv() {
                Ok(msg) => self.handle_stream_msg(live, msg).await?,
                // The rest of a transaction is on its way: batches end at commits (or when full),
                // so a batch never splits a source transaction.
                // Nothing more right now: apply what is complete (whole transactions only).
                Err(mpsc::error::TryRecvError::Empty) => {
                    return self.flush_at_boundary(live).await;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    return Err(EngineError::Stream("the binlog stream task ended".into()));
                }
            }
            if live.pending.is_empty() {
                done += 1;
                let applied = self
                    .progress
                    .borrow()
                    .events_applied
                    .saturating_sub(applied_before);
                if batches > 0 && (done >= batches * 100 || applied >= row_budget) {
                    return Ok(());
                }
            }
        }
    }

    pub(super) async fn handle_stream_msg(
        &mut self,
        live: &mut Live,
        msg: StreamMsg,
    ) -> Result<()> {
        let item = match msg {
            StreamMsg::Item(item) => item,
            StreamMsg::Failed(e) => return Err(e),
        };
        match item {
            StreamItem::Row(change) if change.table.name == live.changelog_table => {
                self.flush(live).await?;
                if let Some(after) = change.after.as_deref() {
                    match interpret(after) {
                        ChangelogEvent::Heartbeat(at) => {
                            live.last_heartbeat = Some(at);
                            let lag = (chrono::Utc::now() - at).num_milliseconds().max(0) as u64;
                            self.progress
                                .send_modify(|p| p.heartbeat_lag_millis = Some(lag));
                        }
                        ChangelogEvent::State(state) => {
                            live.states_seen.insert(state);
                        }
                        ChangelogEvent::Other => {}
                    }
                }
            }
            StreamItem::Row(change) => {
                if let Some(early) = live.early.as_mut() {
                    early.row_changed(&change);
                }
                if live
                    .gone
                    .as_mut()
                    .is_some_and(|gone| !gone.observe(&change))
                {
                    warn!(
                        "a change's key cannot be followed; the copy reads under row locks again"
                    );
                    live.gone = None;
                    live.copier.read_with_locks();
                }
                live.pending.push(change);
                live.open_transaction = true;
                // Only a transaction larger than this is ever split across batches: memory stays
                // bounded.
                if live.pending.len() >= MAX_PENDING_ROWS {
                    self.flush(live).await?;
                }
            }
            StreamItem::Commit(position) => {
                live.open_transaction = false;
                live.last_commit = Some(position.clone());
                if live.pending.is_empty() {
                    live.applied_position = Some(position.clone());
                    self.progress
                        .send_modify(|p| p.applied_position = Some(position));
                } else {
                    live.pending_commit = Some(position);
                    let batch = self.controls.borrow().dml_batch_size.max(1);
                    if live.pending.len() >= batch {
                        self.flush(live).await?;
                    }
                }
            }
            StreamItem::WatchedKey(key) => {
                if let Some(early) = live.early.as_mut() {
                    early.ghost_written(key);
                }
            }
            StreamItem::Heartbeat(_) | StreamItem::Statement { .. } => {}
        }
        Ok(())
    }

    pub(super) async fn flush(&mut self, live: &mut Live) -> Result<()> {
        if live.pending.is_empty() {
            return Ok(());
        }
        let changes = std::mem::take(&mut live.pending);
        let check = self.cfg.panic_on_warnings.then_some(live.ghost_key.clone());
        let n = changes.len() as u64;
        let in_lanes = !live.apply_under_lock && !live.apply_lanes.is_empty();
        let mut lane_attempts = ChunkAttempts::default();
        let mut failures = 0;
        loop {
            let result = if !in_lanes {
                live.plan
                    .apply_batch(
                        &mut live.apply_conn,
                        &changes,
                        live.copy_window.as_ref(),
                        check.as_deref(),
                        live.apply_under_lock,
                    )
                    .await
            } else {
                live.plan
                    .apply_batch_in_lanes(
                        &mut live.apply_lanes,
                        &changes,
                        live.copy_window.as_ref(),
                        check.as_deref(),
                    )
                    .await
            };
            match result {
                Ok(()) => break,
                // Under the cut-over's lock the attempt fails instead: a new session would not
                // hold the lock.
                Err(e) if live.apply_under_lock => return Err(e),
                Err(e) => {
                    // Lanes may deadlock on a secondary index's gaps (their sessions wait
                    // briefly): like the copy's lock waits, those are many to one attempt.
                    let attempt = if in_lanes {
                        lane_attempts.record(&e)
                    } else {
                        failures += 1;
                        failures
                    };
                    self.retry_or_fail("applying binlog events", attempt, e)
                        .await?;
                    self.revive_apply_sessions(live).await;
                }
            }
        }
        let applied = live.pending_commit.take();
        if let Some(position) = &applied {
            live.applied_position = Some(position.clone());
        }
        self.progress.send_modify(|p| {
            p.events_applied += n;
            if let Some(position) = applied {
                p.applied_position = Some(position);
            }
        });
        Ok(())
    }

    /// Replaces whichever apply sessions were lost; one that cannot be replaced yet fails the
    /// next attempt instead.
    async fn revive_apply_sessions(&self, live: &mut Live) {
        if let Err(e) = self.sessions.apply.revive(&mut live.apply_conn).await {
            warn!(error = %e, "the apply session is lost and cannot be replaced yet");
        }
        self.revive_lanes(live).await;
    }

    /// Applies what is pending when it ends at a transaction boundary.
    pub(super) async fn flush_at_boundary(&mut self, live: &mut Live) -> Result<()> {
        if live.open_transaction {
            return Ok(());
        }
        self.flush(live).await
    }

    /// Applies events until the changelog state `state` has been seen in the stream: every change
    /// logged before it is then applied. With `Wait::Idle` the limit counts only time without any
    /// event (a lagging replica may deliver a long backlog first); `Wait::Total` is a hard limit
    /// (the table is locked).
    pub(super) async fn wait_for_state(
        &mut self,
        live: &mut Live,
        state: &str,
        wait: Wait,
    ) -> Result<()> {
        let (timeout, idle) = match wait {
            Wait::Idle(t) => (t, true),
            Wait::Total(t) => (t, false),
        };
        let mut deadline = Instant::now() + timeout;
        while !live.states_seen.contains(state) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(EngineError::Stream(format!(
                    "the changelog state {state:?} did not come through the binary log within {timeout:?}"
                )));
            }
            match tokio::time::timeout(left.min(Duration::from_millis(50)), live.events.recv())
                .await
            {
                Ok(Some(msg)) => {
                    if idle {
                        deadline = Instant::now() + timeout;
                    }
                    self.handle_stream_msg(live, msg).await?
                }
                Ok(None) => return Err(EngineError::Stream("the binlog stream task ended".into())),
                Err(_) => self.flush_at_boundary(live).await?,
            }
        }
        self.flush(live).await
    }
}
