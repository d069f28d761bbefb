//! Conversions between the host's event model and the WIT types.

use ledgerhost_core::{ColumnType, Disposition, Event, Field, Value};
use ledgerhost_manifest::attributes::Standard;

use crate::bindings::{wit, wit02};
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
        name: f.name.to_string(),
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

/// What a 0.2 consumer asked for in its manifest (`subscription.columns`, `.avro`,
/// `.attributes`).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// The columns to send, in this order; `None`: every column, in table order.
    pub columns: Option<Vec<String>>,
    /// Send each event's raw Avro.
    pub avro: bool,
    /// Send each event's ledger attributes.
    pub attributes: bool,
}

/// The scalar type and array-ness of a column type, as 0.2's `column` says them.
fn column_kind(ty: &ColumnType) -> (wit02::ScalarType, bool) {
    use wit02::ScalarType as S;
    let scalar = |t: &ColumnType| match t {
        ColumnType::Bool => S::Bool,
        ColumnType::Int64 => S::Int64,
        ColumnType::Float32 => S::Float32,
        ColumnType::Float64 => S::Float64,
        ColumnType::Numeric => S::Numeric,
        ColumnType::String => S::String,
        ColumnType::Bytes => S::Bytes,
        ColumnType::Date => S::Date,
        ColumnType::Timestamp => S::Timestamp,
        ColumnType::Json => S::Json,
        // Spanner has no nested arrays; the sources refuse them.
        ColumnType::Array(_) => S::String,
    };
    match ty {
        ColumnType::Array(inner) => (scalar(inner), true),
        t => (scalar(t), false),
    }
}

/// The type of a value, when the value says it (NULL does not).
fn type_of(v: &Value) -> Option<ColumnType> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(_) => ColumnType::Bool,
        Value::Int64(_) => ColumnType::Int64,
        Value::Float32(_) => ColumnType::Float32,
        Value::Float64(_) => ColumnType::Float64,
        Value::Numeric(_) => ColumnType::Numeric,
        Value::String(_) => ColumnType::String,
        Value::Bytes(_) => ColumnType::Bytes,
        Value::Date(_) => ColumnType::Date,
        Value::Timestamp(_) => ColumnType::Timestamp,
        Value::Json(_) => ColumnType::Json,
        Value::Array(t, _) => ColumnType::Array(Box::new(t.clone())),
    })
}

/// The layout of one run of events (one table, one writer schema): the columns a 0.2 batch
/// carries and where each one's value sits in an event's `fields`. Built once per run.
#[derive(Debug, Clone)]
pub struct Layout {
    columns: Vec<wit02::Column>,
    positions: Vec<usize>,
}

impl Layout {
    /// The layout for events shaped like `first`, with column types from the writer schema
    /// `table` (decoded from the event's Avro) or, for an event that carries no readable
    /// Avro (built in a test), from the run's first non-NULL value of each column.
    pub fn new(
        first: &Event,
        run: &[Event],
        table: Option<&ledgerhost_core::TableSchema>,
        selection: &Selection,
    ) -> Layout {
        let positions: Vec<usize> = match &selection.columns {
            None => (0..first.fields.len()).collect(),
            Some(names) => names
                .iter()
                .filter_map(|n| first.fields.iter().position(|f| *f.name == **n))
                .collect(),
        };
        let columns = positions
            .iter()
            .map(|&i| {
                let name = &first.fields[i].name;
                let ty = table
                    .and_then(|t| t.columns.iter().find(|c| *c.name == **name))
                    .map(|c| c.ty.clone())
                    .or_else(|| {
                        run.iter()
                            .find_map(|e| e.fields.get(i).and_then(|f| type_of(&f.value)))
                    })
                    .unwrap_or(ColumnType::String);
                let (kind, array) = column_kind(&ty);
                wit02::Column {
                    name: name.to_string(),
                    kind,
                    array,
                    key: first.key.iter().any(|k| &k.name == name),
                }
            })
            .collect();
        Layout { columns, positions }
    }

    /// The batch of a run of events shaped like the layout's, by move.
    pub fn batch(&self, run: Vec<Event>, selection: &Selection) -> wit02::Batch {
        let (table, fingerprint) = run
            .first()
            .map(|e| (e.table.clone(), e.schema_fingerprint.clone()))
            .unwrap_or_default();
        let events = run
            .into_iter()
            .map(|mut e| {
                let attributes = selection.attributes.then(|| sent_attributes(&mut e));
                let mut fields = e.fields;
                let values = self
                    .positions
                    .iter()
                    .map(|&i| {
                        fields.get_mut(i).map_or(wit::Value::Null, |f| {
                            value_to_wit(std::mem::replace(&mut f.value, Value::Null))
                        })
                    })
                    .collect();
                wit02::Event {
                    id: e.id.0,
                    commit_ts: e.commit_ts,
                    deleted: e.deleted,
                    values,
                    avro: selection.avro.then_some(e.avro),
                    attributes,
                }
            })
            .collect();
        wit02::Batch {
            table,
            schema_fingerprint: fingerprint,
            columns: self.columns.clone(),
            events,
        }
    }
}

