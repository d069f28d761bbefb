use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ledgerhost_core::source::{Lease, Position, Row, Shard, Sharding, Source, TableSpec};
use ledgerhost_core::{ColumnType, TableSchema, Value};
use ledgerhost_manifest::calendar::date_text;
use rusqlite::{Connection, params_from_iter};

use super::page::*;
use super::values::*;
use super::*;

fn spec(name: &str) -> TableSpec {
    TableSpec {
        name: name.into(),
        commit_ts_column: None,
        deleted_column: None,
        sharding: Default::default(),
    }
}

fn app(path: &Path) -> Connection {
    let c = Connection::open(path).unwrap();
    c.busy_timeout(Duration::from_secs(30)).unwrap();
    c
}

/// Reads everything after `w` in pages of `page`, returning rows and the read point.
async fn poll(src: &SqliteSource, schema: &TableSchema, w: i64, page: usize) -> (Vec<Row>, i64) {
    poll_shard(src, schema, &Shard::WHOLE, w, page).await
}

/// [`poll`] of one shard.
async fn poll_shard(
    src: &SqliteSource,
    schema: &TableSchema,
    shard: &Shard,
    w: i64,
    page: usize,
) -> (Vec<Row>, i64) {
    let mut snap = src.snapshot().await.unwrap();
    let r = snap.read_ts();
    let mut after = Position::after_ts(w);
    let mut out = Vec::new();
    loop {
        let rows = snap.shard_page(schema, shard, &after, page).await.unwrap();
        let Some(last) = rows.last() else { break };
        after = Position {
            commit_ts: last.commit_ts,
            key: schema
                .key_indexes()
                .iter()
                .map(|i| last.values[*i].clone())
                .collect(),
        };
        let n = rows.len();
        out.extend(rows);
        if n < page {
            break;
        }
    }
    (out, r)
}

#[tokio::test]
async fn ten_thousand_rows_in_one_transaction_share_a_timestamp_and_page_in_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let mut c = app(&db);
    c.execute_batch(
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, amount INTEGER, commit_ts INTEGER)",
    )
    .unwrap();
    let src = SqliteSource::open(&db).unwrap();
    let schema = src.prepare_table(&spec("orders")).await.unwrap();
    let tx = c.transaction().unwrap();
    for id in (1..=10_000i64).rev() {
        tx.execute(
            "INSERT INTO orders (id, amount) VALUES (?1, ?2)",
            [id, id * 2],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    let (rows, r) = poll(&src, &schema, i64::MIN, 333).await;
    assert_eq!(rows.len(), 10_000);
    let ts: std::collections::BTreeSet<i64> = rows.iter().map(|r| r.commit_ts).collect();
    assert_eq!(ts.len(), 1, "one transaction, one commit timestamp");
    assert!(rows[0].commit_ts <= r);
    let ids: Vec<i64> = rows
        .iter()
        .map(|r| match r.values[0] {
            Value::Int64(i) => i,
            _ => panic!(),
        })
        .collect();
    assert_eq!(ids, (1..=10_000).collect::<Vec<_>>());
    // The next poll from R finds nothing new.
    let (again, _) = poll(&src, &schema, r, 333).await;
    assert!(again.is_empty());
}

#[tokio::test]
async fn concurrent_writers_never_slip_under_the_read_point() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    app(&db)
        .execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL, commit_ts INTEGER)",
        )
        .unwrap();
    let src = SqliteSource::open(&db).unwrap();
    let schema = src.prepare_table(&spec("t")).await.unwrap();
    let writer_db = db.clone();
    let writer = std::thread::spawn(move || {
        let mut c = app(&writer_db);
        for batch in 0..200i64 {
            let tx = c.transaction().unwrap();
            for i in 0..10 {
                let id = batch * 10 + i;
                tx.execute("INSERT INTO t (id, v) VALUES (?1, 0)", [id])
                    .unwrap();
                // Updates give keys later versions that must be seen too.
                if id >= 5 {
                    tx.execute("UPDATE t SET v = v + 1 WHERE id = ?1", [id - 5])
                        .unwrap();
                }
            }
            tx.commit().unwrap();
        }
    });
    let mut w = i64::MIN;
    let mut latest: std::collections::HashMap<i64, (i64, i64)> = Default::default();
    loop {
        let done = writer.is_finished();
        let (rows, r) = poll(&src, &schema, w, 50).await;
        for row in rows {
            assert!(
                row.commit_ts > w && row.commit_ts <= r,
                "row outside (W, R]"
            );
            let (Value::Int64(id), Value::Int64(v)) = (&row.values[0], &row.values[1]) else {
                panic!("{row:?}")
            };
            latest.insert(*id, (row.commit_ts, *v));
        }
        w = r;
        if done {
            break;
        }
    }
    writer.join().unwrap();
    let c = app(&db);
    let mut stmt = c.prepare("SELECT id, commit_ts, v FROM t").unwrap();
    let source: std::collections::HashMap<i64, (i64, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(source.len(), 2000);
    assert_eq!(latest, source, "every row's final version was polled");
}

