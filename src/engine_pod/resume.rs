//! Whether a restarted engine pod should resume: the previous pod (killed, evicted, OOM) left
//! its ghost, changelog and checkpoint tables and at least one checkpoint, or it finished and
//! left its cut-over checkpoint. Built only from the
//! engine's public API, so the table names and the checkpoint format stay defined in one place.

use crate::engine::Result;
use crate::engine::checkpoint::CheckpointTable;
use crate::engine::conn::ConnectionConfig;
use crate::engine::dialect::ServerInfo;
use crate::engine::inspector;
use crate::engine::migration::recover::has_unfinished_cut_over;
use crate::engine::names::TableNames;

/// True when `database.table` has a migration to resume: the same tables the engine's resume
/// requires, plus a checkpoint in the checkpoint table; or a cut-over the previous pod got past
/// the swap of and did not finish. `conn` is the server the migration writes to (the primary).
pub async fn has_resumable_checkpoint(
    conn: &ConnectionConfig,
    database: &str,
    table: &str,
) -> Result<bool> {
    let mut session = conn.connect().await?;
    let server = ServerInfo::detect(&mut session).await?;
    let (database, table) = (server.stored_name(database), server.stored_name(table));
    let (database, table) = (database.as_str(), table.as_str());
    // The pod never forces table names, so the engine's default names apply.
    let names = TableNames::new(table, None, None);
    let mut found = true;
    for name in [&names.ghost, &names.changelog, &names.checkpoint] {
        if !inspector::table_exists(&mut session, database, name).await? {
            found = false;
            break;
        }
    }
    if found {
        found = CheckpointTable::new(database, &names.checkpoint)
            .latest(&mut session)
            .await?
            .is_some();
    } else if !inspector::table_exists(&mut session, database, &names.ghost).await?
        && !inspector::table_exists(&mut session, database, &names.changelog).await?
        && inspector::table_exists(&mut session, database, &names.checkpoint).await?
    {
        // The previous pod may have finished and been stopped before it reported: the engine
        // recognises its own cut-over checkpoint and reports the migration done.
        found = CheckpointTable::new(database, &names.checkpoint)
            .latest_cut_over(&mut session)
            .await?
            .is_some();
    }
    // A failed goodbye changes nothing: the server drops the session either way.
    let _ = session.disconnect().await;
    if !found {
        found = has_unfinished_cut_over(conn, database, table).await?;
    }
    Ok(found)
}
