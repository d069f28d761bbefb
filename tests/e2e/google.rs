//! The Google backends against the official emulators: Spanner source, Pub/Sub ledger.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use ledgerhost_core::ColumnType;
use ledgerhost_core::Value;
use ledgerhost_core::ledger::{Ledger, Message, RedriveSelection, SubscriptionSpec, attr};
use ledgerhost_core::source::{Position, Source, TableSpec};
use ledgerhost_ledger::pubsub::PubSubLedger;
use ledgerhost_source::spanner::SpannerSource;
use ledgerhost_tests::harness::google::{PROJECT, PubSubEmulator, SpannerEmulator, spanner_write};
use ledgerhost_tests::harness::pubsub_front::Rpc;

fn spec(name: &str) -> TableSpec {
    TableSpec {
        name: name.into(),
        commit_ts_column: None,
        deleted_column: None,
        sharding: Default::default(),
    }
}

const EVERY_TYPE: &str = "CREATE TABLE every_type (
    id INT64 NOT NULL,
    b BOOL, i INT64, f32 FLOAT32, f64 FLOAT64, num NUMERIC, s STRING(MAX), bys BYTES(MAX),
    d DATE, ts TIMESTAMP, j JSON,
    ab ARRAY<BOOL>, ai ARRAY<INT64>, af32 ARRAY<FLOAT32>, af64 ARRAY<FLOAT64>,
    anum ARRAY<NUMERIC>, astr ARRAY<STRING(MAX)>, abys ARRAY<BYTES(MAX)>, ad ARRAY<DATE>,
    ats ARRAY<TIMESTAMP>, aj ARRAY<JSON>,
    commit_ts TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp=true)
) PRIMARY KEY (id)";
/// Every polled table has an index leading with its commit-timestamp column.
const EVERY_TYPE_INDEX: &str = "CREATE INDEX every_type_by_commit_ts ON every_type (commit_ts)";

#[tokio::test]
async fn spanner_reads_every_type_with_nulls() {
    let emu = SpannerEmulator::start().await;
    let db = emu.create_database(&[EVERY_TYPE, EVERY_TYPE_INDEX]).await;
    let commit = spanner_write(
        &db,
        &[
            "INSERT INTO every_type (id, b, i, f32, f64, num, s, bys, d, ts, j, ab, ai, af32, af64, \
             anum, astr, abys, ad, ats, aj, commit_ts) VALUES (1, true, -42, CAST(1.5 AS FLOAT32), \
             2.25, NUMERIC '12.50', 'héllo', b'\\x00\\xff', DATE '2024-02-29', \
             TIMESTAMP '2024-02-29T12:00:00.123456Z', JSON '{\"a\":1}', [true, NULL], [1, NULL, 3], \
             ARRAY<FLOAT32>[1.5, NULL], [2.5, NULL], [NUMERIC '1.25', NULL], ['x', NULL], \
             [b'\\x01', NULL], [DATE '1970-01-02', NULL], [TIMESTAMP '1970-01-01T00:00:01Z', NULL], \
             [JSON '[1]', NULL], PENDING_COMMIT_TIMESTAMP())"
                .to_string(),
            "INSERT INTO every_type (id, commit_ts) VALUES (2, PENDING_COMMIT_TIMESTAMP())".to_string(),
        ],
    )
    .await;

    let source = SpannerSource::connect(db).await.expect("connect");
    let schema = source
        .prepare_table(&spec("every_type"))
        .await
        .expect("schema");
    assert_eq!(schema.primary_key, vec!["id"]);
    assert_eq!(schema.commit_ts_column, "commit_ts");
    let ty = |n: &str| schema.columns[schema.column_index(n).unwrap()].ty.clone();
    assert_eq!(ty("f32"), ColumnType::Float32);
    assert_eq!(ty("aj"), ColumnType::Array(Box::new(ColumnType::Json)));

    let mut snap = source.snapshot().await.expect("snapshot");
    assert!(snap.read_ts() >= commit);
    let rows = snap
        .page(&schema, &Position::after_ts(0), 10)
        .await
        .expect("page");
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.commit_ts == commit));
    let arr = |t: ColumnType, v: Value| Value::Array(t, vec![v, Value::Null]);
    let expected = vec![
        Value::Int64(1),
        Value::Bool(true),
        Value::Int64(-42),
        Value::Float32(1.5),
        Value::Float64(2.25),
        Value::Numeric("12.5".into()),
        Value::String("héllo".into()),
        Value::Bytes(vec![0, 255]),
        Value::Date(19_782),
        Value::Timestamp(1_709_208_000_123_456),
        Value::Json("{\"a\":1}".into()),
        arr(ColumnType::Bool, Value::Bool(true)),
        Value::Array(
            ColumnType::Int64,
            vec![Value::Int64(1), Value::Null, Value::Int64(3)],
        ),
        arr(ColumnType::Float32, Value::Float32(1.5)),
        arr(ColumnType::Float64, Value::Float64(2.5)),
        arr(ColumnType::Numeric, Value::Numeric("1.25".into())),
        arr(ColumnType::String, Value::String("x".into())),
        arr(ColumnType::Bytes, Value::Bytes(vec![1])),
        arr(ColumnType::Date, Value::Date(1)),
        arr(ColumnType::Timestamp, Value::Timestamp(1_000_000)),
        arr(ColumnType::Json, Value::Json("[1]".into())),
        Value::Timestamp(commit),
    ];
    assert_eq!(rows[0].values, expected);
    let mut nulls = vec![Value::Int64(2)];
    nulls.extend(std::iter::repeat_n(Value::Null, 20));
    nulls.push(Value::Timestamp(commit));
    assert_eq!(rows[1].values, nulls);
}

#[tokio::test]
async fn spanner_pages_one_big_transaction_by_key_and_hides_later_commits() {
    let emu = SpannerEmulator::start().await;
    let db = emu
        .create_database(&[
            "CREATE TABLE big (k STRING(MAX) NOT NULL, n INT64 NOT NULL, \
             v STRING(MAX), commit_ts TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp=true)) \
             PRIMARY KEY (k, n)",
            "CREATE INDEX big_by_commit_ts ON big (commit_ts)",
        ])
        .await;
    // 5 000 rows, one transaction, one commit timestamp; a composite key spreads them over
    // 7 values of `k` so the keyset crosses key-prefix boundaries.
    // PENDING_COMMIT_TIMESTAMP() is only allowed in VALUES, so the rows are spelled out, in
    // ten statements of one transaction.
    let statements: Vec<String> = (0..10)
        .map(|chunk| {
            let values: Vec<String> = (chunk * 500..(chunk + 1) * 500)
                .map(|x| format!("('k{}', {x}, 'payload', PENDING_COMMIT_TIMESTAMP())", x % 7))
                .collect();
            format!(
                "INSERT INTO big (k, n, v, commit_ts) VALUES {}",
                values.join(", ")
            )
        })
        .collect();
    let commit = spanner_write(&db, &statements).await;
    let source = SpannerSource::connect(db.clone()).await.expect("connect");
    let schema = source.prepare_table(&spec("big")).await.expect("schema");
    let mut snap = source.snapshot().await.expect("snapshot");
    let r = snap.read_ts();

    // A commit after R must not appear in this snapshot.
    let later = spanner_write(
        &db,
        &["INSERT INTO big (k, n, v, commit_ts) VALUES ('a', -1, 'late', PENDING_COMMIT_TIMESTAMP())"
            .to_string()],
    )
    .await;
    assert!(
        later > r,
        "a commit after the snapshot has a later timestamp"
    );

    let mut after = Position::after_ts(0);
    let mut keys = Vec::new();
    loop {
        let page = snap.page(&schema, &after, 97).await.expect("page");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 97);
        for row in &page {
            assert_eq!(row.commit_ts, commit);
            let (Value::String(k), Value::Int64(n)) = (&row.values[0], &row.values[1]) else {
                panic!("unexpected key {:?}", row.values);
            };
            keys.push((k.clone(), *n));
        }
        let last = page.last().unwrap();
        after = Position {
            commit_ts: last.commit_ts,
            key: last.values[..2].to_vec(),
        };
    }
    assert_eq!(keys.len(), 5000, "every row exactly once");
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(keys, sorted, "pages come in key order without duplicates");
    assert!(
        !keys.iter().any(|(_, n)| *n == -1),
        "the later commit is invisible"
    );

    // A new snapshot sees exactly the later row after the old watermark.
    let mut snap2 = source.snapshot().await.expect("snapshot 2");
    let rows = snap2
        .page(&schema, &Position::after_ts(r), 100)
        .await
        .expect("page");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].commit_ts, later);
    assert_eq!(rows[0].values[1], Value::Int64(-1));
}

