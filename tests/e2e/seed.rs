//! The seed architecture's archive chain, end to end on embedded defaults with the real host
//! binary: rows written → archiver (one object per event) → janitor (one compacted file per
//! span, originals deleted only after verification) → replayer (the span onto a new topic,
//! in commit order). Also the janitor's crash safety and the archiver's bucket grants.
//!
//! The main chain test also checks, on the same run, that each key's newest warehouse row
//! (shipped bqloader) equals the source row, and that a materializer fed only by the replay
//! topic builds the same view, key for key, as one fed live ([`Chain::install_views`]) —
//! the views in a real `redis-server`, the host's `keyvalue.kind = "redis"`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ledgerhost_capabilities::keyvalue::embedded::EmbeddedKeyValue;
use ledgerhost_capabilities::warehouse::sqlite::SqliteWarehouse;
use ledgerhost_core::Value;
use ledgerhost_core::capabilities::{KeyValue, Warehouse, WarehouseRow};
use ledgerhost_core::ledger::{Ledger, Message, SubscriptionSpec, attr};
use ledgerhost_ledger::embedded::{EmbeddedLedger, EmbeddedOptions};
use ledgerhost_tests::harness::host::{HostProcess, Workspace};
use ledgerhost_tests::harness::views::materialized_view;
use ledgerhost_tests::harness::{eventually, free_port, plugin_manifest};
use serde_json::{Value as Json, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOST_BIN: &str = env!("CARGO_BIN_EXE_ledgerhost-under-test");

const ORDERS: &str = "CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    client_id TEXT NOT NULL,
    amount INTEGER NOT NULL,
    commit_ts INTEGER
);";

/// The ledger topic of the orders table (default `ledger.topic-prefix`).
pub const LIVE_TOPIC: &str = "ledger-orders";
/// The topic the chain test replays onto (granted to the replayer by `replay-*`).
pub const REPLAY_TOPIC: &str = "replay-orders-seed";
const HOUR: i64 = 3_600_000_000;
/// Key prefix of the materializer fed live (the shipped manifest's).
pub const LIVE_VIEW: &str = "views/";
/// Key prefix of the materializer fed only by [`REPLAY_TOPIC`].
pub const REPLAY_VIEW: &str = "replay-views/";

/// A host deployment with the archive plugins, driven step by step.
pub struct Chain {
    pub ws: Workspace,
    pub admin_port: u16,
    pub log: PathBuf,
    host: Option<HostProcess>,
    /// Where the views are read from when the host's key-value store is not the embedded
    /// file (e.g. Redis).
    pub kv: Option<Arc<dyn KeyValue>>,
}

/// A raw HTTP answer.
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    /// The body as JSON (panics with the body if it is not).
    pub fn json(&self) -> Json {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {}", self.body))
    }
}

/// The shipped manifest of a plugin, as built by `scripts/build-plugins`.
pub fn shipped_manifest(name: &str) -> String {
    std::fs::read_to_string(plugin_manifest(name)).expect("read manifest")
}

impl Chain {
    /// A workspace with the orders table and the shipped archiver, janitor and replayer;
    /// `extra_config` is appended to `ledgerhost.toml` (e.g. plugin config overrides).
    pub fn new(extra_config: &str) -> Chain {
        let ws = Workspace::new();
        ws.sql(ORDERS);
        for name in ["archiver", "janitor", "replayer"] {
            ws.install_plugin(name, name, &shipped_manifest(name));
        }
        let chain = Chain {
            admin_port: free_port(),
            log: ws.path().join("host.log"),
            ws,
            host: None,
            kv: None,
        };
        chain.write_config(extra_config);
        chain
    }

    /// Installs the shipped bqloader and two materializers: `materializer` on the orders
    /// table ([`LIVE_VIEW`]) and `materializer-replay` on [`REPLAY_TOPIC`] ([`REPLAY_VIEW`]),
    /// the same component with its own manifest (subscription, grant and prefix).
    pub fn install_views(&self) {
        self.ws
            .install_plugin("bqloader", "bqloader", &shipped_manifest("bqloader"));
        let live = shipped_manifest("materializer");
        self.ws
            .install_plugin("materializer", "materializer", &live);
        let mut replay = live.clone();
        for (from, to) in [
            (
                "name = \"materializer\"".to_string(),
                "name = \"materializer-replay\"".to_string(),
            ),
            (
                "tables = [\"*\"]".into(),
                format!("topic = \"{REPLAY_TOPIC}\""),
            ),
            (
                format!("key-prefixes = [\"{LIVE_VIEW}\"]"),
                format!("key-prefixes = [\"{REPLAY_VIEW}\"]"),
            ),
            (
                format!("prefix = \"{LIVE_VIEW}\""),
                format!("prefix = \"{REPLAY_VIEW}\""),
            ),
        ] {
            assert_eq!(
                replay.matches(&from).count(),
                1,
                "the shipped materializer manifest has `{from}` once"
            );
            replay = replay.replace(&from, &to);
        }
        self.ws
            .install_plugin("materializer", "materializer-replay", &replay);
    }

