//! The recent past the status page plots: a ring buffer per table and per plugin, one
//! [`Sample`] every [`INTERVAL`] for [`WINDOW`], taken from the counters in
//! [`crate::metrics`] by a task of the host ([`spawn_sampler`]) and served as
//! [`HostHistory`] at `/status/history`. In memory only: a restarted host starts empty.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::metrics::{Metrics, now_micros};
use crate::status::{HostHistory, Sample, Series, age_secs};

/// Time between samples.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// How far back the history reaches.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);

/// One series' ring and the counter value of its last sample (for the rate).
#[derive(Debug, Default)]
struct Ring {
    samples: VecDeque<Sample>,
    last: Option<(i64, u64)>,
}

impl Ring {
    /// Appends a sample of the cumulative `count` and `lag_secs` at `now` (µs), dropping
    /// the oldest beyond `capacity`.
    fn push(&mut self, capacity: usize, now: i64, count: u64, lag_secs: f64) {
        let rate = match self.last {
            Some((at, before)) if now > at => {
                count.saturating_sub(before) as f64 / ((now - at) as f64 / 1e6)
            }
            _ => 0.0,
        };
        self.last = Some((now, count));
        if self.samples.len() >= capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            at_micros: now,
            rate,
            lag_secs,
        });
    }
}

/// The rings of every table and plugin.
#[derive(Debug)]
pub struct History {
    interval: Duration,
    capacity: usize,
    rings: Mutex<(BTreeMap<String, Ring>, BTreeMap<String, Ring>)>,
}

impl Default for History {
    fn default() -> Self {
        History::new(INTERVAL, WINDOW)
    }
}

impl History {
    /// A history sampled every `interval`, keeping `window` of it.
    pub fn new(interval: Duration, window: Duration) -> Self {
        let capacity = (window.as_millis() / interval.as_millis().max(1)).max(1) as usize;
        History {
            interval,
            capacity,
            rings: Mutex::default(),
        }
    }

    /// Takes one sample of every table and plugin counter at `now` (µs since the epoch).
    pub fn record(&self, metrics: &Metrics, now: i64) {
        let mut rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        let (tables, plugins) = &mut *rings;
        for (name, t) in metrics.tables() {
            let w = t.watermark.load(Ordering::Relaxed);
            let lag = if w > 0 { age_secs(now, w) } else { 0.0 };
            let rows = t.rows_polled.load(Ordering::Relaxed);
            tables
                .entry(name)
                .or_default()
                .push(self.capacity, now, rows, lag);
        }
        for (name, p) in metrics.plugins() {
            let last = p.last_commit_ts.load(Ordering::Relaxed);
            let lag = if last > 0 { age_secs(now, last) } else { 0.0 };
            let acked = p.acked.load(Ordering::Relaxed);
            plugins
                .entry(name)
                .or_default()
                .push(self.capacity, now, acked, lag);
        }
    }

    /// Every series, oldest sample first.
    pub fn snapshot(&self) -> HostHistory {
        let rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        let series = |m: &BTreeMap<String, Ring>| {
            m.iter()
                .map(|(name, r)| Series {
                    name: name.clone(),
                    samples: r.samples.iter().copied().collect(),
                })
                .collect()
        };
        HostHistory {
            interval_secs: self.interval.as_secs(),
            capacity: self.capacity,
            tables: series(&rings.0),
            plugins: series(&rings.1),
        }
    }
}

/// Samples `metrics` into `history` now and every interval until `shutdown` turns true.
pub fn spawn_sampler(
    history: Arc<History>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(history.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => history.record(&metrics, now_micros()),
                _ = shutdown.changed() => break,
            }
            if *shutdown.borrow() {
                break;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_second_between_samples_and_the_ring_keeps_its_window() {
        let history = History::new(Duration::from_secs(5), Duration::from_secs(15));
        let metrics = Metrics::default();
        let t = metrics.table("orders");
        let p = metrics.plugin("counter");
        history.record(&metrics, 1_000_000);
        t.rows_polled.store(50, Ordering::Relaxed);
        t.watermark.store(4_000_000, Ordering::Relaxed);
        p.acked.store(10, Ordering::Relaxed);
        p.last_commit_ts.store(5_000_000, Ordering::Relaxed);
        history.record(&metrics, 6_000_000);
        let h = history.snapshot();
        assert_eq!(h.capacity, 3);
        assert_eq!(h.tables[0].name, "orders");
        let s = &h.tables[0].samples;
        assert_eq!((s[0].rate, s[0].lag_secs), (0.0, 0.0));
        assert_eq!((s[1].rate, s[1].lag_secs), (10.0, 2.0));
        let s = &h.plugins[0].samples;
        assert_eq!((s[1].rate, s[1].lag_secs), (2.0, 1.0));
        for at in [11_000_000, 16_000_000] {
            history.record(&metrics, at);
        }
        let s = &history.snapshot().tables[0].samples;
        assert_eq!(s.len(), 3, "the oldest sample is dropped beyond the window");
        assert_eq!(s[0].at_micros, 6_000_000);
        assert_eq!(s[2].rate, 0.0, "no rows since the previous sample");
    }
}
