//! Pub/Sub's production limits hold on every ledger: an oversize message is refused the same
//! way, and the host keeps its own attributes (a plugin's dead-letter reason) inside them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ledgerhost::dispatcher::HandlerError;
use ledgerhost::dispatcher::{
    BatchHandler, CurrentHandler, Dispatcher, EventFilter, SubscriptionPlan,
};
use ledgerhost::metrics::Metrics;
use ledgerhost_core::ledger::{Ledger, Message, SubscriptionSpec, attr, limits};
use ledgerhost_core::source::Row;
use ledgerhost_core::{Column, ColumnType, Disposition, Event, PortError, TableSchema, Value};
use ledgerhost_ledger::embedded::{EmbeddedLedger, EmbeddedOptions};
use tokio::sync::watch;

/// A plugin whose reject reason is 4 MiB long.
struct Verbose;

#[async_trait]
impl BatchHandler for Verbose {
    async fn handle(&self, events: Vec<Event>) -> Result<Vec<Disposition>, HandlerError> {
        let reason = format!("refused: {}", "é".repeat(2 << 20));
        Ok(events
            .iter()
            .map(|_| Disposition::Reject(reason.clone()))
            .collect())
    }

    fn version(&self) -> String {
        "native".into()
    }
}

fn event_message() -> Message {
    let table = TableSchema {
        name: "orders".into(),
        columns: vec![
            Column {
                name: "id".into(),
                ty: ColumnType::Int64,
                nullable: false,
            },
            Column {
                name: "ts".into(),
                ty: ColumnType::Timestamp,
                nullable: false,
            },
        ],
        primary_key: vec!["id".into()],
        commit_ts_column: "ts".into(),
        deleted_column: None,
    };
    ledgerhost_avro::Encoder::new(&table)
        .unwrap()
        .encode(&Row {
            values: vec![Value::Int64(1), Value::Timestamp(5)],
            commit_ts: 5,
        })
        .unwrap()
}