#[tokio::test]
async fn every_column_type_and_composite_keys() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    app(&db)
        .execute_batch(
            "CREATE TABLE all_types (
                region TEXT NOT NULL, id INTEGER NOT NULL,
                b BOOLEAN, f REAL, n DECIMAL TEXT, s TEXT, raw BLOB, d DATE, at TIMESTAMP,
                doc JSON, tags TEXT ARRAY, nums INTEGER ARRAY, g FLOAT32, blobs \"ARRAY<BYTES>\",
                days [ARRAY<DATE>], num JSON,
                commit_ts INTEGER, PRIMARY KEY (region, id)) WITHOUT ROWID;
             INSERT INTO all_types (region, id, b, f, n, s, raw, d, at, doc, tags, nums, g,
                                    blobs, days, num)
               VALUES ('eu', 2, 1, 1.5, '12.50', 'x', x'00ff', '2024-02-29', 1700000000000000,
                       '{\"a\":1}', '[\"p\", null]', '[]', 0.25, '[\"AP8=\", null, \"\"]',
                       '[\"1970-01-02\"]', '12');
             INSERT INTO all_types (region, id) VALUES ('eu', 1);
             INSERT INTO all_types (region, id) VALUES ('asia', 9);",
        )
        .unwrap();
    let src = SqliteSource::open(&db).unwrap();
    let schema = src.prepare_table(&spec("all_types")).await.unwrap();
    assert_eq!(schema.primary_key, vec!["region", "id"]);
    use ColumnType as T;
    let types: Vec<&ColumnType> = schema.columns.iter().map(|c| &c.ty).collect();
    assert_eq!(
        types,
        vec![
            &T::String,
            &T::Int64,
            &T::Bool,
            &T::Float64,
            &T::Numeric,
            &T::String,
            &T::Bytes,
            &T::Date,
            &T::Timestamp,
            &T::Json,
            &T::Array(Box::new(T::String)),
            &T::Array(Box::new(T::Int64)),
            &T::Float32,
            &T::Array(Box::new(T::Bytes)),
            &T::Array(Box::new(T::Date)),
            &T::Json,
            &T::Timestamp,
        ]
    );
    // The rows were written before capture began: prepare_table stamped them.
    let (rows, _) = poll(&src, &schema, i64::MIN, 2).await;
    let keys: Vec<(Value, Value)> = rows
        .iter()
        .map(|r| (r.values[0].clone(), r.values[1].clone()))
        .collect();
    assert_eq!(
        keys,
        vec![
            (Value::String("asia".into()), Value::Int64(9)),
            (Value::String("eu".into()), Value::Int64(1)),
            (Value::String("eu".into()), Value::Int64(2)),
        ]
    );
    let full = &rows[2].values;
    assert_eq!(full[2], Value::Bool(true));
    assert_eq!(full[3], Value::Float64(1.5));
    assert_eq!(full[4], Value::Numeric("12.50".into()));
    assert_eq!(full[5], Value::String("x".into()));
    assert_eq!(full[6], Value::Bytes(vec![0, 255]));
    assert_eq!(full[7], Value::Date(19_782));
    assert_eq!(full[8], Value::Timestamp(1_700_000_000_000_000));
    assert_eq!(full[9], Value::Json("{\"a\":1}".into()));
    assert_eq!(
        full[10],
        Value::Array(T::String, vec![Value::String("p".into()), Value::Null])
    );
    assert_eq!(full[11], Value::Array(T::Int64, vec![]));
    assert_eq!(full[12], Value::Float32(0.25));
    assert_eq!(
        full[13],
        Value::Array(
            T::Bytes,
            vec![
                Value::Bytes(vec![0, 255]),
                Value::Null,
                Value::Bytes(vec![])
            ]
        )
    );
    assert_eq!(full[14], Value::Array(T::Date, vec![Value::Date(1)]));
    assert_eq!(
        full[15],
        Value::Json("12".into()),
        "numeric affinity undone"
    );
    assert_eq!(full[16], Value::Timestamp(rows[2].commit_ts));
    assert!(rows[1].values[2..16].iter().all(|v| *v == Value::Null));
    assert_eq!(date_text(19_782), "2024-02-29");
    assert_eq!(parse_date("1969-12-31").unwrap(), -1);
    assert!(parse_date("2023-02-29").is_err(), "not a day");
    assert!(base64_decode("AP8").is_ok() && base64_decode("A").is_err());
    for bytes in [&b""[..], b"\0", b"\0\xff", b"abc", b"\x01\x02\x03\x04\xfe"] {
        assert_eq!(base64_decode(&base64_encode(bytes)).unwrap(), bytes);
    }
    assert_eq!(base64_encode(b"\0\xff"), "AP8=");

    // A value that does not fit its declared type is an error naming table and column.
    app(&db)
        .execute_batch("UPDATE all_types SET d = 'yesterday' WHERE id = 1")
        .unwrap();
    let mut snap = src.snapshot().await.unwrap();
    let err = snap
        .page(&schema, &Position::after_ts(i64::MIN), 10)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`all_types`") && err.contains("`d`") && err.contains("yesterday"),
        "{err}"
    );
}

