//! One online ALTER, end to end: validate, create the changelog and ghost tables, follow the
//! binary log, copy rows while applying changes (changes first), cut over, clean up.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::Conn;
use tokio::sync::{mpsc, watch};
use tracing::warn;

use super::alter::AlterStatement;
use super::applier::{ApplyPlan, KeyWindow};
use super::changelog::Changelog;
use super::checkpoint::Checkpoint;
use super::checksum::{ChecksumPlan, KeyRange};
use super::config::{MigrationConfig, Topology};
use super::conn::ConnectionConfig;
use super::controls::Controls;
use super::copier::Copier;
use super::dialect::ServerInfo;
use super::error::{EngineError, Result, is_connection_error};
use super::hooks::{HookPoint, Hooks, MigrationInfo, env_instant_ddl};
use super::inspector::{Trigger, UniqueKey};
use super::names::TableNames;
use super::position::BinlogPosition;
use super::progress::{Phase, Progress, ThrottleState};
use super::schema::TableSchema;
use super::streamer::{RowChange, StreamItem, WatchedTable};
use super::throttle::ThrottleVerdict;
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
mod checkpoints;
mod cut_over;
pub mod deferred_indexes;
mod early_checksum;
mod execute;
mod finish;
mod index_build;
mod parallel_copy;
mod preflight;
mod prepare;
pub mod recover;
mod resume;
mod row_copy;
mod sessions;
mod tasks;
mod verify;

use resume::run_fingerprint;
use sessions::Sessions;

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
    /// The stream's watched table, set when the checksum runs during the copy.
    watched: Arc<std::sync::OnceLock<WatchedTable>>,
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
    /// With `--copy-without-locks`, while the copy reads without locks: the keys it must delete
    /// again after each chunk.
    gone: Option<super::gone_keys::GoneKeys>,
    /// The checksum during the row copy, when it runs ([`early_checksum`]).
    early: Option<early_checksum::EarlyChecksum>,
}

impl Run {
    fn changelog(&self) -> Changelog {
        Changelog::new(&self.cfg.database, &self.names.changelog)
    }

    fn ghost_name(&self) -> String {
        qualified(&self.cfg.database, &self.names.ghost)
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
