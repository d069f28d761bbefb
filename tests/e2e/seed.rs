//! The seed architecture's archive chain, end to end on embedded defaults with the real host
//! binary: rows written → archiver (one object per event) → janitor (one compacted file per
//! span, originals deleted only after verification) → replayer (the span onto a new topic,
//! in commit order). Also the janitor's crash safety and the archiver's bucket grants.
//!
//! The steps are helpers on [`Chain`] so more links can be checked on the same run, e.g.
//! "warehouse rows equal the source" (install the bqloader next to the archiver in
//! [`Chain::new`], compare after [`Chain::write_history`]) or "a materializer fed by the
//! replay topic builds the same view as fed live" (install two materializers, one on the
//! table and one on [`REPLAY_TOPIC`], compare their keys after [`Chain::replay`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ledgerhost_core::ledger::{Ledger, Message, SubscriptionSpec, attr};
use ledgerhost_ledger::embedded::{EmbeddedLedger, EmbeddedOptions};
use ledgerhost_tests::harness::host::{HostProcess, Workspace};
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

/// A host deployment with the archive plugins, driven step by step.
pub struct Chain {
    pub ws: Workspace,
    pub admin_port: u16,
    pub log: PathBuf,
    host: Option<HostProcess>,
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
        };
        chain.write_config(extra_config);
        chain
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
                if name.starts_with("orders-") {
                    out.insert(name, std::fs::read(entry.path()).expect("read object"));
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
    let mut chain = Chain::new("");
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
        .subscribe(&[
            ("test-escape", "dead-letter-archiver-escape"),
            ("test-dots", "dead-letter-archiver-dots"),
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
