//! The strict Pub/Sub front refuses each request shape production refuses (HTTP 400,
//! `INVALID_ARGUMENT`, a message naming the rule) and lets the allowed edge through to the
//! emulator, so it can neither pass everything by mistake nor refuse what production takes.
//! Raw REST requests, as the host sends them, through a front before a running emulator.

use ledgerhost_tests::harness::google::{PROJECT, PubSubEmulator};
use ledgerhost_tests::harness::pubsub_front::{PubSubFront, Rpc};
use reqwest::Method;
use serde_json::{Value as Json, json};

struct Raw {
    http: reqwest::Client,
    base: String,
}

impl Raw {
    fn new(endpoint: &str) -> Self {
        Raw {
            http: reqwest::Client::new(),
            base: format!("{endpoint}/v1/projects/{PROJECT}"),
        }
    }

    async fn call(&self, method: Method, path: &str, body: &Json) -> (u16, Json) {
        let mut rb = self
            .http
            .request(method.clone(), format!("{}/{path}", self.base));
        if !body.is_null() {
            rb = rb
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let resp = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("an answer");
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Json::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, json)
    }

    /// Asserts the front refuses the request as production does, naming `rule`.
    async fn refused(&self, method: Method, path: &str, body: &Json, rule: &str) {
        let (status, answer) = self.call(method.clone(), path, body).await;
        assert_eq!(
            status, 400,
            "{method} {path} must be refused ({rule}): {answer}"
        );
        assert_eq!(answer["error"]["code"], 400, "{answer}");
        assert_eq!(answer["error"]["status"], "INVALID_ARGUMENT", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(rule),
            "{method} {path}: the refusal must name the rule `{rule}`: {message}"
        );
    }

    /// Asserts the request passes the front and the emulator answers it with success.
    async fn passes(&self, method: Method, path: &str, body: &Json) -> Json {
        let (status, answer) = self.call(method.clone(), path, body).await;
        assert_eq!(status, 200, "{method} {path} must pass: {answer}");
        answer
    }
}

fn data() -> Json {
    json!("eA==")
}

fn publish_of(messages: Vec<Json>) -> Json {
    json!({ "messages": messages })
}

fn with_key(key: &str) -> Json {
    json!({ "data": data(), "orderingKey": key })
}

fn with_attributes(attributes: Vec<(String, String)>) -> Json {
    let map: serde_json::Map<String, Json> = attributes
        .into_iter()
        .map(|(k, v)| (k, Json::String(v)))
        .collect();
    json!({ "data": data(), "attributes": map })
}

fn subscription(topic: &str, ack: i64) -> Json {
    json!({
        "topic": format!("projects/{PROJECT}/topics/{topic}"),
        "ackDeadlineSeconds": ack,
        "enableMessageOrdering": true,
    })
}

fn dead_lettered(topic: &str, attempts: i64) -> Json {
    json!({
        "topic": format!("projects/{PROJECT}/topics/{topic}"),
        "deadLetterPolicy": {
            "deadLetterTopic": format!("projects/{PROJECT}/topics/{topic}-dead"),
            "maxDeliveryAttempts": attempts,
        },
    })
}

