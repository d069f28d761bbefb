//! The embedded pipeline end to end: SQLite source → poller → embedded ledger → dispatcher →
//! WASM plugin, with the real host (in-process, or as a child process that gets SIGKILLed).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ledgerhost::{Config, Host};
use ledgerhost_core::ledger::{Delivery, Ledger, SubscriptionSpec, attr};
use ledgerhost_ledger::embedded::{EmbeddedLedger, EmbeddedOptions};
use ledgerhost_tests::harness::eventually;
use ledgerhost_tests::harness::host::{HostProcess, Workspace};

const ORDERS: &str = "CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    client_id TEXT NOT NULL,
    amount INTEGER NOT NULL,
    poison BOOLEAN NOT NULL DEFAULT 0,
    commit_ts INTEGER
);";

const TABLES: &str = "[[tables]]\nname = \"orders\"\ninterval-ms = 50\npage-size = 700\n";

/// The example filter with threshold 0: republishes every event it sees, in the order it
/// sees them, onto `seen-orders` — the test's window on what the plugin received.
fn echo_manifest(batch: usize) -> String {
    format!(
        "name = \"echo\"\nworld = \"consumer\"\n[subscription]\ntable = \"orders\"\n\
         batch-size = {batch}\nmax-wait-ms = 20\navro = true\nattributes = true\n\
         [grants]\ntopics = [\"orders-high-value\"]\n\
         config = [\"threshold\"]\n[config]\nthreshold = \"0\"\n"
    )
}

const HOST_BIN: &str = env!("CARGO_BIN_EXE_ledgerhost-under-test");

const SEEN_TOPIC: &str = "orders-high-value";

/// Everything on `topic` for a fresh subscription, acked, in delivery order.
async fn drain(
    ledger: &Arc<dyn Ledger>,
    sub: &str,
    want: usize,
    timeout: Duration,
) -> Vec<Delivery> {
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + timeout;
    while out.len() < want && std::time::Instant::now() < deadline {
        let batch = ledger
            .pull(sub, 1000, Duration::from_millis(200))
            .await
            .expect("pull");
        if batch.is_empty() {
            continue;
        }
        let ids: Vec<String> = batch.iter().map(|d| d.ack_id.clone()).collect();
        ledger.ack(sub, &ids).await.expect("ack");
        out.extend(batch);
    }
    out
}

fn spec(name: &str, topic: &str) -> SubscriptionSpec {
    SubscriptionSpec {
        name: name.into(),
        topic: topic.into(),
        attribute_filter: BTreeMap::new(),
        ack_deadline: Duration::from_secs(30),
        dead_letter_topic: format!("{name}-dead"),
    }
}

