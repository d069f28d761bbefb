//! Rows and events as the host handles them natively (the WIT types mirror these).

use std::fmt;

use crate::ColumnType;

/// One column value. Arrays carry their element type (so an empty or all-NULL array keeps
/// it); elements may be [`Value::Null`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    Int64(i64),
    /// A single-precision float.
    Float32(f32),
    /// A double-precision float.
    Float64(f64),
    /// Exact decimal text, e.g. "12.50".
    Numeric(String),
    /// UTF-8 text.
    String(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since the Unix epoch, UTC.
    Timestamp(i64),
    /// JSON document text.
    Json(String),
    /// Array of a scalar type; the [`ColumnType`] is the element type.
    Array(ColumnType, Vec<Value>),
}

/// A named value.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// Column name.
    pub name: std::sync::Arc<str>,
    /// Column value.
    pub value: Value,
}

/// Deterministic identity of an event: table, primary key and commit timestamp.
/// A redelivery or a replay of the same row version carries the same id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(pub String);

impl EventId {
    /// Builds the id `table/key/commit_ts`, the key being [`encode_key`] of the key values.
    pub fn new(table: &str, key: &[Value], commit_ts: i64) -> Self {
        EventId(format!("{table}/{}/{commit_ts}", encode_key(key)))
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Encodes primary-key values as a stable string, used as ordering key and in event ids.
/// Parts are joined by ',' and each part escapes '%', ',' and '/' so the encoding is injective.
pub fn encode_key(key: &[Value]) -> String {
    let mut out = String::new();
    for (i, v) in key.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let part = match v {
            Value::Null => "~null".to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Int64(n) => n.to_string(),
            Value::Float32(x) => x.to_string(),
            Value::Float64(x) => x.to_string(),
            Value::Numeric(s) | Value::String(s) | Value::Json(s) => s.clone(),
            Value::Bytes(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
            Value::Date(d) => d.to_string(),
            Value::Timestamp(t) => t.to_string(),
            Value::Array(..) => "~array".to_string(),
        };
        for ch in part.chars() {
            match ch {
                '%' => out.push_str("%25"),
                ',' => out.push_str("%2C"),
                '/' => out.push_str("%2F"),
                c => out.push(c),
            }
        }
    }
    out
}

/// A decoded event: one committed version of one source row.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Deterministic id of this row version (see [`EventId`]).
    pub id: EventId,
    /// Source table the row belongs to.
    pub table: String,
    /// Commit timestamp, microseconds since the Unix epoch.
    pub commit_ts: i64,
    /// Primary-key fields, in key order.
    pub key: Vec<Field>,
    /// Every column, in table order.
    pub fields: Vec<Field>,
    /// True for a tombstone (soft-deleted row).
    pub deleted: bool,
    /// Hex fingerprint of the Avro writer schema.
    pub schema_fingerprint: String,
    /// The Avro object container exactly as carried by the ledger.
    pub avro: Vec<u8>,
    /// Ledger attributes.
    pub attributes: Vec<(String, String)>,
}

impl Event {
    /// Value of a field by name.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|f| &*f.name == name)
            .map(|f| &f.value)
    }
}

/// What a plugin answered for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Processed; settle the delivery.
    Ack,
    /// Redeliver later with backoff; dead-letter after the configured attempts.
    Retry(String),
    /// Dead-letter now with this reason.
    Reject(String),
}
