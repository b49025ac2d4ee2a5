//! One online ALTER, end to end: validate, create the changelog and ghost tables, follow the
//! binary log, copy rows while applying changes (changes first), cut over, clean up.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::{Conn, prelude::Queryable};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::alter::{AlterStatement, parse_alter};
use super::applier::{ApplyPlan, KeyWindow, WriteMode, sql_mode_expression};
use super::changelog::{Changelog, STATE_GHOST_TABLE_MIGRATED, STATE_MIGRATED, STATE_READ_RANGE};
use super::checkpoint::{Checkpoint, CheckpointTable};
use super::checksum::{ChecksumPlan, KeyRange};
use super::config::{CutOverMode, MigrationConfig, Topology};
use super::conn::{ConnectionConfig, SessionFactory};
use super::controls::Controls;
use super::copier::{Copier, CopyKey, KeyTuple};
use super::crash_point;
use super::cutover::{self, GATE_COMMENT, SENTRY_COMMENT};
use super::ddl::drop_table_if_exists;
use super::dialect::{CutOverAlgorithm, ServerInfo};
use super::error::{EngineError, Result, SqlContext, is_connection_error};
use super::hooks::{HookPoint, Hooks, MigrationInfo, env_instant_ddl};
use super::inspector::{self, Trigger, UniqueKey};
use super::names::TableNames;
use super::position::BinlogPosition;
use super::progress::{Phase, Progress, ThrottleState};
use super::schema::{ColumnKind, TableSchema};
use super::streamer::{BinlogStreamer, RowChange, StartPosition, StreamItem, StreamerConfig};
use super::throttle::{ThrottleSettings, ThrottleVerdict, spawn_throttler};
use super::wording;
use crate::sql::qualified;

/// How a migration ended when it did not fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The table was swapped (or, with `--test-on-replica`, swapped and swapped back).
    Migrated { cut_over_lock: Duration },
    /// The ALTER ran in place with ALGORITHM=INSTANT.
    Instant,
    /// No `--execute`: validated and rehearsed; the ghost table's definition is returned.
    DryRun { ghost_create_table: String },
    /// `--resume` found an earlier run's cut-over past its swap and finished it.
    Recovered(recover::RecoveryReport),
}

/// Rows held for one apply transaction at most; only a larger source transaction is split.
const MAX_PENDING_ROWS: usize = 5000;

/// Runs `$op` (a future using `$conn`, the DDL session) on a `Run`; when the session or the
/// server went away, waits, opens the session again and runs `$op` again, within
/// `--default-retries`. Only for idempotent operations. (A macro: an async closure borrowing
/// the caller's values would make the migration's future not `Send`.)
macro_rules! on_ddl {
    ($run:expr, $what:expr, |$conn:ident| $op:expr) => {{
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = {
                let $conn = &mut $run.ddl_conn;
                $op.await
            };
            match result {
                Ok(value) => break Ok(value),
                Err(e) if is_connection_error(&e) => {
                    if let Err(e) = $run.retry_or_fail($what, attempt, e).await {
                        break Err(e);
                    }
                    $run.refresh_ddl_session().await;
                }
                Err(e) => break Err(e),
            }
        }
    }};
}

mod apply;
mod cut_over;
pub mod deferred_indexes;
mod index_build;
mod parallel_copy;
mod preflight;
pub mod recover;
mod resume;
mod row_copy;
mod verify;

use preflight::{
    check_can_create_triggers, check_ghost_trigger_names, resolve_applier, switch_to_rbr,
};
use resume::{
    check_same_run, finished_earlier, has_cut_over_checkpoint, read_cut_over_checkpoint,
    read_resume_checkpoint, run_fingerprint,
};

/// What validation found: a migration to run, or an earlier run's cut-over now finished.
enum Prepared {
    Run(Box<Run>),
    Finished(Outcome),
}

#[derive(Clone, Copy)]
enum Wait {
    Idle(Duration),
    Total(Duration),
}

enum StreamMsg {
    Item(StreamItem),
    Failed(EngineError),
}

pub struct Migration {
    cfg: MigrationConfig,
    controls: watch::Receiver<Controls>,
    progress: watch::Sender<Progress>,
}

impl Migration {
    pub fn new(
        cfg: MigrationConfig,
        controls: watch::Receiver<Controls>,
        progress: watch::Sender<Progress>,
    ) -> Self {
        Self {
            cfg,
            controls,
            progress,
        }
    }

    /// Runs the migration. Whatever happens, the ghost and changelog tables are dropped on failure,
    /// and the original table is never changed except by the final atomic swap.
    pub async fn run(self) -> Result<Outcome> {
        let progress = self.progress.clone();
        let hooks = hooks_for(&self.cfg);
        progress.send_modify(|p| p.phase = Phase::Validating);
        let snapshot = progress.borrow().clone();
        let prepared = match hooks.fire(HookPoint::Startup, &snapshot, &[]).await {
            Ok(()) => {
                Self::prepare_retrying(self.cfg, self.controls, self.progress, hooks.clone()).await
            }
            Err(e) => Err(e.into()),
        };
        let mut run = match prepared {
            Ok(Prepared::Run(run)) => run,
            Ok(Prepared::Finished(outcome)) => {
                let snapshot = progress.borrow().clone();
                let fired = hooks.fire(HookPoint::Success, &snapshot, &[]).await;
                progress.send_modify(|p| p.phase = Phase::Succeeded);
                hooks.flush_webhooks(Duration::from_secs(5)).await;
                return fired.map(|()| outcome).map_err(Into::into);
            }
            Err(e) => {
                progress.send_modify(|p| {
                    p.phase = Phase::Failed;
                    p.message = e.to_string();
                });
                let snapshot = progress.borrow().clone();
                let _ = hooks.fire(HookPoint::Failure, &snapshot, &[]).await;
                hooks.flush_webhooks(Duration::from_secs(5)).await;
                return Err(e);
            }
        };
        let mut result = run.execute().await;
        if let Ok(outcome) = &result {
            let instant = [env_instant_ddl(matches!(outcome, Outcome::Instant))];
            let snapshot = progress.borrow().clone();
            if let Err(e) = hooks.fire(HookPoint::Success, &snapshot, &instant).await {
                result = Err(e.into());
            }
        }
        let cancelled = matches!(result, Err(EngineError::Cancelled(_)));
        match &result {
            Ok(_) => run.progress.send_modify(|p| p.phase = Phase::Succeeded),
            Err(e) => {
                if let Err(cleanup) = run.cleanup_after_failure(cancelled).await {
                    warn!(error = %cleanup, "cleanup after failure");
                }
                run.progress.send_modify(|p| {
                    p.phase = if cancelled {
                        Phase::Cancelled
                    } else {
                        Phase::Failed
                    };
                    p.message = e.to_string();
                });
            }
        }
        if result.is_err() {
            let snapshot = progress.borrow().clone();
            let _ = hooks.fire(HookPoint::Failure, &snapshot, &[]).await;
        }
        run.release().await;
        hooks.flush_webhooks(Duration::from_secs(5)).await;
        result
    }
}