#[tokio::test]
async fn a_table_without_commit_timestamp_is_refused_with_the_ddl() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    app(&db)
        .execute_batch("CREATE TABLE plain (id INTEGER PRIMARY KEY, v TEXT)")
        .unwrap();
    let src = SqliteSource::open(&db).unwrap();
    let err = src
        .prepare_table(&spec("plain"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ALTER TABLE \"plain\" ADD COLUMN \"commit_ts\" INTEGER"),
        "{err}"
    );
    let err = src
        .prepare_table(&spec("missing"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`missing`") && err.contains("not found"),
        "{err}"
    );
}

#[tokio::test]
async fn an_added_column_shows_in_the_next_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let c = app(&db);
    c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, commit_ts INTEGER)")
        .unwrap();
    let src = SqliteSource::open(&db).unwrap();
    let before = src.prepare_table(&spec("t")).await.unwrap();
    c.execute_batch("ALTER TABLE t ADD COLUMN note TEXT; INSERT INTO t (id, note) VALUES (1, 'n')")
        .unwrap();
    let mut snap = src.snapshot().await.unwrap();
    let after = snap.schema(&spec("t")).await.unwrap();
    assert_eq!(after.columns.len(), before.columns.len() + 1);
    let rows = snap
        .page(&after, &Position::after_ts(i64::MIN), 10)
        .await
        .unwrap();
    assert_eq!(
        rows[0].values[2],
        Value::String("n".into()),
        "trigger still stamps"
    );
}

/// The shard each row of every shard's full read fell in, by key; panics on a row read by
/// two shards.
async fn shard_of_each_key(
    src: &SqliteSource,
    schema: &TableSchema,
    sharding: &Sharding,
) -> std::collections::BTreeMap<String, u32> {
    let mut seen = std::collections::BTreeMap::new();
    for index in 0..sharding.count {
        let shard = sharding.shard(index);
        let (rows, _) = poll_shard(src, schema, &shard, i64::MIN, 7).await;
        for row in rows {
            let key = format!("{:?}", &row.values[..2]);
            assert!(
                seen.insert(key.clone(), index).is_none(),
                "{key} read by two shards"
            );
        }
    }
    seen
}