#[tokio::test]
async fn spanner_refuses_a_table_without_commit_timestamp_and_handles_leases() {
    let emu = SpannerEmulator::start().await;
    let db = emu
        .create_database(&[
            "CREATE TABLE plain (id INT64 NOT NULL, created TIMESTAMP) PRIMARY KEY (id)",
        ])
        .await;
    let a = SpannerSource::connect(db.clone()).await.expect("connect a");
    let err = a.prepare_table(&spec("plain")).await.expect_err("refused");
    let msg = err.to_string();
    assert!(
        msg.contains(
            "ALTER TABLE `plain` ADD COLUMN `commit_ts` TIMESTAMP OPTIONS (allow_commit_timestamp=true)"
        ),
        "{msg}"
    );
    assert!(msg.contains("PENDING_COMMIT_TIMESTAMP()"), "{msg}");
    assert!(matches!(
        a.prepare_table(&spec("missing")).await,
        Err(ledgerhost_core::PortError::NotFound { .. })
    ));

    // Leases: two replicas (two clients) contend for one name.
    let b = SpannerSource::connect(db).await.expect("connect b");
    let ttl = Duration::from_secs(3);
    let lease = |src: &SpannerSource, holder: &'static str, progress: Option<i64>| {
        let src = src.clone();
        async move {
            src.try_lease("poll:plain", holder, ttl, progress)
                .await
                .expect("lease")
        }
    };
    assert!(lease(&a, "a", None).await.held);
    assert!(!lease(&b, "b", Some(7)).await.held);
    let renewed = lease(&a, "a", Some(42)).await;
    assert!(renewed.held && renewed.progress == Some(42), "{renewed:?}");
    // A replica watches the lease with a single-use read: holder, time left (Spanner's
    // clock) and progress, without a read-write transaction.
    let seen = b.read_lease("poll:plain", "b").await.expect("read");
    assert!(
        !seen.held
            && seen.progress == Some(42)
            && !seen.remaining.is_zero()
            && seen.remaining <= ttl,
        "{seen:?}"
    );
    assert!(a.read_lease("poll:plain", "a").await.expect("read").held);
    let count = |src: &SpannerSource, kind, purpose| {
        src.transactions()
            .iter()
            .find(|c| c.kind == kind && c.purpose == purpose)
            .map_or(0, |c| c.count)
    };
    use ledgerhost_core::source::{TransactionKind as K, TransactionPurpose as P};
    assert_eq!(count(&a, K::ReadWrite, P::LeaseTake), 1);
    assert_eq!(count(&a, K::ReadWrite, P::LeaseRenew), 1);
    assert_eq!(count(&a, K::ReadOnly, P::LeaseRead), 1);
    assert_eq!(count(&b, K::ReadWrite, P::LeaseTake), 1, "b's refused take");
    assert_eq!(count(&b, K::ReadOnly, P::LeaseRead), 1);
    // After the TTL passes without renewal, b takes over (Spanner's clock decides) and
    // finds a's progress.
    let taken = ledgerhost_tests::harness::eventually(Duration::from_secs(30), || async {
        lease(&b, "b", None).await.held
    })
    .await;
    assert!(taken, "b takes the lease over after it expired");
    assert_eq!(lease(&b, "b", None).await.progress, Some(42));
    assert!(!lease(&a, "a", None).await.held);
    lease(&b, "b", Some(99)).await;
    b.release_lease("poll:plain", "b", None)
        .await
        .expect("release");
    let after = lease(&a, "a", None).await;
    assert!(after.held, "free after release");
    assert_eq!(
        after.progress,
        Some(99),
        "the progress survives the release"
    );
}

