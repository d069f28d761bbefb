//! bqloader: loads every event into the analytics warehouse, one table per source table.
//!
//! Each event becomes one warehouse row keyed by its event id (table, primary key, commit
//! timestamp), holding every column of the row as committed; a tombstone is loaded too (its
//! soft-delete column says so). The warehouse table is `table-prefix` + the source table and
//! is created, or widened with new columns, from the Avro schema the event carries in its
//! object container, so no schema is configured anywhere. Loads are idempotent on the event
//! id, so a redelivered batch replaces its own rows instead of adding any.
//!
//! Dispositions: a batch whose load succeeded is acked; a failing backend retries the batch;
//! a row the warehouse refuses (e.g. a column whose type changed) is rejected on its own,
//! with the table and event named, while the rest of the batch loads.

use std::cell::RefCell;
use std::collections::BTreeSet;

use ledgerhost_sdk::prelude::*;
use ledgerhost_sdk::warehouse::Row;

/// Config key: prefix of every warehouse table name.
pub const TABLE_PREFIX: &str = "table-prefix";

thread_local! {
    /// (warehouse table, schema fingerprint) pairs already ensured by this instance, so a
    /// steady stream costs one `load` per batch and no schema round trip.
    static ENSURED: RefCell<BTreeSet<(String, String)>> = const { RefCell::new(BTreeSet::new()) };
}

/// The Avro record schema (JSON text) in the header of an object container.
pub fn container_schema(data: &[u8]) -> Result<String, String> {
    let rest = data
        .strip_prefix(b"Obj\x01")
        .ok_or("not an Avro object container (bad magic)")?;
    let mut r = Cursor { buf: rest, pos: 0 };
    loop {
        let mut count = r.long()?;
        if count == 0 {
            break;
        }
        if count < 0 {
            // A negative count is followed by the block's byte size, which we do not need.
            count = count.checked_neg().ok_or("corrupt metadata block count")?;
            r.long()?;
        }
        for _ in 0..count {
            let key = r.bytes()?;
            let value = r.bytes()?;
            if key == b"avro.schema" {
                return String::from_utf8(value.to_vec())
                    .map_err(|_| "avro.schema is not UTF-8".to_string());
            }
        }
    }
    Err("the container's metadata has no avro.schema".into())
}

/// Bounds-checked reader of Avro's binary encoding.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn long(&mut self) -> Result<i64, String> {
        let mut z: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("truncated container header")?;
            self.pos += 1;
            z |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
        }
        Err("malformed varint in container header".into())
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = usize::try_from(self.long()?).map_err(|_| "negative length in header")?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|e| *e <= self.buf.len())
            .ok_or("truncated container header")?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }
}

/// One group of a batch: events of one source table written with one schema.
struct Group {
    table: String,
    fingerprint: String,
    schema: String,
    members: Vec<usize>,
}

fn is_permanent(e: &Error) -> bool {
    matches!(e, Error::Denied(_) | Error::Invalid(_))
}

/// The disposition for a failed capability call about `what`.
fn failed(what: &str, e: &Error) -> Disposition {
    let reason = format!("{what}: {e}");
    if is_permanent(e) {
        Disposition::Reject(reason)
    } else {
        Disposition::Retry(reason)
    }
}

fn ensure(g: &Group) -> Result<(), Error> {
    let key = (g.table.clone(), g.fingerprint.clone());
    if ENSURED.with(|s| s.borrow().contains(&key)) {
        return Ok(());
    }
    warehouse::ensure_table(&g.table, &g.schema)?;
    ENSURED.with(|s| s.borrow_mut().insert(key));
    Ok(())
}

/// Forgets what was ensured for `table`, so the next batch checks the table again (it may
/// have been dropped or altered behind our back).
fn forget(table: &str) {
    ENSURED.with(|s| s.borrow_mut().retain(|(t, _)| t != table));
}

