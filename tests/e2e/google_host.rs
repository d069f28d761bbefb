//! The real host binary on Google backends: `source.kind = "spanner"` and
//! `ledger.kind = "pubsub"` against the official emulators, feeding the `recorder` test
//! plugin, whose embedded key-value file is the test's window on what the plugin received
//! (`rec/<event-id>` = the decoded fields as text, `order/<table>/<key>` = the commit
//! timestamps of the key's deliveries in arrival order).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ledgerhost_source::spanner::SpannerConfig;
use ledgerhost_tests::harness::eventually;
use ledgerhost_tests::harness::google::{GoogleEmulators, PROJECT, commit_times, spanner_write};
use ledgerhost_tests::harness::host::{HostProcess, Workspace, recorder_manifest};

const HOST_BIN: &str = env!("CARGO_BIN_EXE_ledgerhost-under-test");

const ORDERS: &str = "CREATE TABLE orders (
    id INT64 NOT NULL, client STRING(MAX), amount INT64,
    commit_ts TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp=true)
) PRIMARY KEY (id)";
/// The index every polled table needs (the host refuses a table without one).
const ORDERS_INDEX: &str = "CREATE INDEX orders_by_commit_ts ON orders (commit_ts)";

/// How the host finds the emulators.
#[derive(Clone, Copy, PartialEq)]
enum Endpoints {
    /// `endpoint` / `admin-endpoint` keys in the config.
    Explicit,
    /// `SPANNER_EMULATOR_HOST` and `PUBSUB_EMULATOR_HOST` (plus `admin-endpoint`, as the
    /// emulator's REST port is not the gcloud default here).
    Environment,
}

/// A host workspace on the Google backends.
struct GoogleHost {
    ws: Workspace,
    config: PathBuf,
    env: Vec<(String, String)>,
    log: PathBuf,
}

impl GoogleHost {
    fn new(
        emu: &GoogleEmulators,
        db: &SpannerConfig,
        topic_prefix: &str,
        tables: &str,
        endpoints: Endpoints,
    ) -> Self {
        let ws = Workspace::new();
        let admin = db
            .admin_endpoint
            .clone()
            .expect("harness sets the admin endpoint");
        let (spanner_ep, pubsub_ep, env) = match endpoints {
            Endpoints::Explicit => (
                format!(
                    "endpoint = \"{}\"\n",
                    db.endpoint.clone().expect("harness sets the endpoint")
                ),
                format!("endpoint = \"{}\"\n", emu.pubsub_endpoint()),
                Vec::new(),
            ),
            Endpoints::Environment => (String::new(), String::new(), emu.spanner_env()),
        };
        let text = format!(
            "[host]\ndata-dir = \"state\"\nplugin-dir = \"plugins\"\nlease-ttl-ms = 2000\n\
             drain-timeout-ms = 10000\n\n\
             [source]\nkind = \"spanner\"\nproject = \"{}\"\ninstance = \"{}\"\n\
             database = \"{}\"\n{spanner_ep}admin-endpoint = \"{admin}\"\n\n\
             [ledger]\nkind = \"pubsub\"\nproject = \"{PROJECT}\"\n{pubsub_ep}\
             topic-prefix = \"{topic_prefix}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n{tables}\n",
            db.project, db.instance, db.database
        );
        let config = ws.path().join("ledgerhost.toml");
        std::fs::write(&config, text).expect("write config");
        let log = ws.path().join("host.log");
        GoogleHost {
            ws,
            config,
            env,
            log,
        }
    }

    fn start(&self) -> HostProcess {
        HostProcess::start_with_env(HOST_BIN.as_ref(), &self.config, &self.log, &self.env)
    }

