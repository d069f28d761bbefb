//! A strict front for the Pub/Sub emulator: an HTTP reverse proxy on a free loopback port
//! that forwards every request to the emulator, but first refuses, as production does
//! (HTTP 400, `INVALID_ARGUMENT`, a message naming the rule), every request the production
//! service refuses and the emulator accepts. The rules are `ledgerhost_core::ledger::limits`
//! (each cited there); this file only finds the fields they apply to in the REST requests.
//!
//! The host speaks to Pub/Sub only over REST/JSON: the admin clients of `google-cloud-pubsub`
//! (`PUT`/`GET`/`PATCH`/`DELETE /v1/projects/P/topics/T` and `…/subscriptions/S`) and the
//! data plane of `host/ledger/src/pubsub/rest.rs` (`POST …/topics/T:publish`,
//! `…/subscriptions/S:pull`, `:acknowledge`, `:modifyAckDeadline`). gRPC is not proxied.
//!
//! The front counts requests by RPC, keeps every refusal, and records the shape of every
//! Publish (messages, distinct ordering keys), so a test can assert on what was sent.
//!
//! ```text
//! let front = PubSubFront::start("http://127.0.0.1:8085");
//! // point clients at front.endpoint()
//! front.assert_no_refusals("my test");
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode};
use base64::Engine as _;
use ledgerhost_core::ledger::{Message, limits};
use serde_json::Value as Json;

/// Refusals printed in a failed assertion.
const SHOWN_REFUSALS: usize = 10;

/// The Pub/Sub RPC a REST request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rpc {
    CreateTopic,
    GetTopic,
    UpdateTopic,
    DeleteTopic,
    ListTopics,
    ListTopicSubscriptions,
    Publish,
    CreateSubscription,
    GetSubscription,
    UpdateSubscription,
    DeleteSubscription,
    ListSubscriptions,
    Pull,
    Acknowledge,
    ModifyAckDeadline,
    /// Anything else (forwarded unchecked).
    Other,
}

/// The shape of one Publish request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishShape {
    /// The topic id (last part of the path).
    pub topic: String,
    pub messages: usize,
    /// Distinct ordering keys among the messages (the empty key counts as one).
    pub ordering_keys: usize,
    /// Refused by the front.
    pub refused: bool,
}

/// A request the front refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub rpc: Rpc,
    pub method: String,
    pub path: String,
    /// The rule, as sent in the error's `message`.
    pub message: String,
}

/// What the front saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrontStats {
    /// Requests by RPC, refused ones included.
    pub requests: BTreeMap<Rpc, u64>,
    /// Requests refused.
    pub refused: u64,
    /// Every Publish request, in arrival order.
    pub publishes: Vec<PublishShape>,
    /// Requests the emulator could not be reached for (answered 503).
    pub unreachable: u64,
}

impl FrontStats {
    /// Requests of `rpc`.
    pub fn count(&self, rpc: Rpc) -> u64 {
        self.requests.get(&rpc).copied().unwrap_or(0)
    }

    /// The most distinct ordering keys one Publish request carried.
    pub fn max_ordering_keys_per_publish(&self) -> usize {
        self.publishes
            .iter()
            .map(|p| p.ordering_keys)
            .max()
            .unwrap_or(0)
    }

    /// Messages over all Publish requests the front let through.
    pub fn published_messages(&self) -> usize {
        self.publishes
            .iter()
            .filter(|p| !p.refused)
            .map(|p| p.messages)
            .sum()
    }
}

#[derive(Default)]
struct Shared {
    stats: FrontStats,
    refusals: Vec<Refusal>,
}

struct State {
    upstream: String,
    http: reqwest::Client,
    shared: Mutex<Shared>,
}

