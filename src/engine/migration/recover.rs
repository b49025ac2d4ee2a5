//! Finishing a cut-over that its process did not live to finish (`--resume`, or a restarted
//! engine pod). Every cut-over attempt first writes a record to the changelog: where it starts
//! (every change before is applied) and the old table's name. When a run is resumed and finds
//! the tables already swapped (or, in a two-step cut-over, the original renamed away), it:
//!
//! 1. reads the binary log from the record's position to the swap itself, and keeps the row
//!    changes made to the original after the last lock marker: writes that reached the old table
//!    after everything before the lock was applied (none, with either atomic algorithm; this is
//!    the proof, and the repair if a server ever lets one through);
//! 2. writes each one to the live table when the live row is still as the change found it,
//!    counts it as present when the live row already has it, and reports it as a conflict
//!    otherwise (the old table keeps it, and is then never dropped);
//! 3. completes a half-done two-step swap, and cleans up as a finished run would.

use std::sync::Arc;
use std::time::Duration;

use mysql_async::{Conn, prelude::Queryable};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};

use super::Outcome;
use crate::engine::alter::parse_alter;
use crate::engine::applier::{ApplyPlan, prepare_apply_session};
use crate::engine::changelog::{Changelog, ChangelogEvent, STATE_ALL_EVENTS_UP_TO_LOCK, interpret};
use crate::engine::checkpoint::{Checkpoint, CheckpointTable};
use crate::engine::config::{MigrationConfig, Topology};
use crate::engine::conn::ConnectionConfig;
use crate::engine::cutover::{CutOverTables, GATE_COMMENT, SENTRY_COMMENT, drop_own_table, order};
use crate::engine::ddl::drop_table_if_exists;
use crate::engine::dialect::ServerInfo;
use crate::engine::error::{EngineError, Result, SqlContext};
use crate::engine::inspector;
use crate::engine::names::TableNames;
use crate::engine::position::BinlogPosition;
use crate::engine::progress::{Phase, Progress};
use crate::engine::schema::TableSchema;
use crate::engine::streamer::{
    BinlogStreamer, ChangeKind, RowChange, StartPosition, StreamItem, StreamerConfig,
};
use crate::sql::qualified;

/// The changelog hint of the cut-over record.
pub const RECORD_HINT: &str = "cut-over";

/// How long the binary log may stay silent before the swap shows up in it.
const SWAP_WAIT: Duration = Duration::from_secs(30);

/// Where a cut-over attempt started and what it swaps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CutOverRecord {
    pub position: BinlogPosition,
    pub old_table: String,
    pub two_step: bool,
}

impl CutOverRecord {
    /// JSON with every non-ASCII character escaped: the changelog's value column is ASCII.
    pub fn to_json(&self) -> String {
        crate::engine::changelog::ascii_json(&serde_json::to_string(self).unwrap_or_default())
    }

    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| {
            EngineError::Refused(format!(
                "the changelog's cut-over record is unreadable ({e}): it was written by another version; \
                 finish or undo that cut-over by hand"
            ))
        })
    }
}

/// What an earlier run left of its swap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwapState {
    /// The original and the ghost table are both there: nothing was swapped.
    NotSwapped,
    /// The ghost table is gone and the old table holds the original: the swap happened.
    Swapped,
    /// Two-step: the original was renamed to the old table, the ghost table not yet into place.
    HalfTwoStep,
    /// Swapped, and the old table already dropped (`--ok-to-drop-table`): only the clean-up was
    /// left undone.
    OldDropped,
}

/// What finishing an interrupted cut-over did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The swap had happened (or was completed now, for a two-step).
    pub completed_two_step: bool,
    /// Row changes made to the old table after the lock marker.
    pub leaked: usize,
    /// Of those: written to the live table now.
    pub applied: usize,
    /// Of those: the live table already had them.
    pub present: usize,
    /// Of those: the live row had changed since; kept in the old table (keys, as text).
    pub conflicts: Vec<String>,
    pub old_table: String,
    /// The run had finished the swap and dropped the old table; only its clean-up was left.
    pub old_table_dropped: bool,
    /// The run had finished everything; it was killed before it exited.
    pub already_finished: bool,
}

