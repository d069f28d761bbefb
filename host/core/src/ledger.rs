//! The ledger port: durable topics and subscriptions (embedded log, Pub/Sub in production).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

use crate::PortResult;

pub mod attr;
pub mod batch;
pub mod limits;
mod message;
pub mod ordering;
pub mod wire;

pub use batch::Batch;
pub use message::Message;

/// A poller's progress on one table (the record is the poller's own, opaque to the ledger),
/// handed to [`Ledger::publish_page`] with the page of messages it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The source table the progress is of.
    pub table: String,
    /// The poller's record of where it got to.
    pub record: String,
}

/// A message kept on a topic, with its position in the topic's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retained {
    /// Increases with publish order; pass the last one seen as `after` to read on.
    pub position: i64,
    /// The retained message.
    pub message: Message,
}

/// A subscription to create (idempotently) on a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSpec {
    /// Subscription name.
    pub name: String,
    /// Topic the subscription reads from.
    pub topic: String,
    /// Attribute equality filter the backend may apply server-side (`attributes.k = "v"`).
    pub attribute_filter: BTreeMap<String, String>,
    /// How long a delivery stays leased before it is redelivered.
    pub ack_deadline: Duration,
    /// Topic receiving messages that were rejected or ran out of attempts.
    pub dead_letter_topic: String,
}

/// The subscription that holds the dead letters of `subscription` (on its dead-letter
/// topic), created by [`Ledger::ensure_subscription`] with it, read by the dead-letter tools.
pub fn dead_letter_subscription(subscription: &str) -> String {
    format!("{subscription}.dead-letters")
}

/// A dead-lettered message waiting on its dead-letter subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The event id (attribute [`attr::EVENT_ID`]), empty when the message has none.
    pub event_id: String,
    /// Why it was dead-lettered ([`attr::DEAD_LETTER_REASON`], or Pub/Sub's policy).
    pub reason: String,
    /// Delivery attempts made before it was dead-lettered (0: unknown).
    pub attempts: u32,
    /// When it reached the dead-letter topic, µs since the epoch (its publish time there).
    pub dead_lettered_at_micros: i64,
    /// The dead-letter message as stored (the original with the dead-letter attributes).
    pub message: Message,
}

impl DeadLetter {
    /// Reads the dead-letter attributes of `message`, published at `at_micros`.
    pub fn from_message(message: Message, at_micros: i64) -> Self {
        let a = &message.attributes;
        let attempts = a
            .get(attr::DEAD_LETTER_ATTEMPTS)
            .or_else(|| a.get(attr::PUBSUB_DEAD_LETTER_DELIVERY_COUNT))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let reason = match a.get(attr::DEAD_LETTER_REASON) {
            Some(r) => r.clone(),
            None if a.contains_key(attr::PUBSUB_DEAD_LETTER_DELIVERY_COUNT) => {
                "Pub/Sub's dead-letter policy: maximum delivery attempts reached".into()
            }
            None => String::new(),
        };
        DeadLetter {
            event_id: a.get(attr::EVENT_ID).cloned().unwrap_or_default(),
            reason,
            attempts,
            dead_lettered_at_micros: at_micros,
            message,
        }
    }

    /// The copy to deliver again: the original message without the dead-letter attributes,
    /// with `extra` set (e.g. [`attr::REPLAY_FOR`], so only the plugin that gave up handles it).
    pub fn redrive_copy(&self, extra: &BTreeMap<String, String>) -> Message {
        let mut m = self.message.clone();
        m.attributes.retain(|k, _| {
            k != attr::DEAD_LETTER_REASON
                && k != attr::DEAD_LETTER_SUBSCRIPTION
                && k != attr::DEAD_LETTER_ATTEMPTS
                && !k.starts_with(attr::PUBSUB_DEAD_LETTER_PREFIX)
        });
        m.attributes.extend(extra.clone());
        m
    }
}

/// Which dead letters [`Ledger::redrive`] delivers again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedriveSelection {
    /// Every dead letter of the subscription.
    All,
    /// Those with this event id.
    Event(String),
}

impl RedriveSelection {
    /// Whether `dead_letter` is selected.
    pub fn selects(&self, dead_letter: &DeadLetter) -> bool {
        match self {
            RedriveSelection::All => true,
            RedriveSelection::Event(id) => dead_letter.event_id == *id,
        }
    }
}

/// A leased message. Settle it with ack, nack or let the lease expire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Lease handle; pass it to ack, nack or modify the deadline.
    pub ack_id: String,
    /// The delivered message.
    pub message: Message,
    /// 1 on first delivery, incremented on each redelivery.
    pub attempt: u32,
}

/// Durable topics with subscriptions.
///
/// Delivery is at least once. Per ordering key, messages are handed out in publish order:
/// one pull may hand out several of a key (in order), and a message is not delivered while an
/// earlier message of the same key on the same subscription is outstanding from an earlier
/// pull or waiting for retry. Every ledger refuses a message Pub/Sub would ([`limits`]).
#[async_trait]
pub trait Ledger: Send + Sync {
    /// Backend name for logs and errors ("embedded", "pubsub").
    fn backend(&self) -> &'static str;

