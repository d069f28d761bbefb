//! The event a consumer handles, as contract 0.2 delivers it: the batch's schema once (shared
//! by every event of the batch) and each event's values by column position. Accessors by
//! name ([`crate::EventExt`]) find a column's position in the shared schema; nothing is
//! copied per event.

use std::borrow::Cow;
use std::sync::Arc;

use ledgerhost_manifest::attributes::{self as standard, Standard};

use crate::Value;
use crate::bindings::consumer::ledgerhost::plugin0_2_0::events as wit;

pub use wit::{Column, ScalarType};

/// What every event of one batch shares: its table, writer schema and the columns it carries
/// (those `subscription.columns` names, or all of them).
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    /// Source table name.
    pub table: Arc<str>,
    /// Fingerprint of the Avro writer schema (hex).
    pub fingerprint: String,
    /// The columns, in the order of each event's values.
    pub columns: Vec<Column>,
}

impl Schema {
    /// The position of a column in each event's values; `None` when the batch does not
    /// carry it (the table has no such column, or `subscription.columns` does not name it).
    pub fn position(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// One committed row of a source table.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Deterministic id: table, primary key and commit timestamp. A redelivery has the same id.
    pub id: String,
    /// Source table name (shared with the batch's schema).
    pub table: Arc<str>,
    /// Commit timestamp, microseconds since the Unix epoch.
    pub commit_ts: i64,
    /// True when the row was deleted (a tombstone); the values are its last ones.
    pub deleted: bool,
    /// The raw Avro container; empty unless the manifest says `subscription.avro = true`.
    pub avro: Vec<u8>,
    /// The ledger attributes the host sent: those the batch and event do not already say.
    /// The four standard ones (`table`, `commit_ts`, `event_id`, `schema_fingerprint`) are
    /// left out when their value is the derived one, which is the usual case, so this is
    /// normally empty; [`Event::ledger_attributes`] gives all of them (what
    /// [`crate::ledger::message_of`] republishes) and [`crate::EventExt::attribute`] reads
    /// any one. Empty unless the manifest says `subscription.attributes = true`.
    pub attributes: Vec<(String, String)>,
    /// True when the host sent attributes (`subscription.attributes = true`), so the standard
    /// four exist and are restored.
    attributes_sent: bool,
    schema: Arc<Schema>,
    values: Vec<Value>,
}

impl Event {
    /// An event of `schema` with one value per column (for [`crate::testing`] and adapters).
    pub fn new(
        schema: Arc<Schema>,
        id: String,
        commit_ts: i64,
        deleted: bool,
        values: Vec<Value>,
    ) -> Event {
        Event {
            id,
            table: schema.table.clone(),
            commit_ts,
            deleted,
            avro: Vec::new(),
            attributes: Vec::new(),
            attributes_sent: false,
            schema,
            values,
        }
    }

    /// What the standard attributes derive from: the batch's table and fingerprint, the
    /// event's commit timestamp and id.
    fn standard(&self) -> Standard<'_> {
        Standard {
            table: &self.schema.table,
            commit_ts: self.commit_ts,
            event_id: &self.id,
            schema_fingerprint: &self.schema.fingerprint,
        }
    }

    /// Every ledger attribute of the event, as the ledger message holds them: the four
    /// standard ones restored from the batch and event, then those the host sent
    /// ([`Event::attributes`]). Empty when the manifest does not ask for attributes.
    pub fn ledger_attributes(&self) -> Vec<(String, String)> {
        if !self.attributes_sent {
            return Vec::new();
        }
        self.standard().restore(&self.attributes)
    }

    /// One ledger attribute, the standard ones included (see [`Event::ledger_attributes`]).
    pub(crate) fn find_attribute(&self, name: &str) -> Option<Cow<'_, str>> {
        if let Some((_, v)) = self.attributes.iter().find(|(k, _)| k == name) {
            return Some(Cow::Borrowed(v));
        }
        if !self.attributes_sent {
            return None;
        }
        let s = self.standard();
        match name {
            standard::TABLE => Some(Cow::Borrowed(s.table)),
            standard::EVENT_ID => Some(Cow::Borrowed(s.event_id)),
            standard::SCHEMA_FINGERPRINT => Some(Cow::Borrowed(s.schema_fingerprint)),
            _ => s.value(name).map(Cow::Owned),
        }
    }

    /// The event as a 0.2 host delivers it to a manifest that asks for the Avro (`avro`) and
    /// the attributes (`attributes`): of the attributes only those the plugin cannot derive,
    /// by the host's rule (`ledgerhost_manifest::attributes`). For [`crate::testing`]'s
    /// `MockHost`, which exists only off wasm32.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn delivered(mut self, avro: bool, attributes: bool) -> Event {
        if !avro {
            self.avro = Vec::new();
        }
        let mut sent = std::mem::take(&mut self.attributes);
        if attributes {
            let derived = self.standard();
            sent.retain(|(k, v)| !derived.derives(k, v));
            self.attributes = sent;
        }
        self.attributes_sent = attributes;
        self
    }

    /// The batch's schema.
    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// The values, one per column of [`Event::schema`].
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// The value at a column position ([`Schema::position`]).
    pub fn value_at(&self, position: usize) -> Option<&Value> {
        self.values.get(position)
    }

    /// Each column's name with its value, in the batch's column order.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.schema
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .zip(&self.values)
    }

    /// The primary-key columns the batch carries, with their values, in column order.
    pub fn key_fields(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.schema
            .columns
            .iter()
            .zip(&self.values)
            .filter(|(c, _)| c.key)
            .map(|(c, v)| (c.name.as_str(), v))
    }

    /// The fingerprint of the Avro writer schema.
    pub fn schema_fingerprint(&self) -> &str {
        &self.schema.fingerprint
    }

    /// The events of a batch as the host delivered it: the schema is shared, the values
    /// are moved (no copy).
    pub fn from_batch(batch: wit::Batch) -> Vec<Event> {
        let schema = Arc::new(Schema {
            table: batch.table.into(),
            fingerprint: batch.schema_fingerprint,
            columns: batch.columns,
        });
        batch
            .events
            .into_iter()
            .map(|e| Event {
                id: e.id,
                table: schema.table.clone(),
                commit_ts: e.commit_ts,
                deleted: e.deleted,
                avro: e.avro.unwrap_or_default(),
                attributes_sent: e.attributes.is_some(),
                attributes: e.attributes.unwrap_or_default(),
                schema: schema.clone(),
                values: e.values,
            })
            .collect()
    }

    /// Sets the Avro and attributes (as a host with `subscription.avro`/`.attributes` does);
    /// a standard attribute `attributes` lacks reads as its derived value.
    pub fn with_raw(mut self, avro: Vec<u8>, attributes: Vec<(String, String)>) -> Event {
        self.avro = avro;
        self.attributes = attributes;
        self.attributes_sent = true;
        self
    }
}
