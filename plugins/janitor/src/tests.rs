use std::collections::BTreeSet;

use super::*;
use ledgerhost_archive::testing::{HOUR, T0, orders_encoder};
use ledgerhost_archive::{event_digits, single_name};
use ledgerhost_core::Value as CoreValue;
use ledgerhost_core::source::Row;
use ledgerhost_sdk::testing::{Capability, MockHost};

const MANIFEST: &str = include_str!("../plugin.toml");
const BUCKET: &str = "archive-orders";

/// Archives an event as the archiver would; returns (object name, event id, Avro).
fn archive(host: &MockHost, id: i64, ts: i64) -> (String, String, Vec<u8>) {
    let m = orders_encoder()
        .encode(&Row {
            values: vec![
                CoreValue::Int64(id),
                CoreValue::Int64(id * 10),
                CoreValue::Int64(ts),
            ],
            commit_ts: ts,
        })
        .unwrap();
    let event_id = m.attributes["event_id"].clone();
    let name = single_name("orders", ts, event_digits(&event_id));
    host.put_blob(BUCKET, &name, &m.data);
    (name, event_id, m.data)
}

/// (event id, Avro) of a compacted file, in file order.
fn file(host: &MockHost, name: &str) -> Vec<(String, Vec<u8>)> {
    let bytes = host.blob(BUCKET, name).expect("compacted file exists");
    read_compacted(&bytes, &Decoder::new())
        .unwrap()
        .into_iter()
        .map(|e| (e.event_id, e.avro))
        .collect()
}

fn loose(host: &MockHost) -> Vec<String> {
    host.blob_names(BUCKET)
        .into_iter()
        .filter(|n| {
            matches!(
                parse_object_name("orders", n),
                Some(ObjectName::Single { .. })
            )
        })
        .collect()
}

const NOON: &str = "orders-2026_11_22_1200-1300.avro";
const ONE: &str = "orders-2026_11_22_1300-1400.avro";

#[test]
fn closed_spans_become_one_verified_file_each_and_open_ones_wait() {
    let host = MockHost::from_manifest(MANIFEST).unwrap();
    // Written out of order; two rows of one transaction (one timestamp).
    let mut noon = [
        archive(&host, 5, T0 + 50),
        archive(&host, 3, T0 + 10),
        archive(&host, 4, T0 + 10),
        archive(&host, 3, T0 + HOUR - 1),
    ];
    let one = archive(&host, 1, T0 + HOUR + 7);
    let open = archive(&host, 2, T0 + 3 * HOUR - 1);

    Janitor::tick(T0 + 3 * HOUR).unwrap();

    noon.sort_by_key(|(_, id, _)| {
        let ts: i64 = id.rsplit('/').next().unwrap().parse().unwrap();
        (ts, id.clone())
    });
    let want: Vec<_> = noon
        .iter()
        .map(|(_, id, avro)| (id.clone(), avro.clone()))
        .collect();
    assert_eq!(
        file(&host, NOON),
        want,
        "every event, in commit order, byte for byte"
    );
    assert_eq!(file(&host, ONE), vec![(one.1, one.2)]);
    assert_eq!(
        loose(&host),
        vec![open.0.clone()],
        "the open span is not touched"
    );
    assert_eq!(host.blob_names(BUCKET).len(), 3);

    // Nothing to do: nothing changes.
    let before: Vec<_> = host
        .blob_names(BUCKET)
        .iter()
        .map(|n| host.blob(BUCKET, n))
        .collect();
    Janitor::tick(T0 + 3 * HOUR).unwrap();
    let after: Vec<_> = host
        .blob_names(BUCKET)
        .iter()
        .map(|n| host.blob(BUCKET, n))
        .collect();
    assert_eq!(before, after);
}

#[test]
fn a_crash_between_writing_and_deleting_is_finished_by_the_next_run() {
    // keep-originals leaves exactly the state of a crash after the write.
    let host = MockHost::from_manifest(MANIFEST)
        .unwrap()
        .with_config("keep-originals", "true");
    let events: Vec<_> = (1..=30).map(|i| archive(&host, i, T0 + i * 1000)).collect();
    Janitor::tick(T0 + 2 * HOUR).unwrap();
    assert_eq!(file(&host, NOON).len(), 30);
    assert_eq!(loose(&host).len(), 30, "originals still there");

    // A late redelivery lands meanwhile; then the run that finishes the job.
    let late = archive(&host, 99, T0 + 5);
    let host = host.with_config("keep-originals", "false");
    Janitor::tick(T0 + 2 * HOUR).unwrap();
    let ids: BTreeSet<String> = file(&host, NOON).into_iter().map(|(id, _)| id).collect();
    let want: BTreeSet<String> = events
        .iter()
        .chain([&late])
        .map(|(_, id, _)| id.clone())
        .collect();
    assert_eq!(ids, want);
    assert!(loose(&host).is_empty());
}

#[test]
fn a_crash_midway_through_deleting_loses_nothing() {
    let host = MockHost::from_manifest(MANIFEST)
        .unwrap()
        .with_config("keep-originals", "true");
    let events: Vec<_> = (1..=10).map(|i| archive(&host, i, T0 + i)).collect();
    Janitor::tick(T0 + 2 * HOUR).unwrap();
    let compacted = host.blob(BUCKET, NOON).unwrap();
    // Half the originals were deleted when the run died.
    drop(host);
    let host = MockHost::from_manifest(MANIFEST).unwrap();
    host.put_blob(BUCKET, NOON, &compacted);
    for (name, _, avro) in &events[5..] {
        host.put_blob(BUCKET, name, avro);
    }
    Janitor::tick(T0 + 2 * HOUR).unwrap();
    assert_eq!(
        host.blob(BUCKET, NOON),
        Some(compacted),
        "already complete: not rewritten"
    );
    assert!(loose(&host).is_empty());
    assert_eq!(file(&host, NOON).len(), 10);
}

