//! Table and column definitions read from `information_schema`: the facts value decoding and
//! statement building need (type, signedness, charset, octet length, generated or not).

use mysql_async::{Conn, prelude::Queryable};

use super::error::{EngineError, Result, SqlContext};
use crate::sql::qualified;

/// What the engine needs to know to turn a binlog value back into the identical stored value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnKind {
    /// Integer of `bytes` width (1, 2, 3, 4, 8).
    Integer {
        bytes: u8,
        unsigned: bool,
    },
    Decimal,
    Float,
    Double,
    Bit {
        bits: u16,
    },
    Date,
    DateTime {
        fsp: u8,
    },
    Timestamp {
        fsp: u8,
    },
    Time {
        fsp: u8,
    },
    Year,
    /// Character data (CHAR, VARCHAR, TEXT, MariaDB's JSON alias). Bytes are in the column charset.
    Text,
    /// Fixed-width binary: the server strips trailing zero bytes in the binlog; pad back to `len`.
    FixedBinary {
        len: u16,
    },
    /// VARBINARY / BLOB: bytes as they are.
    Binary,
    Enum,
    Set,
    /// MySQL's native JSON (binary JSONB in the binlog).
    Json,
    Geometry,
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnSchema {
    pub name: String,
    /// `DATA_TYPE`, lower case (`int`, `varchar`, `uuid`, ...).
    pub data_type: String,
    /// `COLUMN_TYPE` as the server shows it (`int(10) unsigned`, `enum('a','b')`, ...).
    pub column_type: String,
    pub kind: ColumnKind,
    pub nullable: bool,
    pub charset: Option<String>,
    pub collation: Option<String>,
    /// VIRTUAL or STORED generated column: never written by the engine.
    pub generated: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSchema {
    pub schema: String,
    pub name: String,
    pub columns: Vec<ColumnSchema>,
}

impl TableSchema {
    /// `` `schema`.`table` ``
    pub fn qualified_name(&self) -> String {
        qualified(&self.schema, &self.name)
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// Loads a table's columns in ordinal order; refuses what the engine cannot copy exactly.
    pub async fn load(conn: &mut Conn, schema: &str, table: &str) -> Result<Self> {
        type ColumnRow = (
            String,
            String,
            String,
            String,
            Option<String>,
            Option<String>,
            Option<u64>,
            Option<u64>,
            String,
        );
        let rows: Vec<ColumnRow> = conn
            .exec(
                "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, CHARACTER_SET_NAME, \
                 COLLATION_NAME, CHARACTER_OCTET_LENGTH, DATETIME_PRECISION, EXTRA \
                 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
                 ORDER BY ORDINAL_POSITION",
                (schema, table),
            )
            .await
            .sql_context(|| format!("reading columns of {}", qualified(schema, table)))?;
        if rows.is_empty() {
            return Err(EngineError::TableNotFound {
                schema: schema.to_string(),
                table: table.to_string(),
            });
        }
        let mut columns = Vec::with_capacity(rows.len());
        for (name, data_type, column_type, nullable, charset, collation, octets, fsp, extra) in rows
        {
            let data_type = data_type.to_ascii_lowercase();
            let column_type_lc = column_type.to_ascii_lowercase();
            if column_type_lc.contains("mariadb-5.3") {
                return Err(EngineError::UnsupportedTable {
                    table: qualified(schema, table),
                    reason: format!(
                        "column `{name}` uses the pre-10.0 temporal format ({column_type}), which the \
                         binary log cannot carry exactly; rebuild it first with \
                         `SET SESSION mysql56_temporal_format=ON; ALTER TABLE ... FORCE`"
                    ),
                });
            }
            let kind = classify(&data_type, &column_type_lc, octets, fsp);
            let extra_lc = extra.to_ascii_lowercase();
            columns.push(ColumnSchema {
                name,
                data_type,
                column_type,
                kind,
                nullable: nullable.eq_ignore_ascii_case("YES"),
                charset,
                collation,
                generated: extra_lc.contains("virtual")
                    || extra_lc.contains("stored")
                    || extra_lc.contains("persistent"),
            });
        }
        Ok(Self {
            schema: schema.to_string(),
            name: table.to_string(),
            columns,
        })
    }
}

/// Maps `DATA_TYPE`/`COLUMN_TYPE` to what decoding needs.
pub fn classify(
    data_type: &str,
    column_type: &str,
    octets: Option<u64>,
    fsp: Option<u64>,
) -> ColumnKind {
    let unsigned = column_type.contains("unsigned");
    let fsp = fsp.unwrap_or(0).min(6) as u8;
    match data_type {
        "tinyint" => ColumnKind::Integer { bytes: 1, unsigned },
        "smallint" => ColumnKind::Integer { bytes: 2, unsigned },
        "mediumint" => ColumnKind::Integer { bytes: 3, unsigned },
        "int" | "integer" => ColumnKind::Integer { bytes: 4, unsigned },
        "bigint" => ColumnKind::Integer { bytes: 8, unsigned },
        "decimal" | "numeric" => ColumnKind::Decimal,
        "float" => ColumnKind::Float,
        "double" | "real" => ColumnKind::Double,
        "bit" => ColumnKind::Bit {
            bits: parse_paren_number(column_type).unwrap_or(1),
        },
        "date" => ColumnKind::Date,
        "datetime" => ColumnKind::DateTime { fsp },
        "timestamp" => ColumnKind::Timestamp { fsp },
        "time" => ColumnKind::Time { fsp },
        "year" => ColumnKind::Year,
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => ColumnKind::Text,
        "binary" => ColumnKind::FixedBinary {
            len: octets
                .map(|o| o as u16)
                .or_else(|| parse_paren_number(column_type))
                .unwrap_or(1),
        },
        // MariaDB's fixed-width binary types, stripped of trailing zeros in the binlog like BINARY.
        "uuid" => ColumnKind::FixedBinary { len: 16 },
        "inet6" => ColumnKind::FixedBinary { len: 16 },
        "inet4" => ColumnKind::FixedBinary { len: 4 },
        "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => ColumnKind::Binary,
        "enum" => ColumnKind::Enum,
        "set" => ColumnKind::Set,
        "json" => ColumnKind::Json,
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
        | "multipolygon" | "geometrycollection" | "geomcollection" => ColumnKind::Geometry,
        _ => ColumnKind::Other,
    }
}

fn parse_paren_number(column_type: &str) -> Option<u16> {
    let start = column_type.find('(')? + 1;
    let end = column_type[start..].find(')')? + start;
    column_type[start..end].trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_types() {
        assert_eq!(
            classify("int", "int(10) unsigned", None, None),
            ColumnKind::Integer {
                bytes: 4,
                unsigned: true
            }
        );
        assert_eq!(
            classify("mediumint", "mediumint(9)", None, None),
            ColumnKind::Integer {
                bytes: 3,
                unsigned: false
            }
        );
        assert_eq!(
            classify("bit", "bit(13)", None, None),
            ColumnKind::Bit { bits: 13 }
        );
        assert_eq!(
            classify("binary", "binary(16)", Some(16), None),
            ColumnKind::FixedBinary { len: 16 }
        );
        assert_eq!(
            classify("uuid", "uuid", None, None),
            ColumnKind::FixedBinary { len: 16 }
        );
        assert_eq!(
            classify("datetime", "datetime(3)", None, Some(3)),
            ColumnKind::DateTime { fsp: 3 }
        );
        assert_eq!(
            classify("longtext", "longtext", Some(4294967295), None),
            ColumnKind::Text
        );
        assert_eq!(classify("point", "point", None, None), ColumnKind::Geometry);
    }
}
