//! Cloud Pub/Sub as the ledger (production): topics and subscriptions through the official
//! `google-cloud-pubsub` client, the data plane over Pub/Sub's REST surface ([`rest`]).
//!
//! - One topic per table, published with the ordering key and attributes as given, up to
//!   1 000 messages per request; [`Ledger::publish`] returns once every request was
//!   answered with message ids (a failed request is resent whole: duplicates keep their
//!   event ids).
//! - Subscriptions have message ordering on, the attribute filter as a Pub/Sub filter, a
//!   retry policy with backoff, and a dead-letter policy to the spec's dead-letter topic
//!   (created) with [`MAX_DELIVERY_ATTEMPTS`], which makes Pub/Sub fill `delivery_attempt`.
//!   The dispatcher dead-letters by itself after its own, smaller, attempt budget; the
//!   server-side policy is a safety net.
//! - Before each subscription, a plain subscription `<name>.dead-letters` on its dead-letter
//!   topic (a dead-letter topic without a subscription drops what reaches it). The
//!   dead-letter tools pull it: `dead_letters` hands everything back, `redrive` publishes
//!   the selected ones onto the subscription's topic (read from Pub/Sub, so the CLI needs
//!   no `ensure_subscription`), then acknowledges them.
//! - A subscription found existing is read back and compared ([`crate::drift`]): ack
//!   deadline, retry and dead-letter policy are updated in place (UpdateSubscription with an
//!   update mask); a different topic, filter or message ordering is refused, naming what
//!   differs (Pub/Sub cannot change them in place).
//! - Consuming uses unary Pull, Acknowledge and ModifyAckDeadline: the client crate only
//!   streams, and a stream pins ordering keys to itself, which the emulator never undoes
//!   when the streaming process is killed. Each
//!   subscription runs a background long-poll into an internal buffer (at most
//!   [`MAX_BUFFERED`] messages) and a lease keeper that extends every held message's
//!   server deadline; the trait's calls act on that buffer:
//!   - `pull` hands out at most one outstanding delivery per ordering key (the trait's
//!     per-key rule) and gives each a local lease of the spec's ack deadline.
//!   - `ack` acknowledges; `nack(delay)` holds the message and hands it back when the delay
//!     is over; an expired local lease hands it back at once. Handing back also returns the
//!     key's later buffered messages, so Pub/Sub redelivers the key from that message on,
//!     in order.
//!   - `extend` moves the local lease.
//!   - `release` (shutdown) lets each reader finish its Pull in flight, then hands back
//!     everything held, so other replicas get it at once.
//!   - `attempt` is the larger of Pub/Sub's `delivery_attempt` and the deliveries of the
//!     message id this process has seen (the emulator may leave `delivery_attempt` empty).
//! - The attribute filter is also checked client-side (non-matching messages are acked
//!   unseen), because the emulator ignores subscription filters.
//! - Pub/Sub cannot read back the newest message of a topic, so [`Ledger::last_message`]
//!   returns `Ok(None)`: watermark recovery on Pub/Sub falls back to the archive or to the
//!   configured start time.
//! - A topic or subscription found missing (NOT_FOUND; e.g. a restarted emulator, which keeps
//!   state in memory) is recreated from what this process ensured before, and the publish
//!   or stream is retried.
//!
//! Names: topic and subscription ids that Pub/Sub would refuse (shorter than 3 characters,
//! not starting with a letter, other characters than `[A-Za-z0-9-_.~+%]`) are mapped to
//! `lh-` followed by the name with those characters percent-encoded; see [`resource_id`].

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use google_cloud_gax::error::rpc::Code;
use google_cloud_pubsub::client::{SubscriptionAdmin, TopicAdmin};
use google_cloud_pubsub::model::{DeadLetterPolicy, RetryPolicy, Subscription, Topic};
use ledgerhost_core::ledger::{
    DeadLetter, Delivery, Ledger, Message, RedriveSelection, SubscriptionSpec,
    dead_letter_subscription, limits,
};
use ledgerhost_core::{PortError, PortResult};
use ledgerhost_google::{Endpoint, PUBSUB};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

pub mod rest;

use crate::drift;
use rest::{Received, RestClient, RestError};

const BACKEND: &str = "pubsub";
/// Server-side dead-letter budget (Pub/Sub allows 5 to 100); the dispatcher's own, smaller
/// budget normally dead-letters first, with a reason.
pub const MAX_DELIVERY_ATTEMPTS: i32 = 100;
/// Default [`PubSubConfig::publish_concurrency`]: one request per ordering shard at the
/// default shard count.
pub const DEFAULT_PUBLISH_CONCURRENCY: usize = 16;
/// Messages one subscription may hold unacked in this process (buffered or handed out).
pub const MAX_BUFFERED: usize = 1000;
/// Ack deadline of a dead-letter subscription: how long `dead-letter list` or `redrive`
/// holds what it pulled before handing it back (or, if it died, Pub/Sub redelivers it).
const DEAD_LETTER_ACK_DEADLINE_SECS: u64 = 60;
/// Message ids whose deliveries one subscription counts locally.
const SEEN_LIMIT: usize = 100_000;

/// Where Pub/Sub is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PubSubConfig {
    /// Google Cloud project id.
    pub project: String,
    /// Endpoint override, e.g. `http://127.0.0.1:8085`. When `None`, `PUBSUB_EMULATOR_HOST`
    /// is honoured, else Google's endpoint; an emulator goes anonymous, Google with
    /// application default credentials ([`ledgerhost_google`]'s rule).
    pub endpoint: Option<String>,
    /// How long `publish` keeps retrying while Pub/Sub is unreachable or a topic is being
    /// recreated, before it reports the error.
    pub publish_retry_for: Duration,
    /// Publish requests in flight at once (of different ordering keys; one key's requests
    /// are always sequential).
    pub publish_concurrency: usize,
}

