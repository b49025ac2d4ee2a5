//! Resuming and re-running: the checkpoints a run reads at its start, whether an earlier run of
//! the same migration finished already, and the fingerprint that tells runs apart.

use mysql_async::Conn;

use tracing::info;

use super::{Outcome, recover};
use crate::engine::alter::AlterStatement;
use crate::engine::checkpoint::{Checkpoint, CheckpointTable};
use crate::engine::config::MigrationConfig;
use crate::engine::error::{EngineError, Result};
use crate::engine::inspector;
use crate::engine::names::TableNames;
use crate::sql::qualified;

/// `--revert`: the old table must be there, and a cut-over checkpoint of the migration that
/// made it.
pub(super) async fn read_cut_over_checkpoint(
    conn: &mut Conn,
    cfg: &MigrationConfig,
    names: &TableNames,
) -> Result<Checkpoint> {
    if !inspector::table_exists(conn, &cfg.database, &names.ghost).await? {
        return Err(EngineError::Refused(format!(
            "--revert: the old table {} does not exist; pass the one the migration kept (e.g. \
             --old-table=_{}_del)",
            qualified(&cfg.database, &names.ghost),
            cfg.table
        )));
    }
    let checkpoints = qualified(&cfg.database, &names.checkpoint);
    let missing = || {
        EngineError::Refused(format!(
            "--revert: {checkpoints} has no cut-over checkpoint; only a migration run with \
             --checkpoint that kept its old table can be reverted"
        ))
    };
    if !inspector::table_exists(conn, &cfg.database, &names.checkpoint).await? {
        return Err(missing());
    }
    CheckpointTable::new(&cfg.database, &names.checkpoint)
        .latest_cut_over(conn)
        .await?
        .ok_or_else(missing)
}

/// `--resume`: the ghost and changelog tables must still be there, and a checkpoint. The inner
/// error says why there is nothing to resume.
pub(super) async fn read_resume_checkpoint(
    conn: &mut Conn,
    cfg: &MigrationConfig,
    names: &TableNames,
) -> Result<std::result::Result<Checkpoint, String>> {
    for name in [&names.ghost, &names.changelog, &names.checkpoint] {
        if !inspector::table_exists(conn, &cfg.database, name).await? {
            return Ok(Err(format!(
                "table {} is missing",
                qualified(&cfg.database, name)
            )));
        }
    }
    let latest = CheckpointTable::new(&cfg.database, &names.checkpoint)
        .latest(conn)
        .await?;
    Ok(latest.ok_or_else(|| {
        format!(
            "{} has no checkpoint yet",
            qualified(&cfg.database, &names.checkpoint)
        )
    }))
}

/// The outcome of this same migration when an earlier run finished it (a kill after its
/// clean-up, before it exited): the ghost and changelog are gone, and the newest cut-over
/// checkpoint was written by a run with this fingerprint.
pub(super) async fn finished_earlier(
    conn: &mut Conn,
    cfg: &MigrationConfig,
    names: &TableNames,
    fingerprint: &str,
) -> Result<Option<Outcome>> {
    for name in [&names.ghost, &names.changelog] {
        if inspector::table_exists(conn, &cfg.database, name).await? {
            return Ok(None);
        }
    }
    let cut_over = cut_over_checkpoint(conn, cfg, names).await?;
    if cut_over.and_then(|c| c.run).as_deref() != Some(fingerprint) {
        return Ok(None);
    }
    let report = recover::RecoveryReport {
        already_finished: true,
        old_table: qualified(&cfg.database, &names.old),
        ..Default::default()
    };
    info!("--resume: {}", report.summary());
    Ok(Some(Outcome::Recovered(report)))
}

/// The newest cut-over checkpoint of this table's migrations, if its table has one.
pub(super) async fn cut_over_checkpoint(
    conn: &mut Conn,
    cfg: &MigrationConfig,
    names: &TableNames,
) -> Result<Option<Checkpoint>> {
    if !inspector::table_exists(conn, &cfg.database, &names.checkpoint).await? {
        return Ok(None);
    }
    CheckpointTable::new(&cfg.database, &names.checkpoint)
        .latest_cut_over(conn)
        .await
}

pub(super) async fn has_cut_over_checkpoint(
    conn: &mut Conn,
    cfg: &MigrationConfig,
    names: &TableNames,
) -> Result<bool> {
    Ok(cut_over_checkpoint(conn, cfg, names).await?.is_some())
}

/// What a run does, as its checkpoints record it: the table, the ALTER and the options that
/// change the result. A resume must do the same.
pub(super) fn run_fingerprint(cfg: &MigrationConfig, alter: &AlterStatement) -> String {
    let options: String = alter
        .options
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    serde_json::json!({
        "database": cfg.database,
        "table": cfg.table,
        "alter": options,
        "approve-renamed-columns": cfg.approve_renamed_columns,
        "skip-renamed-columns": cfg.skip_renamed_columns,
        "discard-foreign-keys": cfg.discard_foreign_keys,
        "allow-zero-in-date": cfg.allow_zero_in_date,
        "include-triggers": cfg.include_triggers,
        "trigger-suffix": cfg.trigger_suffix,
        "force-table-names": cfg.force_table_names,
    })
    .to_string()
}

/// Refuses to resume a checkpoint written by a run that did something else.
pub(super) fn check_same_run(checkpoint: &Checkpoint, now: &str, names: &TableNames) -> Result<()> {
    let Some(then) = checkpoint.run.as_deref() else {
        return Ok(());
    };
    if then == now {
        return Ok(());
    }
    let parse = |text: &str| {
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text).unwrap_or_default()
    };
    let (then, now) = (parse(then), parse(now));
    let differences: Vec<String> = now
        .iter()
        .filter(|(k, v)| then.get(*k) != Some(*v))
        .map(|(k, v)| {
            format!(
                "--{k} was {} and is now {v}",
                then.get(k)
                    .map_or_else(|| "unset".to_string(), ToString::to_string)
            )
        })
        .collect();
    Err(EngineError::Refused(format!(
        "--resume: the checkpoint in {} belongs to a run that did something else ({}): resume with that run's command, \
         or drop {}, {} and {} and start over without --resume",
        names.checkpoint,
        differences.join("; "),
        names.ghost,
        names.changelog,
        names.checkpoint
    )))
}