    /// Starts the host and waits for its `n`-th "ready" line in the (appended) log.
    async fn start_ready(&self) -> HostProcess {
        let before = self.count("ledgerhost ready");
        let host = self.start();
        let ready = eventually(Duration::from_secs(180), || {
            let n = self.count("ledgerhost ready");
            async move { n > before }
        })
        .await;
        assert!(ready, "host did not start:\n{}", host.log_text());
        host
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn count(&self, needle: &str) -> usize {
        self.log_text().matches(needle).count()
    }

    /// Key-value entries under `prefix` the plugin wrote.
    fn kv(&self, prefix: &str) -> BTreeMap<String, String> {
        kv_entries(&self.ws.data_dir().join("keyvalue.db"), prefix)
    }
}

/// Reads the embedded key-value file (SQLite, WAL) the host writes.
fn kv_entries(path: &Path, prefix: &str) -> BTreeMap<String, String> {
    if !path.exists() {
        return BTreeMap::new();
    }
    let conn = rusqlite::Connection::open(path).expect("open keyvalue.db");
    conn.busy_timeout(Duration::from_secs(30))
        .expect("busy timeout");
    let mut stmt = match conn
        .prepare("SELECT key, value FROM kv WHERE deleted = 0 AND substr(key, 1, length(?1)) = ?1")
    {
        Ok(s) => s,
        // The host creates the table with its first write.
        Err(_) => return BTreeMap::new(),
    };
    stmt.query_map([prefix], |r| {
        Ok((
            r.get::<_, String>(0)?,
            String::from_utf8_lossy(&r.get::<_, Vec<u8>>(1)?).into_owned(),
        ))
    })
    .expect("query kv")
    .map(|r| r.expect("kv row"))
    .collect()
}

/// The commit timestamps of `order/<table>/<key>` as numbers.
fn order_of(text: &str) -> Vec<i64> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("recorder writes integers"))
        .collect()
}

/// Per key: the newest commit timestamp the plugin saw.
fn newest_seen(orders: &BTreeMap<String, String>, table: &str) -> BTreeMap<i64, i64> {
    orders
        .iter()
        .map(|(k, v)| {
            let id: i64 = k
                .strip_prefix(&format!("order/{table}/"))
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("unexpected key {k}"));
            (id, order_of(v).into_iter().max().expect("non-empty order"))
        })
        .collect()
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
const EVERY_TYPE_INDEX: &str = "CREATE INDEX every_type_by_commit_ts ON every_type (commit_ts)";

