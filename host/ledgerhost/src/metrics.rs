//! Counters the host keeps per table and per plugin, read by the demo summary, the status
//! endpoint and the Prometheus exporter.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::status::DeadLetterStatus;

pub mod exposition;

use exposition::{Family, Kind, age_seconds};

/// The delivery counters a plugin keeps in total and per source table, in the order of
/// [`PluginStats::deliveries`] and [`SubscriptionStats::deliveries`]: the name after
/// `ledgerhost_plugin_` (or `ledgerhost_plugin_table_`) and its help.
pub const DELIVERY_COUNTERS: [(&str, &str); 5] = [
    ("events_in_total", "Events given to the plugin."),
    (
        "acked_total",
        "Deliveries acknowledged (handled, filtered or dead-lettered).",
    ),
    (
        "retried_total",
        "Deliveries returned for retry with backoff.",
    ),
    (
        "dead_lettered_total",
        "Deliveries sent to the dead-letter topic.",
    ),
    ("filtered_total", "Events skipped by the host-side filter."),
];

/// Reads the five delivery counters, in the order of [`DELIVERY_COUNTERS`].
fn read_deliveries(counters: [&AtomicU64; 5]) -> [u64; 5] {
    counters.map(|c| c.load(Ordering::Relaxed))
}

/// Counters of one polled table.
#[derive(Debug, Default)]
pub struct TableStats {
    /// Rows published to the ledger.
    pub rows_polled: AtomicU64,
    /// Polls that failed (and were retried).
    pub poll_errors: AtomicU64,
    /// Current watermark (µs since epoch), 0 before the first poll.
    pub watermark: AtomicI64,
    /// 1 while this replica holds the table's poller lease.
    pub leader: AtomicU64,
    /// Why polling of this table stopped for good (an incompatible schema change), if it did.
    pub stopped: Mutex<Option<String>>,
    /// Times the poller re-published from its start point because the ledger lost the
    /// topic (e.g. a restarted Pub/Sub emulator).
    pub republishes: AtomicU64,
    /// For a shard of a sharded table: the table and the shard's index.
    pub shard: std::sync::OnceLock<(String, u32)>,
    /// The replica holding this shard's lease at the fleet's last read (sharded tables).
    pub holder: Mutex<Option<String>>,
    /// Time spent in each step of a poll, by [`PollStep`] (steps overlap: the next page is
    /// read and encoded while the current one is published).
    pub steps: StepTimes<{ PollStep::ALL.len() }>,
    /// The change stream the table is read from, `None` when it is polled by commit
    /// timestamp.
    pub change_stream: std::sync::OnceLock<String>,
    /// While this replica reads the table's change stream: each partition being read (its
    /// token) and the time (µs) it has returned everything through.
    pub partitions: Mutex<Vec<(String, i64)>>,
    /// With `share-partitions`: the replica querying each offered partition, by token, at
    /// this replica's last read of the partition leases.
    pub partition_holders: Mutex<std::collections::BTreeMap<String, String>>,
    /// With `share-partitions`: partitions of the table's change stream queried on this
    /// replica.
    pub partitions_queried: AtomicU64,
}

/// Time spent in each step of a loop, µs per step, summed since start: how both the
/// poller's steps ([`PollStep`]) and a dispatcher's ([`DispatchStep`]) are timed.
#[derive(Debug)]
pub struct StepTimes<const N: usize>([AtomicU64; N]);

impl<const N: usize> Default for StepTimes<N> {
    fn default() -> Self {
        StepTimes(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl<const N: usize> StepTimes<N> {
    /// Adds the time since `since` to step `index`.
    pub fn add(&self, index: usize, since: std::time::Instant) {
        let micros = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.0[index].fetch_add(micros, Ordering::Relaxed);
    }

    /// Seconds spent in step `index` since start.
    pub fn seconds(&self, index: usize) -> f64 {
        self.0[index].load(Ordering::Relaxed) as f64 / 1e6
    }
}

/// A step of a poll, timed in [`TableStats::steps`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollStep {
    /// Reading a page from the source snapshot.
    Read,
    /// Encoding a page's rows as Avro messages.
    Encode,
    /// Writing a page to the ledger until it is confirmed (durable). On the embedded
    /// ledger this includes the page's progress record (same transaction).
    Publish,
    /// Advancing the watermark to the poll's read timestamp after its last page (the
    /// ledger's progress record or the watermark file).
    Watermark,
}

impl PollStep {
    /// Every step, in metric-label order.
    pub const ALL: [PollStep; 4] = [
        PollStep::Read,
        PollStep::Encode,
        PollStep::Publish,
        PollStep::Watermark,
    ];

    /// The metric label: `read`, `encode`, `publish`, `watermark`.
    pub fn label(self) -> &'static str {
        match self {
            PollStep::Read => "read",
            PollStep::Encode => "encode",
            PollStep::Publish => "publish",
            PollStep::Watermark => "watermark",
        }
    }
}

/// A step of a dispatcher's batch, timed in [`PluginStats::steps`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DispatchStep {
    /// Pulling a batch from the subscription (waiting for messages included).
    Pull,
    /// Decoding its Avro and applying the host-side filter.
    Decode,
    /// Calling the plugin (its instances, and the one-by-one retry of a failed batch).
    Call,
    /// Settling the batch: dead letters published, acks and nacks.
    Settle,
}