/// Production scans the whole table at every poll unless an index leads with the
/// commit-timestamp column (the emulator hides the cost): a table without one is refused
/// with the `CREATE INDEX` to run, or polled by scans with `MissingCommitIndex::Warn`; a
/// table with one is polled through it (`FORCE_INDEX`), and a dropped index is noticed.
#[tokio::test]
async fn spanner_polls_through_the_commit_timestamp_index_and_refuses_a_table_without_one() {
    use ledgerhost_core::PortError;
    use ledgerhost_source::spanner::{MissingCommitIndex, PollIndex};
    let emu = SpannerEmulator::start().await;
    let db = emu
        .create_database(&[
            "CREATE TABLE noidx (id INT64 NOT NULL, v STRING(MAX), \
             commit_ts TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp=true)) PRIMARY KEY (id)",
            // The sharded form leads with the shard: not usable by today's poll.
            "CREATE TABLE sharded (id INT64 NOT NULL, \
             commit_ts TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp=true), \
             shard INT64 AS (MOD(FARM_FINGERPRINT(CAST(id AS STRING)), 8)) STORED) PRIMARY KEY (id)",
            "CREATE INDEX sharded_by_shard_commit_ts ON sharded (shard, commit_ts)",
            "CREATE TABLE orders (id INT64 NOT NULL, v STRING(MAX), \
             commit_ts TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp=true)) PRIMARY KEY (id)",
            "CREATE INDEX orders_by_commit_ts ON orders (commit_ts)",
        ])
        .await;
    for t in ["noidx", "orders"] {
        spanner_write(
            &db,
            &[format!(
                "INSERT INTO {t} (id, v, commit_ts) VALUES (1, 'x', PENDING_COMMIT_TIMESTAMP()), \
                 (2, 'y', PENDING_COMMIT_TIMESTAMP())"
            )],
        )
        .await;
    }

    // Refused by default, with the DDL.
    let strict = SpannerSource::connect(db.clone()).await.expect("connect");
    for (table, ddl) in [
        (
            "noidx",
            "CREATE INDEX `noidx_by_commit_ts` ON `noidx` (`commit_ts`)",
        ),
        (
            "sharded",
            "CREATE INDEX `sharded_by_commit_ts` ON `sharded` (`commit_ts`)",
        ),
    ] {
        let err = strict
            .prepare_table(&spec(table))
            .await
            .expect_err("refused");
        let msg = err.to_string();
        assert!(matches!(err, PortError::Invalid { .. }), "{msg}");
        assert!(msg.contains(ddl), "{msg}");
        assert!(msg.contains("would scan the whole table"), "{msg}");
        assert!(msg.contains("missing-commit-index = \"warn\""), "{msg}");
    }

    // Warned about only, on request: polled by scans.
    let lenient = SpannerSource::connect(ledgerhost_source::spanner::SpannerConfig {
        missing_commit_index: MissingCommitIndex::Warn,
        ..db.clone()
    })
    .await
    .expect("connect");
    let schema = lenient.prepare_table(&spec("noidx")).await.expect("warned");
    assert_eq!(lenient.poll_index("noidx"), Some(PollIndex::FullScan));
    let mut snap = lenient.snapshot().await.expect("snapshot");
    let rows = snap
        .page(&schema, &Position::after_ts(0), 10)
        .await
        .expect("page by scan");
    assert_eq!(rows.len(), 2);

    // With the index: the poll query forces it, and the emulator runs it.
    let orders = strict.prepare_table(&spec("orders")).await.expect("ready");
    assert_eq!(
        strict.poll_index("orders"),
        Some(PollIndex::Index("orders_by_commit_ts".into()))
    );
    let (sql, plan) = strict.poll_query_plan(&orders).await.expect("plan");
    assert!(
        sql.contains("FROM `orders`@{FORCE_INDEX=`orders_by_commit_ts`} WHERE"),
        "{sql}"
    );
    let real_plan = plan.iter().any(|n| !n.starts_with("No query plan"));
    if real_plan {
        // Production (and any emulator that plans): the scan reads the index.
        assert!(
            plan.iter().any(|n| n.contains("orders_by_commit_ts")),
            "the poll's plan does not read the index: {plan:#?}"
        );
    } else {
        // This emulator answers "No query plan"; it does check the hint (an unknown index is
        // refused), so the statement it ran reads the index.
        eprintln!("emulator query plan: {plan:?} (hint checked instead)");
    }
    let mut snap = strict.snapshot().await.expect("snapshot");
    let rows = snap
        .page(&orders, &Position::after_ts(0), 10)
        .await
        .expect("page through the index");
    assert_eq!(rows.len(), 2);
    drop(snap);

    // The index dropped while the host runs: the next page fails transiently and the one
    // after refuses the table with the DDL.
    strict
        .update_ddl(vec!["DROP INDEX orders_by_commit_ts".into()])
        .await
        .expect("drop index");
    let mut snap = strict.snapshot().await.expect("snapshot");
    let first = snap
        .page(&orders, &Position::after_ts(0), 10)
        .await
        .expect_err("the forced index is gone");
    assert!(first.is_transient(), "{first}");
    let again = snap
        .page(&orders, &Position::after_ts(0), 10)
        .await
        .expect_err("refused now");
    assert!(
        again
            .to_string()
            .contains("CREATE INDEX `orders_by_commit_ts` ON `orders` (`commit_ts`)"),
        "{again}"
    );
}

/// Reads every row of `shard` visible in `snap` after `from`, in pages of `page` rows:
/// each row's primary key and its commit timestamp.
async fn read_shard(
    snap: &mut Box<dyn ledgerhost_core::source::Snapshot>,
    schema: &ledgerhost_core::TableSchema,
    shard: &ledgerhost_core::source::Shard,
    from: i64,
    page: usize,
) -> Vec<(Vec<Value>, i64)> {
    let key_idx = schema.key_indexes();
    let mut after = Position::after_ts(from);
    let mut rows = Vec::new();
    loop {
        let got = snap
            .shard_page(schema, shard, &after, page)
            .await
            .unwrap_or_else(|e| panic!("page of {shard:?}: {e}"));
        assert!(got.len() <= page);
        let Some(last) = got.last() else { break };
        after = Position {
            commit_ts: last.commit_ts,
            key: key_idx.iter().map(|&i| last.values[i].clone()).collect(),
        };
        for row in &got {
            let key: Vec<Value> = key_idx.iter().map(|&i| row.values[i].clone()).collect();
            rows.push((key, row.commit_ts));
        }
    }
    rows
}

/// Every shard of `schema` read to the end after `from`: key → the one shard it was read
/// in (panics on a key read twice), and the read point.
async fn read_every_shard(
    source: &SpannerSource,
    schema: &ledgerhost_core::TableSchema,
    sharding: &ledgerhost_core::source::Sharding,
    from: i64,
) -> (BTreeMap<String, u32>, i64) {
    let mut snap = source.snapshot().await.expect("snapshot");
    let mut seen = BTreeMap::new();
    for i in 0..sharding.count {
        let rows = read_shard(&mut snap, schema, &sharding.shard(i), from, 7).await;
        let mut last_ts = i64::MIN;
        for (key, ts) in rows {
            let text = format!("{key:?}");
            // Pages come in commit-timestamp order: the keyset never goes back.
            assert!(ts >= last_ts, "{text} out of order in shard {i}");
            last_ts = ts;
            if let Some(other) = seen.insert(text.clone(), i) {
                panic!("{text} read in shard {other} and shard {i}");
            }
        }
    }
    (seen, snap.read_ts())
}