    /// Creates the topic if it does not exist.
    async fn ensure_topic(&self, topic: &str) -> PortResult<()>;

    /// Creates the subscription if it does not exist (and its topic and dead-letter topic).
    async fn ensure_subscription(&self, spec: &SubscriptionSpec) -> PortResult<()>;

    /// Publishes in order; returns only once every message is durably accepted.
    async fn publish(&self, topic: &str, messages: Vec<Message>) -> PortResult<()>;

    /// Publishes a page of a poll like [`Ledger::publish`] and records `progress` with it.
    /// Returns true when the progress was stored in the same durable write as the messages
    /// (the embedded ledger: one SQLite transaction, so after any crash the progress never
    /// stands past messages the ledger lost); false when the ledger only published and the
    /// caller must persist the progress itself, which it may do now: every message is
    /// confirmed. An empty page stores the progress alone. The page comes as one [`Batch`]
    /// (the encoder writes it so); a ledger without a use for that publishes its messages.
    async fn publish_page(
        &self,
        topic: &str,
        page: Batch,
        _progress: &Progress,
    ) -> PortResult<bool> {
        if !page.is_empty() {
            self.publish(topic, page.to_messages()).await?;
        }
        Ok(false)
    }

    /// The progress record last stored by [`Ledger::publish_page`] for `table`, where the
    /// ledger stores progress (`Ok(None)` otherwise, or when none was stored yet).
    async fn progress(&self, _table: &str) -> PortResult<Option<String>> {
        Ok(None)
    }

    /// Leases up to `max` messages, waiting at most `wait` for the first one.
    async fn pull(
        &self,
        subscription: &str,
        max: usize,
        wait: Duration,
    ) -> PortResult<Vec<Delivery>>;

    /// Settles deliveries as done.
    async fn ack(&self, subscription: &str, ack_ids: &[String]) -> PortResult<()>;

    /// Returns deliveries for redelivery after `delay`.
    async fn nack(&self, subscription: &str, ack_ids: &[String], delay: Duration)
    -> PortResult<()>;

    /// Extends the lease of outstanding deliveries to `deadline` from now.
    async fn extend(
        &self,
        subscription: &str,
        ack_ids: &[String],
        deadline: Duration,
    ) -> PortResult<()>;

    /// The newest message on the topic, when the backend can tell (used to recover a lost
    /// poller watermark). `Ok(None)` when the topic is empty or the backend cannot tell.
    async fn last_message(&self, topic: &str) -> PortResult<Option<Message>>;

    /// The ledger's topics (the names given to [`Ledger::ensure_topic`]), sorted.
    async fn list_topics(&self) -> PortResult<Vec<String>>;

    /// Messages retained on `topic` after position `after` (0: from the oldest), oldest
    /// first, at most `max`: what the topic keeps whatever its subscriptions did with them
    /// (for `replay` and `plugin test`). [`PortError::Unsupported`](crate::PortError) where
    /// the backend cannot read a topic (Pub/Sub delivers only through subscriptions).
    async fn read_retained(&self, topic: &str, after: i64, max: usize)
    -> PortResult<Vec<Retained>>;

    /// How many messages `topic` retains; unsupported where [`Ledger::read_retained`] is.
    async fn retained_count(&self, topic: &str) -> PortResult<u64>;

    /// How many times this process found `topic` lost (with the messages it held, e.g. a
    /// restarted emulator) and re-created it and its subscriptions. A poller that sees it
    /// grow re-publishes from its start point, since the lost messages are gone. Durable
    /// backends never lose a topic they created: 0.
    fn topic_generation(&self, _topic: &str) -> u64 {
        0
    }

    /// The dead letters of `subscription` waiting on its dead-letter subscription
    /// ([`dead_letter_subscription`]), oldest first, at most `max`; none are settled.
    async fn dead_letters(&self, subscription: &str, max: usize) -> PortResult<Vec<DeadLetter>>;

    /// Publishes the selected dead letters of `subscription` back onto the topic the
    /// subscription reads ([`DeadLetter::redrive_copy`] with `extra`), then settles them on
    /// the dead-letter subscription; returns those redriven. A topic reaches every
    /// subscription on it, so `extra` should name the one consumer that handles the copy.
    async fn redrive(
        &self,
        subscription: &str,
        selection: &RedriveSelection,
        extra: &BTreeMap<String, String>,
    ) -> PortResult<Vec<DeadLetter>>;

    /// Stops consuming and hands back every delivery this process still holds, so other
    /// consumers of the subscriptions get them now rather than after their ack deadline.
    /// Called once at shutdown, after the dispatchers stopped. Backends that hold nothing
    /// beyond their durable state do nothing.
    async fn release(&self) -> PortResult<()> {
        Ok(())
    }
}
