//! Reads what the migration must know about the server and the table before anything is created,
//! and refuses what cannot be migrated safely. Every refusal names the cause and the fix.

use std::collections::BTreeSet;

use mysql_async::{Conn, prelude::Queryable};

use super::error::{EngineError, Result, SqlContext};
use super::schema::{ColumnKind, TableSchema};
use super::wording;
use crate::sql::qualified;

/// A PRIMARY or UNIQUE key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UniqueKey {
    pub name: String,
    pub columns: Vec<String>,
    pub has_nullable: bool,
    /// Per column: the indexed prefix length (`SUB_PART`), None for the whole value.
    pub prefixes: Vec<Option<u64>>,
    /// A part of the key is an expression (MySQL's functional key parts): never a shared key.
    pub has_expression: bool,
}

impl UniqueKey {
    pub fn is_primary(&self) -> bool {
        self.name == "PRIMARY"
    }
}

/// Trigger definitions, for `--include-triggers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trigger {
    pub name: String,
    pub event: String,
    pub timing: String,
    pub statement: String,
}

pub async fn table_kind(conn: &mut Conn, schema: &str, table: &str) -> Result<(String, String)> {
    let row: Option<(String, Option<String>)> = conn
        .exec_first(
            "SELECT TABLE_TYPE, ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (schema, table),
        )
        .await
        .sql_context(|| format!("looking up {}", qualified(schema, table)))?;
    let (kind, engine) = row.ok_or_else(|| EngineError::TableNotFound {
        schema: schema.to_string(),
        table: table.to_string(),
    })?;
    if kind.eq_ignore_ascii_case("VIEW") {
        return Err(EngineError::UnsupportedTable {
            table: qualified(schema, table),
            reason: format!(
                "{}: migrate the base table instead",
                wording::is_a_view(schema, table)
            ),
        });
    }
    Ok((kind, engine.unwrap_or_else(|| "InnoDB".into())))
}

pub async fn table_exists(conn: &mut Conn, schema: &str, table: &str) -> Result<bool> {
    let n: Option<u64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (schema, table),
        )
        .await
        .sql_context(|| format!("looking up {}", qualified(schema, table)))?;
    Ok(n.unwrap_or(0) > 0)
}

/// The table's comment, or None when there is no such table.
pub async fn table_comment(conn: &mut Conn, schema: &str, table: &str) -> Result<Option<String>> {
    conn.exec_first(
        "SELECT TABLE_COMMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
        (schema, table),
    )
    .await
    .sql_context(|| format!("looking up {}", qualified(schema, table)))
}

pub async fn unique_keys(conn: &mut Conn, table: &TableSchema) -> Result<Vec<UniqueKey>> {
    type KeyPartRow = (String, Option<String>, Option<String>, Option<u64>);
    let rows: Vec<KeyPartRow> = conn
        .exec(
            "SELECT INDEX_NAME, COLUMN_NAME, NULLABLE, SUB_PART FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND NON_UNIQUE = 0 \
             ORDER BY INDEX_NAME = 'PRIMARY' DESC, INDEX_NAME, SEQ_IN_INDEX",
            (&table.schema, &table.name),
        )
        .await
        .sql_context(|| format!("reading unique keys of {}", table.qualified_name()))?;
    let mut keys: Vec<UniqueKey> = Vec::new();
    for (index, column, nullable, prefix) in rows {
        let nullable = nullable.is_some_and(|n| n.eq_ignore_ascii_case("YES"));
        let expression = column.is_none();
        let column = column.unwrap_or_default();
        match keys.last_mut() {
            Some(key) if key.name == index => {
                key.columns.push(column);
                key.prefixes.push(prefix);
                key.has_nullable |= nullable;
                key.has_expression |= expression;
            }
            _ => keys.push(UniqueKey {
                name: index,
                columns: vec![column],
                has_nullable: nullable,
                prefixes: vec![prefix],
                has_expression: expression,
            }),
        }
    }
    Ok(keys)
}