impl Migration {
    /// Validation creates nothing, so a session lost meanwhile (a KILL, a restarting server)
    /// is met by validating again, within `--default-retries`.
    async fn prepare_retrying(
        cfg: MigrationConfig,
        controls: watch::Receiver<Controls>,
        progress: watch::Sender<Progress>,
        hooks: Hooks,
    ) -> Result<Prepared> {
        let attempts = cfg.default_retries.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Run::prepare(
                cfg.clone(),
                controls.clone(),
                progress.clone(),
                hooks.clone(),
            )
            .await
            {
                Err(e) if is_connection_error(&e) && attempt < attempts => {
                    warn!(error = %e, attempt, "validation lost its session; validating again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                result => return result,
            }
        }
    }
}

/// The state of a migration after validation.
struct Run {
    cfg: MigrationConfig,
    controls: watch::Receiver<Controls>,
    progress: watch::Sender<Progress>,
    applier_cfg: ConnectionConfig,
    /// How the DDL, copy and apply sessions are (re)opened.
    sessions: Sessions,
    server: ServerInfo,
    names: TableNames,
    alter: AlterStatement,
    engine: String,
    triggers: Vec<Trigger>,
    time_zone: String,
    /// Holds the migration's named lock for its whole life.
    lock_conn: Conn,
    ddl_conn: Conn,
    original: Arc<TableSchema>,
    original_keys: Vec<UniqueKey>,
    created_tables: bool,
    /// The checkpoint a `--resume` continues from.
    resume_from: Option<Checkpoint>,
    /// What this run does, recorded in its checkpoints (`run_fingerprint`).
    run_fingerprint: String,
    /// Where the swapped table's own changes begin in the binlog: the last transaction boundary
    /// before the cut-over's lock marker (the original was locked, so nothing of it follows).
    cut_over_position: Option<BinlogPosition>,
    /// The last cut-over attempt's record (where it started, the old table's name).
    cut_over_record: Option<recover::CutOverRecord>,
    /// The old table stays whatever `--ok-to-drop-table` says: the swap's check found writes in
    /// it the new table could not take, or could not run.
    keep_old_table: bool,
    last_checkpoint: Instant,
    checkpoints_written: u64,
    hooks: Hooks,
    verdict: Option<watch::Receiver<ThrottleVerdict>>,
    throttler: Option<tokio::task::JoinHandle<()>>,
    status_hooks: Option<tokio::task::JoinHandle<()>>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
    streamer: Option<tokio::task::JoinHandle<()>>,
}

/// What the main loop works with once the ghost table exists.
struct Live {
    events: mpsc::Receiver<StreamMsg>,
    plan: ApplyPlan,
    copier: Copier,
    changelog_table: String,
    ghost_key: String,
    apply_conn: Conn,
    /// `apply_conn` is the locked-rename session, holding LOCK TABLES (no START TRANSACTION).
    apply_under_lock: bool,
    /// With `--apply-threads` above 1, where lanes are safe: the sessions that apply each batch
    /// split by key (`ApplyPlan::lane_statements`); empty: `apply_conn` applies alone.
    apply_lanes: Vec<Conn>,
    copy_conn: Conn,
    pending: Vec<RowChange>,
    states_seen: HashSet<String>,
    last_heartbeat: Option<chrono::DateTime<chrono::Utc>>,
    applied_position: Option<BinlogPosition>,
    /// The last commit whose transaction's rows are in `pending`: applied once they are.
    pending_commit: Option<BinlogPosition>,
    /// `pending` ends inside a source transaction (its commit has not arrived yet).
    open_transaction: bool,
    /// The checksum gate's plan (`cfg.checksum`).
    checksum: Option<ChecksumPlan>,
    /// The same comparison, for the chunks below when the gate is off.
    verify_plan: ChecksumPlan,
    /// Chunks whose copy skipped a row on another unique key: compared (and copied again) once
    /// the binlog has caught up, even with the checksum gate off.
    skipped_ranges: Vec<KeyRange>,
    /// Where the transaction after the last one seen begins (applied or not).
    last_commit: Option<BinlogPosition>,
    /// The shared key is one integer column and the ghost table's only unique key
    /// (`KeyWindow`'s conditions).
    copy_window_allowed: bool,
    /// While a single copier runs: the keys it has yet to read, whose changes it will pick up.
    copy_window: Option<KeyWindow>,
}

impl Run {
    async fn prepare(
        cfg: MigrationConfig,
        controls: watch::Receiver<Controls>,
        progress: watch::Sender<Progress>,
        hooks: Hooks,
    ) -> Result<Prepared> {
        // Every session works in the migrated schema, as gh-ost's DSN does (throttle queries and
        // hooks name tables without a schema).
        let mut cfg = cfg;
        cfg.inspector.database = Some(cfg.database.clone());
        if let Some(primary) = cfg.primary.as_mut() {
            primary.database = Some(cfg.database.clone());
        }
        // A revert has no ALTER of its own: it turns the old table back into the table.
        let alter = if cfg.revert_from.is_some() {
            AlterStatement::default()
        } else {
            parse_alter(&cfg.alter).map_err(|e| EngineError::Refused(e.to_string()))?
        };
        if let Some(named) = alter.explicit_table.as_deref() {
            if named != cfg.table {
                return Err(EngineError::Refused(format!(
                    "the ALTER names table `{named}`, but the migration is of `{}`: give the same table, or only the changes",
                    cfg.table
                )));
            }
        }
        if !alter.renamed_columns.is_empty()
            && !cfg.approve_renamed_columns
            && !cfg.skip_renamed_columns
        {
            let renames: Vec<String> = alter
                .renamed_columns
                .iter()
                .map(|(a, b)| format!("{a}->{b}"))
                .collect();
            return Err(EngineError::Refused(format!(
                "{} (--approve-renamed-columns copies their data under the new names; \
                 --skip-renamed-columns treats them as drop and add)",
                wording::renames_columns(&renames.join(", "))
            )));
        }

        if let Some(tls) = &cfg.inspector.tls {
            tls.check_files()?;
        }
        let mut inspector_conn = cfg.inspector.connect().await?;
        let server = ServerInfo::detect(&mut inspector_conn).await?;
        // Names as the server keeps them, so they match its binlog and information_schema.
        cfg.table = server.stored_name(&cfg.table);
        cfg.database = server.stored_name(&cfg.database);
        if let Some(old) = cfg.revert_from.take() {
            cfg.revert_from = Some(server.stored_name(&old));
        }
        inspector::check_grants(&mut inspector_conn, &cfg.database).await?;
        if cfg.switch_to_rbr {
            switch_to_rbr(&mut inspector_conn, &server).await?;
        }
        super::streamer::preflight(&mut inspector_conn, &server, &cfg.inspector.endpoint()).await?;
        let applier_cfg = resolve_applier(&cfg, &server, &mut inspector_conn).await?;
        // Before the table is looked at: a half-done two-step swap leaves it absent.
        if let Some(outcome) = recover::finish_interrupted(&cfg, &applier_cfg, &progress).await? {
            return Ok(Prepared::Finished(outcome));
        }
        let (_, engine) =
            inspector::table_kind(&mut inspector_conn, &cfg.database, &cfg.table).await?;
        let sessions = Sessions::new(&applier_cfg, &cfg);
        let mut ddl_conn = sessions.ddl.open().await?;
        let tls_state = super::tls::session_tls(&mut ddl_conn).await?;
        match (&applier_cfg.tls, &tls_state) {
            (Some(_), None) => {
                return Err(EngineError::Refused(format!(
                    "TLS was asked for, but the session on {} is not encrypted",
                    applier_cfg.endpoint()
                )));
            }
            (_, Some(state)) => info!(tls = %state, "connections to the servers use TLS"),
            (None, None) => info!("connections to the servers are not encrypted (clear text)"),
        }
        progress.send_modify(|p| p.tls = tls_state.clone());
        if applier_cfg != cfg.inspector {
            inspector::check_grants(&mut ddl_conn, &cfg.database).await?;
        }
        let time_zone: Option<String> = ddl_conn
            .query_first("SELECT @@global.time_zone")
            .await
            .sql_context(|| "reading the time zone".into())?;
        let time_zone = time_zone.unwrap_or_else(|| "SYSTEM".into());

        let original = Arc::new(TableSchema::load(&mut ddl_conn, &cfg.database, &cfg.table).await?);
        for (old, _) in &alter.renamed_columns {
            if original.column_index(old).is_none() {
                return Err(EngineError::Refused(format!(
                    "the ALTER renames column `{old}`, which {} does not have",
                    original.qualified_name()
                )));
            }
        }
        let original_keys = inspector::unique_keys(&mut ddl_conn, &original).await?;
        if original_keys.is_empty() {
            return Err(EngineError::UnsupportedTable {
                table: original.qualified_name(),
                reason: format!(
                    "{}: add one (e.g. an AUTO_INCREMENT primary key) first",
                    wording::NO_UNIQUE_KEY
                ),
            });
        }
        if !cfg.skip_foreign_key_checks {
            let (child, parent) =
                inspector::foreign_keys(&mut ddl_conn, &cfg.database, &cfg.table).await?;
            if parent > 0 {
                return Err(EngineError::UnsupportedTable {
                    table: original.qualified_name(),
                    reason: format!(
                        "{}: other tables reference it, and the swap would leave them pointing at the old table; \
                         drop those foreign keys first",
                        wording::parent_side_foreign_keys(parent, &cfg.database, &cfg.table)
                    ),
                });
            }
            if child > 0 && !cfg.discard_foreign_keys {
                return Err(EngineError::UnsupportedTable {
                    table: original.qualified_name(),
                    reason: format!(
                        "{}: pass --discard-foreign-keys to migrate it without them",
                        wording::child_side_foreign_keys(child, &cfg.database, &cfg.table)
                    ),
                });
            }
        }
        let triggers = inspector::triggers(&mut ddl_conn, &cfg.database, &cfg.table).await?;
        if !triggers.is_empty() && !cfg.include_triggers {
            return Err(EngineError::UnsupportedTable {
                table: original.qualified_name(),
                reason: format!(
                    "{}: pass --include-triggers --trigger-suffix=<suffix> to recreate them on the new table",
                    wording::triggers_found(&cfg.database, &cfg.table)
                ),
            });
        }
        let names = match &cfg.revert_from {
            // gh-ost's revert names: the old table plays the ghost, the current one becomes
            // `_<t>_rev_del`.
            Some(old_table) => {
                let mut names = TableNames::new(&cfg.table, None, Some("rev"));
                names.ghost = old_table.clone();
                names
            }
            None => TableNames::new(
                &cfg.table,
                cfg.force_table_names.as_deref(),
                cfg.timestamp_old_table
                    .then(|| chrono::Local::now().format("%Y%m%d%H%M%S").to_string())
                    .as_deref(),
            ),
        };
        if cfg.include_triggers && !triggers.is_empty() {
            check_ghost_trigger_names(&mut ddl_conn, &cfg, &triggers).await?;
            check_can_create_triggers(&mut ddl_conn).await?;
        }

        // One migration per table at a time, across processes and hosts. A resumed run waits a
        // little: the run it follows may have just been killed, and the server frees that run's
        // lock only when it notices its connection is gone.
        let mut lock_conn = applier_cfg.connect().await?;
        let lock_name = migration_lock_name(&cfg.database, &cfg.table);
        let wait_seconds = if cfg.resume {
            RESUME_LOCK_WAIT.as_secs()
        } else {
            0
        };
        let got: Option<Option<i64>> = lock_conn
            .exec_first("SELECT GET_LOCK(?, ?)", (&lock_name, wait_seconds))
            .await
            .sql_context(|| "taking the migration lock".into())?;
        if got.flatten() != Some(1) {
            return Err(EngineError::Refused(format!(
                "{}: another migration of this table is running; wait for it or stop it",
                wording::migration_lock_held(&cfg.database, &cfg.table, &lock_name)
            )));
        }

        let run_fingerprint = run_fingerprint(&cfg, &alter);
        let resume_from = if cfg.revert_from.is_some() {
            Some(read_cut_over_checkpoint(&mut ddl_conn, &cfg, &names).await?)
        } else if cfg.resume {
            match read_resume_checkpoint(&mut ddl_conn, &cfg, &names).await? {
                Ok(checkpoint) => {
                    check_same_run(&checkpoint, &run_fingerprint, &names)?;
                    Some(checkpoint)
                }
                Err(why) => {
                    if let Some(outcome) =
                        finished_earlier(&mut ddl_conn, &cfg, &names, &run_fingerprint).await?
                    {
                        // Its cut-over checkpoint exists because it kept the old table.
                        let kept = names.old.clone();
                        progress.send_modify(|p| p.kept_old_table = Some(kept));
                        return Ok(Prepared::Finished(outcome));
                    }
                    // A run killed before its first checkpoint: nothing to continue from.
                    warn!("--resume: {why}; starting over");
                    progress.send_modify(|p| {
                        p.message = format!("nothing to resume ({why}): starting over");
                    });
                    cfg.resume = false;
                    let mut leftovers = vec![&names.ghost, &names.changelog];
                    // A finished migration's cut-over checkpoint is what `--revert` needs.
                    if !has_cut_over_checkpoint(&mut ddl_conn, &cfg, &names).await? {
                        leftovers.push(&names.checkpoint);
                    }
                    for name in leftovers {
                        drop_table_if_exists(&mut ddl_conn, &cfg.database, name).await?;
                    }
                    None
                }
            }
        } else {
            None
        };
        // An interrupted cut-over's sentry (older versions) or gates: always ours, never data.
        cutover::drop_if_comment(&mut ddl_conn, &cfg.database, &names.old, SENTRY_COMMENT).await?;
        if let Some(gates) = cutover::order::gate_names(&cfg.table) {
            let gated = cfg.cut_over == CutOverMode::Atomic
                && server.cut_over_algorithm() == CutOverAlgorithm::GatedRename;
            for gate in [&gates.sentry, &gates.source] {
                if gated {
                    // Refuses now, not at cut-over, when a table of the user's has the name.
                    cutover::drop_own_table(&mut ddl_conn, &cfg.database, gate, GATE_COMMENT)
                        .await?;
                } else {
                    cutover::drop_if_comment(&mut ddl_conn, &cfg.database, gate, GATE_COMMENT)
                        .await?;
                }
            }
        }
        // Leftovers of an earlier run (a resume continues with them instead).
        for (name, drop_ok, flag) in [
            (
                &names.ghost,
                cfg.initially_drop_ghost_table,
                "--initially-drop-ghost-table",
            ),
            (
                &names.old,
                cfg.initially_drop_old_table,
                "--initially-drop-old-table",
            ),
        ] {
            if cfg.resume {
                break;
            }
            // A revert's ghost is the kept old table itself.
            if cfg.revert_from.is_some() && *name == names.ghost {
                continue;
            }
            if inspector::table_exists(&mut ddl_conn, &cfg.database, name).await? {
                if !drop_ok {
                    return Err(EngineError::Refused(format!(
                        "{} (it is probably left by an earlier run)",
                        wording::table_exists(&qualified(&cfg.database, name), flag)
                    )));
                }
                drop_table_if_exists(&mut ddl_conn, &cfg.database, name).await?;
            }
        }

        Ok(Prepared::Run(Box::new(Self {
            run_fingerprint,
            cfg,
            controls,
            progress,
            applier_cfg,
            sessions,
            server,
            names,
            alter,
            engine,
            triggers,
            time_zone,
            lock_conn,
            ddl_conn,
            original,
            original_keys,
            created_tables: false,
            resume_from,
            cut_over_position: None,
            cut_over_record: None,
            keep_old_table: false,
            last_checkpoint: Instant::now(),
            checkpoints_written: 0,
            hooks,
            verdict: None,
            throttler: None,
            status_hooks: None,
            heartbeat: None,
            streamer: None,
        })))
    }

