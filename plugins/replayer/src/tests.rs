use super::*;
use ledgerhost_archive::testing::{HOUR, T0, orders_encoder};
use ledgerhost_archive::{Span, compacted_name, event_digits, single_name, write_compacted};
use ledgerhost_core::Value as CoreValue;
use ledgerhost_core::source::Row;
use ledgerhost_sdk::testing::{Capability, MockHost};

const MANIFEST: &str = include_str!("../plugin.toml");
const BUCKET: &str = "archive-orders";

/// The message the poller published for a row version.
fn polled(id: i64, ts: i64) -> ledgerhost_core::ledger::Message {
    orders_encoder()
        .encode(&Row {
            values: vec![
                CoreValue::Int64(id),
                CoreValue::Int64(id * 3),
                CoreValue::Int64(ts),
            ],
            commit_ts: ts,
        })
        .unwrap()
}

fn archive_single(host: &MockHost, m: &ledgerhost_core::ledger::Message) {
    let ts: i64 = m.attributes["commit_ts"].parse().unwrap();
    let name = single_name("orders", ts, event_digits(&m.attributes["event_id"]));
    host.put_blob(BUCKET, &name, &m.data);
}

fn archive_compacted(host: &MockHost, span: Span, ms: &[&ledgerhost_core::ledger::Message]) {
    let d = Decoder::new();
    let mut events: Vec<_> = ms
        .iter()
        .map(|m| archived_event(&d, &m.data, "test").unwrap())
        .collect();
    sort_events(&mut events);
    host.put_blob(
        BUCKET,
        &compacted_name("orders", span),
        &write_compacted(&events).unwrap(),
    );
}

fn post(body: Json) -> (u16, Json) {
    let r = Replayer::handle_request(HttpRequest {
        method: "POST".into(),
        path: "/".into(),
        query: String::new(),
        headers: vec![],
        body: serde_json::to_vec(&body).unwrap(),
    });
    (r.status, serde_json::from_slice(&r.body).unwrap())
}

/// (data, ordering key, sorted attributes): what must survive a replay.
fn wire(m: &ledgerhost_core::ledger::Message) -> (Vec<u8>, String, Vec<(String, String)>) {
    (
        m.data.clone(),
        m.ordering_key.clone(),
        m.attributes.clone().into_iter().collect(),
    )
}

fn wire_sdk(m: &Message) -> (Vec<u8>, String, Vec<(String, String)>) {
    let mut a = m.attributes.clone();
    a.sort();
    (m.data.clone(), m.ordering_key.clone(), a)
}

#[test]
fn compacted_and_single_events_of_the_range_are_published_in_commit_order_on_a_new_topic() {
    let host = MockHost::from_manifest(MANIFEST).unwrap();
    let span = Span::containing(T0, 60);
    let (a, b, c) = (polled(2, T0 + 10), polled(1, T0 + 10), polled(1, T0 + 500));
    let (late, next, outside) = (
        polled(3, T0 + 20),
        polled(4, T0 + HOUR + 5),
        polled(5, T0 + 2 * HOUR),
    );
    archive_compacted(&host, span, &[&a, &b, &c]);
    archive_single(&host, &late); // arrived after compaction
    archive_single(&host, &c); // a copy left by a crashed janitor
    archive_single(&host, &next);
    archive_single(&host, &outside);

    let (status, body) = post(json!({
        "table": "orders",
        "from": "2026-11-22T12:00:00Z",
        "to": "2026-11-22T14:00:00Z",
    }));
    assert_eq!(status, 200, "{body}");
    let topic = body["topic"].as_str().unwrap().to_string();
    assert_eq!(topic, "replay-orders-20261122t120000-20261122t140000-1");
    assert_eq!(body["events"], 5);
    assert_eq!(body["compacted_files"], 1);
    assert_eq!(body["objects"], 3);
    let got: Vec<_> = host.published(&topic).iter().map(wire_sdk).collect();
    let want: Vec<_> = [&b, &a, &late, &c, &next].into_iter().map(wire).collect();
    assert_eq!(
        got, want,
        "byte-identical messages, commit order, key order within a commit"
    );
    assert!(
        host.logs()
            .iter()
            .any(|(_, _, m)| m.contains("5/5 events published")),
        "progress is logged: {:?}",
        host.logs()
    );

    // The same range again: another new topic, same events.
    let (status, body) = post(json!({"table": "orders", "from": T0, "to": T0 + 2 * HOUR}));
    assert_eq!(status, 200, "{body}");
    let again = body["topic"].as_str().unwrap();
    assert_ne!(again, topic);
    assert_eq!(host.published(again).len(), 5);
}

