//! The migration's sessions: how each is opened (`Sessions`), the apply lanes, and replacing a
//! session that broke.

use std::time::Duration;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use tracing::{info, warn};

use crate::engine::applier::sql_mode_expression;
use crate::engine::config::MigrationConfig;
use crate::engine::conn::{ConnectionConfig, SessionFactory};
use crate::engine::error::{EngineError, Result};

use super::row_copy;
use super::{Live, Run};

impl Run {
    /// A session for copying chunks: the server's time zone and the migration's sql_mode.
    pub(super) async fn open_copy_session(&self) -> Result<Conn> {
        self.sessions.copy.open().await
    }

    /// The sessions of `--apply-threads` (none for 1). `refused`: why the plan's batches cannot
    /// be split ([`ApplyPlan::lanes_refused`]). Whatever stands in the way of lanes (that, a
    /// statement-based binlog, a session that cannot be opened) leaves one session applying,
    /// with a warning that says why: the option is a speed-up, never a reason to fail.
    pub(super) async fn open_apply_lanes(&self, refused: Option<&str>) -> Vec<Conn> {
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

    pub(super) async fn open_lane_sessions(
        &self,
        count: usize,
    ) -> std::result::Result<Vec<Conn>, String> {
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
    pub(super) async fn refresh_ddl_session(&mut self) {
        if let Err(e) = self.sessions.ddl.revive(&mut self.ddl_conn).await {
            warn!(error = %e, "the DDL session is lost and cannot be replaced yet");
        }
    }

    /// Replaces the apply session when it no longer answers.
    pub(super) async fn refresh_apply_session(&self, live: &mut Live) -> Result<()> {
        self.sessions
            .apply
            .revive(&mut live.apply_conn)
            .await
            .map(|_| ())
    }

    /// After a failed attempt: wait and let the caller retry, or give up when `--default-retries`
    /// attempts are spent. Warnings never retry (gh-ost's `--panic-on-warnings`).
    pub(super) async fn retry_or_fail(
        &self,
        what: &str,
        attempt: u32,
        error: EngineError,
    ) -> Result<()> {
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
    pub(super) async fn revive_sessions(&mut self, live: &mut Live) {
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
    pub(super) async fn revive_lanes(&self, live: &mut Live) {
        for lane in &mut live.apply_lanes {
            if let Err(e) = self.sessions.apply_lane.revive(lane).await {
                warn!(error = %e, session = "apply lane", "a lost session cannot be replaced yet");
            }
        }
    }
}

/// The migration's long-lived sessions on the applier, each opened with the settings it needs.
#[derive(Clone, Debug)]
pub(super) struct Sessions {
    /// DDL, changelog and checkpoints: zero dates allowed with `--allow-zero-in-date`, so tables
    /// with zero-date defaults can be created and altered.
    pub(super) ddl: SessionFactory,
    /// Row copy: the server's time zone and the migration's sql_mode.
    pub(super) copy: SessionFactory,
    /// Binlog apply: raw bytes for text, UTC for TIMESTAMP.
    pub(super) apply: SessionFactory,
    /// Parallel apply lanes (`--apply-threads`): the apply session's settings, READ COMMITTED so
    /// a lane's delete of an absent key takes no gap lock another lane's insert would wait on,
    /// and the copy's short lock wait so a wait between lanes ends soon.
    pub(super) apply_lane: SessionFactory,
}

impl Sessions {
    pub(super) fn new(applier: &ConnectionConfig, cfg: &MigrationConfig) -> Self {
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
