//! The end of a run: the clean-up after a swap, and after a failure or a cancel.

use mysql_async::prelude::Queryable;
use tracing::{info, warn};

use crate::engine::changelog::STATE_MIGRATED;
use crate::engine::config::Topology;
use crate::engine::crash_point;
use crate::engine::cutover::{self, SENTRY_COMMENT};
use crate::engine::ddl::drop_table_if_exists;
use crate::engine::error::{Result, is_connection_error};
use crate::sql::qualified;

use super::{Live, Run};

impl Run {
    pub(super) async fn finish(&mut self, live: &mut Live) -> Result<()> {
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
    pub(super) async fn cleanup_step(&mut self, step: CleanupStep) -> Result<()> {
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

    /// The tables this run created; a revert's ghost is the user's kept old table, never ours.
    pub(super) fn own_tables(&self) -> Vec<String> {
        let mut tables = vec![self.names.changelog.clone()];
        if self.cfg.revert_from.is_none() {
            tables.insert(0, self.names.ghost.clone());
        }
        tables
    }

    pub(super) async fn drop_aux_tables(&mut self) -> Result<()> {
        self.stop_tasks();
        for name in &self.own_tables() {
            drop_table_if_exists(&mut self.ddl_conn, &self.cfg.database, name).await?;
        }
        self.created_tables = false;
        Ok(())
    }

    pub(super) async fn cleanup_after_failure(&mut self, cancelled: bool) -> Result<()> {
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

    pub(super) async fn release(&mut self) {
        self.stop_tasks();
        let _ = self
            .lock_conn
            .query_drop("SELECT RELEASE_ALL_LOCKS()")
            .await;
    }
}

/// The clean-up's steps after the swap (`Run::cleanup_step`).
pub(super) enum CleanupStep {
    /// The changelog's `Migrated` state (an upsert; a retry adds one more history row).
    RecordMigrated,
    /// `DROP TABLE IF EXISTS` of one of the migration's tables (old, checkpoint, changelog).
    Drop(String),
}
