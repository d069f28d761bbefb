//! The admin HTTP port: liveness, readiness, Prometheus metrics, JSON status, and the routes
//! of HTTP-triggered plugins (`/plugins/<name>/...`). Loopback by default.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use ledgerhost_runtime::manifest::World;
use ledgerhost_runtime::registry::Registry;
use ledgerhost_runtime::{HttpRequest, HttpResponse};
use tokio::sync::watch;

use crate::metrics::{LATENCY_BUCKETS_MICROS, Metrics, now_micros};

/// What the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
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
}

/// Binds `listen` and serves until `shutdown` turns true. Returns the bound address.
pub async fn serve(
    listen: &str,
    state: AdminState,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on admin.listen = {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/plugins/{name}", any(plugin_http_root))
        .route("/plugins/{name}/", any(plugin_http_root))
        .route("/plugins/{name}/{*rest}", any(plugin_http))
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
    let _ = writeln!(
        out,
        "# HELP ledgerhost_rows_polled_total Rows published to the ledger."
    );
    let _ = writeln!(out, "# TYPE ledgerhost_rows_polled_total counter");
    for (t, st) in &tables {
        let _ = writeln!(
            out,
            "ledgerhost_rows_polled_total{{table=\"{t}\"}} {}",
            st.rows_polled.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP ledgerhost_poll_errors_total Polls that failed and were retried."
    );
    let _ = writeln!(out, "# TYPE ledgerhost_poll_errors_total counter");
    for (t, st) in &tables {
        let _ = writeln!(
            out,
            "ledgerhost_poll_errors_total{{table=\"{t}\"}} {}",
            st.poll_errors.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP ledgerhost_watermark_age_seconds Age of the table's watermark (0 before the first poll)."
    );
    let _ = writeln!(out, "# TYPE ledgerhost_watermark_age_seconds gauge");
    for (t, st) in &tables {
        let w = st.watermark.load(Ordering::Relaxed);
        let age = if w > 0 {
            (now - w).max(0) as f64 / 1e6
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "ledgerhost_watermark_age_seconds{{table=\"{t}\"}} {age}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP ledgerhost_poller_leader 1 when this replica polls the table."
    );
    let _ = writeln!(out, "# TYPE ledgerhost_poller_leader gauge");
    for (t, st) in &tables {
        let _ = writeln!(
            out,
            "ledgerhost_poller_leader{{table=\"{t}\"}} {}",
            st.leader.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP ledgerhost_poller_republishes_total Re-publishes from the start point after the ledger lost a topic."
    );
    let _ = writeln!(out, "# TYPE ledgerhost_poller_republishes_total counter");
    for (t, st) in &tables {
        let _ = writeln!(
            out,
            "ledgerhost_poller_republishes_total{{table=\"{t}\"}} {}",
            st.republishes.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP ledgerhost_source_transactions_total Transactions this host ran in the source, by kind (read_write, read_only) and purpose (poll_snapshot, schema, lease_renew, lease_take, lease_read, release, probe)."
    );
    let _ = writeln!(out, "# TYPE ledgerhost_source_transactions_total counter");
    let backend = s.source.backend();
    for c in s.source.transactions() {
        let _ = writeln!(
            out,
            "ledgerhost_source_transactions_total{{backend=\"{backend}\",kind=\"{}\",purpose=\"{}\"}} {}",
            c.kind.label(),
            c.purpose.label(),
            c.count
        );
    }

    let plugins = s.metrics.plugins();
    type Read = fn(&crate::metrics::PluginStats) -> u64;
    let counters: [(&str, &str, Read); 5] = [
        (
            "ledgerhost_plugin_events_in_total",
            "Events given to the plugin.",
            |p| p.events_in.load(Ordering::Relaxed),
        ),
        (
            "ledgerhost_plugin_acked_total",
            "Deliveries acknowledged (handled, filtered or dead-lettered).",
            |p| p.acked.load(Ordering::Relaxed),
        ),
        (
            "ledgerhost_plugin_retried_total",
            "Deliveries returned for retry with backoff.",
            |p| p.retried.load(Ordering::Relaxed),
        ),
        (
            "ledgerhost_plugin_dead_lettered_total",
            "Deliveries sent to the dead-letter topic.",
            |p| p.dead_lettered.load(Ordering::Relaxed),
        ),
        (
            "ledgerhost_plugin_filtered_total",
            "Events skipped by the host-side filter.",
            |p| p.filtered.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, read) in counters {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (p, st) in &plugins {
            let _ = writeln!(out, "{name}{{plugin=\"{p}\"}} {}", read(st));
        }
    }
    let _ = writeln!(
        out,
        "# HELP ledgerhost_plugin_batch_seconds Time the plugin took per batch."
    );
    let _ = writeln!(out, "# TYPE ledgerhost_plugin_batch_seconds histogram");
    for (p, st) in &plugins {
        let mut cumulative = 0u64;
        for (i, bound) in LATENCY_BUCKETS_MICROS.iter().enumerate() {
            cumulative += st.batch_latency_buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "ledgerhost_plugin_batch_seconds_bucket{{plugin=\"{p}\",le=\"{}\"}} {cumulative}",
                *bound as f64 / 1e6
            );
        }
        cumulative +=
            st.batch_latency_buckets[LATENCY_BUCKETS_MICROS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "ledgerhost_plugin_batch_seconds_bucket{{plugin=\"{p}\",le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            out,
            "ledgerhost_plugin_batch_seconds_sum{{plugin=\"{p}\"}} {}",
            st.batch_micros_total.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "ledgerhost_plugin_batch_seconds_count{{plugin=\"{p}\"}} {}",
            st.batches.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP ledgerhost_plugin_lag_seconds Now minus the commit time of the newest event handled."
    );
    let _ = writeln!(out, "# TYPE ledgerhost_plugin_lag_seconds gauge");
    for (p, st) in &plugins {
        let last = st.last_commit_ts.load(Ordering::Relaxed);
        let lag = if last > 0 {
            (now - last).max(0) as f64 / 1e6
        } else {
            0.0
        };
        let _ = writeln!(out, "ledgerhost_plugin_lag_seconds{{plugin=\"{p}\"}} {lag}");
    }
    let runtime_stats: Vec<_> = s
        .registry
        .plugins()
        .iter()
        .map(|p| (p.manifest().name.clone(), p.stats()))
        .collect();
    type ReadRuntime = fn(&ledgerhost_runtime::PluginStats) -> u64;
    let gauges: [(&str, &str, &str, ReadRuntime); 5] = [
        (
            "ledgerhost_plugin_rebuilds_total",
            "counter",
            "Instances rebuilt after a trap, deadline or memory limit.",
            |s| s.rebuilds,
        ),
        (
            "ledgerhost_plugin_traps_total",
            "counter",
            "Calls that trapped.",
            |s| s.traps,
        ),
        (
            "ledgerhost_plugin_deadline_hits_total",
            "counter",
            "Calls stopped at their deadline.",
            |s| s.deadline_hits,
        ),
        (
            "ledgerhost_plugin_out_of_memory_total",
            "counter",
            "Calls stopped at the memory cap.",
            |s| s.out_of_memory,
        ),
        (
            "ledgerhost_plugin_memory_high_water_bytes",
            "gauge",
            "Largest linear memory the instance reached.",
            |s| s.memory_high_water,
        ),
    ];
    for (name, kind, help, read) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (p, st) in &runtime_stats {
            let _ = writeln!(out, "{name}{{plugin=\"{p}\"}} {}", read(st));
        }
    }
    let _ = writeln!(
        out,
        "# HELP ledgerhost_plugin_info The serving version of each plugin (value 1)."
    );
    let _ = writeln!(out, "# TYPE ledgerhost_plugin_info gauge");
    for p in s.registry.plugins() {
        let _ = writeln!(
            out,
            "ledgerhost_plugin_info{{plugin=\"{}\",version=\"{}\"}} 1",
            p.manifest().name,
            p.version()
        );
    }
    let refused = s.refused.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let _ = writeln!(
        out,
        "# HELP ledgerhost_plugin_refused 1 while the plugin's files on disk are refused."
    );
    let _ = writeln!(out, "# TYPE ledgerhost_plugin_refused gauge");
    for name in refused.keys() {
        let _ = writeln!(out, "ledgerhost_plugin_refused{{plugin=\"{name}\"}} 1");
    }
    let _ = writeln!(out, "# HELP ledgerhost_ready 1 when the host is ready.");
    let _ = writeln!(out, "# TYPE ledgerhost_ready gauge");
    let _ = writeln!(
        out,
        "ledgerhost_ready {}",
        u8::from(s.ready.load(Ordering::Relaxed))
    );
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4")],
        out,
    )
        .into_response()
}

async fn status(State(s): State<AdminState>) -> Response {
    let tables: Vec<_> = s
        .metrics
        .tables()
        .into_iter()
        .map(|(name, t)| {
            serde_json::json!({
                "table": name,
                "rows_polled": t.rows_polled.load(Ordering::Relaxed),
                "poll_errors": t.poll_errors.load(Ordering::Relaxed),
                "watermark_micros": t.watermark.load(Ordering::Relaxed),
                "leader": t.leader.load(Ordering::Relaxed) == 1,
                "stopped": t.stopped.lock().unwrap_or_else(|p| p.into_inner()).clone(),
                "republishes": t.republishes.load(Ordering::Relaxed),
            })
        })
        .collect();
    let refused = s.refused.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let serving = s.registry.plugins();
    let mut plugins: Vec<_> = serving
        .iter()
        .map(|p| {
            let m = p.manifest();
            let st = p.stats();
            let counters = s.metrics.plugin(&m.name);
            // A refused new version leaves the old one serving; say both.
            let (state, last_error) = match refused.get(&m.name) {
                Some((file, why)) => (
                    "serving (newer files refused)",
                    Some(format!("{file}: {why}")),
                ),
                None => ("serving", st.last_error.clone()),
            };
            serde_json::json!({
                "name": m.name,
                "version": p.version(),
                "world": format!("{:?}", m.world),
                "state": state,
                "last_error": last_error,
                "calls": st.calls,
                "traps": st.traps,
                "rebuilds": st.rebuilds,
                "events_in": counters.events_in.load(Ordering::Relaxed),
                "acked": counters.acked.load(Ordering::Relaxed),
                "retried": counters.retried.load(Ordering::Relaxed),
                "dead_lettered": counters.dead_lettered.load(Ordering::Relaxed),
            })
        })
        .collect();
    for (name, (file, why)) in &refused {
        if !serving.iter().any(|p| p.manifest().name == *name) {
            plugins.push(serde_json::json!({
                "name": name,
                "version": null,
                "state": "refused",
                "last_error": format!("{file}: {why}"),
            }));
        }
    }
    axum::Json(serde_json::json!({
        "ready": s.ready.load(Ordering::Relaxed),
        "tables": tables,
        "plugins": plugins,
    }))
    .into_response()
}

async fn plugin_http_root(
    state: State<AdminState>,
    Path(name): Path<String>,
    method: Method,
    query: RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    call_plugin(state.0, name, "/".into(), method, query, headers, body).await
}

async fn plugin_http(
    state: State<AdminState>,
    Path((name, rest)): Path<(String, String)>,
    method: Method,
    query: RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    call_plugin(
        state.0,
        name,
        format!("/{rest}"),
        method,
        query,
        headers,
        body,
    )
    .await
}

async fn call_plugin(
    s: AdminState,
    name: String,
    path: String,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let plugin = match s.registry.slot(&name).and_then(|slot| slot.current()) {
        Some(p) if p.manifest().world == World::HttpTrigger => p,
        Some(p) if p.manifest().world == World::Scheduled && path == "/tick" => {
            return tick_now(&p, &name, &method, query.as_deref()).await;
        }
        Some(p) if p.manifest().world == World::Scheduled => {
            return (
                StatusCode::NOT_FOUND,
                format!(
                    "plugin `{name}` is a scheduled plugin: its only route is \
                     `POST /plugins/{name}/tick[?now=<µs since the epoch>]`"
                ),
            )
                .into_response();
        }
        Some(_) => {
            return (
                StatusCode::NOT_FOUND,
                format!("plugin `{name}` is not an http-trigger plugin"),
            )
                .into_response();
        }
        None => {
            return (StatusCode::NOT_FOUND, format!("no plugin named `{name}`")).into_response();
        }
    };
    let request = HttpRequest {
        method: method.to_string(),
        path,
        query: query.unwrap_or_default(),
        headers: headers
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        body: body.to_vec(),
    };
    match plugin.http(request).await {
        Ok(HttpResponse {
            status,
            headers,
            body,
        }) => {
            let mut response = (
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                body,
            )
                .into_response();
            for (k, v) in headers {
                if let (Ok(k), Ok(v)) = (
                    axum::http::HeaderName::try_from(k),
                    axum::http::HeaderValue::try_from(v),
                ) {
                    response.headers_mut().insert(k, v);
                }
            }
            response
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("plugin `{name}` failed: {e}"),
        )
            .into_response(),
    }
}

/// `POST /plugins/<name>/tick[?now=<µs>]`: runs one tick of a scheduled plugin now, between
/// its scheduled ticks (calls of one plugin never overlap). `now` is the time the plugin is
/// told (default: the host's clock), e.g. to compact a span before its scheduled hour.
async fn tick_now(
    plugin: &ledgerhost_runtime::Plugin,
    name: &str,
    method: &Method,
    query: Option<&str>,
) -> Response {
    if method != Method::POST {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            format!("use POST /plugins/{name}/tick to run a tick"),
        )
            .into_response();
    }
    let mut now = now_micros();
    for (k, v) in query
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
    {
        if k == "now" {
            match v.parse::<i64>() {
                Ok(n) => now = n,
                Err(_) => {
                    return (
                        StatusCode::BAD_REQUEST,
                        format!("`now` = {v:?} is not microseconds since the epoch"),
                    )
                        .into_response();
                }
            }
        }
    }
    tracing::info!(plugin = name, now, "tick requested on the admin port");
    match plugin.tick(now).await {
        Ok(()) => {
            tracing::info!(plugin = name, "tick done");
            (StatusCode::OK, "tick done\n").into_response()
        }
        Err(e) => {
            tracing::warn!(plugin = name, error = %e, "requested tick failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("tick of plugin `{name}` failed: {e}\n"),
            )
                .into_response()
        }
    }
}