/// The attributes a 0.2 event carries: the ledger's, less each standard one whose value the
/// plugin derives from the batch and event (`ledgerhost_manifest::attributes`: it restores
/// them when it republishes). Usually none are left, which spares the guest a list and two
/// strings per attribute and event.
fn sent_attributes(e: &mut Event) -> Vec<(String, String)> {
    let mut attributes = std::mem::take(&mut e.attributes);
    let standard = Standard {
        table: &e.table,
        commit_ts: e.commit_ts,
        event_id: &e.id.0,
        schema_fingerprint: &e.schema_fingerprint,
    };
    attributes.retain(|(k, v)| !standard.derives(k, v));
    attributes
}

/// Splits a batch into runs of one table and one writer schema (a 0.2 batch carries one
/// schema), keeping delivery order.
pub fn runs(events: Vec<Event>) -> Vec<Vec<Event>> {
    let same_run = |a: &Event, b: &Event| {
        a.table == b.table
            && a.schema_fingerprint == b.schema_fingerprint
            && a.fields.len() == b.fields.len()
    };
    // The usual case, one run: the batch's own vector, no event moved.
    if events.iter().all(|e| same_run(&events[0], e)) {
        return if events.is_empty() {
            Vec::new()
        } else {
            vec![events]
        };
    }
    let mut runs: Vec<Vec<Event>> = Vec::new();
    for e in events {
        match runs.last_mut() {
            Some(run) if same_run(&run[0], &e) => run.push(e),
            _ => runs.push(vec![e]),
        }
    }
    runs
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

    fn event(n: i64, table: &str, fingerprint: &str, columns: usize) -> Event {
        let key = vec![Value::Int64(n)];
        Event {
            id: ledgerhost_core::EventId::new(table, &key, n),
            table: table.into(),
            commit_ts: n,
            key: vec![],
            fields: (0..columns)
                .map(|i| Field {
                    name: format!("c{i}").into(),
                    value: Value::Int64(n),
                })
                .collect(),
            deleted: false,
            schema_fingerprint: fingerprint.into(),
            avro: vec![],
            attributes: vec![],
        }
    }

    #[test]
    fn runs_split_by_table_schema_and_shape_keeping_order() {
        let ids = |runs: &[Vec<Event>]| -> Vec<Vec<i64>> {
            runs.iter()
                .map(|r| r.iter().map(|e| e.commit_ts).collect())
                .collect()
        };
        assert!(runs(vec![]).is_empty());
        let one: Vec<Event> = (0..3).map(|n| event(n, "t", "f", 2)).collect();
        assert_eq!(ids(&runs(one)), vec![vec![0, 1, 2]]);
        let mixed = vec![
            event(0, "t", "f", 2),
            event(1, "t", "f", 2),
            event(2, "t", "g", 2),
            event(3, "u", "g", 2),
            event(4, "u", "g", 3),
            event(5, "u", "g", 3),
            event(6, "t", "f", 2),
        ];
        assert_eq!(
            ids(&runs(mixed)),
            vec![vec![0, 1], vec![2], vec![3], vec![4, 5], vec![6]]
        );
    }

    #[test]
    fn a_batch_sends_only_the_attributes_the_plugin_cannot_derive() {
        use ledgerhost_core::ledger::attr;
        use ledgerhost_manifest::attributes as std_attr;
        // The SDK restores by the manifest crate's names: they must be the ledger's.
        assert_eq!(
            std_attr::STANDARD,
            [
                attr::TABLE,
                attr::COMMIT_TS,
                attr::EVENT_ID,
                attr::SCHEMA_FINGERPRINT
            ]
        );
        let mut e = event(5, "t", "f", 1);
        e.attributes = vec![
            (attr::TABLE.into(), "t".into()),
            (attr::COMMIT_TS.into(), "5".into()),
            (attr::EVENT_ID.into(), e.id.0.clone()),
            (attr::SCHEMA_FINGERPRINT.into(), "f".into()),
            ("source".into(), "x".into()),
        ];
        let mut digest = e.clone();
        digest.attributes[2].1 = "digest-of-a-long-id".into();
        let run = vec![e.clone(), digest];
        let all = Selection {
            attributes: true,
            ..Selection::default()
        };
        let batch = Layout::new(&run[0], &run, None, &all).batch(run, &all);
        assert_eq!(
            batch.events[0].attributes,
            Some(vec![("source".into(), "x".into())])
        );
        assert_eq!(
            batch.events[1].attributes,
            Some(vec![
                (attr::EVENT_ID.into(), "digest-of-a-long-id".into()),
                ("source".into(), "x".into())
            ]),
            "a standard attribute with another value travels"
        );
        let none = Selection::default();
        let batch = Layout::new(&e, std::slice::from_ref(&e), None, &none).batch(vec![e], &none);
        assert_eq!(batch.events[0].attributes, None);
    }

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
