//! K instances per plugin (`subscription.instances`) through the real host on the embedded
//! pipeline: each key's order under retries, a hot swap of all K, a trap in one instance;
//! and the runtime's `Instances`: a trap rebuilds only the instance that trapped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ledgerhost::{Config, Host};
use ledgerhost_core::Disposition;
use ledgerhost_core::capabilities::KeyValue;
use ledgerhost_core::ledger::{Ledger, SubscriptionSpec, attr};
use ledgerhost_runtime::{CallError, Instances};
use ledgerhost_tests::harness::host::Workspace;
use ledgerhost_tests::harness::{eventually, plugin_dir, plugin_manifest, plugin_wasm};

const ORDERS: &str = "CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    amount INTEGER NOT NULL,
    flaky BOOLEAN NOT NULL DEFAULT 0,
    poison BOOLEAN NOT NULL DEFAULT 0,
    commit_ts INTEGER
);";

/// The primary key as ordering key, so the sequencer's per-key hold is the host's.
const CONFIG: &str = "[ledger]\nordering = \"key\"\n\n[[tables]]\nname = \"orders\"\n\
                      interval-ms = 50\npage-size = 500\n";

fn spec(name: &str, topic: &str) -> SubscriptionSpec {
    SubscriptionSpec {
        name: name.into(),
        topic: topic.into(),
        attribute_filter: BTreeMap::new(),
        ack_deadline: Duration::from_secs(30),
        dead_letter_topic: format!("{name}-dead"),
    }
}

fn sequencer_manifest() -> String {
    let text = std::fs::read_to_string(plugin_manifest("sequencer")).expect("sequencer manifest");
    assert!(text.contains("instances = 3"), "{text}");
    text
}

/// Every message on the test subscription `sub` until `want` arrived: (row id, commit ts).
async fn published(ledger: &Arc<dyn Ledger>, sub: &str, want: usize) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while out.len() < want && std::time::Instant::now() < deadline {
        let batch = ledger
            .pull(sub, 1000, Duration::from_millis(200))
            .await
            .expect("pull");
        let ids: Vec<String> = batch.iter().map(|d| d.ack_id.clone()).collect();
        if !ids.is_empty() {
            ledger.ack(sub, &ids).await.expect("ack");
        }
        for d in batch {
            let id = ledgerhost_tests::harness::event_key(&d.message)
                .parse()
                .expect("integer key");
            let ts = d.message.attributes[attr::COMMIT_TS]
                .parse()
                .expect("commit ts");
            out.push((id, ts));
        }
    }
    out
}

