//! Validation: everything checked before any table is created, and the `Run` it yields.

use std::sync::Arc;
use std::time::Instant;

use mysql_async::prelude::Queryable;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::engine::alter::{AlterStatement, parse_alter};
use crate::engine::config::{CutOverMode, MigrationConfig};
use crate::engine::controls::Controls;
use crate::engine::cutover::{self, GATE_COMMENT, SENTRY_COMMENT};
use crate::engine::ddl::drop_table_if_exists;
use crate::engine::dialect::{CutOverAlgorithm, ServerInfo};
use crate::engine::error::{EngineError, Result, SqlContext};
use crate::engine::hooks::Hooks;
use crate::engine::inspector;
use crate::engine::names::TableNames;
use crate::engine::progress::Progress;
use crate::engine::schema::TableSchema;
use crate::engine::wording;
use crate::sql::qualified;

use super::Sessions;
use super::preflight::{
    check_can_create_triggers, check_ghost_trigger_names, resolve_applier, switch_to_rbr,
};
use super::recover;
use super::resume::{
    check_same_run, finished_earlier, has_cut_over_checkpoint, read_cut_over_checkpoint,
    read_resume_checkpoint, run_fingerprint,
};
use super::{Prepared, RESUME_LOCK_WAIT, Run, migration_lock_name};

impl Run {
    pub(super) async fn prepare(
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
        crate::engine::streamer::preflight(&mut inspector_conn, &server, &cfg.inspector.endpoint())
            .await?;
        let applier_cfg = resolve_applier(&cfg, &server, &mut inspector_conn).await?;
        // Before the table is looked at: a half-done two-step swap leaves it absent.
        if let Some(outcome) = recover::finish_interrupted(&cfg, &applier_cfg, &progress).await? {
            return Ok(Prepared::Finished(outcome));
        }
        let (_, engine) =
            inspector::table_kind(&mut inspector_conn, &cfg.database, &cfg.table).await?;
        let sessions = Sessions::new(&applier_cfg, &cfg);
        let mut ddl_conn = sessions.ddl.open().await?;
        let tls_state = crate::engine::tls::session_tls(&mut ddl_conn).await?;
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
            return Err(inspector::no_unique_key(&original));
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
            watched: Default::default(),
        })))
    }
}
