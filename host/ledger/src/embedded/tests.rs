use super::*;
use ledgerhost_core::clock::now_micros;
use ledgerhost_core::ledger::{Batch, attr};
use rusqlite::{Connection, params};
use std::collections::HashMap;

fn msg(key: &str, n: u32) -> Message {
    Message {
        data: format!("{key}:{n}").into_bytes(),
        ordering_key: key.into(),
        attributes: BTreeMap::from([("n".to_string(), n.to_string())]),
    }
}

fn spec(name: &str, topic: &str) -> SubscriptionSpec {
    SubscriptionSpec {
        name: name.into(),
        topic: topic.into(),
        attribute_filter: BTreeMap::new(),
        ack_deadline: Duration::from_secs(30),
        dead_letter_topic: format!("{name}-dead"),
    }
}

fn body(d: &Delivery) -> String {
    String::from_utf8(d.message.data.clone()).unwrap()
}

async fn setup(dir: &Path) -> EmbeddedLedger {
    let l = EmbeddedLedger::open(dir, EmbeddedOptions::default()).unwrap();
    l.ensure_topic("t").await.unwrap();
    l.ensure_subscription(&spec("s", "t")).await.unwrap();
    l
}

fn ids(ds: &[Delivery]) -> Vec<String> {
    ds.iter().map(|d| d.ack_id.clone()).collect()
}

#[tokio::test]
async fn publish_pull_ack_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let l = setup(dir.path()).await;
    l.publish("t", (0..5).map(|n| msg(&format!("k{n}"), n)).collect())
        .await
        .unwrap();
    let got = l.pull("s", 10, Duration::from_millis(100)).await.unwrap();
    assert_eq!(
        got.iter().map(body).collect::<Vec<_>>(),
        vec!["k0:0", "k1:1", "k2:2", "k3:3", "k4:4"]
    );
    assert!(got.iter().all(|d| d.attempt == 1));
    l.ack("s", &ids(&got)).await.unwrap();
    assert!(
        l.pull("s", 10, Duration::from_millis(50))
            .await
            .unwrap()
            .is_empty()
    );
    // Publishing to a topic that does not exist is an error, not a silent drop.
    let err = l.publish("nope", vec![msg("k", 1)]).await.unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[tokio::test]