#[tokio::test]
async fn shards_split_a_table_into_disjoint_parts_that_cover_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let c = app(&db);
    c.execute_batch(
        "CREATE TABLE by_hash (region TEXT, id INTEGER, amount INTEGER, commit_ts INTEGER,
             PRIMARY KEY (region, id));
         CREATE TABLE by_column (id INTEGER PRIMARY KEY, shard INTEGER, amount INTEGER,
             commit_ts INTEGER);",
    )
    .unwrap();
    let src = SqliteSource::open(&db).unwrap();
    let hashed = Sharding {
        count: 3,
        column: None,
    };
    let columned = Sharding {
        count: 3,
        column: Some("shard".into()),
    };
    let hash_schema = src
        .prepare_table(&TableSpec {
            sharding: hashed.clone(),
            ..spec("by_hash")
        })
        .await
        .unwrap();
    let column_schema = src
        .prepare_table(&TableSpec {
            sharding: columned.clone(),
            ..spec("by_column")
        })
        .await
        .unwrap();
    for id in 0..300i64 {
        let region = ["eu", "us", ""][id as usize % 3];
        c.execute(
            "INSERT INTO by_hash (region, id, amount) VALUES (?1, ?2, 1)",
            rusqlite::params![region, id],
        )
        .unwrap();
        // In range, out of range, negative and NULL shard values: none may go unpolled.
        let shard: Option<i64> = match id % 5 {
            4 => None,
            3 => Some(7),
            2 => Some(-1),
            n => Some(n),
        };
        c.execute(
            "INSERT INTO by_column (id, shard, amount) VALUES (?1, ?2, 1)",
            rusqlite::params![id, shard],
        )
        .unwrap();
    }
    let by_hash = shard_of_each_key(&src, &hash_schema, &hashed).await;
    assert_eq!(by_hash.len(), 300, "every row in exactly one shard");
    let spread: std::collections::BTreeSet<u32> = by_hash.values().copied().collect();
    assert_eq!(spread.len(), 3, "the hash uses every shard");
    let by_column = shard_of_each_key(&src, &column_schema, &columned).await;
    assert_eq!(by_column.len(), 300);
    for (key, shard) in &by_column {
        // `[Int64(id), ...]`: shard 1 and 2 hold their own values, shard 0 the rest.
        let id: i64 = key
            .trim_start_matches("[Int64(")
            .split(')')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let expected = match id % 5 {
            1 => 1,
            _ => 0,
        };
        assert_eq!(*shard, expected, "row {id}");
    }
    // Updates move no key to another shard (the hash depends on the key only).
    c.execute("UPDATE by_hash SET amount = 2", []).unwrap();
    assert_eq!(
        shard_of_each_key(&src, &hash_schema, &hashed).await,
        by_hash
    );
    // A wrong shard column is refused at start, naming the column.
    let err = src
        .prepare_table(&TableSpec {
            sharding: Sharding {
                count: 3,
                column: Some("nope".into()),
            },
            ..spec("by_column")
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no shard column `nope`"), "{err}");
}

#[tokio::test]
async fn listed_leases_show_holders_and_expiry_within_the_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let src = SqliteSource::open(&dir.path().join("app.db")).unwrap();
    let hour = Duration::from_secs(3600);
    for (name, holder) in [
        ("poller/t.shard-0-of-2", "a"),
        ("poller/t.shard-1-of-2", "b"),
        ("replicas/a", "a"),
    ] {
        assert!(
            src.try_lease(name, holder, hour, Some(5))
                .await
                .unwrap()
                .held
        );
    }
    src.release_lease("poller/t.shard-1-of-2", "b", Some(9))
        .await
        .unwrap();
    let leases = src.leases("poller/").await.unwrap();
    assert_eq!(leases.len(), 2, "{leases:?}");
    assert_eq!(
        (leases[0].holder.as_str(), leases[0].progress),
        ("a", Some(5))
    );
    assert!(!leases[0].remaining.is_zero());
    assert_eq!(
        (leases[1].holder.as_str(), leases[1].progress),
        ("b", Some(9))
    );
    assert!(leases[1].remaining.is_zero(), "released");
}