impl State {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running front; stopped on drop. With [`PubSubFront::fail_on_refusals_at_drop`], dropping
/// it with refusals recorded panics (failing the test that owned it).
pub struct PubSubFront {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    check_at_drop: Option<String>,
}

impl PubSubFront {
    /// Starts a front forwarding to `upstream` (`http://127.0.0.1:PORT`), on its own thread
    /// and runtime (so a test that blocks its own runtime does not stall it).
    pub fn start(upstream: impl Into<String>) -> Self {
        let upstream = upstream.into().trim_end_matches('/').to_string();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the Pub/Sub front");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("front address");
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // A Pull is held by the server for seconds; the client bounds it.
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .expect("the front's HTTP client");
        let state = Arc::new(State {
            upstream,
            http,
            shared: Mutex::default(),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = state.clone();
        let thread = std::thread::Builder::new()
            .name("pubsub-front".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("the front's runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let app = axum::Router::new().fallback(move |req: Request<Body>| {
                        let state = served.clone();
                        async move { handle(state, req).await }
                    });
                    tokio::select! {
                        r = axum::serve(listener, app) => {
                            if let Err(e) = r {
                                eprintln!("pubsub front stopped: {e}");
                            }
                        }
                        _ = stopped => {}
                    }
                });
                rt.shutdown_background();
            })
            .expect("spawn the front's thread");
        PubSubFront {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
            check_at_drop: None,
        }
    }

    /// Makes dropping the front panic when it refused anything (`context` names the test),
    /// unless the thread is already panicking.
    pub fn fail_on_refusals_at_drop(mut self, context: impl Into<String>) -> Self {
        self.check_at_drop = Some(context.into());
        self
    }

    /// Stops checking at drop (a test that sends forbidden requests on purpose).
    pub fn allow_refusals(&mut self) {
        self.check_at_drop = None;
    }

    /// `http://127.0.0.1:PORT` of the front.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT` of the front (a `PUBSUB_EMULATOR_HOST` value).
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The upstream (emulator) endpoint.
    pub fn upstream(&self) -> &str {
        &self.state.upstream
    }

    /// A copy of the counters.
    pub fn stats(&self) -> FrontStats {
        self.state.lock().stats.clone()
    }

    /// Every refusal so far.
    pub fn refusals(&self) -> Vec<Refusal> {
        self.state.lock().refusals.clone()
    }

    /// Forgets the counters and refusals.
    pub fn reset(&self) {
        *self.state.lock() = Shared::default();
    }

    /// Panics, listing them, if the front refused any request.
    pub fn assert_no_refusals(&self, context: &str) {
        if let Some(report) = self.refusal_report(context) {
            panic!("{report}");
        }
    }

    fn refusal_report(&self, context: &str) -> Option<String> {
        let refusals = self.refusals();
        if refusals.is_empty() {
            return None;
        }
        let shown: Vec<String> = refusals
            .iter()
            .take(SHOWN_REFUSALS)
            .map(|r| format!("  {:?} {} {}: {}", r.rpc, r.method, r.path, r.message))
            .collect();
        Some(format!(
            "{context}: the strict Pub/Sub front refused {} request(s) production would refuse \
             (the emulator accepts them; first {}):\n{}",
            refusals.len(),
            shown.len(),
            shown.join("\n")
        ))
    }
}

impl Drop for PubSubFront {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(context) = self.check_at_drop.take()
            && !std::thread::panicking()
            && let Some(report) = self.refusal_report(&context)
        {
            panic!("{report}");
        }
    }
}

/// The request path, parsed: `/v1/projects/P/(topics|subscriptions)/ID[:verb]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub rpc: Rpc,
    /// `("topic" | "subscription", id)` when the path names one.
    pub resource: Option<(&'static str, String)>,
}

