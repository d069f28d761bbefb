//! Pub/Sub's data plane — Publish, Pull, Acknowledge, ModifyAckDeadline — over its REST
//! surface (the admin plane stays with the client crate).
//!
//! - Publish: one request carries the messages of one ordering key (production's rule), up
//!   to [`limits::MAX_MESSAGES_PER_PUBLISH`]; [`publish_requests`] splits a batch into one
//!   lane of requests per key. The caller runs lanes concurrently, a lane's requests in order.
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
use ledgerhost_core::ledger::{Message, limits};
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
/// What one Publish request may carry, counted as [`limits::message_size`]: below Pub/Sub's
/// 10 MB ([`limits::MAX_PUBLISH_BYTES`]) because data travels base64-encoded in the JSON
/// body (4/3 larger).
const PUBLISH_REQUEST_BUDGET: usize = 7_000_000;

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
    auth: Auth,
}

/// The Publish requests of one ordering key, to send one after another.
#[derive(Debug)]
pub struct KeyLane {
    /// The ordering key every message of these requests carries.
    pub ordering_key: String,
    /// The key's messages in their order, split within Pub/Sub's count and size limits.
    pub requests: Vec<Vec<Message>>,
}

/// Splits `messages` into Publish requests production accepts: one ordering key per request
/// ("All PubsubMessages published in a given PublishRequest must specify the same
/// ordering_key value", `PubsubMessage.ordering_key`), a key's messages in their order,
/// each request within [`limits::MAX_MESSAGES_PER_PUBLISH`] and the size budget (a message
/// above the budget goes alone, and Pub/Sub says why it refuses it). Lanes come in the order
/// their keys first appear.
pub fn publish_requests(messages: Vec<Message>) -> Vec<KeyLane> {
    let mut lanes: Vec<KeyLane> = Vec::new();
    // Per lane: bytes of its last request.
    let mut open: Vec<usize> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for m in messages {
        let size = limits::message_size(&m);
        let i = *index.entry(m.ordering_key.clone()).or_insert_with(|| {
            lanes.push(KeyLane {
                ordering_key: m.ordering_key.clone(),
                requests: Vec::new(),
            });
            open.push(0);
            lanes.len() - 1
        });
        let lane = &mut lanes[i];
        let fits = lane.requests.last().is_some_and(|r| {
            r.len() < limits::MAX_MESSAGES_PER_PUBLISH && open[i] + size <= PUBLISH_REQUEST_BUDGET
        });
        if !fits {
            lane.requests.push(Vec::new());
            open[i] = 0;
        }
        open[i] += size;
        lane.requests.last_mut().expect("pushed above").push(m);
    }
    lanes
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

    /// Publishes `messages` (one request of [`publish_requests`]) to `topic` (a full path);
    /// Pub/Sub keeps their order. Returns the message ids.
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

    fn message(key: &str, bytes: usize) -> Message {
        Message {
            data: vec![0; bytes],
            ordering_key: key.into(),
            attributes: BTreeMap::new(),
        }
    }

    #[test]
    fn publish_requests_carry_one_ordering_key_each_in_order_within_limits() {
        // 2 500 messages over 3 keys, interleaved.
        let many: Vec<Message> = (0..2500)
            .map(|i| {
                let mut m = message(&(i % 3).to_string(), 10);
                m.attributes.insert("i".into(), i.to_string());
                m
            })
            .collect();
        let lanes = publish_requests(many);
        assert_eq!(
            lanes
                .iter()
                .map(|l| l.ordering_key.as_str())
                .collect::<Vec<_>>(),
            vec!["0", "1", "2"]
        );
        for lane in &lanes {
            let mut last = -1i64;
            for r in &lane.requests {
                limits::check_publish(r).expect("production accepts every request");
                for m in r {
                    assert_eq!(m.ordering_key, lane.ordering_key);
                    let i: i64 = m.attributes["i"].parse().unwrap();
                    assert!(i > last, "in order within the key");
                    last = i;
                }
            }
        }
        assert_eq!(
            lanes[0].requests.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![834]
        );
        let one_key: Vec<Message> = (0..2500).map(|_| message("k", 10)).collect();
        let sizes: Vec<usize> = publish_requests(one_key)[0]
            .requests
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, vec![1000, 1000, 500]);
        let big: Vec<Message> = (0..5).map(|_| message("k", 3_000_000)).collect();
        let sizes: Vec<usize> = publish_requests(big)[0]
            .requests
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, vec![2, 2, 1], "within the size budget");
        assert!(publish_requests(Vec::new()).is_empty());
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
