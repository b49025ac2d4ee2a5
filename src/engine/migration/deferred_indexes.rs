//! Deferred secondary indexes: the ghost table is copied into without its plain secondary
//! indexes, which are built once, online, after the row copy, while the binary log keeps being
//! applied. Maintaining every secondary index row by row is most of a copy's cost (issue #15: one
//! `INSERT … SELECT` of a million rows took 10.6 s into a table with two secondary indexes, 4.7 s
//! without them, and adding both afterwards 1.8 s).
//!
//! Only plain `KEY`s wait. PRIMARY and UNIQUE keys stay (the copy and the apply rely on them, and
//! a unique key decides what a duplicate is); FULLTEXT, SPATIAL and VECTOR indexes stay (adding
//! them later is not online everywhere). The definitions are taken verbatim from the ghost's
//! `SHOW CREATE TABLE`, so prefixes, expressions, comments, `INVISIBLE`/`IGNORED` and index types
//! come back exactly as the ALTER made them.
//!
//! This module is pure: parsing and statements. The run drops the indexes after creating the
//! ghost table, records them in the changelog (so a resumed run still adds them), and adds them
//! before the checksum and the cut-over.

use serde::{Deserialize, Serialize};

use crate::engine::changelog::{VALUE_MAX, ascii_json};
use crate::sql::{qualified, quote_ident};

/// The changelog hint under which the deferred definitions are recorded.
pub const RECORD_HINT: &str = "deferred-indexes";

/// One index of the ghost table, as `SHOW CREATE TABLE` writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeferredIndex {
    pub name: String,
    /// The whole definition, e.g. ``KEY `ix_created` (`created`) COMMENT 'x'``.
    pub definition: String,
}

/// The plain secondary indexes in `create_table` (a `SHOW CREATE TABLE` text), in order.
pub fn deferrable(create_table: &str) -> Vec<DeferredIndex> {
    create_table
        .lines()
        .map(|line| line.trim().trim_end_matches(','))
        .filter(|line| line.starts_with("KEY `"))
        .filter_map(|definition| {
            let name = backquoted(&definition["KEY ".len()..])?;
            Some(DeferredIndex {
                name,
                definition: definition.to_string(),
            })
        })
        .collect()
}

/// The identifier at the start of `text` (`` `a``b` `` → ``a`b``).
fn backquoted(text: &str) -> Option<String> {
    let mut chars = text.strip_prefix('`')?.chars().peekable();
    let mut name = String::new();
    while let Some(ch) = chars.next() {
        if ch == '`' {
            if chars.peek() == Some(&'`') {
                chars.next();
                name.push('`');
            } else {
                return Some(name);
            }
        } else {
            name.push(ch);
        }
    }
    None
}

/// Drops `indexes` from the (still empty) ghost table.
pub fn drop_statement(database: &str, ghost: &str, indexes: &[DeferredIndex]) -> String {
    let drops: Vec<String> = indexes
        .iter()
        .map(|i| format!("DROP INDEX {}", quote_ident(&i.name)))
        .collect();
    format!(
        "ALTER TABLE {} {}",
        qualified(database, ghost),
        drops.join(", ")
    )
}

/// Adds `indexes` back in one online ALTER: writes to the ghost table go on while it builds.
pub fn add_statement(database: &str, ghost: &str, indexes: &[DeferredIndex]) -> String {
    let adds: Vec<String> = indexes
        .iter()
        .map(|i| format!("ADD {}", i.definition))
        .collect();
    format!(
        "ALTER TABLE {} {}, ALGORITHM=INPLACE, LOCK=NONE",
        qualified(database, ghost),
        adds.join(", ")
    )
}

/// The changelog value recording `indexes` (ASCII JSON); None when it would not fit, and the
/// indexes are then not deferred.
pub fn to_record(indexes: &[DeferredIndex]) -> Option<String> {
    let json = serde_json::to_string(indexes).ok()?;
    Some(ascii_json(&json)).filter(|record| record.len() <= VALUE_MAX)
}

