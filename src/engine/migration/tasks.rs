//! The background tasks of a run: the binlog stream, the throttler and the heartbeat.

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::warn;

use crate::engine::error::{Result, is_connection_error};
use crate::engine::schema::TableSchema;
use crate::engine::streamer::{BinlogStreamer, StartPosition, StreamerConfig};
use crate::engine::throttle::{ThrottleSettings, spawn_throttler};

use super::{Run, StreamMsg};

impl Run {
    pub(super) async fn start_streamer(
        &mut self,
        changelog: Arc<TableSchema>,
    ) -> Result<mpsc::Receiver<StreamMsg>> {
        let mut cfg = StreamerConfig::new(
            self.cfg.inspector.clone(),
            self.cfg.replica_server_id,
            vec![self.original.clone(), changelog],
        );
        cfg.watched = self.watched.clone();
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

    pub(super) fn start_throttler(&mut self) {
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

    pub(super) fn start_heartbeat(&mut self) {
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

    pub(super) fn stop_tasks(&mut self) {
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
}
