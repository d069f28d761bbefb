//! Consumer benchmark: the whole consumer path a user feels (pull from the embedded ledger,
//! decode, host-side filter, call, settle) through the real dispatcher, on 200 000 order
//! events, measured in the same run for
//!
//! - (a) a native no-op handler that acks everything: the floor (pull, decode, settle);
//! - (b) the example filter's logic as a native handler (amount ≥ 1000 republished onto
//!   `orders-high-value` through the same ledger port, all acked) and (c) the filter as WASM;
//! - (d) `allcols`'s logic native (every column folded into a checksum; the twin in
//!   `host/runtime/benches/native/allcols.rs` the runtime bench uses too) and (e) as WASM;
//!
//! at batch 64 and 1 024. Each case's events/s, its ratio to (a), WASM/native per pair, the
//! share of each dispatcher step (pull, decode, call, settle; from the dispatcher's own
//! timers) and the host's heap allocations per event (a counting global allocator: every
//! allocation in the process during the drain, divided by the events). Rounds alternate the
//! cases so a neighbour's load hits all of them; the best round of each is reported. The
//! last line sums up the WASM/native ratios:
//! `consumer ratios: filter@1024=… filter@64=… allcols@1024=…`.
//!
//! Needs the built plugins (`scripts/build-plugins`). Run:
//! `cargo bench -p ledgerhost --bench consumer`

#[path = "../../runtime/benches/native/allcols.rs"]
mod allcols;
mod setup;

use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ledgerhost::dispatcher::instances::PluginInstances;
use ledgerhost::dispatcher::{
    BatchHandler, CurrentHandler, Dispatcher, EventFilter, HandlerError, SubscriptionPlan,
};
use ledgerhost::metrics::{DispatchStep, Metrics, PluginStats};
use ledgerhost_core::event::encode_key;
use ledgerhost_core::ledger::ordering::Ordering as KeyOrdering;
use ledgerhost_core::ledger::{Ledger, Message};
use ledgerhost_core::source::Row;
use ledgerhost_core::{Column, ColumnType, Disposition, Event, TableSchema, Value};
use tokio::sync::watch;

const EVENTS: usize = 200_000;
const ROUNDS: usize = 2;
const BATCHES: [usize; 2] = [1024, 64];
const TOPIC: &str = "ledger-orders";
const HIGH_VALUE: &str = "orders-high-value";
const THRESHOLD: i64 = 1000;

/// Counts every heap allocation of the process (the bench's figure of host allocations),
/// made by the binary's allocator.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { ledgerhost::Allocator.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { ledgerhost::Allocator.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { ledgerhost::Allocator.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { ledgerhost::Allocator.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Realistic order events: six columns, as the runtime bench's.
fn table() -> TableSchema {
    let column = |name: &str, ty| Column {
        name: name.into(),
        ty,
        nullable: true,
    };
    TableSchema {
        name: "orders".into(),
        columns: vec![
            column("id", ColumnType::Int64),
            column("client_id", ColumnType::String),
            column("amount", ColumnType::Int64),
            column("status", ColumnType::String),
            column("deleted", ColumnType::Bool),
            column("commit_ts", ColumnType::Timestamp),
        ],
        primary_key: vec!["id".into()],
        commit_ts_column: "commit_ts".into(),
        deleted_column: Some("deleted".into()),
    }
}

/// What handles the events of one case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Case {
    Floor,
    FilterNative,
    FilterWasm,
    AllcolsNative,
    AllcolsWasm,
}

impl Case {
    const ALL: [Case; 5] = [
        Case::Floor,
        Case::FilterNative,
        Case::FilterWasm,
        Case::AllcolsNative,
        Case::AllcolsWasm,
    ];

    fn label(self) -> &'static str {
        match self {
            Case::Floor => "(a) native no-op (floor: pull, decode, settle)",
            Case::FilterNative => "(b) filter, native",
            Case::FilterWasm => "(c) filter, WASM",
            Case::AllcolsNative => "(d) allcols, native",
            Case::AllcolsWasm => "(e) allcols, WASM",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Case::Floor => "floor",
            Case::FilterNative => "filter-native",
            Case::FilterWasm => "filter-wasm",
            Case::AllcolsNative => "allcols-native",
            Case::AllcolsWasm => "allcols-wasm",
        }
    }
}

/// (a): acks everything, touches nothing.
struct Floor;

#[async_trait]
impl BatchHandler for Floor {
    async fn handle(&self, events: Vec<Event>) -> Result<Vec<Disposition>, HandlerError> {
        Ok(vec![Disposition::Ack; events.len()])
    }

    fn version(&self) -> String {
        "native".into()
    }
}

/// (b): the example filter's logic on the host's events: an amount of at least
/// [`THRESHOLD`] is republished unchanged (Avro, ordering key, attributes) onto
/// [`HIGH_VALUE`] in one publish per batch, as the plugin does through the ledger capability.
struct NativeFilter {
    ledger: Arc<dyn Ledger>,
}