/// True when every unique key of `ghost` is one `original` enforces too: over the same columns
/// (through `column_map`, original name to ghost name), with the same prefixes, types and
/// collations. Then a unique value the ghost table holds twice is always one the original held
/// once, i.e. a stale copy that a later change in the binlog moves away, and changes may be
/// written with REPLACE (`engine::applier::WriteMode`).
pub fn ghost_unique_keys_enforced(
    original: &TableSchema,
    original_keys: &[UniqueKey],
    ghost: &TableSchema,
    ghost_keys: &[UniqueKey],
    column_map: &[(String, String)],
) -> bool {
    let original_name = |ghost_column: &str| {
        column_map
            .iter()
            .find(|(_, g)| g.eq_ignore_ascii_case(ghost_column))
            .map(|(o, _)| o.clone())
    };
    let same_definition = |o: &str, g: &str| match (original.column_index(o), ghost.column_index(g))
    {
        (Some(o), Some(g)) => {
            let (o, g) = (&original.columns[o], &ghost.columns[g]);
            o.column_type.eq_ignore_ascii_case(&g.column_type) && o.collation == g.collation
        }
        _ => false,
    };
    ghost_keys.iter().all(|gk| {
        if gk.has_expression {
            return false;
        }
        let mut parts = BTreeSet::new();
        for (column, prefix) in gk.columns.iter().zip(&gk.prefixes) {
            let Some(o) = original_name(column) else {
                return false;
            };
            if !same_definition(&o, column) {
                return false;
            }
            parts.insert((o.to_lowercase(), *prefix));
        }
        original_keys.iter().any(|ok| {
            !ok.has_expression
                && ok
                    .columns
                    .iter()
                    .zip(&ok.prefixes)
                    .map(|(c, p)| (c.to_lowercase(), *p))
                    .collect::<BTreeSet<_>>()
                    == parts
        })
    })
}

/// The refusal of a table without a unique key (gh-ost's wording).
pub fn no_unique_key(table: &TableSchema) -> EngineError {
    EngineError::UnsupportedTable {
        table: table.qualified_name(),
        reason: format!(
            "{}: add one (e.g. an AUTO_INCREMENT primary key) first",
            wording::NO_UNIQUE_KEY
        ),
    }
}

/// gh-ost's choice of the key that identifies a row in both tables: an original unique key whose
/// columns all sit in some unique key of the ghost table, preferring PRIMARY, then non-nullable
/// keys, then non-character first columns, then small integer first columns, then fewer columns.
/// Keys on FLOAT or JSON columns never qualify.
pub fn choose_shared_key(
    original: &TableSchema,
    original_keys: &[UniqueKey],
    ghost_keys: &[UniqueKey],
    allow_nullable: bool,
) -> Result<UniqueKey> {
    if original_keys.is_empty() {
        return Err(no_unique_key(original));
    }
    if ghost_keys.is_empty() {
        return Err(EngineError::UnsupportedTable {
            table: original.qualified_name(),
            reason: format!(
                "{} (the table after the ALTER has none): keep a unique key",
                wording::NO_UNIQUE_KEY
            ),
        });
    }
    let usable = |key: &UniqueKey| {
        !key.has_expression
            && key.columns.iter().all(|c| {
                original.column_index(c).is_some_and(|i| {
                    !matches!(
                        original.columns[i].kind,
                        ColumnKind::Float | ColumnKind::Json
                    ) && original.columns[i].data_type != "json"
                })
            })
    };
    let shared = |key: &UniqueKey| {
        ghost_keys.iter().any(|g| {
            let ghost_cols: BTreeSet<&str> = g.columns.iter().map(String::as_str).collect();
            key.columns.iter().all(|c| ghost_cols.contains(c.as_str()))
        })
    };
    let mut candidates: Vec<&UniqueKey> = original_keys
        .iter()
        .filter(|k| usable(k) && shared(k))
        .collect();
    let rank = |key: &UniqueKey| {
        let first = key.columns.first().and_then(|c| original.column_index(c));
        let first_has_charset = first.is_some_and(|i| original.columns[i].charset.is_some());
        let width = match first.map(|i| original.columns[i].kind) {
            Some(ColumnKind::Integer { bytes, .. }) => bytes,
            _ => 9,
        };
        (
            !key.is_primary(),
            key.has_nullable,
            first_has_charset,
            width,
            key.columns.len(),
        )
    };
    candidates.sort_by_key(|k| rank(k));
    let Some(best) = candidates.first() else {
        return Err(EngineError::UnsupportedTable {
            table: original.qualified_name(),
            reason: format!(
                "{}: the table and the ALTER's result have no unique key in common \
                     (FLOAT and JSON keys do not count); keep a unique key's columns unchanged",
                wording::NO_SHARED_KEY
            ),
        });
    };
    if best.has_nullable && !allow_nullable {
        return Err(EngineError::UnsupportedTable {
            table: original.qualified_name(),
            reason: format!(
                "{}; or make its columns NOT NULL first",
                wording::nullable_key(&best.name)
            ),
        });
    }
    Ok((*best).clone())
}

