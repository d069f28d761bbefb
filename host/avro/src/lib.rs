//! Avro for ledgerhost: the record schema derived from a table, one object container per row
//! (so the schema travels with every event), and decoding back into [`Event`]s.
//!
//! The encoder and decoder are hand-written over [`Value`] for speed: the container header
//! (magic, metadata with the schema, sync marker) is built once per schema and copied per row,
//! and the sync marker is derived from the schema so re-encoding a row is byte-identical.
//! `apache-avro` is used to validate schemas and compute the standard Rabin fingerprint, and in
//! tests to prove other Avro readers read our containers.
//!
//! Value conventions a consumer sees after [`Decoder::decode`]:
//! - NUMERIC travels as Avro `decimal(38, 9)` bytes, so only the value survives, not the
//!   written text: decoded numerics are the shortest exact decimal text (trailing fractional
//!   zeros and a trailing point stripped, no `+`, no leading zeros): `"12.50"` → `"12.5"`,
//!   `"-000.100"` → `"-0.1"`, `"3.000"` → `"3"`. Compare numerics by value or by this form.
//! - Arrays decode as `Value::Array(element type, items)`, items possibly `Value::Null`.
//! - The commit-timestamp column always holds the row's commit timestamp.
//!
//! The fingerprint is the Avro-specified one (Rabin of the Parsing Canonical Form), which
//! ignores logical types and custom properties: two schemas differing only in NUMERIC vs
//! BYTES, JSON vs STRING, or in the `ledgerhost.*` properties share it. The decoder
//! therefore caches writer schemas by their full text, never by fingerprint.

mod codec;
mod compat;
mod error;
mod schema;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use ledgerhost_core::ledger::ordering::{Ordering, OrderingKeys};
use ledgerhost_core::ledger::{Batch, Message, attr, limits};
use ledgerhost_core::source::Row;
use ledgerhost_core::{Event, EventId, Field, TableSchema, Value};

pub use compat::{Incompatibility, check_compatible};
pub use error::AvroError;
pub use schema::{AvroSchema, schema_for, table_schema_from_json};

/// Encodes rows of one table schema as single-record Avro object containers.
#[derive(Debug, Clone)]
pub struct Encoder {
    table: TableSchema,
    schema: AvroSchema,
    /// An empty batch of this schema's rows: the container header as its prefix, the table
    /// and fingerprint attributes shared.
    empty: Batch,
    sync: [u8; 16],
    key_indexes: Vec<usize>,
    commit_ts_index: usize,
    ordering: OrderingKeys,
}

impl Encoder {
    /// Prepares the encoder (derives and validates the schema, builds the header).
    pub fn new(table: &TableSchema) -> Result<Self, AvroError> {
        let schema = schema_for(table)?;
        let sync = codec::sync_marker(&schema.fingerprint);
        let header = codec::container_header(schema.json.as_bytes(), &sync);
        let commit_ts_index =
            table
                .column_index(&table.commit_ts_column)
                .ok_or_else(|| AvroError::Schema {
                    table: table.name.clone(),
                    message: format!(
                        "commit-timestamp column `{}` is not a column of the table",
                        table.commit_ts_column
                    ),
                })?;
        let key_indexes = table.key_indexes();
        if key_indexes.len() != table.primary_key.len() || key_indexes.is_empty() {
            return Err(AvroError::Schema {
                table: table.name.clone(),
                message: "every primary-key column must be a column of the table".into(),
            });
        }
        let shared = [
            (attr::TABLE.to_string(), table.name.clone()),
            (
                attr::SCHEMA_FINGERPRINT.to_string(),
                schema.fingerprint.clone(),
            ),
        ];
        // A table name longer than Pub/Sub takes as an attribute value is refused here,
        // before any row.
        let empty =
            Batch::new(header, shared.into_iter().collect()).map_err(|e| AvroError::Schema {
                table: table.name.clone(),
                message: format!("its events could not be published: {e}"),
            })?;
        Ok(Encoder {
            table: table.clone(),
            schema,
            empty,
            sync,
            key_indexes,
            commit_ts_index,
            ordering: OrderingKeys::new(Ordering::default()),
        })
    }