impl RecoveryReport {
    pub fn summary(&self) -> String {
        if self.already_finished {
            return format!(
                "this migration had already finished (an earlier run was stopped after its clean-up); the old table is kept as {}",
                self.old_table
            );
        }
        if self.old_table_dropped {
            return format!(
                "an earlier run's cut-over was finished: the tables had been swapped and {} dropped; its leftovers are cleaned up",
                self.old_table
            );
        }
        let mut text = format!(
            "an earlier run's cut-over was finished: the tables {}; {} write(s) reached the old table after the cut-over's lock ({} applied now, {} already present, {} conflicting)",
            if self.completed_two_step {
                "were half swapped (two-step) and the swap is now complete"
            } else {
                "had been swapped"
            },
            self.leaked,
            self.applied,
            self.present,
            self.conflicts.len()
        );
        if !self.conflicts.is_empty() {
            text.push_str(&format!(
                "; the conflicting rows (keys {}) stay in {} for you to merge by hand",
                self.conflicts.join(", "),
                self.old_table
            ));
        }
        text
    }
}

/// The record in `schema`.`changelog`, if the table and the record exist.
pub async fn read_record(
    conn: &mut Conn,
    schema: &str,
    changelog: &str,
) -> Result<Option<CutOverRecord>> {
    if !inspector::table_exists(conn, schema, changelog).await? {
        return Ok(None);
    }
    let value: Option<String> = conn
        .exec_first(
            format!(
                "SELECT value FROM {} WHERE hint = ?",
                qualified(schema, changelog)
            ),
            (RECORD_HINT,),
        )
        .await
        .sql_context(|| format!("reading the cut-over record from {changelog}"))?;
    value.as_deref().map(CutOverRecord::from_json).transpose()
}

/// Which tables exist tells how far the swap got. None: a state no cut-over leaves.
pub async fn swap_state(
    conn: &mut Conn,
    schema: &str,
    table: &str,
    ghost: &str,
    old: &str,
) -> Result<Option<SwapState>> {
    let original = inspector::table_exists(conn, schema, table).await?;
    let ghost = inspector::table_exists(conn, schema, ghost).await?;
    let comment = inspector::table_comment(conn, schema, old).await?;
    let old_holds_data = comment
        .as_deref()
        .is_some_and(|c| c != SENTRY_COMMENT && c != GATE_COMMENT);
    Ok(match (original, ghost, old_holds_data, comment.is_some()) {
        (true, true, _, _) => Some(SwapState::NotSwapped),
        (true, false, true, _) => Some(SwapState::Swapped),
        (false, true, true, _) => Some(SwapState::HalfTwoStep),
        (true, false, false, false) => Some(SwapState::OldDropped),
        _ => None,
    })
}

/// True when `database`.`table` has a cut-over that an earlier run started, got past the swap
/// (or half of a two-step one) and did not finish: `--resume` finishes it. For the engine pod,
/// which decides whether to resume.
pub async fn has_unfinished_cut_over(
    conn: &ConnectionConfig,
    database: &str,
    table: &str,
) -> Result<bool> {
    let mut session = conn.connect().await?;
    let server = ServerInfo::detect(&mut session).await?;
    let (database, table) = (server.stored_name(database), server.stored_name(table));
    let (database, table) = (database.as_str(), table.as_str());
    let names = TableNames::new(table, None, None);
    let found = match read_record(&mut session, database, &names.changelog).await? {
        Some(record) => matches!(
            swap_state(
                &mut session,
                database,
                table,
                &names.ghost,
                &record.old_table
            )
            .await?,
            Some(SwapState::Swapped | SwapState::HalfTwoStep | SwapState::OldDropped)
        ),
        None => false,
    };
    let _ = session.disconnect().await;
    Ok(found)
}

