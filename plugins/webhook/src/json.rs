//! The JSON body of one event.

use base64::Engine as _;
use ledgerhost_sdk::prelude::*;
use ledgerhost_sdk::time::{date_text, timestamp_text};
use serde_json::{Map, Value as Json, json};

/// The event as a JSON object, serialized:
///
/// ```json
/// {"id": "orders/…/1700000000000001", "table": "orders", "op": "upsert", "deleted": false,
///  "commit_ts": 1700000000000001, "commit_time": "2023-11-14T22:13:20.000001Z",
///  "key": {"id": 1}, "fields": {"id": 1, "amount": 10}}
/// ```
///
/// `op` is `upsert` or `delete` (a tombstone, whose `fields` hold the last values).
/// INT64 and FLOAT are numbers (a non-finite float is `null`), NUMERIC is its exact decimal
/// text, BYTES base64, DATE `YYYY-MM-DD`, TIMESTAMP RFC 3339 in UTC, JSON embedded as JSON.
pub fn event_json(e: &Event) -> Vec<u8> {
    let body = json!({
        "id": e.id,
        "table": &*e.table,
        "op": if e.deleted { "delete" } else { "upsert" },
        "deleted": e.deleted,
        "commit_ts": e.commit_ts,
        "commit_time": timestamp_text(e.commit_ts),
        "key": object(e.key_fields()),
        "fields": object(e.fields()),
    });
    serde_json::to_vec(&body).expect("a JSON value serializes")
}

fn object<'a>(fields: impl Iterator<Item = (&'a str, &'a Value)>) -> Json {
    let map: Map<String, Json> = fields.map(|(n, v)| (n.to_string(), value(v))).collect();
    Json::Object(map)
}

fn value(v: &Value) -> Json {
    fn list<T>(items: &[Option<T>], f: impl Fn(&T) -> Json) -> Json {
        Json::Array(
            items
                .iter()
                .map(|i| i.as_ref().map_or(Json::Null, &f))
                .collect(),
        )
    }
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Int64(i) => json!(i),
        Value::Float32(f) => float(f64::from(*f)),
        Value::Float64(f) => float(*f),
        Value::Numeric(s) | Value::String(s) => json!(s),
        Value::Bytes(b) => json!(base64(b)),
        Value::Date(d) => json!(date_text(*d)),
        Value::Timestamp(t) => json!(timestamp_text(*t)),
        Value::Json(s) => serde_json::from_str(s).unwrap_or_else(|_| json!(s)),
        Value::BoolArray(a) => list(a, |b| json!(b)),
        Value::Int64Array(a) => list(a, |i| json!(i)),
        Value::Float32Array(a) => list(a, |f| float(f64::from(*f))),
        Value::Float64Array(a) => list(a, |f| float(*f)),
        Value::NumericArray(a) | Value::StringArray(a) => list(a, |s| json!(s)),
        Value::BytesArray(a) => list(a, |b| json!(base64(b))),
        Value::DateArray(a) => list(a, |d| json!(date_text(*d))),
        Value::TimestampArray(a) => list(a, |t| json!(timestamp_text(*t))),
        Value::JsonArray(a) => list(a, |s| serde_json::from_str(s).unwrap_or_else(|_| json!(s))),
    }
}

fn float(f: f64) -> Json {
    serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number)
}

fn base64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerhost_sdk::testing::EventBuilder;

    #[test]
    fn an_event_is_its_id_table_op_time_and_fields() {
        let e = EventBuilder::new("orders")
            .key("id", 7i64)
            .field("client", "c1")
            .field("price", 1.5f64)
            .field("blob", vec![1u8, 2, 3])
            .commit_ts(1_700_000_000_000_001)
            .build();
        let j: Json = serde_json::from_slice(&event_json(&e)).unwrap();
        assert_eq!(j["id"], json!(e.id));
        assert_eq!(j["table"], "orders");
        assert_eq!(j["op"], "upsert");
        assert_eq!(j["deleted"], false);
        assert_eq!(j["commit_ts"], 1_700_000_000_000_001i64);
        assert_eq!(j["commit_time"], "2023-11-14T22:13:20.000001Z");
        assert_eq!(j["key"], json!({"id": 7}));
        assert_eq!(
            j["fields"],
            json!({"id": 7, "client": "c1", "price": 1.5, "blob": "AQID"})
        );
        let gone = EventBuilder::new("orders")
            .key("id", 7i64)
            .deleted()
            .build();
        let j: Json = serde_json::from_slice(&event_json(&gone)).unwrap();
        assert_eq!(
            (j["op"].as_str(), j["deleted"].as_bool()),
            (Some("delete"), Some(true))
        );
    }

    #[test]
    fn typed_values_have_their_json_form() {
        assert_eq!(value(&Value::Numeric("12.50".into())), json!("12.50"));
        assert_eq!(value(&Value::Date(0)), json!("1970-01-01"));
        assert_eq!(value(&Value::Date(-1)), json!("1969-12-31"));
        assert_eq!(value(&Value::Date(19_723)), json!("2024-01-01"));
        assert_eq!(
            value(&Value::Timestamp(-1)),
            json!("1969-12-31T23:59:59.999999Z")
        );
        assert_eq!(value(&Value::Json("{\"a\":1}".into())), json!({"a": 1}));
        assert_eq!(value(&Value::Float64(f64::NAN)), Json::Null);
        assert_eq!(
            value(&Value::Int64Array(vec![Some(1), None])),
            json!([1, null])
        );
    }
}
