//! A strict front for the Pub/Sub emulator: a reverse proxy on a free loopback port that
//! forwards every request to the emulator, but first refuses, as production does
//! (`INVALID_ARGUMENT`, a message naming the rule), every request the production service
//! refuses and the emulator accepts. The rules are `ledgerhost_core::ledger::limits` (each
//! cited there); the front only finds the fields they apply to in each request.
//!
//! The host speaks both of Pub/Sub's protocols, and the front reads both on one port:
//! - REST/JSON ([`rest`], HTTP/1.1): the admin clients of `google-cloud-pubsub`
//!   (`PUT`/`GET`/`PATCH`/`DELETE /v1/projects/P/topics/T` and `…/subscriptions/S`) and the
//!   consuming calls of `host/ledger/src/pubsub/rest.rs` (`…/subscriptions/S:pull`,
//!   `:acknowledge`, `:modifyAckDeadline`); a REST Publish is checked too.
//! - gRPC ([`grpc`], HTTP/2 without TLS): Publish, sent by the client crate's `Publisher`.
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
use axum::http::{HeaderName, Method, Request, Response, StatusCode};
use ledgerhost_core::ledger::{Message, limits};

pub mod grpc;
pub mod rest;

pub use rest::{Target, check, classify};

/// Refusals printed in a failed assertion.
const SHOWN_REFUSALS: usize = 10;

/// The Pub/Sub RPC a request is.
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
    /// Anything else: forwarded unchecked over REST, refused over gRPC ([`grpc`]).
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
    /// The protocol it came by.
    pub transport: Transport,
}

/// The protocol a request came by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// REST/JSON over HTTP/1.1.
    Rest,
    /// gRPC over HTTP/2.
    Grpc,
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
    /// REST requests to the emulator.
    http: reqwest::Client,
    /// gRPC requests to the emulator (HTTP/2 without TLS, as the emulator serves it).
    h2: grpc::Upstream,
    shared: Mutex<Shared>,
}

impl State {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a request, keeps its Publish shape and its refusal.
    fn record(
        &self,
        rpc: Rpc,
        method: &Method,
        path: &str,
        verdict: &Result<(), String>,
        shape: Option<PublishShape>,
    ) {
        let mut shared = self.lock();
        *shared.stats.requests.entry(rpc).or_insert(0) += 1;
        if let Some(shape) = shape {
            shared.stats.publishes.push(shape);
        }
        if let Err(rule) = verdict {
            shared.stats.refused += 1;
            shared.refusals.push(Refusal {
                rpc,
                method: method.to_string(),
                path: path.to_string(),
                message: rule.clone(),
            });
        }
    }
}

/// The front's decision on a Publish to topic id `topic` of `messages` (or why they could
/// not be read), however it came: the topic's name, then one ordering key per request,
/// 1 000 messages, 10 MB and every message's rules ([`limits::check_publish`], which cites
/// quotas#resource_limits and `PubsubMessage`).
fn publish_verdict(
    topic: String,
    messages: Result<Vec<Message>, String>,
    transport: Transport,
) -> (Result<(), String>, PublishShape) {
    let (count, keys, verdict) = match &messages {
        Ok(m) => (
            m.len(),
            m.iter()
                .map(|m| m.ordering_key.as_str())
                .collect::<BTreeSet<_>>()
                .len(),
            limits::check_resource_id("topic", &topic)
                .and_then(|()| limits::check_publish(m))
                .map_err(|e| e.to_string()),
        ),
        Err(e) => (0, 0, Err(e.clone())),
    };
    let shape = PublishShape {
        topic,
        messages: count,
        ordering_keys: keys,
        refused: verdict.is_err(),
        transport,
    };
    (verdict, shape)
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
            h2: grpc::upstream(),
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

fn forwarded(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "host" | "content-length" | "connection" | "transfer-encoding" | "keep-alive" | "upgrade"
    )
}

async fn handle(state: Arc<State>, req: Request<Body>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let is_grpc = grpc::is_grpc(&parts.headers);
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            let why = format!("cannot read the request body: {e}");
            return if is_grpc {
                grpc::status_only(grpc::INVALID_ARGUMENT, &why)
            } else {
                rest::google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", &why)
            };
        }
    };
    if is_grpc {
        grpc::handle(state, parts, body).await
    } else {
        rest::handle(state, parts, body).await
    }
}