/// Finishes an earlier run's interrupted cut-over, if there is one; None when there is nothing
/// to finish (the migration then runs, or resumes, as usual).
pub(super) async fn finish_interrupted(
    cfg: &MigrationConfig,
    applier: &ConnectionConfig,
    progress: &watch::Sender<Progress>,
) -> Result<Option<Outcome>> {
    if cfg.topology == Topology::TestOnReplica || cfg.revert_from.is_some() {
        return Ok(None);
    }
    let names = TableNames::new(&cfg.table, cfg.force_table_names.as_deref(), None);
    let mut conn = applier.connect().await?;
    let Some(record) = read_record(&mut conn, &cfg.database, &names.changelog).await? else {
        return Ok(None);
    };
    let state = swap_state(
        &mut conn,
        &cfg.database,
        &cfg.table,
        &names.ghost,
        &record.old_table,
    )
    .await?;
    let state = match state {
        Some(SwapState::NotSwapped) => return Ok(None),
        Some(state) => state,
        None => {
            return Err(EngineError::Refused(format!(
                "an earlier run's cut-over of {} left an unexpected set of tables (the table, {} and {} do not fit any step of a cut-over): \
                 look at them, and restore the table by hand",
                qualified(&cfg.database, &cfg.table),
                names.ghost,
                record.old_table
            )));
        }
    };
    if !cfg.resume {
        return Err(EngineError::Refused(format!(
            "an earlier run of this migration got past the swap of {} and stopped before it finished: \
             run the same command with --resume to finish it (it applies any write that reached {} after the lock, then cleans up)",
            qualified(&cfg.database, &cfg.table),
            record.old_table
        )));
    }
    progress.send_modify(|p| {
        p.phase = Phase::CuttingOver;
        p.message = "finishing an interrupted cut-over".into();
    });
    info!(old_table = %record.old_table, ?state, position = %record.position, "an earlier run's cut-over was interrupted after the swap; finishing it");
    if state == SwapState::OldDropped {
        // The run had verified the swap and dropped the old table: only its clean-up is left.
        let report = RecoveryReport {
            old_table_dropped: true,
            old_table: qualified(&cfg.database, &record.old_table),
            ..RecoveryReport::default()
        };
        clean_up(cfg, &mut conn, &names, &record, None, &report).await?;
        let summary = report.summary();
        info!("{summary}");
        progress.send_modify(|p| p.message = summary);
        let _ = conn.disconnect().await;
        return Ok(Some(Outcome::Recovered(report)));
    }

    // The old table holds the original's definition: the stream reads its changes with it.
    let mut source = TableSchema::load(&mut conn, &cfg.database, &record.old_table).await?;
    let source_keys = inspector::unique_keys(&mut conn, &source).await?;
    source.name = cfg.table.clone();
    let source = Arc::new(source);
    let changelog_schema =
        Arc::new(TableSchema::load(&mut conn, &cfg.database, &names.changelog).await?);
    let (leaked, swap_position) =
        leaked_writes(cfg, &record, &names, source.clone(), changelog_schema).await?;

    let target = match state {
        SwapState::HalfTwoStep => names.ghost.clone(),
        _ => cfg.table.clone(),
    };
    let mut report = merge(cfg, &mut conn, (&source, &source_keys), &target, &leaked).await?;
    report.old_table = qualified(&cfg.database, &record.old_table);
    if state == SwapState::HalfTwoStep {
        let tables = CutOverTables {
            schema: cfg.database.clone(),
            original: cfg.table.clone(),
            ghost: names.ghost.clone(),
            old: record.old_table.clone(),
            engine: String::new(),
            gates: None,
        };
        tables.finish_two_step(&mut conn).await?;
        report.completed_two_step = true;
    }
    let kept = clean_up(cfg, &mut conn, &names, &record, swap_position, &report).await?;
    let summary = report.summary();
    if report.conflicts.is_empty() {
        info!("{summary}");
    } else {
        warn!("{summary}");
    }
    progress.send_modify(|p| {
        p.phase = Phase::CuttingOver;
        p.message = summary;
        p.kept_old_table = kept.then(|| record.old_table.clone());
    });
    let _ = conn.disconnect().await;
    Ok(Some(Outcome::Recovered(report)))
}

/// After this run's own gated swap: the binlog from the attempt's record to the swap, read for
/// writes that reached the original after the lock's marker (none when the hand-over to the
/// RENAME worked); any found are merged into the new table as a resumed run merges them.
pub(super) async fn audit_swap(
    cfg: &MigrationConfig,
    conn: &mut Conn,
    names: &TableNames,
    record: &CutOverRecord,
    (source, source_keys): (Arc<TableSchema>, &[inspector::UniqueKey]),
) -> Result<RecoveryReport> {
    let changelog = Arc::new(TableSchema::load(conn, &cfg.database, &names.changelog).await?);
    let (leaked, _) = leaked_writes(cfg, record, names, source.clone(), changelog).await?;
    let mut report = merge(cfg, conn, (&source, source_keys), &cfg.table, &leaked).await?;
    report.old_table = qualified(&cfg.database, &record.old_table);
    Ok(report)
}