#[test]
fn a_named_topic_is_used_once() {
    let host = MockHost::from_manifest(MANIFEST).unwrap();
    archive_single(&host, &polled(1, T0 + 1));
    let req = json!({"table": "orders", "from": T0, "to": T0 + HOUR, "topic": "replay-audit"});
    let (status, body) = post(req.clone());
    assert_eq!(
        (status, body["topic"].as_str()),
        (200, Some("replay-audit")),
        "{body}"
    );
    let (status, body) = post(req);
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "topic-exists");
    assert_eq!(
        host.published("replay-audit").len(),
        1,
        "nothing published twice"
    );

    let (status, body) =
        post(json!({"table": "orders", "from": T0, "to": T0 + HOUR, "topic": "orders-live"}));
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["description"]
            .as_str()
            .unwrap()
            .contains("grants.topics")
    );
}

#[test]
fn bad_requests_say_what_to_send() {
    let _host = MockHost::from_manifest(MANIFEST).unwrap();
    let r = Replayer::handle_request(HttpRequest {
        method: "GET".into(),
        path: "/".into(),
        query: String::new(),
        headers: vec![],
        body: vec![],
    });
    assert_eq!(r.status, 405);
    for (body, needle) in [
        (json!({"from": T0, "to": T0 + 1}), "`table`"),
        (json!({"table": "orders", "to": T0 + 1}), "`from`"),
        (json!({"table": "orders", "from": T0, "to": T0}), "before"),
        (
            json!({"table": "orders", "from": "yesterday", "to": T0}),
            "UTC time",
        ),
        (
            json!({"table": "../etc", "from": T0, "to": T0 + 1}),
            "table name",
        ),
        (
            json!({"table": "orders", "from": 0, "to": 40 * 24 * HOUR}),
            "31 days",
        ),
        (
            json!({"table": "orders", "from": T0, "to": T0 + 1, "topic": "a b"}),
            "topic name",
        ),
    ] {
        let (status, got) = post(body.clone());
        assert_eq!(status, 400, "{body}: {got}");
        assert_eq!(got["error"]["code"], "bad-request");
        let d = got["error"]["description"].as_str().unwrap();
        assert!(d.contains(needle), "{body}: {d}");
    }
}

#[test]
fn times_parse_as_utc() {
    assert_eq!(parse_time(&json!("2026-11-22T12:00:00Z")), Some(T0));
    assert_eq!(
        parse_time(&json!("2026-11-22T12:00:00.25Z")),
        Some(T0 + 250_000)
    );
    assert_eq!(parse_time(&json!("2026-11-22T12:00:00+00:00")), Some(T0));
    assert_eq!(parse_time(&json!(T0)), Some(T0));
    assert_eq!(parse_time(&json!(T0.to_string())), Some(T0));
    assert_eq!(parse_time(&json!("2026-11-22T12:00:00+02:00")), None);
    assert_eq!(parse_time(&json!("2026-11-22T24:00:00Z")), None);
    assert_eq!(parse_time(&json!("2026-02-30T12:00:00Z")), None);
}

#[test]
fn an_unreadable_archive_publishes_nothing() {
    let host = MockHost::from_manifest(MANIFEST).unwrap();
    archive_single(&host, &polled(1, T0 + 1));
    host.put_blob(BUCKET, "orders-2026_11_22_120000_005-0001.avro", b"junk");
    let (status, body) = post(json!({"table": "orders", "from": T0, "to": T0 + HOUR}));
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "archive-unreadable");
    assert!(
        body["error"]["description"]
            .as_str()
            .unwrap()
            .contains("orders-2026_11_22_120000_005-0001.avro")
    );
    assert!(host.topics().is_empty(), "no topic, no message");
}

#[test]
fn a_ledger_failure_is_a_502_and_a_later_replay_works() {
    let host = MockHost::from_manifest(MANIFEST)
        .unwrap()
        .with_config("publish-batch", "2");
    for i in 0..5 {
        archive_single(&host, &polled(i, T0 + i));
    }
    host.fail(Capability::Ledger, Error::Backend("pubsub down".into()));
    let (status, body) = post(json!({"table": "orders", "from": T0, "to": T0 + HOUR}));
    assert_eq!(status, 502, "{body}");
    // The fake host fails create-topic too: the ledger is down before the first message.
    assert_eq!(body["error"]["code"], "backend-unavailable");
    assert!(
        body["error"]["description"]
            .as_str()
            .unwrap()
            .contains("pubsub down"),
        "{body}"
    );
    host.heal(Capability::Ledger);
    let (status, body) = post(json!({"table": "orders", "from": T0, "to": T0 + HOUR}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"], 5);
}

#[test]
fn an_empty_range_is_an_empty_topic() {
    let host = MockHost::from_manifest(MANIFEST).unwrap();
    let (status, body) = post(json!({"table": "orders", "from": T0, "to": T0 + HOUR}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"], 0);
    assert_eq!(
        host.topics(),
        vec![body["topic"].as_str().unwrap().to_string()]
    );
}
