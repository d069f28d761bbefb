//! Values to and from BigQuery: query parameters (typed), SQL casts of them, and result
//! cells parsed back into the exact [`Value`] that was loaded.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ledgerhost_core::{ColumnType, PortError, PortResult, Value};

use crate::warehouse::stored::{json_of, value_of_json};

use super::error::BACKEND;

/// The type name in SQL DDL.
pub(super) fn sql_type(ty: &ColumnType) -> &'static str {
    match ty {
        ColumnType::Bool => "BOOL",
        ColumnType::Int64 => "INT64",
        ColumnType::Float32 | ColumnType::Float64 => "FLOAT64",
        ColumnType::Numeric => "NUMERIC",
        ColumnType::String | ColumnType::Array(_) => "STRING",
        ColumnType::Bytes => "BYTES",
        ColumnType::Date => "DATE",
        ColumnType::Timestamp => "TIMESTAMP",
        ColumnType::Json => "JSON",
    }
}

/// Query-parameter type carrying a column's values (see [`param_value`] and [`from_param`]).
pub(super) fn param_type(ty: &ColumnType) -> &'static str {
    match ty {
        ColumnType::Bool => "BOOL",
        ColumnType::Int64 | ColumnType::Date | ColumnType::Timestamp => "INT64",
        ColumnType::Float32 | ColumnType::Float64 => "FLOAT64",
        ColumnType::Numeric => "NUMERIC",
        ColumnType::Json => "JSON",
        ColumnType::String | ColumnType::Bytes | ColumnType::Array(_) => "STRING",
    }
}

/// The SELECT expression turning parameter field `r.c` into the column's type. Dates and
/// timestamps travel as exact integers and bytes as base64, which every endpoint parses alike.
pub(super) fn from_param(name: &str, ty: &ColumnType) -> String {
    match ty {
        ColumnType::Date => format!("DATE_FROM_UNIX_DATE(r.{name})"),
        ColumnType::Timestamp => format!("TIMESTAMP_MICROS(r.{name})"),
        ColumnType::Bytes => format!("FROM_BASE64(r.{name})"),
        _ => format!("r.{name}"),
    }
}

/// The SELECT expression reading a column back exactly (see [`parse_cell`]).
pub(super) fn to_text(name: &str, ty: &ColumnType) -> String {
    match ty {
        ColumnType::Date => format!("UNIX_DATE(`{name}`)"),
        ColumnType::Timestamp => format!("UNIX_MICROS(`{name}`)"),
        ColumnType::Bytes => format!("TO_BASE64(`{name}`)"),
        ColumnType::Numeric => format!("CAST(`{name}` AS STRING)"),
        _ => format!("`{name}`"),
    }
}

pub(super) fn float_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        }
    } else {
        format!("{f:?}")
    }
}

/// The parameter value of one field (`None` = NULL); the value must match the column type.
pub(super) fn param_value(
    table: &str,
    column: &str,
    ty: &ColumnType,
    v: &Value,
) -> PortResult<Option<String>> {
    Ok(Some(match (ty, v) {
        (_, Value::Null) => return Ok(None),
        (ColumnType::Bool, Value::Bool(b)) => b.to_string(),
        (ColumnType::Int64, Value::Int64(i)) | (ColumnType::Timestamp, Value::Timestamp(i)) => {
            i.to_string()
        }
        (ColumnType::Date, Value::Date(d)) => d.to_string(),
        (ColumnType::Float32, Value::Float32(f)) => float_text(f64::from(*f)),
        (ColumnType::Float64, Value::Float64(f)) => float_text(*f),
        (ColumnType::Numeric, Value::Numeric(s))
        | (ColumnType::String, Value::String(s))
        | (ColumnType::Json, Value::Json(s)) => s.clone(),
        (ColumnType::Bytes, Value::Bytes(b)) => B64.encode(b),
        (ColumnType::Array(_), Value::Array(..)) => json_of(v).to_string(),
        _ => {
            return Err(PortError::invalid(
                BACKEND,
                format!(
                    "table `{table}` column `{column}` is {} but the row holds {v:?}; load rows \
                 decoded with the table's current schema",
                    ty.name()
                ),
            ));
        }
    }))
}

/// Shortest exact decimal text, as the Avro codec produces ("1.500000000" → "1.5").
pub(super) fn normal_decimal(s: &str) -> String {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let body = if frac.is_empty() {
        int.to_string()
    } else {
        format!("{int}.{frac}")
    };
    if neg && body != "0" {
        format!("-{body}")
    } else {
        body
    }
}

/// Rebuilds a value from a result cell (always JSON text or null in the REST API).
pub(super) fn parse_cell(
    table: &str,
    column: &str,
    ty: &ColumnType,
    cell: Option<&serde_json::Value>,
) -> PortResult<Value> {
    let text = match cell {
        None | Some(serde_json::Value::Null) => return Ok(Value::Null),
        Some(serde_json::Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(PortError::Corrupt {
                backend: BACKEND,
                message: format!("table `{table}` column `{column}`: unexpected cell {other}"),
            });
        }
    };
    let corrupt = |what: &str| PortError::Corrupt {
        backend: BACKEND,
        message: format!("table `{table}` column `{column}`: `{text}` is not {what}"),
    };
    let float = || -> PortResult<f64> {
        match text {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            t => t.parse().map_err(|_| corrupt("a number")),
        }
    };
    Ok(match ty {
        ColumnType::Bool => Value::Bool(text.eq_ignore_ascii_case("true")),
        ColumnType::Int64 => Value::Int64(text.parse().map_err(|_| corrupt("an INT64"))?),
        ColumnType::Timestamp => Value::Timestamp(text.parse().map_err(|_| corrupt("micros"))?),
        ColumnType::Date => Value::Date(text.parse().map_err(|_| corrupt("a day number"))?),
        ColumnType::Float32 => Value::Float32(float()? as f32),
        ColumnType::Float64 => Value::Float64(float()?),
        ColumnType::Numeric => Value::Numeric(normal_decimal(text)),
        ColumnType::String => Value::String(text.to_string()),
        ColumnType::Json => Value::Json(text.to_string()),
        ColumnType::Bytes => Value::Bytes(B64.decode(text).map_err(|_| corrupt("base64"))?),
        ColumnType::Array(elem) => {
            let items: Vec<serde_json::Value> =
                serde_json::from_str(text).map_err(|_| corrupt("a JSON array"))?;
            Value::Array(
                (**elem).clone(),
                items.iter().map(|j| value_of_json(j, elem)).collect(),
            )
        }
    })
}