/// Reads the binlog from the record's position to the swap: the original's row changes after
/// the last lock marker, and the position after the swap (where the new table's own changes
/// begin, for `--revert`).
async fn leaked_writes(
    cfg: &MigrationConfig,
    record: &CutOverRecord,
    names: &TableNames,
    source: Arc<TableSchema>,
    changelog: Arc<TableSchema>,
) -> Result<(Vec<RowChange>, Option<BinlogPosition>)> {
    let mut stream_cfg = StreamerConfig::new(
        cfg.inspector.clone(),
        cfg.replica_server_id,
        vec![source, changelog],
    );
    stream_cfg.start = StartPosition::Coordinates(record.position.coordinates.clone());
    let mut streamer = BinlogStreamer::start(stream_cfg).await?;
    let original = qualified(&cfg.database, &cfg.table);
    let mut leaked = Vec::new();
    let mut swapped = false;
    let result = loop {
        let item = match tokio::time::timeout(SWAP_WAIT, streamer.next()).await {
            Ok(item) => item,
            Err(_) => {
                break Err(EngineError::Stream(format!(
                    "the swap of {original} did not show in the binary log within {SWAP_WAIT:?} of silence; \
                     if the stream reads a replica, let it catch up and resume again"
                )));
            }
        };
        match item {
            Err(e) => break Err(e),
            Ok(StreamItem::Row(change)) if change.table.name == names.changelog => {
                if let Some(ChangelogEvent::State(state)) = change.after.as_deref().map(interpret) {
                    if state.starts_with(STATE_ALL_EVENTS_UP_TO_LOCK) {
                        // Everything before this marker was applied by the run that wrote it.
                        leaked.clear();
                    }
                }
            }
            Ok(StreamItem::Row(change)) => {
                if !swapped {
                    leaked.push(change);
                }
            }
            Ok(StreamItem::Statement { schema, query, .. }) => {
                if order::statement_renames(
                    &query,
                    &schema,
                    &cfg.database,
                    &cfg.table,
                    &record.old_table,
                ) {
                    swapped = true;
                }
            }
            Ok(StreamItem::Commit(position)) if swapped => break Ok(Some(position)),
            Ok(_) => {}
        }
    };
    streamer.close().await;
    result.map(|position| (leaked, position))
}

