//! What every warehouse backend stores the same way: table names by one rule, column types
//! by their GoogleSQL name ([`ColumnType::name`]), array values as JSON.

use ledgerhost_core::{ColumnType, PortError, PortResult, Value};

/// Longest warehouse table name: BigQuery's limit, 1 024 characters
/// (<https://cloud.google.com/bigquery/docs/tables#table_naming>); one limit for every
/// backend, so a view moves between them.
const MAX_TABLE_NAME: usize = 1024;

/// Refuses a warehouse table name some backend could not take: empty, longer than
/// [`MAX_TABLE_NAME`], other than letters, digits, `_` and `-`, or in the `_ledgerhost`
/// prefix the host keeps for its own tables.
pub(crate) fn check_table_name(backend: &'static str, table: &str) -> PortResult<()> {
    if table.is_empty()
        || table.len() > MAX_TABLE_NAME
        || table.starts_with("_ledgerhost")
        || !table
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(PortError::invalid(
            backend,
            format!(
                "warehouse table name `{table}` must be 1 to {MAX_TABLE_NAME} letters, digits, \
                 `_` and `-`, not starting with `_ledgerhost`"
            ),
        ));
    }
    Ok(())
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