impl PubSubConfig {
    /// A config for `project` with the endpoint from `PUBSUB_EMULATOR_HOST` when set.
    pub fn new(project: impl Into<String>) -> Self {
        PubSubConfig {
            project: project.into(),
            endpoint: None,
            publish_retry_for: Duration::from_secs(60),
            publish_concurrency: DEFAULT_PUBLISH_CONCURRENCY,
        }
    }

    /// The endpoint to use: the explicit one, else `PUBSUB_EMULATOR_HOST`, else Google's.
    pub fn resolved_endpoint(&self) -> Endpoint {
        PUBSUB.endpoint(self.endpoint.as_deref())
    }
}

/// The Pub/Sub id used for a ledger topic or subscription name.
pub fn resource_id(name: &str) -> String {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.~+%".contains(c);
    let valid = name.len() >= 3
        && name.len() <= 255
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && !name.starts_with("goog")
        && name.chars().all(allowed);
    if valid {
        return name.to_string();
    }
    let mut out = String::from("lh-");
    for c in name.chars() {
        if allowed(c) && c != '%' {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// The Pub/Sub filter for an attribute-equality filter (`attributes.k = "v" AND ...`).
pub fn attribute_filter(filter: &BTreeMap<String, String>) -> PortResult<String> {
    let mut parts = Vec::new();
    for (k, v) in filter {
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(PortError::invalid(
                BACKEND,
                format!(
                    "attribute filter key `{k}` cannot be expressed as a Pub/Sub filter \
                 (use letters, digits and `_`)"
                ),
            ));
        }
        let escaped = v.replace('\\', "\\\\").replace('"', "\\\"");
        parts.push(format!("attributes.{k} = \"{escaped}\""));
    }
    Ok(parts.join(" AND "))
}

fn code_of(e: &google_cloud_pubsub::Error) -> Option<Code> {
    e.status()
        .map(|s| s.code)
        .or_else(|| match e.http_status_code() {
            Some(404) => Some(Code::NotFound),
            Some(409) => Some(Code::AlreadyExists),
            Some(400) => Some(Code::InvalidArgument),
            _ => None,
        })
}

fn map_err(context: &str, e: &google_cloud_pubsub::Error) -> PortError {
    match code_of(e) {
        Some(Code::NotFound) => PortError::NotFound {
            backend: BACKEND,
            what: format!("{context}: {e}"),
        },
        Some(Code::InvalidArgument | Code::FailedPrecondition | Code::PermissionDenied) => {
            PortError::invalid(BACKEND, format!("{context}: {e}"))
        }
        _ => PortError::unavailable(BACKEND, format!("{context}: {e}")),
    }
}

fn std_to_wkt(d: Duration) -> google_cloud_wkt::Duration {
    google_cloud_wkt::Duration::clamp(d.as_secs() as i64, d.subsec_nanos() as i32)
}

/// A received message waiting in the buffer.
struct Pending {
    message: Message,
    message_id: String,
    ack_id: String,
    attempt: u32,
}

/// A delivery handed out by `pull`, leased locally until `deadline`.
struct Outstanding {
    key: String,
    message_id: String,
    deadline: Instant,
}

#[derive(Default)]
struct Buffer {
    pending: VecDeque<Pending>,
    /// By Pub/Sub ack id.
    outstanding: HashMap<String, Outstanding>,
    /// Nacked with a delay: held (and kept leased) until the delay is over.
    held: HashSet<String>,
    /// Ordering keys with outstanding deliveries or delayed nacks, and how many.
    busy: HashMap<String, usize>,
    /// Deliveries seen per message id (removed on ack).
    seen: HashMap<String, u32>,
    /// Last pull error, reported by the next `pull` that finds nothing.
    error: Option<String>,
}

impl Buffer {
    /// One delivery of `key` is settled or handed back.
    fn free_key(&mut self, key: &str) {
        if let Some(n) = self.busy.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.busy.remove(key);
            }
        }
    }

    /// Takes every buffered message of `key` out of the buffer and returns their ack ids, to
    /// hand back to Pub/Sub so it redelivers the key in order.
    fn return_key(&mut self, key: &str) -> Vec<String> {
        if key.is_empty() {
            return Vec::new();
        }
        let mut returned = Vec::new();
        self.pending.retain(|p| {
            let same = p.message.ordering_key == key;
            if same {
                returned.push(p.ack_id.clone());
            }
            !same
        });
        returned
    }

    /// Messages held in this process, buffered or handed out.
    fn held_count(&self) -> usize {
        self.pending.len() + self.outstanding.len() + self.held.len()
    }

    /// Every ack id whose server deadline must be kept alive.
    fn leased_ids(&self) -> Vec<String> {
        self.pending
            .iter()
            .map(|p| p.ack_id.clone())
            .chain(self.outstanding.keys().cloned())
            .chain(self.held.iter().cloned())
            .collect()
    }
}

struct SubState {
    /// Pub/Sub subscription path.
    path: String,
    spec: SubscriptionSpec,
    buffer: Mutex<Buffer>,
    /// New messages or freed keys.
    notify: Notify,
    /// Room in the buffer.
    room: Notify,
}

impl SubState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes deliveries whose local lease expired out of the buffer; returns the ack ids to
    /// hand back (with their keys' later buffered messages).
    fn expire(&self) -> Vec<String> {
        let now = Instant::now();
        let mut b = self.lock();
        let expired: Vec<String> = b
            .outstanding
            .iter()
            .filter(|(_, o)| o.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        let mut back = Vec::new();
        for id in expired {
            if let Some(o) = b.outstanding.remove(&id) {
                debug!(subscription = %self.spec.name, ack_id = %id, "lease expired; redelivering");
                b.free_key(&o.key);
                // The earliest first: the emulator requeues in the order handed back.
                back.push(id);
                back.extend(b.return_key(&o.key));
            }
        }
        back
    }
}