/// A table sharded by its shard column (rows with a NULL or out-of-range value fall to
/// shard 0) and one sharded by a hash of its composite key (a STRING, an INT64 and a
/// NULL-able STRING part): every shard read to the end in pages of 7 gives every row
/// exactly once, and after every row is updated each key is read in the same shard again.
#[tokio::test]
async fn spanner_shards_split_every_row_into_exactly_one_shard_and_keep_keys_in_place() {
    use ledgerhost_core::source::Sharding;
    use ledgerhost_source::spanner::PollIndex;
    let emu = SpannerEmulator::start().await;
    let db = emu
        .create_database(&[
            "CREATE TABLE bycol (id INT64 NOT NULL, shard INT64, v STRING(MAX), \
             commit_ts TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp=true)) PRIMARY KEY (id)",
            "CREATE INDEX bycol_by_commit_ts ON bycol (commit_ts)",
            "CREATE INDEX bycolByShard ON bycol (shard, commit_ts)",
            "CREATE TABLE byhash (region STRING(MAX) NOT NULL, n INT64 NOT NULL, sub STRING(MAX), \
             v STRING(MAX), commit_ts TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp=true)) \
             PRIMARY KEY (region, n, sub)",
            "CREATE INDEX byhash_by_commit_ts ON byhash (commit_ts)",
        ])
        .await;
    const ROWS: i64 = 300;
    // Three transactions each, so the pages cross commit timestamps as well as keys.
    let shard_value = |id: i64| match id % 11 {
        0 => "NULL".to_string(),
        // -1 and 3, 4 are outside 0..3: shard 0 must take them.
        m => (m % 6 - 1).to_string(),
    };
    for chunk in 0..3 {
        let ids = chunk * ROWS / 3..(chunk + 1) * ROWS / 3;
        let col: Vec<String> = ids
            .clone()
            .map(|id| {
                format!(
                    "({id}, {}, 'v', PENDING_COMMIT_TIMESTAMP())",
                    shard_value(id)
                )
            })
            .collect();
        let hash: Vec<String> = ids
            .map(|n| {
                let sub = if n % 7 == 0 {
                    "NULL".to_string()
                } else {
                    format!("'s{}'", n % 3)
                };
                format!(
                    "('r{}', {n}, {sub}, 'v', PENDING_COMMIT_TIMESTAMP())",
                    n % 4
                )
            })
            .collect();
        spanner_write(
            &db,
            &[
                format!(
                    "INSERT INTO bycol (id, shard, v, commit_ts) VALUES {}",
                    col.join(", ")
                ),
                format!(
                    "INSERT INTO byhash (region, n, sub, v, commit_ts) VALUES {}",
                    hash.join(", ")
                ),
            ],
        )
        .await;
    }

    let source = SpannerSource::connect(db.clone()).await.expect("connect");
    let by_column = Sharding {
        count: 3,
        column: Some("shard".into()),
    };
    let by_hash = Sharding {
        count: 3,
        column: None,
    };
    let col_schema = source
        .prepare_table(&TableSpec {
            sharding: by_column.clone(),
            ..spec("bycol")
        })
        .await
        .expect("column-sharded table ready");
    assert_eq!(
        source.shard_index("bycol", "shard"),
        Some(PollIndex::Index("bycolByShard".into()))
    );
    let hash_schema = source
        .prepare_table(&TableSpec {
            sharding: by_hash.clone(),
            ..spec("byhash")
        })
        .await
        .expect("hash-sharded table ready");

    let (col_shards, _) = read_every_shard(&source, &col_schema, &by_column, 0).await;
    let (hash_shards, r) = read_every_shard(&source, &hash_schema, &by_hash, 0).await;
    // The whole table (a backfill's read) is still one shard of everything.
    let mut snap = source.snapshot().await.expect("snapshot");
    let whole = read_shard(
        &mut snap,
        &hash_schema,
        &ledgerhost_core::source::Shard::WHOLE,
        0,
        97,
    )
    .await;
    assert_eq!(whole.len(), ROWS as usize);
    drop(snap);
    assert_eq!(col_shards.len(), ROWS as usize, "every row of bycol once");
    assert_eq!(hash_shards.len(), ROWS as usize, "every row of byhash once");
    for id in 0..ROWS {
        let expected = match shard_value(id).parse::<u32>() {
            Ok(s) if (1..3).contains(&s) => s,
            _ => 0,
        };
        let key = format!("{:?}", vec![Value::Int64(id)]);
        assert_eq!(col_shards.get(&key), Some(&expected), "row {id}");
    }
    for (i, n) in (0..3).map(|i| (i, hash_shards.values().filter(|s| **s == i).count())) {
        // 300 keys over 3 shards by a fingerprint: each shard gets a fair share.
        assert!(
            n > 50,
            "shard {i} of byhash has only {n} rows: {hash_shards:?}"
        );
    }
    let null_part = hash_shards.keys().filter(|k| k.ends_with("Null]")).count();
    assert_eq!(null_part, 43, "the keys with a NULL part are read too");

    // Every row updated (one transaction, one new commit timestamp): each key comes again,
    // in the shard it was in.
    spanner_write(
        &db,
        &[
            "UPDATE bycol SET v = 'w', commit_ts = PENDING_COMMIT_TIMESTAMP() WHERE true"
                .to_string(),
            "UPDATE byhash SET v = 'w', commit_ts = PENDING_COMMIT_TIMESTAMP() WHERE true"
                .to_string(),
        ],
    )
    .await;
    let (col_again, _) = read_every_shard(&source, &col_schema, &by_column, r).await;
    let (hash_again, _) = read_every_shard(&source, &hash_schema, &by_hash, r).await;
    assert_eq!(col_again, col_shards, "bycol keys stay in their shards");
    assert_eq!(hash_again, hash_shards, "byhash keys stay in their shards");
}

/// A table sharded by a column is refused without the index keyed (shard column, commit
/// timestamp), naming the DDL (or polled by scans with `MissingCommitIndex::Warn`); a shard
/// column that is missing or not INT64 is refused too.
#[tokio::test]
async fn spanner_refuses_a_column_sharded_table_without_its_shard_index() {
    use ledgerhost_core::PortError;
    use ledgerhost_core::source::Sharding;
    use ledgerhost_source::spanner::{MissingCommitIndex, PollIndex};
    let emu = SpannerEmulator::start().await;
    let db = emu
        .create_database(&[
            "CREATE TABLE orders (id INT64 NOT NULL, shard INT64, label STRING(MAX), \
             commit_ts TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp=true)) PRIMARY KEY (id)",
            "CREATE INDEX orders_by_commit_ts ON orders (commit_ts)",
        ])
        .await;
    spanner_write(
        &db,
        &[
            "INSERT INTO orders (id, shard, commit_ts) VALUES (1, 1, PENDING_COMMIT_TIMESTAMP()), \
           (2, 2, PENDING_COMMIT_TIMESTAMP()), (3, NULL, PENDING_COMMIT_TIMESTAMP())"
                .to_string(),
        ],
    )
    .await;
    let sharded = |column: &str| TableSpec {
        sharding: Sharding {
            count: 3,
            column: Some(column.into()),
        },
        ..spec("orders")
    };
    let strict = SpannerSource::connect(db.clone()).await.expect("connect");
    let err = strict
        .prepare_table(&sharded("shard"))
        .await
        .expect_err("refused without the shard index");
    let msg = err.to_string();
    assert!(matches!(err, PortError::Invalid { .. }), "{msg}");
    assert!(
        msg.contains("CREATE INDEX `ordersByShard` ON `orders` (`shard`, `commit_ts`)"),
        "{msg}"
    );
    assert!(msg.contains("missing-commit-index = \"warn\""), "{msg}");
    for (column, why) in [("label", "must be INT64"), ("nope", "has no shard column")] {
        let msg = strict
            .prepare_table(&sharded(column))
            .await
            .expect_err("refused")
            .to_string();
        assert!(msg.contains(why), "{msg}");
    }
    // Unsharded (or one shard), the table needs no shard index.
    strict
        .prepare_table(&spec("orders"))
        .await
        .expect("one shard");

    // Warned about only, on request: shards polled by scans.
    let lenient = SpannerSource::connect(ledgerhost_source::spanner::SpannerConfig {
        missing_commit_index: MissingCommitIndex::Warn,
        ..db.clone()
    })
    .await
    .expect("connect");
    let schema = lenient
        .prepare_table(&sharded("shard"))
        .await
        .expect("warned");
    assert_eq!(
        lenient.shard_index("orders", "shard"),
        Some(PollIndex::FullScan)
    );
    let mut snap = lenient.snapshot().await.expect("snapshot");
    let sharding = sharded("shard").sharding;
    let zero = read_shard(&mut snap, &schema, &sharding.shard(0), 0, 7).await;
    assert_eq!(
        zero.len(),
        1,
        "the NULL shard value falls to shard 0: {zero:?}"
    );

    // Once created, the index is found and used.
    strict
        .update_ddl(vec![
            "CREATE INDEX ordersByShard ON orders (shard, commit_ts)".into(),
        ])
        .await
        .expect("create the shard index");
    let schema = strict
        .prepare_table(&sharded("shard"))
        .await
        .expect("ready with the index");
    assert_eq!(
        strict.shard_index("orders", "shard"),
        Some(PollIndex::Index("ordersByShard".into()))
    );
    let mut snap = strict.snapshot().await.expect("snapshot");
    let two = read_shard(&mut snap, &schema, &sharding.shard(2), 0, 7).await;
    assert_eq!(two.len(), 1, "{two:?}");
    assert_eq!(two[0].0, vec![Value::Int64(2)]);

    // The same table sharded by its (one-column) key's hash needs no shard index.
    let by_hash = TableSpec {
        sharding: Sharding {
            count: 2,
            column: None,
        },
        ..spec("orders")
    };
    let hash_schema = strict.prepare_table(&by_hash).await.expect("hash-sharded");
    let mut keys = BTreeSet::new();
    for i in 0..2 {
        for (key, _) in read_shard(&mut snap, &hash_schema, &by_hash.sharding.shard(i), 0, 7).await
        {
            assert!(keys.insert(format!("{key:?}")), "{key:?} in two shards");
        }
    }
    assert_eq!(keys.len(), 3, "{keys:?}");
    drop(snap);

    // The shard index dropped while the host runs: the next shard page fails transiently
    // and the one after refuses the table with the DDL.
    strict
        .update_ddl(vec!["DROP INDEX ordersByShard".into()])
        .await
        .expect("drop the shard index");
    let mut snap = strict.snapshot().await.expect("snapshot");
    let first = snap
        .shard_page(&schema, &sharding.shard(1), &Position::after_ts(0), 7)
        .await
        .expect_err("the forced index is gone");
    assert!(first.is_transient(), "{first}");
    let again = snap
        .shard_page(&schema, &sharding.shard(1), &Position::after_ts(0), 7)
        .await
        .expect_err("refused now");
    assert!(
        again
            .to_string()
            .contains("CREATE INDEX `ordersByShard` ON `orders` (`shard`, `commit_ts`)"),
        "{again}"
    );
}

