//! The admin HTTP port: liveness, readiness, Prometheus metrics, JSON status
//! ([`crate::status`]) and its history ([`crate::history`]), and the live status page at `/`
//! (`admin/page.html` and `admin/page.js`, compiled into the binary: no CDN, works offline;
//! the script fetches `/status` and `/status/history` and draws inline SVG). The same port
//! serves the routes of HTTP-triggered plugins ([`crate::trigger`], the data plane).
//! Loopback by default.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;

mod prometheus;
mod state;

pub use state::AdminState;

use crate::metrics::now_micros;
use crate::status::{DeadLetterStatus, HostStatus, PluginStatus, ServeState, TableStatus};

/// The status page.
const PAGE_HTML: &str = include_str!("page.html");
/// The status page's script (vanilla JavaScript, no library).
const PAGE_JS: &str = include_str!("page.js");

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
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4")],
        prometheus::render(&s),
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
            change_stream: t.change_stream.get().cloned(),
            partitions: {
                let holders = t
                    .partition_holders
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                t.partitions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .map(|(token, through)| crate::status::PartitionStatus {
                        token: token.clone(),
                        through_micros: *through,
                        holder: holders.get(token).cloned(),
                    })
                    .collect()
            },
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
                    ServeState::ServingNewerRefused,
                    Some(format!("{file}: {why}")),
                ),
                None => (ServeState::Serving, st.last_error.clone()),
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
                state: ServeState::Refused,
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