/// What the sequencer recorded: row id → the commit times it acked, in order.
async fn recorded(kv: &Arc<dyn KeyValue>) -> BTreeMap<i64, Vec<i64>> {
    let mut out = BTreeMap::new();
    for key in kv.list_keys("order/orders/").await.expect("list") {
        let id: i64 = key["order/orders/".len()..].parse().expect("row id");
        let text =
            String::from_utf8(kv.get(&key).await.expect("get").expect("value")).expect("text");
        let ts = text
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().expect("commit ts"))
            .collect();
        out.insert(id, ts);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_keep_each_keys_order_over_many_keys_with_retries() {
    const KEYS: i64 = 150;
    const ROUNDS: i64 = 5;
    let ws = Workspace::new();
    ws.sql(ORDERS);
    let config = Config::load(&ws.write_config(CONFIG)).unwrap();
    let topic = config.topic_for("orders");
    let host = Host::start(config).await.expect("host starts");
    let ledger = host.backends.ledger.clone();
    ledger
        .ensure_subscription(&spec("test-all", &topic))
        .await
        .unwrap();
    // The plugin's subscription exists before anything is published, but the plugin comes
    // only once every version is in the ledger: then each batch holds several versions of a
    // key, and only one instance per key keeps them in order.
    ledger.ensure_topic("dead-letter-sequencer").await.unwrap();
    ledger
        .ensure_subscription(&SubscriptionSpec {
            name: "plugin-sequencer".into(),
            topic: topic.clone(),
            attribute_filter: BTreeMap::new(),
            ack_deadline: Duration::from_millis(host.config.ledger.ack_deadline_ms),
            dead_letter_topic: "dead-letter-sequencer".into(),
        })
        .await
        .unwrap();

    let mut sql = String::from("BEGIN;");
    for id in 1..=KEYS {
        sql.push_str(&format!(
            "INSERT INTO orders (id, amount, flaky) VALUES ({id}, 0, {});",
            i32::from(id % 4 == 0)
        ));
    }
    sql.push_str("COMMIT;");
    ws.sql(&sql);
    for round in 1..=ROUNDS {
        // A later version of every key, a quarter of them flaky (retried once each).
        tokio::time::sleep(Duration::from_millis(120)).await;
        ws.sql(&format!(
            "UPDATE orders SET amount = amount + 1, flaky = ((id + {round}) % 4 = 0);"
        ));
    }

    let all = published(&ledger, "test-all", (KEYS * (ROUNDS + 1)) as usize).await;
    let mut want: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (id, ts) in &all {
        want.entry(*id).or_default().push(*ts);
    }
    for versions in want.values_mut() {
        versions.sort_unstable();
    }
    assert_eq!(want.len() as i64, KEYS);
    assert!(
        want.values().any(|v| v.len() > 1),
        "keys have several versions"
    );
    // One batch can take the whole backlog: several versions of every key in one call.
    let manifest = sequencer_manifest().replace("batch-size = 64", "batch-size = 1000");
    assert!(manifest.contains("batch-size = 1000"));
    ws.install_plugin("sequencer", "sequencer", &manifest);

    let kv = host.backends.keyvalue.clone();
    let settled = eventually(Duration::from_secs(120), || {
        let (kv, want) = (kv.clone(), &want);
        async move { recorded(&kv).await == *want }
    })
    .await;
    let got = recorded(&kv).await;
    for (id, versions) in &want {
        assert_eq!(
            got.get(id),
            Some(versions),
            "key {id}: every version acked once, in commit order"
        );
    }
    assert!(settled);
    let stats = host.metrics.plugin("sequencer");
    assert!(
        stats.retried.load(Ordering::Relaxed) > 0,
        "flaky events were retried"
    );
    assert_eq!(stats.dead_lettered.load(Ordering::Relaxed), 0);
    let status = ledgerhost::admin_client::status(&host.admin_addr.to_string())
        .await
        .expect("status");
    let me = status
        .plugins
        .iter()
        .find(|p| p.name == "sequencer")
        .expect("sequencer in /status");
    assert_eq!(me.instances, 3);
    let (_, metrics) = ledgerhost::admin_client::get(&host.admin_addr.to_string(), "/metrics")
        .await
        .expect("metrics");
    assert!(
        metrics.contains("ledgerhost_plugin_instances{plugin=\"sequencer\"} 3"),
        "{metrics}"
    );
    assert!(host.shutdown().await);
}

/// `seen/<tag>/orders/<id>/<ts>` keys → the row ids each tag saw.
async fn seen_by(kv: &Arc<dyn KeyValue>, tag: &str) -> BTreeSet<i64> {
    let prefix = format!("seen/{tag}/orders/");
    kv.list_keys(&prefix)
        .await
        .expect("list")
        .iter()
        .map(|k| {
            k[prefix.len()..]
                .split('/')
                .next()
                .and_then(|id| id.parse().ok())
                .expect("row id")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_swap_replaces_all_three_instances_and_loses_nothing() {
    const ROWS: i64 = 600;
    let ws = Workspace::new();
    ws.sql(ORDERS);
    let manifest = std::fs::read_to_string(plugin_manifest("tagger"))
        .expect("tagger manifest")
        .replace("[subscription]\n", "[subscription]\ninstances = 3\n");
    assert!(manifest.contains("instances = 3"), "{manifest}");
    ws.install_plugin("tagger", "tagger", &manifest);
    let config = Config::load(&ws.write_config(CONFIG)).unwrap();
    let host = Host::start(config).await.expect("host starts");
    let kv = host.backends.keyvalue.clone();
    let slot = host.registry.slot("tagger").expect("tagger loaded");
    let v1 = slot.current().expect("serving").version().to_string();

    // A continuous stream of single-row transactions; the new version lands mid-stream.
    let plugins = ws.path().join("plugins");
    for id in 1..=ROWS {
        ws.sql(&format!(
            "INSERT INTO orders (id, amount) VALUES ({id}, {id});"
        ));
        if id == ROWS / 2 {
            let tmp = plugins.join("tagger.wasm.tmp");
            std::fs::copy(plugin_dir().join("alt/tagger.wasm"), &tmp).unwrap();
            std::fs::rename(&tmp, plugins.join("tagger.wasm")).unwrap();
            // Rows keep coming while the new version compiles; the rest follow the swap, so
            // the newest rows can only be the new version's.
            let swapped = eventually(Duration::from_secs(60), || {
                let (slot, v1) = (slot.clone(), &v1);
                async move { slot.current().is_some_and(|p| p.version() != v1) }
            })
            .await;
            assert!(swapped, "the new version was never swapped in");
        }
        if id % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let all: BTreeSet<i64> = (1..=ROWS).collect();
    let done = eventually(Duration::from_secs(120), || {
        let (kv, all) = (kv.clone(), &all);
        async move {
            let mut union = seen_by(&kv, "v1").await;
            union.extend(seen_by(&kv, "v2").await);
            union == *all
        }
    })
    .await;
    let (by_v1, by_v2) = (seen_by(&kv, "v1").await, seen_by(&kv, "v2").await);
    let union: BTreeSet<i64> = by_v1.union(&by_v2).copied().collect();
    assert_eq!(
        all.difference(&union).collect::<Vec<_>>(),
        Vec::<&i64>::new(),
        "every event handled by one of the versions"
    );
    assert!(done);
    assert!(!by_v2.is_empty(), "the new version served after the swap");
    let serving = slot.current().expect("serving");
    assert_ne!(serving.version(), v1, "the swap happened");
    assert_eq!(serving.manifest().instances(), 3);
    // After the swap no instance of v1 handles anything: the newest rows are v2's alone.
    assert!(by_v2.contains(&ROWS) && !by_v1.contains(&ROWS));
    let stats = host.metrics.plugin("tagger");
    assert_eq!(stats.dead_lettered.load(Ordering::Relaxed), 0);
    assert!(host.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_in_one_instance_does_not_stop_the_others() {
    const ROWS: i64 = 300;
    const POISON: i64 = 57;
    let ws = Workspace::new();
    ws.sql(ORDERS);
    ws.install_plugin("sequencer", "sequencer", &sequencer_manifest());
    let config = Config::load(&ws.write_config(CONFIG)).unwrap();
    let host = Host::start(config).await.expect("host starts");
    let ledger = host.backends.ledger.clone();
    ledger
        .ensure_subscription(&spec("test-dead", "dead-letter-sequencer"))
        .await
        .unwrap();

    let mut sql = String::from("BEGIN;");
    for id in 1..=200 {
        sql.push_str(&format!(
            "INSERT INTO orders (id, amount, poison) VALUES ({id}, 1, {});",
            i32::from(id == POISON)
        ));
    }
    sql.push_str("COMMIT;");
    ws.sql(&sql);
    for id in 201..=ROWS {
        ws.sql(&format!(
            "INSERT INTO orders (id, amount) VALUES ({id}, 1);"
        ));
    }

    let dead = published(&ledger, "test-dead", 1).await;
    assert_eq!(
        dead.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![POISON],
        "exactly the poison event is dead-lettered"
    );
    let kv = host.backends.keyvalue.clone();
    let healthy: BTreeSet<i64> = (1..=ROWS).filter(|id| *id != POISON).collect();
    let all_recorded = eventually(Duration::from_secs(120), || {
        let (kv, healthy) = (kv.clone(), &healthy);
        async move { recorded(&kv).await.keys().copied().collect::<BTreeSet<_>>() == *healthy }
    })
    .await;
    let got = recorded(&kv).await;
    assert!(
        all_recorded,
        "missing: {:?}",
        healthy.difference(&got.keys().copied().collect())
    );
    assert!(
        got.values().all(|ts| ts.len() == 1),
        "every other event acked exactly once"
    );
    let stats = host.metrics.plugin("sequencer");
    assert_eq!(stats.dead_lettered.load(Ordering::Relaxed), 1);
    // Only the poison event was ever retried: max-attempts = 5, the fifth dead-letters it.
    assert_eq!(stats.retried.load(Ordering::Relaxed), 4);
    let runtime = host
        .registry
        .slot("sequencer")
        .and_then(|s| s.current())
        .expect("serving")
        .stats();
    assert!(
        runtime.traps >= 5,
        "one trap per attempt at least: {runtime:?}"
    );
    assert!(
        runtime
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains(&format!("poison event orders/{POISON}/"))),
        "{runtime:?}"
    );
    assert!(host.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_in_one_instance_leaves_the_other_instances_alive() {
    use super::runtime::{event, fixture};
    let f = fixture();
    let dir = f.dir.path().join("k3");
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = std::fs::read_to_string(plugin_manifest("trapper"))
        .unwrap()
        .replace("[subscription]\n", "[subscription]\ninstances = 3\n");
    std::fs::write(dir.join("trapper.toml"), manifest).unwrap();
    let version = f
        .runtime
        .load(
            &plugin_wasm("trapper"),
            &dir.join("trapper.toml"),
            &BTreeMap::new(),
        )
        .await
        .expect("trapper loads");
    let instances = Instances::of(version.clone());
    assert_eq!(instances.len(), 3);
    assert!(instances.runs(&version));
    for i in 1..3 {
        // The siblings' first calls build their instances (not rebuilds).
        assert_eq!(
            instances
                .get(i)
                .handle(vec![event(i as u64, false)])
                .await
                .unwrap(),
            vec![Disposition::Ack]
        );
    }
    assert_eq!(version.stats().rebuilds, 0);

    let (trapped, healthy) = tokio::join!(
        instances.get(0).handle(vec![event(10, true)]),
        instances.get(1).handle(vec![event(11, false)]),
    );
    assert!(
        matches!(trapped, Err(CallError::Trap { .. })),
        "{trapped:?}"
    );
    assert_eq!(healthy.unwrap(), vec![Disposition::Ack]);
    for i in 1..3 {
        assert_eq!(
            instances
                .get(i)
                .handle(vec![event(20 + i as u64, false)])
                .await
                .unwrap(),
            vec![Disposition::Ack]
        );
    }
    let stats = version.stats();
    assert_eq!(
        (stats.traps, stats.rebuilds),
        (1, 0),
        "the other instances kept theirs through the trap"
    );
    assert_eq!(
        instances
            .get(0)
            .handle(vec![event(30, false)])
            .await
            .unwrap(),
        vec![Disposition::Ack]
    );
    let stats = version.stats();
    assert_eq!(stats.rebuilds, 1, "only the trapped instance was rebuilt");
    assert_eq!(stats.calls, 7, "the counters add up all three instances");
}