impl DispatchStep {
    /// Every step, in metric-label order.
    pub const ALL: [DispatchStep; 4] = [
        DispatchStep::Pull,
        DispatchStep::Decode,
        DispatchStep::Call,
        DispatchStep::Settle,
    ];

    /// The metric label: `pull`, `decode`, `call`, `settle`.
    pub fn label(self) -> &'static str {
        match self {
            DispatchStep::Pull => "pull",
            DispatchStep::Decode => "decode",
            DispatchStep::Call => "call",
            DispatchStep::Settle => "settle",
        }
    }
}

impl TableStats {
    /// Adds the time since `since` to `step`.
    pub fn time_step(&self, step: PollStep, since: std::time::Instant) {
        self.steps.add(step as usize, since);
    }

    /// Seconds spent in `step` since start.
    pub fn step_seconds(&self, step: PollStep) -> f64 {
        self.steps.seconds(step as usize)
    }

    /// The `table` (and, for a shard, `shard`) labels of this poller's metrics.
    pub fn labels(&self, name: &str) -> Vec<(&'static str, String)> {
        match self.shard.get() {
            Some((table, index)) => vec![("table", table.clone()), ("shard", index.to_string())],
            None => vec![("table", name.to_string())],
        }
    }
}

/// Counters of one plugin's subscription.
#[derive(Debug, Default)]
pub struct PluginStats {
    /// Events delivered to the plugin (before the host-side filter).
    pub events_in: AtomicU64,
    /// Events the plugin acknowledged.
    pub acked: AtomicU64,
    /// Events the plugin asked to retry.
    pub retried: AtomicU64,
    /// Events sent to the dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Events the host-side filter skipped.
    pub filtered: AtomicU64,
    /// Batch calls made into the plugin.
    pub batches: AtomicU64,
    /// Sum of batch call latencies in microseconds (with `batches`, the mean).
    pub batch_micros_total: AtomicU64,
    /// Batch latency histogram: counts per bucket of [`LATENCY_BUCKETS_MICROS`] (+Inf last).
    pub batch_latency_buckets: [AtomicU64; LATENCY_BUCKETS_MICROS.len() + 1],
    /// Commit timestamp of the newest event handled (µs), for lag.
    pub last_commit_ts: AtomicI64,
    /// The newest dead letters of this plugin (at most [`RECENT_DEAD_LETTERS`]), oldest first.
    pub recent_dead_letters: Mutex<VecDeque<DeadLetterStatus>>,
    /// Time its dispatchers spent in each step of a batch, by [`DispatchStep`].
    pub steps: StepTimes<{ DispatchStep::ALL.len() }>,
    /// The same counts per source table the plugin reads (one subscription each), by table.
    tables: Mutex<BTreeMap<String, Arc<SubscriptionStats>>>,
}

/// Counters of one subscription of a plugin that reads source tables: with
/// `subscription.tables` a plugin has one per table, so `/status` and `/metrics` show each
/// table's counts and lag beside the plugin's totals.
#[derive(Debug, Default)]
pub struct SubscriptionStats {
    /// The ledger subscription's name.
    pub subscription: String,
    /// Events delivered (before the host-side filter).
    pub events_in: AtomicU64,
    /// Deliveries acknowledged.
    pub acked: AtomicU64,
    /// Deliveries returned for retry.
    pub retried: AtomicU64,
    /// Deliveries sent to the dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Events the host-side filter skipped.
    pub filtered: AtomicU64,
    /// Commit timestamp of the newest event of this table handled (µs), for lag.
    pub last_commit_ts: AtomicI64,
}