    /// Derives ordering keys with `ordering` instead of the default (see
    /// [`ledgerhost_core::ledger::ordering`]); every publisher of one ledger must use the same.
    pub fn with_ordering(mut self, ordering: Ordering) -> Self {
        self.ordering = OrderingKeys::new(ordering);
        self
    }

    /// The derived schema.
    pub fn schema(&self) -> &AvroSchema {
        &self.schema
    }

    /// One Avro container holding `row`, as a ledger message with ordering key and attributes.
    pub fn encode(&self, row: &Row) -> Result<Message, AvroError> {
        let mut batch = self.batch();
        self.encode_into(&mut batch, row)?;
        Ok(batch
            .to_messages()
            .pop()
            .expect("the row was added to the batch"))
    }

    /// An empty batch for this encoder's rows ([`Encoder::encode_into`]): what every message
    /// shares, stored once (the container header; the table and schema fingerprint
    /// attributes).
    pub fn batch(&self) -> Batch {
        self.empty.clone()
    }

    /// Adds `row` to `batch` (made by [`Encoder::batch`] of this encoder) as one Avro
    /// container, with its ordering key and its own attributes (commit timestamp, event id).
    /// On an error the batch is as it was.
    pub fn encode_into(&self, batch: &mut Batch, row: &Row) -> Result<(), AvroError> {
        let t = &self.table;
        let row_error = |message: String| AvroError::Value {
            table: t.name.clone(),
            column: "*".into(),
            message,
        };
        if row.values.len() != t.columns.len() {
            return Err(row_error(format!(
                "row has {} values for {} columns",
                row.values.len(),
                t.columns.len()
            )));
        }
        if batch.prefix() != self.empty.prefix() {
            return Err(row_error(
                "the batch was made for another schema (Encoder::batch of this encoder)".into(),
            ));
        }
        let id = EventId::of(
            &t.name,
            self.key_indexes.iter().map(|i| &row.values[*i]),
            row.commit_ts,
        );
        // The key encoded once, for the id and the ordering key.
        let ordering_key = self
            .ordering
            .key_for(id.key_part(&t.name).unwrap_or_default());
        let event_id = limits::fit_event_id(&id.0);
        let commit_ts = id.commit_ts_part().unwrap_or_default();
        let own = [(attr::COMMIT_TS, commit_ts), (attr::EVENT_ID, &*event_id)];
        let mut record = batch
            .begin(&ordering_key, &own)
            .map_err(|e| row_error(e.to_string()))?;
        let data_start = record.data_start();
        let data = record.buf();
        // The container after its header, written in place: a gap for the block's two
        // varints (count and size, known once the datum is written), the datum, the sync
        // marker; the gap is then closed by moving the datum back (tens of bytes, not a
        // second buffer).
        let gap = data_start;
        data.resize(gap + BLOCK_PREFIX_MAX, 0);
        for (i, (column, value)) in t.columns.iter().zip(&row.values).enumerate() {
            // The commit timestamp is the row's, whatever the column's stored representation.
            let ts_value;
            let value = if i == self.commit_ts_index {
                ts_value = match column.ty {
                    ledgerhost_core::ColumnType::Timestamp => Value::Timestamp(row.commit_ts),
                    _ => Value::Int64(row.commit_ts),
                };
                &ts_value
            } else {
                value
            };
            codec::write_column(data, column, value).map_err(|message| AvroError::Value {
                table: t.name.clone(),
                column: column.name.clone(),
                message,
            })?;
        }
        let datum_len = data.len() - gap - BLOCK_PREFIX_MAX;
        let mut block = [0u8; BLOCK_PREFIX_MAX];
        let n = codec::write_long_into(&mut block, 0, 1);
        let n = codec::write_long_into(&mut block, n, datum_len as i64);
        data[gap + BLOCK_PREFIX_MAX - n..gap + BLOCK_PREFIX_MAX].copy_from_slice(&block[..n]);
        data.drain(gap..gap + BLOCK_PREFIX_MAX - n);
        data.extend_from_slice(&self.sync);
        record.finish().map_err(|e| row_error(e.to_string()))
    }
}

