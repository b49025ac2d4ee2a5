//! Statement shapes for applying row changes to the ghost table. Values are always `?`-bound;
//! each column carries its own placeholder expression (see `ColumnSchema::placeholder`).

use super::quote_ident;

/// A column to write or match: its name in the target table and the placeholder for its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnSlot {
    pub name: String,
    pub placeholder: String,
}

/// `INSERT IGNORE INTO t (a, b) VALUES (?, ?)`. A row the copier already wrote is kept (later
/// events bring it up to date); unlike REPLACE it never deletes a row that collides on another
/// unique key, and the collision shows as a warning (gh-ost PR #1633).
pub fn insert_ignore_into(table: &str, columns: &[ColumnSlot]) -> String {
    let names: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
    let values: Vec<&str> = columns.iter().map(|c| c.placeholder.as_str()).collect();
    format!(
        "INSERT IGNORE INTO {table} ({}) VALUES ({})",
        names.join(", "),
        values.join(", ")
    )
}

/// `REPLACE INTO t (a, b) VALUES (?, ?)`: the row image wins over whatever holds its key or a
/// value of another unique key. Used only when every unique key of the target is one the source
/// enforces too, so a collision can only be with a stale value a later change moves away.
pub fn replace_into(table: &str, columns: &[ColumnSlot]) -> String {
    let names: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
    let values: Vec<&str> = columns.iter().map(|c| c.placeholder.as_str()).collect();
    format!(
        "REPLACE INTO {table} ({}) VALUES ({})",
        names.join(", "),
        values.join(", ")
    )
}

/// `REPLACE INTO t (a, b) VALUES (?, ?), (?, ?), …` with `rows` row groups: one round trip for a
/// batch's final row images (see `engine::applier::batch`).
pub fn replace_rows_into(table: &str, columns: &[ColumnSlot], rows: usize) -> String {
    let names: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
    let values: Vec<&str> = columns.iter().map(|c| c.placeholder.as_str()).collect();
    let group = format!("({})", values.join(", "));
    format!(
        "REPLACE INTO {table} ({}) VALUES {}",
        names.join(", "),
        vec![group; rows.max(1)].join(", ")
    )
}

/// `DELETE FROM t WHERE (k <=> ?) OR (k <=> ?) …` for `rows` keys (null-safe like
/// [`delete_by_key`]).
pub fn delete_by_keys(table: &str, key: &[ColumnSlot], rows: usize) -> String {
    let one = format!("({})", key_condition(key));
    format!(
        "DELETE FROM {table} WHERE {}",
        vec![one; rows.max(1)].join(" OR ")
    )
}

/// `SELECT COUNT(*) FROM t WHERE k <=> ? [AND a <=> ? ...]`: whether a row with this key (and,
/// given `columns`, exactly these values) is there.
pub fn count_matching(table: &str, key: &[ColumnSlot], columns: &[ColumnSlot]) -> String {
    let all: Vec<ColumnSlot> = key.iter().chain(columns).cloned().collect();
    format!("SELECT COUNT(*) FROM {table} WHERE {}", key_condition(&all))
}

/// `DELETE FROM t WHERE a <=> ? AND b <=> ?`
pub fn delete_by_key(table: &str, key: &[ColumnSlot]) -> String {
    format!("DELETE FROM {table} WHERE {}", key_condition(key))
}

/// `UPDATE t SET a = ?, b = ? WHERE k <=> ?`
pub fn update_by_key(table: &str, set: &[ColumnSlot], key: &[ColumnSlot]) -> String {
    let assignments: Vec<String> = set
        .iter()
        .map(|c| format!("{} = {}", quote_ident(&c.name), c.placeholder))
        .collect();
    format!(
        "UPDATE {table} SET {} WHERE {}",
        assignments.join(", "),
        key_condition(key)
    )
}

/// Null-safe equality on every key column, so a nullable unique key still matches its row.
fn key_condition(key: &[ColumnSlot]) -> String {
    key.iter()
        .map(|c| format!("{} <=> {}", quote_ident(&c.name), c.placeholder))
        .collect::<Vec<_>>()
        .join(" AND ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(name: &str, placeholder: &str) -> ColumnSlot {
        ColumnSlot {
            name: name.into(),
            placeholder: placeholder.into(),
        }
    }

    #[test]
    fn builds_the_three_shapes() {
        let cols = [slot("id", "?"), slot("na`me", "CONVERT(? USING latin1)")];
        let key = [slot("id", "?")];
        assert_eq!(
            insert_ignore_into("`d`.`t`", &cols),
            "INSERT IGNORE INTO `d`.`t` (`id`, `na``me`) VALUES (?, CONVERT(? USING latin1))"
        );
        assert_eq!(
            delete_by_key("`d`.`t`", &key),
            "DELETE FROM `d`.`t` WHERE `id` <=> ?"
        );
        assert_eq!(
            update_by_key("`d`.`t`", &cols, &[slot("a", "?"), slot("b", "?")]),
            "UPDATE `d`.`t` SET `id` = ?, `na``me` = CONVERT(? USING latin1) WHERE `a` <=> ? AND `b` <=> ?"
        );
        assert_eq!(
            replace_into("`d`.`t`", &cols),
            "REPLACE INTO `d`.`t` (`id`, `na``me`) VALUES (?, CONVERT(? USING latin1))"
        );
        assert_eq!(
            count_matching("`d`.`t`", &key, &cols[1..]),
            "SELECT COUNT(*) FROM `d`.`t` WHERE `id` <=> ? AND `na``me` <=> CONVERT(? USING latin1)"
        );
    }

    #[test]
    fn builds_the_multi_row_shapes() {
        let cols = [slot("id", "?"), slot("b", "CONVERT(? USING latin1)")];
        assert_eq!(
            replace_rows_into("`d`.`t`", &cols, 2),
            "REPLACE INTO `d`.`t` (`id`, `b`) VALUES (?, CONVERT(? USING latin1)), (?, CONVERT(? USING latin1))"
        );
        assert_eq!(
            delete_by_keys("`d`.`t`", &[slot("a", "?"), slot("b", "?")], 2),
            "DELETE FROM `d`.`t` WHERE (`a` <=> ? AND `b` <=> ?) OR (`a` <=> ? AND `b` <=> ?)"
        );
        assert_eq!(
            replace_rows_into("`d`.`t`", &cols[..1], 1),
            "REPLACE INTO `d`.`t` (`id`) VALUES (?)"
        );
    }
}
