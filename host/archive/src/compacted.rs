//! The compacted file: an Avro object container file (deflate) of [`ArchivedEvent`]s.
//!
//! Each record keeps the event's own single-record container untouched (`avro`), so a span
//! whose rows changed schema midway still fits one file, and a replay publishes exactly the
//! bytes that travelled on the ledger. The other fields are what a reader needs without
//! decoding `avro`: the id, the commit time and the ordering key.

use std::cmp::Ordering;

use apache_avro::types::{Record, Value as AvroValue};
use apache_avro::{Codec, DeflateSettings, Reader, Schema, Writer};
use ledgerhost_avro::Decoder;
use ledgerhost_core::Value;
use ledgerhost_core::event::encode_key;

/// The writer schema of compacted files.
pub const COMPACTED_SCHEMA: &str = r#"{
  "type": "record",
  "name": "ArchivedEvent",
  "namespace": "ledgerhost.archive",
  "doc": "One archived ledgerhost event. `avro` is the event's own Avro object container (one record, writer schema inside), as it travelled on the ledger.",
  "fields": [
    {"name": "event_id", "type": "string"},
    {"name": "table", "type": "string"},
    {"name": "commit_ts", "type": {"type": "long", "logicalType": "timestamp-micros"}},
    {"name": "ordering_key", "type": "string"},
    {"name": "deleted", "type": "boolean"},
    {"name": "schema_fingerprint", "type": "string"},
    {"name": "avro", "type": "bytes"}
  ]
}"#;

/// Why archived bytes could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// An archived event's own container does not decode.
    #[error("archived event {what} is not a ledgerhost Avro event: {message}")]
    Event {
        /// Which archived event (its object name or event id).
        what: String,
        /// The decoder's error.
        message: String,
    },
    /// A compacted file is not what [`write_compacted`] writes.
    #[error("compacted file is unreadable: {0}")]
    Compacted(String),
}

/// One event as the archive keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchivedEvent {
    /// Deterministic id of the event (table, key, commit timestamp).
    pub event_id: String,
    /// Source table of the event.
    pub table: String,
    /// Microseconds since the epoch.
    pub commit_ts: i64,
    /// The encoded primary key (`encode_key`). Named after the field of the compacted format,
    /// from when the ledger ordered by the key itself; the ledger's ordering key derives from
    /// it (see [`ArchivedEvent::ledger_ordering_key`]).
    pub ordering_key: String,
    /// True for a tombstone (soft-deleted row).
    pub deleted: bool,
    /// Hex fingerprint of the event's Avro writer schema.
    pub schema_fingerprint: String,
    /// The primary-key values, for ordering events of one commit timestamp by key.
    pub key: Vec<Value>,
    /// The event's single-record Avro container.
    pub avro: Vec<u8>,
}

impl ArchivedEvent {
    /// The ordering key to republish this event with: the default ordering shard of its
    /// primary key, so one key's events keep their order and a replay batches like the poller.
    pub fn ledger_ordering_key(&self) -> String {
        ledgerhost_core::ledger::ordering::Ordering::default().key_for(&self.ordering_key)
    }

    /// The ledger attributes the poller gave the event.
    pub fn attributes(&self) -> Vec<(String, String)> {
        vec![
            ("table".into(), self.table.clone()),
            ("commit_ts".into(), self.commit_ts.to_string()),
            (
                "event_id".into(),
                ledgerhost_core::ledger::limits::fit_event_id(&self.event_id).into_owned(),
            ),
            ("schema_fingerprint".into(), self.schema_fingerprint.clone()),
        ]
    }
}

/// Decodes an archived event's container (`what` names it in errors, e.g. the object name).
pub fn archived_event(
    decoder: &Decoder,
    avro: &[u8],
    what: &str,
) -> Result<ArchivedEvent, FormatError> {
    let e = decoder.decode(avro, &[]).map_err(|e| FormatError::Event {
        what: what.to_string(),
        message: e.to_string(),
    })?;
    let key: Vec<Value> = e.key.into_iter().map(|f| f.value).collect();
    Ok(ArchivedEvent {
        event_id: e.id.0,
        table: e.table,
        commit_ts: e.commit_ts,
        ordering_key: encode_key(&key),
        deleted: e.deleted,
        schema_fingerprint: e.schema_fingerprint,
        key,
        avro: e.avro,
    })
}