fn key_of(d: &Delivery) -> i64 {
    ledgerhost_tests::harness::event_key(&d.message)
        .parse()
        .expect("integer key")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_rows_in_one_transaction_arrive_in_key_order() {
    let ws = Workspace::new();
    ws.sql(ORDERS);
    ws.install_plugin("filter", "echo", &echo_manifest(256));
    let config = Config::load(&ws.write_config(TABLES)).unwrap();
    let source_topic = config.topic_for("orders");
    let host = Host::start(config).await.expect("host starts");
    let ledger = host.backends.ledger.clone();
    ledger
        .ensure_subscription(&spec("test-seen", SEEN_TOPIC))
        .await
        .unwrap();
    ledger
        .ensure_subscription(&spec("test-source", &source_topic))
        .await
        .unwrap();

    let mut sql = String::from("BEGIN;");
    for id in (1..=10_000).rev() {
        // Inserted in reverse so the delivery order must come from the keyset, not rowid.
        sql.push_str(&format!(
            "INSERT INTO orders (id, client_id, amount) VALUES ({id}, 'c{}', {});",
            id % 7,
            id * 3
        ));
    }
    sql.push_str("COMMIT;");
    ws.sql(&sql);

    let seen = drain(&ledger, "test-seen", 10_000, Duration::from_secs(120)).await;
    assert_eq!(
        seen.len(),
        10_000,
        "every row of the transaction arrived once"
    );
    let ts: std::collections::BTreeSet<&String> = seen
        .iter()
        .map(|d| &d.message.attributes[attr::COMMIT_TS])
        .collect();
    assert_eq!(ts.len(), 1, "one transaction, one commit timestamp");
    let keys: Vec<i64> = seen.iter().map(key_of).collect();
    assert_eq!(
        keys,
        (1..=10_000).collect::<Vec<_>>(),
        "delivered in key order"
    );
    // The plugin gets only the attributes it cannot derive (contract 0.2) and the SDK
    // restores the standard four when it republishes: each derived message carries exactly
    // the attributes of the ledger message it came from.
    let source = drain(&ledger, "test-source", 10_000, Duration::from_secs(60)).await;
    let by_id: HashMap<&str, &BTreeMap<String, String>> = source
        .iter()
        .map(|d| {
            (
                d.message.attributes[attr::EVENT_ID].as_str(),
                &d.message.attributes,
            )
        })
        .collect();
    assert_eq!(by_id.len(), 10_000, "every row once on the source topic");
    for d in &seen {
        let id = &d.message.attributes[attr::EVENT_ID];
        assert_eq!(
            Some(&&d.message.attributes),
            by_id.get(id.as_str()),
            "attributes of {id}"
        );
        assert_eq!(d.message.attributes.len(), 4, "{:?}", d.message.attributes);
    }
    assert!(host.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_dead_lettered_with_its_reason_and_the_rest_flows() {
    let ws = Workspace::new();
    ws.sql(ORDERS);
    ws.install_plugin(
        "trapper",
        "trapper",
        "name = \"trapper\"\nworld = \"consumer\"\n[subscription]\ntable = \"orders\"\n\
         batch-size = 16\nmax-wait-ms = 20\nmax-attempts = 3\nbackoff-initial-ms = 20\n\
         backoff-max-ms = 100\n",
    );
    let config = Config::load(&ws.write_config(TABLES)).unwrap();
    let host = Host::start(config).await.expect("host starts");
    let ledger = host.backends.ledger.clone();
    ledger
        .ensure_subscription(&spec("test-dead", "dead-letter-trapper"))
        .await
        .unwrap();

    let mut sql = String::from("BEGIN;");
    for id in 1..=200 {
        let poison = i32::from(id == 57);
        sql.push_str(&format!(
            "INSERT INTO orders (id, client_id, amount, poison) VALUES ({id}, 'c', 1, {poison});"
        ));
    }
    sql.push_str("COMMIT;");
    ws.sql(&sql);
    // More rows after the poison one, in later transactions: they must keep flowing.
    for id in 201..=300 {
        ws.sql(&format!(
            "INSERT INTO orders (id, client_id, amount) VALUES ({id}, 'c', 1);"
        ));
    }

    let dead = drain(&ledger, "test-dead", 1, Duration::from_secs(60)).await;
    assert_eq!(dead.len(), 1, "exactly the poison event is dead-lettered");
    assert_eq!(key_of(&dead[0]), 57);
    let reason = &dead[0].message.attributes[attr::DEAD_LETTER_REASON];
    assert!(
        reason.contains("gave up after 3 attempts"),
        "reason: {reason}"
    );
    assert_eq!(
        dead[0].message.attributes[attr::DEAD_LETTER_SUBSCRIPTION],
        "plugin-trapper"
    );

    let stats = host.metrics.plugin("trapper");
    let settled = eventually(Duration::from_secs(60), || {
        let stats = stats.clone();
        async move { stats.acked.load(Ordering::Relaxed) >= 300 }
    })
    .await;
    assert!(
        settled,
        "all 300 deliveries settled (299 handled, 1 dead-lettered)"
    );
    assert_eq!(stats.dead_lettered.load(Ordering::Relaxed), 1);
    // No second dead letter shows up later.
    assert!(
        drain(&ledger, "test-dead", 1, Duration::from_millis(500))
            .await
            .is_empty()
    );
    assert!(host.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_watermark_is_recovered_from_the_ledger_without_republishing_the_table() {
    let ws = Workspace::new();
    ws.sql(ORDERS);
    ws.install_plugin("filter", "echo", &echo_manifest(64));
    let config_path = ws.write_config(TABLES);

    let host = Host::start(Config::load(&config_path).unwrap())
        .await
        .unwrap();
    host.backends
        .ledger
        .ensure_subscription(&spec("test-seen", SEEN_TOPIC))
        .await
        .unwrap();
    // Many small transactions spread over many polls: many distinct commit timestamps.
    for chunk in 0..50 {
        let mut sql = String::from("BEGIN;");
        for i in 0..20 {
            let id = chunk * 20 + i + 1;
            sql.push_str(&format!(
                "INSERT INTO orders (id, client_id, amount) VALUES ({id}, 'c', 1);"
            ));
        }
        sql.push_str("COMMIT;");
        ws.sql(&sql);
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let first = drain(
        &host.backends.ledger,
        "test-seen",
        1000,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(first.len(), 1000);
    let table = host.metrics.table("orders");
    let polled_first = table.rows_polled.load(Ordering::Relaxed);
    assert_eq!(polled_first, 1000);
    assert!(host.shutdown().await);

    // On the embedded ledger the watermark lives in the ledger, written with the page it
    // covers (no watermark file): lose it there.
    let ledger_db = ws.data_dir().join("ledger/ledger.db");
    let lost = rusqlite::Connection::open(&ledger_db)
        .unwrap()
        .execute("DELETE FROM progress WHERE tbl = 'orders'", [])
        .unwrap();
    assert_eq!(lost, 1, "the ledger held the poller's progress");
    // The lease row keeps the watermark too (where a replica resumes first); lose that copy
    // as well, so only the ledger can tell.
    ws.sql("UPDATE _ledgerhost_leases SET progress = NULL;");

    let host = Host::start(Config::load(&config_path).unwrap())
        .await
        .unwrap();
    for id in 1001..=1010 {
        ws.sql(&format!(
            "INSERT INTO orders (id, client_id, amount) VALUES ({id}, 'c', 1);"
        ));
    }
    let table = host.metrics.table("orders");
    let caught_up = eventually(Duration::from_secs(30), || {
        let table = table.clone();
        async move {
            table.watermark.load(Ordering::Relaxed) > 0
                && table.rows_polled.load(Ordering::Relaxed) >= 10
        }
    })
    .await;
    assert!(caught_up, "the restarted poller published the new rows");
    let second = drain(
        &host.backends.ledger,
        "test-seen",
        usize::MAX,
        Duration::from_secs(3),
    )
    .await;
    let new_keys: std::collections::BTreeSet<i64> = second.iter().map(key_of).collect();
    assert!(
        (1001..=1010).all(|k| new_keys.contains(&k)),
        "new rows delivered"
    );
    let republished = table.rows_polled.load(Ordering::Relaxed) - 10;
    assert!(
        republished < 100,
        "recovery republished {republished} old rows; only the last commit timestamp's rows may be"
    );
    assert!(host.shutdown().await);
}

/// Writes `total` orders in transactions of `per_tx` rows and updates earlier rows as it goes,
/// so keys get several versions.
fn load(db: &std::path::Path, total: i64, per_tx: i64) {
    let mut conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    let mut id = 1;
    while id <= total {
        let tx = conn.transaction().unwrap();
        for _ in 0..per_tx {
            if id > total {
                break;
            }
            tx.execute(
                "INSERT INTO orders (id, client_id, amount) VALUES (?1, 'c', 0)",
                [id],
            )
            .unwrap();
            if id % 10 == 0 {
                // A later version of an earlier key.
                tx.execute(
                    "UPDATE orders SET amount = amount + 1 WHERE id = ?1",
                    [id / 2],
                )
                .unwrap();
            }
            id += 1;
        }
        tx.commit().unwrap();
        std::thread::sleep(Duration::from_millis(40));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing_and_keeps_key_order() {
    const ROWS: i64 = 50_000;
    let ws = Workspace::new();
    ws.sql(ORDERS);
    ws.install_plugin("filter", "echo", &echo_manifest(512));
    let config = ws.write_config(&TABLES.replace("page-size = 700", "page-size = 5000"));
    let log = ws.path().join("host.log");

    // First start installs the capture triggers; the test's subscription must exist before
    // anything is echoed, so create it with the host stopped.
    let mut host = HostProcess::start(HOST_BIN.as_ref(), &config, &log);
    let ledger_dir = ws.data_dir().join("ledger");
    let ready = eventually(Duration::from_secs(60), || {
        let log = log.clone();
        async move {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("ledgerhost ready")
        }
    })
    .await;
    assert!(ready, "host did not start:\n{}", host.log_text());
    host.kill();
    {
        let ledger = EmbeddedLedger::open(&ledger_dir, EmbeddedOptions::default()).unwrap();
        ledger.ensure_topic(SEEN_TOPIC).await.unwrap();
        ledger
            .ensure_subscription(&spec("test-seen", SEEN_TOPIC))
            .await
            .unwrap();
    }

    let db = ws.db();
    let writer = std::thread::spawn(move || load(&db, ROWS, 250));
    let mut kills = 0;
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    while !writer.is_finished() || kills < 5 {
        host = HostProcess::start(HOST_BIN.as_ref(), &config, &log);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tokio::time::sleep(Duration::from_millis(300 + rng % 1500)).await;
        host.kill();
        kills += 1;
    }
    writer.join().expect("writer");

    // A last, in-process run finishes the job while the test reads the plugin's output.
    let source_rows: HashMap<i64, (i64, i64)> = {
        let conn = rusqlite::Connection::open(ws.db()).unwrap();
        let mut stmt = conn
            .prepare("SELECT id, commit_ts, amount FROM orders")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(source_rows.len() as i64, ROWS);
    let host = Host::start(Config::load(&config).unwrap()).await.unwrap();
    let ledger = host.backends.ledger.clone();
    let decoder = ledgerhost_avro::Decoder::new();
    let mut latest: HashMap<i64, (i64, i64)> = HashMap::new();
    let mut last_ts: HashMap<i64, i64> = HashMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while latest != source_rows && std::time::Instant::now() < deadline {
        for d in drain(&ledger, "test-seen", 1, Duration::from_secs(1)).await {
            let event = decoder
                .decode_message(&d.message)
                .expect("echoed events decode");
            let id = key_of(&d);
            let amount = match event.get("amount") {
                Some(ledgerhost_core::Value::Int64(a)) => *a,
                other => panic!("amount: {other:?}"),
            };
            let prev = last_ts.insert(id, event.commit_ts).unwrap_or(i64::MIN);
            assert!(
                event.commit_ts >= prev,
                "key {id} seen out of order: {} after {prev}",
                event.commit_ts
            );
            latest.insert(id, (event.commit_ts, amount));
        }
    }
    assert!(host.shutdown().await);
    assert_eq!(
        latest.len() as i64,
        ROWS,
        "every row reached the plugin's sink"
    );
    assert_eq!(
        latest, source_rows,
        "the newest version of every row is in the sink"
    );
    assert!(kills >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_while_running_follow_compatible_and_stop_on_incompatible() {
    let ws = Workspace::new();
    ws.sql(ORDERS);
    let config = Config::load(&ws.write_config(TABLES)).unwrap();
    let topic = config.topic_for("orders");
    let host = Host::start(config).await.expect("host starts");
    let ledger = host.backends.ledger.clone();
    ledger
        .ensure_subscription(&spec("test-raw", &topic))
        .await
        .unwrap();
    let decoder = ledgerhost_avro::Decoder::new();
    let decode = |d: &Delivery| decoder.decode_message(&d.message).expect("decodes");
    let field_names = |e: &ledgerhost_core::Event| -> Vec<String> {
        e.fields.iter().map(|f| f.name.to_string()).collect()
    };

    ws.sql("INSERT INTO orders (id, client_id, amount) VALUES (1, 'a', 10);");
    let before = drain(&ledger, "test-raw", 1, Duration::from_secs(30)).await;
    assert_eq!(before.len(), 1);
    let before = decode(&before[0]);
    assert!(!field_names(&before).contains(&"note".to_string()));

    // Compatible: a nullable column added while running is published with the new schema.
    ws.sql(
        "ALTER TABLE orders ADD COLUMN note TEXT; \
         INSERT INTO orders (id, client_id, amount, note) VALUES (2, 'a', 20, 'gift');",
    );
    let after = drain(&ledger, "test-raw", 1, Duration::from_secs(30)).await;
    assert_eq!(after.len(), 1, "the row written after ADD COLUMN arrived");
    let fingerprint_attr = after[0].message.attributes[attr::SCHEMA_FINGERPRINT].clone();
    let after = decode(&after[0]);
    assert_ne!(
        after.schema_fingerprint, before.schema_fingerprint,
        "a new schema, a new fingerprint"
    );
    assert_eq!(
        fingerprint_attr, after.schema_fingerprint,
        "the attribute names the schema inside the record"
    );
    let note = after
        .fields
        .iter()
        .find(|f| &*f.name == "note")
        .expect("note");
    assert_eq!(note.value, ledgerhost_core::Value::String("gift".into()));

    // Incompatible: dropping a NOT NULL column stops the table with an error naming it.
    ws.sql(
        "ALTER TABLE orders DROP COLUMN amount; \
         INSERT INTO orders (id, client_id) VALUES (3, 'a');",
    );
    let table = host.metrics.table("orders");
    let stopped = eventually(Duration::from_secs(30), || {
        let table = table.clone();
        async move { table.stopped.lock().unwrap().is_some() }
    })
    .await;
    assert!(stopped, "the poller stopped the table");
    let reason = table.stopped.lock().unwrap().clone().unwrap();
    assert!(
        reason.contains("orders") && reason.contains("amount") && reason.contains("NOT NULL"),
        "the error names the table, the column and the problem: {reason}"
    );
    assert!(
        drain(&ledger, "test-raw", 1, Duration::from_millis(500))
            .await
            .is_empty(),
        "nothing was published with the incompatible schema"
    );
    assert!(host.shutdown().await);
}

/// Aborts the real binary at each named fault point of a poll (`LEDGERHOST_FAULT`, see
/// `host/ledgerhost/src/fault.rs`) in the middle of a multi-page snapshot, restarts it
/// without the fault and checks on the embedded ledger that every row version is on the
/// topic and that at most one page (700 rows) was published twice (duplicates counted by
/// event id). The progress goes in the page's own transaction, so the resumed poll starts
/// after the last durable page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_at_each_fault_point_loses_no_row_and_republishes_at_most_one_page() {
    const ROWS: i64 = 5_000;
    const PAGE: usize = 700;
    for point in [
        "poll.before-publish@3",
        "poll.after-publish@3",
        "poll.after-watermark@1",
    ] {
        let ws = Workspace::new();
        ws.sql(ORDERS);
        {
            let mut conn = rusqlite::Connection::open(ws.db()).unwrap();
            let tx = conn.transaction().unwrap();
            for id in 1..=ROWS {
                tx.execute(
                    "INSERT INTO orders (id, client_id, amount) VALUES (?1, 'c', 0)",
                    [id],
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
        let config = ws.write_config(TABLES);
        let log = ws.path().join("host.log");
        let mut host = HostProcess::start_with_env(
            HOST_BIN.as_ref(),
            &config,
            &log,
            &[("LEDGERHOST_FAULT".into(), point.into())],
        );
        let status = host.group.wait(Duration::from_secs(120));
        assert!(
            status.is_some_and(|s| !s.success()),
            "{point}: the host did not abort: {status:?}\n{}",
            host.log_text()
        );
        assert!(
            host.log_text().contains("fault injection: aborting at"),
            "{point}: {}",
            host.log_text()
        );
        if point.starts_with("poll.after-watermark") {
            // A second poll with new rows, so the restart has something after W to publish.
            ws.sql("UPDATE orders SET amount = 1 WHERE id <= 10;");
        }
        let mut host = HostProcess::start(HOST_BIN.as_ref(), &config, &log);
        let want = if point.starts_with("poll.after-watermark") {
            ROWS as usize + 10
        } else {
            ROWS as usize
        };
        let topic = Config::load(&config).unwrap().topic_for("orders");
        let ledger_dir = ws.data_dir().join("ledger");
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let (ids, done) = loop {
            let ids = event_ids(&ledger_dir, &topic).await;
            let n = ids.iter().collect::<std::collections::BTreeSet<_>>().len();
            if n >= want || std::time::Instant::now() >= deadline {
                break (ids, n >= want);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        host.kill();
        let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
        let source: usize = {
            let conn = rusqlite::Connection::open(ws.db()).unwrap();
            conn.query_row("SELECT COUNT(*) FROM orders", [], |r| r.get::<_, i64>(0))
                .unwrap() as usize
        };
        assert!(
            done && distinct.len() == want,
            "{point}: {} distinct events on the topic, want {want} ({source} rows)\n{}",
            distinct.len(),
            host.log_text()
        );
        let duplicates = ids.len() - distinct.len();
        eprintln!("{point}: {want} events, {duplicates} published twice");
        assert!(
            duplicates <= PAGE,
            "{point}: {duplicates} events published twice, more than one page ({PAGE})"
        );
    }
}

/// The event ids of every message retained on `topic` of the embedded ledger in `dir`, in
/// publish order (read from a second connection to the ledger file).
pub(super) async fn event_ids(dir: &std::path::Path, topic: &str) -> Vec<String> {
    let ledger = EmbeddedLedger::open(dir, EmbeddedOptions::default()).unwrap();
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = ledger.read_retained(topic, after, 10_000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        all.extend(
            page.into_iter()
                .map(|r| r.message.attributes[attr::EVENT_ID].clone()),
        );
    }
    all
}
