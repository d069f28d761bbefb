//! Pub/Sub's data plane — Publish, Pull, Acknowledge, ModifyAckDeadline — over its REST
//! surface (the admin plane stays with the client crate).
//!
//! - Publish: the crate's publisher batches per ordering key, so with one key per row every
//!   message was its own request (and it keeps one task per key ever seen). One Publish
//!   request here carries up to [`PUBLISH_MAX_MESSAGES`] messages of any keys, in order.
//! - Pull: the crate offers only streaming pull, and a streaming pull pins each ordering key
//!   to one open stream. The emulator never notices that a stream's process died (SIGKILL),
//!   so the keys pinned to it were never delivered again; unary pull has no stream to pin
//!   to: a dead consumer's deliveries expire after the ack deadline and go to whoever pulls
//!   next, on the emulator as on Google. Acks and deadline changes are explicit calls by ack
//!   id, which is what the `Ledger` trait speaks anyway.

use std::collections::HashMap;
use std::time::Duration;

use std::collections::BTreeMap;

use base64::Engine as _;
use google_cloud_auth::credentials::AccessTokenCredentials;
use ledgerhost_core::ledger::Message;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

/// Google's Pub/Sub endpoint, used when no endpoint or emulator is configured.
pub const GOOGLE_ENDPOINT: &str = "https://pubsub.googleapis.com";
const SCOPE: &str = "https://www.googleapis.com/auth/pubsub";
/// How long the server may hold one Pull before it answers (with nothing). Sent as
/// `X-Server-Timeout` (Google's REST deadline) and `grpc-timeout` (which the emulator
/// honours); the client waits a little longer, because an abandoned Pull stays open on the
/// emulator (it does not notice the closed connection) and swallows the next messages until
/// their ack deadline passes.
/// Short, so a stopping host waits little for its Pulls in flight, and a killed one leaves
/// an open Pull on the emulator for a few seconds only.
const PULL_WAIT_SECS: u64 = 5;
/// The client's limit on one Pull.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(PULL_WAIT_SECS + 10);
/// Pub/Sub takes at most this many ack ids per Acknowledge / ModifyAckDeadline request.
const IDS_PER_REQUEST: usize = 1000;
/// Pub/Sub takes at most 1 000 messages per Publish request...
pub const PUBLISH_MAX_MESSAGES: usize = 1000;
/// ... and 10 MB; data goes base64-encoded, so stay well below.
const PUBLISH_MAX_BYTES: usize = 6 * 1024 * 1024;

/// What a call failed with.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// The topic or subscription does not exist (e.g. a restarted emulator lost it).
    #[error("{0}")]
    NotFound(String),
    /// Refused for good (bad request, permission).
    #[error("{0}")]
    Invalid(String),
    /// Transport failure, timeout or server error: worth retrying.
    #[error("{0}")]
    Unavailable(String),
    /// A Pull that ended on our side without an answer: nothing arrived in time.
    #[error("no answer to pull within {PULL_TIMEOUT:?}")]
    PullTimedOut,
}

