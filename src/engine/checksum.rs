//! The checksum gate before cut-over: both tables are compared chunk by chunk along the copy key,
//! inside one consistent snapshot taken while the original is briefly read-locked and every change
//! before the lock has been applied to the ghost table (the orchestrator takes that point). A
//! chunk that differs is copied again (its ghost rows deleted and re-read from the original in
//! one transaction, the row copy's own operation) and checked again at a new consistent point.
//!
//! Columns are compared as their bytes when their definition is unchanged, and across the
//! changes a copy keeps values through: integer widths and signedness, ENUM members (copied by
//! label), and text character sets and collations (compared as utf8mb4 characters). Any other
//! type change is converted by the server on copy, so that column is listed as not compared
//! (the row count and every other column still are).

use mysql_async::{Conn, Row, Value, prelude::Queryable};

use super::conn::in_transaction;
use super::copier::{CopyKey, KeyTuple, tuple_comparison};
use super::error::{EngineError, Result, SqlContext};
use super::schema::{ColumnSchema, TableSchema};
use crate::sql::{qualified, quote_ident, quoted_list};

/// A key range of the checksum walk. `None` bounds are open: the first chunk has no lower bound
/// and the last no upper bound, so rows the ghost table has beyond the original's ends are seen.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyRange {
    /// Exclusive lower bound.
    pub after: Option<KeyTuple>,
    /// Inclusive upper bound.
    pub through: Option<KeyTuple>,
}

impl KeyRange {
    pub const ALL: KeyRange = KeyRange {
        after: None,
        through: None,
    };
}

/// Row count and an order-independent digest of one side of a chunk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digest {
    pub rows: u64,
    /// The first 64 bits of each row's SHA-256, XORed: `MD5()` and `SHA1()` are no longer in
    /// MySQL 9.6+'s core, SHA2() is on every server. (A CRC32 beside it doubled the cost, as
    /// building each row's text is most of it, for 32 bits the SHA-256 part already gives.)
    pub sha: u64,
}

/// One side of the comparison: a table, its names for the key and the compared columns.
#[derive(Clone, Debug)]
struct Side {
    table: String,
    key: Vec<String>,
    compared: Vec<String>,
    copied: Vec<String>,
}

/// How both tables are compared: which columns, along which key.
#[derive(Clone, Debug)]
pub struct ChecksumPlan {
    source: Side,
    ghost: Side,
    /// Original columns copied but not compared, with their types.
    pub not_compared: Vec<String>,
    /// Per compared column, whether its text carries an ISNULL flag (see `row_text`).
    flagged: Vec<bool>,
    share_lock: &'static str,
}

impl ChecksumPlan {
    /// `column_map` is the copy's (original, ghost) column pairs; `key` the copy key (original
    /// column names).
    pub fn new(
        original: &TableSchema,
        ghost: &TableSchema,
        key: &CopyKey,
        column_map: &[(String, String)],
        share_lock: &'static str,
    ) -> Self {
        let ghost_name_of = |source: &str| {
            column_map
                .iter()
                .find(|(s, _)| s.eq_ignore_ascii_case(source))
                .map_or_else(|| source.to_string(), |(_, g)| g.clone())
        };
        let mut compared = Vec::new();
        let mut flagged = Vec::new();
        let mut not_compared = Vec::new();
        for (source_name, ghost_name) in column_map {
            let (Some(o), Some(g)) = (
                original.column_index(source_name),
                ghost.column_index(ghost_name),
            ) else {
                continue;
            };
            let (o, g) = (&original.columns[o], &ghost.columns[g]);
            match comparison(o, g) {
                Some(form) => {
                    compared.push((form(source_name), form(ghost_name)));
                    flagged.push(!(plain_text(o) && plain_text(g)));
                }
                None => not_compared.push(format!(
                    "`{source_name}` ({} → {})",
                    describe(o),
                    describe(g)
                )),
            }
        }
        Self {
            source: Side {
                table: qualified(&original.schema, &original.name),
                key: key.columns.clone(),
                compared: compared.iter().map(|(s, _)| s.clone()).collect(),
                copied: column_map.iter().map(|(s, _)| s.clone()).collect(),
            },
            ghost: Side {
                table: qualified(&ghost.schema, &ghost.name),
                key: key.columns.iter().map(|c| ghost_name_of(c)).collect(),
                compared: compared.iter().map(|(_, g)| g.clone()).collect(),
                copied: column_map.iter().map(|(_, g)| g.clone()).collect(),
            },
            not_compared,
            flagged,
            share_lock,
        }
    }

