//! The shipped view plugins: bqloader (events → warehouse tables) and materializer
//! (per-client views in the key-value store), on the embedded defaults through the real host,
//! on Redis and the BigQuery emulator through the runtime, and their grants.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ledgerhost::{Config, Host};
use ledgerhost_capabilities::blobstore::local::LocalBlobStore;
use ledgerhost_capabilities::keyvalue::embedded::EmbeddedKeyValue;
use ledgerhost_capabilities::keyvalue::redis::RedisKeyValue;
use ledgerhost_capabilities::warehouse::sqlite::SqliteWarehouse;
use ledgerhost_core::capabilities::{KeyValue, Warehouse, WarehouseRow};
use ledgerhost_core::{Disposition, Event, EventId, Field, Value};
use ledgerhost_ledger::embedded::{EmbeddedLedger, EmbeddedOptions};
use ledgerhost_runtime::{Plugin, Ports, Runtime, RuntimeConfig};
use ledgerhost_tests::harness::host::Workspace;
use ledgerhost_tests::harness::redis::{RedisServer, Transport};
use ledgerhost_tests::harness::views::{materialized_rows, materialized_view};
use ledgerhost_tests::harness::{eventually, plugin_manifest, plugin_wasm};
use serde_json::json;

const ORDERS: &str = "CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    client_id TEXT NOT NULL,
    amount INTEGER NOT NULL,
    note TEXT,
    day DATE,
    deleted BOOLEAN NOT NULL DEFAULT 0,
    commit_ts INTEGER
);";

const TABLES: &str =
    "[[tables]]\nname = \"orders\"\ninterval-ms = 50\ndeleted-column = \"deleted\"\n";

/// Rows of the last transaction of the embedded workload, all with one commit timestamp.
const LAST_TX_ROWS: i64 = 40;

/// One row of the source table as the application sees it.
#[derive(Debug, Clone, PartialEq)]
struct SourceRow {
    id: i64,
    client: String,
    amount: i64,
    note: Option<String>,
    /// `YYYY-MM-DD` and days since 1970-01-01 (computed by SQLite).
    day: (String, i32),
    deleted: bool,
    commit_ts: i64,
    /// The commit timestamp as RFC 3339 text, formatted by SQLite.
    commit_text: String,
}

impl SourceRow {
    /// The row as the warehouse stores it, in column order.
    fn values(&self) -> Vec<Value> {
        vec![
            Value::Int64(self.id),
            Value::String(self.client.clone()),
            Value::Int64(self.amount),
            self.note.clone().map_or(Value::Null, Value::String),
            Value::Date(self.day.1),
            Value::Bool(self.deleted),
            Value::Timestamp(self.commit_ts),
        ]
    }

    /// The row as the materializer stores it.
    fn view(&self) -> serde_json::Value {
        json!({
            "id": self.id,
            "client_id": self.client,
            "amount": self.amount,
            "note": self.note,
            "day": self.day.0,
            "deleted": self.deleted,
            "commit_ts": self.commit_text,
            "_commit_ts": self.commit_ts,
        })
    }
}

fn source_rows(db: &Path) -> BTreeMap<i64, SourceRow> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT id, client_id, amount, note, day,
                    CAST(julianday(day) - 2440587.5 AS INTEGER), deleted, commit_ts,
                    strftime('%Y-%m-%dT%H:%M:%S', commit_ts / 1000000, 'unixepoch')
                        || printf('.%06dZ', commit_ts % 1000000)
             FROM orders",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok(SourceRow {
            id: r.get(0)?,
            client: r.get(1)?,
            amount: r.get(2)?,
            note: r.get(3)?,
            day: (r.get(4)?, r.get(5)?),
            deleted: r.get(6)?,
            commit_ts: r.get(7)?,
            commit_text: r.get(8)?,
        })
    })
    .unwrap()
    .map(|r| {
        let r = r.unwrap();
        (r.id, r)
    })
    .collect()
}

