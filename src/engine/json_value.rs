//! MySQL's binary JSON, written back with the same JSON types. A JSON document can hold typed
//! scalars that JSON text cannot express: a DECIMAL keeps its scale (`1.10`), and DATE, TIME
//! and DATETIME values are their own types (`JSON_TYPE` says so). Written back as text they
//! would become strings. A document without them travels as text; one with them becomes an
//! expression that builds it: `JSON_OBJECT(?, CAST(? AS DECIMAL(3,2)), ...)`.
//!
//! The expression rides in the row image as a marked byte string (a JSON document never starts
//! with a NUL byte), and the applier puts it in place of the column's placeholder.
//! (MariaDB's JSON is text, and MySQL's binlog sends documents as JSONB: only MySQL gets here.)

use mysql_async::Value;
use mysql_async::binlog::jsonb::{JsonContainer, JsonDom, JsonNumber, JsonScalar};
use mysql_common::binlog::time::{MysqlTime, MysqlTimestampType};
use serde::{Deserialize, Serialize};

/// Marks a row-image value that is an expression, not JSON text.
const MARK: &[u8] = b"\0ghost-json-expression\0";

/// JSON text as a JSON value. The apply session sends text as binary strings, which JSON
/// functions refuse: each is read as utf8mb4 first.
const TEXT_AS_JSON: &str = "CAST(CONVERT(? USING utf8mb4) AS JSON)";

/// An SQL expression that produces a JSON value, with its bound parameters (all text).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonExpression {
    pub sql: String,
    pub params: Vec<String>,
}

/// The parameter that writes `dom` back exactly: JSON text, or a marked expression.
pub fn to_param(dom: JsonDom) -> Result<Value, String> {
    if !has_typed_scalar(&dom) {
        let json: serde_json::Value = dom.into();
        return Ok(Value::Bytes(json.to_string().into_bytes()));
    }
    let mut expr = JsonExpression {
        sql: String::new(),
        params: Vec::new(),
    };
    build(dom, &mut expr)?;
    // A typed scalar alone is an SQL value; the array makes it a JSON value of its own type.
    expr.sql = format!("JSON_EXTRACT(JSON_ARRAY({}), _utf8mb4'$[0]')", expr.sql);
    let mut bytes = MARK.to_vec();
    bytes.extend(serde_json::to_vec(&expr).map_err(|e| e.to_string())?);
    Ok(Value::Bytes(bytes))
}

/// The expression in a marked parameter, if it is one.
pub fn expression(value: &Value) -> Option<JsonExpression> {
    match value {
        Value::Bytes(b) if b.starts_with(MARK) => serde_json::from_slice(&b[MARK.len()..]).ok(),
        _ => None,
    }
}

fn has_typed_scalar(dom: &JsonDom) -> bool {
    match dom {
        JsonDom::Container(JsonContainer::Array(items)) => items.iter().any(has_typed_scalar),
        JsonDom::Container(JsonContainer::Object(members)) => {
            members.values().any(has_typed_scalar)
        }
        JsonDom::Scalar(JsonScalar::DateTime(_) | JsonScalar::Opaque(_)) => true,
        JsonDom::Scalar(JsonScalar::Number(JsonNumber::Decimal(_))) => true,
        JsonDom::Scalar(_) => false,
    }
}

/// Appends the expression of `dom` (an SQL value, not necessarily JSON) to `out`.
fn build(dom: JsonDom, out: &mut JsonExpression) -> Result<(), String> {
    if !has_typed_scalar(&dom) {
        let json: serde_json::Value = dom.into();
        out.sql.push_str(TEXT_AS_JSON);
        out.params.push(json.to_string());
        return Ok(());
    }
    match dom {
        JsonDom::Container(JsonContainer::Array(items)) => {
            out.sql.push_str("JSON_ARRAY(");
            for (i, item) in items.into_iter().enumerate() {
                if i > 0 {
                    out.sql.push_str(", ");
                }
                build(item, out)?;
            }
            out.sql.push(')');
        }
        JsonDom::Container(JsonContainer::Object(members)) => {
            out.sql.push_str("JSON_OBJECT(");
            for (i, (key, value)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.sql.push_str(", ");
                }
                out.sql.push_str("CONVERT(? USING utf8mb4), ");
                out.params.push(key);
                build(value, out)?;
            }
            out.sql.push(')');
        }
        JsonDom::Scalar(JsonScalar::Number(JsonNumber::Decimal(decimal))) => {
            let text = decimal.to_string();
            let (precision, scale) = decimal_shape(&text);
            out.sql
                .push_str(&format!("CAST(? AS DECIMAL({precision},{scale}))"));
            out.params.push(text);
        }
        JsonDom::Scalar(JsonScalar::DateTime(time)) => {
            let (cast, text) = temporal(&time)?;
            out.sql.push_str(&format!("CAST(? AS {cast})"));
            out.params.push(text);
        }
        JsonDom::Scalar(JsonScalar::Opaque(opaque)) => {
            return Err(format!(
                "a JSON value holds an opaque MySQL value ({opaque}) that cannot be written back with its type"
            ));
        }
        JsonDom::Scalar(other) => {
            let json: serde_json::Value = JsonDom::Scalar(other).into();
            out.sql.push_str(TEXT_AS_JSON);
            out.params.push(json.to_string());
        }
    }
    Ok(())
}

/// DECIMAL(p,s) that holds `text` (`-12.340` → (5,3)) with its scale.
fn decimal_shape(text: &str) -> (usize, usize) {
    let digits = text.trim_start_matches('-');
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let scale = frac.len();
    let precision = (int.trim_start_matches('0').len() + scale)
        .max(1)
        .max(scale);
    (precision.min(65), scale.min(30))
}

/// The CAST target and the text of a JSON temporal value.
fn temporal(t: &MysqlTime) -> Result<(&'static str, String), String> {
    let date = format!("{:04}-{:02}-{:02}", t.year, t.month, t.day);
    let time = format!(
        "{}{:02}:{:02}:{:02}.{:06}",
        if t.neg { "-" } else { "" },
        t.hour,
        t.minute,
        t.second,
        t.second_part
    );
    match &t.time_type {
        MysqlTimestampType::MYSQL_TIMESTAMP_DATE => Ok(("DATE", date)),
        MysqlTimestampType::MYSQL_TIMESTAMP_TIME => Ok(("TIME(6)", time)),
        MysqlTimestampType::MYSQL_TIMESTAMP_DATETIME
        | MysqlTimestampType::MYSQL_TIMESTAMP_DATETIME_TZ => {
            Ok(("DATETIME(6)", format!("{date} {time}")))
        }
        other => Err(format!(
            "a JSON temporal value of an unknown kind ({other:?})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_keeps_its_scale() {
        assert_eq!(decimal_shape("1.10"), (3, 2));
        assert_eq!(decimal_shape("-12.340"), (5, 3));
        assert_eq!(decimal_shape("0.5"), (1, 1));
        assert_eq!(decimal_shape("100"), (3, 0));
        assert_eq!(decimal_shape("0"), (1, 0));
    }

    #[test]
    fn plain_json_stays_text_and_typed_json_becomes_an_expression() {
        let plain = JsonDom::Container(JsonContainer::Array(vec![
            JsonDom::Scalar(JsonScalar::String("a".into())),
            JsonDom::Scalar(JsonScalar::Number(JsonNumber::Int(1))),
        ]));
        assert_eq!(
            to_param(plain).unwrap(),
            Value::Bytes(b"[\"a\",1]".to_vec())
        );
        assert!(expression(&Value::Bytes(b"[1]".to_vec())).is_none());
    }
}
