//! Publishing with the official client's `Publisher` (gRPC). It batches each ordering key's
//! messages into requests of that key alone — production refuses a request whose messages
//! have different ordering keys (`PubsubMessage.ordering_key`: "All PubsubMessages published
//! in a given PublishRequest must specify the same ordering_key value") — within 1 000
//! messages and 10 MB a request, keeps one request of a key in flight, and pauses a key
//! after a failed request so nothing later of it overtakes. A `publish` here hands a page
//! over, flushes, and waits for every message; a failed key is resumed and its messages
//! from the first failed one on go again, until [`PubSubConfig::publish_retry_for`] ends:
//! duplicates with the same event ids at worst, never a gap or a reordering.
//!
//! [`PubSubConfig::publish_retry_for`]: super::PubSubConfig::publish_retry_for

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use google_cloud_gax::error::rpc::Code;
use google_cloud_pubsub::client::Publisher;
use google_cloud_pubsub::error::PublishError;
use ledgerhost_core::ledger::{Message, limits};
use ledgerhost_core::{PortError, PortResult};
use tracing::{debug, warn};

use super::client::Inner;
use super::error::{BACKEND, code_of};

/// How long the `Publisher` holds a key's first message for more before it sends: a page
/// is handed over whole and flushed, so this only bounds a page's tail under load.
const DELAY_THRESHOLD: Duration = Duration::from_millis(5);

/// What one attempt at a page left to do.
struct Failed {
    /// The messages to publish again, in their order.
    again: Vec<google_cloud_pubsub::model::Message>,
    /// Their ordering keys, paused by the `Publisher` until resumed.
    keys: HashSet<String>,
    /// The first error a request returned (not the pauses it caused).
    cause: Option<Arc<google_cloud_pubsub::Error>>,
}

/// Publishes `messages` to `topic`, returning once every message was confirmed (or with
/// the first error after the retry budget).
pub(super) async fn publish(
    inner: &Arc<Inner>,
    topic: &str,
    messages: Vec<Message>,
) -> PortResult<()> {
    for m in &messages {
        limits::check_message(m).map_err(|e| {
            PortError::invalid(BACKEND, format!("publishing to topic `{topic}`: {e}"))
        })?;
    }
    let n = messages.len();
    let publisher = inner.publisher(topic);
    let deadline = Instant::now() + inner.config.publish_retry_for;
    let mut pending: Vec<_> = messages.into_iter().map(to_model).collect();
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(failed) = attempt(&publisher, pending).await else {
            debug!(topic, messages = n, "published");
            return Ok(());
        };
        // The keys stay paused until resumed; resumed only now, once every message of the
        // attempt has its answer, so nothing of a key is sent before its earlier ones again.
        for key in &failed.keys {
            publisher.resume_publish(key.clone());
        }
        let code = failed.cause.as_deref().and_then(code_of);
        // No cause of its own: each key was paused by an earlier failure (another caller's
        // publish of the same ordering key), or the publisher stopped.
        let why = failed.cause.as_ref().map_or_else(
            || "paused after an earlier failed publish of the same ordering keys".to_string(),
            |e| e.to_string(),
        );
        let path = inner.topic_path(topic);
        if matches!(
            code,
            Some(Code::InvalidArgument | Code::PermissionDenied | Code::Unauthenticated)
        ) {
            return Err(PortError::invalid(
                BACKEND,
                format!("publishing to {path}: {why}"),
            ));
        }
        if Instant::now() >= deadline {
            return Err(PortError::unavailable(
                BACKEND,
                format!(
                    "publishing {} messages of {} ordering keys to {path} failed for {:?}: {why}",
                    failed.again.len(),
                    failed.keys.len(),
                    inner.config.publish_retry_for
                ),
            ));
        }
        let missing = code == Some(Code::NotFound);
        warn!(topic, messages = failed.again.len(), keys = failed.keys.len(), missing, error = %why, "publish failed; retrying these keys");
        if missing && let Err(e) = inner.recreate_topic(topic).await {
            warn!(topic, error = %e, "cannot recreate the topic yet");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
        pending = failed.again;
    }
}

/// Hands `pending` to the publisher, flushes, and waits for every answer. `None` when all
/// were confirmed; else what is left, from each failed key's first failed message on.
async fn attempt(
    publisher: &Publisher,
    pending: Vec<google_cloud_pubsub::model::Message>,
) -> Option<Failed> {
    let answers: Vec<_> = pending
        .iter()
        .map(|m| publisher.publish(m.clone()))
        .collect();
    publisher.flush().await;
    let mut failed = Failed {
        again: Vec::new(),
        keys: HashSet::new(),
        cause: None,
    };
    for (m, answer) in pending.into_iter().zip(answers) {
        let result = answer.await;
        if result.is_ok() && !failed.keys.contains(&m.ordering_key) {
            continue;
        }
        if let Err(PublishError::Rpc(e)) = result {
            failed.cause.get_or_insert(e);
        }
        failed.keys.insert(m.ordering_key.clone());
        failed.again.push(m);
    }
    (!failed.again.is_empty()).then_some(failed)
}

/// The client's form of a message; the payload moves, it is not copied.
fn to_model(m: Message) -> google_cloud_pubsub::model::Message {
    google_cloud_pubsub::model::Message::new()
        .set_data(m.data)
        .set_ordering_key(m.ordering_key)
        .set_attributes(m.attributes)
}

impl Inner {
    /// The publisher of `topic`, built on first use on the shared connection.
    pub(super) fn publisher(&self, topic: &str) -> Publisher {
        let mut publishers = self.publishers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = publishers.get(topic) {
            return p.clone();
        }
        let p = self
            .base_publisher
            .publisher(self.topic_path(topic))
            .set_message_count_threshold(limits::MAX_MESSAGES_PER_PUBLISH as u32)
            .set_byte_threshold(limits::MAX_PUBLISH_BYTES as u32)
            .set_delay_threshold(DELAY_THRESHOLD)
            .build();
        publishers.insert(topic.to_string(), p.clone());
        p
    }
}