#[async_trait]
impl BatchHandler for NativeFilter {
    async fn handle(&self, events: Vec<Event>) -> Result<Vec<Disposition>, HandlerError> {
        let forward: Vec<Message> = events
            .iter()
            .filter(|e| matches!(e.get("amount"), Some(Value::Int64(a)) if *a >= THRESHOLD))
            .map(|e| Message {
                data: e.avro.clone(),
                ordering_key: key_of(&e.id.0).to_string(),
                attributes: e.attributes.iter().cloned().collect(),
            })
            .collect();
        if !forward.is_empty() {
            self.ledger
                .publish(HIGH_VALUE, forward)
                .await
                .map_err(|e| HandlerError::Native(Box::new(e)))?;
        }
        Ok(vec![Disposition::Ack; events.len()])
    }

    fn version(&self) -> String {
        "native".into()
    }
}

/// The encoded primary key inside an event id (`table/key/commit_ts`), as the SDK's
/// `ordering_key()` reads it for a republish.
fn key_of(id: &str) -> &str {
    let rest = id.split_once('/').map_or("", |(_, r)| r);
    rest.rsplit_once('/').map_or(rest, |(k, _)| k)
}

/// (d): every column of every event by name, folded into a checksum; acks everything.
struct NativeAllcols {
    checksum: AtomicU64,
}

#[async_trait]
impl BatchHandler for NativeAllcols {
    async fn handle(&self, events: Vec<Event>) -> Result<Vec<Disposition>, HandlerError> {
        let h = allcols::checksum(&events);
        self.checksum.fetch_xor(h, Ordering::Relaxed);
        Ok(vec![Disposition::Ack; events.len()])
    }

    fn version(&self) -> String {
        "native".into()
    }
}

fn plan(subscription: &str, batch: usize) -> SubscriptionPlan {
    SubscriptionPlan {
        plugin: "bench".into(),
        subscription: subscription.into(),
        topic: TOPIC.into(),
        table: None,
        dead_letter_topic: "dead-letter-bench".into(),
        filter: EventFilter::default(),
        batch_size: batch,
        max_wait: Duration::from_millis(5),
        max_attempts: 5,
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_secs(10),
        ack_deadline: Duration::from_secs(60),
    }
}

fn subscription(case: Case, batch: usize, round: usize) -> String {
    format!("plugin-bench-{}-b{batch}-r{round}", case.name())
}

/// One drain's figures.
#[derive(Debug, Clone, Copy, Default)]
struct Drained {
    rate: f64,
    allocations_per_event: f64,
    /// Share of the drain's wall time per [`DispatchStep`].
    shares: [f64; DispatchStep::ALL.len()],
}