    fn changelog(&self) -> Changelog {
        Changelog::new(&self.cfg.database, &self.names.changelog)
    }

    /// A session for copying chunks: the server's time zone and the migration's sql_mode.
    async fn open_copy_session(&self) -> Result<Conn> {
        self.sessions.copy.open().await
    }

    /// The sessions of `--apply-threads` (none for 1). `refused`: why the plan's batches cannot
    /// be split ([`ApplyPlan::lanes_refused`]). Whatever stands in the way of lanes (that, a
    /// statement-based binlog, a session that cannot be opened) leaves one session applying,
    /// with a warning that says why: the option is a speed-up, never a reason to fail.
    async fn open_apply_lanes(&self, refused: Option<&str>) -> Vec<Conn> {
        let wanted = self.cfg.apply_threads;
        if wanted <= 1 {
            return Vec::new();
        }
        let lanes = match refused {
            Some(reason) => Err(reason.to_string()),
            None => self.open_lane_sessions(wanted).await,
        };
        match lanes {
            Ok(lanes) => {
                info!(
                    lanes = wanted,
                    "binlog batches are applied on several sessions, split by key"
                );
                lanes
            }
            Err(reason) => {
                warn!(
                    apply_threads = wanted,
                    "binlog changes are applied on one session, not in parallel: {reason}"
                );
                Vec::new()
            }
        }
    }

