//! Counters the host keeps per table and per plugin, read by the demo summary, the status
//! endpoint and the Prometheus exporter.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::status::DeadLetterStatus;

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
}

/// Dead letters kept per plugin for the status page.
pub const RECENT_DEAD_LETTERS: usize = 20;

/// Upper bounds (µs) of the batch latency histogram buckets.
pub const LATENCY_BUCKETS_MICROS: [u64; 10] = [
    100, 500, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000, 5_000_000,
];

impl PluginStats {
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

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
