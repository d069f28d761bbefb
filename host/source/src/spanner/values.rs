//! Values between Spanner and the host: column types (`INFORMATION_SCHEMA`'s names and the
//! client's types), query parameters, read values, timestamps.

use std::time::Duration;

use google_cloud_spanner::transaction::Timestamp;
use google_cloud_spanner::types;
use google_cloud_spanner::value::{Date, FromValue, Kind, Type, Value as SpValue};
use ledgerhost_core::{ColumnType, PortError, PortResult, Value};
use ledgerhost_manifest::calendar;

use super::error::BACKEND;

/// Parses `INFORMATION_SCHEMA.COLUMNS.SPANNER_TYPE` (GoogleSQL dialect) by the one rule,
/// [`ColumnType::from_name`]; Spanner has no arrays of arrays.
pub(super) fn parse_spanner_type(t: &str) -> Option<ColumnType> {
    ColumnType::from_name(t).filter(|ty| match ty {
        ColumnType::Array(elem) => !matches!(**elem, ColumnType::Array(_)),
        _ => true,
    })
}

/// A duration of `micros` microseconds, zero when negative (an expired lease).
pub(super) fn micros_duration(micros: i64) -> Duration {
    Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}

/// Microseconds since the epoch of a Spanner timestamp (sub-microsecond digits dropped).
pub(super) fn timestamp_micros(t: &Timestamp) -> i64 {
    t.seconds()
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(t.nanos()) / 1_000)
}

/// 0001-01-01T00:00:00Z, the earliest timestamp Spanner accepts, in µs since the epoch.
pub(super) const SPANNER_MIN_MICROS: i64 = -62_135_596_800 * 1_000_000;

pub(super) fn micros_timestamp(us: i64) -> PortResult<Timestamp> {
    Timestamp::new(
        us.div_euclid(1_000_000),
        (us.rem_euclid(1_000_000) * 1_000) as i32,
    )
    .map_err(|e| {
        PortError::invalid(
            BACKEND,
            format!("timestamp {us} µs is out of Spanner's range: {e}"),
        )
    })
}

pub(super) fn spanner_type(ty: &ColumnType) -> Type {
    match ty {
        ColumnType::Bool => types::bool(),
        ColumnType::Int64 => types::int64(),
        ColumnType::Float32 => types::float32(),
        ColumnType::Float64 => types::float64(),
        ColumnType::Numeric => types::numeric(),
        ColumnType::String => types::string(),
        ColumnType::Bytes => types::bytes(),
        ColumnType::Date => types::date(),
        ColumnType::Timestamp => types::timestamp(),
        ColumnType::Json => types::json(),
        ColumnType::Array(e) => types::array(spanner_type(e)),
    }
}

/// A core value as a typed Spanner query parameter.
pub(crate) fn to_param(v: &Value, ty: &ColumnType) -> Result<(SpValue, Type), String> {
    let value = match v {
        Value::Null => SpValue::null(),
        Value::Bool(b) => SpValue::from(*b),
        Value::Int64(n) => SpValue::from(*n),
        Value::Float32(x) => SpValue::from(*x),
        Value::Float64(x) => SpValue::from(*x),
        // Sent as text with an explicit type so Spanner parses them exactly.
        Value::Numeric(s) | Value::String(s) | Value::Json(s) => SpValue::from(s.clone()),
        Value::Bytes(b) => SpValue::from(b.clone()),
        Value::Date(d) => {
            let (y, m, day) = calendar::civil_from_days(i64::from(*d));
            // A DATE's year (days in an i32) fits an i32; month and day are small.
            SpValue::from(
                Date::new()
                    .set_year(y as i32)
                    .set_month(m as i32)
                    .set_day(day as i32),
            )
        }
        Value::Timestamp(t) => SpValue::from(micros_timestamp(*t).map_err(|e| e.to_string())?),
        Value::Array(elem, items) => {
            let list = items
                .iter()
                .map(|i| to_param(i, elem).map(|(v, _)| v))
                .collect::<Result<Vec<_>, _>>()?;
            SpValue::from(list)
        }
    };
    Ok((value, spanner_type(ty)))
}

/// A Spanner result value as a core value of column type `ty`.
pub(super) fn from_spanner(v: &SpValue, ty: &ColumnType) -> Result<Value, String> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    let st = spanner_type(ty);
    let conv = |e: google_cloud_spanner::value::ConvertError| format!("{e}");
    Ok(match ty {
        ColumnType::Bool => Value::Bool(bool::from_value(v, &st).map_err(conv)?),
        ColumnType::Int64 => Value::Int64(i64::from_value(v, &st).map_err(conv)?),
        ColumnType::Float32 => Value::Float32(f32::from_value(v, &st).map_err(conv)?),
        ColumnType::Float64 => Value::Float64(f64::from_value(v, &st).map_err(conv)?),
        ColumnType::Numeric | ColumnType::String | ColumnType::Json => {
            let s = v
                .as_str()
                .ok_or_else(|| format!("expected text, got {:?}", v.kind()))?
                .to_string();
            match ty {
                ColumnType::Numeric => Value::Numeric(s),
                ColumnType::Json => Value::Json(s),
                _ => Value::String(s),
            }
        }
        ColumnType::Bytes => Value::Bytes(Vec::<u8>::from_value(v, &st).map_err(conv)?),
        ColumnType::Date => {
            let d = Date::from_value(v, &st).map_err(conv)?;
            let (m, day) = (u32::try_from(d.month), u32::try_from(d.day));
            match (m, day) {
                (Ok(m), Ok(day)) => calendar::checked_days(i64::from(d.year), m, day),
                _ => None,
            }
            .map(Value::Date)
            .ok_or_else(|| format!("{}-{}-{} is not a DATE", d.year, d.month, d.day))?
        }
        ColumnType::Timestamp => Value::Timestamp(timestamp_micros(
            &Timestamp::from_value(v, &st).map_err(conv)?,
        )),
        ColumnType::Array(elem) => {
            if v.kind() != Kind::List {
                return Err(format!("expected an array, got {:?}", v.kind()));
            }
            let list = v.as_list().ok_or("expected an array")?;
            let items = list
                .iter()
                .map(|i| from_spanner(i, elem))
                .collect::<Result<Vec<_>, _>>()?;
            Value::Array((**elem).clone(), items)
        }
    })
}