impl SubscriptionStats {
    /// The delivery counts of this table, in the order of [`DELIVERY_COUNTERS`].
    pub fn deliveries(&self) -> [u64; 5] {
        read_deliveries([
            &self.events_in,
            &self.acked,
            &self.retried,
            &self.dead_lettered,
            &self.filtered,
        ])
    }
}

/// What a dispatcher counts into: its plugin's totals and, for a subscription reading a
/// source table, that table's [`SubscriptionStats`]; each count goes to both.
#[derive(Debug, Clone)]
pub struct DispatchCounters {
    /// The plugin's totals (and its batch latencies, which are per plugin only).
    pub plugin: Arc<PluginStats>,
    table: Option<Arc<SubscriptionStats>>,
}

impl DispatchCounters {
    /// Counts into `plugin` and, when `table` is set, into its counters of that table
    /// (subscription `subscription`).
    pub fn new(plugin: Arc<PluginStats>, table: Option<&str>, subscription: &str) -> Self {
        let table = table.map(|t| plugin.table(t, subscription));
        DispatchCounters { plugin, table }
    }

    fn add(
        &self,
        n: u64,
        total: impl Fn(&PluginStats) -> &AtomicU64,
        per_table: impl Fn(&SubscriptionStats) -> &AtomicU64,
    ) {
        total(&self.plugin).fetch_add(n, Ordering::Relaxed);
        if let Some(t) = &self.table {
            per_table(t).fetch_add(n, Ordering::Relaxed);
        }
    }

    /// `n` events given to the plugin.
    pub fn events_in(&self, n: u64) {
        self.add(n, |p| &p.events_in, |t| &t.events_in);
    }
    /// `n` deliveries acknowledged.
    pub fn acked(&self, n: u64) {
        self.add(n, |p| &p.acked, |t| &t.acked);
    }
    /// `n` deliveries returned for retry.
    pub fn retried(&self, n: u64) {
        self.add(n, |p| &p.retried, |t| &t.retried);
    }
    /// `n` deliveries dead-lettered.
    pub fn dead_lettered(&self, n: u64) {
        self.add(n, |p| &p.dead_lettered, |t| &t.dead_lettered);
    }
    /// `n` events skipped by the host-side filter.
    pub fn filtered(&self, n: u64) {
        self.add(n, |p| &p.filtered, |t| &t.filtered);
    }
    /// Events up to commit timestamp `ts` (µs) were handled.
    pub fn handled_up_to(&self, ts: i64) {
        self.plugin.last_commit_ts.fetch_max(ts, Ordering::Relaxed);
        if let Some(t) = &self.table {
            t.last_commit_ts.fetch_max(ts, Ordering::Relaxed);
        }
    }
}

/// Dead letters kept per plugin for the status page.
pub const RECENT_DEAD_LETTERS: usize = 20;

/// Upper bounds (µs) of the batch latency histogram buckets.
pub const LATENCY_BUCKETS_MICROS: [u64; 10] = [
    100, 500, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000, 5_000_000,
];

impl PluginStats {
    /// Adds the time since `since` to `step`.
    pub fn time_step(&self, step: DispatchStep, since: std::time::Instant) {
        self.steps.add(step as usize, since);
    }

    /// Seconds its dispatchers spent in `step` since start.
    pub fn step_seconds(&self, step: DispatchStep) -> f64 {
        self.steps.seconds(step as usize)
    }

    /// The plugin's delivery counts in total, in the order of [`DELIVERY_COUNTERS`].
    pub fn deliveries(&self) -> [u64; 5] {
        read_deliveries([
            &self.events_in,
            &self.acked,
            &self.retried,
            &self.dead_lettered,
            &self.filtered,
        ])
    }

    /// Remembers a dead letter for `/status`, forgetting the oldest beyond
    /// [`RECENT_DEAD_LETTERS`].
    pub fn note_dead_letter(&self, dead_letter: DeadLetterStatus) {
        let mut recent = self
            .recent_dead_letters
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if recent.len() >= RECENT_DEAD_LETTERS {
            recent.pop_front();
        }
        recent.push_back(dead_letter);
    }