    /// Both digests of `range`, the original's read on `source` and the ghost's on `ghost` at
    /// once (two snapshots of the same point: each side costs the server a core).
    pub async fn compare(
        &self,
        source: &mut Conn,
        ghost: &mut Conn,
        range: &KeyRange,
    ) -> Result<(Digest, Digest)> {
        tokio::try_join!(
            self.digest(source, &self.source, range),
            self.digest(ghost, &self.ghost, range)
        )
    }

    /// Both digests of `range` on one snapshot, one after the other: the checksum during the
    /// copy leaves the server's other core to the copy.
    pub async fn compare_on_one(
        &self,
        conn: &mut Conn,
        range: &KeyRange,
    ) -> Result<(Digest, Digest)> {
        let source = self.digest(conn, &self.source, range).await?;
        let ghost = self.digest(conn, &self.ghost, range).await?;
        Ok((source, ghost))
    }

    /// Both digests of the rows with these keys (a single-column key), at once.
    pub async fn compare_keys(
        &self,
        source: &mut Conn,
        ghost: &mut Conn,
        keys: &[Value],
    ) -> Result<(Digest, Digest)> {
        tokio::try_join!(
            self.digest_where(source, &self.source, keys_condition(&self.source, keys)),
            self.digest_where(ghost, &self.ghost, keys_condition(&self.ghost, keys))
        )
    }

    async fn digest(&self, conn: &mut Conn, side: &Side, range: &KeyRange) -> Result<Digest> {
        self.digest_where(conn, side, self.range_condition(side, range))
            .await
    }

    async fn digest_where(
        &self,
        conn: &mut Conn,
        side: &Side,
        (condition, params): (String, Vec<Value>),
    ) -> Result<Digest> {
        let row_text = row_text(&side.compared, &self.flagged);
        let sql = format!(
            "SELECT COUNT(*), \
             COALESCE(BIT_XOR(CAST(CONV(LEFT(SHA2({row_text}, 256), 16), 16, 10) AS UNSIGNED)), 0) \
             FROM {} WHERE {condition}",
            side.table
        );
        let row: Option<Row> = conn
            .exec_first(sql, params)
            .await
            .sql_context(|| format!("checksumming a chunk of {}", side.table))?;
        let (rows, sha): (u64, u64) = match row {
            Some(row) => mysql_async::from_row_opt(row).map_err(|e| {
                EngineError::Stream(format!("unexpected checksum row of {}: {e}", side.table))
            })?,
            None => (0, 0),
        };
        Ok(Digest { rows, sha })
    }

    /// Copies `range` again: its ghost rows are deleted and re-read from the original under a
    /// shared lock, in one transaction. Returns the rows copied.
    pub async fn recopy(&self, conn: &mut Conn, range: &KeyRange) -> Result<u64> {
        let (ghost_condition, ghost_params) = self.range_condition(&self.ghost, range);
        let (source_condition, source_params) = self.range_condition(&self.source, range);
        let delete = format!("DELETE FROM {} WHERE {ghost_condition}", self.ghost.table);
        let insert = format!(
            "INSERT IGNORE INTO {} ({}) SELECT {} FROM {} WHERE {source_condition} {}",
            self.ghost.table,
            quoted_list(&self.ghost.copied),
            quoted_list(&self.source.copied),
            self.source.table,
            self.share_lock
        );
        in_transaction(conn, "a re-copy transaction", async |conn: &mut Conn| {
            conn.exec_drop(&delete, ghost_params)
                .await
                .sql_context(|| format!("deleting a mismatched chunk of {}", self.ghost.table))?;
            conn.exec_drop(&insert, source_params)
                .await
                .sql_context(|| format!("copying a mismatched chunk of {}", self.source.table))?;
            Ok(conn.affected_rows())
        })
        .await
    }

    /// `WHERE` text and parameters for `range` on one side's key columns. ENUM key columns are
    /// compared with their member index, as the copier's bounds hold them.
    fn range_condition(&self, side: &Side, range: &KeyRange) -> (String, Vec<Value>) {
        let mut terms = Vec::new();
        let mut params = Vec::new();
        if let Some(after) = &range.after {
            let (cond, order) = tuple_comparison(&side.key, true, false);
            terms.push(cond);
            params.extend(order.iter().map(|&i| after[i].clone()));
        }
        if let Some(through) = &range.through {
            let (cond, order) = tuple_comparison(&side.key, false, true);
            terms.push(cond);
            params.extend(order.iter().map(|&i| through[i].clone()));
        }
        if terms.is_empty() {
            terms.push("TRUE".to_string());
        }
        (terms.join(" AND "), params)
    }
}

