//! The dispatcher with K native instances on the embedded ledger: per-key order across
//! retries, parts that really run in parallel, and a failing instance that leaves the others'
//! parts alone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ledgerhost_core::ledger::{Ledger, Message};
use ledgerhost_core::source::Row;
use ledgerhost_core::{Column, ColumnType, Disposition, Event, TableSchema, Value};
use ledgerhost_ledger::embedded::{EmbeddedLedger, EmbeddedOptions};
use tokio::sync::watch;

use super::*;
use crate::metrics::Metrics;

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
            column("ts", ColumnType::Timestamp),
        ],
        primary_key: vec!["id".into()],
        commit_ts_column: "ts".into(),
        deleted_column: None,
    }
}

/// Row `id` at commit time `ts`, with its own id as ordering key (`ordering = "key"`).
fn message(encoder: &ledgerhost_avro::Encoder, id: i64, ts: i64) -> Message {
    let mut m = encoder
        .encode(&Row {
            values: vec![Value::Int64(id), Value::Timestamp(ts)],
            commit_ts: ts,
        })
        .unwrap();
    m.ordering_key = format!("k{id}");
    m
}

fn id_of(e: &Event) -> i64 {
    match e.get("id") {
        Some(Value::Int64(id)) => *id,
        other => panic!("id: {other:?}"),
    }
}

fn plan(batch_size: usize, max_attempts: u32) -> SubscriptionPlan {
    SubscriptionPlan {
        plugin: "multi".into(),
        subscription: "plugin-multi".into(),
        topic: "ledger-orders".into(),
        table: None,
        dead_letter_topic: "dead-letter-multi".into(),
        filter: EventFilter::default(),
        batch_size,
        max_wait: Duration::from_millis(5),
        max_attempts,
        backoff_initial: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        ack_deadline: Duration::from_secs(30),
    }
}