    async fn open_lane_sessions(&self, count: usize) -> std::result::Result<Vec<Conn>, String> {
        let mut lanes = Vec::with_capacity(count);
        for _ in 0..count {
            let mut lane = self
                .sessions
                .apply_lane
                .open()
                .await
                .map_err(|e| format!("a lane's session could not be opened: {e}"))?;
            if lanes.is_empty() {
                // READ COMMITTED writes need row-based logging (error 1665 otherwise); MIXED
                // switches to rows for them.
                let format: Option<String> = lane
                    .query_first("SELECT @@session.binlog_format")
                    .await
                    .map_err(|e| format!("reading binlog_format: {e}"))?;
                let format = format.unwrap_or_default();
                if !matches!(format.to_ascii_uppercase().as_str(), "ROW" | "MIXED") {
                    return Err(format!(
                        "the server logs statements (binlog_format={format}), which READ \
                         COMMITTED lanes cannot write under"
                    ));
                }
            }
            lanes.push(lane);
        }
        Ok(lanes)
    }

    /// After a failed cut-over attempt: the DDL session may be the one that broke.
    async fn refresh_ddl_session(&mut self) {
        if let Err(e) = self.sessions.ddl.revive(&mut self.ddl_conn).await {
            warn!(error = %e, "the DDL session is lost and cannot be replaced yet");
        }
    }

    /// Replaces the apply session when it no longer answers.
    async fn refresh_apply_session(&self, live: &mut Live) -> Result<()> {
        self.sessions
            .apply
            .revive(&mut live.apply_conn)
            .await
            .map(|_| ())
    }

    fn ghost_name(&self) -> String {
        qualified(&self.cfg.database, &self.names.ghost)
    }

