//! The run itself: the ghost table, the stream, the copy with changes applied, the checksum and
//! the cut-over, in order.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use tracing::info;

use crate::engine::applier::{ApplyPlan, WriteMode};
use crate::engine::changelog::{STATE_GHOST_TABLE_MIGRATED, STATE_READ_RANGE};
use crate::engine::checksum::ChecksumPlan;
use crate::engine::copier::{Copier, CopyKey};
use crate::engine::error::{EngineError, Result, SqlContext, is_connection_error};
use crate::engine::hooks::HookPoint;
use crate::engine::inspector::{self, UniqueKey};
use crate::engine::progress::Phase;
use crate::engine::schema::{ColumnKind, TableSchema};
use crate::engine::wording;
use crate::sql::qualified;

use super::{Live, Outcome, Run, Wait, early_checksum, shared_columns};

impl Run {
    pub(super) async fn execute(&mut self) -> Result<Outcome> {
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
            gone: None,
            early: None,
        };
        self.start_copy_without_locks(&mut live, &key.columns, write_mode);
        let copy_tag = early_checksum::copy_tag(&self.names.ghost);
        live.early = self.start_early_checksum(&key.columns, &column_map, &ghost, &copy_tag);
        if live.early.is_some() {
            live.copier
                .mark_transactions(self.changelog().copy_mark(&copy_tag));
        }
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

    pub(super) async fn try_instant_ddl(&mut self) -> Result<bool> {
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

    pub(super) async fn create_ghost_table(&mut self) -> Result<()> {
        let ghost = self.ghost_name();
        let original = qualified(&self.cfg.database, &self.cfg.table);
        self.ddl_conn
            .query_drop(format!("CREATE TABLE {ghost} LIKE {original}"))
            .await
            .map_err(|e| {
                EngineError::Refused(format!(
                    "FATAL {}: creating the ghost table {ghost} like the original fails; \
                     fix the original's definition (or the session's sql_mode) first",
                    crate::engine::error::server_error_text(&e)
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

    pub(super) fn check_key_conversions(&self, key: &UniqueKey, ghost: &TableSchema) -> Result<()> {
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
}