#[tokio::test]
async fn the_front_refuses_each_shape_production_refuses_and_passes_the_edges() {
    let emu = PubSubEmulator::start();
    // A front of its own (refusals expected); the emulator's own front must stay clean.
    let front = PubSubFront::start(emu.emulator_endpoint());
    let raw = Raw::new(&front.endpoint());
    let direct = Raw::new(&emu.emulator_endpoint());
    let null = Json::Null;
    let mut forbidden = 0u64;

    raw.passes(Method::PUT, "topics/front-orders", &null).await;
    raw.passes(Method::PUT, "topics/front-orders-dead", &null)
        .await;
    raw.passes(
        Method::PUT,
        "subscriptions/front-sub",
        &subscription("front-orders", 60),
    )
    .await;
    let publish = "topics/front-orders:publish";

    // The emulator itself takes what production refuses: the front is what holds the line.
    let mixed = publish_of(vec![with_key("a"), with_key("b")]);
    direct.passes(Method::POST, publish, &mixed).await;
    direct
        .passes(
            Method::PUT,
            "subscriptions/direct-short",
            &subscription("front-orders", 5),
        )
        .await;

    // One ordering key per Publish.
    raw.refused(Method::POST, publish, &mixed, "different ordering keys")
        .await;
    forbidden += 1;
    raw.passes(
        Method::POST,
        publish,
        &publish_of(vec![with_key("a"), with_key("a")]),
    )
    .await;

    // 1 000 messages per Publish.
    let many = |n: usize| publish_of((0..n).map(|_| with_key("k")).collect());
    raw.refused(Method::POST, publish, &many(1001), "1001 messages")
        .await;
    forbidden += 1;
    let answer = raw.passes(Method::POST, publish, &many(1000)).await;
    assert_eq!(answer["messageIds"].as_array().map(Vec::len), Some(1000));

    // 10 MB per Publish (two 6 MB messages).
    let big = json!({ "data": base64_of(6_000_000) });
    raw.refused(
        Method::POST,
        publish,
        &publish_of(vec![big.clone(), big]),
        "publish request of",
    )
    .await;
    forbidden += 1;

    // A message needs data or attributes.
    raw.refused(
        Method::POST,
        publish,
        &publish_of(vec![json!({})]),
        "non-empty data or at least one attribute",
    )
    .await;
    forbidden += 1;
    raw.passes(
        Method::POST,
        publish,
        &publish_of(vec![json!({ "attributes": { "only": "attributes" } })]),
    )
    .await;

    // 100 attributes.
    let attrs = |n: usize| (0..n).map(|i| (format!("k{i}"), "v".to_string())).collect();
    raw.refused(
        Method::POST,
        publish,
        &publish_of(vec![with_attributes(attrs(101))]),
        "101 attributes",
    )
    .await;
    forbidden += 1;
    raw.passes(
        Method::POST,
        publish,
        &publish_of(vec![with_attributes(attrs(100))]),
    )
    .await;

    // Attribute keys: 256 bytes, not `goog…`.
    let one = |k: String, v: String| publish_of(vec![with_attributes(vec![(k, v)])]);
    raw.refused(
        Method::POST,
        publish,
        &one("k".repeat(257), "v".into()),
        "is 257 bytes",
    )
    .await;
    forbidden += 1;
    raw.passes(Method::POST, publish, &one("k".repeat(256), "v".into()))
        .await;
    raw.refused(
        Method::POST,
        publish,
        &one("googthing".into(), "v".into()),
        "may not start with `goog`",
    )
    .await;
    forbidden += 1;

    // Attribute values: 1 024 bytes.
    raw.refused(
        Method::POST,
        publish,
        &one("k".into(), "v".repeat(1025)),
        "value of 1025 bytes",
    )
    .await;
    forbidden += 1;
    raw.passes(Method::POST, publish, &one("k".into(), "v".repeat(1024)))
        .await;

    // Ordering keys: 1 024 bytes.
    raw.refused(
        Method::POST,
        publish,
        &publish_of(vec![with_key(&"o".repeat(1025))]),
        "ordering key of 1025 bytes",
    )
    .await;
    forbidden += 1;
    raw.passes(
        Method::POST,
        publish,
        &publish_of(vec![with_key(&"o".repeat(1024))]),
    )
    .await;

    // Subscription ack deadlines: 10 to 600 s, at creation and update.
    for (id, secs) in [("front-ack-9", 9), ("front-ack-601", 601)] {
        raw.refused(
            Method::PUT,
            &format!("subscriptions/{id}"),
            &subscription("front-orders", secs),
            &format!("ack deadline of {secs} s"),
        )
        .await;
        forbidden += 1;
    }
    for (id, secs) in [("front-ack-10", 10), ("front-ack-600", 600)] {
        let created = raw
            .passes(
                Method::PUT,
                &format!("subscriptions/{id}"),
                &subscription("front-orders", secs),
            )
            .await;
        assert_eq!(created["ackDeadlineSeconds"], secs, "{created}");
    }
    let update = |secs: i64| {
        json!({
            "subscription": { "ackDeadlineSeconds": secs },
            "updateMask": "ackDeadlineSeconds",
        })
    };
    for secs in [9, 601] {
        raw.refused(
            Method::PATCH,
            "subscriptions/front-sub",
            &update(secs),
            &format!("ack deadline of {secs} s"),
        )
        .await;
        forbidden += 1;
    }
    for secs in [600, 10] {
        let updated = raw
            .passes(Method::PATCH, "subscriptions/front-sub", &update(secs))
            .await;
        assert_eq!(updated["ackDeadlineSeconds"], secs, "{updated}");
    }
    // A filter cannot be changed after creation.
    raw.refused(
        Method::PATCH,
        "subscriptions/front-sub",
        &json!({ "subscription": { "filter": "attributes.a = \"b\"" }, "updateMask": "filter" }),
        "filter cannot be changed",
    )
    .await;
    forbidden += 1;

    // Dead-letter max delivery attempts: 5 to 100.
    for attempts in [4, 101] {
        raw.refused(
            Method::PUT,
            &format!("subscriptions/front-dead-{attempts}"),
            &dead_lettered("front-orders", attempts),
            &format!("max delivery attempts {attempts}"),
        )
        .await;
        forbidden += 1;
    }
    for attempts in [5, 100] {
        raw.passes(
            Method::PUT,
            &format!("subscriptions/front-dead-{attempts}"),
            &dead_lettered("front-orders", attempts),
        )
        .await;
    }

    // ModifyAckDeadline: 0 to 600 s, on a real delivery.
    let pulled = raw
        .passes(
            Method::POST,
            "subscriptions/front-sub:pull",
            &json!({ "maxMessages": 1 }),
        )
        .await;
    let ack_id = pulled["receivedMessages"][0]["ackId"]
        .as_str()
        .expect("a delivery")
        .to_string();
    let modify = |secs: i64| json!({ "ackIds": [ack_id.clone()], "ackDeadlineSeconds": secs });
    for secs in [-1, 601] {
        raw.refused(
            Method::POST,
            "subscriptions/front-sub:modifyAckDeadline",
            &modify(secs),
            &format!("ModifyAckDeadline of {secs} s"),
        )
        .await;
        forbidden += 1;
    }
    for secs in [600, 0] {
        raw.passes(
            Method::POST,
            "subscriptions/front-sub:modifyAckDeadline",
            &modify(secs),
        )
        .await;
    }

    // Resource names: 3 to 255 characters, a letter first, not `goog…`, allowed characters.
    let long = "a".repeat(256);
    for id in ["ab", "9lives", "goog-topic", long.as_str()] {
        raw.refused(
            Method::PUT,
            &format!("topics/{id}"),
            &null,
            "breaks Pub/Sub's naming rule",
        )
        .await;
        forbidden += 1;
    }
    raw.refused(
        Method::PUT,
        "subscriptions/s1",
        &subscription("front-orders", 10),
        "subscription id `s1` breaks Pub/Sub's naming rule",
    )
    .await;
    forbidden += 1;
    raw.passes(Method::PUT, "topics/abc", &null).await;
    raw.passes(Method::PUT, &format!("topics/{}", "a".repeat(255)), &null)
        .await;

    // The counters saw it all.
    let stats = front.stats();
    assert_eq!(stats.refused, forbidden, "{stats:#?}");
    assert_eq!(front.refusals().len() as u64, forbidden);
    let refused_publishes = stats.publishes.iter().filter(|p| p.refused).count();
    assert_eq!(refused_publishes, 9, "{:#?}", stats.publishes);
    assert!(
        stats
            .publishes
            .iter()
            .any(|p| p.refused && p.ordering_keys == 2 && p.messages == 2),
        "the mixed-key Publish is recorded with its 2 keys: {:#?}",
        stats.publishes
    );
    assert_eq!(stats.count(Rpc::Publish), 16);
    assert_eq!(stats.count(Rpc::ModifyAckDeadline), 4);
    assert_eq!(stats.count(Rpc::UpdateSubscription), 5);
    assert_eq!(stats.count(Rpc::Pull), 1);
    assert!(
        front
            .refusals()
            .iter()
            .all(|r| !r.message.is_empty() && !r.path.is_empty())
    );
    // The emulator's own front saw nothing (everything above went around it).
    assert_eq!(emu.front().stats().requests.len(), 0);
    emu.assert_clean("the_front_refuses_each_shape_production_refuses_and_passes_the_edges");
}