#[test]
fn late_events_are_merged_into_an_existing_file() {
    let host = MockHost::from_manifest(MANIFEST).unwrap();
    let first: Vec<_> = (1..=3).map(|i| archive(&host, i, T0 + 100 * i)).collect();
    Janitor::tick(T0 + 2 * HOUR).unwrap();
    let late = archive(&host, 7, T0 + 150);
    let again = archive(&host, 2, T0 + 200); // a redelivery of a compacted event
    assert_eq!(again.1, first[1].1);
    Janitor::tick(T0 + 2 * HOUR).unwrap();
    let ids: Vec<String> = file(&host, NOON).into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        ids,
        vec![
            first[0].1.clone(),
            late.1,
            first[1].1.clone(),
            first[2].1.clone()
        ],
        "merged in commit order, the redelivery once"
    );
    assert!(loose(&host).is_empty());
}

#[test]
fn an_unreadable_compacted_file_stops_its_span_and_deletes_nothing() {
    let host = MockHost::from_manifest(MANIFEST).unwrap();
    let a = archive(&host, 1, T0 + 1);
    let b = archive(&host, 2, T0 + HOUR + 1);
    host.put_blob(BUCKET, NOON, b"garbage");
    let e = Janitor::tick(T0 + 3 * HOUR).unwrap_err();
    assert!(e.contains(NOON) && e.contains("unreadable"), "{e}");
    assert_eq!(
        host.blob(BUCKET, NOON),
        Some(b"garbage".to_vec()),
        "left for an operator"
    );
    assert_eq!(host.blob(BUCKET, &a.0), Some(a.2));
    assert_eq!(file(&host, ONE).len(), 1, "other spans go on");
    assert!(host.blob(BUCKET, &b.0).is_none());
    assert!(host.logs().iter().any(|(_, _, m)| m.contains(NOON)));
}

#[test]
fn a_failing_store_deletes_nothing_and_the_next_tick_retries() {
    let host = MockHost::from_manifest(MANIFEST).unwrap();
    let a = archive(&host, 1, T0 + 1);
    host.fail(Capability::Blobstore, Error::Backend("gcs down".into()));
    let e = Janitor::tick(T0 + 2 * HOUR).unwrap_err();
    assert!(e.contains("gcs down"), "{e}");
    host.heal(Capability::Blobstore);
    assert_eq!(loose(&host), vec![a.0]);
    Janitor::tick(T0 + 2 * HOUR).unwrap();
    assert_eq!(file(&host, NOON).len(), 1);
}

#[test]
fn foreign_objects_and_misplaced_events_are_left_alone() {
    let host = MockHost::from_manifest(MANIFEST).unwrap();
    host.put_blob(BUCKET, "orders-notes.txt", b"hello");
    host.put_blob(
        BUCKET,
        "orders-2026_11_22_120000_000-0001.avro",
        b"not avro",
    );
    let (_, _, avro) = archive(&host, 1, T0 + 1);
    // A valid event under a name of another span.
    host.put_blob(BUCKET, "orders-2026_11_22_120500_000-0002.avro", &{
        let m = orders_encoder()
            .encode(&Row {
                values: vec![
                    CoreValue::Int64(9),
                    CoreValue::Int64(0),
                    CoreValue::Int64(T0 + 2 * HOUR),
                ],
                commit_ts: T0 + 2 * HOUR,
            })
            .unwrap();
        m.data
    });
    Janitor::tick(T0 + 5 * HOUR).unwrap();
    assert_eq!(
        file(&host, NOON)
            .into_iter()
            .map(|(_, a)| a)
            .collect::<Vec<_>>(),
        vec![avro]
    );
    let mut left = host.blob_names(BUCKET);
    left.retain(|n| n != NOON);
    assert_eq!(
        left,
        vec![
            "orders-2026_11_22_120000_000-0001.avro",
            "orders-2026_11_22_120500_000-0002.avro",
            "orders-notes.txt"
        ]
    );
}

#[test]
fn bad_settings_are_named() {
    let _host = MockHost::from_manifest(MANIFEST)
        .unwrap()
        .with_config("span-minutes", "7");
    let e = Janitor::tick(T0).unwrap_err();
    assert!(e.contains("span-minutes") && e.contains("1440"), "{e}");
    let _host = MockHost::from_manifest(MANIFEST)
        .unwrap()
        .with_config("keep-originals", "yes");
    assert!(Janitor::tick(T0).unwrap_err().contains("keep-originals"));
}

#[test]
fn the_span_budget_takes_the_oldest_first() {
    let host = MockHost::from_manifest(MANIFEST)
        .unwrap()
        .with_config("max-spans-per-tick", "1");
    archive(&host, 1, T0 + HOUR + 1);
    archive(&host, 2, T0 + 1);
    Janitor::tick(T0 + 5 * HOUR).unwrap();
    assert!(host.blob(BUCKET, NOON).is_some());
    assert!(host.blob(BUCKET, ONE).is_none());
    Janitor::tick(T0 + 5 * HOUR).unwrap();
    assert!(host.blob(BUCKET, ONE).is_some());
    assert!(loose(&host).is_empty());
}
