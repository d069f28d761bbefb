//! K instances per plugin: throughput of a CPU-bound plugin (`plugins/testing/burner`, a fixed
//! amount of arithmetic per event and no I/O) through the real dispatcher on the embedded
//! ledger, with `subscription.instances` = 1 and = 2, measured in the same run on the same
//! backlog (default ordering: 16 shard keys per table). Rounds alternate K = 1 and K = 2 so
//! a neighbour's load hits both; the best round of each is reported, with the ratio.
//!
//! Needs the built plugins (`scripts/build-plugins`). Run:
//! `cargo bench -p ledgerhost --bench instances`

mod setup;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ledgerhost::dispatcher::instances::PluginInstances;
use ledgerhost::dispatcher::{
    BatchHandler, CurrentHandler, Dispatcher, EventFilter, SubscriptionPlan,
};
use ledgerhost::metrics::Metrics;
use ledgerhost_core::event::encode_key;
use ledgerhost_core::ledger::Ledger;
use ledgerhost_core::ledger::ordering::Ordering as KeyOrdering;
use ledgerhost_core::source::Row;
use ledgerhost_core::{Column, ColumnType, TableSchema, Value};
use tokio::sync::watch;

const EVENTS: usize = 8_000;
const BATCH: usize = 1_000;
const ROUNDS: usize = 3;
const TOPIC: &str = "ledger-orders";

fn table() -> TableSchema {
    let column = |name: &str, ty| Column {
        name: name.into(),
        ty,
        nullable: false,
    };
    TableSchema {
        name: "orders".into(),
        columns: vec![
            column("id", ColumnType::Int64),
            column("amount", ColumnType::Int64),
            column("ts", ColumnType::Timestamp),
        ],
        primary_key: vec!["id".into()],
        commit_ts_column: "ts".into(),
        deleted_column: None,
    }
}

fn plan(subscription: &str) -> SubscriptionPlan {
    SubscriptionPlan {
        plugin: "burner".into(),
        subscription: subscription.into(),
        topic: TOPIC.into(),
        table: None,
        dead_letter_topic: "dead-letter-burner".into(),
        filter: EventFilter::default(),
        batch_size: BATCH,
        max_wait: Duration::from_millis(5),
        max_attempts: 5,
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_secs(10),
        ack_deadline: Duration::from_secs(60),
    }
}

/// Runs the dispatcher on `subscription` (holding the whole backlog) until every event is
/// acked; events per second.
async fn drain(
    ledger: &Arc<dyn Ledger>,
    subscription: &str,
    handler: Arc<dyn BatchHandler>,
) -> f64 {
    let metrics = Metrics::default();
    let stats = metrics.plugin("burner");
    let current: CurrentHandler = Arc::new(move || Some(handler.clone()));
    let dispatcher = Dispatcher::new(
        plan(subscription),
        ledger.clone(),
        Arc::new(ledgerhost_avro::Decoder::new()),
        current,
        stats.clone(),
    );
    let (stop, rx) = watch::channel(false);
    let started = Instant::now();
    let task = tokio::spawn(dispatcher.run(rx));
    while stats.acked.load(Ordering::Relaxed) < EVENTS as u64 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    stop.send_replace(true);
    task.await.unwrap();
    assert_eq!(
        stats.retried.load(Ordering::Relaxed),
        0,
        "the burner only acks"
    );
    EVENTS as f64 / elapsed.as_secs_f64()
}

/// The binary's allocator, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: ledgerhost::Allocator = ledgerhost::Allocator;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let wasm = setup::built("burner");
    let dir = tempfile::tempdir().unwrap();
    let (ledger, runtime) = setup::embedded(dir.path());
    let mut versions = BTreeMap::new();
    for k in [1usize, 2] {
        let plugin = runtime
            .load(
                &wasm,
                &setup::manifest_with(
                    dir.path(),
                    "burner",
                    &format!("k{k}"),
                    &[
                        ("instances", k.to_string()),
                        ("batch-size", BATCH.to_string()),
                    ],
                ),
                &BTreeMap::new(),
            )
            .await
            .unwrap();
        versions.insert(k, plugin);
    }

    // One subscription per round and K, all created before the backlog is published.
    ledger.ensure_topic(TOPIC).await.unwrap();
    ledger.ensure_topic("dead-letter-burner").await.unwrap();
    let subscription = |k: usize, round: usize| format!("plugin-burner-k{k}-r{round}");
    for round in 0..ROUNDS {
        for k in [1usize, 2] {
            let sub = plan(&subscription(k, round)).spec();
            ledger.ensure_subscription(&sub).await.unwrap();
        }
    }
    let encoder = ledgerhost_avro::Encoder::new(&table()).unwrap();
    let ordering = KeyOrdering::default();
    let messages: Vec<_> = (0..EVENTS as i64)
        .map(|id| {
            let mut m = encoder
                .encode(&Row {
                    values: vec![Value::Int64(id), Value::Int64(id * 7), Value::Timestamp(id)],
                    commit_ts: id,
                })
                .unwrap();
            m.ordering_key = ordering.key_for(&encode_key(&[Value::Int64(id)]));
            m
        })
        .collect();
    for chunk in messages.chunks(1000) {
        ledger.publish(TOPIC, chunk.to_vec()).await.unwrap();
    }

    let mut best: BTreeMap<usize, f64> = BTreeMap::new();
    println!("## K instances: CPU-bound plugin (burner), events/s through the dispatcher\n");
    println!(
        "{EVENTS} events, batch {BATCH}, {} shard keys, {} worker threads\n",
        ledgerhost_core::ledger::ordering::DEFAULT_SHARDS,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| round | K = 1 | K = 2 | K=2 / K=1 |");
    println!("| ---: | ---: | ---: | ---: |");
    for round in 0..ROUNDS {
        let mut rate = BTreeMap::new();
        for k in [1usize, 2] {
            let handler = Arc::new(PluginInstances::new(versions[&k].clone()));
            assert_eq!(handler.instances(), k);
            let r = drain(&ledger, &subscription(k, round), handler).await;
            rate.insert(k, r);
            let b = best.entry(k).or_insert(0.0);
            *b = b.max(r);
        }
        println!(
            "| {} | {:.0} | {:.0} | {:.2}x |",
            round + 1,
            rate[&1],
            rate[&2],
            rate[&2] / rate[&1]
        );
    }
    println!(
        "| best | {:.0} | {:.0} | {:.2}x |",
        best[&1],
        best[&2],
        best[&2] / best[&1]
    );
}