/// Which RPC `method` on `path` is, and the resource it names.
pub fn classify(method: &Method, path: &str) -> Target {
    let rest = path.strip_prefix("/v1/").unwrap_or("");
    let (resource, verb) = match rest.rsplit_once(':') {
        // A `:` after the last `/` is a custom verb.
        Some((r, v)) if !v.contains('/') => (r, Some(v)),
        _ => (rest, None),
    };
    let parts: Vec<&str> = resource.split('/').collect();
    let m = method.as_str();
    let (rpc, named) = match (parts.as_slice(), verb, m) {
        (["projects", _, "topics"], None, "GET") => (Rpc::ListTopics, None),
        (["projects", _, "subscriptions"], None, "GET") => (Rpc::ListSubscriptions, None),
        (["projects", _, "topics", t, "subscriptions"], None, "GET") => {
            (Rpc::ListTopicSubscriptions, Some(("topic", *t)))
        }
        (["projects", _, "topics", t], None, _) => (
            match m {
                "PUT" => Rpc::CreateTopic,
                "GET" => Rpc::GetTopic,
                "PATCH" => Rpc::UpdateTopic,
                "DELETE" => Rpc::DeleteTopic,
                _ => Rpc::Other,
            },
            Some(("topic", *t)),
        ),
        (["projects", _, "topics", t], Some("publish"), "POST") => {
            (Rpc::Publish, Some(("topic", *t)))
        }
        (["projects", _, "subscriptions", s], None, _) => (
            match m {
                "PUT" => Rpc::CreateSubscription,
                "GET" => Rpc::GetSubscription,
                "PATCH" => Rpc::UpdateSubscription,
                "DELETE" => Rpc::DeleteSubscription,
                _ => Rpc::Other,
            },
            Some(("subscription", *s)),
        ),
        (["projects", _, "subscriptions", s], Some(v), "POST") => (
            match v {
                "pull" => Rpc::Pull,
                "acknowledge" => Rpc::Acknowledge,
                "modifyAckDeadline" => Rpc::ModifyAckDeadline,
                _ => Rpc::Other,
            },
            Some(("subscription", *s)),
        ),
        _ => (Rpc::Other, None),
    };
    Target {
        rpc,
        resource: named.map(|(k, id)| (k, id.to_string())),
    }
}

/// An integer JSON field, as proto3 JSON writes it (a number, or a string for 64-bit).
fn int_field(v: Option<&Json>) -> Option<i64> {
    match v? {
        Json::Number(n) => n.as_i64(),
        Json::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The messages of a Publish body, as the ledger's [`Message`]s.
fn publish_messages(body: &Json) -> Result<Vec<Message>, String> {
    let Some(list) = body.get("messages") else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or("PublishRequest.messages is not a list")?;
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let data = match m.get("data").and_then(Json::as_str) {
                None | Some("") => Vec::new(),
                Some(s) => base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|e| {
                        format!(
                            "message {i}: `data` is not base64 (PubsubMessage.data is bytes): {e}"
                        )
                    })?,
            };
            let attributes = match m.get("attributes") {
                None | Some(Json::Null) => BTreeMap::new(),
                Some(Json::Object(o)) => o
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect(),
                Some(_) => return Err(format!("message {i}: `attributes` is not a map")),
            };
            let ordering_key = m
                .get("orderingKey")
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_string();
            Ok(Message {
                data,
                ordering_key,
                attributes,
            })
        })
        .collect()
}

/// Checks a subscription's settings (a `Subscription` JSON object, or the fields of it
/// `mask` names when given).
fn check_subscription(sub: &Json, mask: Option<&BTreeSet<String>>) -> Result<(), String> {
    let named = |field: &str| mask.is_none_or(|m| m.contains(&normalize(field)));
    if named("ackDeadlineSeconds") {
        // `Subscription.ackDeadlineSeconds`: "If this parameter is 0, a default value of 10
        // seconds is used." Other values: limits::check_ack_deadline (its citation).
        if let Some(secs) = int_field(sub.get("ackDeadlineSeconds"))
            && secs != 0
        {
            limits::check_ack_deadline(secs).map_err(|e| e.to_string())?;
        }
    }
    if named("deadLetterPolicy")
        && let Some(policy) = sub.get("deadLetterPolicy").filter(|p| !p.is_null())
    {
        // `DeadLetterPolicy.maxDeliveryAttempts`: "If this parameter is 0, a default value
        // of 5 is used." Other values: limits::check_dead_letter_attempts.
        if let Some(n) = int_field(policy.get("maxDeliveryAttempts"))
            && n != 0
        {
            limits::check_dead_letter_attempts(n).map_err(|e| e.to_string())?;
        }
    }
    if let Some(mask) = mask {
        // Fields production cannot change in place. Topic: "certain properties of a
        // subscription, such as its topic, are not modifiable" (projects.subscriptions.patch);
        // filter: "After creating the subscription, you can't modify the filter"
        // (<https://cloud.google.com/pubsub/docs/subscription-message-filter>); message
        // ordering is set at creation (<https://cloud.google.com/pubsub/docs/ordering>).
        for (field, what) in [
            ("topic", "a subscription's topic cannot be changed"),
            (
                "filter",
                "a subscription's filter cannot be changed after creation",
            ),
            (
                "enableMessageOrdering",
                "a subscription's message ordering cannot be changed after creation",
            ),
        ] {
            if mask.contains(&normalize(field)) {
                return Err(format!(
                    "UpdateSubscription names `{field}`: {what}; delete and re-create the \
                     subscription"
                ));
            }
        }
    }
    Ok(())
}