struct Inner {
    config: PubSubConfig,
    topic_admin: TopicAdmin,
    sub_admin: SubscriptionAdmin,
    /// Publish, Pull, Acknowledge, ModifyAckDeadline.
    rest: RestClient,
    subs: Mutex<HashMap<String, Arc<SubState>>>,
    readers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Set by `release`: readers finish their Pull in flight and stop.
    stopping: tokio::sync::watch::Sender<bool>,
    /// Topics seen existing, and how many times each was found lost and re-created.
    generations: Mutex<HashMap<String, u64>>,
}

/// Cloud Pub/Sub as a [`Ledger`].
pub struct PubSubLedger {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PubSubLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubSubLedger")
            .field("project", &self.inner.config.project)
            .field("endpoint", &self.inner.config.resolved_endpoint().url)
            .finish()
    }
}

impl Drop for PubSubLedger {
    fn drop(&mut self) {
        for h in self
            .inner
            .readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            h.abort();
        }
    }
}

/// Points an admin client builder at `$endpoint`, anonymous against an emulator.
macro_rules! configure {
    ($builder:expr, $endpoint:expr) => {{
        let mut b = $builder;
        if let Some(c) = $endpoint.client_credentials() {
            b = b.with_credentials(c);
        }
        if let Some(url) = $endpoint.override_url() {
            b = b.with_endpoint(url.to_string());
        }
        b
    }};
}

impl PubSubLedger {
    /// Builds the clients (nothing is created on the server yet).
    pub async fn connect(config: PubSubConfig) -> PortResult<Self> {
        let endpoint = config.resolved_endpoint();
        let ctx = |what: &str, e: &dyn std::fmt::Display| {
            PortError::unavailable(
                BACKEND,
                format!("cannot build the Pub/Sub {what} client (endpoint {endpoint}): {e}"),
            )
        };
        let topic_admin = configure!(TopicAdmin::builder(), &endpoint)
            .build()
            .await
            .map_err(|e| ctx("topic admin", &e))?;
        let sub_admin = configure!(SubscriptionAdmin::builder(), &endpoint)
            .build()
            .await
            .map_err(|e| ctx("subscription admin", &e))?;
        let rest = RestClient::new(&endpoint).map_err(|e| ctx("REST", &e))?;
        info!(project = %config.project, endpoint = %endpoint, "pubsub ledger connected");
        Ok(PubSubLedger {
            inner: Arc::new(Inner {
                config,
                topic_admin,
                sub_admin,
                rest,
                subs: Mutex::default(),
                readers: Mutex::default(),
                stopping: tokio::sync::watch::Sender::new(false),
                generations: Mutex::default(),
            }),
        })
    }

    /// Health probe: asks for a topic's metadata; any answer but a transport, auth or server
    /// failure (a missing topic is fine) shows Pub/Sub is reachable.
    pub async fn check(&self) -> PortResult<()> {
        let path = self.inner.topic_path("ledgerhost-health-probe");
        match self
            .inner
            .topic_admin
            .get_topic()
            .set_topic(path)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if code_of(&e) == Some(Code::NotFound) => Ok(()),
            Err(e) => Err(map_err(
                &format!(
                    "health probe of project {} at {}",
                    self.inner.config.project,
                    self.inner.config.resolved_endpoint()
                ),
                &e,
            )),
        }
    }

    /// The Pub/Sub topic path of a ledger topic.
    pub fn topic_path(&self, topic: &str) -> String {
        self.inner.topic_path(topic)
    }

    /// The Pub/Sub subscription path of a ledger subscription.
    pub fn subscription_path(&self, subscription: &str) -> String {
        self.inner.subscription_path(subscription)
    }
}

impl Inner {
    fn topic_path(&self, topic: &str) -> String {
        format!(
            "projects/{}/topics/{}",
            self.config.project,
            resource_id(topic)
        )
    }

    fn subscription_path(&self, sub: &str) -> String {
        format!(
            "projects/{}/subscriptions/{}",
            self.config.project,
            resource_id(sub)
        )
    }

    /// Creates the topic if missing; true when it was created now.
    async fn create_topic(&self, topic: &str) -> PortResult<bool> {
        let path = self.topic_path(topic);
        match self
            .topic_admin
            .create_topic()
            .with_request(Topic::new().set_name(path.clone()))
            .send()
            .await
        {
            Ok(_) => {
                info!(topic = %path, "created pubsub topic");
                Ok(true)
            }
            Err(e) if code_of(&e) == Some(Code::AlreadyExists) => Ok(false),
            Err(e) => Err(map_err(&format!("creating topic {path}"), &e)),
        }
    }

    /// Makes sure the topic exists. If this process had seen it before and it had to be
    /// created again, its messages are lost: the subscriptions this process ensured on it
    /// are re-created first, then the topic's generation grows (so a poller re-publishing
    /// because of it publishes into subscriptions that exist).
    async fn ensure_topic(&self, topic: &str) -> PortResult<()> {
        let created = self.create_topic(topic).await?;
        let known = self
            .generations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(topic);
        if created && known {
            warn!(
                topic,
                "pubsub topic was lost (with its messages); re-created it"
            );
            let specs: Vec<SubscriptionSpec> = self
                .subs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .filter(|s| s.spec.topic == topic)
                .map(|s| s.spec.clone())
                .collect();
            for spec in specs {
                self.create_subscription(&spec).await?;
            }
        }
        let mut gens = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        let g = gens.entry(topic.to_string()).or_insert(0);
        if created && known {
            *g += 1;
        }
        Ok(())
    }

