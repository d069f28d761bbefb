use super::*;
use ledgerhost_archive::{Span, compacted_name, event_digits, single_name, write_compacted};
use ledgerhost_avro::Encoder;
use ledgerhost_capabilities::blobstore::local::LocalBlobStore;
use ledgerhost_core::source::Row;
use ledgerhost_core::{Column, ColumnType};
use ledgerhost_source::sqlite::target::SqliteTarget;

const T0: i64 = 1_795_348_800_000_000;
const MIN: i64 = 60_000_000;
const BUCKET: &str = "archive-orders";

fn schema() -> TableSchema {
    let col = Column::new;
    TableSchema {
        name: "orders".into(),
        columns: vec![
            col("id", ColumnType::Int64, false),
            col("amount", ColumnType::Int64, true),
            col("deleted", ColumnType::Bool, true),
            col("commit_ts", ColumnType::Timestamp, true),
        ],
        primary_key: vec!["id".into()],
        commit_ts_column: "commit_ts".into(),
        deleted_column: Some("deleted".into()),
    }
}

fn event(enc: &Encoder, id: i64, amount: i64, deleted: bool, ts: i64) -> ArchivedEvent {
    let m = enc
        .encode(&Row {
            values: vec![
                Value::Int64(id),
                Value::Int64(amount),
                Value::Bool(deleted),
                Value::Timestamp(ts),
            ],
            commit_ts: ts,
        })
        .unwrap();
    archived_event(&Decoder::new(), &m.data, "test").unwrap()
}

fn rows(path: &std::path::Path) -> Vec<(i64, i64)> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT id, amount FROM orders ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Compacted and loose versions fold to each key's newest at or before `--at`; tombstones
/// and keys created after `--at` are deleted; a rerun gives the same table; batches of one
/// row give the same table as one batch.
#[tokio::test]
async fn the_archive_folds_to_each_keys_newest_version() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = LocalBlobStore::open(&dir.path().join("blobs")).unwrap();
    blobs.ensure_bucket(BUCKET).await.unwrap();
    let enc = Encoder::new(&schema()).unwrap();
    // Compacted: the first minute (ids 1-3 inserted, 2 updated).
    let first = vec![
        event(&enc, 1, 10, false, T0 + 1),
        event(&enc, 2, 20, false, T0 + 1),
        event(&enc, 3, 30, false, T0 + 1),
        event(&enc, 2, 21, false, T0 + 2),
    ];
    let span = Span::containing(T0, 1);
    blobs
        .put(
            BUCKET,
            &compacted_name("orders", span),
            write_compacted(&first).unwrap(),
        )
        .await
        .unwrap();
    // Loose: later, 1 soft-deleted, 3 updated, 4 inserted; one loose copy of a compacted one.
    let loose = [
        event(&enc, 1, 10, true, T0 + MIN + 5),
        event(&enc, 3, 31, false, T0 + MIN + 6),
        event(&enc, 4, 40, false, T0 + MIN + 7),
        first[3].clone(),
    ];
    for e in &loose {
        blobs
            .put(
                BUCKET,
                &single_name("orders", e.commit_ts, event_digits(&e.event_id)),
                e.avro.clone(),
            )
            .await
            .unwrap();
    }
    blobs
        .put(BUCKET, "orders-notes.txt", b"not ours".to_vec())
        .await
        .unwrap();

    let now = dir.path().join("now.db");
    let target = SqliteTarget::open(&now).unwrap();
    for batch_rows in [1000, 1] {
        let folded = read_archive(&blobs, BUCKET, "orders", None).await.unwrap();
        assert_eq!((folded.compacted_files, folded.single_objects), (1, 4));
        let summary = write_folded(&target, folded, batch_rows, "test")
            .await
            .unwrap();
        assert_eq!((summary.upserted, summary.deleted), (3, 1));
        assert_eq!(summary.created, batch_rows == 1000);
        assert_eq!(rows(&now), [(2, 21), (3, 31), (4, 40)]);
    }

    // As of the first minute: 1 alive, 3 before its update, 4 not yet there.
    let folded = read_archive(&blobs, BUCKET, "orders", Some(T0 + 2))
        .await
        .unwrap();
    let summary = write_folded(&target, folded, 1000, "test").await.unwrap();
    assert_eq!((summary.upserted, summary.deleted), (3, 1), "4 is deleted");
    assert_eq!(rows(&now), [(1, 10), (2, 21), (3, 30)]);
    let folded = read_archive(&blobs, BUCKET, "orders", Some(T0 + 1))
        .await
        .unwrap();
    write_folded(&target, folded, 1000, "test").await.unwrap();
    assert_eq!(rows(&now), [(1, 10), (2, 20), (3, 30)]);

    let e = read_archive(&blobs, "archive-none", "orders", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("holds no archived object of table `orders`"),
        "{e}"
    );
}

#[test]
fn targets_parse_or_say_what_to_write() {
    assert_eq!(
        RestoreTarget::parse("sqlite:out/r.db").unwrap(),
        RestoreTarget::Sqlite("out/r.db".into())
    );
    assert_eq!(
        RestoreTarget::parse("spanner:projects/p/instances/i/databases/d").unwrap(),
        RestoreTarget::Spanner {
            project: "p".into(),
            instance: "i".into(),
            database: "d".into(),
            endpoint: None,
            admin_endpoint: None
        }
    );
    for bad in [
        "sqlite:",
        "spanner:projects/p/databases/d",
        "postgres://x",
        "spanner:projects//instances/i/databases/d",
    ] {
        let e = RestoreTarget::parse(bad).unwrap_err().to_string();
        assert!(
            e.contains("sqlite:PATH or spanner:projects/P/instances/I/databases/D"),
            "{e}"
        );
    }
}