/// `leases(prefix)` lists the leases under a prefix in name order with their holder, time
/// left (Spanner's clock) and progress, in one single-use read; a released lease stays
/// listed with no time left.
#[tokio::test]
async fn spanner_lists_the_leases_under_a_prefix() {
    use ledgerhost_core::source::{TransactionKind as K, TransactionPurpose as P};
    let emu = SpannerEmulator::start().await;
    let db = emu
        .create_database(&[
            "CREATE TABLE t (id INT64 NOT NULL, ts TIMESTAMP OPTIONS (allow_commit_timestamp=true)) PRIMARY KEY (id)",
        ])
        .await;
    let a = SpannerSource::connect(db.clone()).await.expect("connect a");
    let b = SpannerSource::connect(db).await.expect("connect b");
    let ttl = Duration::from_secs(60);
    for (src, name, holder, progress) in [
        (&a, "poll:orders.shard-1-of-2", "a", Some(11)),
        (&b, "poll:orders.shard-0-of-2", "b", None),
        (&a, "poll:orders", "a", Some(5)),
        (&b, "poll:other", "b", Some(7)),
        // LIKE 'poll:orders.shard-%' would read `_` as any character; STARTS_WITH does not.
        (&a, "poll:orders_shard-x", "a", None),
    ] {
        let lease = src
            .try_lease(name, holder, ttl, progress)
            .await
            .expect("lease");
        assert!(lease.held, "{name}: {lease:?}");
    }
    let reads_before = |src: &SpannerSource| {
        src.transactions()
            .iter()
            .find(|c| c.kind == K::ReadOnly && c.purpose == P::LeaseRead)
            .map_or(0, |c| c.count)
    };
    let before = reads_before(&b);
    let listed = b.leases("poll:orders.shard-").await.expect("leases");
    assert_eq!(reads_before(&b), before + 1, "one read-only transaction");
    let names: Vec<&str> = listed.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        ["poll:orders.shard-0-of-2", "poll:orders.shard-1-of-2"],
        "{listed:?}"
    );
    assert_eq!(listed[0].holder, "b");
    assert_eq!(listed[1].holder, "a");
    assert_eq!(listed[0].progress, None);
    assert_eq!(listed[1].progress, Some(11));
    for l in &listed {
        assert!(!l.remaining.is_zero() && l.remaining <= ttl, "{l:?}");
    }

    // Released: still listed, with its holder and progress, no time left.
    a.release_lease("poll:orders.shard-1-of-2", "a", Some(12))
        .await
        .expect("release");
    let listed = b.leases("poll:orders").await.expect("leases");
    let names: Vec<&str> = listed.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "poll:orders",
            "poll:orders.shard-0-of-2",
            "poll:orders.shard-1-of-2",
            "poll:orders_shard-x"
        ]
    );
    let released = &listed[2];
    assert_eq!(
        (
            released.holder.as_str(),
            released.progress,
            released.remaining
        ),
        ("a", Some(12), Duration::ZERO),
        "{released:?}"
    );
    assert!(!listed[1].remaining.is_zero(), "{:?}", listed[1]);
    assert!(b.leases("nothing:").await.expect("leases").is_empty());
    assert_eq!(b.leases("").await.expect("every lease").len(), 5);
}

/// A host polling several tables renews their leases concurrently through one client,
/// while the application commits through another; the emulator runs one read-write
/// transaction at a time and aborts the others, which must be retried, not hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spanner_leases_of_many_tables_renew_concurrently_beside_application_writes() {
    let emu = SpannerEmulator::start().await;
    let db = emu
        .create_database(&[
            "CREATE TABLE t (id INT64 NOT NULL, ts TIMESTAMP OPTIONS (allow_commit_timestamp=true)) PRIMARY KEY (id)",
            "CREATE INDEX t_by_ts ON t (ts)",
        ])
        .await;
    let host = SpannerSource::connect(db.clone()).await.expect("connect");
    let ttl = Duration::from_secs(30);
    let renewals = async {
        for round in 0..20i64 {
            let leases: Vec<_> = (0..4)
                .map(|t| {
                    let host = host.clone();
                    tokio::spawn(async move {
                        host.try_lease(&format!("poller/t{t}"), "me", ttl, Some(round))
                            .await
                    })
                })
                .collect();
            for l in leases {
                let lease = l.await.expect("task").expect("lease");
                assert!(lease.held && lease.progress == Some(round), "{lease:?}");
            }
        }
    };
    let writes = async {
        for i in 0..40 {
            ledgerhost_tests::harness::google::spanner_write(
                &db,
                &[format!(
                    "INSERT INTO t (id, ts) VALUES ({i}, PENDING_COMMIT_TIMESTAMP())"
                )],
            )
            .await;
        }
    };
    let done = tokio::time::timeout(Duration::from_secs(300), async {
        tokio::join!(renewals, writes)
    })
    .await;
    assert!(done.is_ok(), "lease renewals or application writes hung");
}

