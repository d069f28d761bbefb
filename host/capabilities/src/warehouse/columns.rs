//! What both warehouse backends store the same way: a column type by name (`INT64`,
//! `ARRAY<STRING>`) and array values as JSON.

use ledgerhost_core::{ColumnType, Value};

/// The stored name of a column type (`INT64`, `ARRAY<STRING>`, ...).
pub(crate) fn type_name(ty: &ColumnType) -> String {
    match ty {
        ColumnType::Array(e) => format!("ARRAY<{}>", type_name(e)),
        other => format!("{other:?}").to_uppercase(),
    }
}

/// Inverse of [`type_name`].
pub(crate) fn parse_type_name(s: &str) -> Option<ColumnType> {
    if let Some(inner) = s.strip_prefix("ARRAY<").and_then(|s| s.strip_suffix('>')) {
        return parse_type_name(inner).map(|t| ColumnType::Array(Box::new(t)));
    }
    Some(match s {
        "BOOL" => ColumnType::Bool,
        "INT64" => ColumnType::Int64,
        "FLOAT32" => ColumnType::Float32,
        "FLOAT64" => ColumnType::Float64,
        "NUMERIC" => ColumnType::Numeric,
        "STRING" => ColumnType::String,
        "BYTES" => ColumnType::Bytes,
        "DATE" => ColumnType::Date,
        "TIMESTAMP" => ColumnType::Timestamp,
        "JSON" => ColumnType::Json,
        _ => return None,
    })
}

/// An array (or element) as JSON; bytes as hex text.
pub(crate) fn json_of(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int64(i) | Value::Timestamp(i) => J::from(*i),
        Value::Date(d) => J::from(*d),
        Value::Float32(f) => J::from(f64::from(*f)),
        Value::Float64(f) => J::from(*f),
        Value::Numeric(s) | Value::String(s) | Value::Json(s) => J::String(s.clone()),
        Value::Bytes(b) => J::String(b.iter().map(|x| format!("{x:02x}")).collect()),
        Value::Array(_, items) => J::Array(items.iter().map(json_of).collect()),
    }
}

/// Inverse of [`json_of`] for an element of type `ty`.
pub(crate) fn value_of_json(j: &serde_json::Value, ty: &ColumnType) -> Value {
    use serde_json::Value as J;
    match (ty, j) {
        (_, J::Null) => Value::Null,
        (ColumnType::Bool, J::Bool(b)) => Value::Bool(*b),
        (ColumnType::Int64, J::Number(n)) => n.as_i64().map_or(Value::Null, Value::Int64),
        (ColumnType::Timestamp, J::Number(n)) => n.as_i64().map_or(Value::Null, Value::Timestamp),
        (ColumnType::Date, J::Number(n)) => {
            n.as_i64().map_or(Value::Null, |d| Value::Date(d as i32))
        }
        (ColumnType::Float32, J::Number(n)) => {
            n.as_f64().map_or(Value::Null, |f| Value::Float32(f as f32))
        }
        (ColumnType::Float64, J::Number(n)) => n.as_f64().map_or(Value::Null, Value::Float64),
        (ColumnType::Numeric, J::String(s)) => Value::Numeric(s.clone()),
        (ColumnType::String, J::String(s)) => Value::String(s.clone()),
        (ColumnType::Json, J::String(s)) => Value::Json(s.clone()),
        (ColumnType::Bytes, J::String(s)) => Value::Bytes(
            (0..s.len() / 2)
                .filter_map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
                .collect(),
        ),
        _ => Value::Null,
    }
}
