//! Native test support: [`EventBuilder`] builds events as the host delivers them, and
//! [`MockHost`] stands in for the host's capabilities so a plugin's `handle` runs unchanged
//! under `cargo test`.
//!
//! ```
//! use ledgerhost_sdk::testing::EventBuilder;
//! use ledgerhost_sdk::EventExt;
//!
//! let e = EventBuilder::new("orders").key("id", 7).field("amount", 1200).commit_ts(5).build();
//! assert_eq!(e.i64("amount"), Some(1200));
//! assert_eq!(e.id, "orders/7/5");
//! ```

use std::sync::Arc;

use crate::{Column, Event, Field, ScalarType, Schema, Value};

#[cfg(not(target_arch = "wasm32"))]
#[path = "mock.rs"]
pub(crate) mod mock;
#[cfg(not(target_arch = "wasm32"))]
pub use mock::{Capability, MockHost};

/// Builds an [`Event`] the way the host would deliver it (id, key, attributes).
#[derive(Debug, Clone)]
pub struct EventBuilder {
    table: String,
    key: Vec<Field>,
    fields: Vec<Field>,
    commit_ts: i64,
    deleted: bool,
    avro: Vec<u8>,
    attributes: Vec<(String, String)>,
}

impl EventBuilder {
    /// An event of `table` with commit timestamp 1.
    pub fn new(table: &str) -> Self {
        EventBuilder {
            table: table.to_string(),
            key: Vec::new(),
            fields: Vec::new(),
            commit_ts: 1,
            deleted: false,
            avro: Vec::new(),
            attributes: Vec::new(),
        }
    }

    /// A primary-key column (also added to the fields).
    pub fn key(mut self, name: &str, value: impl Into<Value>) -> Self {
        let value = value.into();
        self.key.push(Field {
            name: name.to_string(),
            value: value.clone(),
        });
        self.fields.push(Field {
            name: name.to_string(),
            value,
        });
        self
    }

    /// A non-key column.
    pub fn field(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.fields.push(Field {
            name: name.to_string(),
            value: value.into(),
        });
        self
    }

    /// The commit timestamp (µs since the epoch).
    pub fn commit_ts(mut self, ts: i64) -> Self {
        self.commit_ts = ts;
        self
    }

    /// Marks the event as a tombstone.
    pub fn deleted(mut self) -> Self {
        self.deleted = true;
        self
    }

    /// The raw Avro bytes to carry.
    pub fn avro(mut self, bytes: Vec<u8>) -> Self {
        self.avro = bytes;
        self
    }

    /// An extra ledger attribute.
    pub fn attribute(mut self, name: &str, value: &str) -> Self {
        self.attributes.push((name.to_string(), value.to_string()));
        self
    }

    /// The event, with a schema of its own columns (key columns first, then the fields,
    /// in the order added); a column's type is its value's (NULL reads as STRING).
    pub fn build(self) -> Event {
        let key = encode_key(&self.key);
        let id = format!("{}/{key}/{}", self.table, self.commit_ts);
        let mut attributes = vec![
            ("table".to_string(), self.table.clone()),
            ("commit_ts".to_string(), self.commit_ts.to_string()),
            ("event_id".to_string(), id.clone()),
            ("schema_fingerprint".to_string(), "test".to_string()),
        ];
        attributes.extend(self.attributes);
        let columns = self
            .fields
            .iter()
            .map(|f| {
                let (kind, array) = kind_of(&f.value);
                Column {
                    name: f.name.clone(),
                    kind,
                    array,
                    key: self.key.iter().any(|k| k.name == f.name),
                }
            })
            .collect();
        let schema = Arc::new(Schema {
            table: self.table.as_str().into(),
            fingerprint: "test".to_string(),
            columns,
        });
        let values = self.fields.into_iter().map(|f| f.value).collect();
        Event::new(schema, id, self.commit_ts, self.deleted, values).with_raw(self.avro, attributes)
    }
}

/// The column type a value says (NULL says none: STRING).
fn kind_of(v: &Value) -> (ScalarType, bool) {
    use ScalarType as S;
    match v {
        Value::Null | Value::String(_) => (S::String, false),
        Value::Bool(_) => (S::Bool, false),
        Value::Int64(_) => (S::Int64, false),
        Value::Float32(_) => (S::Float32, false),
        Value::Float64(_) => (S::Float64, false),
        Value::Numeric(_) => (S::Numeric, false),
        Value::Bytes(_) => (S::Bytes, false),
        Value::Date(_) => (S::Date, false),
        Value::Timestamp(_) => (S::Timestamp, false),
        Value::Json(_) => (S::Json, false),
        Value::BoolArray(_) => (S::Bool, true),
        Value::Int64Array(_) => (S::Int64, true),
        Value::Float32Array(_) => (S::Float32, true),
        Value::Float64Array(_) => (S::Float64, true),
        Value::NumericArray(_) => (S::Numeric, true),
        Value::StringArray(_) => (S::String, true),
        Value::BytesArray(_) => (S::Bytes, true),
        Value::DateArray(_) => (S::Date, true),
        Value::TimestampArray(_) => (S::Timestamp, true),
        Value::JsonArray(_) => (S::Json, true),
    }
}

/// The host's key encoding (`ledgerhost_core::event::encode_key`, checked against it in
/// this crate's tests): parts joined by ',', each escaping '%', ',' and '/'.
fn encode_key(key: &[Field]) -> String {
    let parts: Vec<String> = key
        .iter()
        .map(|f| {
            let raw = match &f.value {
                Value::Null => "~null".to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Int64(v) => v.to_string(),
                Value::Float32(x) => x.to_string(),
                Value::Float64(x) => x.to_string(),
                Value::String(s) | Value::Numeric(s) | Value::Json(s) => s.clone(),
                Value::Bytes(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
                Value::Date(d) => d.to_string(),
                Value::Timestamp(t) => t.to_string(),
                _ => "~array".to_string(),
            };
            raw.replace('%', "%25")
                .replace(',', "%2C")
                .replace('/', "%2F")
        })
        .collect();
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventExt;

    #[test]
    fn builder_matches_the_host_encoding() {
        let e = EventBuilder::new("orders")
            .key("region", "eu/west")
            .key("id", 7)
            .field("amount", 12.5)
            .field("paid", true)
            .commit_ts(99)
            .build();
        assert_eq!(e.id, "orders/eu%2Fwest,7/99");
        assert_eq!(e.ordering_key(), "eu%2Fwest,7");
        assert_eq!(e.f64("amount"), Some(12.5));
        assert_eq!(e.bool("paid"), Some(true));
        assert_eq!(e.str("region"), Some("eu/west"));
        assert_eq!(e.i64("missing"), None);
        assert_eq!(e.attribute("table").as_deref(), Some("orders"));
    }
}