    async fn execute(&mut self) -> Result<Outcome> {
        let reverting = self.cfg.revert_from.is_some();
        if !reverting
            && self.cfg.attempt_instant_ddl
            && self.cfg.execute
            && self.try_instant_ddl().await?
        {
            return Ok(Outcome::Instant);
        }

        // The stream starts before the ghost table exists, so its creation is seen in it.
        let changelog = self.changelog();
        let resuming = self.resume_from.is_some();
        self.created_tables = true;
        // The changelog went with the cut-over being reverted; a revert makes a new one.
        if reverting {
            changelog.recreate(&mut self.ddl_conn).await?;
        }
        if !resuming {
            changelog.recreate(&mut self.ddl_conn).await?;
            if let Some(table) = self.checkpoint_table() {
                table.recreate(&mut self.ddl_conn).await?;
            }
        }
        let changelog_schema = Arc::new(
            TableSchema::load(
                &mut self.ddl_conn,
                &self.cfg.database,
                &self.names.changelog,
            )
            .await?,
        );
        let events = self.start_streamer(changelog_schema).await?;
        self.start_heartbeat();
        self.start_throttler();

        if !resuming {
            self.create_ghost_table().await?;
            // A dry run shows the ghost table as it will be; a revert's ghost is the old table.
            if self.cfg.defer_secondary_indexes && self.cfg.execute && !reverting {
                self.defer_secondary_indexes().await?;
            }
            changelog
                .write_state(&mut self.ddl_conn, STATE_GHOST_TABLE_MIGRATED)
                .await?;
        }

        let ghost =
            TableSchema::load(&mut self.ddl_conn, &self.cfg.database, &self.names.ghost).await?;
        let ghost_keys = inspector::unique_keys(&mut self.ddl_conn, &ghost).await?;
        let key = inspector::choose_shared_key(
            &self.original,
            &self.original_keys,
            &ghost_keys,
            self.cfg.allow_nullable_unique_key,
        )?;
        let column_map = shared_columns(
            &self.original,
            &self.alter,
            self.cfg.skip_renamed_columns,
            &ghost,
        )?;
        self.check_key_conversions(&key, &ghost)?;
        info!(key = %key.name, columns = column_map.len(), "shared unique key chosen");

        let snapshot = self.progress.borrow().clone();
        self.hooks
            .fire(HookPoint::Validated, &snapshot, &[])
            .await?;

        if !self.cfg.execute {
            let create: Option<(String, String)> = self
                .ddl_conn
                .query_first(format!("SHOW CREATE TABLE {}", self.ghost_name()))
                .await
                .sql_context(|| "reading the ghost table definition".into())?;
            self.drop_aux_tables().await?;
            return Ok(Outcome::DryRun {
                ghost_create_table: create.map(|(_, c)| c).unwrap_or_default(),
            });
        }

        let ghost_key = ghost_keys
            .iter()
            .find(|g| key.columns.iter().all(|c| g.columns.contains(c)))
            .map(|g| g.name.clone())
            .unwrap_or_else(|| key.name.clone());
        let write_mode = if inspector::ghost_unique_keys_enforced(
            &self.original,
            &self.original_keys,
            &ghost,
            &ghost_keys,
            &column_map,
        ) {
            WriteMode::Replace
        } else {
            WriteMode::InsertOrUpdate
        };
        info!(
            ?write_mode,
            "binlog changes are written with {}",
            match write_mode {
                WriteMode::Replace =>
                    "REPLACE (every unique key of the new table is enforced by the original)",
                WriteMode::InsertOrUpdate =>
                    "INSERT IGNORE and UPDATE (the new table has a unique key the original does not enforce)",
            }
        );
        let plan = ApplyPlan::new(
            &self.original,
            &ghost,
            &column_map,
            &key.columns,
            &self.time_zone,
        )?
        .with_mode(write_mode)
        .with_coalescing(self.cfg.coalesce_changes);
        let copy_key = CopyKey {
            name: key.name.clone(),
            columns: key.columns.clone(),
            enum_columns: key
                .columns
                .iter()
                .map(|c| {
                    self.original
                        .column_index(c)
                        .is_some_and(|i| self.original.columns[i].kind == ColumnKind::Enum)
                })
                .collect(),
        };
        let verify_plan = ChecksumPlan::new(
            &self.original,
            &ghost,
            &copy_key,
            &column_map,
            self.server.share_lock_clause(),
        );
        let checksum = self.cfg.checksum.then(|| verify_plan.clone());
        let copier = Copier::new(
            &self.cfg.database,
            &self.cfg.table,
            &self.names.ghost,
            copy_key,
            &column_map,
            self.server.share_lock_clause(),
        )
        .with_ghost_key_name(&ghost_key);
        // Changes to keys the copy has not reached are left to it only for a single integer key,
        // the one order this side can reproduce without the server's collation, and only when
        // the ghost table has no other unique key: there the copy never skips a row (a skipped
        // row's own changes would otherwise be what writes it).
        // On both sides: the ghost table's highest key is read with MAX(), which orders a
        // column changed to text as text ('9' > '10').
        let is_integer = |table: &TableSchema, column: &str| {
            table
                .column_index(column)
                .is_some_and(|i| matches!(table.columns[i].kind, ColumnKind::Integer { .. }))
        };
        let copy_window_allowed = ghost_keys.len() == 1
            && match key.columns.as_slice() {
                [column] => {
                    is_integer(&self.original, column)
                        && column_map
                            .iter()
                            .find(|(source, _)| source.eq_ignore_ascii_case(column))
                            .is_some_and(|(_, target)| is_integer(&ghost, target))
                }
                _ => false,
            };
        let apply_conn = self.sessions.apply.open().await?;
        let apply_lanes = self.open_apply_lanes(plan.lanes_refused()).await;
        let copy_conn = self.open_copy_session().await?;

        let mut live = Live {
            events,
            plan,
            copier,
            changelog_table: self.names.changelog.clone(),
            ghost_key,
            apply_conn,
            apply_under_lock: false,
            apply_lanes,
            copy_conn,
            pending: Vec::new(),
            states_seen: HashSet::new(),
            last_heartbeat: None,
            applied_position: None,
            pending_commit: None,
            open_transaction: false,
            checksum,
            verify_plan,
            skipped_ranges: Vec::new(),
            last_commit: None,
            copy_window_allowed,
            copy_window: None,
        };
        if !resuming {
            self.wait_for_state(
                &mut live,
                STATE_GHOST_TABLE_MIGRATED,
                Wait::Idle(Duration::from_secs(30)),
            )
            .await?;
        }

        let (database, table, exact) = (
            self.cfg.database.clone(),
            self.cfg.table.clone(),
            self.cfg.exact_rowcount,
        );
        let estimate = on_ddl!(self, "counting rows", |conn| async {
            if exact {
                inspector::exact_row_count(conn, &database, &table).await
            } else {
                inspector::row_estimate(conn, &database, &table).await
            }
        })?;
        self.progress.send_modify(|p| p.rows_estimate = estimate);
        let snapshot = self.progress.borrow().clone();
        self.hooks
            .fire(HookPoint::RowCountComplete, &snapshot, &[])
            .await?;
        self.hooks
            .fire(HookPoint::BeforeRowCopy, &snapshot, &[])
            .await?;
        self.hooks.mark_copy_started();
        self.status_hooks = Some(self.hooks.spawn_status_hooks(self.progress.subscribe()));
        let resumed = self.resume_from.clone();
        self.progress.send_modify(|p| {
            p.rows_estimate = estimate;
            p.phase = Phase::Copying;
            if let Some(c) = &resumed {
                p.rows_copied = c.rows_copied;
                p.events_applied = c.events_applied;
            }
        });

        on_ddl!(self, "writing a changelog state", |conn| changelog
            .write_state(conn, STATE_READ_RANGE))?;
        let mut attempt = 0;
        let range = loop {
            attempt += 1;
            match live.copier.key_range(&mut live.copy_conn).await {
                Ok(range) => break range,
                Err(e) if is_connection_error(&e) => {
                    self.retry_or_fail("reading the key range", attempt, e)
                        .await?;
                    self.revive_sessions(&mut live).await;
                }
                Err(e) => return Err(e),
            }
        };
        info!(estimate, "row copy starting");
        match &resumed {
            Some(c) if c.copy_complete => info!("the checkpoint says the row copy was complete"),
            Some(c) => {
                info!(position = %c.position, "resuming the row copy after the checkpoint's key");
                self.copy_rows(&mut live, range, c.copied_through.clone())
                    .await?
            }
            None => self.copy_rows(&mut live, range, None).await?,
        }
        info!("Row copy complete");
        self.hooks.mark_copy_complete();
        let snapshot = self.progress.borrow().clone();
        self.hooks
            .fire(HookPoint::RowCopyComplete, &snapshot, &[])
            .await?;
        self.maybe_checkpoint(&live, None, true, true).await;
        self.build_deferred_indexes(&mut live).await?;
        self.verify(&mut live).await?;

        let snapshot = self.progress.borrow().clone();
        self.hooks
            .fire(HookPoint::BeforeCutOver, &snapshot, &[])
            .await?;
        let lock_time = self.cut_over_with_retries(&mut live).await?;
        self.audit_hand_over().await;
        self.finish(&mut live).await?;
        Ok(Outcome::Migrated {
            cut_over_lock: lock_time,
        })
    }

    async fn try_instant_ddl(&mut self) -> Result<bool> {
        let t = self.cfg.cut_over_lock_timeout.as_secs().max(1);
        self.ddl_conn
            .query_drop(format!("SET SESSION lock_wait_timeout = {}", 2 * t))
            .await
            .sql_context(|| "setting lock_wait_timeout".into())?;
        let sql = format!(
            "ALTER TABLE {} {}, ALGORITHM=INSTANT",
            qualified(&self.cfg.database, &self.cfg.table),
            self.alter.options
        );
        match self.ddl_conn.query_drop(&sql).await {
            Ok(()) => {
                info!("ALTER ran in place with ALGORITHM=INSTANT");
                Ok(true)
            }
            Err(e) => {
                info!(error = %e, "instant DDL not possible; copying");
                Ok(false)
            }
        }
    }

    async fn start_streamer(
        &mut self,
        changelog: Arc<TableSchema>,
    ) -> Result<mpsc::Receiver<StreamMsg>> {
        let mut cfg = StreamerConfig::new(
            self.cfg.inspector.clone(),
            self.cfg.replica_server_id,
            vec![self.original.clone(), changelog],
        );
        cfg.start = match &self.resume_from {
            Some(c)
                if self.cfg.use_gtid
                    && c.position.gtid.as_deref().is_some_and(|g| !g.is_empty()) =>
            {
                StartPosition::Gtid(c.position.gtid.clone().unwrap_or_default())
            }
            Some(c) => StartPosition::Coordinates(c.position.coordinates.clone()),
            None => StartPosition::Current,
        };
        // Opening the stream is retried like any session: the server may be restarting.
        let mut attempt = 0;
        let mut streamer = loop {
            attempt += 1;
            match BinlogStreamer::start(cfg.clone()).await {
                Ok(streamer) => break streamer,
                Err(e) if is_connection_error(&e) => {
                    self.retry_or_fail("starting the binlog stream", attempt, e)
                        .await?;
                }
                Err(e) => return Err(e),
            }
        };
        let (tx, rx) = mpsc::channel(10_000);
        self.streamer = Some(tokio::spawn(async move {
            loop {
                let msg = match streamer.next().await {
                    Ok(item) => StreamMsg::Item(item),
                    Err(e) => StreamMsg::Failed(e),
                };
                let failed = matches!(msg, StreamMsg::Failed(_));
                if tx.send(msg).await.is_err() || failed {
                    break;
                }
            }
            streamer.close().await;
        }));
        Ok(rx)
    }