#[tokio::test]
async fn leases_are_exclusive_until_they_expire() {
    let dir = tempfile::tempdir().unwrap();
    let src = SqliteSource::open(&dir.path().join("app.db")).unwrap();
    let hour = Duration::from_secs(3600);
    assert!(
        src.try_lease("poller/t", "a", hour, None)
            .await
            .unwrap()
            .held
    );
    assert!(
        !src.try_lease("poller/t", "b", hour, None)
            .await
            .unwrap()
            .held
    );
    assert!(
        src.try_lease("poller/t", "a", hour, None)
            .await
            .unwrap()
            .held,
        "renewal"
    );
    assert!(
        src.try_lease("poller/u", "b", hour, None)
            .await
            .unwrap()
            .held,
        "leases are per name"
    );
    // A zero TTL expires at once, without waiting on the clock.
    assert!(
        src.try_lease("poller/t", "a", Duration::ZERO, None)
            .await
            .unwrap()
            .held
    );
    assert!(
        src.try_lease("poller/t", "b", hour, None)
            .await
            .unwrap()
            .held,
        "taken over after expiry"
    );
    assert!(
        !src.try_lease("poller/t", "a", hour, None)
            .await
            .unwrap()
            .held
    );
    src.release_lease("poller/t", "a", None).await.unwrap();
    assert!(
        !src.try_lease("poller/t", "a", hour, None)
            .await
            .unwrap()
            .held,
        "only the holder releases"
    );
    src.release_lease("poller/t", "b", None).await.unwrap();
    assert!(
        src.try_lease("poller/t", "a", hour, None)
            .await
            .unwrap()
            .held,
        "free after release"
    );
}

#[tokio::test]
async fn the_lease_carries_its_holders_progress_to_the_next_holder() {
    let dir = tempfile::tempdir().unwrap();
    let src = SqliteSource::open(&dir.path().join("app.db")).unwrap();
    let hour = Duration::from_secs(3600);
    let first = src.try_lease("poller/t", "a", hour, None).await.unwrap();
    assert_eq!(
        first,
        Lease {
            held: true,
            progress: None,
            remaining: hour,
        }
    );
    src.try_lease("poller/t", "a", hour, Some(42))
        .await
        .unwrap();
    // A renewal without progress keeps the stored one; a refused contender sees it.
    assert_eq!(
        src.try_lease("poller/t", "a", hour, None)
            .await
            .unwrap()
            .progress,
        Some(42)
    );
    let refused = src.try_lease("poller/t", "b", hour, Some(7)).await.unwrap();
    assert_eq!(
        (refused.held, refused.progress),
        (false, Some(42)),
        "a contender cannot overwrite the holder's progress"
    );
    assert!(
        refused.remaining > hour - Duration::from_secs(60) && refused.remaining <= hour,
        "a contender learns how long the holder still holds it: {refused:?}"
    );
    src.release_lease("poller/t", "a", None).await.unwrap();
    assert_eq!(
        src.try_lease("poller/t", "b", hour, None).await.unwrap(),
        Lease {
            held: true,
            progress: Some(42),
            remaining: hour,
        },
        "the next holder starts where the last one got to"
    );
}