/// What decoding needs to know about one writer schema, parsed once and cached.
#[derive(Debug)]
struct Layout {
    table: TableSchema,
    /// The column names, shared by every event decoded with this layout.
    names: Vec<Arc<str>>,
    fingerprint: String,
    key_indexes: Vec<usize>,
    commit_ts_index: usize,
    deleted_index: Option<usize>,
}

/// Cached layouts, found by the container's sync marker and schema length first (cheap)
/// and confirmed by comparing the schema text, so the text is never hashed per event.
type LayoutCache = HashMap<([u8; 16], usize), Vec<(Box<[u8]>, Arc<Layout>)>>;

/// Bound on cached writer schemas; a flood of distinct schemas only costs re-parsing.
const MAX_CACHED_SCHEMAS: usize = 1024;

/// Room for a data block's prefix: its record count and its size, two Avro longs.
const BLOCK_PREFIX_MAX: usize = 2 * codec::MAX_LONG_BYTES;

/// Decodes ledgerhost Avro containers into events. Schemas are parsed once and cached;
/// share one decoder between tasks.
#[derive(Debug, Default)]
pub struct Decoder {
    layouts: RwLock<LayoutCache>,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Decoder::default()
    }

    fn layout(&self, container: &codec::Container<'_>) -> Result<Arc<Layout>, AvroError> {
        let schema_json = container.schema_json;
        let slot = (container.sync, schema_json.len());
        if let Some(candidates) = self
            .layouts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&slot)
            && let Some((_, l)) = candidates.iter().find(|(s, _)| **s == *schema_json)
        {
            return Ok(l.clone());
        }
        let text = std::str::from_utf8(schema_json)
            .map_err(|_| AvroError::malformed("", "schema is not UTF-8"))?;
        let table = table_schema_from_json(text)?;
        let (_, fingerprint) = schema::parse_with_fingerprint(text)
            .map_err(|m| AvroError::malformed(&format!("table {}", table.name), m))?;
        let commit_ts_index = table.column_index(&table.commit_ts_column).ok_or_else(|| {
            AvroError::malformed(&table.name, "commit-timestamp column missing from schema")
        })?;
        let layout = Arc::new(Layout {
            names: table
                .columns
                .iter()
                .map(|c| Arc::from(c.name.as_str()))
                .collect(),
            key_indexes: table.key_indexes(),
            deleted_index: table
                .deleted_column
                .as_deref()
                .and_then(|c| table.column_index(c)),
            commit_ts_index,
            fingerprint,
            table,
        });
        let mut cache = self.layouts.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED_SCHEMAS {
            cache.clear();
        }
        cache
            .entry(slot)
            .or_default()
            .push((schema_json.into(), layout.clone()));
        Ok(layout)
    }

    /// Decodes one container (one record) into an event; `attributes` are the ledger's.
    pub fn decode(&self, data: &[u8], attributes: &[(String, String)]) -> Result<Event, AvroError> {
        self.decode_with(data, || {
            attributes.iter().map(|(k, v)| (k.as_str(), v.as_str()))
        })
    }

    /// Decodes a delivered message: its data, its attributes copied once into the event.
    pub fn decode_message(&self, message: &Message) -> Result<Event, AvroError> {
        self.decode_with(&message.data, || {
            message
                .attributes
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
        })
    }

    /// The one decoder. `attributes()` walks the ledger's attributes; nothing is formatted
    /// or copied for an error's context unless there is an error.
    fn decode_with<'a, I>(
        &self,
        data: &[u8],
        attributes: impl Fn() -> I,
    ) -> Result<Event, AvroError>
    where
        I: Iterator<Item = (&'a str, &'a str)>,
    {
        let event_id = || {
            attributes()
                .find(|(k, _)| *k == attr::EVENT_ID)
                .map(|(_, v)| v)
        };
        let container = codec::read_container(data).map_err(|m| {
            AvroError::malformed(
                &event_id().map(|v| format!("event {v}")).unwrap_or_default(),
                m,
            )
        })?;
        let layout = self.layout(&container)?;
        let t = &layout.table;
        let ctx = || match event_id() {
            Some(v) => format!("event {v}"),
            None => format!("table {}", t.name),
        };
        let mut reader = codec::Reader::new(container.datum);
        let mut fields = Vec::with_capacity(t.columns.len());
        for (column, name) in t.columns.iter().zip(&layout.names) {
            let value = reader.read_column(column).map_err(|m| {
                AvroError::malformed(&ctx(), format!("column {}: {m}", column.name))
            })?;
            fields.push(Field {
                name: name.clone(),
                value,
            });
        }
        if !reader.is_empty() {
            return Err(AvroError::malformed(
                &ctx(),
                "trailing bytes after the record",
            ));
        }
        let commit_ts = match &fields[layout.commit_ts_index].value {
            Value::Int64(v) | Value::Timestamp(v) => *v,
            other => {
                return Err(AvroError::malformed(
                    &ctx(),
                    format!("commit timestamp is {other:?}, not a timestamp"),
                ));
            }
        };
        let key: Vec<Field> = layout
            .key_indexes
            .iter()
            .map(|i| fields[*i].clone())
            .collect();
        let deleted = layout
            .deleted_index
            .is_some_and(|i| matches!(fields[i].value, Value::Bool(true) | Value::Int64(1)));
        let id = EventId::of(&t.name, key.iter().map(|f| &f.value), commit_ts);
        let mut attrs: Vec<(String, String)> = Vec::with_capacity(attributes().count() + 4);
        attrs.extend(attributes().map(|(k, v)| (k.to_string(), v.to_string())));
        // The standard attributes the ledger did not carry, derived (each built only when
        // missing: a poller's message carries all four).
        let missing = |attrs: &[(String, String)], k: &str| !attrs.iter().any(|(a, _)| a == k);
        if missing(&attrs, attr::TABLE) {
            attrs.push((attr::TABLE.to_string(), t.name.clone()));
        }
        if missing(&attrs, attr::COMMIT_TS) {
            attrs.push((attr::COMMIT_TS.to_string(), commit_ts.to_string()));
        }
        if missing(&attrs, attr::EVENT_ID) {
            attrs.push((attr::EVENT_ID.to_string(), id.0.clone()));
        }
        if missing(&attrs, attr::SCHEMA_FINGERPRINT) {
            attrs.push((
                attr::SCHEMA_FINGERPRINT.to_string(),
                layout.fingerprint.clone(),
            ));
        }
        Ok(Event {
            id,
            table: t.name.clone(),
            commit_ts,
            key,
            fields,
            deleted,
            schema_fingerprint: layout.fingerprint.clone(),
            avro: data.to_vec(),
            attributes: attrs,
        })
    }
}

/// The table schema a container was written with (for readers holding only archived Avro).
pub fn table_schema_of(data: &[u8]) -> Result<TableSchema, AvroError> {
    let container = codec::read_container(data).map_err(|m| AvroError::malformed("", m))?;
    let text = std::str::from_utf8(container.schema_json)
        .map_err(|_| AvroError::malformed("", "schema is not UTF-8"))?;
    table_schema_from_json(text)
}

#[cfg(test)]
mod tests;