/// One message as Pull returns it.
#[derive(Debug)]
pub struct Received {
    pub ack_id: String,
    pub message_id: String,
    pub data: Vec<u8>,
    pub ordering_key: String,
    pub attributes: HashMap<String, String>,
    /// Pub/Sub's count, set when the subscription has a dead-letter policy (0 if not).
    pub delivery_attempt: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PullResponse {
    #[serde(default)]
    received_messages: Vec<ReceivedJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReceivedJson {
    ack_id: String,
    message: MessageJson,
    #[serde(default)]
    delivery_attempt: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageJson {
    #[serde(default)]
    data: String,
    #[serde(default)]
    attributes: HashMap<String, String>,
    #[serde(default)]
    message_id: String,
    #[serde(default)]
    ordering_key: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PublishRequest<'a> {
    messages: Vec<OutgoingJson<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutgoingJson<'a> {
    data: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    attributes: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "str::is_empty")]
    ordering_key: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PublishResponse {
    #[serde(default)]
    message_ids: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PullRequest {
    max_messages: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AckRequest<'a> {
    ack_ids: &'a [String],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ModifyRequest<'a> {
    ack_ids: &'a [String],
    ack_deadline_seconds: u64,
}

/// The data-plane calls, authenticated like the rest of the client.
pub struct RestClient {
    http: reqwest::Client,
    base: String,
    credentials: Option<AccessTokenCredentials>,
}

/// Splits `messages` into Publish requests: in order, each within Pub/Sub's count and size
/// limits (a message above the size limit goes alone, and Pub/Sub says why it refuses it).
pub fn publish_chunks(messages: &[Message]) -> Vec<&[Message]> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for (i, m) in messages.iter().enumerate() {
        let size = m.data.len()
            + m.ordering_key.len()
            + m.attributes
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        if i > start && (i - start == PUBLISH_MAX_MESSAGES || bytes + size > PUBLISH_MAX_BYTES) {
            chunks.push(&messages[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < messages.len() {
        chunks.push(&messages[start..]);
    }
    chunks
}

impl RestClient {
    /// A client for `endpoint` (`None`: Google's, with application default credentials).
    /// A plaintext `http://` endpoint is an emulator and goes unauthenticated.
    pub fn new(endpoint: Option<&str>) -> Result<Self, RestError> {
        let base = endpoint
            .unwrap_or(GOOGLE_ENDPOINT)
            .trim_end_matches('/')
            .to_string();
        let credentials = if base.starts_with("http://") {
            None
        } else {
            Some(
                google_cloud_auth::credentials::Builder::default()
                    .with_scopes([SCOPE])
                    .build_access_token_credentials()
                    .map_err(|e| {
                        RestError::Unavailable(format!(
                            "cannot load Google application default credentials: {e}; set \
                             GOOGLE_APPLICATION_CREDENTIALS or run `gcloud auth \
                             application-default login`"
                        ))
                    })?,
            )
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| RestError::Unavailable(format!("cannot build the HTTP client: {e}")))?;
        Ok(RestClient {
            http,
            base,
            credentials,
        })
    }

    /// Publishes `messages` (at most [`PUBLISH_MAX_MESSAGES`]) to `topic` (a full path) in
    /// one request; Pub/Sub keeps their order per ordering key. Returns the message ids.
    pub async fn publish(
        &self,
        topic: &str,
        messages: &[Message],
    ) -> Result<Vec<String>, RestError> {
        let req = PublishRequest {
            messages: messages
                .iter()
                .map(|m| OutgoingJson {
                    data: base64::engine::general_purpose::STANDARD.encode(&m.data),
                    attributes: &m.attributes,
                    ordering_key: &m.ordering_key,
                })
                .collect(),
        };
        let body = self.call(topic, "publish", &req).await?;
        let parsed: PublishResponse = serde_json::from_slice(&body).map_err(|e| {
            RestError::Unavailable(format!("publish to {topic}: unreadable answer: {e}"))
        })?;
        if parsed.message_ids.len() != messages.len() {
            return Err(RestError::Unavailable(format!(
                "publish to {topic}: {} message ids for {} messages",
                parsed.message_ids.len(),
                messages.len()
            )));
        }
        Ok(parsed.message_ids)
    }

    /// Long-polls `subscription` (a full path) for up to `max` messages; an empty answer
    /// after the server's wait is normal.
    pub async fn pull(&self, subscription: &str, max: usize) -> Result<Vec<Received>, RestError> {
        let body = self
            .call(subscription, "pull", &PullRequest { max_messages: max })
            .await?;
        let parsed: PullResponse = serde_json::from_slice(&body).map_err(|e| {
            RestError::Unavailable(format!("pull from {subscription}: unreadable answer: {e}"))
        })?;
        parsed
            .received_messages
            .into_iter()
            .map(|r| {
                let data = base64::engine::general_purpose::STANDARD
                    .decode(r.message.data.as_bytes())
                    .map_err(|e| {
                        RestError::Unavailable(format!(
                            "pull from {subscription}: message {} has undecodable data: {e}",
                            r.message.message_id
                        ))
                    })?;
                Ok(Received {
                    ack_id: r.ack_id,
                    message_id: r.message.message_id,
                    data,
                    ordering_key: r.message.ordering_key,
                    attributes: r.message.attributes,
                    delivery_attempt: r.delivery_attempt,
                })
            })
            .collect()
    }

    /// Acknowledges deliveries.
    pub async fn acknowledge(&self, subscription: &str, ids: &[String]) -> Result<(), RestError> {
        for chunk in ids.chunks(IDS_PER_REQUEST) {
            self.call(subscription, "acknowledge", &AckRequest { ack_ids: chunk })
                .await?;
        }
        Ok(())
    }

    /// Sets the deadline of deliveries to `seconds` from now; 0 hands them back at once.
    pub async fn modify_ack_deadline(
        &self,
        subscription: &str,
        ids: &[String],
        seconds: u64,
    ) -> Result<(), RestError> {
        for chunk in ids.chunks(IDS_PER_REQUEST) {
            let req = ModifyRequest {
                ack_ids: chunk,
                ack_deadline_seconds: seconds.min(600),
            };
            self.call(subscription, "modifyAckDeadline", &req).await?;
        }
        Ok(())
    }

    async fn call<B: Serialize>(
        &self,
        resource: &str,
        verb: &str,
        body: &B,
    ) -> Result<Vec<u8>, RestError> {
        let url = format!("{}/v1/{resource}:{verb}", self.base);
        let mut rb = self.http.post(&url).json(body);
        if verb == "pull" {
            rb = rb
                .timeout(PULL_TIMEOUT)
                .header("X-Server-Timeout", PULL_WAIT_SECS.to_string())
                .header("grpc-timeout", format!("{PULL_WAIT_SECS}S"));
        }
        if let Some(c) = &self.credentials {
            let token = c.access_token().await.map_err(|e| {
                RestError::Unavailable(format!("cannot get an access token for Pub/Sub: {e}"))
            })?;
            rb = rb.bearer_auth(token.token);
        }
        let resp = rb.send().await.map_err(|e| {
            if e.is_timeout() && verb == "pull" {
                RestError::PullTimedOut
            } else {
                RestError::Unavailable(format!("{verb} on {resource} at {}: {e}", self.base))
            }
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| {
            RestError::Unavailable(format!("{verb} on {resource}: reading the answer: {e}"))
        })?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        let text: String = String::from_utf8_lossy(&bytes).chars().take(300).collect();
        let message = format!("{verb} on {resource}: HTTP {status}: {text}");
        Err(match status {
            StatusCode::NOT_FOUND => RestError::NotFound(message),
            StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => {
                RestError::Invalid(message)
            }
            _ => RestError::Unavailable(message),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(key: &str, bytes: usize) -> Message {
        Message {
            data: vec![0; bytes],
            ordering_key: key.into(),
            attributes: BTreeMap::new(),
        }
    }

    #[test]
    fn publish_requests_keep_order_within_count_and_size_limits() {
        let many: Vec<Message> = (0..2500).map(|i| message(&i.to_string(), 10)).collect();
        let chunks = publish_chunks(&many);
        assert_eq!(
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>(),
            vec![1000, 1000, 500]
        );
        assert_eq!(chunks[1][0].ordering_key, "1000", "in order");
        let big: Vec<Message> = (0..5).map(|i| message(&i.to_string(), 2 << 20)).collect();
        let sizes: Vec<usize> = publish_chunks(&big).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![2, 2, 1], "6 MiB per request at most");
        assert!(publish_chunks(&[]).is_empty());
        assert_eq!(publish_chunks(&[message("huge", 20 << 20)]).len(), 1);
    }

    #[test]
    fn pull_answers_decode_including_empty_fields() {
        let json = br#"{"receivedMessages":[
            {"ackId":"a1","message":{"data":"aGk=","attributes":{"table":"t"},"messageId":"7","orderingKey":"k"},"deliveryAttempt":2},
            {"ackId":"a2","message":{"messageId":"8"}}]}"#;
        let r: PullResponse = serde_json::from_slice(json).unwrap();
        assert_eq!(r.received_messages.len(), 2);
        assert_eq!(r.received_messages[0].message.data, "aGk=");
        assert_eq!(r.received_messages[0].delivery_attempt, 2);
        assert_eq!(r.received_messages[1].message.ordering_key, "");
        let empty: PullResponse = serde_json::from_slice(b"{}").unwrap();
        assert!(empty.received_messages.is_empty());
    }
}