/// A field-mask path compared without case or `_` (masks come in camelCase or snake_case).
fn normalize(path: &str) -> String {
    path.chars()
        .filter(|c| *c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The paths of an `updateMask` (a comma-separated string in JSON, or `{paths: [...]}`).
fn mask_paths(mask: Option<&Json>) -> BTreeSet<String> {
    match mask {
        Some(Json::String(s)) => s
            .split(',')
            .filter(|p| !p.is_empty())
            .map(normalize)
            .collect(),
        Some(Json::Object(o)) => o
            .get("paths")
            .and_then(Json::as_array)
            .map(|a| a.iter().filter_map(Json::as_str).map(normalize).collect())
            .unwrap_or_default(),
        _ => BTreeSet::new(),
    }
}

/// What the front decided about a request: `Err(rule)` refuses it. For a Publish, its shape.
pub fn check(target: &Target, body: &[u8]) -> (Result<(), String>, Option<PublishShape>) {
    if let Some((kind, id)) = &target.resource
        && let Err(e) = limits::check_resource_id(kind, id)
    {
        // Resource names (limits.rs cites pubsub-basics#resource_names).
        let shape = (target.rpc == Rpc::Publish).then(|| PublishShape {
            topic: id.clone(),
            messages: 0,
            ordering_keys: 0,
            refused: true,
        });
        return (Err(e.to_string()), shape);
    }
    let json = || -> Option<Json> {
        if body.is_empty() {
            None
        } else {
            serde_json::from_slice(body).ok()
        }
    };
    match target.rpc {
        Rpc::Publish => {
            let topic = target
                .resource
                .as_ref()
                .map(|(_, id)| id.clone())
                .unwrap_or_default();
            let messages = match json().map(|b| publish_messages(&b)) {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    let shape = PublishShape {
                        topic,
                        messages: 0,
                        ordering_keys: 0,
                        refused: true,
                    };
                    return (Err(e), Some(shape));
                }
                // Not JSON: the emulator answers for itself.
                None => Vec::new(),
            };
            let keys: BTreeSet<&str> = messages.iter().map(|m| m.ordering_key.as_str()).collect();
            // One ordering key per request, 1 000 messages, 10 MB, and every message's rules:
            // limits::check_publish (quotas#resource_limits, PubsubMessage).
            let verdict = limits::check_publish(&messages).map_err(|e| e.to_string());
            let shape = PublishShape {
                topic,
                messages: messages.len(),
                ordering_keys: keys.len(),
                refused: verdict.is_err(),
            };
            (verdict, Some(shape))
        }
        Rpc::CreateSubscription => {
            let verdict = match json() {
                Some(sub) => check_subscription(&sub, None),
                None => Ok(()),
            };
            (verdict, None)
        }
        Rpc::UpdateSubscription => {
            let verdict = match json() {
                Some(req) => {
                    let mask = mask_paths(req.get("updateMask"));
                    let sub = req.get("subscription").cloned().unwrap_or(Json::Null);
                    check_subscription(&sub, Some(&mask))
                }
                None => Ok(()),
            };
            (verdict, None)
        }
        Rpc::ModifyAckDeadline => {
            // limits::check_modify_ack_deadline (projects.subscriptions.modifyAckDeadline).
            let verdict = match json().and_then(|b| int_field(b.get("ackDeadlineSeconds"))) {
                Some(secs) => limits::check_modify_ack_deadline(secs).map_err(|e| e.to_string()),
                None => Ok(()),
            };
            (verdict, None)
        }
        _ => (Ok(()), None),
    }
}

fn google_error(status: StatusCode, code_name: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "error": { "code": status.as_u16(), "message": message, "status": code_name }
    });
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=UTF-8")
        .body(Body::from(body.to_string()))
        .expect("a valid response")
}

/// Headers not forwarded (hop-by-hop, or set by the forwarding client).
fn forwarded(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "host" | "content-length" | "connection" | "transfer-encoding" | "keep-alive" | "upgrade"
    )
}

