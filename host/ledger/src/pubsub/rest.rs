//! Pub/Sub's consuming calls — Pull, Acknowledge, ModifyAckDeadline — over its REST surface
//! (admin and publishing stay with the client crate).
//!
//! - Pull: the crate offers only streaming pull, and a streaming pull pins each ordering key
//!   to one open stream. The emulator never notices that a stream's process died (SIGKILL),
//!   so the keys pinned to it were never delivered again; unary pull has no stream to pin
//!   to: a dead consumer's deliveries expire after the ack deadline and go to whoever pulls
//!   next, on the emulator as on Google. Acks and deadline changes are explicit calls by ack
//!   id, which is what the `Ledger` trait speaks anyway.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use ledgerhost_google::{Auth, AuthMode, Endpoint, PUBSUB};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

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
    /// No credentials or no token (Google only): worth retrying, the token source may recover.
    #[error(transparent)]
    Auth(#[from] ledgerhost_google::Error),
    /// A Pull that ended on our side without an answer: nothing arrived in time.
    #[error("no answer to pull within {PULL_TIMEOUT:?}")]
    PullTimedOut,
}

/// One message as Pull returns it.
#[derive(Debug)]
pub struct Received {
    /// Lease handle for acknowledge and modifyAckDeadline.
    pub ack_id: String,
    /// Server-assigned id of the message.
    pub message_id: String,
    /// Message payload, base64-decoded.
    pub data: Vec<u8>,
    /// Ordering key the message was published with; empty if none.
    pub ordering_key: String,
    /// Message attributes.
    pub attributes: HashMap<String, String>,
    /// Pub/Sub's count, set when the subscription has a dead-letter policy (0 if not).
    pub delivery_attempt: u32,
    /// When Pub/Sub accepted the message, µs since the epoch (0 if the answer had none).
    pub publish_time_micros: i64,
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
    /// RFC 3339, e.g. `2026-12-03T06:30:00.123456Z`.
    #[serde(default)]
    publish_time: Option<google_cloud_wkt::Timestamp>,
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

/// The consuming calls, authenticated like the rest of the client.
pub struct RestClient {
    http: reqwest::Client,
    base: String,
    auth: Auth,
}

impl RestClient {
    /// A client for `endpoint`, anonymous against an emulator, with application default
    /// credentials against Google.
    pub fn new(endpoint: &Endpoint) -> Result<Self, RestError> {
        let auth = Auth::new(&PUBSUB, endpoint, AuthMode::Auto)?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| RestError::Unavailable(format!("cannot build the HTTP client: {e}")))?;
        Ok(RestClient {
            http,
            base: endpoint.url.clone(),
            auth,
        })
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
                    publish_time_micros: r
                        .message
                        .publish_time
                        .map_or(0, |t| t.seconds() * 1_000_000 + i64::from(t.nanos()) / 1000),
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
        if let Some(token) = self.auth.bearer().await? {
            rb = rb.bearer_auth(token);
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
