//! Values between SQLite and the host: bound parameters, read values (arrays as JSON),
//! base64 for bytes in JSON, dates as text.

use ledgerhost_core::{ColumnType, Value};
use ledgerhost_manifest::calendar::{self, date_text};
use rusqlite::types::ValueRef;

pub(super) fn to_sql(v: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as S;
    match v {
        Value::Null => S::Null,
        Value::Bool(b) => S::Integer(i64::from(*b)),
        Value::Int64(i) | Value::Timestamp(i) => S::Integer(*i),
        Value::Float32(f) => S::Real(f64::from(*f)),
        Value::Float64(f) => S::Real(*f),
        Value::Date(d) => S::Text(date_text(*d)),
        Value::Numeric(s) | Value::String(s) | Value::Json(s) => S::Text(s.clone()),
        Value::Bytes(b) => S::Blob(b.clone()),
        Value::Array(..) => S::Null,
    }
}

pub(super) fn from_sql(v: ValueRef<'_>, ty: &ColumnType) -> Result<Value, String> {
    let text = |b: &[u8]| {
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| "text is not UTF-8".to_string())
    };
    Ok(match (ty, v) {
        (_, ValueRef::Null) => Value::Null,
        (ColumnType::Bool, ValueRef::Integer(i)) => Value::Bool(i != 0),
        (ColumnType::Int64, ValueRef::Integer(i)) => Value::Int64(i),
        (ColumnType::Timestamp, ValueRef::Integer(i)) => Value::Timestamp(i),
        (ColumnType::Float64, ValueRef::Real(f)) => Value::Float64(f),
        (ColumnType::Float64, ValueRef::Integer(i)) => Value::Float64(i as f64),
        (ColumnType::Float32, ValueRef::Real(f)) => Value::Float32(f as f32),
        (ColumnType::Float32, ValueRef::Integer(i)) => Value::Float32(i as f32),
        (ColumnType::Numeric, ValueRef::Text(t)) => Value::Numeric(text(t)?),
        (ColumnType::Numeric, ValueRef::Integer(i)) => Value::Numeric(i.to_string()),
        (ColumnType::Numeric, ValueRef::Real(f)) => Value::Numeric(f.to_string()),
        (ColumnType::String, ValueRef::Text(t)) => Value::String(text(t)?),
        (ColumnType::String, ValueRef::Integer(i)) => Value::String(i.to_string()),
        (ColumnType::String, ValueRef::Real(f)) => Value::String(f.to_string()),
        (ColumnType::Json, ValueRef::Text(t)) => Value::Json(text(t)?),
        // A JSON column has numeric affinity: SQLite stores the documents `12` and `1.5` as
        // numbers.
        (ColumnType::Json, ValueRef::Integer(i)) => Value::Json(i.to_string()),
        (ColumnType::Json, ValueRef::Real(f)) => Value::Json(
            serde_json::Number::from_f64(f)
                .ok_or_else(|| format!("{f} is not a JSON number"))?
                .to_string(),
        ),
        (ColumnType::Bytes, ValueRef::Blob(b)) => Value::Bytes(b.to_vec()),
        (ColumnType::Date, ValueRef::Text(t)) => Value::Date(parse_date(&text(t)?)?),
        (ColumnType::Array(elem), ValueRef::Text(t)) => {
            let json: serde_json::Value = serde_json::from_slice(t)
                .map_err(|e| format!("array column is not a JSON array: {e}"))?;
            let items = json
                .as_array()
                .ok_or("array column is not a JSON array")?
                .iter()
                .map(|j| from_json(j, elem))
                .collect::<Result<Vec<_>, _>>()?;
            Value::Array((**elem).clone(), items)
        }
        (ty, v) => return Err(format!("stored value {v:?} does not fit type {ty:?}")),
    })
}

pub(super) fn from_json(j: &serde_json::Value, ty: &ColumnType) -> Result<Value, String> {
    use serde_json::Value as J;
    Ok(match (ty, j) {
        (_, J::Null) => Value::Null,
        (ColumnType::Bool, J::Bool(b)) => Value::Bool(*b),
        (ColumnType::Int64, J::Number(n)) => Value::Int64(n.as_i64().ok_or("not an integer")?),
        (ColumnType::Timestamp, J::Number(n)) => {
            Value::Timestamp(n.as_i64().ok_or("not an integer")?)
        }
        (ColumnType::Float64, J::Number(n)) => Value::Float64(n.as_f64().ok_or("not a number")?),
        (ColumnType::Float32, J::Number(n)) => {
            Value::Float32(n.as_f64().ok_or("not a number")? as f32)
        }
        (ColumnType::Numeric, J::Number(n)) => Value::Numeric(n.to_string()),
        (ColumnType::Numeric, J::String(s)) => Value::Numeric(s.clone()),
        (ColumnType::String, J::String(s)) => Value::String(s.clone()),
        (ColumnType::Json, other) => Value::Json(other.to_string()),
        (ColumnType::Date, J::String(s)) => Value::Date(parse_date(s)?),
        (ColumnType::Bytes, J::String(s)) => Value::Bytes(base64_decode(s)?),
        (ty, j) => return Err(format!("array element {j} does not fit type {ty:?}")),
    })
}

/// Standard base64 (padding optional), as Spanner writes BYTES in JSON.
pub(super) fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    let bad = || format!("array element `{s}` is not base64 (BYTES elements are base64 text)");
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(bad()),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be padding zeros, and a lone 6-bit group encodes nothing.
    if bits >= 6 || acc != 0 {
        return Err(bad());
    }
    Ok(out)
}

/// Standard base64 with padding, as [`base64_decode`] reads it.
pub(super) fn base64_encode(b: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, x)| acc | (u32::from(*x) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Days since 1970-01-01 of the `YYYY-MM-DD` date a text starts with.
pub(super) fn parse_date(s: &str) -> Result<i32, String> {
    s.get(..10)
        .and_then(calendar::parse_date)
        .ok_or_else(|| format!("`{s}` is not a YYYY-MM-DD date"))
}
