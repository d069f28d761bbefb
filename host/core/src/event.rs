//! Rows and events as the host handles them natively (the WIT types mirror these).

use std::fmt::{self, Write as _};

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
        Self::of(table, key, commit_ts)
    }

    /// [`EventId::new`] from the key values where they stand (the fields of a decoded row),
    /// written into one string.
    pub fn of<'a>(table: &str, key: impl IntoIterator<Item = &'a Value>, commit_ts: i64) -> Self {
        let mut id = String::with_capacity(table.len() + 40);
        id.push_str(table);
        id.push('/');
        encode_key_into(&mut id, key);
        id.push('/');
        id.push_str(itoa::Buffer::new().format(commit_ts));
        EventId(id)
    }

    /// The key part of this id as [`encode_key`] wrote it, given the id's table (its escapes
    /// keep every '/' out of it, so the last '/' starts the commit timestamp).
    pub fn key_part(&self, table: &str) -> Option<&str> {
        let rest = self.0.strip_prefix(table)?.strip_prefix('/')?;
        rest.get(..rest.rfind('/')?)
    }

    /// The commit timestamp's decimal text at the end of this id (what the `commit_ts`
    /// attribute carries).
    pub fn commit_ts_part(&self) -> Option<&str> {
        self.0.rsplit_once('/').map(|(_, ts)| ts)
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
    encode_key_into(&mut out, key);
    out
}

/// [`encode_key`], appended to `out`. Only text can hold the three escaped characters:
/// numbers, dates and hex are written as they are.
fn encode_key_into<'a>(out: &mut String, key: impl IntoIterator<Item = &'a Value>) {
    for (i, v) in key.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Writing into a String cannot fail.
        let _ = match v {
            Value::Null => out.write_str("~null"),
            Value::Bool(b) => write!(out, "{b}"),
            Value::Int64(n) => {
                out.push_str(itoa::Buffer::new().format(*n));
                Ok(())
            }
            Value::Float32(x) => write!(out, "{x}"),
            Value::Float64(x) => write!(out, "{x}"),
            Value::Numeric(s) | Value::String(s) | Value::Json(s) => {
                for ch in s.chars() {
                    match ch {
                        '%' => out.push_str("%25"),
                        ',' => out.push_str("%2C"),
                        '/' => out.push_str("%2F"),
                        c => out.push(c),
                    }
                }
                Ok(())
            }
            Value::Bytes(b) => b.iter().try_for_each(|x| write!(out, "{x:02x}")),
            Value::Date(d) => write!(out, "{d}"),
            Value::Timestamp(t) => {
                out.push_str(itoa::Buffer::new().format(*t));
                Ok(())
            }
            Value::Array(..) => out.write_str("~array"),
        };
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Event ids are stored (ledger attributes, archives, views): their encoding is a
    /// format, pinned here for every type.
    #[test]
    fn keys_and_ids_encode_exactly_as_stored() {
        let key = [
            Value::Null,
            Value::Bool(true),
            Value::Int64(-5),
            Value::Float32(1.5),
            Value::Float64(-0.25),
            Value::Numeric("12.50".into()),
            Value::String("a,b/c%d".into()),
            Value::Bytes(vec![0x0a, 0xff]),
            Value::Date(19_000),
            Value::Timestamp(1_700_000_000_000_000),
            Value::Json("{\"k\":1}".into()),
            Value::Array(ColumnType::Int64, vec![Value::Int64(1)]),
        ];
        let encoded = "~null,true,-5,1.5,-0.25,12.50,a%2Cb%2Fc%25d,0aff,19000,\
                       1700000000000000,{\"k\":1},~array";
        assert_eq!(encode_key(&key), encoded);
        assert_eq!(
            EventId::new("orders", &key, 42).0,
            format!("orders/{encoded}/42")
        );
        let fields: Vec<Field> = key
            .iter()
            .map(|v| Field {
                name: "c".into(),
                value: v.clone(),
            })
            .collect();
        assert_eq!(
            EventId::of("orders", fields.iter().map(|f| &f.value), 42),
            EventId::new("orders", &key, 42)
        );
        assert_eq!(EventId::new("t", &[], -1).0, "t//-1");
        assert_eq!(
            EventId::new("orders", &key, 42).key_part("orders"),
            Some(encoded)
        );
        assert_eq!(EventId::new("t", &[], -1).key_part("t"), Some(""));
        assert_eq!(EventId::new("t", &key, 1).key_part("other"), None);
    }
}
