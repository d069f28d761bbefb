//! The admin HTTP port: liveness, readiness, Prometheus metrics, JSON status
//! ([`crate::status`]) and its history ([`crate::history`]), and the live status page at `/`
//! (`admin/page.html` and `admin/page.js`, compiled into the binary: no CDN, works offline;
//! the script fetches `/status` and `/status/history` and draws inline SVG). The same port
//! serves the routes of HTTP-triggered plugins ([`crate::trigger`], the data plane).
//! Loopback by default.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ledgerhost_runtime::registry::Registry;
use tokio::sync::watch;

use crate::metrics::exposition::{Family, Kind, age_seconds};
use crate::metrics::{DELIVERY_COUNTERS, LATENCY_BUCKETS_MICROS, Metrics, now_micros};
use crate::status::{DeadLetterStatus, HostStatus, PluginState, PluginStatus, TableStatus};

/// What the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    /// Counters of tables and plugins.
    pub metrics: Arc<Metrics>,
    /// The loaded plugins.
    pub registry: Arc<Registry>,
    /// Set once the host finished starting (tables prepared, plugins loaded); cleared when
    /// the drain starts, so a load balancer stops sending work.
    pub ready: Arc<AtomicBool>,
    /// Plugin files the registry refused, by plugin name: (file, reason).
    pub refused: Arc<std::sync::Mutex<std::collections::BTreeMap<String, (String, String)>>>,
    /// Reachability checks of the remote backends: ready also means all of them answer.
    pub probes: Arc<Vec<crate::backends::Probe>>,
    /// The source, for its transaction counters.
    pub source: Arc<dyn ledgerhost_core::source::Source>,
    /// Samples of the last minutes, for the page's plots.
    pub history: Arc<crate::history::History>,
}

/// The status page.
const PAGE_HTML: &str = include_str!("admin/page.html");
/// The status page's script (vanilla JavaScript, no library).
const PAGE_JS: &str = include_str!("admin/page.js");

/// Binds `listen` and serves until `shutdown` turns true. Returns the bound address.
pub async fn serve(
    listen: &str,
    state: AdminState,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on admin.listen = {listen}"))?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/status/history", get(history))
        .route("/", get(page))
        .route("/page.js", get(page_js))
        .merge(crate::trigger::routes())
        .with_state(state);
    let handle = tokio::spawn(async move {
        let stop = async move {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "admin HTTP server failed");
        }
    });
    tracing::info!(%addr, "admin HTTP listening");
    Ok((addr, handle))
}

async fn readyz(State(s): State<AdminState>) -> Response {
    if !s.ready.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready (starting or draining)",
        )
            .into_response();
    }
    let mut down = Vec::new();
    for probe in s.probes.iter() {
        if let Err(why) = probe.run().await {
            down.push(why);
        }
    }
    if down.is_empty() {
        (StatusCode::OK, "ready").into_response()
    } else {
        tracing::warn!(unreachable = %down.join("; "), "not ready: a backend does not answer");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}", down.join("; ")),
        )
            .into_response()
    }
}

async fn metrics(State(s): State<AdminState>) -> Response {
    let mut out = String::new();
    let tables = s.metrics.tables();
    let now = now_micros();
    type ReadTable = fn(&crate::metrics::TableStats, i64) -> f64;
    let table_families: [(&str, Kind, &str, ReadTable); 5] = [
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
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4")],
        out,
    )
        .into_response()
}

async fn status(State(s): State<AdminState>) -> Response {
    axum::Json(host_status(&s)).into_response()
}

async fn history(State(s): State<AdminState>) -> Response {
    axum::Json(s.history.snapshot()).into_response()
}

async fn page() -> Response {
    (
        StatusCode::OK,
        [
            ("content-type", "text/html; charset=utf-8"),
            // Everything the page needs comes from this port.
            (
                "content-security-policy",
                "default-src 'self'; style-src 'self' 'unsafe-inline'",
            ),
        ],
        PAGE_HTML,
    )
        .into_response()
}

async fn page_js() -> Response {
    (
        StatusCode::OK,
        [("content-type", "text/javascript; charset=utf-8")],
        PAGE_JS,
    )
        .into_response()
}

/// The [`HostStatus`] of this host now.
pub fn host_status(s: &AdminState) -> HostStatus {
    let tables = s
        .metrics
        .tables()
        .into_iter()
        .map(|(table, t)| TableStatus {
            table,
            rows_polled: t.rows_polled.load(Ordering::Relaxed),
            poll_errors: t.poll_errors.load(Ordering::Relaxed),
            watermark_micros: t.watermark.load(Ordering::Relaxed),
            leader: t.leader.load(Ordering::Relaxed) == 1,
            shard: t.shard.get().map(|(_, index)| *index),
            holder: t.holder.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            stopped: t.stopped.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            republishes: t.republishes.load(Ordering::Relaxed),
        })
        .collect();
    let refused = s.refused.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let serving = s.registry.plugins();
    let mut plugins: Vec<PluginStatus> = serving
        .iter()
        .map(|p| {
            let m = p.manifest();
            let st = p.stats();
            let counters = s.metrics.plugin(&m.name);
            // A refused new version leaves the old one serving; say both.
            let (state, last_error) = match refused.get(&m.name) {
                Some((file, why)) => (
                    PluginState::ServingNewerRefused,
                    Some(format!("{file}: {why}")),
                ),
                None => (PluginState::Serving, st.last_error.clone()),
            };
            PluginStatus {
                name: m.name.clone(),
                version: Some(p.version().to_string()),
                world: Some(format!("{:?}", m.world)),
                state,
                instances: m.instances(),
                last_error,
                calls: st.calls,
                traps: st.traps,
                rebuilds: st.rebuilds,
                events_in: counters.events_in.load(Ordering::Relaxed),
                acked: counters.acked.load(Ordering::Relaxed),
                retried: counters.retried.load(Ordering::Relaxed),
                dead_lettered: counters.dead_lettered.load(Ordering::Relaxed),
                last_commit_micros: counters.last_commit_ts.load(Ordering::Relaxed),
                tables: counters.table_statuses(),
            }
        })
        .collect();
    for (name, (file, why)) in &refused {
        if !serving.iter().any(|p| p.manifest().name == *name) {
            plugins.push(PluginStatus {
                name: name.clone(),
                version: None,
                world: None,
                state: PluginState::Refused,
                instances: 0,
                last_error: Some(format!("{file}: {why}")),
                calls: 0,
                traps: 0,
                rebuilds: 0,
                events_in: 0,
                acked: 0,
                retried: 0,
                dead_lettered: 0,
                last_commit_micros: 0,
                tables: Vec::new(),
            });
        }
    }
    let mut dead_letters: Vec<DeadLetterStatus> = s
        .metrics
        .plugins()
        .iter()
        .flat_map(|(_, p)| {
            p.recent_dead_letters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        })
        .collect();
    dead_letters.sort_by_key(|d| std::cmp::Reverse(d.at_micros));
    dead_letters.truncate(crate::metrics::RECENT_DEAD_LETTERS);
    HostStatus {
        ready: s.ready.load(Ordering::Relaxed),
        tables,
        plugins,
        now_micros: now_micros(),
        dead_letters,
    }
}
