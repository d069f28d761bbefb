//! Pub/Sub ledger on the official emulator: publish throughput and pull latency.
//!
//! `cargo bench -p ledgerhost-ledger --features pubsub --bench pubsub`. Starts the emulator
//! itself (Cloud SDK from `gcloud info`, or `CLOUDSDK_ROOT`) on a free loopback port and
//! kills its process group at the end.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ledgerhost_core::ledger::ordering::Ordering;
use ledgerhost_core::ledger::{Ledger, Message, SubscriptionSpec};
use ledgerhost_ledger::pubsub::{PubSubConfig, PubSubLedger};

struct Emulator(Child);

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

fn start_emulator() -> (Emulator, u16) {
    use std::os::unix::process::CommandExt;
    let root = std::env::var("CLOUDSDK_ROOT").unwrap_or_else(|_| {
        let out = Command::new("gcloud")
            .args(["info", "--format=value(installation.sdk_root)"])
            .output()
            .expect("`gcloud` is missing: the Cloud SDK comes with the machine image");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    });
    let bin =
        std::path::Path::new(&root).join("platform/pubsub-emulator/bin/cloud-pubsub-emulator");
    assert!(
        bin.exists(),
        "{} is missing: it comes with the machine image's google-cloud-cli-pubsub-emulator package",
        bin.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new(bin)
        .arg("--host=127.0.0.1")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn the Pub/Sub emulator");
    let emu = Emulator(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the Pub/Sub emulator did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (emu, port)
}

fn message(key: usize, i: usize) -> Message {
    let mut attributes = BTreeMap::new();
    attributes.insert("table".to_string(), "orders".to_string());
    attributes.insert("event_id".to_string(), format!("orders/{key}/{i}"));
    Message {
        data: vec![7u8; 256],
        ordering_key: format!("key-{key}"),
        attributes,
    }
}

/// `n` messages over `keys` distinct primary keys, ordering keys derived with `ordering`.
fn rows(n: usize, keys: usize, ordering: Ordering) -> Vec<Message> {
    (0..n)
        .map(|i| {
            let mut m = message(i % keys, i);
            m.ordering_key = ordering.key_for(&(i % keys).to_string());
            m
        })
        .collect()
}

/// Publish throughput of each way to publish a poll's rows, in one run: the same 20 000
/// rows over 5 000 primary keys, handed over 1 000 at a time as the poller does. Last, the
/// host's path at 16 ordering shards against the client crate's `Publisher` used directly on
/// the same messages, alternating, best of three each: `publish ratio: host/publisher=…`.
async fn publish_modes(port: u16, ledger: &PubSubLedger) {
    const N: usize = 20_000;
    const KEYS: usize = 5_000;
    const PAGE: usize = 1_000;
    const ROUNDS: usize = 3;
    let report = |label: &str, took: Duration| {
        println!(
            "publish mode {label}: {N} messages of 256 B, {KEYS} primary keys, pages of {PAGE}: {:.2} s, {:.0} msg/s",
            took.as_secs_f64(),
            N as f64 / took.as_secs_f64()
        );
    };
    let mut topics = 0;
    let mut topic = || {
        topics += 1;
        format!("bench-mode-{topics}")
    };
    let host = async |topic: &str, ordering: Ordering| {
        ledger.ensure_topic(topic).await.expect("topic");
        let all = rows(N, KEYS, ordering);
        let started = Instant::now();
        for page in all.chunks(PAGE) {
            ledger.publish(topic, page.to_vec()).await.expect("publish");
        }
        started.elapsed()
    };
    for (label, ordering) in [
        ("shards (64)", Ordering::Shards(64)),
        ("key (one request per key)", Ordering::Key),
        ("none", Ordering::None),
    ] {
        report(label, host(&topic(), ordering).await);
    }

    // The client crate's Publisher used directly (gRPC, batching per ordering key, the same
    // thresholds as the host's), on the same messages.
    let emulator =
        ledgerhost_google::PUBSUB.endpoint_with(Some(&format!("127.0.0.1:{port}")), None);
    let raw = async |topic: &str| {
        ledger.ensure_topic(topic).await.expect("topic");
        let publisher = google_cloud_pubsub::client::Publisher::builder(ledger.topic_path(topic))
            .with_endpoint(emulator.url.clone())
            .with_credentials(
                emulator
                    .client_credentials()
                    .expect("a plaintext endpoint is an emulator"),
            )
            .set_message_count_threshold(1000u32)
            .set_delay_threshold(Duration::from_millis(5))
            .build()
            .await
            .expect("publisher");
        let all = rows(N, KEYS, Ordering::Shards(16));
        let started = Instant::now();
        for page in all.chunks(PAGE) {
            let futures: Vec<_> = page
                .iter()
                .map(|m| {
                    publisher.publish(
                        google_cloud_pubsub::model::Message::new()
                            .set_data(m.data.clone())
                            .set_ordering_key(m.ordering_key.clone())
                            .set_attributes(m.attributes.clone()),
                    )
                })
                .collect();
            // A page is whole: sent now rather than after the delay threshold, as the host does.
            publisher.flush().await;
            for f in futures {
                f.await.expect("crate publish");
            }
        }
        started.elapsed()
    };
    let (mut best_host, mut best_raw) = (Duration::MAX, Duration::MAX);
    for _ in 0..ROUNDS {
        best_host = best_host.min(host(&topic(), Ordering::Shards(16)).await);
        best_raw = best_raw.min(raw(&topic()).await);
    }
    report("shards (16, the default), host", best_host);
    report("client crate Publisher, shards (16)", best_raw);
    println!(
        "publish ratio: host/publisher={:.2}",
        best_raw.as_secs_f64() / best_host.as_secs_f64()
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let (_emu, port) = start_emulator();
    let ledger = PubSubLedger::connect(PubSubConfig {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        ..PubSubConfig::new("bench")
    })
    .await
    .expect("connect");
    let spec = SubscriptionSpec {
        name: "bench-sub".into(),
        topic: "bench".into(),
        attribute_filter: BTreeMap::new(),
        ack_deadline: Duration::from_secs(60),
        dead_letter_topic: "bench-dead".into(),
    };
    ledger
        .ensure_subscription(&spec)
        .await
        .expect("subscription");

    // Publish throughput: batches as a poll hands them over (500 rows, 100 keys).
    let total = 10_000;
    let batch = 500;
    let started = Instant::now();
    for b in 0..total / batch {
        let messages = (0..batch)
            .map(|i| message(i % 100, b * batch + i))
            .collect();
        ledger.publish("bench", messages).await.expect("publish");
    }
    let publish = started.elapsed();
    println!(
        "publish: {total} messages of 256 B in batches of {batch}, 100 ordering keys: {:.2} s, {:.0} msg/s",
        publish.as_secs_f64(),
        total as f64 / publish.as_secs_f64()
    );

    // Drain throughput (pull + ack) of what was published.
    let started = Instant::now();
    let mut got = 0;
    while got < total {
        let d = ledger
            .pull("bench-sub", 500, Duration::from_secs(5))
            .await
            .expect("pull");
        assert!(!d.is_empty(), "messages stopped arriving after {got}");
        got += d.len();
        let ids: Vec<String> = d.into_iter().map(|d| d.ack_id).collect();
        ledger.ack("bench-sub", &ids).await.expect("ack");
    }
    let drain = started.elapsed();
    println!(
        "pull+ack: {got} messages: {:.2} s, {:.0} msg/s",
        drain.as_secs_f64(),
        got as f64 / drain.as_secs_f64()
    );

    // Latency: one message published, time until a waiting pull returns it. With one key,
    // ordered delivery also waits for the previous message's ack to reach the server.
    for (label, same_key) in [("distinct keys", false), ("one key", true)] {
        let mut latencies = Vec::new();
        for i in 0..200 {
            let key = if same_key { 1 } else { 1000 + i };
            let started = Instant::now();
            ledger
                .publish("bench", vec![message(key, total + i)])
                .await
                .expect("publish");
            let d = ledger
                .pull("bench-sub", 1, Duration::from_secs(10))
                .await
                .expect("pull");
            assert_eq!(d.len(), 1, "message {i} not delivered");
            latencies.push(started.elapsed());
            ledger
                .ack("bench-sub", &[d[0].ack_id.clone()])
                .await
                .expect("ack");
        }
        latencies.sort();
        println!(
            "publish→pull latency, {label}, {} messages: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            latencies.len(),
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&latencies, 0.9).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            latencies[latencies.len() - 1].as_secs_f64() * 1e3
        );
    }

    // Last, so the ratio is the bench's last line.
    publish_modes(port, &ledger).await;
}
