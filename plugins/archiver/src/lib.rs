//! Archiver: writes every event to object storage, one object per event, bucket per table.
//!
//! The object is the event's Avro container byte for byte, named
//! `<table>-YYYY_MM_DD_HHMMSS_mmm-NNNN.avro` (commit time to the millisecond, four digits
//! from the event id; see `ledgerhost-archive`). A redelivery finds its own object and
//! overwrites it, never adding one. Two different events of one millisecond whose digits
//! collide (likely when one transaction writes hundreds of rows) must not overwrite each
//! other: the second takes the next free digits, and a redelivery walks the same probe
//! sequence and finds itself again.

use std::sync::OnceLock;

use ledgerhost_archive::{archived_event, bucket_for, event_digits, single_name};
use ledgerhost_avro::Decoder;
use ledgerhost_sdk::prelude::*;

/// Bucket prefix when the config sets none.
pub const DEFAULT_BUCKET_PREFIX: &str = "archive-";

/// The plugin.
pub struct Archiver;

fn decoder() -> &'static Decoder {
    static DECODER: OnceLock<Decoder> = OnceLock::new();
    DECODER.get_or_init(Decoder::new)
}

/// A denied or invalid request will fail the same way on every attempt: dead-letter it now
/// with the reason; a backend failure is worth retrying.
fn disposition_of(e: &Event, what: &str, err: Error) -> Disposition {
    match err {
        Error::Backend(m) => Disposition::Retry(format!("{}: {what}: {m}", e.id)),
        Error::Denied(m) | Error::Invalid(m) => {
            Disposition::Reject(format!("{}: {what}: {m}", e.id))
        }
    }
}

/// True when the stored object is this event (the same bytes, or another encoding of the
/// same event id).
fn is_same_event(e: &Event, stored: &[u8]) -> bool {
    stored == e.avro.as_slice()
        || archived_event(decoder(), stored, "stored object").is_ok_and(|s| s.event_id == e.id)
}

/// Archives one event; the object name it used on success.
fn archive(bucket: &str, e: &Event) -> Result<String, Disposition> {
    if e.avro.is_empty() {
        return Err(Disposition::Reject(format!(
            "{}: the event carries no Avro container to archive",
            e.id
        )));
    }
    let first = event_digits(&e.id);
    for step in 0..10_000u16 {
        let digits = (first + step) % 10_000;
        let name = single_name(&e.table, e.commit_ts, digits);
        let stored = blobstore::get(bucket, &name)
            .map_err(|err| disposition_of(e, &format!("reading {bucket}/{name}"), err))?;
        match stored {
            Some(bytes) if bytes == e.avro => return Ok(name),
            Some(bytes) if !is_same_event(e, &bytes) => {
                log_debug!(
                    "{bucket}/{name} holds another event; {} probes further",
                    e.id
                );
                continue;
            }
            _ => {
                blobstore::put(bucket, &name, &e.avro)
                    .map_err(|err| disposition_of(e, &format!("writing {bucket}/{name}"), err))?;
                return Ok(name);
            }
        }
    }
    Err(Disposition::Retry(format!(
        "{}: all 10000 names of its millisecond are taken in {bucket}",
        e.id
    )))
}

impl Consumer for Archiver {
    fn handle(events: Vec<Event>) -> Vec<Disposition> {
        let prefix =
            config::get("bucket-prefix").unwrap_or_else(|| DEFAULT_BUCKET_PREFIX.to_string());
        events
            .iter()
            .map(|e| match archive(&bucket_for(&prefix, &e.table), e) {
                Ok(_) => Disposition::Ack,
                Err(d) => d,
            })
            .collect()
    }
}