/// Inserts, updates, client moves, soft deletes and an undelete, in many transactions, then
/// one last transaction of [`LAST_TX_ROWS`] inserts.
async fn write_workload(ws: &Workspace) {
    let mut sql = String::from("BEGIN;");
    for id in 1..=200 {
        let note = if id % 2 == 0 {
            format!("'note {id}'")
        } else {
            "NULL".into()
        };
        sql.push_str(&format!(
            "INSERT INTO orders (id, client_id, amount, note, day) \
             VALUES ({id}, 'c{}', {id}, {note}, date('2026-01-01', '{} days'));",
            id % 5,
            id * 37 - 4000
        ));
    }
    sql.push_str("COMMIT;");
    ws.sql(&sql);
    for (what, sql) in [
        (
            "updates",
            "UPDATE orders SET amount = amount + 1000 WHERE id % 3 = 0;",
        ),
        (
            "client moves",
            "UPDATE orders SET client_id = 'c9' WHERE id % 7 = 0;",
        ),
        (
            "soft deletes",
            "UPDATE orders SET deleted = 1 WHERE id % 11 = 0;",
        ),
        (
            "notes cleared",
            "UPDATE orders SET note = NULL WHERE id % 4 = 0;",
        ),
        (
            "undelete",
            "UPDATE orders SET deleted = 0, amount = 5 WHERE id = 22;",
        ),
        (
            "second move",
            "UPDATE orders SET client_id = 'c1' WHERE id IN (7, 14);",
        ),
    ] {
        tokio::time::sleep(Duration::from_millis(120)).await;
        eprintln!("workload: {what}");
        ws.sql(sql);
    }
    tokio::time::sleep(Duration::from_millis(120)).await;
    let mut sql = String::from("BEGIN;");
    for id in 201..=200 + LAST_TX_ROWS {
        sql.push_str(&format!(
            "INSERT INTO orders (id, client_id, amount, day) VALUES ({id}, 'c{}', {id}, '1969-07-20');",
            id % 5
        ));
    }
    sql.push_str("COMMIT;");
    ws.sql(&sql);
}

/// The newest warehouse row of each key (by commit timestamp), as values in column order.
fn latest_per_key(rows: &[WarehouseRow]) -> BTreeMap<i64, Vec<Value>> {
    let mut latest: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for r in rows {
        let values: Vec<Value> = r.fields.iter().map(|f| f.value.clone()).collect();
        let (Value::Int64(id), Value::Timestamp(ts)) = (&values[0], &values[6]) else {
            panic!("unexpected warehouse row {r:?}");
        };
        let newer = latest
            .get(id)
            .is_none_or(|old| matches!(old[6], Value::Timestamp(t) if t < *ts));
        if newer {
            latest.insert(*id, values);
        }
    }
    latest
}

fn expected_view(source: &BTreeMap<i64, SourceRow>) -> BTreeMap<String, serde_json::Value> {
    source
        .values()
        .filter(|r| !r.deleted)
        .map(|r| (format!("views/{}/orders/{}", r.client, r.id), r.view()))
        .collect()
}