fn sub_spec(name: &str, topic: &str, ack: Duration) -> SubscriptionSpec {
    SubscriptionSpec {
        name: name.into(),
        topic: topic.into(),
        attribute_filter: BTreeMap::new(),
        ack_deadline: ack,
        dead_letter_topic: format!("{topic}-dead"),
    }
}

fn msg(key: &str, i: usize, table: &str) -> Message {
    let mut attributes = BTreeMap::new();
    attributes.insert("table".to_string(), table.to_string());
    attributes.insert("seq".to_string(), i.to_string());
    Message {
        data: format!("{key}:{i}").into_bytes(),
        ordering_key: key.into(),
        attributes,
    }
}

/// Pulls and acks until `n` messages came or nothing arrives for a while; returns them.
async fn drain(ledger: &PubSubLedger, sub: &str, n: usize) -> Vec<Message> {
    let mut got = Vec::new();
    let mut idle = 0;
    while got.len() < n && idle < 30 {
        let batch = ledger
            .pull(sub, 50, Duration::from_secs(1))
            .await
            .unwrap_or_default();
        if batch.is_empty() {
            idle += 1;
            continue;
        }
        idle = 0;
        // A pull hands out a key's buffered messages together, in order (and a later pull
        // waits while they are out; each batch is acked before the next pull here).
        let messages: Vec<Message> = batch.iter().map(|d| d.message.clone()).collect();
        for (key, seqs) in by_key(&messages) {
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "key {key} out of order within one pull: {seqs:?}"
            );
        }
        let ids: Vec<String> = batch.iter().map(|d| d.ack_id.clone()).collect();
        got.extend(batch.into_iter().map(|d| d.message));
        ledger.ack(sub, &ids).await.expect("ack");
    }
    got
}

fn by_key(messages: &[Message]) -> HashMap<String, Vec<usize>> {
    let mut out: HashMap<String, Vec<usize>> = HashMap::new();
    for m in messages {
        out.entry(m.ordering_key.clone())
            .or_default()
            .push(m.attributes["seq"].parse().unwrap());
    }
    out
}

#[tokio::test]
async fn pubsub_publishes_in_key_order_filters_and_redelivers() {
    let emu = PubSubEmulator::start();
    let ledger = PubSubLedger::connect(ledgerhost_ledger::pubsub::PubSubConfig {
        endpoint: Some(emu.endpoint()),
        ..ledgerhost_ledger::pubsub::PubSubConfig::new(PROJECT)
    })
    .await
    .expect("connect");
    ledger
        .ensure_subscription(&sub_spec("all-orders", "orders", Duration::from_secs(30)))
        .await
        .expect("subscription");
    let mut filtered = sub_spec("only-t1", "orders", Duration::from_secs(30));
    filtered
        .attribute_filter
        .insert("table".into(), "t1".into());
    ledger
        .ensure_subscription(&filtered)
        .await
        .expect("filtered");
    // Idempotent.
    ledger.ensure_subscription(&filtered).await.expect("again");

    let mut batch = Vec::new();
    for i in 0..20 {
        for key in ["k1", "k2", "k3"] {
            batch.push(msg(key, i, if key == "k1" { "t1" } else { "t2" }));
        }
    }
    ledger.publish("orders", batch).await.expect("publish");

    let all = drain(&ledger, "all-orders", 60).await;
    assert_eq!(all.len(), 60);
    for (key, seqs) in by_key(&all) {
        assert_eq!(seqs, (0..20).collect::<Vec<_>>(), "order of key {key}");
    }
    let only = drain(&ledger, "only-t1", 20).await;
    assert_eq!(
        only.len(),
        20,
        "{:?}",
        only.iter()
            .map(|m| String::from_utf8_lossy(&m.data).to_string())
            .collect::<Vec<_>>()
    );
    assert!(only.iter().all(|m| m.attributes["table"] == "t1"));
    assert_eq!(by_key(&only)["k1"], (0..20).collect::<Vec<_>>());
    // Nothing else arrives on the filtered subscription.
    assert!(
        ledger
            .pull("only-t1", 10, Duration::from_secs(2))
            .await
            .expect("pull")
            .is_empty()
    );

    // Nack: redelivered from the nacked message on, attempt counted; a pull hands out a
    // key's buffered messages together, and a later pull waits while they are out.
    ledger
        .publish("orders", vec![msg("k9", 0, "t2"), msg("k9", 1, "t2")])
        .await
        .expect("publish");
    let seqs = |ds: &[ledgerhost_core::ledger::Delivery]| -> Vec<String> {
        ds.iter()
            .map(|d| d.message.attributes["seq"].clone())
            .collect()
    };
    let first = ledger
        .pull("all-orders", 10, Duration::from_secs(10))
        .await
        .expect("pull");
    assert!(
        !first.is_empty() && first.iter().all(|d| d.attempt == 1),
        "{first:?}"
    );
    assert_eq!(seqs(&first)[0], "0", "the key's first message first");
    let first_ids: Vec<String> = first.iter().map(|d| d.ack_id.clone()).collect();
    ledger
        .nack("all-orders", &first_ids, Duration::ZERO)
        .await
        .expect("nack");
    let mut again = Vec::new();
    for _ in 0..20 {
        again = ledger
            .pull("all-orders", 10, Duration::from_secs(1))
            .await
            .expect("pull");
        if !again.is_empty() {
            break;
        }
    }
    assert!(!again.is_empty(), "redelivered after the nack");
    assert_eq!(seqs(&again)[0], "0", "redelivered first");
    assert_eq!(again[0].attempt, 2);

    // Extend keeps the lease; expiry (short deadline) redelivers.
    let again_ids: Vec<String> = again.iter().map(|d| d.ack_id.clone()).collect();
    ledger
        .extend("all-orders", &again_ids, Duration::from_secs(600))
        .await
        .expect("extend");
    assert!(
        ledger
            .pull("all-orders", 10, Duration::from_secs(2))
            .await
            .expect("pull")
            .is_empty(),
        "an extended lease is not redelivered, and the key waits behind it"
    );
    ledger.ack("all-orders", &again_ids).await.expect("ack");
    let rest = drain(&ledger, "all-orders", 2 - again.len()).await;
    let mut delivered = seqs(&again);
    delivered.extend(rest.iter().map(|m| m.attributes["seq"].clone()));
    assert_eq!(
        delivered,
        vec!["0", "1"],
        "the key's messages, in order, once"
    );

    assert_eq!(ledger.last_message("orders").await.expect("last"), None);

    // Everything went through the strict front, one ordering key per Publish.
    let stats = emu.front().stats();
    assert_eq!(stats.max_ordering_keys_per_publish(), 1, "{stats:?}");
    assert!(stats.published_messages() >= 62, "{stats:?}");
    assert!(stats.count(Rpc::Pull) > 0 && stats.count(Rpc::Acknowledge) > 0);
    emu.assert_clean("pubsub_publishes_in_key_order_filters_and_redelivers");
}

