//! Outbound HTTP end to end: the real host (embedded defaults) runs the webhook plugin,
//! which POSTs each order through `wasi:http/outgoing-handler` to a local endpoint; the host
//! checks `grants.http` at load and on every request.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ledgerhost::{Config, Host};
use ledgerhost_core::ledger::{Ledger, SubscriptionSpec, attr};
use ledgerhost_tests::harness::eventually;
use ledgerhost_tests::harness::host::Workspace;
use ledgerhost_tests::harness::webhook_server::{Received, WebhookServer, hmac_sha256_hex};

const ORDERS: &str = "CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    client_id TEXT NOT NULL,
    amount INTEGER NOT NULL,
    commit_ts INTEGER
);";

const TABLES: &str = "[[tables]]\nname = \"orders\"\ninterval-ms = 50\npage-size = 100\n";

const SECRET: &str = "test-secret";

/// The webhook's manifest: posts to `url`, granted `grants` (TOML array body, may be empty).
fn manifest(url: &str, grants: &str) -> String {
    format!(
        "name = \"webhook\"\nworld = \"consumer\"\n[subscription]\ntable = \"orders\"\n\
         batch-size = 16\nmax-wait-ms = 20\nmax-attempts = 5\nbackoff-initial-ms = 20\n\
         backoff-max-ms = 200\n[grants]\nhttp = [{grants}]\nconfig = [\"url\", \"secret\", \
         \"timeout-ms\"]\n[config]\nurl = \"{url}\"\nsecret = \"{SECRET}\"\ntimeout-ms = \"3000\"\n"
    )
}

async fn start(ws: &Workspace, manifest: &str) -> Host {
    ws.sql(ORDERS);
    ws.install_plugin("webhook", "webhook", manifest);
    let config = Config::load(&ws.write_config(TABLES)).expect("config");
    Host::start(config).await.expect("host starts")
}

fn insert(ws: &Workspace, ids: std::ops::RangeInclusive<i64>) {
    for id in ids {
        ws.sql(&format!(
            "INSERT INTO orders (id, client_id, amount) VALUES ({id}, 'c{id}', {});",
            id * 10
        ));
    }
}

/// The order id a request carries.
fn order_id(r: &Received) -> i64 {
    r.json()["key"]["id"].as_i64().expect("key.id")
}

/// Subscribes to the plugin's dead-letter topic (before anything can be dead-lettered).
async fn dead_letters(ledger: &Arc<dyn Ledger>) -> &'static str {
    ledger
        .ensure_subscription(&SubscriptionSpec {
            name: "test-webhook-dead".into(),
            topic: "dead-letter-webhook".into(),
            attribute_filter: BTreeMap::new(),
            ack_deadline: Duration::from_secs(30),
            dead_letter_topic: "test-webhook-dead-dead".into(),
        })
        .await
        .expect("dead-letter subscription");
    "test-webhook-dead"
}

/// The next dead letter's reason.
async fn next_dead_reason(ledger: &Arc<dyn Ledger>, sub: &str) -> Option<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let got = ledger
            .pull(sub, 1, Duration::from_millis(200))
            .await
            .expect("pull");
        if let Some(d) = got.first() {
            ledger
                .ack(sub, std::slice::from_ref(&d.ack_id))
                .await
                .expect("ack");
            return Some(d.message.attributes[attr::DEAD_LETTER_REASON].clone());
        }
    }
    None
}

