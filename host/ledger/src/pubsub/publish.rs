//! Publishing: one lane per ordering key (one key per request, as Pub/Sub requires for
//! ordered delivery), lanes concurrent up to the configured bound, each request retried
//! until confirmed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ledgerhost_core::ledger::{Message, limits};
use ledgerhost_core::{PortError, PortResult};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::client::Inner;
use super::error::BACKEND;
use super::rest::{self, RestError};

/// Publishes `messages` to `topic`, returning once every request was confirmed (or the
/// first error after the retry budget).
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
    let path: Arc<str> = inner.topic_path(topic).into();
    let deadline = Instant::now() + inner.config.publish_retry_for;
    // One lane per ordering key: lanes run concurrently (bounded), a lane's requests one
    // after the other, each only once the previous is confirmed, so a failing request
    // holds back only its key and is resent before anything later of that key.
    let permits = Arc::new(Semaphore::new(inner.config.publish_concurrency.max(1)));
    let mut lanes = JoinSet::new();
    for lane in rest::publish_requests(messages) {
        let (inner, path, permits) = (inner.clone(), path.clone(), permits.clone());
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

impl Inner {
    /// Sends one ordering key's requests in order, each retried (with backoff, re-creating
    /// a lost topic) until confirmed or `deadline`. Resending is safe: a request that did
    /// land gives duplicates with the same event ids, never a gap.
    pub(super) async fn publish_lane(
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
}