#[tokio::test]
async fn pubsub_lease_expiry_redelivers() {
    let emu = PubSubEmulator::start();
    let ledger = PubSubLedger::connect(ledgerhost_ledger::pubsub::PubSubConfig {
        endpoint: Some(emu.endpoint()),
        ..ledgerhost_ledger::pubsub::PubSubConfig::new(PROJECT)
    })
    .await
    .expect("connect");
    ledger
        .ensure_subscription(&sub_spec("short", "leases", Duration::from_secs(1)))
        .await
        .expect("subscription");
    ledger
        .publish("leases", vec![msg("k", 0, "t")])
        .await
        .expect("publish");
    let d = ledger
        .pull("short", 1, Duration::from_secs(10))
        .await
        .expect("pull");
    assert_eq!(d.len(), 1);
    // Not settled: the lease runs out and the message comes back.
    let mut again = Vec::new();
    for _ in 0..30 {
        again = ledger
            .pull("short", 1, Duration::from_secs(1))
            .await
            .expect("pull");
        if !again.is_empty() {
            break;
        }
    }
    assert_eq!(again.len(), 1, "redelivered after the lease expired");
    assert_eq!(again[0].message.data, d[0].message.data);
    assert_eq!(again[0].attempt, 2);
    // The first delivery's ack id is stale now; acking it is harmless.
    ledger
        .ack("short", &[d[0].ack_id.clone()])
        .await
        .expect("ack stale");
    ledger
        .ack("short", &[again[0].ack_id.clone()])
        .await
        .expect("ack");
    emu.assert_clean("pubsub_lease_expiry_redelivers");
}