/// Runs a dispatcher for `handler` over `messages` until `done` holds, then drains it.
async fn run(
    handler: Arc<dyn BatchHandler>,
    batch_size: usize,
    max_attempts: u32,
    messages: Vec<Message>,
    done: impl Fn(&PluginStats) -> bool,
) -> Arc<PluginStats> {
    let dir = tempfile::tempdir().unwrap();
    let ledger: Arc<dyn Ledger> =
        Arc::new(EmbeddedLedger::open(dir.path(), EmbeddedOptions::default()).unwrap());
    let metrics = Metrics::default();
    let stats = metrics.plugin("multi");
    let current: CurrentHandler = Arc::new(move || Some(handler.clone()));
    let dispatcher = Dispatcher::new(
        plan(batch_size, max_attempts),
        ledger.clone(),
        Arc::new(Decoder::new()),
        current,
        stats.clone(),
    );
    dispatcher.bootstrap().await.unwrap();
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(dispatcher.run(rx));
    ledger.publish("ledger-orders", messages).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done(&stats) {
        assert!(Instant::now() < deadline, "the dispatcher never settled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send_replace(true);
    task.await.unwrap();
    stats
}

/// K instances that each record, per key, the commit times they acked; a key's first
/// delivery of an event whose commit time is a multiple of 3 is retried (and its later events
/// in the call are retried too, as the host holds them).
struct Recording {
    k: usize,
    tried: Mutex<HashSet<(i64, i64)>>,
    /// key → (instance, commit times acked, in call order)
    acked: Mutex<BTreeMap<i64, (usize, Vec<i64>)>>,
    /// key → instances that were handed one of its events
    instances_of: Mutex<HashMap<i64, HashSet<usize>>>,
}

#[async_trait]
impl BatchHandler for Recording {
    async fn handle(&self, events: Vec<Event>) -> Result<Vec<Disposition>, HandlerError> {
        self.handle_on(0, events).await
    }

    fn version(&self) -> String {
        "native".into()
    }

    fn instances(&self) -> usize {
        self.k
    }

    async fn handle_on(
        &self,
        instance: usize,
        events: Vec<Event>,
    ) -> Result<Vec<Disposition>, HandlerError> {
        let mut held = HashSet::new();
        let mut out = Vec::new();
        for e in &events {
            let id = id_of(e);
            self.instances_of
                .lock()
                .unwrap()
                .entry(id)
                .or_default()
                .insert(instance);
            let first = self.tried.lock().unwrap().insert((id, e.commit_ts));
            if held.contains(&id) || (e.commit_ts % 3 == 0 && first) {
                held.insert(id);
                out.push(Disposition::Retry("flaky".into()));
                continue;
            }
            let mut acked = self.acked.lock().unwrap();
            let entry = acked.entry(id).or_insert((instance, Vec::new()));
            entry.1.push(e.commit_ts);
            out.push(Disposition::Ack);
        }
        Ok(out)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_keep_each_keys_order_across_retries() {
    const KEYS: i64 = 40;
    const VERSIONS: i64 = 12;
    let encoder = ledgerhost_avro::Encoder::new(&table()).unwrap();
    let mut messages = Vec::new();
    for v in 1..=VERSIONS {
        for id in 0..KEYS {
            messages.push(message(&encoder, id, v * 1000 + id));
        }
    }
    let handler = Arc::new(Recording {
        k: 3,
        tried: Mutex::default(),
        acked: Mutex::default(),
        instances_of: Mutex::default(),
    });
    let total = (KEYS * VERSIONS) as u64;
    let stats = run(handler.clone(), 50, 20, messages, |s| {
        s.acked.load(Ordering::Relaxed) >= total
    })
    .await;
    assert_eq!(stats.dead_lettered.load(Ordering::Relaxed), 0);
    assert!(
        stats.retried.load(Ordering::Relaxed) > 0,
        "the run had retries"
    );
    let acked = handler.acked.lock().unwrap().clone();
    let mut used = HashSet::new();
    for id in 0..KEYS {
        let want: Vec<i64> = (1..=VERSIONS).map(|v| v * 1000 + id).collect();
        let (instance, got) = &acked[&id];
        assert_eq!(
            got, &want,
            "key {id}: every version acked once, in commit order"
        );
        assert_eq!(
            handler.instances_of.lock().unwrap()[&id],
            HashSet::from([*instance]),
            "key {id} always went to one instance"
        );
        assert_eq!(*instance, instances::instance_of(&format!("k{id}"), 0, 3));
        used.insert(*instance);
    }
    assert_eq!(used.len(), 3, "every instance got keys");
}

/// K instances that each spin (without yielding) until all K are inside a call at once:
/// only parts running on K threads in parallel can get through.
struct Rendezvous {
    k: usize,
    inside: AtomicUsize,
}

#[async_trait]
impl BatchHandler for Rendezvous {
    async fn handle(&self, events: Vec<Event>) -> Result<Vec<Disposition>, HandlerError> {
        self.handle_on(0, events).await
    }

    fn version(&self) -> String {
        "native".into()
    }

    fn instances(&self) -> usize {
        self.k
    }

    async fn handle_on(
        &self,
        _instance: usize,
        events: Vec<Event>,
    ) -> Result<Vec<Disposition>, HandlerError> {
        self.inside.fetch_add(1, Ordering::SeqCst);
        // A guard against a hang, not a performance bound: sequential parts never meet.
        let give_up = Instant::now() + Duration::from_secs(30);
        while self.inside.load(Ordering::SeqCst) < self.k {
            if Instant::now() > give_up {
                return Err(HandlerError::Native("the other instances never ran".into()));
            }
            std::hint::spin_loop();
        }
        Ok(events.iter().map(|_| Disposition::Ack).collect())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parts_of_a_batch_run_in_parallel_on_the_worker_threads() {
    let encoder = ledgerhost_avro::Encoder::new(&table()).unwrap();
    // Keys that land on both instances, all in one batch.
    let ids: Vec<i64> = (0..20).collect();
    assert!(
        ids.iter()
            .map(|id| instances::instance_of(&format!("k{id}"), 0, 2))
            .collect::<HashSet<_>>()
            .len()
            == 2
    );
    let messages = ids.iter().map(|id| message(&encoder, *id, 7)).collect();
    let handler = Arc::new(Rendezvous {
        k: 2,
        inside: AtomicUsize::new(0),
    });
    let stats = run(handler, 64, 4, messages, |s| {
        s.acked.load(Ordering::Relaxed) + s.retried.load(Ordering::Relaxed) >= 20
    })
    .await;
    assert_eq!(
        stats.acked.load(Ordering::Relaxed),
        20,
        "both instances were inside a call at the same time"
    );
    assert_eq!(stats.retried.load(Ordering::Relaxed), 0);
}

/// K instances; a call that holds key 0 fails whole (as a trap does). Records every call.
struct OnePoisoned {
    calls: Mutex<Vec<(usize, Vec<i64>)>>,
}

#[async_trait]
impl BatchHandler for OnePoisoned {
    async fn handle(&self, events: Vec<Event>) -> Result<Vec<Disposition>, HandlerError> {
        self.handle_on(0, events).await
    }

    fn version(&self) -> String {
        "native".into()
    }

    fn instances(&self) -> usize {
        3
    }

    async fn handle_on(
        &self,
        instance: usize,
        events: Vec<Event>,
    ) -> Result<Vec<Disposition>, HandlerError> {
        let ids: Vec<i64> = events.iter().map(id_of).collect();
        self.calls.lock().unwrap().push((instance, ids.clone()));
        if ids.contains(&0) {
            return Err(HandlerError::Native("trapped on key 0".into()));
        }
        Ok(events.iter().map(|_| Disposition::Ack).collect())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_instance_leaves_the_other_instances_parts_alone() {
    let encoder = ledgerhost_avro::Encoder::new(&table()).unwrap();
    let messages = (0..30).map(|id| message(&encoder, id, 5)).collect();
    let handler = Arc::new(OnePoisoned {
        calls: Mutex::default(),
    });
    let stats = run(handler.clone(), 64, 4, messages, |s| {
        s.acked.load(Ordering::Relaxed) >= 30
    })
    .await;
    assert_eq!(stats.dead_lettered.load(Ordering::Relaxed), 1, "key 0");
    let poisoned = instances::instance_of("k0", 0, 3);
    let calls = handler.calls.lock().unwrap().clone();
    // Every event of a healthy instance was handled exactly once, in the first batch's call.
    for id in 1..30 {
        let instance = instances::instance_of(&format!("k{id}"), 0, 3);
        let seen: Vec<&(usize, Vec<i64>)> =
            calls.iter().filter(|(_, ids)| ids.contains(&id)).collect();
        if instance == poisoned {
            // Failed with key 0's batch, then isolated: handled alone on the same instance.
            assert!(seen.iter().all(|(i, _)| *i == poisoned), "{id}: {seen:?}");
            assert!(
                seen.iter().any(|(_, ids)| ids == &vec![id]),
                "{id}: {seen:?}"
            );
        } else {
            assert_eq!(seen.len(), 1, "key {id} handled once: {seen:?}");
            assert_eq!(seen[0].0, instance);
            assert!(seen[0].1.len() > 1, "in its instance's batch, not isolated");
        }
    }
    // Key 0 was tried max-attempts times, always on its own instance.
    let zero: Vec<&(usize, Vec<i64>)> = calls.iter().filter(|(_, ids)| ids.contains(&0)).collect();
    assert!(zero.iter().all(|(i, _)| *i == poisoned));
    assert_eq!(
        zero.iter().filter(|(_, ids)| ids == &vec![0]).count(),
        4,
        "isolated once per attempt (max-attempts = 4)"
    );
}