/// Foreign keys where the table is the child, and where it is the parent.
pub async fn foreign_keys(conn: &mut Conn, schema: &str, table: &str) -> Result<(u64, u64)> {
    let row: Option<(Option<u64>, Option<u64>)> = conn
        .exec_first(
            "SELECT \
               SUM(TABLE_SCHEMA = ? AND TABLE_NAME = ?), \
               SUM(REFERENCED_TABLE_SCHEMA = ? AND REFERENCED_TABLE_NAME = ?) \
             FROM information_schema.KEY_COLUMN_USAGE \
             WHERE REFERENCED_TABLE_NAME IS NOT NULL \
               AND ((TABLE_SCHEMA = ? AND TABLE_NAME = ?) OR (REFERENCED_TABLE_SCHEMA = ? AND REFERENCED_TABLE_NAME = ?))",
            (schema, table, schema, table, schema, table, schema, table),
        )
        .await
        .sql_context(|| format!("reading foreign keys of {}", qualified(schema, table)))?;
    let (child, parent) = row.unwrap_or_default();
    Ok((child.unwrap_or(0), parent.unwrap_or(0)))
}

pub async fn triggers(conn: &mut Conn, schema: &str, table: &str) -> Result<Vec<Trigger>> {
    let rows: Vec<(String, String, String, String)> = conn
        .exec(
            "SELECT TRIGGER_NAME, EVENT_MANIPULATION, ACTION_TIMING, ACTION_STATEMENT FROM information_schema.TRIGGERS \
             WHERE EVENT_OBJECT_SCHEMA = ? AND EVENT_OBJECT_TABLE = ? ORDER BY ACTION_ORDER",
            (schema, table),
        )
        .await
        .sql_context(|| format!("reading triggers of {}", qualified(schema, table)))?;
    Ok(rows
        .into_iter()
        .map(|(name, event, timing, statement)| Trigger {
            name,
            event,
            timing,
            statement,
        })
        .collect())
}

/// Trigger names already used anywhere in the schema.
pub async fn trigger_names_in_schema(conn: &mut Conn, schema: &str) -> Result<BTreeSet<String>> {
    let names: Vec<String> = conn
        .exec(
            "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ?",
            (schema,),
        )
        .await
        .sql_context(|| "reading trigger names".into())?;
    Ok(names.into_iter().collect())
}

pub async fn row_estimate(conn: &mut Conn, schema: &str, table: &str) -> Result<u64> {
    let rows: Option<Option<u64>> = conn
        .exec_first(
            "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (schema, table),
        )
        .await
        .sql_context(|| "reading the row estimate".into())?;
    Ok(rows.flatten().unwrap_or(0))
}

pub async fn exact_row_count(conn: &mut Conn, schema: &str, table: &str) -> Result<u64> {
    let n: Option<u64> = conn
        .query_first(format!("SELECT COUNT(*) FROM {}", qualified(schema, table)))
        .await
        .sql_context(|| "counting rows".into())?;
    Ok(n.unwrap_or(0))
}

/// The privileges the engine uses on the migrated schema.
const TABLE_PRIVILEGES: [&str; 10] = [
    "ALTER",
    "CREATE",
    "DELETE",
    "DROP",
    "INDEX",
    "INSERT",
    "LOCK TABLES",
    "SELECT",
    "TRIGGER",
    "UPDATE",
];