    async fn create_subscription(&self, spec: &SubscriptionSpec) -> PortResult<()> {
        // Plain creates: a lost topic is handled by `ensure_topic` (which calls this).
        self.create_topic(&spec.topic).await?;
        self.create_topic(&spec.dead_letter_topic).await?;
        // Before the subscription: a dead-letter topic without a subscription drops what
        // reaches it (https://cloud.google.com/pubsub/docs/handling-failures).
        self.create_dead_letter_subscription(spec).await?;
        let path = self.subscription_path(&spec.name);
        let ack_secs = ack_deadline_secs(spec) as i32;
        let sub = Subscription::new()
            .set_name(path.clone())
            .set_topic(self.topic_path(&spec.topic))
            .set_ack_deadline_seconds(ack_secs)
            .set_enable_message_ordering(true)
            .set_filter(attribute_filter(&spec.attribute_filter)?)
            .set_dead_letter_policy(
                DeadLetterPolicy::new()
                    .set_dead_letter_topic(self.topic_path(&spec.dead_letter_topic))
                    .set_max_delivery_attempts(MAX_DELIVERY_ATTEMPTS),
            )
            .set_retry_policy(
                RetryPolicy::new()
                    .set_minimum_backoff(std_to_wkt(Duration::from_secs(1)))
                    .set_maximum_backoff(std_to_wkt(Duration::from_secs(60))),
            );
        match self
            .sub_admin
            .create_subscription()
            .with_request(sub.clone())
            .send()
            .await
        {
            Ok(_) => {
                info!(subscription = %path, topic = %spec.topic, "created pubsub subscription");
                Ok(())
            }
            // It exists: it must match the manifest (never keep old settings silently).
            Err(e) if code_of(&e) == Some(Code::AlreadyExists) => {
                self.reconcile_subscription(spec, sub).await
            }
            Err(e) => Err(map_err(&format!("creating subscription {path}"), &e)),
        }
    }

    /// Creates the subscription on `spec`'s dead-letter topic that keeps its dead letters for
    /// the dead-letter tools ([`dead_letter_subscription`]): no filter, no ordering, no
    /// dead-letter policy of its own. Found existing, it is left as it is (its settings are
    /// the host's own and never change).
    async fn create_dead_letter_subscription(&self, spec: &SubscriptionSpec) -> PortResult<()> {
        let path = self.subscription_path(&dead_letter_subscription(&spec.name));
        let sub = Subscription::new()
            .set_name(path.clone())
            .set_topic(self.topic_path(&spec.dead_letter_topic))
            .set_ack_deadline_seconds(DEAD_LETTER_ACK_DEADLINE_SECS as i32);
        match self
            .sub_admin
            .create_subscription()
            .with_request(sub)
            .send()
            .await
        {
            Ok(_) => {
                info!(subscription = %path, topic = %spec.dead_letter_topic, "created pubsub dead-letter subscription");
                Ok(())
            }
            Err(e) if code_of(&e) == Some(Code::AlreadyExists) => Ok(()),
            Err(e) => Err(map_err(&format!("creating subscription {path}"), &e)),
        }
    }

    /// Pulls every message waiting on the dead-letter subscription of `subscription` (until
    /// a Pull answers nothing after the server's wait, or `max`) and keeps them leased; the
    /// caller acknowledges or hands back each ack id.
    async fn pull_dead_letters(
        &self,
        subscription: &str,
        max: usize,
    ) -> PortResult<(String, Vec<(String, DeadLetter)>)> {
        let path = self.subscription_path(&dead_letter_subscription(subscription));
        let mut out: Vec<(String, DeadLetter)> = Vec::new();
        let mut seen = HashSet::new();
        while out.len() < max {
            let received = match self.rest.pull(&path, (max - out.len()).min(1000)).await {
                Ok(r) => r,
                Err(RestError::PullTimedOut) => break,
                Err(RestError::NotFound(e)) => {
                    let ids: Vec<String> = out.into_iter().map(|(id, _)| id).collect();
                    let _ = self.rest.modify_ack_deadline(&path, &ids, 0).await;
                    return Err(PortError::NotFound {
                        backend: BACKEND,
                        what: format!(
                            "dead-letter subscription {path} (the host creates it with \
                             `{subscription}` when it starts the plugin; is the plugin name \
                             right?): {e}"
                        ),
                    });
                }
                Err(e) => {
                    let ids: Vec<String> = out.into_iter().map(|(id, _)| id).collect();
                    let _ = self.rest.modify_ack_deadline(&path, &ids, 0).await;
                    return Err(PortError::unavailable(
                        BACKEND,
                        format!("pulling from {path}: {e}"),
                    ));
                }
            };
            if received.is_empty() {
                break;
            }
            for r in received {
                // Held leased, so a later Pull of this loop cannot hand it out again; a
                // duplicate delivery of one message (at least once) is listed once.
                if !seen.insert(r.message_id.clone()) {
                    let _ = self.rest.modify_ack_deadline(&path, &[r.ack_id], 0).await;
                    continue;
                }
                let message = Message {
                    data: r.data,
                    ordering_key: r.ordering_key,
                    attributes: r.attributes.into_iter().collect(),
                };
                out.push((
                    r.ack_id,
                    DeadLetter::from_message(message, r.publish_time_micros),
                ));
            }
        }
        // Oldest first, as the embedded ledger lists them.
        out.sort_by_key(|(_, d)| d.dead_lettered_at_micros);
        Ok((path, out))
    }