/// Writes the leaked changes to `target` where the live row still is as each change found it.
async fn merge(
    cfg: &MigrationConfig,
    conn: &mut Conn,
    (source, source_keys): (&TableSchema, &[inspector::UniqueKey]),
    target: &str,
    leaked: &[RowChange],
) -> Result<RecoveryReport> {
    let mut report = RecoveryReport {
        leaked: leaked.len(),
        ..RecoveryReport::default()
    };
    if leaked.is_empty() {
        return Ok(report);
    }
    let alter = parse_alter(&cfg.alter).map_err(|e| EngineError::Refused(e.to_string()))?;
    let live = TableSchema::load(conn, &cfg.database, target).await?;
    let column_map = super::shared_columns(source, &alter, cfg.skip_renamed_columns, &live)?;
    let live_keys = inspector::unique_keys(conn, &live).await?;
    let key = inspector::choose_shared_key(source, source_keys, &live_keys, true)?;
    let time_zone: Option<String> = conn
        .query_first("SELECT @@global.time_zone")
        .await
        .sql_context(|| "reading the time zone".into())?;
    let plan = ApplyPlan::new(
        source,
        &live,
        &column_map,
        &key.columns,
        time_zone.as_deref().unwrap_or("SYSTEM"),
    )?;
    prepare_apply_session(conn, cfg.allow_zero_in_date).await?;
    for change in leaked {
        let key_text = |image: &[mysql_async::Value]| {
            key.columns
                .iter()
                .filter_map(|c| {
                    source
                        .column_index(c)
                        .map(|i| format!("{c}={:?}", image[i]))
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        let (before, after) = (change.before.as_deref(), change.after.as_deref());
        let verdict = match (change.kind, before, after) {
            (ChangeKind::Insert, _, Some(after)) => {
                if plan.has_row(conn, after).await? {
                    Verdict::Present
                } else if plan.has_key(conn, after).await? {
                    Verdict::Conflict(key_text(after))
                } else {
                    Verdict::Apply
                }
            }
            (ChangeKind::Update, Some(before), Some(after)) => {
                if plan.has_row(conn, after).await? {
                    Verdict::Present
                } else if plan.has_row(conn, before).await? {
                    Verdict::Apply
                } else {
                    Verdict::Conflict(key_text(before))
                }
            }
            (ChangeKind::Delete, Some(before), _) => {
                if !plan.has_key(conn, before).await? {
                    Verdict::Present
                } else if plan.has_row(conn, before).await? {
                    Verdict::Apply
                } else {
                    Verdict::Conflict(key_text(before))
                }
            }
            _ => Verdict::Conflict(format!("a {:?} without its row images", change.kind)),
        };
        match verdict {
            Verdict::Present => report.present += 1,
            Verdict::Apply => {
                plan.apply_batch(conn, std::slice::from_ref(change), None, None, false)
                    .await?;
                report.applied += 1;
            }
            Verdict::Conflict(key) => report.conflicts.push(key),
        }
    }
    Ok(report)
}

enum Verdict {
    Present,
    Apply,
    Conflict(String),
}

/// What a finished run does after its swap: the changelog and gates go; the old table and the
/// checkpoints go with `--ok-to-drop-table` (never while it holds conflicting rows), else a
/// cut-over checkpoint makes `--revert` possible. True when the old table is kept.
async fn clean_up(
    cfg: &MigrationConfig,
    conn: &mut Conn,
    names: &TableNames,
    record: &CutOverRecord,
    swap_position: Option<BinlogPosition>,
    report: &RecoveryReport,
) -> Result<bool> {
    if let Some(gates) = order::gate_names(&cfg.table) {
        for gate in [&gates.sentry, &gates.source] {
            drop_own_table(conn, &cfg.database, gate, GATE_COMMENT).await?;
        }
    }
    let checkpoints = CheckpointTable::new(&cfg.database, &names.checkpoint);
    let has_checkpoints = inspector::table_exists(conn, &cfg.database, &names.checkpoint).await?;
    // The changelog (with the record) goes last: a run killed in between resumes here again.
    let changelog = Changelog::new(&cfg.database, &names.changelog);
    if cfg.ok_to_drop_table && report.conflicts.is_empty() {
        drop_table_if_exists(conn, &cfg.database, &record.old_table).await?;
        if has_checkpoints {
            checkpoints.drop_table(conn).await?;
        }
        changelog.drop_table(conn).await?;
        return Ok(false);
    }
    if let (true, Some(position)) = (has_checkpoints, swap_position) {
        let checkpoint = Checkpoint {
            position,
            copied_through: None,
            copy_complete: true,
            rows_copied: 0,
            events_applied: 0,
            is_cut_over: true,
            run: parse_alter(&cfg.alter)
                .ok()
                .map(|alter| super::run_fingerprint(cfg, &alter)),
        };
        match checkpoints.write(conn, &checkpoint, 0).await {
            Ok(()) => info!(
                old_table = %record.old_table,
                "cut-over checkpoint written: revert with --revert --old-table={}",
                record.old_table
            ),
            Err(e) => {
                warn!(error = %e, "cannot write the cut-over checkpoint; --revert will not be possible")
            }
        }
    }
    changelog.drop_table(conn).await?;
    if !report.old_table_dropped {
        info!(
            "the old table is kept as {0}; drop it with: DROP TABLE IF EXISTS {0}",
            qualified(&cfg.database, &record.old_table)
        );
    }
    Ok(!report.old_table_dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::position::BinlogCoordinates;

    #[test]
    fn the_record_survives_an_ascii_column() {
        let record = CutOverRecord {
            position: BinlogPosition {
                coordinates: BinlogCoordinates::new("bin.000007", 1234),
                gtid: Some("0-1-42".into()),
            },
            old_table: "_Bücher_😀_del".into(),
            two_step: false,
        };
        let json = record.to_json();
        assert!(json.is_ascii(), "{json}");
        assert_eq!(CutOverRecord::from_json(&json).unwrap(), record);
    }

    #[test]
    fn the_report_says_what_was_done() {
        let report = RecoveryReport {
            leaked: 3,
            applied: 1,
            present: 1,
            conflicts: vec!["id=Int(7)".into()],
            old_table: "`d`.`_t_del`".into(),
            ..RecoveryReport::default()
        };
        let text = report.summary();
        assert!(text.contains("3 write(s)"), "{text}");
        assert!(
            text.contains("1 applied now, 1 already present, 1 conflicting"),
            "{text}"
        );
        assert!(text.contains("`d`.`_t_del`"), "{text}");
    }
}