/// `read_lease` tells a replica who holds a lease, for how long, and with which progress,
/// without a write transaction: it does not wait for a writer holding the database's write
/// lock (the application's transaction in progress), and it never takes or renews.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_a_lease_takes_no_write_lock_and_changes_nothing() {
    use ledgerhost_core::source::{TransactionKind, TransactionPurpose};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let src = SqliteSource::open(&path).unwrap();
    let hour = Duration::from_secs(3600);

    let none = src.read_lease("poller/t", "a").await.unwrap();
    assert_eq!(
        none,
        Lease {
            held: false,
            progress: None,
            remaining: Duration::ZERO
        },
        "a lease never taken is free"
    );
    src.try_lease("poller/t", "a", hour, Some(42))
        .await
        .unwrap();

    // The application holds the write lock while a replica reads the lease.
    let app = app(&path);
    app.execute_batch("BEGIN IMMEDIATE; CREATE TABLE busy (x INTEGER);")
        .unwrap();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        (
            src.read_lease("poller/t", "a").await.unwrap(),
            src.read_lease("poller/t", "b").await.unwrap(),
        )
    })
    .await
    .expect("a lease read does not wait for the writer");
    app.execute_batch("ROLLBACK").unwrap();
    let (mine, theirs) = read;
    assert!(mine.held && mine.progress == Some(42), "{mine:?}");
    assert!(
        !theirs.held && theirs.progress == Some(42),
        "another replica sees the holder's progress: {theirs:?}"
    );
    assert!(
        theirs.remaining > hour - Duration::from_secs(60) && theirs.remaining <= hour,
        "and how long until it may try to take it: {theirs:?}"
    );

    // Expiry by the row's clock: a lease of zero TTL reads as free, and reading it did
    // not take it for the reader.
    src.try_lease("poller/u", "a", Duration::ZERO, Some(1))
        .await
        .unwrap();
    let expired = src.read_lease("poller/u", "b").await.unwrap();
    assert_eq!(
        (expired.held, expired.remaining, expired.progress),
        (false, Duration::ZERO, Some(1))
    );
    let row: String = app
        .query_row(
            "SELECT holder FROM _ledgerhost_leases WHERE name = 'poller/u'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(row, "a", "a read changes nothing");

    // Released: free at once, with the progress given at release.
    src.release_lease("poller/t", "a", Some(99)).await.unwrap();
    let released = src.read_lease("poller/t", "b").await.unwrap();
    assert_eq!(
        (released.held, released.remaining, released.progress),
        (false, Duration::ZERO, Some(99))
    );

    // Counted by kind and purpose: reads are read-only, a try of a lease this source did not
    // hold is a take, the release a release.
    let count = |kind, purpose| {
        src.transactions()
            .iter()
            .find(|c| c.kind == kind && c.purpose == purpose)
            .map_or(0, |c| c.count)
    };
    assert_eq!(
        count(TransactionKind::ReadOnly, TransactionPurpose::LeaseRead),
        5
    );
    assert_eq!(
        count(TransactionKind::ReadWrite, TransactionPurpose::LeaseTake),
        2
    );
    assert_eq!(
        count(TransactionKind::ReadWrite, TransactionPurpose::LeaseRenew),
        0
    );
    assert_eq!(
        count(TransactionKind::ReadWrite, TransactionPurpose::Release),
        1
    );
    src.try_lease("poller/v", "a", hour, None).await.unwrap();
    src.try_lease("poller/v", "a", hour, None).await.unwrap();
    assert_eq!(
        count(TransactionKind::ReadWrite, TransactionPurpose::LeaseRenew),
        1,
        "a try_lease of a lease held is a renewal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_holders_in_separate_processes_get_one_lease() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    // Two sources on one file stand for two host replicas (separate connections, locks in
    // the file).
    let a = Arc::new(SqliteSource::open(&db).unwrap());
    let b = Arc::new(SqliteSource::open(&db).unwrap());
    let hour = Duration::from_secs(3600);
    for round in 0..50 {
        let name = format!("poller/t{round}");
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let src = if i % 2 == 0 { a.clone() } else { b.clone() };
                let name = name.clone();
                tokio::spawn(async move {
                    let holder = format!("replica-{i}");
                    let won = src
                        .try_lease(&name, &holder, hour, None)
                        .await
                        .unwrap()
                        .held;
                    (holder, won)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            let (holder, won) = t.await.unwrap();
            if won {
                winners.push(holder);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let stored: String = app(&db)
            .query_row(
                "SELECT holder FROM _ledgerhost_leases WHERE name = ?1",
                [&name],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(stored, winners[0]);
    }
}

#[tokio::test]
async fn old_lease_tables_are_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    app(&db)
        .execute_batch(
            "CREATE TABLE _ledgerhost_leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL,
                                              expires_at INTEGER NOT NULL);
             INSERT INTO _ledgerhost_leases VALUES ('poller/t', 'old', 9223372036854775807);",
        )
        .unwrap();
    let src = SqliteSource::open(&db).unwrap();
    assert!(
        !src.try_lease("poller/t", "new", Duration::from_secs(1), None)
            .await
            .unwrap()
            .held,
        "the migrated lease is still held"
    );
}

#[tokio::test]
async fn triggers_stamp_updates_once_per_epoch_and_survive_recursive_triggers() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let mut c = app(&db);
    c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER, commit_ts INTEGER)")
        .unwrap();
    let src = SqliteSource::open(&db).unwrap();
    let schema = src.prepare_table(&spec("t")).await.unwrap();
    // An application that turned recursive triggers on must not loop or fail.
    c.execute_batch("PRAGMA recursive_triggers = ON").unwrap();
    let tx = c.transaction().unwrap();
    tx.execute_batch(
        "INSERT INTO t (id, v) VALUES (1, 0), (2, 0);
         UPDATE t SET v = v + 1;
         UPDATE t SET v = v + 1 WHERE id = 1;",
    )
    .unwrap();
    tx.commit().unwrap();
    let (rows, r1) = poll(&src, &schema, i64::MIN, 10).await;
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r.commit_ts == rows[0].commit_ts && r.commit_ts <= r1)
    );
    assert_eq!(rows[0].values[1], Value::Int64(2));

    // After the poll closed the epoch, a new write gets a later timestamp, also when it
    // only touches a column added after the triggers were installed, or the commit-ts
    // column itself.
    c.execute_batch("ALTER TABLE t ADD COLUMN note TEXT")
        .unwrap();
    c.execute_batch("UPDATE t SET note = 'n' WHERE id = 1")
        .unwrap();
    let mut snap = src.snapshot().await.unwrap();
    let schema2 = snap.schema(&spec("t")).await.unwrap();
    drop(snap);
    let (rows, r2) = poll(&src, &schema2, r1, 10).await;
    assert_eq!(rows.len(), 1);
    assert!(rows[0].commit_ts > r1 && rows[0].commit_ts <= r2);
    assert_eq!(rows[0].values[3], Value::String("n".into()));
    c.execute_batch("UPDATE t SET commit_ts = 5 WHERE id = 2")
        .unwrap();
    let (rows, r3) = poll(&src, &schema2, r2, 10).await;
    assert_eq!(rows.len(), 1, "a forged commit timestamp is restamped");
    assert!(rows[0].commit_ts > r2 && rows[0].commit_ts <= r3);
}