async fn a_nacked_message_holds_back_its_key_only() {
    let dir = tempfile::tempdir().unwrap();
    let l = setup(dir.path()).await;
    l.publish(
        "t",
        vec![msg("a", 1), msg("b", 1), msg("a", 2), msg("b", 2)],
    )
    .await
    .unwrap();
    let first = l.pull("s", 1, Duration::from_millis(100)).await.unwrap();
    assert_eq!(body(&first[0]), "a:1");
    l.nack("s", &ids(&first), Duration::from_millis(300))
        .await
        .unwrap();
    // a:2 must wait for a:1; b flows.
    let next = l.pull("s", 10, Duration::from_millis(100)).await.unwrap();
    assert_eq!(
        next.iter().map(body).collect::<Vec<_>>(),
        vec!["b:1", "b:2"]
    );
    l.ack("s", &ids(&next)).await.unwrap();
    let retried = l.pull("s", 10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(
        retried.iter().map(body).collect::<Vec<_>>(),
        vec!["a:1", "a:2"]
    );
    assert_eq!(retried[0].attempt, 2);
    assert_eq!(retried[1].attempt, 1);
}

#[tokio::test]
async fn leases_expire_and_can_be_extended() {
    let dir = tempfile::tempdir().unwrap();
    let l = EmbeddedLedger::open(dir.path(), EmbeddedOptions::default()).unwrap();
    l.ensure_topic("t").await.unwrap();
    let mut s = spec("s", "t");
    s.ack_deadline = Duration::from_millis(200);
    l.ensure_subscription(&s).await.unwrap();
    l.publish("t", vec![msg("a", 1), msg("b", 1)])
        .await
        .unwrap();
    let got = l.pull("s", 10, Duration::from_millis(100)).await.unwrap();
    assert_eq!(got.len(), 2);
    l.extend("s", &[got[1].ack_id.clone()], Duration::from_secs(30))
        .await
        .unwrap();
    // Only the unextended lease expires and comes back, with its attempt counted.
    let again = l.pull("s", 10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(again.iter().map(body).collect::<Vec<_>>(), vec!["a:1"]);
    assert_eq!(again[0].attempt, 2);
}

#[tokio::test]
async fn a_redelivery_reads_the_message_again_whole_and_one_past_retention_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let l = setup(dir.path()).await;
    l.publish("t", vec![msg("a", 1), msg("b", 1)])
        .await
        .unwrap();
    l.publish("t", vec![msg("b", 2)]).await.unwrap();
    let first = l.pull("s", 10, Duration::from_millis(100)).await.unwrap();
    assert_eq!(first.len(), 3);
    // The first lease moved the messages out of the window; a nack brings them back from
    // the log, equal in every part.
    l.nack("s", &ids(&first), Duration::ZERO).await.unwrap();
    let again = l.pull("s", 10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(
        again.iter().map(|d| &d.message).collect::<Vec<_>>(),
        first.iter().map(|d| &d.message).collect::<Vec<_>>()
    );
    assert!(again.iter().all(|d| d.attempt == 2));
    // Retention deletes the page of a:1 and b:1 while they are leased, acked or not, as
    // Pub/Sub does: they are not delivered again, and b:2 (the topic's newest, kept) still is.
    l.nack("s", &ids(&again), Duration::ZERO).await.unwrap();
    {
        let writer = l.sides.writer();
        let deleted = writer
            .conn
            .execute(
                "DELETE FROM pages WHERE id = ?1",
                params![again[0].ack_id.parse::<i64>().unwrap()],
            )
            .unwrap();
        assert_eq!(deleted, 1);
    }
    let last = l.pull("s", 10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(last.iter().map(body).collect::<Vec<_>>(), vec!["b:2"]);
    assert_eq!(last[0].attempt, 3);
}

#[tokio::test]
async fn attribute_filters_skip_messages() {
    let dir = tempfile::tempdir().unwrap();
    let l = EmbeddedLedger::open(dir.path(), EmbeddedOptions::default()).unwrap();
    l.ensure_topic("t").await.unwrap();
    let mut s = spec("s", "t");
    s.attribute_filter = BTreeMap::from([("n".to_string(), "2".to_string())]);
    l.ensure_subscription(&s).await.unwrap();
    l.publish("t", (1..=3).map(|n| msg("k", n)).collect())
        .await
        .unwrap();
    let got = l.pull("s", 10, Duration::from_millis(100)).await.unwrap();
    assert_eq!(got.iter().map(body).collect::<Vec<_>>(), vec!["k:2"]);
}

#[tokio::test]
async fn a_restart_redelivers_exactly_the_unacked_messages() {
    let dir = tempfile::tempdir().unwrap();
    {
        let l = setup(dir.path()).await;
        l.publish("t", (1..=6).map(|n| msg(&format!("k{n}"), n)).collect())
            .await
            .unwrap();
        let got = l.pull("s", 10, Duration::from_millis(100)).await.unwrap();
        // Ack 1, 2, 4 and 6; nack 3; leave 5 leased.
        l.ack(
            "s",
            &[
                got[0].ack_id.clone(),
                got[1].ack_id.clone(),
                got[3].ack_id.clone(),
                got[5].ack_id.clone(),
            ],
        )
        .await
        .unwrap();
        l.nack("s", &[got[2].ack_id.clone()], Duration::ZERO)
            .await
            .unwrap();
    }
    let l = EmbeddedLedger::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let got = l.pull("s", 10, Duration::from_millis(100)).await.unwrap();
    assert_eq!(
        got.iter().map(body).collect::<Vec<_>>(),
        vec!["k3:3", "k5:5"]
    );
    assert_eq!(got[0].attempt, 2, "the nack's attempt count survived");
    assert_eq!(got[1].attempt, 1);
}

#[tokio::test]
async fn new_subscriptions_start_at_the_end_and_last_message_is_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let l = setup(dir.path()).await;
    assert_eq!(l.last_message("t").await.unwrap(), None);
    l.publish("t", vec![msg("a", 1), msg("a", 2)])
        .await
        .unwrap();
    assert_eq!(l.last_message("t").await.unwrap(), Some(msg("a", 2)));
    l.ensure_subscription(&spec("late", "t")).await.unwrap();
    l.ensure_subscription(&spec("late", "t")).await.unwrap();
    assert!(
        l.pull("late", 10, Duration::from_millis(50))
            .await
            .unwrap()
            .is_empty()
    );
    l.publish("t", vec![msg("a", 3)]).await.unwrap();
    let got = l
        .pull("late", 10, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(got.iter().map(body).collect::<Vec<_>>(), vec!["a:3"]);
}

#[tokio::test]
async fn retention_drops_old_messages_but_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let l = EmbeddedLedger::open(
        dir.path(),
        EmbeddedOptions {
            retention: Duration::from_millis(1),
        },
    )
    .unwrap();
    l.ensure_topic("t").await.unwrap();
    l.publish("t", vec![msg("a", 1), msg("a", 2)])
        .await
        .unwrap();
    l.publish("t", vec![msg("a", 3)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    {
        let mut writer = l.sides.writer();
        writer.last_cleanup = Instant::now() - Duration::from_secs(120);
        writer.cleanup();
    }
    assert_eq!(l.retained_count("t").await.unwrap(), 1);
    assert_eq!(l.last_message("t").await.unwrap(), Some(msg("a", 3)));
    let retained = l.read_retained("t", 0, 10).await.unwrap();
    assert_eq!(retained.len(), 1);
    assert_eq!(retained[0].position, 3, "ids are not reused");
}

#[tokio::test]
async fn pull_waits_for_a_publish() {
    let dir = tempfile::tempdir().unwrap();
    let l = Arc::new(setup(dir.path()).await);
    let waiter = {
        let l = l.clone();
        tokio::spawn(async move { l.pull("s", 10, Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    l.publish("t", vec![msg("a", 1)]).await.unwrap();
    let got = waiter.await.unwrap().unwrap();
    assert_eq!(got.len(), 1);
}

/// The child side of the crash test: publishes numbered messages and reports each
/// confirmed publish on stdout until it is killed.
#[tokio::test]
async fn crash_child() {
    let Ok(dir) = std::env::var("LEDGERHOST_CRASH_DIR") else {
        return; // only meaningful when started by `publishes_survive_sigkill`
    };
    let start: u32 = std::env::var("LEDGERHOST_CRASH_START")
        .unwrap()
        .parse()
        .unwrap();
    let l = EmbeddedLedger::open(Path::new(&dir), EmbeddedOptions::default()).unwrap();
    l.ensure_topic("t").await.unwrap();
    let mut n = start;
    loop {
        let batch: Vec<Message> = (n..n + 50)
            .map(|i| msg(&format!("k{}", i % 7), i))
            .collect();
        l.publish("t", batch).await.unwrap();
        n += 50;
        println!("confirmed {n}");
    }
}

#[test]
fn publishes_survive_sigkill() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut confirmed = 0u32;
    let mut rng = 0x9E37_79B9u64;
    for round in 0..5 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "embedded::tests::crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("LEDGERHOST_CRASH_DIR", dir.path())
            .env("LEDGERHOST_CRASH_START", confirmed.to_string())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(stdout).lines();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let stop_after = 5 + (rng % 40) as u32;
        let mut seen = 0;
        while let Some(Ok(line)) = lines.next() {
            if let Some(n) = line.strip_prefix("confirmed ") {
                confirmed = n.parse().unwrap();
                seen += 1;
                if seen >= stop_after {
                    break;
                }
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Everything confirmed is there, in order, possibly followed by one unconfirmed batch.
        let rt = tokio::runtime::Runtime::new().unwrap();
        let stored: Vec<u32> = rt.block_on(async {
            let l = EmbeddedLedger::open(dir.path(), EmbeddedOptions::default()).unwrap();
            l.read_retained("t", 0, usize::MAX)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.message.attributes["n"].parse().unwrap())
                .collect()
        });
        assert!(
            stored.len() as u32 >= confirmed,
            "round {round}: confirmed {confirmed}, stored {}",
            stored.len()
        );
        assert_eq!(
            stored[..confirmed as usize],
            (0..confirmed).collect::<Vec<_>>(),
            "round {round}"
        );
        confirmed = stored.len() as u32;
    }
    assert!(confirmed > 0);
}

#[tokio::test]
async fn messages_pubsub_refuses_are_refused_naming_the_rule_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let l = setup(dir.path()).await;
    let long_key = Message {
        ordering_key: "k".repeat(5000),
        ..msg("k", 1)
    };
    let many_attrs = Message {
        attributes: (0..300)
            .map(|i| (format!("a{i}"), "v".repeat(2048)))
            .collect(),
        ..msg("k", 2)
    };
    for (bad, rule) in [
        (long_key, "ordering key of 5000 bytes"),
        (many_attrs, "300 attributes"),
    ] {
        let err = l.publish("t", vec![msg("k", 0), bad]).await.unwrap_err();
        assert!(
            matches!(err, PortError::Invalid { .. }) && err.to_string().contains(rule),
            "{err}"
        );
    }
    assert!(
        l.pull("s", 10, Duration::from_millis(50))
            .await
            .unwrap()
            .is_empty(),
        "a refused batch writes nothing"
    );
}

#[tokio::test]
async fn one_pull_hands_out_a_keys_messages_together_in_order_and_a_later_pull_waits() {
    let dir = tempfile::tempdir().unwrap();
    let l = setup(dir.path()).await;
    l.publish("t", (0..4).map(|n| msg("shard-0001", n)).collect())
        .await
        .unwrap();
    let first = l.pull("s", 10, Duration::from_millis(100)).await.unwrap();
    assert_eq!(first.len(), 4, "a shard's events batch");
    l.publish("t", vec![msg("shard-0001", 4)]).await.unwrap();
    assert!(
        l.pull("s", 10, Duration::from_millis(50))
            .await
            .unwrap()
            .is_empty(),
        "later events of the shard wait while earlier ones are out"
    );
    l.ack("s", &ids(&first)).await.unwrap();
    let next = l.pull("s", 10, Duration::from_millis(100)).await.unwrap();
    assert_eq!(
        next.iter().map(body).collect::<Vec<_>>(),
        vec!["shard-0001:4"]
    );
}

/// An existing subscription follows its manifest, as on Pub/Sub: a changed filter or topic
/// is refused naming what differs and what to do, a changed ack deadline is applied (and
/// stored).
#[tokio::test]
async fn an_existing_subscription_gets_a_new_ack_deadline_but_refuses_a_new_filter_or_topic() {
    let dir = tempfile::tempdir().unwrap();
    let l = setup(dir.path()).await;
    let mut filtered = spec("s", "t");
    filtered.attribute_filter = BTreeMap::from([("n".to_string(), "2".to_string())]);
    let err = l.ensure_subscription(&filtered).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, PortError::Invalid { .. }), "{text}");
    assert!(
        text.contains("filter is none but the manifest asks for `n = \"2\"`"),
        "{text}"
    );
    assert!(
        text.contains("cannot change a subscription's filter") && text.contains("new name"),
        "{text}"
    );
    l.ensure_topic("u").await.unwrap();
    let text = l
        .ensure_subscription(&spec("s", "u"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("topic is `t` but the manifest asks for `u`"),
        "{text}"
    );

    // A shorter ack deadline applies to the next lease.
    let mut short = spec("s", "t");
    short.ack_deadline = Duration::from_millis(200);
    l.ensure_subscription(&short).await.unwrap();
    l.publish("t", vec![msg("k", 1)]).await.unwrap();
    let first = l.pull("s", 10, Duration::from_millis(100)).await.unwrap();
    assert_eq!(first.len(), 1);
    let started = Instant::now();
    let again = l.pull("s", 10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(again.len(), 1, "redelivered once the new deadline passed");
    assert_eq!(again[0].attempt, 2);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    drop(l);
    let conn = rusqlite::Connection::open(dir.path().join("ledger.db")).unwrap();
    let stored: i64 = conn
        .query_row(
            "SELECT ack_deadline_ms FROM subscriptions WHERE name = 's'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, 200, "the new deadline is stored");
    // Nothing refused the filter for good: the original settings still pass.
    let l = EmbeddedLedger::open(dir.path(), EmbeddedOptions::default()).unwrap();
    l.ensure_subscription(&short).await.unwrap();
}

#[tokio::test]
async fn topics_are_listed_and_their_retained_messages_read_in_pages() {
    let dir = tempfile::tempdir().unwrap();
    let l = setup(dir.path()).await;
    l.ensure_topic("b-topic").await.unwrap();
    l.ensure_topic("a-topic").await.unwrap();
    // The subscription's dead-letter topic was created with it.
    assert_eq!(
        l.list_topics().await.unwrap(),
        ["a-topic", "b-topic", "s-dead", "t"]
    );
    l.publish("t", (0..5).map(|n| msg("k", n)).collect())
        .await
        .unwrap();
    l.publish("a-topic", vec![msg("other", 9)]).await.unwrap();
    // Acked or not, retained messages stay readable.
    let d = l.pull("s", 10, Duration::from_secs(1)).await.unwrap();
    l.ack("s", &ids(&d)).await.unwrap();
    assert_eq!(l.retained_count("t").await.unwrap(), 5);
    assert_eq!(l.retained_count("b-topic").await.unwrap(), 0);
    let first = l.read_retained("t", 0, 3).await.unwrap();
    assert_eq!(first.len(), 3);
    let rest = l
        .read_retained("t", first.last().unwrap().position, 3)
        .await
        .unwrap();
    let all: Vec<String> = first
        .iter()
        .chain(&rest)
        .map(|r| String::from_utf8(r.message.data.clone()).unwrap())
        .collect();
    assert_eq!(all, ["k:0", "k:1", "k:2", "k:3", "k:4"]);
    assert!(first.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(rest[0].message.attributes["n"], "3");
    assert_eq!(rest[0].message.ordering_key, "k");
    assert!(l.read_retained("b-topic", 0, 10).await.unwrap().is_empty());
}

/// A page and its progress are written together: read back after a reopen, and a page that
/// cannot be written stores neither its messages nor its progress.
#[tokio::test]
async fn publish_page_stores_the_progress_with_its_messages_or_neither() {
    let dir = tempfile::tempdir().unwrap();
    let l = setup(dir.path()).await;
    assert_eq!(l.progress("orders").await.unwrap(), None);
    let progress = |record: &str| Progress {
        table: "orders".into(),
        record: record.into(),
    };
    let page = |messages: &[Message]| Batch::from_messages(messages).unwrap();
    assert!(
        l.publish_page("t", page(&[msg("a", 1), msg("a", 2)]), &progress("p1"))
            .await
            .unwrap()
    );
    // An empty page stores the progress alone.
    assert!(
        l.publish_page("t", Batch::default(), &progress("p2"))
            .await
            .unwrap()
    );
    // A page whose topic is gone fails inside the transaction.
    l.publish_page("gone", page(&[msg("a", 4)]), &progress("p3"))
        .await
        .unwrap_err();
    drop(l);
    let l = EmbeddedLedger::open(dir.path(), EmbeddedOptions::default()).unwrap();
    assert_eq!(l.progress("orders").await.unwrap().as_deref(), Some("p2"));
    assert_eq!(l.retained_count("t").await.unwrap(), 2);
}

/// A poller's page comes as a batch (a container header as its prefix, attributes shared):
/// every read path gives back what the same messages published one by one give, and the
/// header is stored once. A prefix that is not a whole header is stored with each message.
#[tokio::test]
async fn a_batch_reads_back_as_its_messages_published_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let l = setup(dir.path()).await;
    l.ensure_topic("one-by-one").await.unwrap();
    l.ensure_topic("odd-prefix").await.unwrap();
    l.ensure_subscription(&spec("s2", "one-by-one"))
        .await
        .unwrap();
    let schema = format!("{{\"type\":\"record\",\"name\":\"{}\"}}", "y".repeat(300));
    let header = {
        let whole = container(&schema, &[]);
        whole[..super::layout::header_len(&whole).unwrap()].to_vec()
    };
    let shared = BTreeMap::from([
        (attr::TABLE.to_string(), "orders".to_string()),
        (attr::SCHEMA_FINGERPRINT.to_string(), "ab".repeat(32)),
    ]);
    let mut batch = Batch::new(header.clone(), shared).unwrap();
    for n in 0..50u8 {
        let data = &container(&schema, &vec![n; usize::from(n)])[header.len()..];
        let id = format!("orders/{n}/1");
        batch
            .push(&format!("k{}", n % 3), &[(attr::EVENT_ID, &id)], data)
            .unwrap();
    }
    let messages = batch.to_messages();
    l.publish("one-by-one", messages.clone()).await.unwrap();
    let progress = Progress {
        table: "orders".into(),
        record: "r".into(),
    };
    assert!(l.publish_page("t", batch, &progress).await.unwrap());
    assert_eq!(l.read_retained("t", 0, 100).await.unwrap().len(), 50);
    let retained = |topic: &'static str| {
        let l = &l;
        async move {
            l.read_retained(topic, 0, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.message)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(retained("t").await, messages);
    assert_eq!(retained("one-by-one").await, messages);
    assert_eq!(l.last_message("t").await.unwrap(), messages.last().cloned());
    let pulled = |sub: &'static str| {
        let l = &l;
        async move {
            let mut got = Vec::new();
            while got.len() < 50 {
                let batch = l.pull(sub, 100, Duration::from_millis(200)).await.unwrap();
                assert!(!batch.is_empty(), "{sub}: {} of 50 delivered", got.len());
                let acks: Vec<String> = batch.iter().map(|d| d.ack_id.clone()).collect();
                got.extend(batch.into_iter().map(|d| d.message));
                l.ack(sub, &acks).await.unwrap();
            }
            got.sort_by(|a, b| a.attributes.cmp(&b.attributes));
            got
        }
    };
    assert_eq!(pulled("s").await, pulled("s2").await);
    let stored_headers: i64 = Connection::open(dir.path().join("ledger.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM headers", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored_headers, 1, "one header for both topics");

    let mut odd = Batch::new(b"not a header".to_vec(), BTreeMap::new()).unwrap();
    odd.push("k", &[("n", "1")], b" but data").unwrap();
    let odd_messages = odd.to_messages();
    l.publish_page("odd-prefix", odd, &progress).await.unwrap();
    assert_eq!(retained("odd-prefix").await, odd_messages);
    assert_eq!(odd_messages[0].data, b"not a header but data");
}

/// A publish past a page's size limit is stored as several pages in one transaction, by
/// either path, and reads back whole and in order.
#[tokio::test]
async fn a_publish_larger_than_a_page_is_split_into_pages_and_reads_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let l = setup(dir.path()).await;
    l.ensure_topic("batched").await.unwrap();
    let big = limits::MAX_MESSAGE_DATA_BYTES - 1000;
    let count = super::page::MAX_PAGE_BYTES / big + 2;
    let messages: Vec<Message> = (0..count)
        .map(|n| Message {
            data: vec![n as u8; big],
            ordering_key: "k".into(),
            attributes: BTreeMap::from([("n".to_string(), n.to_string())]),
        })
        .collect();
    l.publish("t", messages.clone()).await.unwrap();
    let progress = Progress {
        table: "orders".into(),
        record: "r".into(),
    };
    l.publish_page(
        "batched",
        Batch::from_messages(&messages).unwrap(),
        &progress,
    )
    .await
    .unwrap();
    let conn = Connection::open(dir.path().join("ledger.db")).unwrap();
    for topic in ["t", "batched"] {
        let got: Vec<Message> = l
            .read_retained(topic, 0, count)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.message)
            .collect();
        assert!(got == messages, "{topic}: read back differs");
        let pages: i64 = conn
            .query_row(
                "SELECT count(*) FROM pages JOIN topics ON topics.id = pages.topic
                 WHERE topics.name = ?1",
                [topic],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(pages, 2, "{topic}: one publish, two pages");
    }
}

fn dead_letter(event: &str, reason: &str, attempts: u32) -> Message {
    let mut m = msg("k", 0);
    m.attributes.insert(attr::EVENT_ID.into(), event.into());
    m.attributes
        .insert(attr::DEAD_LETTER_REASON.into(), reason.into());
    m.attributes
        .insert(attr::DEAD_LETTER_SUBSCRIPTION.into(), "s".into());
    m.attributes
        .insert(attr::DEAD_LETTER_ATTEMPTS.into(), attempts.to_string());
    m
}

#[tokio::test]
async fn dead_letters_are_listed_and_redriven_onto_the_subscriptions_topic_once() {
    let dir = tempfile::tempdir().unwrap();
    let l = setup(dir.path()).await;
    // Dead letters from before anything listed them are kept (the dead-letter subscription
    // reads its topic from the oldest retained message).
    let before = now_micros();
    l.publish(
        "s-dead",
        vec![dead_letter("e1", "poison", 5), dead_letter("e2", "bad", 1)],
    )
    .await
    .unwrap();
    // What another process (the CLI) opening the same file sees.
    let cli = EmbeddedLedger::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let listed = cli.dead_letters("s", 100).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|d| (d.event_id.as_str(), d.reason.as_str(), d.attempts))
            .collect::<Vec<_>>(),
        vec![("e1", "poison", 5), ("e2", "bad", 1)]
    );
    assert!(listed.iter().all(|d| d.dead_lettered_at_micros >= before));
    // Listing settles nothing.
    assert_eq!(cli.dead_letters("s", 100).await.unwrap().len(), 2);
    assert_eq!(cli.dead_letters("s", 1).await.unwrap().len(), 1);

    let extra = BTreeMap::from([(attr::REPLAY_FOR.to_string(), "p".to_string())]);
    let redriven = cli
        .redrive("s", &RedriveSelection::Event("e1".into()), &extra)
        .await
        .unwrap();
    assert_eq!(redriven.len(), 1);
    let left = l.dead_letters("s", 100).await.unwrap();
    assert_eq!(
        left.iter().map(|d| d.event_id.as_str()).collect::<Vec<_>>(),
        ["e2"]
    );
    // The copy is on the topic, without the dead-letter attributes, with `extra`.
    let got = l.pull("s", 10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(got.len(), 1);
    let a = &got[0].message.attributes;
    assert_eq!(a.get(attr::EVENT_ID).map(String::as_str), Some("e1"));
    assert_eq!(a.get(attr::REPLAY_FOR).map(String::as_str), Some("p"));
    assert!(
        !a.keys().any(|k| k.starts_with("dead_letter")),
        "dead-letter attributes stripped: {a:?}"
    );
    assert_eq!(got[0].message.data, msg("k", 0).data);
    // A second redrive of the same event finds nothing; --all takes the rest.
    let none = cli
        .redrive("s", &RedriveSelection::Event("e1".into()), &extra)
        .await
        .unwrap();
    assert!(none.is_empty());
    let rest = cli
        .redrive("s", &RedriveSelection::All, &extra)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert!(cli.dead_letters("s", 100).await.unwrap().is_empty());

    let err = cli.dead_letters("nope", 10).await.unwrap_err().to_string();
    assert!(
        err.contains("nope.dead-letters") && err.contains("plugin name"),
        "{err}"
    );
}

/// An Avro object container as the poller writes it: a header with the schema JSON, one
/// block holding `datum`.
fn container(schema: &str, datum: &[u8]) -> Vec<u8> {
    fn long(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    }
    let mut out = b"Obj\x01".to_vec();
    long(&mut out, 2);
    for s in [
        &b"avro.schema"[..],
        schema.as_bytes(),
        b"avro.codec",
        b"null",
    ] {
        long(&mut out, s.len() as i64);
        out.extend_from_slice(s);
    }
    long(&mut out, 0);
    out.extend_from_slice(&[0x5a; 16]);
    long(&mut out, 1);
    long(&mut out, datum.len() as i64);
    out.extend_from_slice(datum);
    out.extend_from_slice(&[0x5a; 16]);
    out
}

#[tokio::test]
async fn a_schemas_header_is_stored_once_and_every_message_reads_back_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let l = setup(dir.path()).await;
    let schema = format!("{{\"type\":\"record\",\"name\":\"{}\"}}", "x".repeat(400));
    let mut sent: Vec<Message> = (0..3u8)
        .map(|n| Message {
            data: container(&schema, &[n, n + 1]),
            ordering_key: format!("k{n}"),
            attributes: BTreeMap::from([
                ("event_id".to_string(), format!("orders/{n}/1")),
                ("ünï".to_string(), "💡".to_string()),
            ]),
        })
        .collect();
    // Bytes that are not a container, and one cut short inside its header, stay whole.
    sent.push(msg("plain", 9));
    sent.push(Message {
        data: container(&schema, &[1])[..40].to_vec(),
        ordering_key: "cut".into(),
        attributes: BTreeMap::new(),
    });
    l.publish("t", sent.clone()).await.unwrap();
    l.publish("t", vec![sent[0].clone()]).await.unwrap();
    let got = l.pull("s", 10, Duration::from_millis(100)).await.unwrap();
    let got: Vec<Message> = got.into_iter().map(|d| d.message).collect();
    assert_eq!(got[..5], sent[..]);
    assert_eq!(got[5], sent[0]);

    let conn = Connection::open(dir.path().join("ledger.db")).unwrap();
    let headers: i64 = conn
        .query_row("SELECT COUNT(*) FROM headers", [], |r| r.get(0))
        .unwrap();
    assert_eq!(headers, 1, "one schema, one stored header");
    let (pages, stored): (i64, i64) = conn
        .query_row("SELECT COUNT(*), SUM(length(body)) FROM pages", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(pages, 2, "one row per publish");
    assert!(
        stored < schema.len() as i64,
        "both pages together ({stored} bytes) are smaller than one header"
    );
    let blob: Vec<u8> = conn
        .query_row("SELECT body FROM pages ORDER BY id LIMIT 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    let page = super::page::Page::parse(&blob).unwrap();
    assert_eq!(page.len(), 5);
    let first = page.record(0).unwrap();
    assert!(first.header.is_some());
    // The block: its count, the datum's length, the datum, the sync marker.
    assert_eq!(
        first.body.len(),
        1 + 1 + 2 + 16,
        "the record holds the block only"
    );
    // A fresh process (no header cache) reads the same.
    drop(l);
    let l = EmbeddedLedger::open(dir.path(), EmbeddedOptions::default()).unwrap();
    assert_eq!(l.last_message("t").await.unwrap(), Some(sent[0].clone()));
    let retained = l.read_retained("t", 0, 10).await.unwrap();
    assert_eq!(retained.len(), 6);
    assert_eq!(retained[2].message, sent[2]);
}

/// A ledger file of layout 0 in `dir`, its tables empty: a row per message; with
/// `headers`, as issue 11 left it (the header by id), else older still (whole data, JSON
/// attributes).
fn layout0_file(dir: &Path, headers: bool) -> Connection {
    let conn = Connection::open(dir.join("ledger.db")).unwrap();
    conn.execute_batch(&format!(
        "CREATE TABLE topics (name TEXT PRIMARY KEY);
         CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,
             ordering_key TEXT NOT NULL, attributes TEXT NOT NULL, data BLOB NOT NULL,
             published_at INTEGER NOT NULL{});
         CREATE INDEX messages_by_topic ON messages (topic, id);
         CREATE TABLE subscriptions (name TEXT PRIMARY KEY, topic TEXT NOT NULL,
             filter TEXT NOT NULL, ack_deadline_ms INTEGER NOT NULL,
             dead_letter_topic TEXT NOT NULL, cursor INTEGER NOT NULL);
         CREATE TABLE acks (sub TEXT NOT NULL, id INTEGER NOT NULL,
             PRIMARY KEY (sub, id)) WITHOUT ROWID;
         CREATE TABLE nacks (sub TEXT NOT NULL, id INTEGER NOT NULL,
             attempt INTEGER NOT NULL, PRIMARY KEY (sub, id)) WITHOUT ROWID;
         CREATE TABLE progress (tbl TEXT PRIMARY KEY, record TEXT NOT NULL);
         {}",
        if headers { ", header INTEGER" } else { "" },
        if headers {
            "CREATE TABLE headers (id INTEGER PRIMARY KEY, bytes BLOB NOT NULL UNIQUE);"
        } else {
            ""
        }
    ))
    .unwrap();
    conn
}

#[tokio::test]
async fn a_file_of_the_earlier_layout_opens_and_keeps_its_messages_and_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let schema = "{\"type\":\"record\",\"name\":\"old\"}";
    let old = Message {
        data: container(schema, &[7, 7]),
        ordering_key: "k".into(),
        attributes: BTreeMap::from([("table".to_string(), "orders".to_string())]),
    };
    {
        // The layout before issue 11's compact one: whole data, JSON attributes.
        let conn = layout0_file(dir.path(), false);
        conn.execute_batch(
            "INSERT INTO topics VALUES ('t');
             INSERT INTO subscriptions VALUES ('s', 't', '{}', 30000, 's-dead', 1);",
        )
        .unwrap();
        for n in 1..=3 {
            conn.execute(
                "INSERT INTO messages (topic, ordering_key, attributes, data, published_at)
                 VALUES ('t', ?1, ?2, ?3, ?4)",
                params![
                    old.ordering_key,
                    serde_json::to_string(&old.attributes).unwrap(),
                    old.data,
                    now_micros()
                ],
            )
            .unwrap();
            if n == 2 {
                conn.execute("INSERT INTO acks VALUES ('s', 2)", [])
                    .unwrap();
            }
        }
    }
    let l = EmbeddedLedger::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let new = Message {
        data: container(schema, &[8]),
        ..old.clone()
    };
    l.publish("t", vec![new.clone()]).await.unwrap();
    let got = l.pull("s", 10, Duration::from_millis(100)).await.unwrap();
    assert_eq!(
        got.iter().map(|d| d.ack_id.clone()).collect::<Vec<_>>(),
        vec!["1", "3", "4"],
        "the acked message stays settled"
    );
    assert_eq!(got[0].message, old);
    assert_eq!(got[1].message, old);
    assert_eq!(got[2].message, new);
}

#[tokio::test]
async fn a_layout0_file_is_migrated_and_reads_back_byte_for_byte_on_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let schema = format!("{{\"type\":\"record\",\"name\":\"{}\"}}", "y".repeat(300));
    let sent: Vec<Message> = (1..=4u8)
        .map(|n| Message {
            data: container(&schema, &[n]),
            ordering_key: format!("k{}", n % 2),
            attributes: BTreeMap::from([
                (attr::TABLE.to_string(), "orders".to_string()),
                ("n".to_string(), n.to_string()),
            ]),
        })
        .collect();
    let dead = msg("plain", 7);
    {
        // Layout 0 as issue 11 left it: a row per message, the header by id, binary
        // attributes; a dead-letter topic with a message not in any container.
        let conn = layout0_file(dir.path(), true);
        conn.execute_batch(
            "INSERT INTO topics VALUES ('t'), ('s-dead');
             INSERT INTO subscriptions VALUES ('s', 't', '{}', 30000, 's-dead', 2);
             INSERT INTO subscriptions VALUES ('s.dead-letters', 's-dead', '{}', 30000, '', 0);
             INSERT INTO progress VALUES ('orders', 'watermark');",
        )
        .unwrap();
        let header_len = super::layout::header_len(&sent[0].data).unwrap();
        conn.execute(
            "INSERT INTO headers (id, bytes) VALUES (5, ?1)",
            [&sent[0].data[..header_len]],
        )
        .unwrap();
        for m in &sent {
            conn.execute(
                "INSERT INTO messages (topic, ordering_key, attributes, data, published_at, header)
                 VALUES ('t', ?1, ?2, ?3, ?4, 5)",
                params![
                    m.ordering_key,
                    ledgerhost_core::ledger::wire::encode_attributes(&m.attributes),
                    &m.data[header_len..],
                    now_micros()
                ],
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO messages (topic, ordering_key, attributes, data, published_at)
             VALUES ('s-dead', ?1, ?2, ?3, ?4)",
            params![
                dead.ordering_key,
                ledgerhost_core::ledger::wire::encode_attributes(&dead.attributes),
                dead.data,
                now_micros()
            ],
        )
        .unwrap();
        conn.execute("INSERT INTO acks VALUES ('s', 3)", [])
            .unwrap();
    }
    let l = EmbeddedLedger::open(dir.path(), EmbeddedOptions::default()).unwrap();
    // Every read path gives the bytes that were written.
    assert_eq!(
        l.progress("orders").await.unwrap().as_deref(),
        Some("watermark")
    );
    assert_eq!(l.retained_count("t").await.unwrap(), 4);
    assert_eq!(l.last_message("t").await.unwrap(), Some(sent[3].clone()));
    let retained = l.read_retained("t", 0, 10).await.unwrap();
    assert_eq!(
        retained
            .iter()
            .map(|r| (r.position, r.message.clone()))
            .collect::<Vec<_>>(),
        (1..).zip(sent.iter().cloned()).collect::<Vec<_>>()
    );
    let dead_letters = l.dead_letters("s", 10).await.unwrap();
    assert_eq!(dead_letters.len(), 1);
    assert_eq!(dead_letters[0].message, dead);
    // The cursor (2) and the ack (3) hold: 2 and 4 are delivered, a redelivery reads them
    // again whole, and new messages continue the ids.
    let got = l.pull("s", 10, Duration::from_millis(100)).await.unwrap();
    assert_eq!(ids(&got), vec!["2", "4"]);
    assert_eq!(got[0].message, sent[1]);
    l.nack("s", &ids(&got), Duration::ZERO).await.unwrap();
    let again = l.pull("s", 10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(again[1].message, sent[3]);
    l.ack("s", &ids(&again)).await.unwrap();
    l.publish("t", vec![sent[0].clone()]).await.unwrap();
    let next = l.pull("s", 10, Duration::from_millis(100)).await.unwrap();
    assert_eq!(
        ids(&next),
        vec!["6"],
        "ids continue after the migrated ones"
    );
    assert_eq!(next[0].message, sent[0]);
    drop(l);

    let conn = Connection::open(dir.path().join("ledger.db")).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, super::schema::LAYOUT);
    let old_table: bool = conn
        .prepare("SELECT 1 FROM sqlite_master WHERE name = 'messages'")
        .unwrap()
        .exists([])
        .unwrap();
    assert!(!old_table, "the layout-0 table is gone");
    // A file of a newer layout is refused, saying so, and left alone.
    conn.pragma_update(None, "user_version", super::schema::LAYOUT + 1)
        .unwrap();
    drop(conn);
    let err = EmbeddedLedger::open(dir.path(), EmbeddedOptions::default())
        .err()
        .expect("a newer layout is refused");
    assert!(err.to_string().contains("newer ledgerhost"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The writer's lock is held across the pull on purpose: a page write in progress.
#[allow(clippy::await_holding_lock)]
async fn pulls_and_acks_go_on_while_a_page_is_written_and_never_see_it_before_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let l = Arc::new(setup(dir.path()).await);
    l.publish("t", vec![msg("a", 1), msg("b", 1)])
        .await
        .unwrap();
    // A page write in progress: the writer held, its transaction open.
    let writer = l.sides.writer();
    let tx = writer.conn.unchecked_transaction().unwrap();
    super::write::insert_messages(
        &tx,
        &HashMap::new(),
        &mut Vec::new(),
        "t",
        &[msg("c", 1)],
        now_micros(),
    )
    .unwrap();
    // The bound only turns a pull stuck behind the writer into a failure, not a hang.
    let got = tokio::time::timeout(
        Duration::from_secs(60),
        l.pull("s", 10, Duration::from_millis(100)),
    )
    .await
    .expect("a pull waited for the page being written")
    .unwrap();
    assert_eq!(got.iter().map(body).collect::<Vec<_>>(), vec!["a:1", "b:1"]);
    // Nor does an ack: it is queued, and recorded when the page's write lets the writer go.
    tokio::time::timeout(Duration::from_secs(60), l.ack("s", &ids(&got)))
        .await
        .expect("an ack waited for the page being written")
        .unwrap();
    tx.commit().unwrap();
    drop(writer);
    let got = l.pull("s", 10, Duration::from_millis(100)).await.unwrap();
    assert_eq!(got.iter().map(body).collect::<Vec<_>>(), vec!["c:1"]);
    // The acks are durable: a fresh open delivers only c:1 again.
    drop(l);
    let l = EmbeddedLedger::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let got = l.pull("s", 10, Duration::from_millis(100)).await.unwrap();
    assert_eq!(got.iter().map(body).collect::<Vec<_>>(), vec!["c:1"]);
}