async fn handle(state: Arc<State>, req: Request<Body>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            return google_error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                &format!("cannot read the request body: {e}"),
            );
        }
    };
    let path = parts.uri.path().to_string();
    let target = classify(&parts.method, &path);
    let (verdict, shape) = check(&target, &body);
    {
        let mut shared = state.lock();
        *shared.stats.requests.entry(target.rpc).or_insert(0) += 1;
        if let Some(shape) = shape {
            shared.stats.publishes.push(shape);
        }
        if let Err(rule) = &verdict {
            shared.stats.refused += 1;
            shared.refusals.push(Refusal {
                rpc: target.rpc,
                method: parts.method.to_string(),
                path: path.clone(),
                message: rule.clone(),
            });
        }
    }
    if let Err(rule) = verdict {
        return google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", &rule);
    }
    let url = format!(
        "{}{}",
        state.upstream,
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or(&path)
    );
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if forwarded(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let sent = state
        .http
        .request(parts.method.clone(), &url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            state.lock().stats.unreachable += 1;
            return google_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                &format!("the Pub/Sub emulator behind the front is unreachable: {e}"),
            );
        }
    };
    let status = resp.status();
    let mut out = Response::builder().status(status);
    for (name, value) in resp.headers() {
        if forwarded(name) {
            out = out.header(name, value);
        }
    }
    match resp.bytes().await {
        Ok(bytes) => out.body(Body::from(bytes)).expect("a valid response"),
        Err(e) => {
            state.lock().stats.unreachable += 1;
            google_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                &format!("the Pub/Sub emulator's answer broke off: {e}"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_classified() {
        let c = |m: Method, p: &str| classify(&m, p);
        assert_eq!(
            c(Method::PUT, "/v1/projects/p/topics/orders"),
            Target {
                rpc: Rpc::CreateTopic,
                resource: Some(("topic", "orders".into()))
            }
        );
        assert_eq!(
            c(Method::POST, "/v1/projects/p/topics/orders:publish").rpc,
            Rpc::Publish
        );
        assert_eq!(
            c(Method::PATCH, "/v1/projects/p/subscriptions/s1").rpc,
            Rpc::UpdateSubscription
        );
        assert_eq!(
            c(
                Method::POST,
                "/v1/projects/p/subscriptions/s1:modifyAckDeadline"
            )
            .rpc,
            Rpc::ModifyAckDeadline
        );
        assert_eq!(c(Method::GET, "/v1/projects/p/topics").rpc, Rpc::ListTopics);
        assert_eq!(c(Method::GET, "/healthz").rpc, Rpc::Other);
    }

    #[test]
    fn the_rules_apply_to_the_json_fields() {
        let publish = classify(&Method::POST, "/v1/projects/p/topics/orders:publish");
        let body = serde_json::json!({"messages": [
            {"data": "eA==", "orderingKey": "a"}, {"data": "eA==", "orderingKey": "b"}]});
        let (verdict, shape) = check(&publish, body.to_string().as_bytes());
        assert!(verdict.unwrap_err().contains("different ordering keys"));
        assert_eq!(shape.unwrap().ordering_keys, 2);
        let ok = serde_json::json!({"messages": [{"data": "eA==", "orderingKey": "a"}]});
        assert!(check(&publish, ok.to_string().as_bytes()).0.is_ok());
        let update = classify(&Method::PATCH, "/v1/projects/p/subscriptions/sub");
        let body = serde_json::json!({"subscription": {"ackDeadlineSeconds": 601},
            "updateMask": "ackDeadlineSeconds"});
        assert!(check(&update, body.to_string().as_bytes()).0.is_err());
        let body = serde_json::json!({"subscription": {"ackDeadlineSeconds": 601},
            "updateMask": "retryPolicy"});
        assert!(check(&update, body.to_string().as_bytes()).0.is_ok());
        let body = serde_json::json!({"subscription": {"filter": "x"}, "updateMask": "filter"});
        assert!(check(&update, body.to_string().as_bytes()).0.is_err());
        let create = classify(&Method::PUT, "/v1/projects/p/subscriptions/ab");
        assert!(check(&create, b"{}").0.unwrap_err().contains("naming rule"));
    }
}
