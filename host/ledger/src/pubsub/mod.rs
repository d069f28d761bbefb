//! Cloud Pub/Sub as the ledger (production): topics, subscriptions and publishing through
//! the official `google-cloud-pubsub` client (publishing by gRPC with its `Publisher`),
//! consuming over Pub/Sub's REST surface ([`rest`]).
//!
//! - One topic per table, published with the ordering key and attributes as given, in
//!   requests of one ordering key each, up to 1 000 messages and 10 MB; [`Ledger::publish`]
//!   returns once every message was answered with its message id (a failed key is resent
//!   from its first failed message: duplicates keep their event ids).
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
//!
//! The parts: `config` (where Pub/Sub is), `client` (the clients and shared state),
//! `admin` (topics and subscriptions), `publish` (the `Publisher`, per topic), `pull` (the buffered
//! consumer), `buffer` (what a subscription holds here), `dead_letters`, `names` (resource
//! ids and filters), `error` (status codes to port errors), and [`rest`] (the consuming calls).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use google_cloud_gax::error::rpc::Code;
use ledgerhost_core::PortResult;
use ledgerhost_core::ledger::{
    DeadLetter, Delivery, Ledger, Message, RedriveSelection, Retained, SubscriptionSpec,
};
use tracing::debug;

mod admin;
mod buffer;
mod client;
mod config;
mod dead_letters;
mod error;
mod names;
mod publish;
mod pull;
pub mod rest;

pub use admin::MAX_DELIVERY_ATTEMPTS;
pub use config::PubSubConfig;
pub use names::{attribute_filter, ledger_name, resource_id};
pub use pull::MAX_BUFFERED;

use client::Inner;
use error::{BACKEND, code_of, map_err, no_topic_reads};

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

impl PubSubLedger {
    /// Builds the clients (nothing is created on the server yet).
    pub async fn connect(config: PubSubConfig) -> PortResult<Self> {
        Ok(PubSubLedger {
            inner: Arc::new(Inner::connect(config).await?),
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
        pull::start(&self.inner, spec);
        Ok(())
    }

    async fn publish(&self, topic: &str, messages: Vec<Message>) -> PortResult<()> {
        publish::publish(&self.inner, topic, messages).await
    }

    async fn pull(
        &self,
        subscription: &str,
        max: usize,
        wait: Duration,
    ) -> PortResult<Vec<Delivery>> {
        pull::pull(&self.inner, subscription, max, wait).await
    }

    async fn ack(&self, subscription: &str, ack_ids: &[String]) -> PortResult<()> {
        pull::ack(&self.inner, subscription, ack_ids).await
    }

    async fn nack(
        &self,
        subscription: &str,
        ack_ids: &[String],
        delay: Duration,
    ) -> PortResult<()> {
        pull::nack(&self.inner, subscription, ack_ids, delay).await
    }

    async fn extend(
        &self,
        subscription: &str,
        ack_ids: &[String],
        deadline: Duration,
    ) -> PortResult<()> {
        pull::extend(&self.inner, subscription, ack_ids, deadline)
    }

    async fn release(&self) -> PortResult<()> {
        pull::release(&self.inner).await
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
    ) -> PortResult<Vec<Retained>> {
        Err(no_topic_reads("read a topic's retained messages"))
    }

    async fn retained_count(&self, _topic: &str) -> PortResult<u64> {
        Err(no_topic_reads("count a topic's retained messages"))
    }

    async fn dead_letters(&self, subscription: &str, max: usize) -> PortResult<Vec<DeadLetter>> {
        dead_letters::list(&self.inner, subscription, max).await
    }

    async fn redrive(
        &self,
        subscription: &str,
        selection: &RedriveSelection,
        extra: &BTreeMap<String, String>,
    ) -> PortResult<Vec<DeadLetter>> {
        dead_letters::redrive(&self.inner, subscription, selection, extra).await
    }
}