    /// The source table's current rows, by id.
    pub fn source_rows(&self) -> BTreeMap<i64, SourceRow> {
        let conn = rusqlite::Connection::open(self.ws.db()).expect("open app.db");
        let mut stmt = conn
            .prepare(
                "SELECT id, client_id, amount, commit_ts,
                        strftime('%Y-%m-%dT%H:%M:%S', commit_ts / 1000000, 'unixepoch')
                            || printf('.%06dZ', commit_ts % 1000000)
                 FROM orders",
            )
            .expect("prepare");
        stmt.query_map([], |r| {
            Ok(SourceRow {
                id: r.get(0)?,
                client: r.get(1)?,
                amount: r.get(2)?,
                commit_ts: r.get(3)?,
                commit_text: r.get(4)?,
            })
        })
        .expect("query")
        .map(|r| {
            let r = r.expect("row");
            (r.id, r)
        })
        .collect()
    }

    /// The embedded warehouse (`<data-dir>/warehouse.db`; WAL, so readable while the host runs).
    pub fn warehouse(&self) -> SqliteWarehouse {
        SqliteWarehouse::open(&self.ws.data_dir().join("warehouse.db")).expect("open warehouse")
    }

    /// The view under `prefix` in the host's key-value store ([`Chain::kv`], else the
    /// embedded file), keys without the prefix (`<client>/orders/<id>` → the row's JSON).
    pub async fn view(&self, prefix: &str) -> BTreeMap<String, Vec<u8>> {
        let kv: Arc<dyn KeyValue> = match &self.kv {
            Some(kv) => kv.clone(),
            None => Arc::new(
                EmbeddedKeyValue::open(&self.ws.data_dir().join("keyvalue.db"))
                    .expect("open keyvalue"),
            ),
        };
        materialized_view(kv.as_ref(), prefix)
            .await
            .expect("read the view")
            .into_iter()
            .map(|(k, v)| {
                (
                    k.strip_prefix(prefix)
                        .expect("listed by prefix")
                        .to_string(),
                    v,
                )
            })
            .collect()
    }

    /// Waits until the view under `prefix` equals `want`, then returns it.
    pub async fn converged_view(
        &self,
        prefix: &str,
        want: &BTreeMap<String, Json>,
    ) -> BTreeMap<String, Vec<u8>> {
        eventually(Duration::from_secs(120), || async {
            parse_view(&self.view(prefix).await) == *want
        })
        .await;
        let view = self.view(prefix).await;
        let diff = view_diff(&parse_view(&view), want);
        assert!(
            diff.is_empty(),
            "the view under {prefix} must hold each client's current source rows; \
             {} keys differ:\n{}\n{}",
            diff.len(),
            diff.join("\n"),
            self.log_text()
        );
        view
    }

    /// (Re)writes `ledgerhost.toml`: embedded defaults, a fixed admin port, the orders table.
    pub fn write_config(&self, extra: &str) {
        let text = format!(
            "[host]\ndata-dir = \"state\"\nplugin-dir = \"plugins\"\nlease-ttl-ms = 2000\n\
             drain-timeout-ms = 10000\n\n[source]\nkind = \"sqlite\"\npath = \"app.db\"\n\n\
             [admin]\nlisten = \"127.0.0.1:{}\"\n\n[[tables]]\nname = \"orders\"\n\
             interval-ms = 50\n\n{extra}\n",
            self.admin_port
        );
        std::fs::write(self.config(), text).expect("write config");
    }

    fn config(&self) -> PathBuf {
        self.ws.path().join("ledgerhost.toml")
    }

    /// Starts the host binary and waits until it is ready with its plugins loaded.
    pub async fn start(&mut self) {
        let before = std::fs::read_to_string(&self.log).unwrap_or_default().len();
        self.host = Some(HostProcess::start(
            HOST_BIN.as_ref(),
            &self.config(),
            &self.log,
        ));
        let log = self.log.clone();
        let ready = eventually(Duration::from_secs(120), || {
            let log = log.clone();
            async move {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .get(before..)
                    .is_some_and(|t| t.contains("ledgerhost ready"))
            }
        })
        .await;
        assert!(ready, "host did not start:\n{}", self.log_text());
    }

    /// SIGKILLs the host: a crash, no drain.
    pub fn kill(&mut self) {
        if let Some(mut h) = self.host.take() {
            h.kill();
        }
    }

    /// The host's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Opens the embedded ledger; the host must be stopped (it is one process's file).
    pub fn ledger(&self) -> Arc<dyn Ledger> {
        assert!(
            self.host.is_none(),
            "stop the host before opening its ledger"
        );
        Arc::new(
            EmbeddedLedger::open(
                &self.ws.data_dir().join("ledger"),
                EmbeddedOptions::default(),
            )
            .expect("open the embedded ledger"),
        )
    }

