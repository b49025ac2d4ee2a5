//! The run's side of deferred secondary indexes (`deferred_indexes` has the parsing and the
//! statements): they leave the empty ghost table right after it is created, the changelog
//! records them (so a resumed run builds them too), and after the row copy one online ALTER
//! builds them on its own session while this one keeps applying the binary log.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use tracing::{info, warn};

use super::deferred_indexes::{self, DeferredIndex, RECORD_HINT};
use super::{Live, Run};
use crate::engine::error::{
    EngineError, Result, SqlContext, is_connection_error, is_duplicate_key_name,
};
use crate::engine::inspector;
use crate::engine::progress::Phase;
use crate::sql::qualified;

/// How often the binary log is applied while the indexes build.
const APPLY_EVERY: Duration = Duration::from_millis(50);

impl Run {
    async fn ghost_definition(&mut self) -> Result<String> {
        let ghost = self.ghost_name();
        let create: Option<(String, String)> = self
            .ddl_conn
            .query_first(format!("SHOW CREATE TABLE {ghost}"))
            .await
            .sql_context(|| format!("reading the definition of {ghost}"))?;
        Ok(create.map(|(_, c)| c).unwrap_or_default())
    }

    /// Drops the new, empty ghost table's plain secondary indexes and records them.
    pub(super) async fn defer_secondary_indexes(&mut self) -> Result<()> {
        let indexes = deferred_indexes::deferrable(&self.ghost_definition().await?);
        if indexes.is_empty() {
            return Ok(());
        }
        let Some(record) = deferred_indexes::to_record(&indexes) else {
            warn!(
                count = indexes.len(),
                "too many secondary index definitions to record; they are not deferred"
            );
            return Ok(());
        };
        // Recorded first: a run killed between the two statements still builds them.
        self.changelog()
            .write_record(&mut self.ddl_conn, RECORD_HINT, &record)
            .await?;
        let drop =
            deferred_indexes::drop_statement(&self.cfg.database, &self.names.ghost, &indexes);
        self.ddl_conn.query_drop(&drop).await.sql_context(|| {
            "dropping the ghost table's secondary indexes until the copy ends".into()
        })?;
        info!(
            indexes = %indexes.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", "),
            "secondary indexes deferred until the row copy is complete"
        );
        Ok(())
    }

    async fn deferred_record(&mut self) -> Result<Vec<DeferredIndex>> {
        let (database, changelog) = (self.cfg.database.clone(), self.names.changelog.clone());
        if !inspector::table_exists(&mut self.ddl_conn, &database, &changelog).await? {
            return Ok(Vec::new());
        }
        let value: Option<String> = self
            .ddl_conn
            .exec_first(
                format!(
                    "SELECT value FROM {} WHERE hint = ?",
                    qualified(&database, &changelog)
                ),
                (RECORD_HINT,),
            )
            .await
            .sql_context(|| format!("reading the deferred indexes from {changelog}"))?;
        match value {
            None => Ok(Vec::new()),
            Some(text) => serde_json::from_str(&text).map_err(|e| {
                EngineError::Refused(format!(
                    "the deferred-index record in {changelog} cannot be read ({e}); drop the \
                     ghost and changelog tables and start the migration again"
                ))
            }),
        }
    }

    /// After the row copy: builds every deferred index the ghost table lacks, online, while the
    /// binary log keeps being applied. Nothing to do without deferred indexes. A lost session
    /// (killed, server restarting) is retried within `--default-retries`: a killed ALTER is
    /// rolled back, and the next attempt builds what is still missing.
    pub(super) async fn build_deferred_indexes(&mut self, live: &mut Live) -> Result<()> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.build_missing_indexes(live).await {
                Err(e) if is_connection_error(&e) => {
                    self.retry_or_fail("building the deferred secondary indexes", attempt, e)
                        .await?;
                    self.revive_sessions(live).await;
                }
                // A killed run's ALTER goes on in the server and can add an index after this run
                // read the ghost table's definition (CI run 24): what counts is whether any is
                // still missing.
                Err(e) if is_duplicate_key_name(&e) && attempt == 1 => {
                    warn!(error = %e, "a deferred index appeared meanwhile; checking what is still missing");
                }
                result => return result,
            }
        }
    }

    async fn build_missing_indexes(&mut self, live: &mut Live) -> Result<()> {
        let wanted = self.deferred_record().await?;
        if wanted.is_empty() {
            return Ok(());
        }
        let missing = deferred_indexes::missing(&wanted, &self.ghost_definition().await?);
        if missing.is_empty() {
            return Ok(());
        }
        let names = missing
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        self.progress.send_modify(|p| {
            p.phase = Phase::Copying;
            p.message = format!("building the ghost table's secondary indexes ({names})");
        });
        info!(indexes = %names, "building the deferred secondary indexes");
        let started = std::time::Instant::now();
        let sql = deferred_indexes::add_statement(&self.cfg.database, &self.names.ghost, &missing);
        let mut conn = self.sessions.ddl.open().await?;
        let connection_id = conn.id();
        let mut build = tokio::spawn(async move {
            let result = conn.query_drop(sql).await;
            let _ = conn.disconnect().await;
            result
        });
        loop {
            tokio::select! {
                joined = &mut build => {
                    joined
                        .map_err(|e| EngineError::Stream(format!("the index build task: {e}")))?
                        .sql_context(|| format!("building the secondary indexes {names} on the ghost table"))?;
                    break;
                }
                () = tokio::time::sleep(APPLY_EVERY) => {
                    let step = match self.check_abort() {
                        Ok(()) => self.drain_events(live, 0).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = step {
                        // The ALTER runs on the server whatever happens to this task: stop it.
                        let kill = format!("KILL QUERY {connection_id}");
                        if let Err(k) = self.ddl_conn.query_drop(kill).await {
                            warn!(error = %k, "cannot stop the index build");
                        }
                        build.abort();
                        return Err(e);
                    }
                }
            }
        }
        self.drain_events(live, 1).await?;
        self.progress.send_modify(|p| p.message.clear());
        info!(
            indexes = %names,
            seconds = started.elapsed().as_secs_f64(),
            "deferred secondary indexes built"
        );
        Ok(())
    }
}