fn status_of(host: &Host) -> String {
    ledgerhost::admin_client::get_blocking(&host.admin_addr.to_string(), "/status")
        .map(|(_, body)| body)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_posts_every_event_once_signed_and_acks_it() {
    let server = WebhookServer::start().await;
    let ws = Workspace::new();
    let host = start(
        &ws,
        &manifest(&server.url("/hook"), "\"http://127.0.0.1:*\""),
    )
    .await;
    insert(&ws, 1..=20);

    let stats = host.metrics.plugin("webhook");
    let acked = eventually(Duration::from_secs(60), || {
        let stats = stats.clone();
        async move { stats.acked.load(Ordering::Relaxed) >= 20 }
    })
    .await;
    assert!(
        acked,
        "20 events acked; endpoint saw {:?}",
        server.received().len()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    let received = server.received();
    let ids: BTreeSet<i64> = received.iter().map(order_id).collect();
    assert_eq!(received.len(), 20, "each event posted once");
    assert_eq!(ids, (1..=20).collect(), "every event posted");
    for r in &received {
        let sig = r
            .header("x-ledgerhost-signature")
            .expect("signature header");
        assert_eq!(
            sig,
            format!("sha256={}", hmac_sha256_hex(SECRET.as_bytes(), &r.body)),
            "the signature is HMAC-SHA256 of the exact body"
        );
        let body = r.json();
        assert_eq!(r.header("x-ledgerhost-event-id"), body["id"].as_str());
        assert_eq!(r.header("content-type"), Some("application/json"));
        let id = order_id(r);
        assert_eq!(body["table"], "orders");
        assert_eq!(body["op"], "upsert");
        assert_eq!(body["fields"]["amount"], id * 10);
        assert_eq!(body["fields"]["client_id"], format!("c{id}"));
        assert!(body["commit_ts"].as_i64().unwrap() > 0);
    }
    assert_eq!(stats.dead_lettered.load(Ordering::Relaxed), 0);
    assert!(host.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_retries_a_500_until_acked_and_dead_letters_a_400_with_its_status() {
    let server = WebhookServer::start().await;
    // Order 1: 500 twice, then 200. Order 2: always 400. The rest: 200.
    server.answer(|r, before| match order_id(r) {
        1 if before < 2 => 500,
        2 => 400,
        _ => 200,
    });
    let ws = Workspace::new();
    let host = start(
        &ws,
        &manifest(&server.url("/hook"), "\"http://127.0.0.1:*\""),
    )
    .await;
    let dead = dead_letters(&host.backends.ledger).await;
    insert(&ws, 1..=4);

    let reason = next_dead_reason(&host.backends.ledger, dead)
        .await
        .expect("order 2 is dead-lettered");
    assert!(
        reason.contains("400") && reason.contains(&server.url("/hook")),
        "the reason names the status and the endpoint: {reason}"
    );
    let stats = host.metrics.plugin("webhook");
    let settled = eventually(Duration::from_secs(60), || {
        let stats = stats.clone();
        async move { stats.acked.load(Ordering::Relaxed) >= 4 }
    })
    .await;
    assert!(settled, "all four settled: {:?}", server.received().len());
    let of = |id: i64| {
        server
            .received()
            .iter()
            .filter(|r| order_id(r) == id)
            .map(|r| r.status)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        of(1),
        vec![500, 500, 200],
        "the 500s were retried until a 200"
    );
    assert_eq!(of(2), vec![400], "a 400 is not retried");
    assert_eq!((of(3), of(4)), (vec![200], vec![200]));
    assert_eq!(stats.dead_lettered.load(Ordering::Relaxed), 1);
    assert!(
        next_dead_reason(&host.backends.ledger, dead)
            .await
            .is_none(),
        "nothing else is dead-lettered"
    );
    assert!(host.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_without_grants_http_is_refused_at_load_naming_the_grant() {
    let server = WebhookServer::start().await;
    let ws = Workspace::new();
    let host = start(&ws, &manifest(&server.url("/hook"), "")).await;
    let refused = eventually(Duration::from_secs(30), || {
        let status = status_of(&host);
        async move { status.contains("refused") && status.contains("grants.http") }
    })
    .await;
    let status = status_of(&host);
    assert!(refused, "refused naming grants.http: {status}");
    assert!(
        status.contains("wasi:http/outgoing-handler") && status.contains("webhook.toml"),
        "{status}"
    );
    insert(&ws, 1..=2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        server.received().is_empty(),
        "a refused plugin sends nothing"
    );
    assert!(host.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_to_an_ungranted_origin_is_denied_and_dead_lettered_naming_grants_http() {
    let server = WebhookServer::start().await;
    let other = ledgerhost_tests::harness::free_port();
    let ws = Workspace::new();
    // Granted another port of the same host: the request to the server's port is denied.
    let host = start(
        &ws,
        &manifest(
            &server.url("/hook"),
            &format!("\"http://127.0.0.1:{other}\""),
        ),
    )
    .await;
    let dead = dead_letters(&host.backends.ledger).await;
    insert(&ws, 1..=1);
    let reason = next_dead_reason(&host.backends.ledger, dead)
        .await
        .expect("the denied event is dead-lettered");
    let origin = format!("http://127.0.0.1:{}", server.port);
    assert!(
        reason.contains("grants.http") && reason.contains(&format!("\"{origin}\"")),
        "the reason names the grant and the origin to add: {reason}"
    );
    assert!(server.received().is_empty(), "nothing reached the endpoint");
    assert!(host.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_retries_a_request_that_runs_past_its_deadline() {
    let server = WebhookServer::start().await;
    // The first answer comes after 2 s, past the plugin's 300 ms timeout: a retry.
    server.delay(|_, before| {
        if before == 0 {
            Duration::from_secs(2)
        } else {
            Duration::ZERO
        }
    });
    let ws = Workspace::new();
    let manifest = manifest(&server.url("/hook"), "\"http://127.0.0.1:*\"")
        .replace("timeout-ms = \"3000\"", "timeout-ms = \"300\"");
    let host = start(&ws, &manifest).await;
    insert(&ws, 1..=1);
    let stats = host.metrics.plugin("webhook");
    let acked = eventually(Duration::from_secs(30), || {
        let stats = stats.clone();
        async move { stats.acked.load(Ordering::Relaxed) >= 1 }
    })
    .await;
    assert!(acked, "acked once the endpoint answered in time");
    assert!(
        stats.retried.load(Ordering::Relaxed) >= 1,
        "the slow answer was retried"
    );
    assert_eq!(
        server.received().len(),
        2,
        "sent twice: the timed-out try, then the ack"
    );
    assert_eq!(stats.dead_lettered.load(Ordering::Relaxed), 0);
    assert!(host.shutdown().await);
}
