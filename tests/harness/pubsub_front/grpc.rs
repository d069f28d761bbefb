//! gRPC through the front. The host publishes with the official client's `Publisher`, which
//! speaks gRPC (HTTP/2, `POST /google.pubsub.v1.Publisher/Publish`); the front reads each
//! Publish request and applies the rules its REST form gets (`super::rest`), then forwards
//! it to the emulator over HTTP/2 and relays the answer, trailers included. Any other gRPC
//! method is refused (UNIMPLEMENTED, recorded as a refusal): the front checks only what it
//! reads, so a client moved to gRPC for another call fails loudly here until the front is
//! taught that call's rules.
//!
//! Wire format (<https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md>): a message
//! is a 1-byte compressed flag, a 4-byte big-endian length, then the protobuf; the status of
//! an answer is in `grpc-status` / `grpc-message` (percent-encoded), in the trailers or, for
//! an answer without a body, in its headers.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, Response, StatusCode, request::Parts};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ledgerhost_core::ledger::Message;
use prost::Message as _;

use super::{Rpc, State, Transport, forwarded, publish_verdict};

/// The path of `google.pubsub.v1.Publisher.Publish`.
pub const PUBLISH_PATH: &str = "/google.pubsub.v1.Publisher/Publish";

/// gRPC's INVALID_ARGUMENT, what production answers a request it refuses.
pub const INVALID_ARGUMENT: u32 = 3;
/// gRPC's UNIMPLEMENTED.
pub const UNIMPLEMENTED: u32 = 12;
/// gRPC's UNAVAILABLE.
pub const UNAVAILABLE: u32 = 14;

/// `google.pubsub.v1.PublishRequest`: the fields the rules read (numbers from
/// `google/pubsub/v1/pubsub.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PublishRequest {
    /// `projects/P/topics/T`.
    #[prost(string, tag = "1")]
    pub topic: String,
    #[prost(message, repeated, tag = "2")]
    pub messages: Vec<PubsubMessage>,
}

/// `google.pubsub.v1.PubsubMessage`: data, attributes, ordering key (the rest is set by the
/// server and skipped here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PubsubMessage {
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
    #[prost(btree_map = "string, string", tag = "2")]
    pub attributes: BTreeMap<String, String>,
    #[prost(string, tag = "5")]
    pub ordering_key: String,
}

impl From<PubsubMessage> for Message {
    fn from(m: PubsubMessage) -> Self {
        Message {
            data: m.data,
            ordering_key: m.ordering_key,
            attributes: m.attributes,
        }
    }
}

impl From<&Message> for PubsubMessage {
    fn from(m: &Message) -> Self {
        PubsubMessage {
            data: m.data.clone(),
            attributes: m.attributes.clone(),
            ordering_key: m.ordering_key.clone(),
        }
    }
}

/// Whether a request is gRPC (its content type).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/grpc"))
}

