//! Dropping what a migration leaves behind on the server: the ghost (`_<t>_gho`), changelog
//! (`_<t>_ghc`) and checkpoint (`_<t>_ghk`) tables, and a cut-over sentry (`_<t>_del`) that an
//! interrupted cut-over left. The operator calls this when a SchemaMigration is deleted; it never
//! speaks SQL itself.
//!
//! `_<t>_del` is dropped only when its comment is the sentry's: after a cut-over that keeps the
//! old table, the same name holds the original data, the manual rollback path.

use mysql_async::prelude::Queryable;

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
    let mut session = conn.connect().await?;
    let found: Vec<(String, Option<String>)> = session
        .exec(
            "SELECT TABLE_NAME, TABLE_COMMENT FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME IN (?, ?, ?, ?)",
            (
                database.to_string(),
                names.ghost.clone(),
                names.changelog.clone(),
                names.checkpoint.clone(),
                names.old.clone(),
            ),
        )
        .await
        .sql_context(|| format!("looking for ghost's tables of {database}.{table}"))?;
    let plan = tables_to_drop(&names, &found);
    let mut dropped = Vec::with_capacity(plan.len());
    for name in plan {
        drop_table_if_exists(&mut session, database, &name).await?;
        dropped.push(name);
    }
    // A failed goodbye does not undo the drops.
    let _ = session.disconnect().await;
    Ok(dropped)
}

/// Which of the `found` tables (name, comment) to drop, in a fixed order: ghost, changelog,
/// checkpoint, then the sentry when its comment says it is one.
fn tables_to_drop(names: &TableNames, found: &[(String, Option<String>)]) -> Vec<String> {
    let exists = |name: &str| found.iter().any(|(n, _)| n == name);
    let mut plan: Vec<String> = [&names.ghost, &names.changelog, &names.checkpoint]
        .into_iter()
        .filter(|name| exists(name.as_str()))
        .cloned()
        .collect();
    let sentry = found
        .iter()
        .any(|(n, comment)| *n == names.old && comment.as_deref() == Some(SENTRY_COMMENT));
    if sentry {
        plan.push(names.old.clone());
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, comment: &str) -> (String, Option<String>) {
        (name.to_string(), Some(comment.to_string()))
    }

    #[test]
    fn drops_what_exists_in_order() {
        let names = TableNames::new("users", None, None);
        let found = vec![
            row("_users_ghk", ""),
            row("_users_gho", ""),
            row("_users_ghc", "ghost changelog"),
        ];
        assert_eq!(
            tables_to_drop(&names, &found),
            ["_users_gho", "_users_ghc", "_users_ghk"]
        );
        assert!(tables_to_drop(&names, &[]).is_empty());
    }

    #[test]
    fn the_old_table_is_dropped_only_when_it_is_the_sentry() {
        let names = TableNames::new("users", None, None);
        let kept = vec![row("_users_del", "customer accounts")];
        assert!(tables_to_drop(&names, &kept).is_empty());
        let no_comment = vec![("_users_del".to_string(), None)];
        assert!(tables_to_drop(&names, &no_comment).is_empty());
        let sentry = vec![row("_users_del", SENTRY_COMMENT), row("_users_ghc", "")];
        assert_eq!(
            tables_to_drop(&names, &sentry),
            ["_users_ghc", "_users_del"]
        );
    }
}
