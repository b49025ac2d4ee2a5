//! Binlog value -> bound SQL parameter that writes back the identical stored value.
//!
//! mysql_common decodes row images without the table's schema, so several values come out wrong
//! or ambiguous (see reference/mysql-binlog-rust.md §4). Each fix here is driven by the column's
//! definition from `information_schema`, never by guessing from the value.
//!
//! The parameters are meant for a session with `SET NAMES binary` (text travels as raw bytes and is
//! reinterpreted by [`ColumnSchema::placeholder`]) and `time_zone = '+00:00'` (TIMESTAMP values
//! are written as UTC wall-clock time).

use mysql_async::Value;
use mysql_async::binlog::value::BinlogValue;

use super::schema::{ColumnKind, ColumnSchema};

/// Why a binlog value could not be turned into a parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

/// Converts one binlog value of `column` into the parameter that reproduces it exactly.
pub fn to_param(column: &ColumnSchema, value: BinlogValue<'_>) -> Result<Value, DecodeError> {
    let value = match value {
        BinlogValue::Value(v) => v,
        BinlogValue::Jsonb(jsonb) => {
            let dom = jsonb
                .parse()
                .map_err(|e| DecodeError(format!("invalid binary JSON: {e}")))?;
            // Typed scalars inside (DECIMAL, DATE, TIME, DATETIME) keep their JSON types.
            return super::json_value::to_param(dom).map_err(DecodeError);
        }
        BinlogValue::JsonDiff(_) => {
            return Err(DecodeError(
                "partial JSON updates cannot be replayed; set binlog_row_value_options='' on the server"
                    .into(),
            ));
        }
    };
    if value == Value::NULL {
        return Ok(Value::NULL);
    }
    match column.kind {
        ColumnKind::Integer { bytes, unsigned } => integer(value, bytes, unsigned),
        ColumnKind::Decimal => bytes_as_is(value, "DECIMAL"),
        ColumnKind::Float => match value {
            Value::Float(f) => Ok(Value::Float(f)),
            Value::Double(d) => Ok(Value::Float(d as f32)),
            other => unexpected("FLOAT", &other),
        },
        ColumnKind::Double => match value {
            Value::Double(d) => Ok(Value::Double(d)),
            Value::Float(f) => Ok(Value::Double(f as f64)),
            other => unexpected("DOUBLE", &other),
        },
        ColumnKind::Bit { .. } => match value {
            Value::Bytes(b) if b.len() <= 8 => Ok(Value::UInt(
                b.iter().fold(0u64, |acc, byte| (acc << 8) | *byte as u64),
            )),
            other => unexpected("BIT", &other),
        },
        ColumnKind::Date => match value {
            Value::Date(y, m, d, ..) => Ok(text(format!("{y:04}-{m:02}-{d:02}"))),
            other => unexpected("DATE", &other),
        },
        ColumnKind::DateTime { .. } => match value {
            Value::Date(y, mo, d, h, mi, s, us) => {
                Ok(text(datetime_string(y, mo, d, h, mi, s, us)))
            }
            other => unexpected("DATETIME", &other),
        },
        ColumnKind::Timestamp { .. } => timestamp(value),
        ColumnKind::Time { .. } => match value {
            Value::Time(neg, days, h, m, s, us) => {
                let hours = days as u64 * 24 + h as u64;
                let sign = if neg { "-" } else { "" };
                let frac = if us == 0 {
                    String::new()
                } else {
                    format!(".{us:06}")
                };
                Ok(text(format!("{sign}{hours:02}:{m:02}:{s:02}{frac}")))
            }
            other => unexpected("TIME", &other),
        },
        ColumnKind::Year => match value {
            // The raw byte 0 (YEAR 0000) decodes as "1900"; 1900 is outside YEAR's range otherwise.
            Value::Bytes(b) if b == b"1900" => Ok(Value::UInt(0)),
            Value::Bytes(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .map(Value::UInt)
                .ok_or_else(|| DecodeError("YEAR is not a number".into())),
            Value::Int(y) => Ok(Value::UInt(y as u64)),
            Value::UInt(y) => Ok(Value::UInt(y)),
            other => unexpected("YEAR", &other),
        },
        ColumnKind::Text | ColumnKind::Binary | ColumnKind::Geometry | ColumnKind::Json => {
            bytes_as_is(value, &column.data_type)
        }
        ColumnKind::FixedBinary { len } => match value {
            Value::Bytes(mut b) => {
                let len = len as usize;
                if b.len() > len {
                    return Err(DecodeError(format!(
                        "{} bytes for a {len}-byte column",
                        b.len()
                    )));
                }
                b.resize(len, 0);
                Ok(Value::Bytes(b))
            }
            other => unexpected(&column.data_type, &other),
        },
        // ENUM arrives as its 1-based index and SET as its bitmask; both are written back as
        // numbers, which the server maps to the same members.
        ColumnKind::Enum => match value {
            Value::Int(i) => Ok(Value::UInt(i as u64)),
            Value::UInt(i) => Ok(Value::UInt(i)),
            other => unexpected("ENUM", &other),
        },
        ColumnKind::Set => match value {
            Value::Bytes(b) if b.len() <= 8 => Ok(Value::UInt(
                b.iter()
                    .rev()
                    .fold(0u64, |acc, byte| (acc << 8) | *byte as u64),
            )),
            Value::Int(i) => Ok(Value::UInt(i as u64)),
            other => unexpected("SET", &other),
        },
        ColumnKind::Other => Ok(value),
    }
}

fn integer(value: Value, bytes: u8, unsigned: bool) -> Result<Value, DecodeError> {
    let raw = match value {
        Value::Int(v) => v,
        Value::UInt(v) => v as i64,
        other => return unexpected("integer", &other),
    };
    if unsigned {
        // Without binlog_row_metadata=FULL the library reads every integer as signed.
        let v = match bytes {
            1 => raw as u8 as u64,
            2 => raw as u16 as u64,
            3 => (raw as u64) & 0xFF_FFFF,
            4 => raw as u32 as u64,
            _ => raw as u64,
        };
        Ok(Value::UInt(v))
    } else {
        let v = match bytes {
            // mysql_common does not sign-extend 24-bit integers.
            3 if raw >= 0x80_0000 => raw - 0x100_0000,
            _ => raw,
        };
        Ok(Value::Int(v))
    }
}

fn timestamp(value: Value) -> Result<Value, DecodeError> {
    let (secs, micros) = match value {
        // TIMESTAMP2: "secs" or "secs.micros" since the epoch, UTC.
        Value::Bytes(b) => {
            let s =
                std::str::from_utf8(&b).map_err(|_| DecodeError("TIMESTAMP is not text".into()))?;
            let (secs, frac) = s.split_once('.').unwrap_or((s, "0"));
            let secs = secs
                .parse::<i64>()
                .map_err(|_| DecodeError(format!("TIMESTAMP {s:?} is not epoch seconds")))?;
            let micros = format!("{frac:0<6}")[..6]
                .parse::<u32>()
                .map_err(|_| DecodeError(format!("TIMESTAMP {s:?} has a bad fraction")))?;
            (secs, micros)
        }
        // Old-format TIMESTAMP: whole epoch seconds.
        Value::Int(secs) => (secs, 0),
        Value::UInt(secs) => (secs as i64, 0),
        other => return unexpected("TIMESTAMP", &other),
    };
    if secs == 0 && micros == 0 {
        // Epoch 0 is how the zero timestamp is stored; 1970-01-01 00:00:00 UTC is not valid.
        return Ok(text("0000-00-00 00:00:00".into()));
    }
    let utc = chrono::DateTime::from_timestamp(secs, micros * 1000)
        .ok_or_else(|| DecodeError(format!("TIMESTAMP epoch {secs} is out of range")))?;
    let frac = if micros == 0 {
        String::new()
    } else {
        format!(".{micros:06}")
    };
    Ok(text(format!("{}{frac}", utc.format("%Y-%m-%d %H:%M:%S"))))
}

fn datetime_string(y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8, us: u32) -> String {
    let frac = if us == 0 {
        String::new()
    } else {
        format!(".{us:06}")
    };
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}{frac}")
}

