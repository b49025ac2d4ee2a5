//! The cut-over phase: wait until it may start (not postponed, not throttled, lag low), then swap
//! the tables with the server's atomic algorithm (`engine::cutover`), retrying failed attempts.
//! Every attempt first records where it starts in the changelog, so a run that dies inside it
//! can be finished by `--resume` (`migration::recover`).

use std::time::{Duration, Instant};

use mysql_async::{Conn, prelude::Queryable};
use tracing::{info, warn};

use super::{Live, Run, Wait};
use crate::engine::changelog::STATE_ALL_EVENTS_UP_TO_LOCK;
use crate::engine::config::{CutOverMode, MigrationConfig, Topology};
use crate::engine::crash_point;
use crate::engine::cutover::{CutOverTables, order};
use crate::engine::dialect::CutOverAlgorithm;
use crate::engine::error::{EngineError, Result, SqlContext};
use crate::engine::hooks::HookPoint;
use crate::engine::inspector::Trigger;
use crate::engine::progress::Phase;
use crate::sql::qualified;

use super::recover::CutOverRecord;

impl Run {
    pub(super) async fn cut_over_with_retries(&mut self, live: &mut Live) -> Result<Duration> {
        let attempts = self.cfg.default_retries.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            self.cut_over_gate(live).await?;
            self.progress.send_modify(|p| {
                p.phase = Phase::CuttingOver;
                p.cut_over_attempts = attempt;
            });
            match self.cut_over(live).await {
                Ok(lock) => return Ok(lock),
                Err(e @ (EngineError::Cancelled(_) | EngineError::Warnings(_))) => return Err(e),
                Err(e) => {
                    warn!(error = %e, attempt, "cut-over attempt failed");
                    last = e.to_string();
                    self.refresh_ddl_session().await;
                    // A RENAME whose reply was lost (a broken connection) may still have run.
                    if self.swap_happened().await {
                        warn!(
                            "the tables were swapped although the attempt reported a failure; the cut-over is done"
                        );
                        let blocked = Duration::from_millis(
                            self.progress.borrow().cut_over_lock_millis.unwrap_or(0),
                        );
                        return Ok(blocked);
                    }
                    let wait = if self.cfg.cut_over_exponential_backoff {
                        Duration::from_secs(1 << (attempt - 1).min(16))
                            .min(self.cfg.exponential_backoff_max_interval)
                    } else {
                        Duration::from_secs(1)
                    };
                    if attempt < attempts {
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
        Err(EngineError::RetriesExhausted {
            what: "cut-over".into(),
            attempts,
            last,
        })
    }

    /// Whether the tables are swapped, as far as the server says (false when it cannot say).
    async fn swap_happened(&mut self) -> bool {
        matches!(
            super::recover::swap_state(
                &mut self.ddl_conn,
                &self.cfg.database,
                &self.cfg.table,
                &self.names.ghost,
                &self.names.old,
            )
            .await,
            Ok(Some(super::recover::SwapState::Swapped))
        ) && self.cfg.topology != Topology::TestOnReplica
    }

    /// Waits, applying events, until cut-over may start: not postponed, not throttled, lag low.
    pub(super) async fn cut_over_gate(&mut self, live: &mut Live) -> Result<()> {
        let mut announced = false;
        loop {
            self.check_abort()?;
            self.drain_events(live, 0).await?;
            self.maybe_checkpoint(live, None, true, false).await;
            let max_lag = self
                .controls
                .borrow()
                .max_lag
                .min(self.cfg.cut_over_lock_timeout);
            let lag_ok = live
                .last_heartbeat
                .map(|at| (chrono::Utc::now() - at).to_std().unwrap_or_default() < max_lag)
                .unwrap_or(false);
            let postponed = self.postponed();
            if postponed && !announced {
                info!("cut-over postponed; row copy is complete and changes keep being applied");
                self.progress.send_modify(|p| p.phase = Phase::Postponed);
                announced = true;
                let snapshot = self.progress.borrow().clone();
                self.hooks
                    .fire(HookPoint::BeginPostponed, &snapshot, &[])
                    .await?;
            }
            // The throttle verdict is read every round, so status shows the real reason and lag
            // while postponed too.
            let throttled = self.throttled(live)?;
            if !postponed && lag_ok && !throttled {
                return Ok(());
            }
            match tokio::time::timeout(Duration::from_millis(100), live.events.recv()).await {
                Ok(Some(msg)) => self.handle_stream_msg(live, msg).await?,
                Ok(None) => return Err(EngineError::Stream("the binlog stream task ended".into())),
                Err(_) => {}
            }
        }
    }

    async fn cut_over(&mut self, live: &mut Live) -> Result<Duration> {
        if self.cfg.analyze_ghost_table_before_cutover {
            self.ddl_conn
                .query_drop(format!("ANALYZE TABLE {}", self.ghost_name()))
                .await
                .sql_context(|| "ANALYZE TABLE on the ghost table".into())?;
        }
        let test_on_replica = self.cfg.topology == Topology::TestOnReplica;
        let stop_replication = test_on_replica && !self.cfg.test_on_replica_skip_replica_stop;
        if test_on_replica {
            let snapshot = self.progress.borrow().clone();
            self.hooks
                .fire(HookPoint::StopReplication, &snapshot, &[])
                .await?;
        }
        if stop_replication {
            for sql in self.server.stop_replication_sql() {
                self.ddl_conn
                    .query_drop(sql)
                    .await
                    .sql_context(|| format!("{sql} for --test-on-replica"))?;
            }
        }
        let tables = self.cut_over_tables();
        self.record_cut_over(live, &tables).await?;
        let result = match (self.cfg.cut_over, self.server.cut_over_algorithm()) {
            (CutOverMode::TwoStep, _) => self.two_step_cut_over(live, &tables).await,
            (CutOverMode::Atomic, CutOverAlgorithm::LockedRename) => {
                self.locked_rename(live, &tables).await
            }
            (CutOverMode::Atomic, CutOverAlgorithm::GatedRename) => {
                self.gated_rename(live, &tables).await
            }
        };
        if test_on_replica {
            if result.is_ok() {
                tables.swap_back(&mut self.ddl_conn).await?;
            } else {
                let snapshot = self.progress.borrow().clone();
                self.hooks
                    .fire(HookPoint::StartReplication, &snapshot, &[])
                    .await?;
                if stop_replication {
                    let _ = self
                        .ddl_conn
                        .query_drop(self.server.start_replication_sql())
                        .await;
                }
            }
        }
        result
    }

    /// The tables of this run's swap, with the gate names the gated rename uses.
    pub(super) fn cut_over_tables(&self) -> CutOverTables {
        CutOverTables {
            schema: self.cfg.database.clone(),
            original: self.cfg.table.clone(),
            ghost: self.names.ghost.clone(),
            old: self.names.old.clone(),
            engine: self.engine.clone(),
            gates: order::gate_names(&self.cfg.table),
        }
    }

    /// Writes where this attempt starts (every change before it is applied) and the names it
    /// swaps into the changelog: what `--resume` needs to finish a cut-over this process did not
    /// live to finish.
    async fn record_cut_over(&mut self, live: &Live, tables: &CutOverTables) -> Result<()> {
        let Some(position) = live.applied_position.clone() else {
            return Err(EngineError::CutOver(
                "no binlog position has been applied yet; the stream is not live".into(),
            ));
        };
        let record = CutOverRecord {
            position,
            old_table: tables.old.clone(),
            two_step: self.cfg.cut_over == CutOverMode::TwoStep,
        };
        self.changelog()
            .write_record(
                &mut self.ddl_conn,
                super::recover::RECORD_HINT,
                &record.to_json(),
            )
            .await?;
        self.cut_over_record = Some(record);
        Ok(())
    }

    /// Whether this run's swap is the gated rename, whose hand-over `audit_hand_over` checks.
    fn swaps_by_gated_rename(&self) -> bool {
        self.cfg.cut_over == CutOverMode::Atomic
            && self.server.cut_over_algorithm() == CutOverAlgorithm::GatedRename
            && self.cfg.topology != Topology::TestOnReplica
            && self.cfg.revert_from.is_none()
    }

    /// The gated rename's proof, once the tables are swapped: no write reached the old table
    /// between the lock's marker and the swap (`recover::audit_swap`, which also merges any that
    /// did into the new table). When the check cannot run, or a write conflicts with the new
    /// table, the old table is kept whatever `--ok-to-drop-table` says.
    pub(super) async fn audit_hand_over(&mut self) {
        if !self.swaps_by_gated_rename() {
            return;
        }
        let Some(record) = self.cut_over_record.clone() else {
            return;
        };
        // The check reads the binary log as this run's replica: the live stream goes first.
        self.stop_tasks();
        let result = async {
            let mut conn = self.applier_cfg.connect().await?;
            let report = super::recover::audit_swap(
                &self.cfg,
                &mut conn,
                &self.names,
                &record,
                (self.original.clone(), &self.original_keys),
            )
            .await;
            let _ = conn.disconnect().await;
            report
        }
        .await;
        match result {
            Ok(report) if report.leaked == 0 => {
                info!("hand-over checked: no write reached the old table after the cut-over's lock")
            }
            Ok(report) => {
                warn!(
                    leaked = report.leaked,
                    applied = report.applied,
                    present = report.present,
                    conflicts = report.conflicts.len(),
                    "writes reached the old table after the cut-over's lock; those the new table could take are applied to it"
                );
                if !report.conflicts.is_empty() {
                    warn!(
                        keys = %report.conflicts.join(", "),
                        old_table = %report.old_table,
                        "these rows changed in the new table since; they stay in the old table for you to merge by hand"
                    );
                    self.keep_old_table = true;
                }
            }
            Err(e) => {
                warn!(error = %e, "the hand-over could not be checked in the binary log; the old table is kept");
                self.keep_old_table = true;
            }
        }
    }

    /// The lock's marker: once it comes back through the binlog, every change made to the
    /// original before the lock is applied.
    fn lock_marker() -> String {
        format!(
            "{STATE_ALL_EVENTS_UP_TO_LOCK}:{}",
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
        )
    }

    /// Applies every change made before the lock (the tables are locked; `deadline` bounds it).
    async fn apply_up_to_lock(&mut self, live: &mut Live, locked_at: Instant) -> Result<()> {
        let marker = Self::lock_marker();
        self.changelog()
            .write_state(&mut self.ddl_conn, &marker)
            .await?;
        let left = self.lock_time_left(locked_at)?;
        self.wait_for_state(live, &marker, Wait::Total(left))
            .await?;
        self.cut_over_position = live.last_commit.clone();
        Ok(())
    }

    /// Under the cut-over's lock: every change before it applied, the triggers created on the
    /// ghost table (through `via`: only the locking session may touch a table it locked), and
    /// the time left of the lock's limit.
    async fn prepare_under_lock(
        &mut self,
        live: &mut Live,
        locked_at: Instant,
        via: TriggerSession,
    ) -> Result<Duration> {
        self.apply_up_to_lock(live, locked_at).await?;
        crash_point::reached("cut-over:marker-applied");
        if self.cfg.include_triggers {
            let ghost = self.ghost_name();
            let conn = match via {
                TriggerSession::Apply => &mut live.apply_conn,
                TriggerSession::Ddl => &mut self.ddl_conn,
            };
            create_ghost_triggers(&self.cfg, &self.triggers, &ghost, conn).await?;
        }
        self.lock_time_left(locked_at)
    }

    /// What is left of `--cut-over-lock-timeout-seconds` since the lock was taken; an error once
    /// it is spent, so no attempt holds the lock longer.
    fn lock_time_left(&self, locked_at: Instant) -> Result<Duration> {
        let left = self
            .cfg
            .cut_over_lock_timeout
            .saturating_sub(locked_at.elapsed());
        if left.is_zero() {
            return Err(EngineError::CutOver(format!(
                "the tables were locked for {:?}, the --cut-over-lock-timeout-seconds limit; letting go",
                self.cfg.cut_over_lock_timeout
            )));
        }
        Ok(left)
    }

    /// MySQL 8.0.13+: one session locks both tables, applies the last changes itself (only it
    /// may write the locked ghost table) and renames them under the lock.
    async fn locked_rename(&mut self, live: &mut Live, tables: &CutOverTables) -> Result<Duration> {
        let mut lock_conn = self.sessions.apply.open().await?;
        // COMMIT keeps LOCK TABLES; START TRANSACTION would release it.
        lock_conn
            .query_drop("SET SESSION autocommit = 0")
            .await
            .sql_context(|| "preparing the cut-over session".into())?;
        tables
            .lock_for_rename(&mut lock_conn, self.cfg.cut_over_lock_timeout)
            .await?;
        let locked_at = Instant::now();
        crash_point::reached("cut-over:locked");
        std::mem::swap(&mut live.apply_conn, &mut lock_conn);
        live.apply_under_lock = true;
        let result = async {
            self.prepare_under_lock(live, locked_at, TriggerSession::Apply)
                .await?;
            live.apply_conn
                .query_drop(tables.swap_sql())
                .await
                .map_err(|e| EngineError::CutOver(format!("RENAME failed: {e}")))?;
            crash_point::reached("cut-over:swapped");
            Ok(())
        }
        .await;
        live.apply_under_lock = false;
        std::mem::swap(&mut live.apply_conn, &mut lock_conn);
        let unlocked = tables.unlock(&mut lock_conn).await;
        let blocked = locked_at.elapsed();
        let _ = lock_conn.disconnect().await;
        match result {
            Ok(()) => {
                crash_point::reached("cut-over:unlocked");
                // The swap is done whatever UNLOCK said: the session's end releases the lock.
                if let Err(e) = unlocked {
                    warn!(error = %e, "UNLOCK TABLES after the swap failed; the session's end released it");
                }
                Ok(self.swapped(blocked))
            }
            Err(e) => {
                // The apply session went away: replace it before anything else applies.
                self.refresh_apply_session(live).await?;
                Err(e)
            }
        }
    }

    /// MariaDB and older MySQL: gh-ost's two-session algorithm with a gate that sorts after the
    /// original (`engine::cutover`).
    async fn gated_rename(&mut self, live: &mut Live, tables: &CutOverTables) -> Result<Duration> {
        if tables.gates.is_none() {
            return Err(EngineError::Refused(format!(
                "no cut-over gate name sorts after {} within 64 characters; rename the table first",
                qualified(&tables.schema, &tables.original)
            )));
        }
        tables.create_gates(&mut self.ddl_conn).await?;
        crash_point::reached("cut-over:gate-created");
        let mut lock_a = self.applier_cfg.connect().await?;
        if let Err(e) = tables
            .lock_for_gate(&mut lock_a, self.cfg.cut_over_lock_timeout)
            .await
        {
            let _ = tables.drop_gates(&mut self.ddl_conn).await;
            return Err(e);
        }
        let locked_at = Instant::now();
        crash_point::reached("cut-over:locked");
        let outcome = self
            .gated_locked(live, tables, &mut lock_a, locked_at)
            .await;
        let _ = lock_a.disconnect().await;
        if let Err(e) = tables.drop_gates(&mut self.ddl_conn).await {
            warn!(error = %e, "dropping the cut-over gate tables");
        }
        outcome
    }

    async fn gated_locked(
        &mut self,
        live: &mut Live,
        tables: &CutOverTables,
        lock_a: &mut Conn,
        locked_at: Instant,
    ) -> Result<Duration> {
        // The hand-over done wrong, for the tests: A lets go before the RENAME is even sent, so
        // waiting writes reach the old table and only the swap's check can save them.
        let early = crash_point::fault("cut-over:hand-over-early");
        let rename_delay = early.then_some(Duration::from_millis(300));
        let prepared = self
            .gated_prepare(live, tables, locked_at, rename_delay)
            .await;
        let (rename_id, rename) = match prepared {
            Ok(started) => started,
            Err(e) => {
                let _ = tables.unlock(lock_a).await;
                return Err(e);
            }
        };
        let queued = async {
            if early {
                return Ok(());
            }
            let mut probe = self.applier_cfg.connect().await?;
            let left = self.lock_time_left(locked_at)?;
            let result = tables
                .wait_rename_queued(&mut probe, rename_id, &self.server, left)
                .await;
            let _ = probe.disconnect().await;
            result
        }
        .await;
        if let Err(e) = queued {
            // The RENAME must not run after the lock goes: stop it first (the gate still stands,
            // so even a RENAME that slips through fails).
            let _ = self
                .ddl_conn
                .query_drop(format!("KILL QUERY {rename_id}"))
                .await;
            let _ = rename.await;
            let _ = tables.unlock(lock_a).await;
            return Err(e);
        }
        crash_point::reached("cut-over:rename-queued");
        // From here on the RENAME decides: it is queued first on the original, and without the
        // gate it succeeds as soon as A lets go, whether A unlocks or dies.
        if let Err(e) = tables.drop_gate(lock_a).await {
            warn!(error = %e, "dropping the gate under lock failed; the RENAME's result decides");
        }
        crash_point::reached("cut-over:sentry-dropped");
        if let Err(e) = tables.unlock(lock_a).await {
            warn!(error = %e, "UNLOCK TABLES failed; the session's end releases the lock");
        }
        crash_point::reached("cut-over:unlocked");
        let renamed = rename
            .await
            .map_err(|e| EngineError::CutOver(format!("the RENAME task failed: {e}")))?;
        let blocked = locked_at.elapsed();
        renamed.map_err(|e| EngineError::CutOver(format!("RENAME failed: {e}")))?;
        crash_point::reached("cut-over:swapped");
        Ok(self.swapped(blocked))
    }

    /// Under the gate's lock: apply every change before it, create the triggers, and issue the
    /// RENAME in its own session. Returns its connection id and its task.
    async fn gated_prepare(
        &mut self,
        live: &mut Live,
        tables: &CutOverTables,
        locked_at: Instant,
        rename_delay: Option<Duration>,
    ) -> Result<(u32, tokio::task::JoinHandle<mysql_async::Result<()>>)> {
        let left = self
            .prepare_under_lock(live, locked_at, TriggerSession::Ddl)
            .await?;
        let mut rename_b = self.applier_cfg.connect().await?;
        rename_b
            .query_drop(format!(
                "SET SESSION lock_wait_timeout = {}",
                left.as_secs().max(1)
            ))
            .await
            .sql_context(|| "setting the RENAME's lock timeout".into())?;
        let rename_id = rename_b.id();
        let swap = tables.gated_swap_sql()?;
        let rename = tokio::spawn(async move {
            if let Some(delay) = rename_delay {
                tokio::time::sleep(delay).await;
            }
            let result = rename_b.query_drop(swap).await;
            let _ = rename_b.disconnect().await;
            result
        });
        Ok((rename_id, rename))
    }

    fn swapped(&self, blocked: Duration) -> Duration {
        info!(blocked_ms = blocked.as_millis() as u64, "tables swapped");
        self.progress
            .send_modify(|p| p.cut_over_lock_millis = Some(blocked.as_millis() as u64));
        blocked
    }

    async fn two_step_cut_over(
        &mut self,
        live: &mut Live,
        tables: &CutOverTables,
    ) -> Result<Duration> {
        let mut lock_conn = self.applier_cfg.connect().await?;
        lock_conn
            .query_drop(format!(
                "SET SESSION lock_wait_timeout = {}",
                self.cfg.cut_over_lock_timeout.as_secs().max(1)
            ))
            .await
            .sql_context(|| "setting the lock timeout".into())?;
        lock_conn
            .query_drop(format!(
                "LOCK TABLES {} WRITE",
                qualified(&tables.schema, &tables.original)
            ))
            .await
            .sql_context(|| "LOCK TABLES for the two-step cut-over".into())?;
        let locked_at = Instant::now();
        crash_point::reached("cut-over:locked");
        let result = async {
            self.prepare_under_lock(live, locked_at, TriggerSession::Ddl)
                .await?;
            tables.two_step(&mut lock_conn, &mut self.ddl_conn).await
        }
        .await;
        if result.is_err() {
            let _ = lock_conn.query_drop("UNLOCK TABLES").await;
        }
        let _ = lock_conn.disconnect().await;
        result.map(|()| self.swapped(locked_at.elapsed()))
    }
}

/// The session that creates the ghost table's triggers under the cut-over's lock.
#[derive(Clone, Copy)]
enum TriggerSession {
    /// The locked-rename session, which holds the ghost table locked itself.
    Apply,
    /// The DDL session (the ghost table is not locked).
    Ddl,
}

/// Recreates the original's triggers on the ghost table (`--include-triggers`) through `conn`.
async fn create_ghost_triggers(
    cfg: &MigrationConfig,
    triggers: &[Trigger],
    ghost: &str,
    conn: &mut Conn,
) -> Result<()> {
    for trigger in triggers {
        let name = super::ghost_trigger_name(
            &trigger.name,
            &cfg.trigger_suffix,
            cfg.remove_trigger_suffix_if_exists,
        );
        if !["INSERT", "UPDATE", "DELETE"].contains(&trigger.event.to_ascii_uppercase().as_str())
            || !["BEFORE", "AFTER"].contains(&trigger.timing.to_ascii_uppercase().as_str())
        {
            return Err(EngineError::Refused(format!(
                "trigger `{}` has an unexpected event/timing",
                trigger.name
            )));
        }
        conn.query_drop(format!(
            "CREATE TRIGGER {} {} {} ON {ghost} FOR EACH ROW {}",
            qualified(&cfg.database, &name),
            trigger.timing,
            trigger.event,
            trigger.statement
        ))
        .await
        .sql_context(|| format!("creating trigger {name} on the ghost table"))?;
    }
    Ok(())
}