fn base64_of(bytes: usize) -> String {
    // `AAAA` is three zero bytes.
    "AAAA".repeat(bytes / 3)
}

/// The front reads a gRPC Publish (what the host's `Publisher` sends) and holds it to the same
/// rules as its REST form; the host, publishing by gRPC through a front, sends none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_refuses_a_grpc_publish_production_refuses_and_the_host_sends_none() {
    use ledgerhost_core::ledger::{Ledger as _, Message};
    use ledgerhost_tests::harness::pubsub_front::Transport;
    use ledgerhost_tests::harness::pubsub_front::grpc::{
        INVALID_ARGUMENT, PublishRequest, PubsubMessage, publish_raw,
    };

    let emu = PubSubEmulator::start();
    // A front of its own (refusals expected); the emulator's own front must stay clean.
    let mut front = PubSubFront::start(emu.emulator_endpoint());
    front.allow_refusals();
    let ledger =
        ledgerhost_ledger::pubsub::PubSubLedger::connect(ledgerhost_ledger::pubsub::PubSubConfig {
            endpoint: Some(emu.endpoint()),
            ..ledgerhost_ledger::pubsub::PubSubConfig::new(PROJECT)
        })
        .await
        .unwrap();
    ledger.ensure_topic("grpc-orders").await.unwrap();
    let topic = ledger.topic_path("grpc-orders");
    let message = |key: &str, data: usize, attribute: usize| Message {
        data: vec![b'x'; data],
        ordering_key: key.into(),
        attributes: [("table".to_string(), "v".repeat(attribute))].into(),
    };
    let request = |messages: &[Message]| PublishRequest {
        topic: topic.clone(),
        messages: messages.iter().map(PubsubMessage::from).collect(),
    };

    let mixed = request(&[message("a", 1, 1), message("b", 1, 1)]);
    let (code, why) = publish_raw(&emu.emulator_endpoint(), &mixed).await;
    assert_eq!(code, 0, "the emulator itself takes mixed keys: {why}");
    for (refused, rule) in [
        (mixed, "different ordering keys"),
        (
            request(&[message("a", limits_data() + 1, 1)]),
            "bytes; Pub/Sub takes at most",
        ),
        (request(&[message("a", 1, 1025)]), "value of 1025 bytes"),
    ] {
        let (code, why) = publish_raw(&front.endpoint(), &refused).await;
        assert_eq!(code, INVALID_ARGUMENT, "must be refused ({rule}): {why}");
        assert!(why.contains(rule), "the refusal names `{rule}`: {why}");
    }
    let (code, why) = publish_raw(&front.endpoint(), &request(&[message("a", 1, 1024)])).await;
    assert_eq!(code, 0, "the edge passes to the emulator: {why}");
    let stats = front.stats();
    assert_eq!(stats.refused, 3, "{stats:#?}");
    assert_eq!(stats.count(Rpc::Publish), 4);
    assert!(
        stats
            .publishes
            .iter()
            .all(|p| p.transport == Transport::Grpc),
        "{stats:#?}"
    );

    // The host: 200 messages over 7 keys in one call go out as requests of one key each, by
    // gRPC; what production would refuse is refused before it is sent.
    let page: Vec<Message> = (0..200)
        .map(|i| message(&format!("key-{}", i % 7), 10, 10))
        .collect();
    ledger.publish("grpc-orders", page).await.unwrap();
    for bad in [message("a", 1, 1025), message(&"k".repeat(1025), 1, 1)] {
        let err = ledger.publish("grpc-orders", vec![bad]).await.unwrap_err();
        assert!(
            matches!(err, ledgerhost_core::PortError::Invalid { .. }),
            "{err}"
        );
    }
    let sent = emu.front().stats();
    let orders: Vec<_> = sent
        .publishes
        .iter()
        .filter(|p| p.topic == "grpc-orders")
        .collect();
    assert!(
        orders
            .iter()
            .all(|p| p.transport == Transport::Grpc && p.ordering_keys == 1),
        "{orders:#?}"
    );
    assert_eq!(orders.iter().map(|p| p.messages).sum::<usize>(), 200);
    assert!(orders.len() >= 7 && orders.len() < 200, "{orders:#?}");
    emu.assert_clean("the_front_refuses_a_grpc_publish_production_refuses_and_the_host_sends_none");
}

fn limits_data() -> usize {
    ledgerhost_core::ledger::limits::MAX_MESSAGE_DATA_BYTES
}