/// Publishes one event, lets the verbose plugin reject it, and returns the dead letter's
/// reason as it arrived on the dead-letter topic.
pub async fn dead_letter_reason_of_a_4_mib_reject(ledger: Arc<dyn Ledger>, prefix: &str) -> String {
    let topic = format!("{prefix}ledger-orders");
    let dead = format!("{prefix}dead-letter-verbose");
    ledger.ensure_topic(&topic).await.unwrap();
    ledger
        .ensure_subscription(&SubscriptionSpec {
            name: format!("{prefix}dead-reader"),
            topic: dead.clone(),
            attribute_filter: BTreeMap::new(),
            ack_deadline: Duration::from_secs(30),
            dead_letter_topic: format!("{prefix}dead-reader-dead"),
        })
        .await
        .unwrap();
    let handler: Arc<dyn BatchHandler> = Arc::new(Verbose);
    let current: CurrentHandler = Arc::new(move || Some(handler.clone()));
    let metrics = Metrics::default();
    let dispatcher = Dispatcher::new(
        SubscriptionPlan {
            plugin: "verbose".into(),
            subscription: format!("{prefix}plugin-verbose"),
            topic: topic.clone(),
            table: None,
            dead_letter_topic: dead,
            filter: EventFilter::default(),
            batch_size: 8,
            max_wait: Duration::from_millis(5),
            max_attempts: 3,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
            ack_deadline: Duration::from_secs(30),
        },
        ledger.clone(),
        Arc::new(ledgerhost_avro::Decoder::new()),
        current,
        metrics.plugin("verbose"),
    );
    dispatcher.bootstrap().await.unwrap();
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(dispatcher.run(rx));
    ledger.publish(&topic, vec![event_message()]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let reason = loop {
        let got = ledger
            .pull(&format!("{prefix}dead-reader"), 1, Duration::from_secs(2))
            .await
            .unwrap();
        if let Some(d) = got.first() {
            ledger
                .ack(
                    &format!("{prefix}dead-reader"),
                    std::slice::from_ref(&d.ack_id),
                )
                .await
                .unwrap();
            break d.message.attributes[attr::DEAD_LETTER_REASON].clone();
        }
        assert!(
            Instant::now() < deadline,
            "the rejected event was never dead-lettered"
        );
    };
    stop.send_replace(true);
    let _ = task.await;
    reason
}

/// The message every ledger must refuse, and the rule its refusal names.
pub fn oversize_message() -> (Message, &'static str) {
    let mut m = event_message();
    m.ordering_key = "k".repeat(5000);
    (m, "ordering key of 5000 bytes")
}

/// Asserts a bounded, marked reason that starts like the plugin's.
pub fn assert_bounded(reason: &str) {
    assert!(
        reason.len() <= limits::MAX_ATTRIBUTE_VALUE_BYTES,
        "{} bytes",
        reason.len()
    );
    assert!(reason.starts_with("refused: é"), "{}", &reason[..40]);
    assert!(reason.ends_with(limits::TRUNCATED), "marked as cut");
}

fn embedded() -> (tempfile::TempDir, Arc<dyn Ledger>) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = EmbeddedLedger::open(dir.path(), EmbeddedOptions::default()).unwrap();
    (dir, Arc::new(ledger))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_a_4_mib_plugin_reason_ends_as_a_bounded_dead_letter_reason() {
    let (_dir, ledger) = embedded();
    assert_bounded(&dead_letter_reason_of_a_4_mib_reject(ledger, "").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_refuses_what_pubsub_refuses_naming_the_rule() {
    let (_dir, ledger) = embedded();
    ledger.ensure_topic("ledger-orders").await.unwrap();
    let (m, rule) = oversize_message();
    let err = ledger.publish("ledger-orders", vec![m]).await.unwrap_err();
    assert!(
        matches!(err, PortError::Invalid { .. }) && err.to_string().contains(rule),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_through_the_strict_front_bounds_a_4_mib_plugin_reason() {
    let emu = ledgerhost_tests::harness::google::PubSubEmulator::start();
    let ledger =
        ledgerhost_ledger::pubsub::PubSubLedger::connect(ledgerhost_ledger::pubsub::PubSubConfig {
            endpoint: Some(emu.endpoint()),
            ..ledgerhost_ledger::pubsub::PubSubConfig::new("ledgerhost-test")
        })
        .await
        .unwrap();
    assert_bounded(&dead_letter_reason_of_a_4_mib_reject(Arc::new(ledger), "").await);
    emu.assert_clean("a 4 MiB reason on Pub/Sub");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_strict_front_and_the_embedded_ledger_refuse_the_same_oversize_message() {
    let (m, rule) = oversize_message();
    // A second front, which may refuse: it gets the raw request the ledger would not send.
    let emu = ledgerhost_tests::harness::google::PubSubEmulator::start();
    let mut raw_front =
        ledgerhost_tests::harness::pubsub_front::PubSubFront::start(emu.emulator_endpoint());
    raw_front.allow_refusals();
    let ledger =
        ledgerhost_ledger::pubsub::PubSubLedger::connect(ledgerhost_ledger::pubsub::PubSubConfig {
            endpoint: Some(emu.endpoint()),
            ..ledgerhost_ledger::pubsub::PubSubConfig::new("ledgerhost-test")
        })
        .await
        .unwrap();
    ledger.ensure_topic("ledger-orders").await.unwrap();
    // The request the ledger would not send, as its `Publisher` would send it (gRPC).
    let request = ledgerhost_tests::harness::pubsub_front::grpc::PublishRequest {
        topic: ledger.topic_path("ledger-orders"),
        messages: vec![(&m).into()],
    };
    let (code, front_err) =
        ledgerhost_tests::harness::pubsub_front::grpc::publish_raw(&raw_front.endpoint(), &request)
            .await;
    assert!(
        code == ledgerhost_tests::harness::pubsub_front::grpc::INVALID_ARGUMENT
            && front_err.contains(rule),
        "{code}: {front_err}"
    );
    let ledger_err = ledger
        .publish("ledger-orders", vec![m.clone()])
        .await
        .unwrap_err();
    assert!(
        matches!(ledger_err, PortError::Invalid { .. }) && ledger_err.to_string().contains(rule),
        "{ledger_err}"
    );
    let (_dir, embedded) = embedded();
    embedded.ensure_topic("ledger-orders").await.unwrap();
    let embedded_err = embedded
        .publish("ledger-orders", vec![m])
        .await
        .unwrap_err();
    assert!(embedded_err.to_string().contains(rule), "{embedded_err}");
    assert_eq!(raw_front.refusals().len(), 1, "the raw request was refused");
    emu.assert_clean("the ledger sent nothing production refuses");
}