    fn start_throttler(&mut self) {
        let mut settings = ThrottleSettings::new(
            self.applier_cfg.clone(),
            self.cfg.inspector.clone(),
            self.cfg.database.clone(),
            self.names.changelog.clone(),
        );
        // The inspected server's own lag counts when it is a replica of the applier.
        if self.cfg.inspector != self.applier_cfg {
            settings.inspected_replica = Some(self.cfg.inspector.clone());
        }
        settings.flag_file = self.cfg.throttle_flag_file.clone();
        settings.additional_flag_file = self.cfg.throttle_additional_flag_file.clone();
        settings.lag_interval = self.cfg.heartbeat_interval;
        settings.http_interval = self.cfg.throttle.http_interval;
        settings.http_timeout = self.cfg.throttle.http_timeout;
        settings.ignore_http_errors = self.cfg.throttle.ignore_http_errors;
        settings.critical_load_interval = self.cfg.throttle.critical_load_interval;
        settings.critical_load_hibernate = self.cfg.throttle.critical_load_hibernate;
        let (verdict, handle) = spawn_throttler(settings, self.controls.clone());
        self.verdict = Some(verdict);
        self.throttler = Some(handle);
    }

    fn start_heartbeat(&mut self) {
        let applier = self.applier_cfg.clone();
        let changelog = self.changelog();
        let interval = self.cfg.heartbeat_interval;
        self.heartbeat = Some(tokio::spawn(async move {
            let mut conn = None;
            loop {
                if conn.is_none() {
                    conn = applier.connect().await.ok();
                }
                if let Some(c) = conn.as_mut() {
                    if let Err(e) = changelog.write_heartbeat(c).await {
                        warn!(error = %e, "heartbeat write failed");
                        conn = None;
                    }
                }
                tokio::time::sleep(interval).await;
            }
        }));
    }

    async fn create_ghost_table(&mut self) -> Result<()> {
        let ghost = self.ghost_name();
        let original = qualified(&self.cfg.database, &self.cfg.table);
        self.ddl_conn
            .query_drop(format!("CREATE TABLE {ghost} LIKE {original}"))
            .await
            .map_err(|e| {
                EngineError::Refused(format!(
                    "FATAL {}: creating the ghost table {ghost} like the original fails; \
                     fix the original's definition (or the session's sql_mode) first",
                    super::error::server_error_text(&e)
                ))
            })?;
        let alter = format!("ALTER TABLE {ghost} {}", self.alter.options);
        self.ddl_conn.query_drop(&alter).await.map_err(|e| {
            EngineError::Refused(format!("the ALTER fails on the ghost table: {e}"))
        })?;
        if self.alter.auto_increment.is_none() {
            let next: Option<Option<u64>> = self
                .ddl_conn
                .exec_first(
                    "SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                    (&self.cfg.database, &self.cfg.table),
                )
                .await
                .sql_context(|| "reading AUTO_INCREMENT".into())?;
            if let Some(next) = next.flatten().filter(|n| *n > 1) {
                self.ddl_conn
                    .query_drop(format!("ALTER TABLE {ghost} AUTO_INCREMENT={next}"))
                    .await
                    .sql_context(|| "copying AUTO_INCREMENT".into())?;
            }
        }
        Ok(())
    }

    fn check_key_conversions(&self, key: &UniqueKey, ghost: &TableSchema) -> Result<()> {
        for column in &key.columns {
            let (Some(o), Some(g)) = (
                self.original.column_index(column),
                ghost.column_index(column),
            ) else {
                continue;
            };
            if matches!(self.original.columns[o].kind, ColumnKind::DateTime { .. })
                && matches!(ghost.columns[g].kind, ColumnKind::Timestamp { .. })
            {
                return Err(EngineError::Refused(format!(
                    "{}: change it in a separate step, or keep another unique key",
                    wording::datetime_to_timestamp_key(column, &key.name)
                )));
            }
        }
        Ok(())
    }

    /// After a failed attempt: wait and let the caller retry, or give up when `--default-retries`
    /// attempts are spent. Warnings never retry (gh-ost's `--panic-on-warnings`).
    async fn retry_or_fail(&self, what: &str, attempt: u32, error: EngineError) -> Result<()> {
        let attempts = self.cfg.default_retries.max(1);
        if matches!(
            error,
            EngineError::Warnings(_) | EngineError::Cancelled(_) | EngineError::Refused(_)
        ) {
            return Err(error);
        }
        if attempt >= attempts {
            return Err(EngineError::RetriesExhausted {
                what: what.to_string(),
                attempts,
                last: error.to_string(),
            });
        }
        warn!(error = %error, attempt, "{what} failed; retrying");
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(())
    }

    /// After a failed attempt: every session that no longer answers is replaced (a KILL, a reset
    /// connection, a restarted server). One that cannot be opened yet is retried next time.
    async fn revive_sessions(&mut self, live: &mut Live) {
        for (what, factory, conn) in [
            ("copy", &self.sessions.copy, &mut live.copy_conn),
            ("apply", &self.sessions.apply, &mut live.apply_conn),
            ("DDL", &self.sessions.ddl, &mut self.ddl_conn),
        ] {
            if let Err(e) = factory.revive(conn).await {
                warn!(error = %e, session = what, "a lost session cannot be replaced yet");
            }
        }
        self.revive_lanes(live).await;
    }

    /// Replaces lost apply lanes; one that cannot be replaced yet fails the next batch instead.
    async fn revive_lanes(&self, live: &mut Live) {
        for lane in &mut live.apply_lanes {
            if let Err(e) = self.sessions.apply_lane.revive(lane).await {
                warn!(error = %e, session = "apply lane", "a lost session cannot be replaced yet");
            }
        }
    }

    fn checkpoint_table(&self) -> Option<CheckpointTable> {
        self.cfg
            .checkpoint_interval
            .map(|_| CheckpointTable::new(&self.cfg.database, &self.names.checkpoint))
    }

    /// Writes a checkpoint when one is due (or `force`). Called only between operations, where
    /// every change up to `live.applied_position` is applied and every key up to `copied` copied.
    /// A failed write is logged, not fatal: the previous checkpoint stays valid.
    async fn maybe_checkpoint(
        &mut self,
        live: &Live,
        copied: Option<&KeyTuple>,
        complete: bool,
        force: bool,
    ) {
        let (Some(table), Some(interval)) = (self.checkpoint_table(), self.cfg.checkpoint_interval)
        else {
            return;
        };
        if !force && self.last_checkpoint.elapsed() < interval {
            return;
        }
        let Some(position) = live.applied_position.clone() else {
            return;
        };
        let checkpoint = self.checkpoint_at(position, copied.cloned(), complete, false);
        match self.write_checkpoint(&table, &checkpoint).await {
            Ok(()) => {
                self.last_checkpoint = Instant::now();
                let now = chrono::Utc::now().timestamp();
                self.progress
                    .send_modify(|p| p.last_checkpoint_unix = Some(now));
                info!(position = %checkpoint.position, rows_copied = checkpoint.rows_copied, "checkpoint success");
            }
            Err(e) => {
                warn!(error = %e, "checkpoint failed; the previous one stays valid");
                self.refresh_ddl_session().await;
            }
        }
    }