#[tokio::test]
async fn prepare_is_idempotent_and_replaces_outdated_triggers() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let c = app(&db);
    c.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER, commit_ts INTEGER);
         CREATE TRIGGER \"_ledgerhost_t_upd\" AFTER UPDATE ON t BEGIN SELECT 1; END;",
    )
    .unwrap();
    let src = SqliteSource::open(&db).unwrap();
    let triggers = || -> Vec<String> {
        let c = app(&db);
        let mut stmt = c
            .prepare("SELECT sql FROM sqlite_master WHERE type = 'trigger' ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let schema = src.prepare_table(&spec("t")).await.unwrap();
    let first = triggers();
    assert_eq!(first.len(), 2);
    assert!(
        first[1].contains("NOT EXISTS"),
        "outdated trigger replaced: {}",
        first[1]
    );
    assert_eq!(src.prepare_table(&spec("t")).await.unwrap(), schema);
    assert_eq!(triggers(), first, "a second prepare changes nothing");
    c.execute_batch("INSERT INTO t (id, v) VALUES (1, 1); UPDATE t SET v = 2")
        .unwrap();
    let (rows, _) = poll(&src, &schema, i64::MIN, 10).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].values[1], Value::Int64(2));
}

#[tokio::test]
async fn pages_are_index_range_scans() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    app(&db)
        .execute_batch(
            "CREATE TABLE t (a TEXT NOT NULL, b INTEGER NOT NULL, v INTEGER, commit_ts INTEGER,
                             PRIMARY KEY (a, b))",
        )
        .unwrap();
    let src = SqliteSource::open(&db).unwrap();
    let schema = src.prepare_table(&spec("t")).await.unwrap();
    let c = app(&db);
    let explain = |sql: &str, params: Vec<rusqlite::types::Value>| -> String {
        let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let plan: Vec<String> = stmt
            .query_map(params_from_iter(params), |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        plan.join(" | ")
    };
    let after = Position {
        commit_ts: 7,
        key: vec![Value::String("x".into()), Value::Int64(1)],
    };
    // The statements read_page runs, explained: each seeks to its start in the capture
    // index and walks it in order (no sort), also within one timestamp.
    let (rest, later) = page_sql(&schema, &Shard::WHOLE, &after).unwrap();
    let plan = explain(&rest.unwrap(), rest_of_w_params(&after, 100));
    assert!(
        plan.contains("_ledgerhost_t_ts")
            && plan.contains("commit_ts=? AND (a,b)>(?,?)")
            && !plan.contains("TEMP B-TREE"),
        "{plan}"
    );
    let plan = explain(&later, later_params(&after, 100, 9));
    assert!(
        plan.contains("_ledgerhost_t_ts (commit_ts>? AND commit_ts<?)")
            && !plan.contains("TEMP B-TREE"),
        "{plan}"
    );
    let (rest, _) = page_sql(&schema, &Shard::WHOLE, &Position::after_ts(7)).unwrap();
    assert!(rest.is_none(), "no key: only later timestamps");

    // The same for a rowid table keyed by its INTEGER PRIMARY KEY.
    c.execute_batch("CREATE TABLE r (id INTEGER PRIMARY KEY, commit_ts INTEGER)")
        .unwrap();
    let schema = src.prepare_table(&spec("r")).await.unwrap();
    let after = Position {
        commit_ts: 7,
        key: vec![Value::Int64(1)],
    };
    let (rest, _) = page_sql(&schema, &Shard::WHOLE, &after).unwrap();
    let plan = explain(&rest.unwrap(), rest_of_w_params(&after, 100));
    assert!(
        plan.contains("_ledgerhost_r_ts (commit_ts=? AND id>?)") && !plan.contains("TEMP"),
        "{plan}"
    );
}