/// a: every Spanner type, NULLs included, reaches the WASM plugin decoded through Pub/Sub.
/// b: 5 000 rows of one transaction all arrive, and later versions of a key arrive after
/// earlier ones. One emulator pair, distinct databases, topic prefixes and plugin names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spanner_rows_reach_a_wasm_plugin_through_pubsub_decoded_and_in_key_order() {
    let emu = GoogleEmulators::start().await;

    // --- a: every type ---
    let db = emu.create_database(&[EVERY_TYPE, EVERY_TYPE_INDEX]).await;
    let host_a = GoogleHost::new(
        &emu,
        &db,
        "a-",
        "[[tables]]\nname = \"every_type\"\ninterval-ms = 100\n",
        Endpoints::Explicit,
    );
    host_a.ws.install_plugin(
        "recorder",
        "rec-a",
        &recorder_manifest("rec-a", "every_type"),
    );
    // Beside it on the same host: the same events through contract 0.1 (`legacy`), through a
    // 0.2 recorder that names a subset of the columns in its own order, and a 0.2 recorder
    // naming a column the table does not have (refused).
    host_a.ws.install_plugin(
        "legacy",
        "legacy-a",
        "name = \"legacy-a\"\nworld = \"consumer\"\n[subscription]\ntable = \"every_type\"\n\
         max-wait-ms = 20\n[grants]\nkey-prefixes = [\"legacy/\"]\n",
    );
    let with_columns = |name: &str, prefix: &str, columns: &str| {
        format!(
            "name = \"{name}\"\nworld = \"consumer\"\n[subscription]\ntable = \"every_type\"\n\
             max-wait-ms = 20\ncolumns = [{columns}]\n[grants]\n\
             key-prefixes = [\"{prefix}\", \"order/\"]\nconfig = [\"prefix\"]\n[config]\n\
             prefix = \"{prefix}\"\n"
        )
    };
    const COLUMNS: [&str; 10] = [
        "num", "id", "anum", "ai", "bys", "j", "ts", "d", "f32", "aj",
    ];
    let quoted: Vec<String> = COLUMNS.iter().map(|c| format!("\"{c}\"")).collect();
    host_a.ws.install_plugin(
        "recorder",
        "rec-cols",
        &with_columns("rec-cols", "cols/", &quoted.join(", ")),
    );
    host_a.ws.install_plugin(
        "recorder",
        "rec-bad",
        &with_columns("rec-bad", "bad/", "\"num\", \"nope\""),
    );
    let mut proc_a = host_a.start_ready().await;
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
            "INSERT INTO every_type (id, commit_ts) VALUES (2, PENDING_COMMIT_TIMESTAMP())"
                .to_string(),
        ],
    )
    .await;
    let got = eventually(Duration::from_secs(120), || {
        let n = host_a.kv("rec/").len();
        async move { n >= 2 }
    })
    .await;
    assert!(
        got,
        "the plugin did not record both rows:\n{}",
        host_a.log_text()
    );
    let recs = host_a.kv("rec/");
    let full = recs
        .get(&format!("rec/every_type/1/{commit}"))
        .unwrap_or_else(|| panic!("row 1 with its event id; recorded: {recs:?}"));
    let expected_full = format!(
        "id=int64 1\nb=bool true\ni=int64 -42\nf32=float32 1.5\nf64=float64 2.25\n\
         num=numeric 12.5\ns=string héllo\nbys=bytes 00ff\nd=date 19782\n\
         ts=timestamp 1709208000123456\nj=json {{\"a\":1}}\nab=bool-array [true, null]\n\
         ai=int64-array [1, null, 3]\naf32=float32-array [1.5, null]\n\
         af64=float64-array [2.5, null]\nanum=numeric-array [1.25, null]\n\
         astr=string-array [x, null]\nabys=bytes-array [01, null]\nad=date-array [1, null]\n\
         ats=timestamp-array [1000000, null]\naj=json-array [[1], null]\n\
         commit_ts=timestamp {commit}\ndeleted=false\n"
    );
    assert_eq!(full, &expected_full, "every type decoded in the plugin");
    let nulls = recs
        .get(&format!("rec/every_type/2/{commit}"))
        .expect("row 2 recorded");
    let mut expected_nulls = String::from("id=int64 2\n");
    for c in [
        "b", "i", "f32", "f64", "num", "s", "bys", "d", "ts", "j", "ab", "ai", "af32", "af64",
        "anum", "astr", "abys", "ad", "ats", "aj",
    ] {
        expected_nulls.push_str(&format!("{c}=null\n"));
    }
    expected_nulls.push_str(&format!("commit_ts=timestamp {commit}\ndeleted=false\n"));
    assert_eq!(nulls, &expected_nulls, "NULLs arrive as NULLs");

    // The 0.1 plugin received the same events, every type and NULL alike.
    let got = eventually(Duration::from_secs(60), || {
        let n = host_a.kv("legacy/").len() + host_a.kv("cols/").len();
        async move { n >= 4 }
    })
    .await;
    assert!(
        got,
        "legacy-a and rec-cols did not record both rows:\n{}",
        host_a.log_text()
    );
    let legacy = host_a.kv("legacy/");
    assert_eq!(
        legacy.get(&format!("legacy/every_type/1/{commit}")),
        Some(&expected_full),
        "a 0.1 plugin gets every type as before; recorded: {legacy:?}"
    );
    assert_eq!(
        legacy.get(&format!("legacy/every_type/2/{commit}")),
        Some(&expected_nulls)
    );
    let log = host_a.log_text();
    assert_eq!(
        log.matches("`legacy-a` is built against ledgerhost:plugin@0.1.0, which is deprecated")
            .count(),
        1,
        "one deprecation line for the 0.1 plugin:\n{log}"
    );
    assert!(log.contains("docs/plugin-authors.md"), "{log}");
    assert!(
        !log.contains("`rec-a` is built against ledgerhost:plugin@0.1.0"),
        "no deprecation line for a 0.2 plugin"
    );

    // The 0.2 plugin that names columns gets exactly those, in its order, each value exact.
    let line_of = |text: &str, column: &str| {
        text.lines()
            .find(|l| l.split_once('=').is_some_and(|(c, _)| c == column))
            .unwrap_or_else(|| panic!("no {column} in {text}"))
            .to_string()
    };
    let cols = host_a.kv("cols/");
    let mut expected_cols_full = String::new();
    let mut expected_cols_nulls = String::new();
    for c in COLUMNS {
        expected_cols_full.push_str(&line_of(&expected_full, c));
        expected_cols_full.push('\n');
        expected_cols_nulls.push_str(&line_of(&expected_nulls, c));
        expected_cols_nulls.push('\n');
    }
    expected_cols_full.push_str("deleted=false\n");
    expected_cols_nulls.push_str("deleted=false\n");
    assert_eq!(
        cols.get(&format!("cols/every_type/1/{commit}")),
        Some(&expected_cols_full),
        "only the named columns, in the manifest's order; recorded: {cols:?}"
    );
    assert_eq!(
        cols.get(&format!("cols/every_type/2/{commit}")),
        Some(&expected_cols_nulls)
    );

    // The one naming a column the table lacks is refused, with the table's columns named.
    assert!(
        log.contains(
            "plugin `rec-bad` refused: rec-bad.toml: `subscription.columns` names `nope`, which \
             table `every_type` does not have; its columns are id, b, i, f32, f64, num, s, bys, \
             d, ts, j, ab, ai, af32, af64, anum, astr, abys, ad, ats, aj, commit_ts"
        ),
        "{log}"
    );
    assert!(
        host_a.kv("bad/").is_empty(),
        "a refused plugin receives nothing"
    );
    proc_a.kill();

    // --- b: 5 000 rows in one transaction, then later versions of some keys ---
    let db = emu.create_database(&[ORDERS, ORDERS_INDEX]).await;
    let host_b = GoogleHost::new(
        &emu,
        &db,
        "b-",
        "[[tables]]\nname = \"orders\"\ninterval-ms = 100\npage-size = 700\n",
        Endpoints::Environment,
    );
    host_b
        .ws
        .install_plugin("recorder", "rec-b", &recorder_manifest("rec-b", "orders"));
    let mut proc_b = host_b.start_ready().await;
    // PENDING_COMMIT_TIMESTAMP() is only allowed in VALUES: ten statements, one transaction,
    // inserted in reverse key order so key order must come from the keyset.
    let statements: Vec<String> = (0..10)
        .rev()
        .map(|chunk| {
            let values: Vec<String> = (chunk * 500 + 1..=(chunk + 1) * 500)
                .rev()
                .map(|id| format!("({id}, 'c{}', {id}, PENDING_COMMIT_TIMESTAMP())", id % 7))
                .collect();
            format!(
                "INSERT INTO orders (id, client, amount, commit_ts) VALUES {}",
                values.join(", ")
            )
        })
        .collect();
    let first = spanner_write(&db, &statements).await;
    // Then two later versions of every 50th key, each transaction once the previous state
    // reached the plugin (a poll publishes a row's state at its read time, so versions
    // committed between two polls would coalesce).
    for round in 0..=2 {
        if round > 0 {
            spanner_write(
                &db,
                &[format!(
                    "UPDATE orders SET amount = amount + {round}, \
                     commit_ts = PENDING_COMMIT_TIMESTAMP() WHERE MOD(id, 50) = 0"
                )],
            )
            .await;
        }
        let want = commit_times(&db, "orders").await;
        assert_eq!(want.len(), 5000);
        let arrived = eventually(Duration::from_secs(300), || {
            let done = newest_seen(&host_b.kv("order/"), "orders") == want;
            async move { done }
        })
        .await;
        let orders = host_b.kv("order/");
        assert!(
            arrived,
            "round {round}: {} of 5000 keys reached their newest version in the plugin:\n{}",
            newest_seen(&orders, "orders")
                .iter()
                .filter(|(k, v)| want.get(k) == Some(v))
                .count(),
            host_b.log_text()
        );
    }
    let orders = host_b.kv("order/");
    let recs = host_b.kv("rec/orders/");
    let firsts: BTreeSet<i64> = recs
        .keys()
        .filter(|k| k.ends_with(&format!("/{first}")))
        .map(|k| k.split('/').nth(2).unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        firsts,
        (1..=5000).collect(),
        "every row of the transaction arrived, under its event id"
    );
    for (key, text) in &orders {
        let seq = order_of(text);
        assert!(
            seq.windows(2).all(|w| w[0] <= w[1]),
            "{key} delivered out of commit order: {seq:?}"
        );
        let distinct: BTreeSet<i64> = seq.iter().copied().collect();
        let id: i64 = key.rsplit('/').next().unwrap().parse().unwrap();
        let versions = if id % 50 == 0 { 3 } else { 1 };
        assert_eq!(distinct.len(), versions, "{key}: {seq:?}");
    }
    proc_b.kill();
    // 5 000 keys in one transaction went out in requests of one ordering key each (the
    // ordering shards), as production requires, and they batched: far fewer than 5 000.
    let stats = emu.pubsub_front_stats();
    let orders: Vec<_> = stats
        .publishes
        .iter()
        .filter(|p| p.topic == "b-orders")
        .collect();
    assert!(orders.iter().all(|p| p.ordering_keys == 1), "{orders:?}");
    let messages: usize = orders.iter().map(|p| p.messages).sum();
    assert!(messages >= 5000, "{messages} messages published");
    assert!(
        orders.len() * 10 < messages,
        "{} requests for {messages} messages: publishes did not batch",
        orders.len()
    );
    emu.assert_pubsub_clean(
        "spanner_rows_reach_a_wasm_plugin_through_pubsub_decoded_and_in_key_order",
    );
}