    fn check_abort(&self) -> Result<()> {
        if self.controls.borrow().panic {
            return Err(EngineError::Cancelled("panic requested".into()));
        }
        if let Some(file) = &self.cfg.panic_flag_file {
            if file.exists() {
                return Err(EngineError::Cancelled(format!(
                    "panic flag file {} exists",
                    file.display()
                )));
            }
        }
        Ok(())
    }

    /// The throttler's verdict (every gh-ost source: user, flag files, lag, load, query, HTTP),
    /// mirrored into progress. Critical load aborts.
    fn throttled(&mut self, live: &Live) -> Result<bool> {
        let Some(verdict) = self.verdict.as_ref().map(|v| v.borrow().clone()) else {
            return Ok(false);
        };
        if let Some(reason) = verdict.critical {
            return Err(EngineError::Cancelled(wording::critical_load_met(&reason)));
        }
        let backlog = (live.events.len() + live.pending.len()) as u64;
        self.progress.send_if_modified(|p| {
            let next = ThrottleState {
                active: verdict.throttled,
                reason: verdict.reason.clone(),
            };
            let lag = verdict.replica_lag.map(|l| l.as_millis() as u64);
            let changed = p.throttle != next || p.replica_lag_millis != lag || p.backlog != backlog;
            p.throttle = next;
            p.replica_lag_millis = lag;
            p.backlog = backlog;
            changed
        });
        Ok(verdict.throttled)
    }

    fn postponed(&self) -> bool {
        let controls = self.controls.borrow();
        if controls.cut_over_requested {
            return false;
        }
        controls.postpone_cut_over
            || self
                .cfg
                .postpone_cut_over_flag_file
                .as_ref()
                .is_some_and(|f| f.exists())
    }

    async fn finish(&mut self, live: &mut Live) -> Result<()> {
        self.cleanup_step(CleanupStep::RecordMigrated).await?;
        self.stop_tasks();
        drop(live.events.try_recv());
        let old = qualified(&self.cfg.database, &self.names.old);
        if self.cfg.topology != Topology::TestOnReplica {
            if !self.cfg.ok_to_drop_table {
                self.write_cut_over_checkpoint().await;
            }
            if self.cfg.ok_to_drop_table && !self.keep_old_table {
                self.cleanup_step(CleanupStep::Drop(self.names.old.clone()))
                    .await?;
                crash_point::reached("finish:old-table-dropped");
                if self.checkpoint_table().is_some() {
                    self.cleanup_step(CleanupStep::Drop(self.names.checkpoint.clone()))
                        .await?;
                }
            } else {
                info!("the old table is kept as {old}; drop it with: DROP TABLE IF EXISTS {old}");
                let kept = self.names.old.clone();
                self.progress.send_modify(|p| p.kept_old_table = Some(kept));
            }
        }
        crash_point::reached("finish:changelog-left");
        // Last: while the changelog holds the cut-over record, a run killed above is finished
        // by `--resume`.
        self.cleanup_step(CleanupStep::Drop(self.names.changelog.clone()))
            .await?;
        self.created_tables = false;
        info!("clean-up complete");
        Ok(())
    }

