//! Dropping what a migration leaves behind on the server: the ghost (`_<t>_gho`), changelog
//! (`_<t>_ghc`) and checkpoint (`_<t>_ghk`) tables, and a cut-over sentry (`_<t>_del`) that an
//! interrupted cut-over left. The operator calls this when a SchemaMigration is deleted; it never
//! speaks SQL itself.
//!
//! A checkpoint table that holds a cut-over checkpoint is kept: a finished migration left it for
//! its revert.
//!
//! `_<t>_del` (or gh-ost's timestamped `_<t>_<YYYYMMDDhhmmss>_del`, which the engine pod uses)
//! is dropped only when its comment is the sentry's: after a cut-over that keeps the old table,
//! the same name holds the original data, the manual rollback path.

use mysql_async::prelude::Queryable;

use super::checkpoint::CheckpointTable;
use super::conn::ConnectionConfig;
use super::cutover::SENTRY_COMMENT;
use super::ddl::drop_table_if_exists;
use super::error::{Result, SqlContext};
use super::names::TableNames;

/// Drops the auxiliary tables of a migration of `database`.`table` that exist, and returns the
/// names it dropped (empty when there was nothing to do).
pub async fn drop_migration_tables(
    conn: &ConnectionConfig,
    database: &str,
    table: &str,
) -> Result<Vec<String>> {
    let names = TableNames::new(table, None, None);
    let timestamped = TableNames::new(table, None, Some(TIMESTAMP_TEMPLATE));
    let mut session = conn.connect().await?;
    // All of the schema's tables: a timestamped sentry's name is not known in advance.
    let found: Vec<(String, Option<String>)> = session
        .exec(
            "SELECT TABLE_NAME, TABLE_COMMENT FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = ?",
            (database.to_string(),),
        )
        .await
        .sql_context(|| format!("looking for ghost's tables of {database}.{table}"))?;
    let mut plan = tables_to_drop(&names, &timestamped.old, &found);
    // A finished migration's cut-over checkpoint is what `--revert` (spec.revert) starts from:
    // it belongs to that migration, not to the one being cleaned up.
    if plan.contains(&names.checkpoint)
        && CheckpointTable::new(database, &names.checkpoint)
            .latest_cut_over(&mut session)
            .await?
            .is_some()
    {
        plan.retain(|name| *name != names.checkpoint);
    }
    let mut dropped = Vec::with_capacity(plan.len());
    for name in plan {
        drop_table_if_exists(&mut session, database, &name).await?;
        dropped.push(name);
    }
    // A failed goodbye does not undo the drops.
    let _ = session.disconnect().await;
    Ok(dropped)
}

/// A timestamp of `--timestamp-old-table`'s shape (`%Y%m%d%H%M%S`), for the name template.
const TIMESTAMP_TEMPLATE: &str = "00000000000000";

/// Which of the `found` tables (name, comment) to drop, in a fixed order: ghost, changelog,
/// checkpoint, then the sentries (plain or timestamped, per `timestamped_old`'s shape) whose
/// comment says they are one.
fn tables_to_drop(
    names: &TableNames,
    timestamped_old: &str,
    found: &[(String, Option<String>)],
) -> Vec<String> {
    let exists = |name: &str| found.iter().any(|(n, _)| n == name);
    let mut plan: Vec<String> = [&names.ghost, &names.changelog, &names.checkpoint]
        .into_iter()
        .filter(|name| exists(name.as_str()))
        .cloned()
        .collect();
    let mut sentries: Vec<String> = found
        .iter()
        .filter(|(n, comment)| {
            comment.as_deref() == Some(SENTRY_COMMENT)
                && (*n == names.old || same_shape(n, timestamped_old))
        })
        .map(|(n, _)| n.clone())
        .collect();
    sentries.sort();
    plan.extend(sentries);
    plan
}

/// `name` is `template` with its run of zeros replaced by digits.
fn same_shape(name: &str, template: &str) -> bool {
    let Some(start) = template.find(TIMESTAMP_TEMPLATE) else {
        return false;
    };
    let end = start + TIMESTAMP_TEMPLATE.len();
    name.len() == template.len()
        && name.get(..start) == template.get(..start)
        && name.get(end..) == template.get(end..)
        && name
            .get(start..end)
            .is_some_and(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, comment: &str) -> (String, Option<String>) {
        (name.to_string(), Some(comment.to_string()))
    }

    const TIMESTAMPED: &str = "_users_00000000000000_del";

    #[test]
    fn drops_what_exists_in_order() {
        let names = TableNames::new("users", None, None);
        let found = vec![
            row("_users_ghk", ""),
            row("_users_gho", ""),
            row("_users_ghc", "ghost changelog"),
        ];
        assert_eq!(
            tables_to_drop(&names, TIMESTAMPED, &found),
            ["_users_gho", "_users_ghc", "_users_ghk"]
        );
        assert!(tables_to_drop(&names, TIMESTAMPED, &[]).is_empty());
    }

    #[test]
    fn the_old_table_is_dropped_only_when_it_is_the_sentry() {
        let names = TableNames::new("users", None, None);
        let kept = vec![row("_users_del", "customer accounts")];
        assert!(tables_to_drop(&names, TIMESTAMPED, &kept).is_empty());
        let no_comment = vec![("_users_del".to_string(), None)];
        assert!(tables_to_drop(&names, TIMESTAMPED, &no_comment).is_empty());
        let sentry = vec![row("_users_del", SENTRY_COMMENT), row("_users_ghc", "")];
        assert_eq!(
            tables_to_drop(&names, TIMESTAMPED, &sentry),
            ["_users_ghc", "_users_del"]
        );
    }

    #[test]
    fn timestamped_sentries_are_dropped_and_kept_old_tables_are_not() {
        let names = TableNames::new("users", None, None);
        let timestamped = TableNames::new("users", None, Some(TIMESTAMP_TEMPLATE));
        assert_eq!(timestamped.old, TIMESTAMPED);
        let found = vec![
            row("_users_20261122053601_del", SENTRY_COMMENT),
            row("_users_20261121000000_del", "customer accounts"),
            row("_users_2026112205360x_del", SENTRY_COMMENT),
            row("_users_202611220536011_del", SENTRY_COMMENT),
            row("_orders_20261122053601_del", SENTRY_COMMENT),
        ];
        assert_eq!(
            tables_to_drop(&names, &timestamped.old, &found),
            ["_users_20261122053601_del"]
        );
    }
}