/// Runs the dispatcher on `subscription` (holding the whole backlog) until every event is
/// acked.
async fn drain(
    ledger: &Arc<dyn Ledger>,
    subscription: &str,
    batch: usize,
    handler: Arc<dyn BatchHandler>,
) -> Drained {
    let metrics = Metrics::default();
    let stats: Arc<PluginStats> = metrics.plugin("bench");
    let current: CurrentHandler = Arc::new(move || Some(handler.clone()));
    let dispatcher = Dispatcher::new(
        plan(subscription, batch),
        ledger.clone(),
        Arc::new(ledgerhost_avro::Decoder::new()),
        current,
        stats.clone(),
    );
    let (stop, rx) = watch::channel(false);
    let allocations = ALLOCATIONS.load(Ordering::Relaxed);
    let started = Instant::now();
    let task = tokio::spawn(dispatcher.run(rx));
    while stats.acked.load(Ordering::Relaxed) < EVENTS as u64 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    let allocated = ALLOCATIONS.load(Ordering::Relaxed) - allocations;
    stop.send_replace(true);
    task.await.unwrap();
    assert_eq!(
        stats.acked.load(Ordering::Relaxed),
        EVENTS as u64,
        "every event acked once"
    );
    let mut shares = [0.0; DispatchStep::ALL.len()];
    for step in DispatchStep::ALL {
        shares[step as usize] = stats.step_seconds(step) / elapsed.as_secs_f64();
    }
    Drained {
        rate: EVENTS as f64 / elapsed.as_secs_f64(),
        allocations_per_event: allocated as f64 / EVENTS as f64,
        shares,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, runtime) = setup::embedded(dir.path());
    let mut plugins = BTreeMap::new();
    for name in ["filter", "allcols"] {
        for batch in BATCHES {
            let plugin = runtime
                .load(
                    &setup::built(name),
                    &setup::manifest_with(
                        dir.path(),
                        name,
                        &format!("b{batch}"),
                        &[("batch-size", batch.to_string())],
                    ),
                    &BTreeMap::new(),
                )
                .await
                .unwrap();
            plugins.insert((name, batch), plugin);
        }
    }

    // Every subscription exists before the backlog is published, so each holds all of it.
    for topic in [TOPIC, HIGH_VALUE, "dead-letter-bench"] {
        ledger.ensure_topic(topic).await.unwrap();
    }
    for round in 0..ROUNDS {
        for batch in BATCHES {
            for case in Case::ALL {
                let spec = plan(&subscription(case, batch, round), batch).spec();
                ledger.ensure_subscription(&spec).await.unwrap();
            }
        }
    }
    let encoder = ledgerhost_avro::Encoder::new(&table()).unwrap();
    let ordering = KeyOrdering::default();
    let messages: Vec<Message> = (0..EVENTS as i64)
        .map(|i| {
            let mut m = encoder
                .encode(&Row {
                    values: vec![
                        Value::Int64(i),
                        Value::String(format!("c-{}", i % 20)),
                        Value::Int64(i % 2000),
                        Value::String("new".into()),
                        Value::Bool(false),
                        Value::Timestamp(1_000 + i),
                    ],
                    commit_ts: 1_000 + i,
                })
                .unwrap();
            m.ordering_key = ordering.key_for(&encode_key(&[Value::Int64(i)]));
            m
        })
        .collect();
    for chunk in messages.chunks(1000) {
        ledger.publish(TOPIC, chunk.to_vec()).await.unwrap();
    }
    drop(messages);

    let mut best: BTreeMap<(usize, Case), Drained> = BTreeMap::new();
    for round in 0..ROUNDS {
        for batch in BATCHES {
            for case in Case::ALL {
                let handler: Arc<dyn BatchHandler> = match case {
                    Case::Floor => Arc::new(Floor),
                    Case::FilterNative => Arc::new(NativeFilter {
                        ledger: ledger.clone(),
                    }),
                    Case::AllcolsNative => Arc::new(NativeAllcols {
                        checksum: AtomicU64::new(0),
                    }),
                    Case::FilterWasm => {
                        Arc::new(PluginInstances::new(plugins[&("filter", batch)].clone()))
                    }
                    Case::AllcolsWasm => {
                        Arc::new(PluginInstances::new(plugins[&("allcols", batch)].clone()))
                    }
                };
                let d = drain(&ledger, &subscription(case, batch, round), batch, handler).await;
                let b = best.entry((batch, case)).or_default();
                if d.rate > b.rate {
                    *b = d;
                }
            }
        }
    }

    println!(
        "## Consumer path: {EVENTS} order events drained from the embedded ledger through the \
         real dispatcher\n"
    );
    println!(
        "Best of {ROUNDS} rounds; {} worker threads. Step shares are of the drain's wall time \
         (pull, decode and the host-side filter, the call, settle).\n",
        2
    );
    for batch in BATCHES {
        let floor = best[&(batch, Case::Floor)].rate;
        println!("### Batch {batch}\n");
        println!(
            "| case | events/s | vs (a) | host allocations / event | pull | decode | call | settle |"
        );
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        for case in Case::ALL {
            let d = best[&(batch, case)];
            let share = |s: DispatchStep| format!("{:.0}%", 100.0 * d.shares[s as usize]);
            println!(
                "| {} | {:.0} | {:.2}x | {:.1} | {} | {} | {} | {} |",
                case.label(),
                d.rate,
                d.rate / floor,
                d.allocations_per_event,
                share(DispatchStep::Pull),
                share(DispatchStep::Decode),
                share(DispatchStep::Call),
                share(DispatchStep::Settle),
            );
        }
        let pair =
            |wasm: Case, native: Case| best[&(batch, wasm)].rate / best[&(batch, native)].rate;
        let boundary = |wasm: Case, native: Case| {
            1e9 / best[&(batch, wasm)].rate - 1e9 / best[&(batch, native)].rate
        };
        println!(
            "\nWASM / native: filter {:.2}x ({:.0} ns per event across the boundary), allcols \
             {:.2}x ({:.0} ns per event)\n",
            pair(Case::FilterWasm, Case::FilterNative),
            boundary(Case::FilterWasm, Case::FilterNative),
            pair(Case::AllcolsWasm, Case::AllcolsNative),
            boundary(Case::AllcolsWasm, Case::AllcolsNative),
        );
    }
    let ratio = |batch: usize, wasm: Case, native: Case| {
        best[&(batch, wasm)].rate / best[&(batch, native)].rate
    };
    println!(
        "consumer ratios: filter@1024={:.2} filter@64={:.2} allcols@1024={:.2}",
        ratio(1024, Case::FilterWasm, Case::FilterNative),
        ratio(64, Case::FilterWasm, Case::FilterNative),
        ratio(1024, Case::AllcolsWasm, Case::AllcolsNative),
    );
}
