//! A webhook endpoint on a free loopback port: records every request (headers, body) and
//! answers with the status a test's rule picks (200 unless told otherwise).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

/// One request the endpoint received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Lowercased header names and their (first) values.
    pub headers: HashMap<String, String>,
    /// The raw body.
    pub body: Vec<u8>,
    /// The status the endpoint answered.
    pub status: u16,
}

impl Received {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

/// Picks the status for a request, given how many requests with the same
/// `x-ledgerhost-event-id` came before it.
type Rule = Box<dyn Fn(&Received, usize) -> u16 + Send + Sync>;

/// Picks how long to wait before answering, as [`Rule`] does.
type Delay = Box<dyn Fn(&Received, usize) -> Duration + Send + Sync>;

struct Shared {
    received: Mutex<Vec<Received>>,
    rule: Mutex<Rule>,
    delay: Mutex<Delay>,
}

/// The running endpoint; stopped on drop.
pub struct WebhookServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookServer {
    /// Starts the endpoint (answers 200 to everything until [`WebhookServer::answer`]).
    pub async fn start() -> WebhookServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let port = listener.local_addr().expect("local addr").port();
        let shared = Arc::new(Shared {
            received: Mutex::new(Vec::new()),
            rule: Mutex::new(Box::new(|_, _| 200)),
            delay: Mutex::new(Box::new(|_, _| Duration::ZERO)),
        });
        let app = axum::Router::new()
            .fallback(record)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("webhook server");
        });
        WebhookServer { port, shared, task }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// From now on answer with `rule(request, earlier requests of the same event id)`.
    pub fn answer(&self, rule: impl Fn(&Received, usize) -> u16 + Send + Sync + 'static) {
        *self.shared.rule.lock().unwrap() = Box::new(rule);
    }

    /// From now on wait `delay(request, earlier requests of the same event id)` before
    /// answering (the request is recorded on arrival).
    pub fn delay(&self, delay: impl Fn(&Received, usize) -> Duration + Send + Sync + 'static) {
        *self.shared.delay.lock().unwrap() = Box::new(delay);
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// The requests so far for one event id.
    pub fn received_for(&self, event_id: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.header("x-ledgerhost-event-id") == Some(event_id))
            .collect()
    }
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut r = Received {
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
        status: 0,
    };
    let (status, delay) = {
        let mut received = shared.received.lock().unwrap();
        let id = r.header("x-ledgerhost-event-id").map(str::to_string);
        let before = received
            .iter()
            .filter(|p| p.header("x-ledgerhost-event-id").map(str::to_string) == id)
            .count();
        r.status = (shared.rule.lock().unwrap())(&r, before);
        let delay = (shared.delay.lock().unwrap())(&r, before);
        let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        received.push(r);
        (status, delay)
    };
    tokio::time::sleep(delay).await;
    status
}

/// HMAC-SHA256 of `body` with `key`, hex (RFC 2104 over sha2, independent of the plugin's).
pub fn hmac_sha256_hex(key: &[u8], body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(body)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    hex::encode(outer)
}

#[cfg(test)]
mod tests {
    #[test]
    fn hmac_matches_rfc_4231() {
        assert_eq!(
            super::hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