    /// Makes an existing subscription match `wanted` (what [`Inner::create_subscription`]
    /// would create): updates ack deadline, retry and dead-letter policy in place, refuses a
    /// changed topic, filter or message ordering (see [`crate::drift`]).
    async fn reconcile_subscription(
        &self,
        spec: &SubscriptionSpec,
        wanted: Subscription,
    ) -> PortResult<()> {
        let path = wanted.name.clone();
        let existing = self
            .sub_admin
            .get_subscription()
            .set_subscription(path.clone())
            .send()
            .await
            .map_err(|e| map_err(&format!("reading subscription {path}"), &e))?;
        match drift::compare(&settings_of(&wanted), &settings_of(&existing)) {
            drift::Verdict::Same => Ok(()),
            drift::Verdict::Refuse(differences) => {
                let id = resource_id(&spec.name);
                let remedy = format!(
                    "Delete the subscription (`gcloud pubsub subscriptions delete {id} \
                     --project {}`; its unacknowledged messages go with it, and the host \
                     creates it anew at the topic's end), or give the plugin a new name (a new \
                     subscription `plugin-<name>`).",
                    self.config.project
                );
                Err(PortError::invalid(
                    BACKEND,
                    drift::refusal(&path, &differences, &remedy),
                ))
            }
            drift::Verdict::Update(fields) => {
                let mask: Vec<&str> = fields.iter().map(|f| f.mask_path()).collect();
                let update_mask = google_cloud_wkt::FieldMask::default().set_paths(mask.clone());
                self.sub_admin
                    .update_subscription()
                    .set_subscription(wanted)
                    .set_update_mask(update_mask)
                    .send()
                    .await
                    .map_err(|e| map_err(&format!("updating subscription {path}"), &e))?;
                info!(subscription = %path, updated = ?mask, "updated pubsub subscription to match its manifest");
                Ok(())
            }
        }
    }

    /// Recreates a topic and the subscriptions this process ensured on it.
    async fn recreate_topic(&self, topic: &str) -> PortResult<()> {
        self.ensure_topic(topic).await?;
        // The topic may have survived while a subscription was deleted.
        let specs: Vec<SubscriptionSpec> = self
            .subs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|s| s.spec.topic == topic)
            .map(|s| s.spec.clone())
            .collect();
        for spec in specs {
            self.create_subscription(&spec).await?;
        }
        Ok(())
    }
}