/// The same `.wasm` and manifest, unchanged, on the embedded defaults and on Spanner +
/// Pub/Sub: the same rows in give the same recorded events (commit timestamps aside, which
/// each source assigns itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_plugin_gives_the_same_output_on_embedded_and_google_backends() {
    const ROWS: &[(i64, Option<&str>, i64)] = &[
        (1, Some("alice"), 10),
        (2, None, 20),
        (3, Some("bob"), -5),
        (4, Some("ça va"), 0),
    ];
    let manifest = std::fs::read_to_string(ledgerhost_tests::harness::plugin_manifest("recorder"))
        .expect("recorder manifest");

    // Embedded: SQLite source, embedded ledger.
    let embedded = Workspace::new();
    embedded.sql(
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, client TEXT, amount INTEGER, \
         commit_ts INTEGER);",
    );
    embedded.install_plugin("recorder", "recorder", &manifest);
    let config = embedded.write_config("[[tables]]\nname = \"orders\"\ninterval-ms = 100\n");
    let log = embedded.path().join("host.log");
    let emb = HostProcess::start(HOST_BIN.as_ref(), &config, &log);
    // The first start installs the capture triggers; rows come after it.
    let emb_ready = eventually(Duration::from_secs(120), || {
        let ready = emb.log_text().contains("ledgerhost ready");
        async move { ready }
    })
    .await;
    assert!(
        emb_ready,
        "embedded host did not start:\n{}",
        emb.log_text()
    );
    let sql_value = |c: Option<&str>| c.map_or("NULL".to_string(), |c| format!("'{c}'"));
    for (id, client, amount) in ROWS {
        embedded.sql(&format!(
            "INSERT INTO orders (id, client, amount) VALUES ({id}, {}, {amount});",
            sql_value(*client)
        ));
    }

    // Google: Spanner source, Pub/Sub ledger.
    let emu = GoogleEmulators::start().await;
    let db = emu.create_database(&[ORDERS, ORDERS_INDEX]).await;
    let google = GoogleHost::new(
        &emu,
        &db,
        "e-",
        "[[tables]]\nname = \"orders\"\ninterval-ms = 100\n",
        Endpoints::Explicit,
    );
    google.ws.install_plugin("recorder", "recorder", &manifest);
    let _goo = google.start_ready().await;
    for (id, client, amount) in ROWS {
        spanner_write(
            &db,
            &[format!(
                "INSERT INTO orders (id, client, amount, commit_ts) VALUES ({id}, {}, {amount}, \
                 PENDING_COMMIT_TIMESTAMP())",
                sql_value(*client)
            )],
        )
        .await;
    }

    // What each recorded, keyed by (key, n-th version), the commit timestamp masked.
    let normalised = |kv: BTreeMap<String, String>| -> BTreeMap<String, String> {
        let mut by_key: HashMap<String, Vec<(i64, String)>> = HashMap::new();
        for (k, v) in kv {
            let (key, ts) = k.rsplit_once('/').expect("rec/<table>/<key>/<ts>");
            let text: String = v
                .lines()
                .filter(|l| !l.starts_with("commit_ts="))
                .map(|l| format!("{l}\n"))
                .collect();
            by_key
                .entry(key.to_string())
                .or_default()
                .push((ts.parse().expect("ts"), text));
        }
        let mut out = BTreeMap::new();
        for (key, mut versions) in by_key {
            versions.sort();
            for (n, (_, text)) in versions.into_iter().enumerate() {
                out.insert(format!("{key}#{n}"), text);
            }
        }
        out
    };
    let emb_kv = || kv_entries(&embedded.data_dir().join("keyvalue.db"), "rec/");
    let inserted = eventually(Duration::from_secs(120), || {
        let (e, g) = (emb_kv().len(), google.kv("rec/").len());
        async move { e >= 4 && g >= 4 }
    })
    .await;
    assert!(
        inserted,
        "both hosts record the 4 inserts; embedded {:?}, google {:?}\n{}",
        emb_kv(),
        google.kv("rec/"),
        google.log_text()
    );
    // A later version once the first reached the plugins (a poll publishes the row's state
    // at its read time, so a version committed before the poll would coalesce).
    embedded.sql("UPDATE orders SET amount = amount * 2 WHERE id = 3;");
    spanner_write(
        &db,
        &[
            "UPDATE orders SET amount = amount * 2, commit_ts = PENDING_COMMIT_TIMESTAMP() \
           WHERE id = 3"
                .to_string(),
        ],
    )
    .await;
    let ready = eventually(Duration::from_secs(120), || {
        let (e, g) = (emb_kv().len(), google.kv("rec/").len());
        async move { e >= 5 && g >= 5 }
    })
    .await;
    assert!(
        ready,
        "both hosts record 5 versions; embedded {:?}, google {:?}\n{}",
        emb_kv(),
        google.kv("rec/"),
        google.log_text()
    );
    let e = normalised(emb_kv());
    let g = normalised(google.kv("rec/"));
    assert_eq!(e.len(), 5);
    assert_eq!(
        e["rec/orders/2#0"],
        "id=int64 2\nclient=null\namount=int64 20\ndeleted=false\n"
    );
    assert_eq!(
        e["rec/orders/3#1"],
        "id=int64 3\nclient=string bob\namount=int64 -10\ndeleted=false\n"
    );
    assert_eq!(e, g, "same events in, same plugin output on both backends");
    emu.assert_pubsub_clean(
        "the_same_plugin_gives_the_same_output_on_embedded_and_google_backends",
    );
}