    /// An idempotent step of the clean-up on the DDL session. A lost session (a KILL, a server
    /// restart) is replaced and the step retried within `--default-retries`: the tables are
    /// swapped already, and a lost connection must not fail the migration now.
    async fn cleanup_step(&mut self, step: CleanupStep) -> Result<()> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (what, result) = match &step {
                CleanupStep::RecordMigrated => (
                    "recording the migrated state",
                    self.changelog()
                        .write_state(&mut self.ddl_conn, STATE_MIGRATED)
                        .await,
                ),
                CleanupStep::Drop(table) => (
                    "dropping a table of the migration",
                    drop_table_if_exists(&mut self.ddl_conn, &self.cfg.database, table).await,
                ),
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) if is_connection_error(&e) => {
                    self.retry_or_fail(what, attempt, e).await?;
                    if let Err(e) = self.sessions.ddl.revive(&mut self.ddl_conn).await {
                        warn!(error = %e, session = "DDL", "a lost session cannot be replaced yet");
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A checkpoint at `position` with the current counters.
    fn checkpoint_at(
        &self,
        position: BinlogPosition,
        copied_through: Option<KeyTuple>,
        copy_complete: bool,
        is_cut_over: bool,
    ) -> Checkpoint {
        let p = self.progress.borrow();
        Checkpoint {
            position,
            copied_through,
            copy_complete,
            rows_copied: p.rows_copied,
            events_applied: p.events_applied,
            is_cut_over,
            run: Some(self.run_fingerprint.clone()),
        }
    }

    async fn write_checkpoint(
        &mut self,
        table: &CheckpointTable,
        checkpoint: &Checkpoint,
    ) -> Result<()> {
        self.checkpoints_written += 1;
        table
            .write(&mut self.ddl_conn, checkpoint, self.checkpoints_written)
            .await
    }

    /// With checkpoints on and the old table kept, records where the new table's changes
    /// begin, so `--revert --old-table=...` can bring the old table up to date and swap back.
    async fn write_cut_over_checkpoint(&mut self) {
        let (Some(table), Some(position)) =
            (self.checkpoint_table(), self.cut_over_position.clone())
        else {
            return;
        };
        let checkpoint = self.checkpoint_at(position, None, true, true);
        match self.write_checkpoint(&table, &checkpoint).await {
            Ok(()) => info!(
                position = %checkpoint.position,
                old_table = %self.names.old,
                "cut-over checkpoint written: revert with --revert --old-table={}",
                self.names.old
            ),
            // The migration itself succeeded; only the revert path is lost.
            Err(e) => {
                warn!(error = %e, "cannot write the cut-over checkpoint; --revert will not be possible")
            }
        }
    }

    fn stop_tasks(&mut self) {
        for task in [
            self.heartbeat.take(),
            self.throttler.take(),
            self.status_hooks.take(),
        ]
        .into_iter()
        .flatten()
        {
            task.abort();
        }
        if let Some(h) = self.streamer.take() {
            h.abort();
        }
    }

    /// The tables this run created; a revert's ghost is the user's kept old table, never ours.
    fn own_tables(&self) -> Vec<String> {
        let mut tables = vec![self.names.changelog.clone()];
        if self.cfg.revert_from.is_none() {
            tables.insert(0, self.names.ghost.clone());
        }
        tables
    }

    async fn drop_aux_tables(&mut self) -> Result<()> {
        self.stop_tasks();
        for name in &self.own_tables() {
            drop_table_if_exists(&mut self.ddl_conn, &self.cfg.database, name).await?;
        }
        self.created_tables = false;
        Ok(())
    }

    async fn cleanup_after_failure(&mut self, cancelled: bool) -> Result<()> {
        self.stop_tasks();
        if !self.created_tables {
            return Ok(());
        }
        if self.cfg.checkpoint_interval.is_some() && !cancelled {
            info!(
                "the ghost, changelog and checkpoint tables are kept: run the same command with --resume to continue"
            );
            return Ok(());
        }
        // A revert keeps the checkpoints: the cut-over one lets it run again.
        if let Some(table) = self
            .checkpoint_table()
            .filter(|_| self.cfg.revert_from.is_none())
        {
            let mut conn = self.applier_cfg.connect().await?;
            table.drop_table(&mut conn).await?;
        }
        // A fresh connection: the DDL one may be the one that broke.
        let mut conn = self.applier_cfg.connect().await?;
        for name in &self.own_tables() {
            drop_table_if_exists(&mut conn, &self.cfg.database, name).await?;
        }
        // The cut-over's gates, and an older version's sentry, only if they are ours.
        self.cut_over_tables().drop_gates(&mut conn).await?;
        cutover::drop_if_comment(
            &mut conn,
            &self.cfg.database,
            &self.names.old,
            SENTRY_COMMENT,
        )
        .await?;
        self.created_tables = false;
        Ok(())
    }

    async fn release(&mut self) {
        self.stop_tasks();
        let _ = self
            .lock_conn
            .query_drop("SELECT RELEASE_ALL_LOCKS()")
            .await;
    }
}

/// The clean-up's steps after the swap (`Run::cleanup_step`).
enum CleanupStep {
    /// The changelog's `Migrated` state (an upsert; a retry adds one more history row).
    RecordMigrated,
    /// `DROP TABLE IF EXISTS` of one of the migration's tables (old, checkpoint, changelog).
    Drop(String),
}

/// The migration's long-lived sessions on the applier, each opened with the settings it needs.
#[derive(Clone, Debug)]
struct Sessions {
    /// DDL, changelog and checkpoints: zero dates allowed with `--allow-zero-in-date`, so tables
    /// with zero-date defaults can be created and altered.
    ddl: SessionFactory,
    /// Row copy: the server's time zone and the migration's sql_mode.
    copy: SessionFactory,
    /// Binlog apply: raw bytes for text, UTC for TIMESTAMP.
    apply: SessionFactory,
    /// Parallel apply lanes (`--apply-threads`): the apply session's settings, READ COMMITTED so
    /// a lane's delete of an absent key takes no gap lock another lane's insert would wait on,
    /// and the copy's short lock wait so a wait between lanes ends soon.
    apply_lane: SessionFactory,
}

impl Sessions {
    fn new(applier: &ConnectionConfig, cfg: &MigrationConfig) -> Self {
        let strict = !cfg.skip_strict_mode;
        let mode = sql_mode_expression(cfg.allow_zero_in_date, strict);
        let ddl_init = if cfg.allow_zero_in_date {
            vec![format!(
                "SET SESSION sql_mode = {}",
                sql_mode_expression(true, false)
            )]
        } else {
            Vec::new()
        };
        // The copy's and the lanes' lock waits end soon: see `row_copy::COPY_LOCK_WAIT_SECS`.
        let short_lock_wait = format!(
            "innodb_lock_wait_timeout = CAST(LEAST(@@global.innodb_lock_wait_timeout, {}) AS UNSIGNED)",
            row_copy::COPY_LOCK_WAIT_SECS
        );
        let apply_settings = format!("SET NAMES binary, time_zone = '+00:00', sql_mode = {mode}");
        Self {
            ddl: SessionFactory::new(applier.clone(), ddl_init),
            copy: SessionFactory::new(
                applier.clone(),
                vec![format!(
                    "SET SESSION time_zone = @@global.time_zone, sql_mode = {mode}, {short_lock_wait}"
                )],
            ),
            apply: SessionFactory::new(applier.clone(), vec![apply_settings.clone()]),
            apply_lane: SessionFactory::new(
                applier.clone(),
                vec![
                    format!("{apply_settings}, {short_lock_wait}"),
                    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED".into(),
                ],
            ),
        }
    }
}

/// Original columns that exist in the ghost table (through renames), minus dropped and generated
/// ones: (original name, ghost name).
fn shared_columns(
    original: &TableSchema,
    alter: &AlterStatement,
    skip_renamed_columns: bool,
    ghost: &TableSchema,
) -> Result<Vec<(String, String)>> {
    let mut map = Vec::new();
    for column in &original.columns {
        if column.generated {
            continue;
        }
        let renamed = alter
            .renamed_columns
            .iter()
            .any(|(old, _)| old.eq_ignore_ascii_case(&column.name));
        if renamed && skip_renamed_columns {
            continue;
        }
        let Some(ghost_name) = alter.ghost_name_of(&column.name) else {
            continue;
        };
        let Some(index) = ghost.column_index(&ghost_name) else {
            continue;
        };
        if ghost.columns[index].generated {
            continue;
        }
        map.push((column.name.clone(), ghost.columns[index].name.clone()));
    }
    if map.is_empty() {
        return Err(EngineError::Refused(
            "the table and the ALTER's result share no column; nothing could be copied".into(),
        ));
    }
    Ok(map)
}

/// The hooks of a migration, with the identity gh-ost gives them (also for front ends that fire
/// the interactive-command hook).
pub fn hooks_for(cfg: &MigrationConfig) -> Hooks {
    let names = TableNames::new(&cfg.table, cfg.force_table_names.as_deref(), None);
    let applier_host = cfg
        .primary
        .as_ref()
        .map(|p| p.host.clone())
        .unwrap_or_else(|| cfg.inspector.host.clone());
    let info = MigrationInfo {
        database: cfg.database.clone(),
        table: cfg.table.clone(),
        ghost_table: names.ghost,
        old_table: names.old,
        alter: cfg.alter.clone(),
        inspected_host: cfg.inspector.host.clone(),
        executing_host: std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into()),
        migrated_host: if cfg.topology == Topology::Normal {
            applier_host
        } else {
            cfg.inspector.host.clone()
        },
        dry_run: !cfg.execute,
        revert: cfg.revert_from.is_some(),
    };
    Hooks::new(cfg.hooks.clone(), info)
}

/// gh-ost's ghost trigger name: the suffix appended, or removed when the name already ends with it
/// and `--remove-trigger-suffix-if-exists` is given.
pub fn ghost_trigger_name(name: &str, suffix: &str, remove_if_exists: bool) -> String {
    if remove_if_exists && !suffix.is_empty() {
        if let Some(stripped) = name.strip_suffix(suffix) {
            return stripped.to_string();
        }
    }
    format!("{name}{suffix}")
}

/// How long a `--resume` run waits for the migration lock of the run it follows (killed, its
/// sessions not yet ended by the server) before it refuses as for a live migration.
const RESUME_LOCK_WAIT: Duration = Duration::from_secs(15);

/// A GET_LOCK name at most 64 characters long.
pub fn migration_lock_name(database: &str, table: &str) -> String {
    let name = format!("ghost::{database}.{table}");
    if name.chars().count() <= 64 {
        return name;
    }
    let hash = crc32fast::hash(name.as_bytes());
    let prefix: String = name.chars().take(50).collect();
    format!("{prefix}:{hash:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_names() {
        assert_eq!(ghost_trigger_name("t_ins", "_ght", false), "t_ins_ght");
        assert_eq!(ghost_trigger_name("t_ins_ght", "_ght", true), "t_ins");
        assert_eq!(ghost_trigger_name("t_ins", "_ght", true), "t_ins_ght");
    }

    #[test]
    fn lock_names_fit() {
        assert_eq!(migration_lock_name("test", "t"), "ghost::test.t");
        let long = migration_lock_name(&"d".repeat(40), &"t".repeat(40));
        assert!(long.chars().count() <= 64, "{long}");
    }
}
