//! Checkpoints: where a resumed run continues from, and where a revert starts.

use std::time::Instant;

use tracing::{info, warn};

use crate::engine::checkpoint::{Checkpoint, CheckpointTable};
use crate::engine::copier::KeyTuple;
use crate::engine::error::Result;
use crate::engine::position::BinlogPosition;

use super::{Live, Run};

impl Run {
    pub(super) fn checkpoint_table(&self) -> Option<CheckpointTable> {
        self.cfg
            .checkpoint_interval
            .map(|_| CheckpointTable::new(&self.cfg.database, &self.names.checkpoint))
    }

    /// Writes a checkpoint when one is due (or `force`). Called only between operations, where
    /// every change up to `live.applied_position` is applied and every key up to `copied` copied.
    /// A failed write is logged, not fatal: the previous checkpoint stays valid.
    pub(super) async fn maybe_checkpoint(
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

    /// A checkpoint at `position` with the current counters.
    pub(super) fn checkpoint_at(
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

    pub(super) async fn write_checkpoint(
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
    pub(super) async fn write_cut_over_checkpoint(&mut self) {
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
}