fn row_of(e: &Event) -> Row {
    Row {
        event_id: e.id.clone(),
        fields: e
            .fields()
            .map(|(name, value)| Field {
                name: name.to_string(),
                value: value.clone(),
            })
            .collect(),
    }
}

/// Loads one group and writes its members' dispositions.
fn load_group(g: &Group, events: &[Event], out: &mut [Disposition]) {
    if let Err(e) = ensure(g) {
        forget(&g.table);
        let d = failed(&format!("warehouse table `{}` (ensure)", g.table), &e);
        for &i in &g.members {
            out[i] = match &d {
                Disposition::Reject(r) => {
                    Disposition::Reject(format!("event {}: {r}", events[i].id))
                }
                other => other.clone(),
            };
        }
        return;
    }
    let rows: Vec<Row> = g.members.iter().map(|&i| row_of(&events[i])).collect();
    match warehouse::load(&g.table, &rows) {
        Ok(()) => {
            for &i in &g.members {
                out[i] = Disposition::Ack;
            }
        }
        Err(e @ Error::Invalid(_)) if g.members.len() > 1 => {
            // Find the rows the warehouse refuses; the others still load.
            log_warn!(
                "load of {} rows into `{}` refused ({e}); loading them one by one",
                rows.len(),
                g.table
            );
            forget(&g.table);
            for (&i, row) in g.members.iter().zip(rows) {
                out[i] = match warehouse::load(&g.table, std::slice::from_ref(&row)) {
                    Ok(()) => Disposition::Ack,
                    Err(e) => failed(
                        &format!("event {}: load into `{}`", events[i].id, g.table),
                        &e,
                    ),
                };
            }
        }
        Err(e) => {
            forget(&g.table);
            for &i in &g.members {
                out[i] = failed(
                    &format!("event {}: load into `{}`", events[i].id, g.table),
                    &e,
                );
            }
        }
    }
}

/// The plugin.
pub struct BqLoader;

impl Consumer for BqLoader {
    fn handle(events: Vec<Event>) -> Vec<Disposition> {
        let prefix = match config::try_get(TABLE_PREFIX) {
            Ok(p) => p.unwrap_or_default(),
            Err(e) => return retry_all(&events, &e),
        };
        let mut out = vec![Disposition::Ack; events.len()];
        let mut groups: Vec<Group> = Vec::new();
        for (i, e) in events.iter().enumerate() {
            // Every event's own container is checked (a cheap header scan), so one event
            // without a readable schema is rejected alone instead of riding in a group.
            let schema = match container_schema(&e.avro) {
                Ok(schema) => schema,
                Err(m) => {
                    out[i] = Disposition::Reject(format!(
                        "event {} of table `{}`: cannot read its Avro schema: {m}",
                        e.id, e.table
                    ));
                    continue;
                }
            };
            let table = format!("{prefix}{}", e.table);
            match groups
                .iter_mut()
                .find(|g| g.table == table && g.fingerprint == e.schema_fingerprint())
            {
                Some(g) => g.members.push(i),
                None => groups.push(Group {
                    table,
                    fingerprint: e.schema_fingerprint().to_string(),
                    schema,
                    members: vec![i],
                }),
            }
        }
        for g in &groups {
            load_group(g, &events, &mut out);
        }
        out
    }
}

