//! Conversions between the host's event model and the WIT types.

use ledgerhost_core::{ColumnType, Disposition, Event, Field, Value};

use crate::bindings::wit;
#[cfg(test)]
use ledgerhost_capabilities::wit::value_from_wit;

/// A host value as a WIT value, by move (no copy of strings or bytes). Arrays become the
/// typed WIT array of their element type.
pub fn value_to_wit(v: Value) -> wit::Value {
    match v {
        Value::Null => wit::Value::Null,
        Value::Bool(b) => wit::Value::Bool(b),
        Value::Int64(i) => wit::Value::Int64(i),
        Value::Float32(f) => wit::Value::Float32(f),
        Value::Float64(f) => wit::Value::Float64(f),
        Value::Numeric(s) => wit::Value::Numeric(s),
        Value::String(s) => wit::Value::String(s),
        Value::Bytes(b) => wit::Value::Bytes(b),
        Value::Date(d) => wit::Value::Date(d),
        Value::Timestamp(t) => wit::Value::Timestamp(t),
        Value::Json(s) => wit::Value::Json(s),
        Value::Array(elem, items) => {
            let it = items.into_iter();
            match elem {
                ColumnType::Bool => wit::Value::BoolArray(
                    it.map(|v| match v {
                        Value::Bool(b) => Some(b),
                        _ => None,
                    })
                    .collect(),
                ),
                ColumnType::Int64 => wit::Value::Int64Array(
                    it.map(|v| match v {
                        Value::Int64(i) => Some(i),
                        _ => None,
                    })
                    .collect(),
                ),
                ColumnType::Float32 => wit::Value::Float32Array(
                    it.map(|v| match v {
                        Value::Float32(f) => Some(f),
                        _ => None,
                    })
                    .collect(),
                ),
                ColumnType::Float64 => wit::Value::Float64Array(
                    it.map(|v| match v {
                        Value::Float64(f) => Some(f),
                        _ => None,
                    })
                    .collect(),
                ),
                ColumnType::Numeric => wit::Value::NumericArray(
                    it.map(|v| match v {
                        Value::Numeric(s) => Some(s),
                        _ => None,
                    })
                    .collect(),
                ),
                ColumnType::String => wit::Value::StringArray(
                    it.map(|v| match v {
                        Value::String(s) => Some(s),
                        _ => None,
                    })
                    .collect(),
                ),
                ColumnType::Bytes => wit::Value::BytesArray(
                    it.map(|v| match v {
                        Value::Bytes(b) => Some(b),
                        _ => None,
                    })
                    .collect(),
                ),
                ColumnType::Date => wit::Value::DateArray(
                    it.map(|v| match v {
                        Value::Date(d) => Some(d),
                        _ => None,
                    })
                    .collect(),
                ),
                ColumnType::Timestamp => wit::Value::TimestampArray(
                    it.map(|v| match v {
                        Value::Timestamp(t) => Some(t),
                        _ => None,
                    })
                    .collect(),
                ),
                ColumnType::Json => wit::Value::JsonArray(
                    it.map(|v| match v {
                        Value::Json(s) => Some(s),
                        _ => None,
                    })
                    .collect(),
                ),
                // Spanner has no nested arrays; the sources refuse them.
                ColumnType::Array(_) => wit::Value::Null,
            }
        }
    }
}

fn field_to_wit(f: Field) -> wit::Field {
    wit::Field {
        name: f.name,
        value: value_to_wit(f.value),
    }
}

/// A host event as the WIT event a plugin receives.
pub fn event_to_wit(e: Event) -> wit::Event {
    wit::Event {
        id: e.id.0,
        table: e.table,
        commit_ts: e.commit_ts,
        key: e.key.into_iter().map(field_to_wit).collect(),
        fields: e.fields.into_iter().map(field_to_wit).collect(),
        deleted: e.deleted,
        schema_fingerprint: e.schema_fingerprint,
        avro: e.avro,
        attributes: e.attributes,
    }
}

/// A plugin's disposition as the host's.
pub fn disposition_from_wit(d: wit::Disposition) -> Disposition {
    match d {
        wit::Disposition::Ack => Disposition::Ack,
        wit::Disposition::Retry(r) => Disposition::Retry(r),
        wit::Disposition::Reject(r) => Disposition::Reject(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_wit() {
        let values = vec![
            Value::Null,
            Value::Bool(true),
            Value::Int64(-4),
            Value::Float32(1.5),
            Value::Float64(-2.25),
            Value::Numeric("12.5".into()),
            Value::String("s".into()),
            Value::Bytes(vec![1, 2]),
            Value::Date(-1),
            Value::Timestamp(7),
            Value::Json("{}".into()),
            Value::Array(ColumnType::Int64, vec![Value::Int64(1), Value::Null]),
            Value::Array(ColumnType::String, vec![]),
            Value::Array(ColumnType::Numeric, vec![Value::Null]),
        ];
        for v in values {
            assert_eq!(value_from_wit(value_to_wit(v.clone())), v);
        }
    }
}