impl Inner {
    /// Sends one ordering key's requests in order, each retried (with backoff, re-creating
    /// a lost topic) until confirmed or `deadline`. Resending is safe: a request that did
    /// land gives duplicates with the same event ids, never a gap.
    async fn publish_lane(
        &self,
        topic: &str,
        path: &str,
        lane: rest::KeyLane,
        deadline: Instant,
    ) -> PortResult<()> {
        for request in &lane.requests {
            let mut backoff = Duration::from_millis(100);
            loop {
                let e = match self.rest.publish(path, request).await {
                    Ok(_) => break,
                    Err(RestError::Invalid(e)) => {
                        return Err(PortError::invalid(
                            BACKEND,
                            format!("publishing to {path}: {e}"),
                        ));
                    }
                    Err(e) => e,
                };
                if Instant::now() >= deadline {
                    return Err(PortError::unavailable(
                        BACKEND,
                        format!(
                            "publishing {} messages of ordering key `{}` to {path} failed for {:?}: {e}",
                            request.len(),
                            lane.ordering_key,
                            self.config.publish_retry_for
                        ),
                    ));
                }
                let missing = matches!(e, RestError::NotFound(_));
                warn!(topic, ordering_key = %lane.ordering_key, messages = request.len(), missing, error = %e, "publish failed; retrying this key");
                if missing && let Err(e) = self.recreate_topic(topic).await {
                    warn!(topic, error = %e, "cannot recreate the topic yet");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
        Ok(())
    }

    /// Hands deliveries back to Pub/Sub for redelivery now (deadline 0). A failure only
    /// delays them until their deadline passes.
    async fn hand_back(&self, state: &SubState, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        if let Err(e) = self.rest.modify_ack_deadline(&state.path, ids, 0).await {
            warn!(subscription = %state.spec.name, error = %e, n = ids.len(), "cannot hand deliveries back; they return when their deadline passes");
        }
    }
}

/// Long-polls one subscription into its buffer, forever (backing off on errors).
async fn read_pulls(inner: Arc<Inner>, state: Arc<SubState>) {
    let mut backoff = Duration::from_millis(100);
    // A Pull is never abandoned midway, only not started again: the emulator does not
    // notice an abandoned Pull and would hand it the next messages.
    while !*inner.stopping.borrow() {
        let room = MAX_BUFFERED.saturating_sub(state.lock().held_count());
        if room == 0 {
            let _ = tokio::time::timeout(Duration::from_millis(250), state.room.notified()).await;
            continue;
        }
        let received = match inner.rest.pull(&state.path, room).await {
            Ok(r) => r,
            Err(RestError::PullTimedOut) => continue,
            Err(e) => {
                let missing = matches!(e, RestError::NotFound(_));
                warn!(subscription = %state.spec.name, error = %e, missing, "pubsub pull failed; retrying");
                state.lock().error = Some(format!("pulling from {}: {e}", state.path));
                state.notify.notify_waiters();
                if missing && let Err(e) = inner.recreate_topic(&state.spec.topic).await {
                    warn!(subscription = %state.spec.name, error = %e, "cannot recreate the subscription");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let mut settled = Vec::new();
        {
            let mut b = state.lock();
            b.error = None;
            for r in received {
                let Received {
                    ack_id,
                    message_id,
                    data,
                    ordering_key,
                    attributes,
                    delivery_attempt,
                    ..
                } = r;
                // Pub/Sub applies the filter server-side; the emulator does not, so check it
                // here too (a non-matching message is settled, as the server would have).
                let matches = state
                    .spec
                    .attribute_filter
                    .iter()
                    .all(|(k, v)| attributes.get(k) == Some(v));
                if !matches {
                    settled.push(ack_id);
                    continue;
                }
                if b.seen.len() >= SEEN_LIMIT {
                    // Entries of messages handed back and then acked elsewhere are never
                    // removed here; forget them all rather than grow without bound (the
                    // server's count still applies).
                    b.seen.clear();
                }
                let seen = b.seen.entry(message_id.clone()).or_insert(0);
                *seen += 1;
                let attempt = delivery_attempt.max(1).max(*seen);
                b.pending.push_back(Pending {
                    message: Message {
                        data,
                        ordering_key,
                        attributes: attributes.into_iter().collect(),
                    },
                    message_id,
                    ack_id,
                    attempt,
                });
            }
        }
        state.notify.notify_waiters();
        if !settled.is_empty()
            && let Err(e) = inner.rest.acknowledge(&state.path, &settled).await
        {
            debug!(subscription = %state.spec.name, error = %e, "cannot settle filtered-out messages; they come back and are settled again");
        }
    }
}

/// Keeps the server deadline of every message this process holds ahead of its expiry, and
/// hands back deliveries whose local lease expired.
async fn keep_leases(inner: Arc<Inner>, state: Arc<SubState>) {
    let deadline = ack_deadline_secs(&state.spec);
    let every = Duration::from_secs(u64::from(deadline) / 3).max(Duration::from_secs(1));
    let mut stopping = inner.stopping.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopping.wait_for(|s| *s) => break,
        }
        let back = state.expire();
        inner.hand_back(&state, &back).await;
        let ids = state.lock().leased_ids();
        if ids.is_empty() {
            continue;
        }
        if let Err(e) = inner
            .rest
            .modify_ack_deadline(&state.path, &ids, u64::from(deadline))
            .await
        {
            warn!(subscription = %state.spec.name, error = %e, n = ids.len(), "cannot extend leases; Pub/Sub may redeliver (same event ids)");
        }
    }
}

/// The settings of a Pub/Sub subscription the host compares ([`drift::compare`]).
fn settings_of(sub: &Subscription) -> drift::Settings {
    let std_of = |d: &Option<google_cloud_wkt::Duration>| {
        d.as_ref()
            .and_then(|d| Duration::try_from(*d).ok())
            .unwrap_or_default()
    };
    drift::Settings {
        topic: sub.topic.clone(),
        filter: sub.filter.clone(),
        message_ordering: sub.enable_message_ordering,
        ack_deadline: Duration::from_secs(sub.ack_deadline_seconds.max(0) as u64),
        dead_letter: sub.dead_letter_policy.as_ref().map(|p| drift::DeadLetter {
            topic: p.dead_letter_topic.clone(),
            max_delivery_attempts: p.max_delivery_attempts,
        }),
        retry: sub.retry_policy.as_ref().map(|p| drift::Retry {
            minimum_backoff: std_of(&p.minimum_backoff),
            maximum_backoff: std_of(&p.maximum_backoff),
        }),
    }
}

/// The server-side ack deadline of a subscription, in seconds (Pub/Sub allows 10 to 600).
fn ack_deadline_secs(spec: &SubscriptionSpec) -> u32 {
    let allowed = &limits::ACK_DEADLINE_SECS;
    (spec.ack_deadline.as_secs() as i64).clamp(*allowed.start(), *allowed.end()) as u32
}

#[async_trait]
impl Ledger for PubSubLedger {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn ensure_topic(&self, topic: &str) -> PortResult<()> {
        self.inner.ensure_topic(topic).await
    }

    async fn ensure_subscription(&self, spec: &SubscriptionSpec) -> PortResult<()> {
        self.inner.ensure_topic(&spec.topic).await?;
        self.inner.create_subscription(spec).await?;
        let mut subs = self.inner.subs.lock().unwrap_or_else(|e| e.into_inner());
        if !subs.contains_key(&spec.name) {
            let state = Arc::new(SubState {
                path: self.inner.subscription_path(&spec.name),
                spec: spec.clone(),
                buffer: Mutex::default(),
                notify: Notify::new(),
                room: Notify::new(),
            });
            subs.insert(spec.name.clone(), state.clone());
            let mut readers = self.inner.readers.lock().unwrap_or_else(|e| e.into_inner());
            readers.push(tokio::spawn(read_pulls(self.inner.clone(), state.clone())));
            readers.push(tokio::spawn(keep_leases(self.inner.clone(), state)));
        }
        Ok(())
    }

    async fn publish(&self, topic: &str, messages: Vec<Message>) -> PortResult<()> {
        for m in &messages {
            limits::check_message(m).map_err(|e| {
                PortError::invalid(BACKEND, format!("publishing to topic `{topic}`: {e}"))
            })?;
        }
        let n = messages.len();
        let path: Arc<str> = self.inner.topic_path(topic).into();
        let deadline = Instant::now() + self.inner.config.publish_retry_for;
        // One lane per ordering key: lanes run concurrently (bounded), a lane's requests one
        // after the other, each only once the previous is confirmed, so a failing request
        // holds back only its key and is resent before anything later of that key.
        let permits = Arc::new(Semaphore::new(self.inner.config.publish_concurrency.max(1)));
        let mut lanes = JoinSet::new();
        for lane in rest::publish_requests(messages) {
            let (inner, path, permits) = (self.inner.clone(), path.clone(), permits.clone());
            let topic = topic.to_string();
            lanes.spawn(async move {
                let _permit = permits.acquire_owned().await;
                inner.publish_lane(&topic, &path, lane, deadline).await
            });
        }
        let mut first_error = None;
        while let Some(done) = lanes.join_next().await {
            let result = done.unwrap_or_else(|e| {
                Err(PortError::unavailable(
                    BACKEND,
                    format!("a publish to {path} was cancelled: {e}"),
                ))
            });
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => {
                debug!(topic, messages = n, "published");
                Ok(())
            }
        }
    }

    async fn pull(
        &self,
        subscription: &str,
        max: usize,
        wait: Duration,
    ) -> PortResult<Vec<Delivery>> {
        let state = self.state(subscription)?;
        let deadline = Instant::now() + wait;
        loop {
            let back = state.expire();
            self.inner.hand_back(&state, &back).await;
            let notified = state.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut out = Vec::new();
            {
                let mut b = state.lock();
                let lease = Instant::now() + state.spec.ack_deadline;
                // A key with deliveries out from an earlier pull waits for them; within this
                // pull a key's messages go out together, in order (a shard's events batch).
                let blocked: HashSet<String> = b.busy.keys().cloned().collect();
                let mut i = 0;
                while i < b.pending.len() && out.len() < max {
                    let key = b.pending[i].message.ordering_key.clone();
                    if !key.is_empty() && blocked.contains(&key) {
                        i += 1;
                        continue;
                    }
                    let Some(p) = b.pending.remove(i) else { break };
                    if !key.is_empty() {
                        *b.busy.entry(key.clone()).or_insert(0) += 1;
                    }
                    out.push(Delivery {
                        ack_id: p.ack_id.clone(),
                        message: p.message,
                        attempt: p.attempt,
                    });
                    b.outstanding.insert(
                        p.ack_id,
                        Outstanding {
                            key,
                            message_id: p.message_id,
                            deadline: lease,
                        },
                    );
                }
                if out.is_empty()
                    && Instant::now() >= deadline
                    && let Some(e) = b.error.take()
                {
                    return Err(PortError::unavailable(BACKEND, e));
                }
            }
            if !out.is_empty() || Instant::now() >= deadline {
                return Ok(out);
            }
            // Wake for new messages, and soon enough to expire leases.
            let nap = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(250));
            let _ = tokio::time::timeout(nap, notified).await;
        }
    }

    async fn ack(&self, subscription: &str, ack_ids: &[String]) -> PortResult<()> {
        let state = self.state(subscription)?;
        let mut settled = Vec::with_capacity(ack_ids.len());
        {
            let mut b = state.lock();
            for id in ack_ids {
                match b.outstanding.remove(id) {
                    Some(o) => {
                        b.free_key(&o.key);
                        b.seen.remove(&o.message_id);
                        settled.push(id.clone());
                    }
                    None => {
                        debug!(subscription, ack_id = %id, "ack of an unknown or expired delivery")
                    }
                }
            }
        }
        state.notify.notify_waiters();
        state.room.notify_waiters();
        // Pub/Sub redelivers what it did not hear acked: a failure here costs a duplicate
        // (same event id), never a loss.
        self.inner
            .rest
            .acknowledge(&state.path, &settled)
            .await
            .map_err(|e| {
                PortError::unavailable(BACKEND, format!("acknowledging on {}: {e}", state.path))
            })
    }

    async fn nack(
        &self,
        subscription: &str,
        ack_ids: &[String],
        delay: Duration,
    ) -> PortResult<()> {
        let state = self.state(subscription)?;
        let mut back = Vec::new();
        let mut held = Vec::new();
        {
            let mut b = state.lock();
            for id in ack_ids {
                let Some(o) = b.outstanding.remove(id) else {
                    debug!(subscription, ack_id = %id, "nack of an unknown or expired delivery");
                    continue;
                };
                if delay.is_zero() {
                    b.free_key(&o.key);
                    back.push(id.clone());
                    back.extend(b.return_key(&o.key));
                } else {
                    // The key stays busy and the lease keeper keeps the message leased.
                    b.held.insert(id.clone());
                    held.push((id.clone(), o.key));
                }
            }
        }
        self.inner.hand_back(&state, &back).await;
        if !held.is_empty() {
            let (inner, state) = (self.inner.clone(), state.clone());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let mut back = Vec::new();
                {
                    let mut b = state.lock();
                    for (id, key) in held {
                        b.held.remove(&id);
                        b.free_key(&key);
                        back.push(id);
                        back.extend(b.return_key(&key));
                    }
                }
                inner.hand_back(&state, &back).await;
                state.notify.notify_waiters();
                state.room.notify_waiters();
            });
        }
        state.notify.notify_waiters();
        state.room.notify_waiters();
        Ok(())
    }

    async fn extend(
        &self,
        subscription: &str,
        ack_ids: &[String],
        deadline: Duration,
    ) -> PortResult<()> {
        let state = self.state(subscription)?;
        let until = Instant::now() + deadline;
        let mut b = state.lock();
        for id in ack_ids {
            if let Some(o) = b.outstanding.get_mut(id) {
                o.deadline = until;
            }
        }
        Ok(())
    }

    async fn release(&self) -> PortResult<()> {
        self.inner.stopping.send_replace(true);
        let tasks: Vec<_> = self
            .inner
            .readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for mut t in tasks {
            // Each reader finishes the Pull it has in flight (bounded by the pull timeout).
            if tokio::time::timeout(rest::PULL_TIMEOUT, &mut t)
                .await
                .is_err()
            {
                t.abort();
            }
        }
        let subs: Vec<Arc<SubState>> = self
            .inner
            .subs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for state in subs {
            let ids = {
                let mut b = state.lock();
                let ids = b.leased_ids();
                *b = Buffer::default();
                ids
            };
            if !ids.is_empty() {
                info!(subscription = %state.spec.name, n = ids.len(), "handing held deliveries back to Pub/Sub");
                self.inner.hand_back(&state, &ids).await;
            }
        }
        Ok(())
    }

    fn topic_generation(&self, topic: &str) -> u64 {
        self.inner
            .generations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
            .copied()
            .unwrap_or(0)
    }

    async fn last_message(&self, topic: &str) -> PortResult<Option<Message>> {
        debug!(
            topic,
            "pubsub cannot read a topic's newest message; watermark recovery falls back"
        );
        Ok(None)
    }

    async fn list_topics(&self) -> PortResult<Vec<String>> {
        let project = format!("projects/{}", self.inner.config.project);
        let mut names = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .inner
                .topic_admin
                .list_topics()
                .set_project(project.clone())
                .set_page_token(token)
                .send()
                .await
                .map_err(|e| map_err(&format!("listing the topics of {project}"), &e))?;
            for t in page.topics {
                if let Some(id) = t.name.rsplit('/').next() {
                    names.push(ledger_name(id));
                }
            }
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        names.sort();
        Ok(names)
    }

    async fn read_retained(
        &self,
        _topic: &str,
        _after: i64,
        _max: usize,
    ) -> PortResult<Vec<ledgerhost_core::ledger::Retained>> {
        Err(no_topic_reads("read a topic's retained messages"))
    }

    async fn retained_count(&self, _topic: &str) -> PortResult<u64> {
        Err(no_topic_reads("count a topic's retained messages"))
    }

    async fn dead_letters(&self, subscription: &str, max: usize) -> PortResult<Vec<DeadLetter>> {
        let (path, held) = self.inner.pull_dead_letters(subscription, max).await?;
        let ids: Vec<String> = held.iter().map(|(id, _)| id.clone()).collect();
        // Listing settles nothing: hand every one back at once.
        if let Err(e) = self.inner.rest.modify_ack_deadline(&path, &ids, 0).await {
            warn!(subscription = %path, error = %e, "cannot hand listed dead letters back; they return after their ack deadline");
        }
        Ok(held.into_iter().map(|(_, d)| d).collect())
    }

    async fn redrive(
        &self,
        subscription: &str,
        selection: &RedriveSelection,
        extra: &BTreeMap<String, String>,
    ) -> PortResult<Vec<DeadLetter>> {
        // The topic the subscription reads, as Pub/Sub has it (this process may not have
        // ensured the subscription: the CLI runs beside the host).
        let sub_path = self.inner.subscription_path(subscription);
        let sub = self
            .inner
            .sub_admin
            .get_subscription()
            .set_subscription(sub_path.clone())
            .send()
            .await
            .map_err(|e| map_err(&format!("reading subscription {sub_path}"), &e))?;
        let topic = ledger_name(sub.topic.rsplit('/').next().unwrap_or_default());
        let (path, held) = self
            .inner
            .pull_dead_letters(subscription, usize::MAX)
            .await?;
        let (chosen, rest): (Vec<_>, Vec<_>) =
            held.into_iter().partition(|(_, d)| selection.selects(d));
        let back: Vec<String> = rest.into_iter().map(|(id, _)| id).collect();
        if let Err(e) = self.inner.rest.modify_ack_deadline(&path, &back, 0).await {
            warn!(subscription = %path, error = %e, "cannot hand unselected dead letters back; they return after their ack deadline");
        }
        if chosen.is_empty() {
            return Ok(Vec::new());
        }
        let copies: Vec<Message> = chosen.iter().map(|(_, d)| d.redrive_copy(extra)).collect();
        let ids: Vec<String> = chosen.iter().map(|(id, _)| id.clone()).collect();
        if let Err(e) = self.publish(&topic, copies).await {
            let _ = self.inner.rest.modify_ack_deadline(&path, &ids, 0).await;
            return Err(e);
        }
        // Published first, then settled: a failure here leaves them listed, and a second
        // redrive delivers a duplicate (same event id), never nothing.
        self.inner
            .rest
            .acknowledge(&path, &ids)
            .await
            .map_err(|e| {
                PortError::unavailable(
                    BACKEND,
                    format!("redriven onto {topic}, but acknowledging them on {path} failed (a later redrive repeats them): {e}"),
                )
            })?;
        Ok(chosen.into_iter().map(|(_, d)| d).collect())
    }
}

/// Pub/Sub's API has no read of a topic: messages reach a reader only through a
/// subscription, from the time it was created (or sought to).
fn no_topic_reads(operation: &'static str) -> PortError {
    PortError::Unsupported {
        backend: BACKEND,
        operation,
        why: "Pub/Sub delivers messages only through subscriptions (there is no API to read \
              a topic); to re-deliver a time range, seek the plugin's subscription \
              (`gcloud pubsub subscriptions seek plugin-<name> --time=...`, which needs \
              `retain-acked-messages` on it) or republish from the source with `ledgerhost backfill`"
            .into(),
    }
}

/// The ledger name of a Pub/Sub topic or subscription id: the inverse of [`resource_id`]
/// (an id that does not decode to a name mapping back to it is a name as is).
pub fn ledger_name(id: &str) -> String {
    if let Some(rest) = id.strip_prefix("lh-") {
        let bytes = rest.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = (bytes[i] == b'%')
                .then(|| rest.get(i + 1..i + 3))
                .flatten()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) => {
                    out.push(b);
                    i += 3;
                }
                None => {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
        }
        if let Ok(name) = String::from_utf8(out)
            && resource_id(&name) == id
        {
            return name;
        }
    }
    id.to_string()
}

