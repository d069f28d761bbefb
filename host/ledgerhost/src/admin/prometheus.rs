//! `/metrics`: every counter and gauge of the host in Prometheus' text format, each family
//! written through [`crate::metrics::exposition`].

use std::sync::atomic::Ordering;

use crate::metrics::exposition::{Family, Kind, age_seconds};
use crate::metrics::{DELIVERY_COUNTERS, LATENCY_BUCKETS_MICROS, now_micros};

use super::state::AdminState;

/// The whole exposition, as `/metrics` answers it.
pub(super) fn render(s: &AdminState) -> String {
    let mut out = String::new();
    let tables = s.metrics.tables();
    let now = now_micros();
    type ReadTable = fn(&crate::metrics::TableStats, i64) -> f64;
    let table_families: [(&str, Kind, &str, ReadTable); 7] = [
        (
            "ledgerhost_rows_polled_total",
            Kind::Counter,
            "Rows published to the ledger.",
            |t, _| t.rows_polled.load(Ordering::Relaxed) as f64,
        ),
        (
            "ledgerhost_poll_errors_total",
            Kind::Counter,
            "Polls that failed and were retried.",
            |t, _| t.poll_errors.load(Ordering::Relaxed) as f64,
        ),
        (
            "ledgerhost_watermark_age_seconds",
            Kind::Gauge,
            "Age of the table's watermark (0 before the first poll).",
            |t, now| age_seconds(now, t.watermark.load(Ordering::Relaxed)),
        ),
        (
            "ledgerhost_poller_leader",
            Kind::Gauge,
            "1 when this replica polls the table.",
            |t, _| t.leader.load(Ordering::Relaxed) as f64,
        ),
        (
            "ledgerhost_change_stream_partitions",
            Kind::Gauge,
            "Partitions of the table's change stream this replica reads (0 for a table polled \
             by commit timestamp, or read by another replica).",
            |t, _| t.partitions.lock().unwrap_or_else(|p| p.into_inner()).len() as f64,
        ),
        (
            "ledgerhost_change_stream_partitions_queried",
            Kind::Gauge,
            "Partitions of the table's change stream whose queries run on this replica for a \
             shared read (share-partitions; 0 otherwise).",
            |t, _| t.partitions_queried.load(Ordering::Relaxed) as f64,
        ),
        (
            "ledgerhost_poller_republishes_total",
            Kind::Counter,
            "Re-publishes from the start point after the ledger lost a topic.",
            |t, _| t.republishes.load(Ordering::Relaxed) as f64,
        ),
    ];
    for (name, kind, help, read) in table_families {
        let mut f = Family::new(&mut out, name, kind, help);
        for (t, st) in &tables {
            let labels = st.labels(t);
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            f.sample(&labels, read(st, now));
        }
    }
    let mut f = Family::new(
        &mut out,
        "ledgerhost_poll_step_seconds_total",
        Kind::Counter,
        "Time the table's (or shard's) poller spent reading pages, encoding them, writing \
         them to the ledger until confirmed, and advancing the watermark (the next page is \
         read while one is written).",
    );
    for (t, st) in &tables {
        for step in crate::metrics::PollStep::ALL {
            let mut labels = st.labels(t);
            labels.push(("step", step.label().to_string()));
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            f.sample(&labels, st.step_seconds(step));
        }
    }
    let mut f = Family::new(
        &mut out,
        "ledgerhost_source_transactions_total",
        Kind::Counter,
        "Transactions this host ran in the source, by kind (read_write, read_only) and purpose \
         (poll_snapshot, schema, lease_renew, lease_take, lease_read, release, probe).",
    );
    let backend = s.source.backend();
    for c in s.source.transactions() {
        f.sample(
            &[
                ("backend", backend),
                ("kind", c.kind.label()),
                ("purpose", c.purpose.label()),
            ],
            c.count,
        );
    }

    let plugins = s.metrics.plugins();
    let counts: Vec<[u64; 5]> = plugins.iter().map(|(_, st)| st.deliveries()).collect();
    for (i, (suffix, help)) in DELIVERY_COUNTERS.iter().enumerate() {
        let name = format!("ledgerhost_plugin_{suffix}");
        let mut f = Family::new(&mut out, &name, Kind::Counter, help);
        for ((p, _), c) in plugins.iter().zip(&counts) {
            f.sample(&[("plugin", p)], c[i]);
        }
    }
    let mut f = Family::new(
        &mut out,
        "ledgerhost_plugin_batch_seconds",
        Kind::Histogram,
        "Time the plugin took per batch.",
    );
    for (p, st) in &plugins {
        let mut cumulative = 0u64;
        for (i, bound) in LATENCY_BUCKETS_MICROS.iter().enumerate() {
            cumulative += st.batch_latency_buckets[i].load(Ordering::Relaxed);
            let le = (*bound as f64 / 1e6).to_string();
            f.sample_of("_bucket", &[("plugin", p), ("le", &le)], cumulative);
        }
        cumulative +=
            st.batch_latency_buckets[LATENCY_BUCKETS_MICROS.len()].load(Ordering::Relaxed);
        f.sample_of("_bucket", &[("plugin", p), ("le", "+Inf")], cumulative);
        let sum = st.batch_micros_total.load(Ordering::Relaxed) as f64 / 1e6;
        f.sample_of("_sum", &[("plugin", p)], sum);
        f.sample_of(
            "_count",
            &[("plugin", p)],
            st.batches.load(Ordering::Relaxed),
        );
    }
    let mut f = Family::new(
        &mut out,
        "ledgerhost_dispatch_step_seconds_total",
        Kind::Counter,
        "Time the plugin's dispatchers spent pulling batches (waiting included), decoding and \
         filtering them, calling the plugin, and settling (dead letters, acks, nacks).",
    );
    for (p, st) in &plugins {
        for step in crate::metrics::DispatchStep::ALL {
            f.sample(
                &[("plugin", p), ("step", step.label())],
                st.step_seconds(step),
            );
        }
    }
    let mut f = Family::new(
        &mut out,
        "ledgerhost_plugin_lag_seconds",
        Kind::Gauge,
        "Now minus the commit time of the newest event handled.",
    );
    for (p, st) in &plugins {
        let lag = age_seconds(now, st.last_commit_ts.load(Ordering::Relaxed));
        f.sample(&[("plugin", p)], lag);
    }
    s.metrics.write_subscription_metrics(&mut out, now);
    let runtime_stats: Vec<_> = s
        .registry
        .plugins()
        .iter()
        .map(|p| (p.manifest().name.clone(), p.stats()))
        .collect();
    type ReadRuntime = fn(&ledgerhost_runtime::PluginStats) -> u64;
    let runtime_families: [(&str, Kind, &str, ReadRuntime); 5] = [
        (
            "ledgerhost_plugin_rebuilds_total",
            Kind::Counter,
            "Instances rebuilt after a trap, deadline or memory limit.",
            |s| s.rebuilds,
        ),
        (
            "ledgerhost_plugin_traps_total",
            Kind::Counter,
            "Calls that trapped.",
            |s| s.traps,
        ),
        (
            "ledgerhost_plugin_deadline_hits_total",
            Kind::Counter,
            "Calls stopped at their deadline.",
            |s| s.deadline_hits,
        ),
        (
            "ledgerhost_plugin_out_of_memory_total",
            Kind::Counter,
            "Calls stopped at the memory cap.",
            |s| s.out_of_memory,
        ),
        (
            "ledgerhost_plugin_memory_high_water_bytes",
            Kind::Gauge,
            "Largest linear memory any one instance reached (the cap is per instance).",
            |s| s.memory_high_water,
        ),
    ];
    for (name, kind, help, read) in runtime_families {
        let mut f = Family::new(&mut out, name, kind, help);
        for (p, st) in &runtime_stats {
            f.sample(&[("plugin", p)], read(st));
        }
    }
    let serving = s.registry.plugins();
    let mut f = Family::new(
        &mut out,
        "ledgerhost_plugin_info",
        Kind::Gauge,
        "The serving version of each plugin (value 1).",
    );
    for p in &serving {
        f.sample(
            &[("plugin", &p.manifest().name), ("version", p.version())],
            1,
        );
    }
    let mut f = Family::new(
        &mut out,
        "ledgerhost_plugin_instances",
        Kind::Gauge,
        "Instances serving the plugin's version (subscription.instances).",
    );
    for p in &serving {
        let m = p.manifest();
        f.sample(&[("plugin", &m.name)], m.instances());
    }
    let refused = s.refused.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut f = Family::new(
        &mut out,
        "ledgerhost_plugin_refused",
        Kind::Gauge,
        "1 while the plugin's files on disk are refused.",
    );
    for name in refused.keys() {
        f.sample(&[("plugin", name)], 1);
    }
    let mut f = Family::new(
        &mut out,
        "ledgerhost_ready",
        Kind::Gauge,
        "1 when the host is ready.",
    );
    f.sample(&[], u8::from(s.ready.load(Ordering::Relaxed)));
    out
}
