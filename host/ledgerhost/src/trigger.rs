//! The data plane of the admin port: `/plugins/<name>/...` hands an HTTP request to an
//! HTTP-triggered plugin and its answer back; `POST /plugins/<name>/tick` runs one tick of a
//! scheduled plugin now.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use ledgerhost_runtime::manifest::World;
use ledgerhost_runtime::{HttpRequest, HttpResponse};

use crate::admin::AdminState;
use crate::metrics::now_micros;

/// The plugin routes, merged into the admin router.
pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/plugins/{name}", any(plugin_http_root))
        .route("/plugins/{name}/", any(plugin_http_root))
        .route("/plugins/{name}/{*rest}", any(plugin_http))
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