#[tokio::test]
async fn polled_rows_encode_to_avro_and_decode_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    app(&db)
        .execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, b BOOLEAN, f REAL, g FLOAT32,
                 n DECIMAL TEXT, s TEXT, raw BLOB, d DATE, at TIMESTAMP, doc JSON,
                 tags TEXT ARRAY, deleted BOOLEAN, commit_ts INTEGER)",
        )
        .unwrap();
    let src = SqliteSource::open(&db).unwrap();
    let spec = TableSpec {
        name: "t".into(),
        commit_ts_column: None,
        deleted_column: Some("deleted".into()),
        sharding: Default::default(),
    };
    let schema = src.prepare_table(&spec).await.unwrap();
    app(&db)
        .execute_batch(
            "INSERT INTO t (id, b, f, g, n, s, raw, d, at, doc, tags, deleted) VALUES
               (1, 0, -2.5, 0.5, '-12.500', 'é', x'01', '1999-12-31', -5, '[1]',
                '[null, \"a\"]', 0),
               (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 1);",
        )
        .unwrap();
    let (rows, _) = poll(&src, &schema, i64::MIN, 10).await;
    assert_eq!(rows.len(), 2);
    let encoder = ledgerhost_avro::Encoder::new(&schema).unwrap();
    let decoder = ledgerhost_avro::Decoder::new();
    for row in &rows {
        let msg = encoder.encode(row).unwrap();
        let event = decoder.decode(&msg.data, &[]).unwrap();
        let mut expected = row.values.clone();
        // Decimals come back in their shortest exact form.
        if let Value::Numeric(n) = &mut expected[4] {
            *n = "-12.5".into();
        }
        let got: Vec<Value> = event.fields.iter().map(|f| f.value.clone()).collect();
        assert_eq!(got, expected);
        assert_eq!(event.commit_ts, row.commit_ts);
        assert_eq!(event.deleted, row.values[0] == Value::Int64(2));
        assert_eq!(event.key[0].value, row.values[0]);
    }
}