export_consumer!(BqLoader);

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerhost_sdk::testing::{Capability, EventBuilder, MockHost};

    /// A container header as the host writes it (schema and codec metadata, no records).
    fn container(schema: &str) -> Vec<u8> {
        fn long(out: &mut Vec<u8>, v: i64) {
            let mut z = ((v << 1) ^ (v >> 63)) as u64;
            while z >= 0x80 {
                out.push((z as u8) | 0x80);
                z >>= 7;
            }
            out.push(z as u8);
        }
        fn bytes(out: &mut Vec<u8>, b: &[u8]) {
            long(out, b.len() as i64);
            out.extend_from_slice(b);
        }
        let mut out = b"Obj\x01".to_vec();
        long(&mut out, 2);
        bytes(&mut out, b"avro.codec");
        bytes(&mut out, b"null");
        bytes(&mut out, b"avro.schema");
        bytes(&mut out, schema.as_bytes());
        long(&mut out, 0);
        out.extend_from_slice(&[7; 16]);
        out
    }

    const SCHEMA: &str = r#"{"type":"record","name":"orders","fields":[]}"#;

    fn order(id: i64, amount: i64, ts: i64) -> Event {
        EventBuilder::new("orders")
            .key("id", id)
            .field("amount", amount)
            .commit_ts(ts)
            .avro(container(SCHEMA))
            .build()
    }

    #[test]
    fn reads_the_schema_from_the_container_header() {
        assert_eq!(container_schema(&container(SCHEMA)).unwrap(), SCHEMA);
        assert!(container_schema(b"nope").unwrap_err().contains("magic"));
        let mut cut = container(SCHEMA);
        cut.truncate(20);
        assert!(container_schema(&cut).unwrap_err().contains("truncated"));
    }

    #[test]
    fn loads_each_event_once_even_when_redelivered() {
        let host = MockHost::from_manifest(include_str!("../plugin.toml")).unwrap();
        let batch = vec![order(1, 10, 5), order(2, 20, 5), order(1, 11, 6)];
        assert_eq!(BqLoader::handle(batch.clone()), vec![Disposition::Ack; 3]);
        assert_eq!(BqLoader::handle(batch), vec![Disposition::Ack; 3]);
        let rows = host.rows("orders");
        assert_eq!(rows.len(), 3, "one row per event id, none duplicated");
        assert_eq!(rows[0].0, "orders/1/5");
        assert_eq!(host.table_schema("orders").as_deref(), Some(SCHEMA));
    }

    #[test]
    fn table_prefix_names_the_warehouse_table_and_grants_apply() {
        // The shipped grant is every table ("*"); a deployment narrowed to `orders` must
        // not reach `raw_orders`.
        let shipped = include_str!("../plugin.toml");
        let narrowed = shipped.replace(
            "warehouse-tables = [\"*\"]",
            "warehouse-tables = [\"orders\"]",
        );
        assert_ne!(narrowed, shipped, "the shipped manifest grants every table");
        let host = MockHost::from_manifest(&narrowed)
            .unwrap()
            .with_config(TABLE_PREFIX, "raw_");
        let d = BqLoader::handle(vec![order(1, 10, 5)]);
        match &d[0] {
            Disposition::Reject(r) => {
                assert!(
                    r.contains("raw_orders") && r.contains("warehouse-tables"),
                    "{r}"
                )
            }
            other => panic!("expected a rejection naming the grant, got {other:?}"),
        }
        assert!(host.rows("raw_orders").is_empty());
    }

    #[test]
    fn backend_failures_retry_and_bad_events_are_rejected_alone() {
        let host = MockHost::from_manifest(include_str!("../plugin.toml")).unwrap();
        host.fail(
            Capability::Warehouse,
            Error::Backend("bigquery down".into()),
        );
        let d = BqLoader::handle(vec![order(1, 10, 5), order(2, 20, 5)]);
        assert!(
            d.iter()
                .all(|d| matches!(d, Disposition::Retry(r) if r.contains("bigquery down")))
        );
        host.heal(Capability::Warehouse);
        let no_avro = EventBuilder::new("orders").key("id", 3).build();
        let d = BqLoader::handle(vec![order(1, 10, 5), no_avro, order(2, 20, 5)]);
        assert_eq!(d[0], Disposition::Ack);
        assert!(matches!(&d[1], Disposition::Reject(r) if r.contains("orders/3/1")));
        assert_eq!(d[2], Disposition::Ack);
        assert_eq!(host.rows("orders").len(), 2);
    }
}
