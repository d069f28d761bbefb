//! Embedded ledger: the pull/ack rate of a consumer draining a subscription, alone and while
//! a writer publishes pages of the poller's size onto another topic of the same file as fast
//! as it can (harder on the consumer than a poller, which also reads and encodes). Both in
//! the same run, alternating; the last line is `pull/ack under a writer: ratio=…` (with the
//! writer ÷ alone, best of each).
//!
//! Run: `cargo bench -p ledgerhost-ledger --bench embedded`

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ledgerhost_core::ledger::{Ledger, Message, SubscriptionSpec, attr};
use ledgerhost_ledger::embedded::{EmbeddedLedger, EmbeddedOptions};

/// Messages the consumer drains per run.
const MESSAGES: usize = 200_000;
/// Messages per page, as the poller's default `page-size`.
const PAGE: usize = 5_000;
/// Messages per pull, as the dispatcher's largest batch.
const PULL: usize = 1_000;
/// Runs of each case, alternating.
const RUNS: usize = 2;

/// An event as the poller publishes it: an Avro object container (a ~250-byte schema in its
/// header, one ~60-byte datum), the four standard attributes, an ordering shard.
fn message(i: usize) -> Message {
    let schema = format!(
        "{{\"type\":\"record\",\"name\":\"orders\",\"fields\":[{}]}}",
        [
            "id",
            "client_id",
            "amount",
            "status",
            "deleted",
            "commit_ts"
        ]
        .iter()
        .map(|f| format!("{{\"name\":\"{f}\",\"type\":[\"null\",\"string\"]}}"))
        .collect::<Vec<_>>()
        .join(",")
    );
    let mut data = b"Obj\x01".to_vec();
    let long = |out: &mut Vec<u8>, v: i64| {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    };
    long(&mut data, 1);
    for s in ["avro.schema".as_bytes(), schema.as_bytes()] {
        long(&mut data, s.len() as i64);
        data.extend_from_slice(s);
    }
    long(&mut data, 0);
    data.extend_from_slice(&[0x5a; 16]);
    let datum = format!("{i:>12}client-{:>6}{:>10}PAID{:>16}", i % 977, i * 7, i);
    long(&mut data, 1);
    long(&mut data, datum.len() as i64);
    data.extend_from_slice(datum.as_bytes());
    data.extend_from_slice(&[0x5a; 16]);
    Message {
        data,
        ordering_key: format!("shard-{}", i % 16),
        attributes: BTreeMap::from([
            (attr::TABLE.to_string(), "orders".to_string()),
            (
                attr::COMMIT_TS.to_string(),
                (1_700_000_000_000_000 + i).to_string(),
            ),
            (
                attr::EVENT_ID.to_string(),
                format!("orders/{i}/{}", 1_700_000_000_000_000 + i),
            ),
            (attr::SCHEMA_FINGERPRINT.to_string(), "ab".repeat(32)),
        ]),
    }
}

/// A fresh ledger in `dir` holding `MESSAGES` messages on topic `t` for subscription `s`.
async fn prepared(dir: &Path) -> Arc<EmbeddedLedger> {
    let l = EmbeddedLedger::open(dir, EmbeddedOptions::default()).expect("open the ledger");
    for topic in ["t", "w"] {
        l.ensure_topic(topic).await.expect("topic");
    }
    l.ensure_subscription(&SubscriptionSpec {
        name: "s".into(),
        topic: "t".into(),
        attribute_filter: BTreeMap::new(),
        ack_deadline: Duration::from_secs(600),
        dead_letter_topic: "s-dead".into(),
    })
    .await
    .expect("subscription");
    for start in (0..MESSAGES).step_by(PAGE) {
        let page = (start..(start + PAGE).min(MESSAGES)).map(message).collect();
        l.publish("t", page).await.expect("publish");
    }
    Arc::new(l)
}

/// Pulls and acks until `MESSAGES` were delivered; returns the time it took.
async fn drain(l: &EmbeddedLedger) -> Duration {
    let started = Instant::now();
    let mut seen = 0;
    while seen < MESSAGES {
        let batch = l
            .pull("s", PULL, Duration::from_secs(5))
            .await
            .expect("pull");
        assert!(!batch.is_empty(), "the subscription ran dry at {seen}");
        seen += batch.len();
        let ids: Vec<String> = batch.into_iter().map(|d| d.ack_id).collect();
        l.ack("s", &ids).await.expect("ack");
    }
    started.elapsed()
}

/// One run: the consumer's rate (messages/s) and, with a writer, the writer's.
async fn run(with_writer: bool) -> (f64, Option<f64>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let l = prepared(dir.path()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = with_writer.then(|| {
        let (l, stop, written) = (l.clone(), stop.clone(), written.clone());
        // Built once: the writer's cost is the ledger's write, not building messages.
        let page: Vec<Message> = (0..PAGE).map(message).collect();
        tokio::spawn(async move {
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                l.publish("w", page.clone()).await.expect("writer publish");
                written.fetch_add(PAGE as u64, Ordering::Relaxed);
            }
            started.elapsed()
        })
    });
    let took = drain(&l).await;
    stop.store(true, Ordering::Relaxed);
    let writer_rate = match writer {
        Some(task) => {
            let wrote_for = task.await.expect("writer task");
            Some(written.load(Ordering::Relaxed) as f64 / wrote_for.as_secs_f64())
        }
        None => None,
    };
    (MESSAGES as f64 / took.as_secs_f64(), writer_rate)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!(
        "embedded ledger: pull {PULL} + ack, {MESSAGES} messages, pages of {PAGE}; \
         {RUNS} runs of each case, alternating"
    );
    {
        // What the messages take on disk (the file after a checkpoint: WAL folded in).
        let dir = tempfile::tempdir().expect("temp dir");
        let l = prepared(dir.path()).await;
        drop(l);
        let file = dir.path().join("ledger.db");
        rusqlite::Connection::open(&file)
            .and_then(|c| c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);"))
            .expect("checkpoint");
        let bytes = std::fs::metadata(&file).expect("ledger file").len();
        println!(
            "ledger file: {bytes} bytes for {MESSAGES} messages ({:.0} bytes a message)",
            bytes as f64 / MESSAGES as f64
        );
    }
    let (mut alone, mut beside, mut writer) = (0f64, 0f64, 0f64);
    for run_no in 1..=RUNS {
        let (a, _) = run(false).await;
        let (b, w) = run(true).await;
        let w = w.unwrap_or(0.0);
        println!(
            "run {run_no}: alone {a:.0} msg/s; beside a writer {b:.0} msg/s \
             (the writer: {w:.0} msg/s)"
        );
        alone = alone.max(a);
        if b > beside {
            (beside, writer) = (b, w);
        }
    }
    println!("\n| case | pull + ack, msg/s | vs alone |");
    println!("| --- | ---: | ---: |");
    println!("| consumer alone | {alone:.0} | 1.00x |");
    println!(
        "| consumer beside a writer of pages ({writer:.0} msg/s written) | {beside:.0} | {:.2}x |",
        beside / alone
    );
    println!("\npull/ack under a writer: ratio={:.2}", beside / alone);
}