/// The indexes of `wanted` that `create_table` (the ghost now) lacks: what is left to add,
/// also after a resumed run added some.
pub fn missing(wanted: &[DeferredIndex], create_table: &str) -> Vec<DeferredIndex> {
    let present: Vec<String> = deferrable(create_table)
        .into_iter()
        .map(|i| i.name)
        .collect();
    wanted
        .iter()
        .filter(|w| !present.contains(&w.name))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREATE: &str = "CREATE TABLE `_orders_gho` (
  `id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  `customer` int(11) NOT NULL,
  `note` varchar(200) DEFAULT NULL,
  `created` datetime(6) NOT NULL,
  `doc` text,
  PRIMARY KEY (`id`),
  UNIQUE KEY `uk_note` (`note`),
  KEY `ix_customer` (`customer`),
  KEY `ix_note_prefix` (`note`(10)) COMMENT 'prefix, comma, and ``quotes``',
  KEY `ix``odd` (`created`) /*!80000 INVISIBLE */,
  KEY `ix_expr` ((lower(`note`))),
  FULLTEXT KEY `ft_doc` (`doc`),
  SPATIAL KEY `sp` (`g`),
  VECTOR KEY `vk` (`v`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

    #[test]
    fn only_plain_keys_wait_verbatim() {
        let found = deferrable(CREATE);
        let names: Vec<&str> = found.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(
            names,
            ["ix_customer", "ix_note_prefix", "ix`odd", "ix_expr"]
        );
        assert_eq!(
            found[1].definition,
            "KEY `ix_note_prefix` (`note`(10)) COMMENT 'prefix, comma, and ``quotes``'"
        );
        assert_eq!(
            found[2].definition,
            "KEY `ix``odd` (`created`) /*!80000 INVISIBLE */"
        );
        assert!(
            deferrable("CREATE TABLE `t` (\n  `id` int NOT NULL,\n  PRIMARY KEY (`id`)\n)")
                .is_empty()
        );
    }

    #[test]
    fn statements_quote_names_and_stay_online() {
        let found = deferrable(CREATE);
        assert_eq!(
            drop_statement("shop", "_orders_gho", &found[..3]),
            "ALTER TABLE `shop`.`_orders_gho` DROP INDEX `ix_customer`, DROP INDEX \
             `ix_note_prefix`, DROP INDEX `ix``odd`"
        );
        assert_eq!(
            add_statement("shop", "_orders_gho", &found[..1]),
            "ALTER TABLE `shop`.`_orders_gho` ADD KEY `ix_customer` (`customer`), \
             ALGORITHM=INPLACE, LOCK=NONE"
        );
    }

    #[test]
    fn what_is_missing_after_a_partial_add() {
        let wanted = deferrable(CREATE);
        let now = "CREATE TABLE `_orders_gho` (\n  `id` bigint NOT NULL,\n  PRIMARY KEY (`id`),\n  KEY `ix_customer` (`customer`)\n)";
        let left: Vec<String> = missing(&wanted, now).into_iter().map(|i| i.name).collect();
        assert_eq!(left, ["ix_note_prefix", "ix`odd", "ix_expr"]);
        assert!(missing(&wanted, CREATE).is_empty());
    }

    #[test]
    fn records_round_trip_in_ascii_and_fit_or_are_refused() {
        let mut wanted = deferrable(CREATE);
        wanted[0].definition =
            "KEY `ix_kunde` (`customer`) COMMENT 'Kundennummer, größer 0 😀'".into();
        let record = to_record(&wanted).expect("fits");
        assert!(record.is_ascii(), "{record}");
        let back: Vec<DeferredIndex> = serde_json::from_str(&record).expect("parse");
        assert_eq!(back, wanted);
        let many: Vec<DeferredIndex> = (0..100)
            .map(|i| DeferredIndex {
                name: format!("ix_{i}"),
                definition: format!("KEY `ix_{i}` (`a_rather_long_column_name_{i}`)"),
            })
            .collect();
        assert_eq!(to_record(&many), None);
    }
}