/// Kills and restarts the Pub/Sub emulator during a load (it comes back empty: the host
/// re-creates topic and subscription and re-publishes what the lost topic held), then
/// SIGKILLs the host and restarts it. Every row's newest version reaches the plugin;
/// duplicates carry the same event id; each key's deliveries stay in commit order except
/// for replays from the start point, which the host logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_across_a_pubsub_emulator_restart_and_a_host_sigkill() {
    const ROWS: i64 = 2000;
    let mut emu = GoogleEmulators::start().await;
    let db = emu.create_database(&[ORDERS, ORDERS_INDEX]).await;
    let host = GoogleHost::new(
        &emu,
        &db,
        "c-",
        "[[tables]]\nname = \"orders\"\ninterval-ms = 100\n",
        Endpoints::Explicit,
    );
    host.ws
        .install_plugin("recorder", "rec-c", &recorder_manifest("rec-c", "orders"));
    let mut proc = host.start_ready().await;

    let writer_db = db.clone();
    // Its own thread and runtime: the Spanner transaction runner's futures are not `Send`.
    let writer = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("writer runtime");
        rt.block_on(async move {
            let mut id = 1;
            while id <= ROWS {
                let mut stmts = Vec::new();
                // A later version of an earlier key in each transaction, first: once a
                // statement wrote a pending commit timestamp, Spanner refuses any later
                // statement of the transaction that must read the commit-timestamp index
                // (an UPDATE of the table does), while an INSERT does not.
                if id > 40 {
                    stmts.push(format!(
                        "UPDATE orders SET amount = amount + 1, commit_ts = PENDING_COMMIT_TIMESTAMP() \
                         WHERE id = {}",
                        id / 2
                    ));
                }
                let values: Vec<String> = (id..id + 40)
                    .map(|i| format!("({i}, 'c', 0, PENDING_COMMIT_TIMESTAMP())"))
                    .collect();
                stmts.push(format!(
                    "INSERT INTO orders (id, client, amount, commit_ts) VALUES {}",
                    values.join(", ")
                ));
                spanner_write(&writer_db, &stmts).await;
                id += 40;
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
        })
    });

    // Let some rows flow, then take Pub/Sub away and bring it back empty.
    let flowing = eventually(Duration::from_secs(120), || {
        let n = host.kv("rec/").len();
        async move { n >= 200 }
    })
    .await;
    assert!(flowing, "rows did not start flowing:\n{}", host.log_text());
    emu.stop_pubsub();
    tokio::time::sleep(Duration::from_secs(2)).await;
    emu.start_pubsub();
    let republished = eventually(Duration::from_secs(120), || {
        let n = host.count("re-publishing from the start point");
        async move { n >= 1 }
    })
    .await;
    assert!(
        republished,
        "the host did not notice the lost topic:\n{}",
        host.log_text()
    );
    // Then a crash of the host itself, mid-load.
    tokio::time::sleep(Duration::from_secs(2)).await;
    proc.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _proc = host.start_ready().await;
    while !writer.is_finished() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    writer.join().expect("writer");

    let want = commit_times(&db, "orders").await;
    assert_eq!(want.len() as i64, ROWS);
    let done = eventually(Duration::from_secs(300), || {
        let done = newest_seen(&host.kv("order/"), "orders") == want;
        async move { done }
    })
    .await;
    let orders = host.kv("order/");
    let seen = newest_seen(&orders, "orders");
    let missing: Vec<_> = want
        .iter()
        .filter(|(k, v)| seen.get(k) != Some(v))
        .take(10)
        .collect();
    assert!(
        done,
        "keys whose newest version never reached the plugin (first 10): {missing:?}\n{}",
        host.log_text()
    );

    // Duplicates carry the same event id: one `rec/` entry per distinct version delivered.
    let recs = host.kv("rec/orders/");
    let mut deliveries = 0;
    let mut versions = BTreeSet::new();
    let replays = host.count("re-publishing from the start point");
    for (key, text) in &orders {
        let id = key.rsplit('/').next().unwrap();
        let seq = order_of(text);
        deliveries += seq.len();
        let backwards = seq.windows(2).filter(|w| w[0] > w[1]).count();
        assert!(
            backwards <= replays,
            "{key} went back in commit order {backwards} times with {replays} replays: {seq:?}"
        );
        for ts in seq {
            versions.insert(format!("rec/orders/{id}/{ts}"));
        }
    }
    let rec_ids: BTreeSet<String> = recs.keys().cloned().collect();
    assert_eq!(
        rec_ids, versions,
        "every delivery was recorded under the event id of its (key, commit timestamp)"
    );
    eprintln!(
        "pubsub restart + host SIGKILL: {} distinct versions, {deliveries} deliveries ({} duplicates), {replays} replays",
        versions.len(),
        deliveries - versions.len()
    );
    emu.assert_pubsub_clean("nothing_is_lost_across_a_pubsub_emulator_restart_and_a_host_sigkill");
}