    /// Records one batch call's latency.
    pub fn observe_batch(&self, micros: u64) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batch_micros_total.fetch_add(micros, Ordering::Relaxed);
        let i = LATENCY_BUCKETS_MICROS
            .iter()
            .position(|b| micros <= *b)
            .unwrap_or(LATENCY_BUCKETS_MICROS.len());
        self.batch_latency_buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The counters of source table `table`, read through `subscription` (created on first
    /// use; they survive hot swaps).
    pub fn table(&self, table: &str, subscription: &str) -> Arc<SubscriptionStats> {
        let mut t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        t.entry(table.to_string())
            .or_insert_with(|| {
                Arc::new(SubscriptionStats {
                    subscription: subscription.to_string(),
                    ..SubscriptionStats::default()
                })
            })
            .clone()
    }

    /// Forgets the tables not in `tables` (the plugin's subscriptions changed).
    pub fn retain_tables(&self, tables: &[String]) {
        let mut t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        t.retain(|name, _| tables.contains(name));
    }

    /// Snapshot of the per-table counters, by table.
    pub fn tables(&self) -> Vec<(String, Arc<SubscriptionStats>)> {
        let t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        t.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// The per-table counters as `/status` shows them.
    pub fn table_statuses(&self) -> Vec<crate::status::SubscriptionStatus> {
        self.tables()
            .into_iter()
            .map(|(table, t)| crate::status::SubscriptionStatus {
                table,
                subscription: t.subscription.clone(),
                events_in: t.events_in.load(Ordering::Relaxed),
                acked: t.acked.load(Ordering::Relaxed),
                retried: t.retried.load(Ordering::Relaxed),
                dead_lettered: t.dead_lettered.load(Ordering::Relaxed),
                filtered: t.filtered.load(Ordering::Relaxed),
                last_commit_micros: t.last_commit_ts.load(Ordering::Relaxed),
            })
            .collect()
    }
}

/// All counters of this host.
#[derive(Debug, Default)]
pub struct Metrics {
    tables: Mutex<BTreeMap<String, Arc<TableStats>>>,
    plugins: Mutex<BTreeMap<String, Arc<PluginStats>>>,
}

impl Metrics {
    /// The counters of a table (created on first use).
    pub fn table(&self, name: &str) -> Arc<TableStats> {
        let mut t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        t.entry(name.to_string()).or_default().clone()
    }

    /// The counters of one shard's poller, under the shard's unit name (the table's own
    /// name when unsharded).
    pub fn shard(&self, table: &str, shard: &ledgerhost_core::source::Shard) -> Arc<TableStats> {
        let stats = self.table(&shard.unit_name(table));
        if !shard.is_whole() {
            let _ = stats.shard.set((table.to_string(), shard.index));
        }
        stats
    }

    /// The counters of a plugin (created on first use; they survive hot swaps).
    pub fn plugin(&self, name: &str) -> Arc<PluginStats> {
        let mut p = self.plugins.lock().unwrap_or_else(|e| e.into_inner());
        p.entry(name.to_string()).or_default().clone()
    }

    /// Snapshot of every table's counters.
    pub fn tables(&self) -> Vec<(String, Arc<TableStats>)> {
        let t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        t.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Snapshot of every plugin's counters.
    pub fn plugins(&self) -> Vec<(String, Arc<PluginStats>)> {
        let p = self.plugins.lock().unwrap_or_else(|e| e.into_inner());
        p.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

impl Metrics {
    /// The per-table counters of every plugin in Prometheus text, one family per counter
    /// with `plugin` and `table` labels, and each table's lag (now − the newest commit time
    /// handled, `now` in µs) — beside the per-plugin families, which keep their totals.
    pub fn write_subscription_metrics(&self, out: &mut String, now: i64) {
        let rows: Vec<(String, String, Arc<SubscriptionStats>)> = self
            .plugins()
            .into_iter()
            .flat_map(|(p, st)| st.tables().into_iter().map(move |(t, s)| (p.clone(), t, s)))
            .collect();
        let counts: Vec<[u64; 5]> = rows.iter().map(|(_, _, s)| s.deliveries()).collect();
        for (i, (suffix, help)) in DELIVERY_COUNTERS.iter().enumerate() {
            let name = format!("ledgerhost_plugin_table_{suffix}");
            let help = format!("{help} Per source table the plugin reads.");
            let mut f = Family::new(out, &name, Kind::Counter, &help);
            for ((p, t, _), c) in rows.iter().zip(&counts) {
                f.sample(&[("plugin", p), ("table", t)], c[i]);
            }
        }
        let mut f = Family::new(
            out,
            "ledgerhost_plugin_table_lag_seconds",
            Kind::Gauge,
            "Now minus the commit time of the newest event of one source table handled.",
        );
        for (p, t, s) in &rows {
            let lag = age_seconds(now, s.last_commit_ts.load(Ordering::Relaxed));
            f.sample(&[("plugin", p), ("table", t)], lag);
        }
    }
}

/// Microseconds since the Unix epoch: the one clock, `ledgerhost_core::clock`.
pub use ledgerhost_core::clock::now_micros;