/// Checks `SHOW GRANTS` the way gh-ost does; the error lists what is missing and the GRANT to run.
pub async fn check_grants(conn: &mut Conn, schema: &str) -> Result<()> {
    let grants: Vec<String> = conn
        .query("SHOW GRANTS FOR CURRENT_USER()")
        .await
        .sql_context(|| "reading grants".into())?;
    let missing = missing_privileges(&grants, schema);
    if missing.is_empty() {
        return Ok(());
    }
    Err(EngineError::ServerConfig(format!(
        "{}: the user lacks {}: GRANT {} ON *.* (or ON `{schema}`.* for the table privileges) to it",
        wording::insufficient_privileges(schema),
        missing.join(", "),
        missing.join(", ")
    )))
}

/// Pure part of [`check_grants`].
pub fn missing_privileges(grants: &[String], schema: &str) -> Vec<String> {
    let mut global: BTreeSet<String> = BTreeSet::new();
    let mut on_schema: BTreeSet<String> = BTreeSet::new();
    for grant in grants {
        let upper = grant.to_ascii_uppercase();
        let Some(rest) = upper.strip_prefix("GRANT ") else {
            continue;
        };
        let Some(on) = rest.find(" ON ") else {
            continue;
        };
        let privileges: Vec<String> = rest[..on]
            .split(',')
            .map(|p| p.trim().to_string())
            .collect();
        let target = rest[on + 4..].split(" TO ").next().unwrap_or("").trim();
        let schema_target = format!("`{}`.*", schema.to_ascii_uppercase());
        if target == "*.*" {
            global.extend(privileges);
        } else if target == schema_target {
            on_schema.extend(privileges);
        }
    }
    let has = |set: &BTreeSet<String>, p: &str| set.contains(p) || set.contains("ALL PRIVILEGES");
    let mut missing = Vec::new();
    if !has(&global, "REPLICATION SLAVE") {
        missing.push("REPLICATION SLAVE".to_string());
    }
    if !["SUPER", "REPLICATION CLIENT", "BINLOG MONITOR"]
        .iter()
        .any(|p| has(&global, p))
    {
        missing.push("BINLOG MONITOR (REPLICATION CLIENT)".to_string());
    }
    for p in TABLE_PRIVILEGES {
        if !has(&global, p) && !has(&on_schema, p) {
            missing.push(p.to_string());
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::schema::{ColumnSchema, classify};

    fn table(cols: &[(&str, &str, Option<&str>)]) -> TableSchema {
        TableSchema {
            schema: "d".into(),
            name: "t".into(),
            columns: cols
                .iter()
                .map(|(name, ty, charset)| ColumnSchema {
                    name: name.to_string(),
                    data_type: ty.to_string(),
                    column_type: ty.to_string(),
                    kind: classify(ty, ty, None, None),
                    nullable: false,
                    charset: charset.map(str::to_string),
                    collation: None,
                    generated: false,
                })
                .collect(),
        }
    }

    fn key(name: &str, cols: &[&str], nullable: bool) -> UniqueKey {
        UniqueKey {
            name: name.into(),
            columns: cols.iter().map(|c| c.to_string()).collect(),
            has_nullable: nullable,
            prefixes: vec![None; cols.len()],
            has_expression: false,
        }
    }

    #[test]
    fn replace_is_safe_only_for_unique_keys_the_original_enforces() {
        let t = table(&[
            ("id", "int", None),
            ("s", "varchar", Some("utf8mb4")),
            ("b", "bigint", None),
        ]);
        let map: Vec<(String, String)> = ["id", "s", "b"]
            .iter()
            .map(|c| (c.to_string(), c.to_string()))
            .collect();
        let orig = [key("PRIMARY", &["id"], false), key("uk_s", &["s"], false)];
        // The same keys, or fewer: every collision is a stale value.
        assert!(ghost_unique_keys_enforced(&t, &orig, &t, &orig, &map));
        assert!(ghost_unique_keys_enforced(&t, &orig, &t, &orig[..1], &map));
        // A new unique key may hold real duplicates: REPLACE would delete rows.
        let added = [orig[0].clone(), orig[1].clone(), key("uk_b", &["b"], false)];
        assert!(!ghost_unique_keys_enforced(&t, &orig, &t, &added, &map));
        // A shorter prefix is a stricter key.
        let mut prefixed = orig.clone();
        prefixed[1].prefixes = vec![Some(3)];
        assert!(!ghost_unique_keys_enforced(&t, &orig, &t, &prefixed, &map));
        // A changed column type may make distinct values equal.
        let mut narrower = t.clone();
        narrower.columns[1].column_type = "varchar(4)".into();
        assert!(!ghost_unique_keys_enforced(
            &t, &orig, &narrower, &orig, &map
        ));
    }

    #[test]
    fn prefers_primary_then_non_nullable_then_integers() {
        let t = table(&[
            ("id", "int", None),
            ("s", "varchar", Some("utf8mb4")),
            ("b", "bigint", None),
        ]);
        let orig = [
            key("uk_s", &["s"], false),
            key("PRIMARY", &["id"], false),
            key("uk_b", &["b"], false),
        ];
        let ghost = orig.clone();
        assert_eq!(
            choose_shared_key(&t, &orig, &ghost, false).unwrap().name,
            "PRIMARY"
        );
        let no_pk = [key("uk_s", &["s"], false), key("uk_b", &["b"], false)];
        assert_eq!(
            choose_shared_key(&t, &no_pk, &no_pk, false).unwrap().name,
            "uk_b"
        );
    }

    #[test]
    fn shared_means_subset_of_a_ghost_key() {
        let t = table(&[("id", "int", None), ("i", "int", None)]);
        let orig = [key("PRIMARY", &["id"], false)];
        assert!(
            choose_shared_key(&t, &orig, &[key("PRIMARY", &["id", "i"], false)], false).is_ok()
        );
        let err =
            choose_shared_key(&t, &orig, &[key("PRIMARY", &["i"], false)], false).unwrap_err();
        assert!(
            err.to_string()
                .contains("no shared unique key can be found"),
            "{err}"
        );
        // Case matters, as in gh-ost: `modify ID int` leaves no shared key.
        assert!(choose_shared_key(&t, &orig, &[key("PRIMARY", &["ID"], false)], false).is_err());
    }

    #[test]
    fn refuses_float_keys_missing_keys_and_nullable_keys() {
        let t = table(&[("f", "float", None), ("n", "int", None)]);
        let float_key = [key("uk_f", &["f"], false)];
        assert!(choose_shared_key(&t, &float_key, &float_key, false).is_err());
        let err = choose_shared_key(&t, &[], &float_key, false).unwrap_err();
        assert!(
            err.to_string().contains("no PRIMARY nor UNIQUE key"),
            "{err}"
        );
        let nullable = [key("uk_n", &["n"], true)];
        let err = choose_shared_key(&t, &nullable, &nullable, false).unwrap_err();
        assert!(
            err.to_string().contains("--allow-nullable-unique-key"),
            "{err}"
        );
        assert!(choose_shared_key(&t, &nullable, &nullable, true).is_ok());
    }

    #[test]
    fn reads_grants() {
        let full = vec![
            "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, RELOAD, PROCESS, INDEX, ALTER, LOCK TABLES, \
             REPLICATION SLAVE, BINLOG MONITOR, TRIGGER ON *.* TO `ghost`@`127.0.0.1`"
                .to_string(),
        ];
        assert!(missing_privileges(&full, "test").is_empty());
        let all =
            vec!["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION".to_string()];
        assert!(missing_privileges(&all, "test").is_empty());
        let split = vec![
            "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `u`@`%`".to_string(),
            "GRANT ALL PRIVILEGES ON `test`.* TO `u`@`%`".to_string(),
        ];
        assert!(missing_privileges(&split, "test").is_empty());
        let weak = vec!["GRANT SELECT ON `test`.* TO `u`@`%`".to_string()];
        let missing = missing_privileges(&weak, "test");
        assert!(missing.contains(&"REPLICATION SLAVE".to_string()));
        assert!(missing.contains(&"ALTER".to_string()));
        assert!(!missing.contains(&"SELECT".to_string()));
    }
}