/// Two hosts on the same configuration: one polls the table (its lease row in Spanner says
/// which); SIGKILL it and the other takes over once the lease expires, resuming from the
/// watermark stored with the lease and losing no row (the dead host's unacked deliveries
/// come back after their ack deadline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_share_the_table_through_the_spanner_lease_and_fail_over() {
    let emu = GoogleEmulators::start().await;
    let db = emu.create_database(&[ORDERS, ORDERS_INDEX]).await;
    let tables = "[[tables]]\nname = \"orders\"\ninterval-ms = 100\n";
    let a = GoogleHost::new(&emu, &db, "d-", tables, Endpoints::Environment);
    let b = GoogleHost::new(&emu, &db, "d-", tables, Endpoints::Environment);
    let manifest = recorder_manifest("rec-d", "orders");
    a.ws.install_plugin("recorder", "rec-d", &manifest);
    b.ws.install_plugin("recorder", "rec-d", &manifest);
    let proc_a = a.start_ready().await;
    let proc_b = b.start_ready().await;

    let db_ref = &db;
    let holder = move || async move {
        use google_cloud_spanner::statement::Statement;
        let source = ledgerhost_source::spanner::SpannerSource::connect(db_ref.clone())
            .await
            .expect("connect");
        let mut rs = source
            .client()
            .single_use()
            .build()
            .execute_query(
                Statement::builder(
                    "SELECT holder FROM ledgerhost_leases WHERE name = 'poller/orders'",
                )
                .build(),
            )
            .await
            .ok()?;
        let row = rs.next().await?.ok()?;
        row.get::<String>(0).ok()
    };
    let leased = eventually(Duration::from_secs(60), move || async move {
        holder().await.is_some()
    })
    .await;
    assert!(leased, "no host took the poller lease");

    let write = |from: i64| {
        let db = db.clone();
        async move {
            for chunk in 0..5 {
                let values: Vec<String> = (from + chunk * 20..from + (chunk + 1) * 20)
                    .map(|i| format!("({i}, 'c', {i}, PENDING_COMMIT_TIMESTAMP())"))
                    .collect();
                spanner_write(
                    &db,
                    &[format!(
                        "INSERT INTO orders (id, client, amount, commit_ts) VALUES {}",
                        values.join(", ")
                    )],
                )
                .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    write(1).await;
    let union = || {
        let mut all = a.kv("order/");
        for (k, v) in b.kv("order/") {
            all.entry(k).or_default().push_str(&v);
        }
        newest_seen(&all, "orders")
    };
    let want = commit_times(&db, "orders").await;
    let first = eventually(Duration::from_secs(120), || {
        let done = union() == want;
        async move { done }
    })
    .await;
    assert!(first, "the first 100 rows did not arrive");

    let leader_id = holder().await.expect("lease row");
    let took = |h: &GoogleHost| h.count("took the poller lease");
    assert_eq!(
        took(&a) + took(&b),
        1,
        "exactly one host polls the table; logs:\nA:\n{}\nB:\n{}",
        a.log_text(),
        b.log_text()
    );
    let (mut leader, survivor, survivor_host) = if took(&a) == 1 {
        (proc_a, proc_b, &b)
    } else {
        (proc_b, proc_a, &a)
    };
    assert!(
        leader_id.ends_with(&format!("-{}", leader.group.pid())),
        "the lease row names the polling host: {leader_id} (pid {})",
        leader.group.pid()
    );

    leader.kill();
    let killed = Instant::now();
    write(101).await;
    let took_over = eventually(Duration::from_secs(60), || {
        let n = took(survivor_host);
        async move { n == 1 }
    })
    .await;
    assert!(
        took_over,
        "the surviving host never took the lease:\n{}",
        survivor_host.log_text()
    );
    eprintln!(
        "lease takeover observed {:?} after the SIGKILL (lease ttl 2 s)",
        killed.elapsed()
    );
    // It resumes where the dead holder got to (the watermark stored with the lease), not
    // from the table's start.
    let resumed = eventually(Duration::from_secs(30), || {
        let n = survivor_host.count("resuming from the watermark stored with the lease");
        async move { n == 1 }
    })
    .await;
    assert!(
        resumed && survivor_host.count("no watermark yet: bootstrapping") == 0,
        "the survivor did not resume from the lease's watermark:\n{}",
        survivor_host.log_text()
    );
    let new_holder = holder().await.expect("lease row");
    assert!(
        new_holder.ends_with(&format!("-{}", survivor.group.pid())),
        "the lease moved to the survivor: {new_holder}"
    );
    let want = commit_times(&db, "orders").await;
    assert_eq!(want.len(), 200);
    let all = eventually(Duration::from_secs(120), || {
        let done = union() == want;
        async move { done }
    })
    .await;
    let seen = union();
    let missing: Vec<_> = want.keys().filter(|k| !seen.contains_key(k)).collect();
    assert!(
        all,
        "rows lost across the failover: {} of 200 arrived; missing {missing:?}\nsurvivor:\n{}",
        seen.len(),
        survivor_host.log_text()
    );
    emu.assert_pubsub_clean("two_hosts_share_the_table_through_the_spanner_lease_and_fail_over");
}

/// Production scans a table at every poll unless an index leads with its commit-timestamp
/// column: a table without one stops the host at start with the `CREATE INDEX` to run;
/// with `[source] missing-commit-index = "warn"` (here through its environment override)
/// the host starts, says so, and polls the table by scans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spanner_table_without_a_commit_timestamp_index_is_refused_unless_warned() {
    let emu = GoogleEmulators::start().await;
    let db = emu.create_database(&[ORDERS]).await;
    let tables = "[[tables]]\nname = \"orders\"\ninterval-ms = 100\n";
    let ddl = "CREATE INDEX `orders_by_commit_ts` ON `orders` (`commit_ts`)";

    let refused = GoogleHost::new(&emu, &db, "i-", tables, Endpoints::Explicit);
    let mut proc = refused.start();
    let said = eventually(Duration::from_secs(120), || {
        let log = refused.log_text();
        async move { log.contains(ddl) }
    })
    .await;
    // Signal 0 only checks the process: this waits for the host to exit on its own.
    let status = proc.group.signal_and_wait("0", Duration::from_secs(60));
    let log = refused.log_text();
    assert!(said, "the refusal names the DDL:\n{log}");
    assert!(
        log.contains("cannot be captured") && !log.contains("ledgerhost ready"),
        "the host does not start without the index:\n{log}"
    );
    assert!(
        status.is_some_and(|s| !s.success()),
        "the host exits with an error: {status:?}\n{log}"
    );

    let mut warned = GoogleHost::new(&emu, &db, "w-", tables, Endpoints::Explicit);
    warned.env.push((
        "LEDGERHOST__SOURCE__MISSING_COMMIT_INDEX".into(),
        "warn".into(),
    ));
    warned
        .ws
        .install_plugin("recorder", "rec-w", &recorder_manifest("rec-w", "orders"));
    let _proc = warned.start_ready().await;
    let log = warned.log_text();
    assert!(
        log.contains(ddl) && log.contains("polling by full scans"),
        "the host warns with the DDL:\n{log}"
    );
    spanner_write(
        &db,
        &[
            "INSERT INTO orders (id, client, amount, commit_ts) VALUES (1, 'c', 1, \
           PENDING_COMMIT_TIMESTAMP())"
                .to_string(),
        ],
    )
    .await;
    let arrived = eventually(Duration::from_secs(120), || {
        let n = warned.kv("rec/").len();
        async move { n == 1 }
    })
    .await;
    assert!(arrived, "the row arrives:\n{}", warned.log_text());
    emu.assert_pubsub_clean(
        "a_spanner_table_without_a_commit_timestamp_index_is_refused_unless_warned",
    );
}