fn rank(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Int64(_) | Value::Float32(_) | Value::Float64(_) => 2,
        Value::Date(_) | Value::Timestamp(_) => 3,
        Value::Numeric(_) | Value::String(_) | Value::Json(_) => 4,
        Value::Bytes(_) => 5,
        Value::Array(..) => 6,
    }
}

fn cmp_value(a: &Value, b: &Value) -> Ordering {
    let as_f64 = |v: &Value| match v {
        Value::Int64(n) => Some(*n as f64),
        Value::Float32(x) => Some(f64::from(*x)),
        Value::Float64(x) => Some(*x),
        _ => None,
    };
    match (a, b) {
        (Value::Int64(x), Value::Int64(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Date(x), Value::Date(y)) => x.cmp(y),
        (Value::Timestamp(x), Value::Timestamp(y)) => x.cmp(y),
        (Value::Bytes(x), Value::Bytes(y)) => x.cmp(y),
        (
            Value::Numeric(x) | Value::String(x) | Value::Json(x),
            Value::Numeric(y) | Value::String(y) | Value::Json(y),
        ) => x.cmp(y),
        _ => match (as_f64(a), as_f64(b)) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            _ => rank(a).cmp(&rank(b)),
        },
    }
}

/// Commit order: by commit timestamp, then (one transaction) by primary key, as the poller
/// publishes; the event id breaks any remaining tie so the order is total.
pub fn sort_events(events: &mut [ArchivedEvent]) {
    events.sort_by(|a, b| {
        a.commit_ts
            .cmp(&b.commit_ts)
            .then_with(|| {
                a.key
                    .iter()
                    .zip(&b.key)
                    .map(|(x, y)| cmp_value(x, y))
                    .find(|o| o.is_ne())
                    .unwrap_or(a.key.len().cmp(&b.key.len()))
            })
            .then_with(|| a.event_id.cmp(&b.event_id))
    });
}

fn schema() -> Result<Schema, FormatError> {
    Schema::parse_str(COMPACTED_SCHEMA).map_err(|e| FormatError::Compacted(e.to_string()))
}

/// Writes `events` (in the given order) as a compacted file.
pub fn write_compacted(events: &[ArchivedEvent]) -> Result<Vec<u8>, FormatError> {
    let schema = schema()?;
    let err = |e: apache_avro::Error| FormatError::Compacted(e.to_string());
    let mut writer = Writer::with_codec(
        &schema,
        Vec::new(),
        Codec::Deflate(DeflateSettings::default()),
    )
    .map_err(err)?;
    for e in events {
        let mut r = Record::new(&schema)
            .ok_or_else(|| FormatError::Compacted("the schema is not a record".into()))?;
        r.put("event_id", e.event_id.as_str());
        r.put("table", e.table.as_str());
        r.put("commit_ts", AvroValue::TimestampMicros(e.commit_ts));
        r.put("ordering_key", e.ordering_key.as_str());
        r.put("deleted", e.deleted);
        r.put("schema_fingerprint", e.schema_fingerprint.as_str());
        r.put("avro", AvroValue::Bytes(e.avro.clone()));
        writer.append_value(r).map_err(err)?;
    }
    writer.into_inner().map_err(err)
}

fn field<'a>(fields: &'a [(String, AvroValue)], name: &str) -> Result<&'a AvroValue, FormatError> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .ok_or_else(|| FormatError::Compacted(format!("a record has no `{name}`")))
}

fn string(fields: &[(String, AvroValue)], name: &str) -> Result<String, FormatError> {
    match field(fields, name)? {
        AvroValue::String(s) => Ok(s.clone()),
        other => Err(FormatError::Compacted(format!(
            "`{name}` is {other:?}, not a string"
        ))),
    }
}