/// `key IN (?, …)` on a side's single key column, with `keys` as its parameters.
fn keys_condition(side: &Side, keys: &[Value]) -> (String, Vec<Value>) {
    let [column] = side.key.as_slice() else {
        // Keys are listed for single-column keys only; anything else compares everything
        // rather than pass unseen.
        return ("TRUE".into(), Vec::new());
    };
    if keys.is_empty() {
        return ("FALSE".into(), Vec::new());
    }
    let column = quote_ident(column);
    let marks = vec!["?"; keys.len()].join(", ");
    (format!("{column} IN ({marks})"), keys.to_vec())
}

/// One text per row, NULL distinct from every value: each compared expression as its bytes,
/// with an ISNULL flag where `flagged`. An empty list still counts rows. (The flag beside a
/// value also keeps its bytes from passing for its neighbour's across a `#`; a column that is
/// never NULL and whose text holds no `#`, a number or a time, needs none, which saves a fifth
/// of the checksum's cost on a table of such columns.)
fn row_text(expressions: &[String], flagged: &[bool]) -> String {
    if expressions.is_empty() {
        return "''".to_string();
    }
    let parts: Vec<String> = expressions
        .iter()
        .zip(flagged.iter().chain(std::iter::repeat(&true)))
        .map(|(e, &flag)| {
            if flag {
                format!("ISNULL({e}), CAST({e} AS BINARY)")
            } else {
                format!("CAST({e} AS BINARY)")
            }
        })
        .collect();
    format!("CONCAT_WS('#', {})", parts.join(", "))
}

/// A column never NULL whose text is digits, signs, points, `e`, `-` and `:` only: numbers and
/// times (BIT is raw bytes, and excluded).
fn plain_text(c: &ColumnSchema) -> bool {
    !c.nullable
        && matches!(
            c.data_type.to_ascii_lowercase().as_str(),
            "tinyint"
                | "smallint"
                | "mediumint"
                | "int"
                | "bigint"
                | "decimal"
                | "float"
                | "double"
                | "date"
                | "datetime"
                | "timestamp"
                | "time"
                | "year"
        )
}

/// How a column is compared, as a function from its name to an expression; None when the copy
/// may legitimately change its value (a type change the server converts).
fn comparison(o: &ColumnSchema, g: &ColumnSchema) -> Option<fn(&str) -> String> {
    let plain: fn(&str) -> String = quote_ident;
    let as_text: fn(&str) -> String = |c| format!("CONVERT({} USING utf8mb4)", quote_ident(c));
    if same_meaning(&o.column_type, &g.column_type)
        && o.charset == g.charset
        && o.collation == g.collation
    {
        return Some(plain);
    }
    let family = |c: &ColumnSchema| match c.data_type.as_str() {
        "tinyint" | "smallint" | "mediumint" | "int" | "bigint" => "integer",
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => "text",
        // Copied by label: the same label, or the copy fails.
        "enum" => "enum",
        _ => "",
    };
    match (family(o), family(g)) {
        ("integer", "integer") | ("enum", "enum") => Some(plain),
        // A character set or collation change keeps the characters: compare them in one
        // character set.
        ("text", "text") => Some(as_text),
        _ => None,
    }
}

fn describe(c: &ColumnSchema) -> String {
    match &c.charset {
        Some(charset) => format!("{} {charset}", c.column_type),
        None => c.column_type.clone(),
    }
}