fn bytes_as_is(value: Value, what: &str) -> Result<Value, DecodeError> {
    match value {
        Value::Bytes(b) => Ok(Value::Bytes(b)),
        other => unexpected(what, &other),
    }
}

fn text(s: String) -> Value {
    Value::Bytes(s.into_bytes())
}

fn unexpected(what: &str, value: &Value) -> Result<Value, DecodeError> {
    Err(DecodeError(format!(
        "unexpected binlog value {value:?} for a {what} column"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(kind: ColumnKind) -> ColumnSchema {
        ColumnSchema {
            name: "c".into(),
            data_type: "x".into(),
            column_type: "x".into(),
            kind,
            nullable: true,
            charset: None,
            collation: None,
            generated: false,
        }
    }

    fn conv(kind: ColumnKind, v: Value) -> Value {
        to_param(&col(kind), BinlogValue::Value(v)).unwrap()
    }

    #[test]
    fn unsigned_integers_are_reinterpreted_by_width() {
        let u = |bytes| ColumnKind::Integer {
            bytes,
            unsigned: true,
        };
        assert_eq!(conv(u(1), Value::Int(-1)), Value::UInt(255));
        assert_eq!(conv(u(2), Value::Int(-1)), Value::UInt(65535));
        assert_eq!(conv(u(3), Value::Int(16777215)), Value::UInt(16777215));
        assert_eq!(conv(u(4), Value::Int(-1)), Value::UInt(4294967295));
        assert_eq!(conv(u(8), Value::Int(-1)), Value::UInt(u64::MAX));
        assert_eq!(conv(u(8), Value::UInt(u64::MAX)), Value::UInt(u64::MAX));
    }

    #[test]
    fn signed_mediumint_is_sign_extended() {
        let s = ColumnKind::Integer {
            bytes: 3,
            unsigned: false,
        };
        assert_eq!(conv(s, Value::Int(16777215)), Value::Int(-1));
        assert_eq!(conv(s, Value::Int(8388608)), Value::Int(-8388608));
        assert_eq!(conv(s, Value::Int(8388607)), Value::Int(8388607));
        // Correct input (a fixed library) stays correct.
        assert_eq!(conv(s, Value::Int(-5)), Value::Int(-5));
    }

    #[test]
    fn fixed_binary_is_padded_back() {
        let k = ColumnKind::FixedBinary { len: 4 };
        assert_eq!(
            conv(k, Value::Bytes(vec![1, 2])),
            Value::Bytes(vec![1, 2, 0, 0])
        );
        assert_eq!(conv(k, Value::Bytes(vec![])), Value::Bytes(vec![0; 4]));
        assert!(to_param(&col(k), BinlogValue::Value(Value::Bytes(vec![0; 5]))).is_err());
    }

    #[test]
    fn year_zero_and_others() {
        assert_eq!(
            conv(ColumnKind::Year, Value::Bytes(b"1900".to_vec())),
            Value::UInt(0)
        );
        assert_eq!(
            conv(ColumnKind::Year, Value::Bytes(b"2155".to_vec())),
            Value::UInt(2155)
        );
    }

    #[test]
    fn timestamps_become_utc_text() {
        let k = ColumnKind::Timestamp { fsp: 6 };
        assert_eq!(
            conv(k, Value::Bytes(b"1704164645.678000".to_vec())),
            text("2024-01-02 03:04:05.678000".into())
        );
        assert_eq!(
            conv(k, Value::Bytes(b"1".to_vec())),
            text("1970-01-01 00:00:01".into())
        );
        assert_eq!(
            conv(k, Value::Bytes(b"0".to_vec())),
            text("0000-00-00 00:00:00".into())
        );
    }

    #[test]
    fn temporal_text_forms() {
        assert_eq!(
            conv(
                ColumnKind::Time { fsp: 3 },
                Value::Time(true, 34, 22, 59, 59, 999000)
            ),
            text("-838:59:59.999000".into())
        );
        assert_eq!(
            conv(
                ColumnKind::DateTime { fsp: 0 },
                Value::Date(0, 0, 0, 0, 0, 0, 0)
            ),
            text("0000-00-00 00:00:00".into())
        );
        assert_eq!(
            conv(ColumnKind::Date, Value::Date(2024, 2, 29, 0, 0, 0, 0)),
            text("2024-02-29".into())
        );
    }

    #[test]
    fn bit_and_set_become_numbers() {
        assert_eq!(
            conv(ColumnKind::Bit { bits: 13 }, Value::Bytes(vec![0x12, 0x34])),
            Value::UInt(0x1234)
        );
        assert_eq!(
            conv(ColumnKind::Bit { bits: 64 }, Value::Bytes(vec![0xFF; 8])),
            Value::UInt(u64::MAX)
        );
        assert_eq!(
            conv(ColumnKind::Set, Value::Bytes(vec![0x05])),
            Value::UInt(5)
        );
        assert_eq!(
            conv(ColumnKind::Set, Value::Bytes(vec![0x01, 0x02])),
            Value::UInt(0x0201)
        );
        assert_eq!(conv(ColumnKind::Enum, Value::Int(2)), Value::UInt(2));
    }

    #[test]
    fn null_stays_null() {
        assert_eq!(conv(ColumnKind::Year, Value::NULL), Value::NULL);
        assert_eq!(
            conv(ColumnKind::FixedBinary { len: 16 }, Value::NULL),
            Value::NULL
        );
    }
}