#[tokio::test]
async fn pubsub_survives_an_emulator_restart_while_publishing() {
    let mut emu = PubSubEmulator::start();
    let ledger = std::sync::Arc::new(
        PubSubLedger::connect(ledgerhost_ledger::pubsub::PubSubConfig {
            endpoint: Some(emu.endpoint()),
            ..ledgerhost_ledger::pubsub::PubSubConfig::new(PROJECT)
        })
        .await
        .expect("connect"),
    );
    let spec = sub_spec("restart-sub", "restart", Duration::from_secs(30));
    ledger
        .ensure_subscription(&spec)
        .await
        .expect("subscription");
    let first: Vec<Message> = (0..10).map(|i| msg("a", i, "t")).collect();
    ledger.publish("restart", first).await.expect("publish");
    assert_eq!(drain(&ledger, "restart-sub", 10).await.len(), 10);

    // Kill the emulator: its topics and subscriptions are gone with it. Publishing keeps
    // retrying; once the emulator is back the ledger recreates topic and subscription.
    emu.stop();
    let publisher = {
        let ledger = ledger.clone();
        tokio::spawn(async move {
            let batch: Vec<Message> = (10..30).map(|i| msg("a", i, "t")).collect();
            ledger.publish("restart", batch).await
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !publisher.is_finished(),
        "publish waits while the emulator is down"
    );
    emu.start_again();
    publisher
        .await
        .expect("publish task")
        .expect("publish completes after the restart");
    let got = drain(&ledger, "restart-sub", 20).await;
    assert_eq!(by_key(&got)["a"], (10..30).collect::<Vec<_>>());
    emu.assert_clean("pubsub_survives_an_emulator_restart_while_publishing");
}

/// A host that stops hands what it holds back to Pub/Sub: another replica gets it at once,
/// not after the (here 10-minute) ack deadline.
#[tokio::test]
async fn pubsub_release_hands_held_messages_to_another_replica() {
    let emu = PubSubEmulator::start();
    let connect = || {
        ledgerhost_ledger::pubsub::PubSubLedger::connect(ledgerhost_ledger::pubsub::PubSubConfig {
            endpoint: Some(emu.endpoint()),
            ..ledgerhost_ledger::pubsub::PubSubConfig::new(PROJECT)
        })
    };
    let spec = sub_spec("shared", "handover", Duration::from_secs(600));
    let a = connect().await.expect("connect a");
    a.ensure_subscription(&spec).await.expect("subscription");
    let batch: Vec<Message> = (0..20).map(|i| msg(&format!("k{i}"), 0, "t")).collect();
    a.publish("handover", batch).await.expect("publish");
    // A takes one delivery (and buffers what else it pulled), then stops.
    let first = a
        .pull("shared", 1, Duration::from_secs(30))
        .await
        .expect("pull");
    assert_eq!(first.len(), 1);
    a.release().await.expect("release");
    drop(a);

    let b = connect().await.expect("connect b");
    b.ensure_subscription(&spec).await.expect("subscription");
    let got = drain(&b, "shared", 20).await;
    let keys: BTreeSet<String> = got.iter().map(|m| m.ordering_key.clone()).collect();
    assert_eq!(
        keys.len(),
        20,
        "every message reached the other replica: {keys:?}"
    );
    emu.assert_clean("pubsub_release_hands_held_messages_to_another_replica");
}

/// GetSubscription through the front, as JSON.
async fn get_subscription(emu: &PubSubEmulator, id: &str) -> serde_json::Value {
    let url = format!(
        "{}/v1/projects/{PROJECT}/subscriptions/{id}",
        emu.endpoint()
    );
    let resp = reqwest::get(&url).await.expect("GetSubscription");
    let status = resp.status();
    let body = resp.bytes().await.expect("GetSubscription answer");
    assert!(
        status.is_success(),
        "GetSubscription {id}: {status} {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).expect("a Subscription")
}

/// A subscription found existing must match its manifest: a new ack deadline is applied in
/// place (UpdateSubscription, read back with GetSubscription), a new filter is refused with
/// what differs and what to do (Pub/Sub cannot change a filter), never kept silently.
#[tokio::test]
async fn pubsub_an_existing_subscription_gets_a_new_ack_deadline_but_refuses_a_new_filter() {
    let emu = PubSubEmulator::start();
    let ledger = PubSubLedger::connect(ledgerhost_ledger::pubsub::PubSubConfig {
        endpoint: Some(emu.endpoint()),
        ..ledgerhost_ledger::pubsub::PubSubConfig::new(PROJECT)
    })
    .await
    .expect("connect");
    let mut spec = sub_spec("plugin-drift", "drift-orders", Duration::from_secs(30));
    spec.attribute_filter.insert("table".into(), "t1".into());
    ledger.ensure_subscription(&spec).await.expect("create");
    let updates = |emu: &PubSubEmulator| emu.front().stats().count(Rpc::UpdateSubscription);
    // The same spec again: read back, nothing to change.
    ledger.ensure_subscription(&spec).await.expect("again");
    assert_eq!(updates(&emu), 0, "an unchanged subscription is left alone");
    assert!(emu.front().stats().count(Rpc::GetSubscription) >= 1);

    // Another process (a restarted host) with a longer ack deadline: updated in place.
    let other = PubSubLedger::connect(ledgerhost_ledger::pubsub::PubSubConfig {
        endpoint: Some(emu.endpoint()),
        ..ledgerhost_ledger::pubsub::PubSubConfig::new(PROJECT)
    })
    .await
    .expect("connect");
    let longer = SubscriptionSpec {
        ack_deadline: Duration::from_secs(120),
        ..spec.clone()
    };
    other.ensure_subscription(&longer).await.expect("updated");
    assert_eq!(updates(&emu), 1);
    let read = get_subscription(&emu, "plugin-drift").await;
    assert_eq!(read["ackDeadlineSeconds"], 120, "{read}");
    assert_eq!(read["filter"], "attributes.table = \"t1\"", "{read}");

    // A changed filter: refused, naming both filters and the way out.
    let mut refiltered = longer.clone();
    refiltered
        .attribute_filter
        .insert("table".into(), "t2".into());
    let err = other
        .ensure_subscription(&refiltered)
        .await
        .expect_err("a changed filter is refused");
    let text = err.to_string();
    assert!(
        matches!(err, ledgerhost_core::PortError::Invalid { .. }),
        "{text}"
    );
    assert!(
        text.contains(
            "filter is `attributes.table = \"t1\"` but the manifest asks for \
             `attributes.table = \"t2\"`"
        ),
        "{text}"
    );
    assert!(
        text.contains("Pub/Sub cannot change a subscription's filter")
            && text.contains("gcloud pubsub subscriptions delete plugin-drift")
            && text.contains("new name"),
        "{text}"
    );
    let read = get_subscription(&emu, "plugin-drift").await;
    assert_eq!(
        read["filter"], "attributes.table = \"t1\"",
        "unchanged: {read}"
    );
    assert_eq!(updates(&emu), 1, "nothing was updated for the refused spec");

    // A subscription on another topic under the same name: refused too.
    let moved = SubscriptionSpec {
        topic: "drift-other".into(),
        ..longer.clone()
    };
    let text = other
        .ensure_subscription(&moved)
        .await
        .expect_err("a changed topic is refused")
        .to_string();
    assert!(
        text.contains("topic is `projects/ledgerhost-test/topics/drift-orders` but the manifest asks for `projects/ledgerhost-test/topics/drift-other`"),
        "{text}"
    );
    emu.assert_clean(
        "pubsub_an_existing_subscription_gets_a_new_ack_deadline_but_refuses_a_new_filter",
    );
}

#[tokio::test]
async fn pubsub_lists_its_topics_by_ledger_name_and_refuses_topic_reads_naming_why() {
    let emu = PubSubEmulator::start();
    let ledger = PubSubLedger::connect(ledgerhost_ledger::pubsub::PubSubConfig {
        endpoint: Some(emu.endpoint()),
        ..ledgerhost_ledger::pubsub::PubSubConfig::new(PROJECT)
    })
    .await
    .expect("connect");
    // "t1" is too short for Pub/Sub: stored as `lh-t1`, listed back as "t1".
    for topic in ["orders-list", "t1", "payments-list"] {
        ledger.ensure_topic(topic).await.expect("topic");
    }
    let topics = ledger.list_topics().await.expect("list topics");
    for topic in ["orders-list", "payments-list", "t1"] {
        assert!(topics.iter().any(|t| t == topic), "{topic} in {topics:?}");
    }
    assert!(topics.windows(2).all(|w| w[0] <= w[1]), "{topics:?}");
    let err = ledger
        .read_retained("orders-list", 0, 10)
        .await
        .expect_err("Pub/Sub cannot read a topic");
    assert!(
        matches!(err, ledgerhost_core::PortError::Unsupported { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("subscriptions seek") && text.contains("backfill"),
        "{text}"
    );
    assert!(ledger.retained_count("orders-list").await.is_err());
    emu.assert_clean("pubsub_lists_its_topics_by_ledger_name_and_refuses_topic_reads_naming_why");
}

/// A dead letter as the dispatcher publishes it onto a dead-letter topic.
fn dead_letter(event: &str, reason: &str, attempts: u32) -> Message {
    let mut m = msg("k", 0, "orders");
    for (k, v) in [
        (attr::EVENT_ID, event.to_string()),
        (attr::DEAD_LETTER_REASON, reason.to_string()),
        (attr::DEAD_LETTER_SUBSCRIPTION, "plugin-dl".to_string()),
        (attr::DEAD_LETTER_ATTEMPTS, attempts.to_string()),
    ] {
        m.attributes.insert(k.to_string(), v);
    }
    m
}

#[tokio::test]
async fn pubsub_dead_letters_are_listed_and_redriven_by_another_process() {
    let emu = PubSubEmulator::start();
    let config = ledgerhost_ledger::pubsub::PubSubConfig {
        endpoint: Some(emu.endpoint()),
        ..ledgerhost_ledger::pubsub::PubSubConfig::new(PROJECT)
    };
    // The host's ledger: the plugin's subscription (and with it the dead-letter one) and a
    // bystander on the same topic.
    let host = PubSubLedger::connect(config.clone())
        .await
        .expect("connect");
    let spec = sub_spec("plugin-dl", "orders-dl", Duration::from_secs(10));
    host.ensure_subscription(&spec).await.expect("subscription");
    host.ensure_subscription(&sub_spec(
        "plugin-other",
        "orders-dl",
        Duration::from_secs(10),
    ))
    .await
    .expect("bystander");
    let before = ledgerhost::metrics::now_micros() - 1_000_000;
    host.publish(
        &spec.dead_letter_topic,
        vec![dead_letter("e1", "poison", 5), dead_letter("e2", "bad", 1)],
    )
    .await
    .expect("dead letters");
    // The CLI's ledger: a process that never ensured anything.
    let cli = PubSubLedger::connect(config).await.expect("connect");
    let listed = cli.dead_letters("plugin-dl", 100).await.expect("list");
    let mut seen: Vec<(String, String, u32)> = listed
        .iter()
        .map(|d| (d.event_id.clone(), d.reason.clone(), d.attempts))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("e1".into(), "poison".into(), 5),
            ("e2".into(), "bad".into(), 1)
        ]
    );
    assert!(
        listed.iter().all(|d| d.dead_lettered_at_micros >= before),
        "publish time: {listed:?}"
    );
    // Listing hands them back: listed again.
    assert_eq!(cli.dead_letters("plugin-dl", 100).await.unwrap().len(), 2);

    let extra = BTreeMap::from([(attr::REPLAY_FOR.to_string(), "dl".to_string())]);
    let redriven = cli
        .redrive("plugin-dl", &RedriveSelection::Event("e1".into()), &extra)
        .await
        .expect("redrive");
    assert_eq!(redriven.len(), 1);
    let got = drain(&host, "plugin-dl", 1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let a = &got[0].attributes;
    assert_eq!(a.get(attr::EVENT_ID).map(String::as_str), Some("e1"));
    assert_eq!(a.get(attr::REPLAY_FOR).map(String::as_str), Some("dl"));
    assert!(!a.keys().any(|k| k.starts_with("dead_letter")), "{a:?}");
    // The copy went onto the topic: the bystander gets it too (its dispatcher settles a
    // message naming another plugin unseen).
    assert_eq!(drain(&host, "plugin-other", 1).await.len(), 1);
    let left = cli.dead_letters("plugin-dl", 100).await.unwrap();
    assert_eq!(
        left.iter().map(|d| d.event_id.as_str()).collect::<Vec<_>>(),
        ["e2"]
    );
    let rest = cli
        .redrive("plugin-dl", &RedriveSelection::All, &extra)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert!(cli.dead_letters("plugin-dl", 100).await.unwrap().is_empty());
    let err = cli.dead_letters("plugin-nope", 10).await.unwrap_err();
    assert!(err.to_string().contains("plugin name"), "{err}");
    emu.assert_clean("pubsub_dead_letters_are_listed_and_redriven_by_another_process");
}