    /// Creates test subscriptions (host stopped) that see everything published from now on.
    pub async fn subscribe(&self, subs: &[(&str, &str)]) {
        let ledger = self.ledger();
        for (name, topic) in subs {
            ledger.ensure_topic(topic).await.expect("topic");
            ledger
                .ensure_subscription(&SubscriptionSpec {
                    name: (*name).into(),
                    topic: (*topic).into(),
                    attribute_filter: BTreeMap::new(),
                    ack_deadline: Duration::from_secs(60),
                    dead_letter_topic: format!("{name}-dead"),
                })
                .await
                .expect("subscription");
        }
    }

    /// The orders archive bucket (the local blobstore's default root is `<data-dir>/blobs`).
    pub fn bucket_dir(&self) -> PathBuf {
        self.ws.data_dir().join("blobs").join("archive-orders")
    }

    /// Every object of the orders bucket: name → content.
    pub fn archived_objects(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        if let Ok(dir) = std::fs::read_dir(self.bucket_dir()) {
            for entry in dir.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name.starts_with("orders-") {
                    continue;
                }
                match std::fs::read(entry.path()) {
                    Ok(bytes) => {
                        out.insert(name, bytes);
                    }
                    // A running janitor may delete an object between the listing and the read.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => panic!("read object {name}: {e}"),
                }
            }
        }
        out
    }

    /// The per-event objects (not compacted files) of the orders bucket.
    pub fn single_objects(&self) -> BTreeMap<String, Vec<u8>> {
        self.archived_objects()
            .into_iter()
            .filter(|(n, _)| is_single_name(n))
            .collect()
    }

    /// Runs `sql` (one transaction) and waits until the archive holds `singles_after`
    /// per-event objects, so each transaction gets its own commit timestamp.
    pub async fn write(&self, sql: &str, singles_after: usize) {
        self.ws.sql(&format!("BEGIN;{sql}COMMIT;"));
        let archived = eventually(Duration::from_secs(120), || async {
            self.single_objects().len() >= singles_after
        })
        .await;
        assert!(
            archived,
            "archive has {} objects, expected {singles_after}:\n{}",
            self.single_objects().len(),
            self.log_text()
        );
    }

    /// A small order history: inserts, then updates of some rows in later transactions.
    /// Returns the number of events (row versions) it produced.
    pub async fn write_history(&self, first_id: i64) -> usize {
        let base = self.single_objects().len();
        let ids = |r: std::ops::RangeInclusive<i64>| r.map(move |i| i + first_id - 1);
        let mut sql = String::new();
        for id in ids(1..=40) {
            sql.push_str(&format!(
                "INSERT INTO orders (id, client_id, amount) VALUES ({id}, 'c{}', {id});",
                id % 5
            ));
        }
        self.write(&sql, base + 40).await;
        let mut sql = String::new();
        for id in ids(1..=20) {
            sql.push_str(&format!(
                "UPDATE orders SET amount = amount + 100 WHERE id = {id};"
            ));
        }
        for id in ids(41..=50) {
            sql.push_str(&format!(
                "INSERT INTO orders (id, client_id, amount) VALUES ({id}, 'c{}', {id});",
                id % 5
            ));
        }
        self.write(&sql, base + 70).await;
        let mut sql = String::new();
        for id in ids(5..=15) {
            sql.push_str(&format!(
                "UPDATE orders SET amount = amount * 2 WHERE id = {id};"
            ));
        }
        self.write(&sql, base + 81).await;
        81
    }

    /// An HTTP request to the admin port.
    pub async fn http(&self, method: &str, path: &str, body: &str) -> Answer {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.admin_port))
            .await
            .expect("connect to the admin port");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.expect("send request");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.expect("read answer");
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP answer: {text}"));
        Answer {
            status,
            body: body.to_string(),
        }
    }

    /// Runs one janitor tick as if at `now` (µs), through the admin port.
    pub async fn run_janitor(&self, now: i64) -> Answer {
        self.http("POST", &format!("/plugins/janitor/tick?now={now}"), "")
            .await
    }

    /// Asks the replayer to replay `[from, to)` of orders (onto `topic`, if given).
    pub async fn replay(&self, from: i64, to: i64, topic: Option<&str>) -> Answer {
        let mut req = json!({"table": "orders", "from": from, "to": to});
        if let Some(t) = topic {
            req["topic"] = json!(t);
        }
        self.http("POST", "/plugins/replayer/", &req.to_string())
            .await
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One row of the source table as the application sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRow {
    pub id: i64,
    pub client: String,
    pub amount: i64,
    pub commit_ts: i64,
    /// The commit timestamp as RFC 3339 text, formatted by SQLite.
    pub commit_text: String,
}

impl SourceRow {
    /// The row as the warehouse stores it, in column order.
    pub fn values(&self) -> Vec<Value> {
        vec![
            Value::Int64(self.id),
            Value::String(self.client.clone()),
            Value::Int64(self.amount),
            Value::Timestamp(self.commit_ts),
        ]
    }
}

/// The view the materializer must hold for `source`: `<client>/orders/<id>` → the row.
fn expected_view(source: &BTreeMap<i64, SourceRow>) -> BTreeMap<String, Json> {
    source
        .values()
        .map(|r| {
            let row = json!({
                "id": r.id,
                "client_id": r.client,
                "amount": r.amount,
                "commit_ts": r.commit_text,
                "_commit_ts": r.commit_ts,
            });
            (format!("{}/orders/{}", r.client, r.id), row)
        })
        .collect()
}

fn parse_view(view: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Json> {
    view.iter()
        .map(|(k, v)| {
            let row = serde_json::from_slice(v)
                .unwrap_or_else(|e| panic!("view key {k} does not hold JSON: {e}"));
            (k.clone(), row)
        })
        .collect()
}

/// One line per key whose row differs between `got` and `want` (missing, extra, other).
fn view_diff(got: &BTreeMap<String, Json>, want: &BTreeMap<String, Json>) -> Vec<String> {
    let keys: BTreeSet<&String> = got.keys().chain(want.keys()).collect();
    keys.into_iter()
        .filter(|k| got.get(*k) != want.get(*k))
        .map(|k| format!("  {k}: got {:?}, want {:?}", got.get(k), want.get(k)))
        .collect()
}

/// The newest warehouse row of each key (by its commit-timestamp column), in column order.
fn latest_per_key(rows: &[WarehouseRow]) -> BTreeMap<i64, Vec<Value>> {
    let mut latest: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for r in rows {
        let values: Vec<Value> = r.fields.iter().map(|f| f.value.clone()).collect();
        let (Some(Value::Int64(id)), Some(Value::Timestamp(ts))) = (values.first(), values.get(3))
        else {
            panic!("unexpected warehouse row {r:?}");
        };
        let newer = latest
            .get(id)
            .is_none_or(|old| matches!(old[3], Value::Timestamp(t) if t < *ts));
        if newer {
            latest.insert(*id, values);
        }
    }
    latest
}

/// `orders-YYYY_MM_DD_HHMMSS_mmm-NNNN.avro`.
fn is_single_name(n: &str) -> bool {
    let b = n.as_bytes();
    n.len() == "orders-2026_11_22_120304_123-0042.avro".len()
        && n.starts_with("orders-")
        && n.ends_with(".avro")
        && b[17] == b'_'
        && b[24] == b'_'
        && b[28] == b'-'
}

/// `orders-YYYY_MM_DD_HHMM-HHMM.avro`.
fn is_compacted_name(n: &str) -> bool {
    n.len() == "orders-2026_11_22_1200-1300.avro".len()
        && n.starts_with("orders-")
        && n.ends_with(".avro")
        && n.as_bytes()[22] == b'-'
}

/// Days since 1970-01-01 of a civil date (written independently of the plugins' code).
fn days(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
}

/// The millisecond a per-event object name states.
fn name_millis(n: &str) -> i64 {
    let f = |a: usize, b: usize| n[a..b].parse::<i64>().expect("digits");
    let (y, mo, d) = (f(7, 11), f(12, 14), f(15, 17));
    let (h, mi, s, ms) = (f(18, 20), f(20, 22), f(22, 24), f(25, 28));
    ((days(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s) * 1000) + ms
}

/// The span `[start, end)` (µs) a compacted file name states.
fn name_span(n: &str) -> (i64, i64) {
    let f = |a: usize, b: usize| n[a..b].parse::<i64>().expect("digits");
    let day = days(f(7, 11), f(12, 14), f(15, 17)) * 86_400_000_000;
    let at = |h: i64, m: i64| day + (h * 60 + m) * 60_000_000;
    (at(f(18, 20), f(20, 22)), at(f(23, 25), f(25, 27)))
}

/// Reads a compacted file with the reference Avro reader: (event id, commit ts, inner Avro).
fn read_compacted_file(bytes: &[u8]) -> Vec<(String, i64, Vec<u8>)> {
    use apache_avro::types::Value;
    let reader = apache_avro::Reader::new(bytes).expect("an Avro object container file");
    reader
        .map(|v| {
            let Value::Record(fields) = v.expect("record reads") else {
                panic!("not a record")
            };
            let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let id = match get("event_id") {
                Some(Value::String(s)) => s,
                other => panic!("event_id: {other:?}"),
            };
            let ts = match get("commit_ts") {
                Some(Value::TimestampMicros(t) | Value::Long(t)) => t,
                other => panic!("commit_ts: {other:?}"),
            };
            let avro = match get("avro") {
                Some(Value::Bytes(b)) => b,
                other => panic!("avro: {other:?}"),
            };
            (id, ts, avro)
        })
        .collect()
}

/// Everything on `sub`, one message at a time (acked before the next pull), so the order is
/// the topic's own order and not shuffled by per-key hold-back.
async fn drain_in_order(ledger: &Arc<dyn Ledger>, sub: &str, want: usize) -> Vec<Message> {
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while out.len() < want && std::time::Instant::now() < deadline {
        let batch = ledger
            .pull(sub, 1, Duration::from_millis(200))
            .await
            .expect("pull");
        for d in batch {
            ledger
                .ack(sub, std::slice::from_ref(&d.ack_id))
                .await
                .expect("ack");
            out.push(d.message);
        }
    }
    // Nothing more than expected.
    assert!(
        ledger
            .pull(sub, 10, Duration::from_millis(300))
            .await
            .expect("pull")
            .is_empty(),
        "more messages on {sub} than the {want} expected"
    );
    out
}

fn commit_ts_of(m: &Message) -> i64 {
    m.attributes[attr::COMMIT_TS].parse().expect("commit_ts")
}

/// Checks that every per-event object is named after its event and holds its Avro.
fn check_single_objects(objects: &BTreeMap<String, Vec<u8>>) {
    let decoder = ledgerhost_avro::Decoder::new();
    for (name, bytes) in objects {
        let e = decoder
            .decode(bytes, &[])
            .unwrap_or_else(|err| panic!("{name} is not an event's Avro: {err}"));
        assert_eq!(e.table, "orders");
        assert_eq!(
            name_millis(name),
            e.commit_ts.div_euclid(1000),
            "{name}: named after the commit time to the millisecond"
        );
        let digits: u16 = name[29..33].parse().unwrap();
        let derived = ledgerhost_archive::event_digits(&e.id.0);
        // A collision within one millisecond moves an event to the next free digits.
        let step = (digits + 10_000 - derived) % 10_000;
        assert!(step < 10, "{name}: digits not derived from {}", e.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_are_archived_compacted_and_replayed_onto_a_new_topic_in_commit_order() {
    use ledgerhost_capabilities::keyvalue::redis::{RedisConfig, RedisKeyValue};
    // The views live in a real Redis, as in production; everything else is embedded.
    let redis = ledgerhost_tests::harness::redis::RedisServer::start();
    let mut chain = Chain::new(&format!(
        "[keyvalue]\nkind = \"redis\"\nurl = \"{}\"\n",
        redis.url()
    ));
    chain.kv = Some(Arc::new(
        RedisKeyValue::connect(RedisConfig::new(redis.url())).expect("redis client"),
    ));
    chain.install_views();
    // A first start prepares the table and the plugins' subscriptions; the test's own
    // subscriptions are made with the host stopped.
    chain.start().await;
    chain.kill();
    chain
        .subscribe(&[("test-live", LIVE_TOPIC), ("test-replay", REPLAY_TOPIC)])
        .await;
    chain.start().await;

    // Archiver: one object per event, named by commit time and event id, holding its Avro.
    let events = chain.write_history(1).await;
    let singles = chain.single_objects();
    assert_eq!(singles.len(), events, "one object per event");
    assert_eq!(
        chain.archived_objects().len(),
        events,
        "nothing else in the bucket"
    );
    check_single_objects(&singles);
    let decoder = ledgerhost_avro::Decoder::new();
    let commit_times: BTreeSet<i64> = singles
        .values()
        .map(|b| decoder.decode(b, &[]).unwrap().commit_ts)
        .collect();
    assert_eq!(
        commit_times.len(),
        3,
        "three transactions, three commit timestamps"
    );

    // bqloader: each key's newest warehouse row equals the source row, column by column.
    let source = chain.source_rows();
    assert_eq!(source.len(), 50, "the history wrote 50 rows");
    let want_latest: BTreeMap<i64, Vec<Value>> =
        source.iter().map(|(id, r)| (*id, r.values())).collect();
    let wh = chain.warehouse();
    eventually(Duration::from_secs(120), || async {
        wh.scan("orders")
            .await
            .is_ok_and(|rows| rows.len() == events && latest_per_key(&rows) == want_latest)
    })
    .await;
    let rows = wh.scan("orders").await.expect("scan the warehouse");
    assert_eq!(
        latest_per_key(&rows),
        want_latest,
        "each key's newest warehouse row equals the source row\n{}",
        chain.log_text()
    );
    assert_eq!(rows.len(), events, "one warehouse row per event");

    // Materializer fed live: each client's current rows. The one on the replay topic has
    // seen nothing yet.
    let want_view = expected_view(&source);
    let clients: BTreeSet<&str> = source.values().map(|r| r.client.as_str()).collect();
    assert_eq!(clients.len(), 5, "rows of five clients");
    let live_view = chain.converged_view(LIVE_VIEW, &want_view).await;
    assert_eq!(live_view.len(), 50);
    assert!(
        chain.view(REPLAY_VIEW).await.is_empty(),
        "the replay materializer is fed by the replay topic only"
    );

    // Janitor: one compacted file per span, no loose objects, the same bytes inside.
    let last = *commit_times.last().unwrap();
    let answer = chain.run_janitor(last + 2 * HOUR).await;
    assert_eq!(answer.status, 200, "{}\n{}", answer.body, chain.log_text());
    let after = chain.archived_objects();
    let spans: BTreeSet<i64> = commit_times.iter().map(|t| t.div_euclid(HOUR)).collect();
    assert_eq!(
        after.len(),
        spans.len(),
        "one file per span: {:?}",
        after.keys()
    );
    let mut compacted_bytes = BTreeSet::new();
    let (mut from, mut to) = (i64::MAX, i64::MIN);
    for (name, bytes) in &after {
        assert!(is_compacted_name(name), "a loose object is left: {name}");
        let (start, end) = name_span(name);
        assert_eq!(end - start, HOUR, "{name}: hourly spans by default");
        (from, to) = (from.min(start), to.max(end));
        let header = &bytes[..bytes.len().min(4096)];
        assert!(
            header.windows(7).any(|w| w == b"deflate"),
            "{name} is deflate-compressed"
        );
        let records = read_compacted_file(bytes);
        assert!(
            records.windows(2).all(|w| w[0].1 <= w[1].1),
            "{name}: records in commit order"
        );
        for (id, ts, avro) in records {
            assert!(start <= ts && ts < end, "{name}: {id} outside the span");
            assert!(compacted_bytes.insert(avro), "{name}: {id} twice");
        }
    }
    let single_bytes: BTreeSet<Vec<u8>> = singles.values().cloned().collect();
    assert_eq!(
        compacted_bytes, single_bytes,
        "the same events, byte for byte"
    );

    // Replayer: the spans onto a new topic.
    let answer = chain.replay(from, to, Some(REPLAY_TOPIC)).await;
    assert_eq!(answer.status, 200, "{}\n{}", answer.body, chain.log_text());
    let body = answer.json();
    assert_eq!(body["topic"], REPLAY_TOPIC);
    assert_eq!(body["events"], events);
    let again = chain.replay(from, to, Some(REPLAY_TOPIC)).await;
    assert_eq!(again.status, 409, "a topic is never reused: {}", again.body);
    assert_eq!(again.json()["error"]["code"], "topic-exists");
    let generated = chain.replay(from, to, None).await;
    assert_eq!(generated.status, 200, "{}", generated.body);
    let generated = generated.json();
    assert!(
        generated["topic"]
            .as_str()
            .unwrap()
            .starts_with("replay-orders-")
    );
    assert_eq!(generated["events"], events);
    assert!(
        chain
            .log_text()
            .contains(&format!("{events}/{events} events published")),
        "the replayer logs its progress"
    );

    // A materializer fed only by the replay topic builds the live view again, key for key.
    let replay_view = chain.converged_view(REPLAY_VIEW, &want_view).await;
    assert_eq!(
        replay_view, live_view,
        "the view built from the replay equals the one built live, byte for byte"
    );
    chain.kill();

    // The replay is the live stream again: same messages, same order.
    let ledger = chain.ledger();
    let live = drain_in_order(&ledger, "test-live", events).await;
    let replayed = drain_in_order(&ledger, "test-replay", events).await;
    assert_eq!(live.len(), events);
    assert!(
        live.windows(2)
            .all(|w| commit_ts_of(&w[0]) <= commit_ts_of(&w[1])),
        "the live topic is in commit order"
    );
    assert_eq!(
        replayed, live,
        "replayed events equal the live ones, in commit order"
    );
    let live_bytes: BTreeSet<Vec<u8>> = live.iter().map(|m| m.data.clone()).collect();
    assert_eq!(
        live_bytes, single_bytes,
        "the archive held exactly the live events"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_janitor_killed_between_writing_and_deleting_loses_nothing() {
    // keep-originals stops each compaction after the write and the verification, right
    // before the deletes: the host is then SIGKILLed there.
    let mut chain = Chain::new("[plugins.janitor.config]\nkeep-originals = \"true\"\n");
    chain.start().await;
    let first = chain.write_history(1).await;
    let before = chain.single_objects();
    let last = before
        .values()
        .map(|b| {
            ledgerhost_avro::Decoder::new()
                .decode(b, &[])
                .unwrap()
                .commit_ts
        })
        .max()
        .unwrap();
    let answer = chain.run_janitor(last + 2 * HOUR).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let compacted: Vec<String> = chain
        .archived_objects()
        .into_keys()
        .filter(|n| is_compacted_name(n))
        .collect();
    assert!(!compacted.is_empty(), "the compacted file is written");
    assert_eq!(
        chain.single_objects(),
        before,
        "the originals are all still there"
    );
    chain.kill();

    // Rows written while the host is down, then a normal janitor run.
    chain.write_config("");
    chain.ws.sql(
        "BEGIN;INSERT INTO orders (id, client_id, amount) VALUES (1001, 'c1', 5);\
         INSERT INTO orders (id, client_id, amount) VALUES (1002, 'c2', 6);COMMIT;",
    );
    chain.start().await;
    let archived = eventually(Duration::from_secs(120), || async {
        chain.single_objects().len() == first + 2
    })
    .await;
    assert!(archived, "{}", chain.log_text());
    let all: BTreeSet<Vec<u8>> = chain.single_objects().into_values().collect();
    let answer = chain.run_janitor(last + 4 * HOUR).await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    let after = chain.archived_objects();
    assert!(
        after.keys().all(|n| is_compacted_name(n)),
        "no loose object: {:?}",
        after.keys()
    );
    let mut kept = BTreeSet::new();
    for bytes in after.values() {
        for (id, _, avro) in read_compacted_file(bytes) {
            assert!(kept.insert(avro), "{id} twice");
        }
    }
    assert_eq!(
        kept, all,
        "every event archived is in a compacted file, once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archiver_cannot_write_outside_its_bucket() {
    let mut chain = Chain::new("");
    // The same component, configured to aim outside its grant (`archive-*`) and to climb out
    // of the blobstore with `..`.
    let manifest = shipped_manifest("archiver");
    for (name, prefix) in [
        ("archiver-escape", "escape-"),
        ("archiver-dots", "archive-../../"),
    ] {
        let m = manifest
            .replace("name = \"archiver\"", &format!("name = \"{name}\""))
            .replace(
                "bucket-prefix = \"archive-\"",
                &format!("bucket-prefix = \"{prefix}\""),
            );
        assert_ne!(m, manifest);
        chain.ws.install_plugin("archiver", name, &m);
    }
    chain.start().await;
    chain.kill();
    chain
        // The shipped archiver reads `tables = ["*"]`: one dead-letter topic per table
        // (`dead-letter-<plugin>.<table>`, ledgerhost_manifest::names::dead_letter_topic).
        .subscribe(&[
            ("test-escape", "dead-letter-archiver-escape.orders"),
            ("test-dots", "dead-letter-archiver-dots.orders"),
        ])
        .await;
    chain.start().await;
    let mut sql = String::new();
    for id in 1..=10 {
        sql.push_str(&format!(
            "INSERT INTO orders (id, client_id, amount) VALUES ({id}, 'c', {id});"
        ));
    }
    chain.write(&sql, 10).await;
    chain.kill();

    let ledger = chain.ledger();
    for (sub, needle) in [("test-escape", "grants.buckets"), ("test-dots", "..")] {
        let dead = drain_in_order(&ledger, sub, 10).await;
        assert_eq!(
            dead.len(),
            10,
            "{sub}: every event refused and dead-lettered"
        );
        for m in dead {
            let reason = &m.attributes[attr::DEAD_LETTER_REASON];
            assert!(reason.contains(needle), "{sub}: {reason}");
        }
    }
    // Nothing was written anywhere but the granted bucket.
    let mut stray = Vec::new();
    walk(chain.ws.path(), &mut |p| {
        let name = p.file_name().unwrap().to_string_lossy();
        if name.starts_with("orders-") && !p.starts_with(chain.bucket_dir()) {
            stray.push(p.to_path_buf());
        }
    });
    assert!(
        stray.is_empty(),
        "objects outside archive-orders: {stray:?}"
    );
    let buckets: Vec<String> = std::fs::read_dir(chain.ws.data_dir().join("blobs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(buckets, vec!["archive-orders"]);
    assert_eq!(
        chain.single_objects().len(),
        10,
        "the well-configured archiver archived all"
    );
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            walk(&p, f);
        } else {
            f(&p);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_janitor_runs_on_its_manifest_schedule() {
    // Every second, one-minute spans compacted as soon as they end: the host's scheduler
    // alone (no admin tick) must compact the minute the rows were written in.
    let mut chain =
        Chain::new("[plugins.janitor.config]\nspan-minutes = \"1\"\nmin-age-secs = \"0\"\n");
    let fast = shipped_manifest("janitor").replace("every-secs = 3600", "every-secs = 1");
    assert_ne!(fast, shipped_manifest("janitor"));
    chain.ws.install_plugin("janitor", "janitor", &fast);
    chain.start().await;
    let mut sql = String::from("BEGIN;");
    for id in 1..=20 {
        sql.push_str(&format!(
            "INSERT INTO orders (id, client_id, amount) VALUES ({id}, 'c', {id});"
        ));
    }
    sql.push_str("COMMIT;");
    chain.ws.sql(&sql);

    let compacted = eventually(Duration::from_secs(240), || async {
        let objects = chain.archived_objects();
        !objects.is_empty()
            && objects.keys().all(|n| is_compacted_name(n))
            && objects
                .values()
                .map(|b| read_compacted_file(b).len())
                .sum::<usize>()
                == 20
    })
    .await;
    assert!(
        compacted,
        "objects: {:?}\n{}",
        chain.archived_objects().keys(),
        chain.log_text()
    );
    for name in chain.archived_objects().keys() {
        let (start, end) = name_span(name);
        assert_eq!(end - start, 60_000_000, "{name}: one-minute span");
    }

    // The tick route is only for scheduled plugins.
    let answer = chain.http("POST", "/plugins/archiver/tick", "").await;
    assert_eq!(answer.status, 404, "{}", answer.body);
    let answer = chain.http("GET", "/plugins/janitor/tick", "").await;
    assert_eq!(answer.status, 405, "{}", answer.body);
    let answer = chain
        .http("POST", "/plugins/janitor/tick?now=soon", "")
        .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
}

/// The archiver and janitor on Cloud Storage (fake-gcs-server) through the host's `gcs`
/// blobstore: per-event objects with the right names and Avro content, then one verified
/// compacted file per span and no loose objects — read back with the same client the host
/// uses against the real service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiver_and_janitor_write_and_read_through_cloud_storage() {
    use ledgerhost_capabilities::blobstore::gcs::{GcsBlobStore, GcsConfig};
    use ledgerhost_core::capabilities::BlobStore;
    use ledgerhost_google::AuthMode;
    use ledgerhost_tests::harness::gcs::GcsEmulator;

    let emu = GcsEmulator::start();
    let mut chain = Chain::new(&format!(
        "[blobstore]\nkind = \"gcs\"\nendpoint = \"{}\"\nproject = \"ledgerhost-test\"\n",
        emu.endpoint()
    ));
    chain.start().await;
    let gcs = GcsBlobStore::connect(GcsConfig {
        endpoint: Some(emu.endpoint()),
        project: Some("ledgerhost-test".into()),
        auth: AuthMode::Auto,
        ..GcsConfig::default()
    })
    .expect("gcs client");
    let objects = |gcs: &GcsBlobStore| {
        let gcs = gcs.clone();
        async move {
            let mut out = BTreeMap::new();
            for name in gcs
                .list("archive-orders", "orders-")
                .await
                .unwrap_or_default()
            {
                let bytes = gcs
                    .get("archive-orders", &name)
                    .await
                    .expect("get object")
                    .expect("listed object exists");
                out.insert(name, bytes);
            }
            out
        }
    };

    const ROWS: i64 = 40;
    for tx in 0..2 {
        let mut sql = String::from("BEGIN;");
        for i in 0..ROWS / 2 {
            let id = tx * (ROWS / 2) + i + 1;
            sql.push_str(&format!(
                "INSERT INTO orders (id, client_id, amount) VALUES ({id}, 'c{}', {id});",
                id % 3
            ));
        }
        sql.push_str("COMMIT;");
        chain.ws.sql(&sql);
    }
    let archived = eventually(Duration::from_secs(120), || async {
        objects(&gcs).await.len() >= ROWS as usize
    })
    .await;
    assert!(archived, "archive incomplete:\n{}", chain.log_text());
    let singles = objects(&gcs).await;
    assert_eq!(singles.len(), ROWS as usize, "one object per event");
    let decoder = ledgerhost_avro::Decoder::new();
    let mut ids = BTreeSet::new();
    for (name, bytes) in &singles {
        assert!(is_single_name(name), "object name {name}");
        let event = decoder
            .decode(bytes, &[])
            .expect("objects hold Avro containers");
        assert_eq!(event.table, "orders");
        ids.insert(event.id.0.clone());
    }
    assert_eq!(ids.len(), ROWS as usize, "every event once");

    let last = singles.keys().map(|n| name_millis(n) * 1000).max().unwrap();
    let spans: BTreeSet<i64> = singles
        .keys()
        .map(|n| (name_millis(n) * 1000).div_euclid(HOUR))
        .collect();
    let answer = chain.run_janitor(last + 2 * HOUR).await;
    assert_eq!(answer.status, 200, "{}\n{}", answer.body, chain.log_text());
    let after = objects(&gcs).await;
    assert_eq!(
        after.len(),
        spans.len(),
        "one file per span: {:?}",
        after.keys()
    );
    let mut compacted = BTreeSet::new();
    for (name, bytes) in &after {
        assert!(is_compacted_name(name), "a loose object is left: {name}");
        for (_, _, avro) in read_compacted_file(bytes) {
            compacted.insert(avro);
        }
    }
    let single_bytes: BTreeSet<Vec<u8>> = singles.into_values().collect();
    assert_eq!(compacted, single_bytes, "the same events, byte for byte");
}