/// Same definition: `int(11)` and `int` are one type (display widths differ between servers).
fn same_meaning(a: &str, b: &str) -> bool {
    fn without_int_width(t: &str) -> String {
        let t = t.to_ascii_lowercase();
        for int in ["tinyint", "smallint", "mediumint", "bigint", "int"] {
            if let Some(rest) = t.strip_prefix(int) {
                let tail = rest
                    .strip_prefix('(')
                    .and_then(|r| r.find(')').map(|close| &r[close + 1..]));
                return format!("{int}{}", tail.unwrap_or(rest));
            }
        }
        t
    }
    without_int_width(a) == without_int_width(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::schema::ColumnKind;

    fn column(name: &str, column_type: &str, charset: Option<&str>) -> ColumnSchema {
        ColumnSchema {
            name: name.to_string(),
            data_type: column_type
                .split('(')
                .next()
                .unwrap_or_default()
                .to_string(),
            column_type: column_type.to_string(),
            kind: ColumnKind::Other,
            nullable: true,
            charset: charset.map(str::to_string),
            collation: charset.map(|c| format!("{c}_general_ci")),
            generated: false,
        }
    }

    fn table(name: &str, columns: Vec<ColumnSchema>) -> TableSchema {
        TableSchema {
            schema: "shop".to_string(),
            name: name.to_string(),
            columns,
        }
    }

    fn id_key() -> CopyKey {
        CopyKey {
            name: "PRIMARY".to_string(),
            columns: vec!["id".to_string()],
            enum_columns: vec![false],
        }
    }

    fn plan() -> ChecksumPlan {
        let original = table(
            "users",
            vec![
                column("id", "int(11)", None),
                column("name", "varchar(20)", Some("utf8mb4")),
                column("age", "int(11)", None),
                column("old name", "text", Some("latin1")),
                column("born", "date", None),
                column("seen", "datetime", None),
            ],
        );
        let ghost = table(
            "_users_gho",
            vec![
                column("id", "int", None),
                column("name", "varchar(20)", Some("utf8mb4")),
                column("age", "bigint(20)", None),
                column("new name", "mediumtext", Some("utf8mb4")),
                column("born", "date", None),
                column("seen", "timestamp", None),
            ],
        );
        let key = id_key();
        let map = vec![
            ("id".to_string(), "id".to_string()),
            ("name".to_string(), "name".to_string()),
            ("age".to_string(), "age".to_string()),
            ("old name".to_string(), "new name".to_string()),
            ("born".to_string(), "born".to_string()),
            ("seen".to_string(), "seen".to_string()),
        ];
        ChecksumPlan::new(&original, &ghost, &key, &map, "LOCK IN SHARE MODE")
    }

    #[test]
    fn compares_only_columns_that_mean_the_same() {
        let plan = plan();
        assert_eq!(
            plan.source.compared,
            [
                "`id`",
                "`name`",
                "`age`",
                "CONVERT(`old name` USING utf8mb4)",
                "`born`"
            ]
        );
        assert_eq!(
            plan.ghost.compared,
            [
                "`id`",
                "`name`",
                "`age`",
                "CONVERT(`new name` USING utf8mb4)",
                "`born`"
            ]
        );
        assert_eq!(plan.not_compared, ["`seen` (datetime → timestamp)"]);
    }

    #[test]
    fn ranges_are_open_at_the_ends() {
        let plan = plan();
        let (all, params) = plan.range_condition(&plan.source, &KeyRange::ALL);
        assert_eq!(all, "TRUE");
        assert!(params.is_empty());
        let range = KeyRange {
            after: Some(vec![Value::Int(10)]),
            through: Some(vec![Value::Int(20)]),
        };
        let (text, params) = plan.range_condition(&plan.ghost, &range);
        assert_eq!(text, "((`id` > ?)) AND ((`id` < ?) OR (`id` = ?))");
        assert_eq!(params, [Value::Int(10), Value::Int(20), Value::Int(20)]);
    }

    #[test]
    fn null_differs_from_every_value() {
        assert_eq!(
            row_text(&[quote_ident("a"), quote_ident("b`c")], &[true, true]),
            "CONCAT_WS('#', ISNULL(`a`), CAST(`a` AS BINARY), ISNULL(`b``c`), CAST(`b``c` AS BINARY))"
        );
        assert_eq!(
            row_text(&[quote_ident("n"), quote_ident("s")], &[false, true]),
            "CONCAT_WS('#', CAST(`n` AS BINARY), ISNULL(`s`), CAST(`s` AS BINARY))"
        );
        assert_eq!(row_text(&[], &[]), "''");
    }

    #[test]
    fn only_never_null_numbers_and_times_go_without_a_flag() {
        let mut id = column("id", "bigint", None);
        id.nullable = false;
        let mut name = column("name", "varchar(20)", Some("utf8mb4"));
        name.nullable = false;
        let mut flags = column("flags", "bit(8)", None);
        flags.nullable = false;
        let score = column("score", "int", None);
        assert!(plain_text(&id));
        assert!(!plain_text(&name), "text may hold the separator");
        assert!(!plain_text(&flags), "BIT is raw bytes");
        assert!(!plain_text(&score), "nullable");
        // A flag on one side is a flag on both: a column NOT NULL in the ghost table only is
        // flagged, so both sides' texts keep one shape.
        let original = table("t", vec![id.clone(), score.clone()]);
        let mut ghost_score = score.clone();
        ghost_score.nullable = false;
        let ghost = table("_t_gho", vec![id, ghost_score]);
        let key = id_key();
        let map = vec![
            ("id".to_string(), "id".to_string()),
            ("score".to_string(), "score".to_string()),
        ];
        let plan = ChecksumPlan::new(&original, &ghost, &key, &map, "");
        assert_eq!(plan.flagged, [false, true]);
    }

    #[test]
    fn integer_display_widths_do_not_matter() {
        assert!(same_meaning("int(11)", "int"));
        assert!(same_meaning("bigint(20) unsigned", "bigint unsigned"));
        assert!(!same_meaning("int(11)", "int unsigned"));
        assert!(!same_meaning("varchar(10)", "varchar(20)"));
        assert!(same_meaning("decimal(10,2)", "DECIMAL(10,2)"));
    }
}