fn manifest_text(name: &str) -> String {
    std::fs::read_to_string(plugin_manifest(name)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_warehouse_and_view_equal_the_source_and_redelivery_adds_nothing() {
    let ws = Workspace::new();
    ws.sql(ORDERS);
    ws.install_plugin("bqloader", "bqloader", &manifest_text("bqloader"));
    ws.install_plugin(
        "materializer",
        "materializer",
        &manifest_text("materializer"),
    );
    let config_path = ws.write_config(TABLES);
    let host = Host::start(Config::load(&config_path).unwrap())
        .await
        .expect("host starts");

    write_workload(&ws).await;
    let source = source_rows(&ws.db());
    assert_eq!(source.len() as i64, 200 + LAST_TX_ROWS);
    let want_latest: BTreeMap<i64, Vec<Value>> =
        source.iter().map(|(id, r)| (*id, r.values())).collect();
    let want_view = expected_view(&source);

    let wh = host.backends.warehouse.clone();
    let kv = host.backends.keyvalue.clone();
    let converged = eventually(Duration::from_secs(180), || {
        let (wh, kv) = (wh.clone(), kv.clone());
        let (want_latest, want_view) = (&want_latest, &want_view);
        async move {
            let Ok(rows) = wh.scan("orders").await else {
                return false;
            };
            let Ok(view) = materialized_rows(kv.as_ref(), "views/").await else {
                return false;
            };
            latest_per_key(&rows) == *want_latest && view == *want_view
        }
    })
    .await;
    let rows = wh.scan("orders").await.unwrap();
    let view = materialized_rows(kv.as_ref(), "views/").await.unwrap();
    assert_eq!(
        latest_per_key(&rows),
        want_latest,
        "each key's newest warehouse row equals the source row"
    );
    assert_eq!(view, want_view, "the view holds each client's current rows");
    assert!(converged);
    // Every warehouse row is one event: its id names its key and commit timestamp.
    for r in &rows {
        let (Value::Int64(id), Value::Timestamp(ts)) = (&r.fields[0].value, &r.fields[6].value)
        else {
            panic!("{r:?}");
        };
        assert_eq!(
            r.event_id,
            EventId::new("orders", &[Value::Int64(*id)], *ts).0
        );
    }
    let count = wh.count("orders").await.unwrap();
    assert_eq!(count as usize, rows.len());
    let raw_view = materialized_view(kv.as_ref(), "views/").await.unwrap();
    eprintln!(
        "warehouse: {count} rows for {} keys; view: {} rows",
        source.len(),
        raw_view.len()
    );
    assert!(host.shutdown().await);

    // Lose the watermark (the progress the embedded ledger keeps with the pages, and the
    // lease's copy): the restarted poller recovers it from the ledger's newest message and
    // republishes the last commit timestamp's rows, which both plugins receive again.
    let lost = rusqlite::Connection::open(ws.data_dir().join("ledger/ledger.db"))
        .expect("open ledger.db")
        .execute("DELETE FROM progress WHERE tbl = 'orders'", [])
        .expect("delete the progress");
    assert_eq!(lost, 1, "the ledger held the poller's progress");
    ws.sql("UPDATE _ledgerhost_leases SET progress = NULL;");
    let host = Host::start(Config::load(&config_path).unwrap())
        .await
        .unwrap();
    let table = host.metrics.table("orders");
    let (bq, mat) = (
        host.metrics.plugin("bqloader"),
        host.metrics.plugin("materializer"),
    );
    let redelivered = eventually(Duration::from_secs(60), || {
        let (table, bq, mat) = (table.clone(), bq.clone(), mat.clone());
        async move {
            table.rows_polled.load(Ordering::Relaxed) >= LAST_TX_ROWS as u64
                && bq.acked.load(Ordering::Relaxed) >= LAST_TX_ROWS as u64
                && mat.acked.load(Ordering::Relaxed) >= LAST_TX_ROWS as u64
        }
    })
    .await;
    assert!(
        redelivered,
        "the last transaction was republished and handled again (polled {}, bqloader acked \
         {}, materializer acked {})",
        table.rows_polled.load(Ordering::Relaxed),
        bq.acked.load(Ordering::Relaxed),
        mat.acked.load(Ordering::Relaxed)
    );
    eprintln!(
        "redelivery: {} rows republished, bqloader acked {}, materializer acked {}",
        table.rows_polled.load(Ordering::Relaxed),
        bq.acked.load(Ordering::Relaxed),
        mat.acked.load(Ordering::Relaxed)
    );
    let wh = host.backends.warehouse.clone();
    let kv = host.backends.keyvalue.clone();
    assert_eq!(
        wh.count("orders").await.unwrap(),
        count,
        "redelivery added no warehouse rows"
    );
    assert_eq!(wh.scan("orders").await.unwrap(), rows);
    assert_eq!(
        materialized_view(kv.as_ref(), "views/").await.unwrap(),
        raw_view,
        "redelivery left the view unchanged"
    );
    assert!(host.shutdown().await);
}

/// A runtime whose key-value store and warehouse are the given ones (the rest embedded).
fn runtime(dir: &Path, keyvalue: Arc<dyn KeyValue>, warehouse: Arc<dyn Warehouse>) -> Arc<Runtime> {
    let caps = Ports {
        blobstore: Arc::new(LocalBlobStore::open(&dir.join("blobs")).unwrap()),
        keyvalue,
        warehouse,
        ledger: Arc::new(
            EmbeddedLedger::open(&dir.join("ledger"), EmbeddedOptions::default()).unwrap(),
        ),
    };
    Runtime::new(RuntimeConfig::default(), caps).unwrap()
}

async fn load(runtime: &Arc<Runtime>, name: &str, overrides: &[(&str, &str)]) -> Arc<Plugin> {
    let overrides: BTreeMap<String, String> = overrides
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    runtime
        .load(&plugin_wasm(name), &plugin_manifest(name), &overrides)
        .await
        .unwrap_or_else(|e| panic!("{name} loads: {e}"))
}

fn field(name: &str, value: Value) -> Field {
    Field {
        name: name.into(),
        value,
    }
}

/// An `orders` event as the dispatcher delivers it (without Avro: the materializer reads
/// decoded fields only).
fn order_event(id: i64, client: &str, amount: i64, deleted: bool, ts: i64) -> Event {
    let key = vec![Value::Int64(id)];
    Event {
        id: EventId::new("orders", &key, ts),
        table: "orders".into(),
        commit_ts: ts,
        key: vec![field("id", Value::Int64(id))],
        fields: vec![
            field("id", Value::Int64(id)),
            field("client_id", Value::String(client.into())),
            field("amount", Value::Int64(amount)),
            field("deleted", Value::Bool(deleted)),
            field("commit_ts", Value::Int64(ts)),
        ],
        deleted,
        schema_fingerprint: "f".into(),
        avro: vec![],
        attributes: vec![],
    }
}

/// Hands `batch` to the plugin until every event is acked, as the dispatcher redelivers a
/// failed batch (the whole batch again: at-least-once). Counts failed attempts in `failures`.
async fn deliver(plugin: &Plugin, batch: &[Event], failures: &AtomicU64) {
    loop {
        match plugin.handle(batch.to_vec()).await {
            Ok(d) if d.iter().all(|d| *d == Disposition::Ack) => return,
            Ok(d) => {
                assert!(
                    !d.iter().any(|d| matches!(d, Disposition::Reject(_))),
                    "nothing is rejected: {d:?}"
                );
            }
            Err(e) => eprintln!("batch failed, redelivering: {e}"),
        }
        failures.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn materializer_on_redis_survives_a_redis_restart_without_losing_or_reordering() {
    materializer_on_redis_survives_a_restart(Transport::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn materializer_on_redis_tls_survives_a_redis_restart_without_losing_or_reordering() {
    materializer_on_redis_survives_a_restart(Transport::Tls).await;
}

async fn materializer_on_redis_survives_a_restart(transport: Transport) {
    // Append-only file fsync'd on every write, as Memorystore keeps acknowledged writes
    // across a failover; without it no client could keep what the server forgot.
    let mut server = RedisServer::start_persistent_on(transport);
    let mut config = server.client_config();
    config.namespace = "mat:".into();
    config.response_timeout = Duration::from_secs(1);
    let kv = Arc::new(RedisKeyValue::connect(config).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let wh = Arc::new(SqliteWarehouse::open(&dir.path().join("wh.db")).unwrap());
    let rt = runtime(dir.path(), kv.clone(), wh);
    let plugin = load(&rt, "materializer", &[]).await;

    // A stream of row versions in commit order: updates, client moves, deletes, undeletes.
    const KEYS: i64 = 60;
    const EVENTS: i64 = 2400;
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut state: BTreeMap<i64, (String, i64, bool, i64)> = BTreeMap::new();
    let mut events = Vec::new();
    for step in 0..EVENTS {
        let id = (next() % KEYS as u64) as i64 + 1;
        let ts = 1_700_000_000_000_000 + step * 10;
        let (client, amount, deleted) = match state.get(&id) {
            None => (format!("c{}", id % 4), step, false),
            Some((client, _, was_deleted, _)) => {
                let r = next() % 10;
                let client = if r < 2 {
                    format!("c{}", next() % 5)
                } else {
                    client.clone()
                };
                (client, step, !*was_deleted && r == 9)
            }
        };
        state.insert(id, (client.clone(), amount, deleted, ts));
        events.push(order_event(id, &client, amount, deleted, ts));
    }
    let expected: BTreeMap<String, serde_json::Value> = state
        .iter()
        .filter(|(_, (_, _, deleted, _))| !deleted)
        .map(|(id, (client, amount, _, ts))| {
            (
                format!("views/{client}/orders/{id}"),
                json!({"id": id, "client_id": client, "amount": amount, "deleted": false,
                       "commit_ts": ts, "_commit_ts": ts}),
            )
        })
        .collect();

    let batches: Vec<Vec<Event>> = events.chunks(25).map(<[Event]>::to_vec).collect();
    let total = batches.len() as u64;
    let done = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let feeder = {
        let (plugin, done, failures) = (plugin.clone(), done.clone(), failures.clone());
        tokio::spawn(async move {
            for batch in batches {
                deliver(&plugin, &batch, &failures).await;
                done.fetch_add(1, Ordering::Relaxed);
                // Spread the load so Redis goes down in the middle of it.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // A reader of the view meanwhile: a key's version never goes back.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (kv, stop) = (kv.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seen: HashMap<String, i64> = HashMap::new();
            let (mut samples, mut regressions) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                if let Ok(view) = materialized_rows(kv.as_ref(), "views/").await {
                    samples += 1;
                    for (k, v) in view {
                        let ts = v["_commit_ts"].as_i64().expect("_commit_ts");
                        let prev = seen.insert(k.clone(), ts).unwrap_or(i64::MIN);
                        if ts < prev {
                            regressions.push(format!("{k}: {prev} then {ts}"));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (samples, regressions)
        })
    };

    assert!(
        eventually(Duration::from_secs(120), || async {
            done.load(Ordering::Relaxed) >= total / 4
        })
        .await,
        "the load did not progress"
    );
    server.stop();
    let done_at_stop = done.load(Ordering::Relaxed);
    assert!(
        eventually(Duration::from_secs(30), || async {
            failures.load(Ordering::Relaxed) >= 1
        })
        .await,
        "the plugin never saw Redis down"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.restart();
    feeder.await.expect("feeder");
    stop.store(true, Ordering::Relaxed);
    let (samples, regressions) = sampler.await.unwrap();
    let failed = failures.load(Ordering::Relaxed);
    eprintln!(
        "materializer on redis: {EVENTS} events in {total} batches, {done_at_stop} batches done \
         before the crash, {failed} failed deliveries redelivered, {samples} view samples"
    );
    assert!(done_at_stop < total, "Redis went down during the load");
    assert!(failed > 0);
    assert!(
        regressions.is_empty(),
        "view versions went back: {regressions:?}"
    );
    let view = materialized_rows(kv.as_ref(), "views/").await.unwrap();
    assert_eq!(
        view, expected,
        "the view equals each client's latest source rows"
    );
    // The stored versions are exactly the rows' commit timestamps: an equal one is refused.
    for (key, row) in &expected {
        let ts = row["_commit_ts"].as_i64().unwrap();
        assert!(!kv.set_if_newer(key, b"stale".to_vec(), ts).await.unwrap());
    }
    assert_eq!(
        materialized_rows(kv.as_ref(), "views/").await.unwrap(),
        expected
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bqloader_loads_into_the_bigquery_emulator_idempotently() {
    use ledgerhost_capabilities::warehouse::bigquery::{BigQueryConfig, BigQueryWarehouse};
    use ledgerhost_core::source::Row;
    use ledgerhost_core::{Column, ColumnType, TableSchema};
    use ledgerhost_google::AuthMode;
    use ledgerhost_tests::harness::bigquery::{BigQueryEmulator, PROJECT};

    let emu = BigQueryEmulator::start();
    let mut config = BigQueryConfig::new(PROJECT, "analytics");
    config.endpoint = Some(emu.endpoint());
    config.auth = AuthMode::Anonymous;
    let bq = Arc::new(BigQueryWarehouse::connect(config).await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let kv = Arc::new(EmbeddedKeyValue::open(&dir.path().join("kv.db")).unwrap());
    let rt = runtime(dir.path(), kv, bq.clone());
    let plugin = load(&rt, "bqloader", &[]).await;

    let col = Column::new;
    let schema = TableSchema {
        name: "orders".into(),
        columns: vec![
            col("id", ColumnType::Int64, false),
            col("client_id", ColumnType::String, true),
            col("amount", ColumnType::Numeric, true),
            col("ratio", ColumnType::Float64, true),
            col("paid", ColumnType::Bool, true),
            col("blob", ColumnType::Bytes, true),
            col("day", ColumnType::Date, true),
            col(
                "tags",
                ColumnType::Array(Box::new(ColumnType::String)),
                true,
            ),
            col("commit_ts", ColumnType::Timestamp, false),
        ],
        primary_key: vec!["id".into()],
        commit_ts_column: "commit_ts".into(),
        deleted_column: None,
    };
    let encoder = ledgerhost_avro::Encoder::new(&schema).unwrap();
    let decoder = ledgerhost_avro::Decoder::new();
    // Two versions of 60 keys, as the poller would publish them.
    let mut events = Vec::new();
    for version in 0..2i64 {
        for id in 1..=60i64 {
            let ts = 1_763_800_000_000_000 + version * 1_000_000 + id;
            let values = vec![
                Value::Int64(id),
                if id % 5 == 0 {
                    Value::Null
                } else {
                    Value::String(format!("c{}'\"é", id % 3))
                },
                Value::Numeric(format!("{}.{}", id * 10 + version, id % 10)),
                Value::Float64(id as f64 / 7.0),
                Value::Bool(id % 2 == 0),
                Value::Bytes(vec![0, id as u8, 255]),
                Value::Date(20_000 + id as i32),
                Value::Array(
                    ColumnType::String,
                    vec![Value::String(format!("v{version}")), Value::Null],
                ),
                Value::Timestamp(ts),
            ];
            let message = encoder
                .encode(&Row {
                    values,
                    commit_ts: ts,
                })
                .unwrap();
            events.push(decoder.decode_message(&message).unwrap());
        }
    }
    for batch in events.chunks(50) {
        let d = plugin.handle(batch.to_vec()).await.expect("bqloader runs");
        assert_eq!(d, vec![Disposition::Ack; batch.len()], "{d:?}");
    }
    // Redeliveries: a whole batch again, and a batch mixing old and repeated events.
    let again: Vec<Event> = events[..50].to_vec();
    assert!(
        plugin
            .handle(again)
            .await
            .unwrap()
            .iter()
            .all(|d| *d == Disposition::Ack)
    );
    let mixed: Vec<Event> = events[40..70]
        .iter()
        .chain(events[45..50].iter())
        .cloned()
        .collect();
    assert!(
        plugin
            .handle(mixed)
            .await
            .unwrap()
            .iter()
            .all(|d| *d == Disposition::Ack)
    );

    assert_eq!(
        bq.count("orders").await.unwrap(),
        120,
        "one row per event, redeliveries add none"
    );
    let mut expected: Vec<WarehouseRow> = events
        .iter()
        .map(|e| WarehouseRow {
            event_id: e.id.0.clone(),
            fields: e.fields.clone(),
        })
        .collect();
    expected.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    assert_eq!(
        bq.scan("orders").await.unwrap(),
        expected,
        "the warehouse holds every event's row exactly as decoded from its Avro"
    );
}

/// Writes `manifest` as `<dir>/<name>.toml` and loads the built component with it.
async fn load_with_manifest(
    runtime: &Arc<Runtime>,
    dir: &Path,
    name: &str,
    manifest: &str,
) -> Result<Arc<Plugin>, String> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, manifest).unwrap();
    runtime
        .load(&plugin_wasm(name), &path, &BTreeMap::new())
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_plugins_run_with_only_their_manifest_grants() {
    let dir = tempfile::tempdir().unwrap();
    let kv = Arc::new(EmbeddedKeyValue::open(&dir.path().join("kv.db")).unwrap());
    let wh = Arc::new(SqliteWarehouse::open(&dir.path().join("wh.db")).unwrap());
    let rt = runtime(dir.path(), kv.clone(), wh.clone());

    // The materializer pointed outside its granted prefix is denied, and writes nothing.
    let plugin = load(&rt, "materializer", &[("prefix", "other/")]).await;
    let d = plugin
        .handle(vec![order_event(1, "c1", 5, false, 10)])
        .await
        .unwrap();
    match &d[0] {
        Disposition::Reject(reason) => {
            assert!(
                reason.contains("not granted key `other/")
                    && reason.contains("grants.key-prefixes"),
                "{reason}"
            );
        }
        other => panic!("a write outside the grant must be refused, got {other:?}"),
    }
    assert!(
        kv.list_keys("").await.unwrap().is_empty(),
        "nothing written"
    );
    // Inside the grant it works.
    let plugin = load(&rt, "materializer", &[]).await;
    assert_eq!(
        plugin
            .handle(vec![order_event(1, "c1", 5, false, 10)])
            .await
            .unwrap(),
        vec![Disposition::Ack]
    );
    assert_eq!(
        materialized_view(kv.as_ref(), "views/")
            .await
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        vec!["views/c1/orders/1"]
    );

    // Without the grants their code needs, neither component loads.
    let manifests = tempfile::tempdir().unwrap();
    // `avro = true` as the shipped manifests ask (contract 0.2): the bqloader stores the raw
    // Avro, so without it every event would be rejected before the grant is reached.
    let bare = |name: &str| {
        format!(
            "name = \"{name}\"\nworld = \"consumer\"\n[subscription]\ntable = \"orders\"\navro = true\n"
        )
    };
    let e = load_with_manifest(&rt, manifests.path(), "materializer", &bare("materializer"))
        .await
        .err()
        .expect("a materializer without key-prefixes is refused");
    assert!(e.contains("keyvalue") && e.contains("grants none"), "{e}");
    let e = load_with_manifest(&rt, manifests.path(), "bqloader", &bare("bqloader"))
        .await
        .err()
        .expect("a bqloader without warehouse-tables is refused");
    assert!(e.contains("warehouse") && e.contains("grants none"), "{e}");

    // bqloader granted another table is denied the one it would load.
    let other = format!(
        "{}[grants]\nwarehouse-tables = [\"elsewhere\"]\n",
        bare("bqloader")
    );
    let plugin = load_with_manifest(&rt, manifests.path(), "bqloader", &other)
        .await
        .unwrap();
    let schema = TableSchemaFixture::orders();
    let d = plugin.handle(vec![schema.event(1, 10)]).await.unwrap();
    match &d[0] {
        Disposition::Reject(reason) => assert!(
            reason.contains("warehouse table `orders`")
                && reason.contains("grants.warehouse-tables"),
            "{reason}"
        ),
        other => panic!("expected a denial, got {other:?}"),
    }
    assert_eq!(wh.count("orders").await.unwrap(), 0);
}

/// A small `orders` table whose events carry real Avro (for bqloader).
struct TableSchemaFixture {
    encoder: ledgerhost_avro::Encoder,
    decoder: ledgerhost_avro::Decoder,
}

impl TableSchemaFixture {
    fn orders() -> Self {
        use ledgerhost_core::{Column, ColumnType, TableSchema};
        let schema = TableSchema {
            name: "orders".into(),
            columns: vec![
                Column {
                    name: "id".into(),
                    ty: ColumnType::Int64,
                    nullable: false,
                },
                Column {
                    name: "commit_ts".into(),
                    ty: ColumnType::Timestamp,
                    nullable: false,
                },
            ],
            primary_key: vec!["id".into()],
            commit_ts_column: "commit_ts".into(),
            deleted_column: None,
        };
        TableSchemaFixture {
            encoder: ledgerhost_avro::Encoder::new(&schema).unwrap(),
            decoder: ledgerhost_avro::Decoder::new(),
        }
    }

    fn event(&self, id: i64, ts: i64) -> Event {
        let m = self
            .encoder
            .encode(&ledgerhost_core::source::Row {
                values: vec![Value::Int64(id), Value::Timestamp(ts)],
                commit_ts: ts,
            })
            .unwrap();
        let attrs: Vec<(String, String)> = m.attributes.into_iter().collect();
        self.decoder.decode(&m.data, &attrs).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bqloader_widens_tables_on_new_columns_and_rejects_only_drifted_events() {
    use ledgerhost_core::source::Row;
    use ledgerhost_core::{Column, ColumnType, TableSchema};
    let dir = tempfile::tempdir().unwrap();
    let kv = Arc::new(EmbeddedKeyValue::open(&dir.path().join("kv.db")).unwrap());
    let wh = Arc::new(SqliteWarehouse::open(&dir.path().join("wh.db")).unwrap());
    let rt = runtime(dir.path(), kv, wh.clone());
    let plugin = load(&rt, "bqloader", &[]).await;

    let col = |name: &str, ty: ColumnType| Column {
        name: name.into(),
        ty,
        nullable: name != "id",
    };
    let schema = |amount: ColumnType, region: bool| {
        let mut columns = vec![
            col("id", ColumnType::Int64),
            col("amount", amount),
            col("commit_ts", ColumnType::Timestamp),
        ];
        if region {
            columns.push(col("region", ColumnType::String));
        }
        TableSchema {
            name: "orders".into(),
            columns,
            primary_key: vec!["id".into()],
            commit_ts_column: "commit_ts".into(),
            deleted_column: None,
        }
    };
    let decoder = ledgerhost_avro::Decoder::new();
    let event = |schema: &TableSchema, values: Vec<Value>, ts: i64| {
        let m = ledgerhost_avro::Encoder::new(schema)
            .unwrap()
            .encode(&Row {
                values,
                commit_ts: ts,
            })
            .unwrap();
        let attrs: Vec<(String, String)> = m.attributes.into_iter().collect();
        decoder.decode(&m.data, &attrs).unwrap()
    };
    let v1 = schema(ColumnType::Int64, false);
    let v2 = schema(ColumnType::Int64, true);
    let drifted = schema(ColumnType::String, true);
    let batch = vec![
        event(
            &v1,
            vec![Value::Int64(1), Value::Int64(10), Value::Timestamp(100)],
            100,
        ),
        // The table gained a column: the warehouse table is widened in the same batch.
        event(
            &v2,
            vec![
                Value::Int64(2),
                Value::Int64(20),
                Value::Timestamp(200),
                Value::String("eu".into()),
            ],
            200,
        ),
        // A column changed type: that event alone is refused, with the column named.
        event(
            &drifted,
            vec![
                Value::Int64(3),
                Value::String("thirty".into()),
                Value::Timestamp(300),
                Value::Null,
            ],
            300,
        ),
        event(
            &v1,
            vec![Value::Int64(4), Value::Int64(40), Value::Timestamp(400)],
            400,
        ),
    ];
    let d = plugin.handle(batch).await.unwrap();
    assert_eq!(d[0], Disposition::Ack);
    assert_eq!(d[1], Disposition::Ack);
    match &d[2] {
        Disposition::Reject(reason) => assert!(
            reason.contains("orders/3/300") && reason.contains("amount"),
            "{reason}"
        ),
        other => panic!("the drifted event must be rejected, got {other:?}"),
    }
    assert_eq!(d[3], Disposition::Ack);
    let rows = wh.scan("orders").await.unwrap();
    let summary: Vec<(String, Vec<Value>)> = rows
        .into_iter()
        .map(|r| (r.event_id, r.fields.into_iter().map(|f| f.value).collect()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "orders/1/100".to_string(),
                vec![
                    Value::Int64(1),
                    Value::Int64(10),
                    Value::Timestamp(100),
                    Value::Null
                ]
            ),
            (
                "orders/2/200".to_string(),
                vec![
                    Value::Int64(2),
                    Value::Int64(20),
                    Value::Timestamp(200),
                    Value::String("eu".into())
                ]
            ),
            (
                "orders/4/400".to_string(),
                vec![
                    Value::Int64(4),
                    Value::Int64(40),
                    Value::Timestamp(400),
                    Value::Null
                ]
            ),
        ]
    );
}