/// Reads a compacted file completely (every block, every record, every inner container),
/// so a file that reads here is safe to rely on.
pub fn read_compacted(data: &[u8], decoder: &Decoder) -> Result<Vec<ArchivedEvent>, FormatError> {
    let reader = Reader::new(data).map_err(|e| FormatError::Compacted(e.to_string()))?;
    let mut out = Vec::new();
    for (i, value) in reader.enumerate() {
        let value = value.map_err(|e| FormatError::Compacted(format!("record {i}: {e}")))?;
        let AvroValue::Record(fields) = value else {
            return Err(FormatError::Compacted(format!(
                "record {i} is not a record"
            )));
        };
        let avro = match field(&fields, "avro")? {
            AvroValue::Bytes(b) => b.clone(),
            other => {
                return Err(FormatError::Compacted(format!(
                    "record {i}: `avro` is {other:?}, not bytes"
                )));
            }
        };
        let event_id = string(&fields, "event_id")?;
        // The inner container is the truth; the envelope must agree with it.
        let e = archived_event(decoder, &avro, &format!("record {i} ({event_id})"))
            .map_err(|e| FormatError::Compacted(e.to_string()))?;
        if e.event_id != event_id {
            return Err(FormatError::Compacted(format!(
                "record {i}: envelope says event {event_id} but its Avro holds {}",
                e.event_id
            )));
        }
        out.push(e);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerhost_avro::Encoder;
    use ledgerhost_core::source::Row;
    use ledgerhost_core::{Column, ColumnType, TableSchema};

    fn encoder() -> Encoder {
        let col = |name: &str, ty| Column {
            name: name.into(),
            ty,
            nullable: false,
        };
        Encoder::new(&TableSchema {
            name: "orders".into(),
            columns: vec![
                col("id", ColumnType::Int64),
                col("client_id", ColumnType::String),
                col("commit_ts", ColumnType::Int64),
            ],
            primary_key: vec!["id".into()],
            commit_ts_column: "commit_ts".into(),
            deleted_column: None,
        })
        .unwrap()
    }

    fn event(enc: &Encoder, id: i64, ts: i64) -> ArchivedEvent {
        let m = enc
            .encode(&Row {
                values: vec![
                    Value::Int64(id),
                    Value::String(format!("c{id}")),
                    Value::Int64(ts),
                ],
                commit_ts: ts,
            })
            .unwrap();
        archived_event(&Decoder::new(), &m.data, "test").unwrap()
    }

    #[test]
    fn compacted_files_round_trip_and_other_readers_read_them() {
        let enc = encoder();
        let mut events: Vec<_> = [(10, 5), (2, 5), (1, 7), (3, 4)]
            .iter()
            .map(|(id, ts)| event(&enc, *id, *ts))
            .collect();
        sort_events(&mut events);
        let order: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(
            order,
            ["orders/3/4", "orders/2/5", "orders/10/5", "orders/1/7"]
        );
        let bytes = write_compacted(&events).unwrap();
        let back = read_compacted(&bytes, &Decoder::new()).unwrap();
        assert_eq!(back, events);

        // A plain Avro reader sees a deflate container of envelope records.
        let reader = Reader::new(&bytes[..]).unwrap();
        assert_eq!(
            reader.writer_schema().name().unwrap().name(),
            "ArchivedEvent"
        );
        assert_eq!(reader.count(), 4);
        let header = String::from_utf8_lossy(&bytes[..bytes.len().min(2000)]).into_owned();
        assert!(header.contains("deflate"), "{header}");
    }

    #[test]
    fn damage_is_detected() {
        let enc = encoder();
        let bytes = write_compacted(&[event(&enc, 1, 5), event(&enc, 2, 5)]).unwrap();
        let mut cut = bytes.clone();
        cut.truncate(bytes.len() - 20);
        assert!(read_compacted(&cut, &Decoder::new()).is_err());
        assert!(read_compacted(b"not avro", &Decoder::new()).is_err());
        let mut flipped = bytes.clone();
        let n = flipped.len() - 30;
        flipped[n] ^= 0xff;
        assert!(read_compacted(&flipped, &Decoder::new()).is_err());
    }

    #[test]
    fn attributes_are_the_pollers() {
        let enc = encoder();
        let m = enc
            .encode(&Row {
                values: vec![
                    Value::Int64(9),
                    Value::String("c9".into()),
                    Value::Int64(11),
                ],
                commit_ts: 11,
            })
            .unwrap();
        let e = archived_event(&Decoder::new(), &m.data, "test").unwrap();
        let mut mine = e.attributes();
        mine.sort();
        let theirs: Vec<(String, String)> = m.attributes.into_iter().collect();
        assert_eq!(mine, theirs);
        assert_eq!(e.ledger_ordering_key(), m.ordering_key);
    }
}