export_consumer!(Archiver);

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerhost_archive::{Span, compacted_name};
    use ledgerhost_avro::Encoder;
    use ledgerhost_core::source::Row;
    use ledgerhost_core::{Column, ColumnType, TableSchema};
    use ledgerhost_sdk::testing::{Capability, EventBuilder, MockHost};

    const MANIFEST: &str = include_str!("../plugin.toml");
    // 2026-11-22T12:03:04.123456Z
    const TS: i64 = 1_795_348_984_123_456;

    fn encoder(table: &str) -> Encoder {
        let col = |name: &str, ty| Column {
            name: name.into(),
            ty,
            nullable: false,
        };
        Encoder::new(&TableSchema {
            name: table.into(),
            columns: vec![
                col("id", ColumnType::Int64),
                col("amount", ColumnType::Int64),
                col("commit_ts", ColumnType::Int64),
            ],
            primary_key: vec!["id".into()],
            commit_ts_column: "commit_ts".into(),
            deleted_column: None,
        })
        .unwrap()
    }

    /// An event as the host delivers it: real Avro, the host's id.
    fn event(table: &str, id: i64, amount: i64, ts: i64) -> Event {
        let m = encoder(table)
            .encode(&Row {
                values: vec![
                    ledgerhost_core::Value::Int64(id),
                    ledgerhost_core::Value::Int64(amount),
                    ledgerhost_core::Value::Int64(ts),
                ],
                commit_ts: ts,
            })
            .unwrap();
        let e = EventBuilder::new(table)
            .key("id", id)
            .field("amount", amount)
            .commit_ts(ts)
            .avro(m.data)
            .build();
        assert_eq!(
            e.id, m.attributes["event_id"],
            "test events carry the host's id"
        );
        e
    }

    #[test]
    fn one_object_per_event_named_by_commit_time_and_id_in_the_tables_bucket() {
        let host = MockHost::from_manifest(MANIFEST).unwrap();
        let events = vec![
            event("orders", 1, 10, TS),
            event("orders", 2, 20, TS),
            event("orders", 1, 11, TS + 5_000),
            event("Clients", 7, 70, TS),
        ];
        assert_eq!(Archiver::handle(events.clone()), vec![Disposition::Ack; 4]);
        let names = host.blob_names("archive-orders");
        assert_eq!(names.len(), 3, "{names:?}");
        for e in &events[..3] {
            let name = single_name("orders", e.commit_ts, event_digits(&e.id));
            assert!(name.starts_with("orders-2026_11_22_1203"), "{name}");
            assert_eq!(
                host.blob("archive-orders", &name),
                Some(e.avro.clone()),
                "{name}"
            );
        }
        assert_eq!(
            host.blob_names("archive-clients").len(),
            1,
            "bucket per table"
        );
    }

    #[test]
    fn a_redelivery_overwrites_instead_of_adding() {
        let host = MockHost::from_manifest(MANIFEST).unwrap();
        let events: Vec<Event> = (1..=20).map(|i| event("orders", i, i, TS)).collect();
        assert_eq!(Archiver::handle(events.clone()), vec![Disposition::Ack; 20]);
        let before: Vec<_> = host
            .blob_names("archive-orders")
            .into_iter()
            .map(|n| (n.clone(), host.blob("archive-orders", &n)))
            .collect();
        assert_eq!(Archiver::handle(events), vec![Disposition::Ack; 20]);
        let after: Vec<_> = host
            .blob_names("archive-orders")
            .into_iter()
            .map(|n| (n.clone(), host.blob("archive-orders", &n)))
            .collect();
        assert_eq!(before, after);
    }

    #[test]
    fn colliding_digits_in_one_millisecond_keep_both_events() {
        let host = MockHost::from_manifest(MANIFEST).unwrap();
        // Two keys of one transaction whose ids hash to the same digits.
        let mut seen = std::collections::HashMap::new();
        let (a, b) = (1..100_000i64)
            .find_map(|k| {
                let d = event_digits(&format!("orders/{k}/{TS}"));
                seen.insert(d, k).map(|other| (other, k))
            })
            .unwrap();
        let (ea, eb) = (event("orders", a, 1, TS), event("orders", b, 2, TS));
        assert_eq!(event_digits(&ea.id), event_digits(&eb.id));
        assert_eq!(
            Archiver::handle(vec![ea.clone(), eb.clone()]),
            vec![Disposition::Ack; 2]
        );
        assert_eq!(
            Archiver::handle(vec![eb.clone(), ea.clone()]),
            vec![Disposition::Ack; 2]
        );
        let names = host.blob_names("archive-orders");
        assert_eq!(
            names.len(),
            2,
            "both kept, redeliveries found their own: {names:?}"
        );
        let d = event_digits(&ea.id);
        assert_eq!(
            host.blob("archive-orders", &single_name("orders", TS, d)),
            Some(ea.avro.clone())
        );
        assert_eq!(
            host.blob(
                "archive-orders",
                &single_name("orders", TS, (d + 1) % 10_000)
            ),
            Some(eb.avro.clone())
        );
        // A compacted file name never collides with a single one.
        assert_ne!(compacted_name("orders", Span::containing(TS, 60)), names[0]);
    }

    #[test]
    fn writing_outside_the_granted_buckets_is_refused_and_dead_lettered() {
        let _host = MockHost::from_manifest(MANIFEST)
            .unwrap()
            .with_config("bucket-prefix", "other-");
        let d = Archiver::handle(vec![event("orders", 1, 1, TS)]);
        match &d[0] {
            Disposition::Reject(r) => assert!(r.contains("grants.buckets"), "{r}"),
            other => panic!("{other:?}"),
        }
        let _host = MockHost::from_manifest(MANIFEST)
            .unwrap()
            .with_config("bucket-prefix", "archive-../");
        let d = Archiver::handle(vec![event("orders", 1, 1, TS)]);
        match &d[0] {
            Disposition::Reject(r) => assert!(r.contains(".."), "{r}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_failing_store_is_retried_and_an_event_without_avro_rejected() {
        let host = MockHost::from_manifest(MANIFEST).unwrap();
        host.fail(Capability::Blobstore, Error::Backend("disk full".into()));
        let d = Archiver::handle(vec![event("orders", 1, 1, TS)]);
        assert!(
            matches!(&d[0], Disposition::Retry(r) if r.contains("disk full")),
            "{d:?}"
        );
        host.heal(Capability::Blobstore);
        let bare = EventBuilder::new("orders").key("id", 1).build();
        assert!(matches!(
            &Archiver::handle(vec![bare])[0],
            Disposition::Reject(_)
        ));
        assert!(host.blob_names("archive-orders").is_empty());
    }
}