/// A request's one message, framed.
pub fn frame(message: &impl prost::Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(0);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// The Publish request in a gRPC body (one uncompressed message, as the client sends it).
pub fn publish_request(body: &[u8]) -> Result<PublishRequest, String> {
    let Some((&[flag, a, b, c, d], rest)) = body.split_first_chunk::<5>() else {
        return Err(format!(
            "a gRPC Publish body of {} bytes has no message prefix",
            body.len()
        ));
    };
    if flag != 0 {
        return Err(
            "a compressed gRPC Publish request: the front reads identity-encoded ones only \
             (send without `grpc-encoding`)"
                .into(),
        );
    }
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    if rest.len() != len {
        return Err(format!(
            "a gRPC Publish body announces {len} bytes and carries {}",
            rest.len()
        ));
    }
    PublishRequest::decode(rest).map_err(|e| format!("an unreadable PublishRequest: {e}"))
}

/// The front's HTTP/2 client to the emulator.
pub(super) type Upstream = Client<HttpConnector, Full<Bytes>>;

/// A client speaking HTTP/2 without TLS from the first byte, as gRPC to the emulator does.
pub(super) fn upstream() -> Upstream {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// Checks a gRPC request, records it, and refuses it or forwards it.
pub(super) async fn handle(state: Arc<State>, parts: Parts, body: Bytes) -> Response<Body> {
    let path = parts.uri.path().to_string();
    let (rpc, verdict, shape) = if path == PUBLISH_PATH {
        let request = publish_request(&body);
        let topic = request.as_ref().map_or(String::new(), |r| {
            r.topic.rsplit('/').next().unwrap_or_default().to_string()
        });
        let messages = request.map(|r| r.messages.into_iter().map(Message::from).collect());
        let (verdict, shape) = publish_verdict(topic, messages, Transport::Grpc);
        (Rpc::Publish, verdict, Some(shape))
    } else {
        let why = format!(
            "gRPC {path}: the front checks gRPC Publish only; teach it this call's rules \
             (tests/harness/pubsub_front/grpc.rs) before a client sends it by gRPC"
        );
        (Rpc::Other, Err(why), None)
    };
    state.record(rpc, &parts.method, &path, &verdict, shape);
    if let Err(rule) = verdict {
        let code = if rpc == Rpc::Publish {
            INVALID_ARGUMENT
        } else {
            UNIMPLEMENTED
        };
        return status_only(code, &rule);
    }
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(format!("{}{path}", state.upstream));
    for (name, value) in &parts.headers {
        if forwarded(name) {
            request = request.header(name, value);
        }
    }
    let request = request.body(Full::new(body)).expect("a valid request");
    match state.h2.request(request).await {
        // The answer streams through, its trailers (the gRPC status) included.
        Ok(answer) => answer.map(Body::new),
        Err(e) => {
            state.lock().stats.unreachable += 1;
            status_only(
                UNAVAILABLE,
                &format!("the Pub/Sub emulator behind the front is unreachable: {e}"),
            )
        }
    }
}

/// Sends one gRPC Publish to `endpoint` (`http://127.0.0.1:PORT`) as it is, for a test
/// that needs a request no client would send. Returns the gRPC status and its message.
pub async fn publish_raw(endpoint: &str, request: &PublishRequest) -> (u32, String) {
    let sent = Request::builder()
        .method(Method::POST)
        .uri(format!("{endpoint}{PUBLISH_PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(frame(request))))
        .expect("a valid request");
    let answer = upstream()
        .request(sent)
        .await
        .unwrap_or_else(|e| panic!("gRPC Publish to {endpoint}: {e}"));
    if let Some(status) = status_of(answer.headers()) {
        return status;
    }
    let body = answer
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("gRPC Publish to {endpoint}: the answer broke off: {e}"));
    body.trailers()
        .and_then(status_of)
        .unwrap_or_else(|| panic!("gRPC Publish to {endpoint}: an answer without a status"))
}

/// An answer carrying only a status (no message), as a gRPC server sends a refusal.
pub fn status_only(code: u32, message: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/grpc")
        .header("grpc-status", code.to_string())
        .header("grpc-message", percent_encode(message))
        .body(Body::empty())
        .expect("a valid response")
}

/// `grpc-message`'s encoding: printable ASCII except `%` as is, every other byte `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `grpc-status` and decoded `grpc-message` of an answer's headers or trailers.
pub fn status_of(headers: &HeaderMap) -> Option<(u32, String)> {
    let code = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    let raw = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some((code, String::from_utf8_lossy(&out).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_request_reads_back_from_its_frame() {
        let m = Message {
            data: b"x".to_vec(),
            ordering_key: "k".into(),
            attributes: [("table".to_string(), "orders".to_string())].into(),
        };
        let req = PublishRequest {
            topic: "projects/p/topics/orders".into(),
            messages: vec![PubsubMessage::from(&m)],
        };
        let back = publish_request(&frame(&req)).unwrap();
        assert_eq!(back, req);
        assert_eq!(Message::from(back.messages[0].clone()), m);
        assert!(publish_request(&[0, 0, 0]).is_err());
        let mut compressed = frame(&req);
        compressed[0] = 1;
        assert!(
            publish_request(&compressed)
                .unwrap_err()
                .contains("compressed")
        );
        let mut short = frame(&req);
        short.pop();
        assert!(publish_request(&short).unwrap_err().contains("announces"));
    }

    #[test]
    fn status_messages_are_percent_encoded_and_read_back() {
        let r = status_only(INVALID_ARGUMENT, "100% of 2 keys: «a», b");
        let (code, message) = status_of(r.headers()).unwrap();
        assert_eq!(code, INVALID_ARGUMENT);
        assert_eq!(message, "100% of 2 keys: «a», b");
    }
}