impl PubSubLedger {
    fn state(&self, subscription: &str) -> PortResult<Arc<SubState>> {
        self.inner
            .subs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(subscription)
            .cloned()
            .ok_or_else(|| PortError::NotFound {
                backend: BACKEND,
                what: format!(
                    "subscription `{subscription}` (call ensure_subscription first in this process)"
                ),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_ids_are_valid_and_distinct() {
        assert_eq!(resource_id("orders"), "orders");
        assert_eq!(resource_id("t"), "lh-t");
        assert_eq!(resource_id("a b/c"), "lh-a%20b%2Fc");
        assert_eq!(resource_id("9lives"), "lh-9lives");
        assert_ne!(resource_id("a%b"), resource_id("a%25b"));
    }

    #[test]
    fn ledger_names_invert_resource_ids() {
        for name in [
            "orders", "t", "a b/c", "9lives", "a%b", "a%25b", "lh-abc", "día", "goog-x",
        ] {
            assert_eq!(ledger_name(&resource_id(name)), name, "{name}");
        }
    }

    #[test]
    fn filters_are_quoted() {
        let mut f = BTreeMap::new();
        f.insert("table".to_string(), "or\"ders".to_string());
        f.insert("client".to_string(), "7".to_string());
        assert_eq!(
            attribute_filter(&f).unwrap(),
            "attributes.client = \"7\" AND attributes.table = \"or\\\"ders\""
        );
        f.insert("bad key".into(), "x".into());
        assert!(attribute_filter(&f).is_err());
    }
}
