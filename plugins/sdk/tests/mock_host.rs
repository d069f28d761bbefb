//! The native fake host behaves like the real one where plugin code can tell the difference.

use ledgerhost_sdk::testing::{Capability, EventBuilder, MockHost};
use ledgerhost_sdk::{Error, EventExt, blobstore, config, kv, ledger, log, warehouse};

const MANIFEST: &str = r#"
name = "viewer"
world = "consumer"
[subscription]
table = "orders"
[grants]
buckets = ["archive-*"]
key-prefixes = ["view/"]
warehouse-tables = ["orders"]
topics = ["derived"]
config = ["limit"]
[config]
limit = "7"
"#;

#[test]
fn manifest_grants_are_enforced_with_the_hosts_message() {
    let _host = MockHost::from_manifest(MANIFEST).unwrap();
    let Err(Error::Denied(msg)) = kv::set("other/1", b"x") else {
        panic!("a key outside the granted prefixes must be denied")
    };
    assert!(
        msg.contains("grants.key-prefixes") && msg.contains("viewer.toml"),
        "{msg}"
    );
    assert!(matches!(
        blobstore::put("private", "a", b""),
        Err(Error::Denied(_))
    ));
    assert!(matches!(
        ledger::create_topic("elsewhere"),
        Err(Error::Denied(_))
    ));
    assert!(matches!(warehouse::count("users"), Err(Error::Denied(_))));
    assert!(matches!(kv::list_keys(""), Err(Error::Denied(_))));
    // Granted ones work; a `*` grant is a prefix.
    blobstore::put("archive-orders", "a", b"1").unwrap();
    kv::set("view/1", b"x").unwrap();
    assert_eq!(config::get("limit").as_deref(), Some("7"));
    assert_eq!(config::parse_or("limit", 0u32), Ok(7));
    assert_eq!(config::parse_or("absent", 3u32), Ok(3));
}

#[test]
fn ungranted_config_reads_as_absent_and_bad_values_are_errors() {
    let host = MockHost::from_manifest(MANIFEST)
        .unwrap()
        .with_config("secret", "x")
        .with_config("limit", "seven");
    assert_eq!(config::get("secret"), None);
    let err = config::parse_or("limit", 1u32).unwrap_err();
    assert!(err.contains("limit") && err.contains("seven"), "{err}");
    drop(host);
}

#[test]
fn versioned_writes_keep_the_newest_and_tombstones_keep_older_out() {
    let host = MockHost::new();
    assert!(kv::set_if_newer("view/a", b"v2", 2).unwrap());
    assert!(
        !kv::set_if_newer("view/a", b"v1", 1).unwrap(),
        "older loses"
    );
    assert!(
        !kv::set_if_newer("view/a", b"v2again", 2).unwrap(),
        "equal loses"
    );
    assert_eq!(kv::get("view/a").unwrap().as_deref(), Some(&b"v2"[..]));
    assert!(kv::delete_if_newer("view/a", 3).unwrap());
    assert!(
        !kv::set_if_newer("view/a", b"late", 2).unwrap(),
        "tombstone holds"
    );
    assert_eq!(kv::get("view/a").unwrap(), None);
    assert!(kv::list_keys("view/").unwrap().is_empty());
    assert!(kv::set_if_newer("view/a", b"v4", 4).unwrap());
    assert_eq!(host.kv_keys(), vec!["view/a".to_string()]);
}

#[test]
fn publishing_needs_a_created_topic_and_keeps_order() {
    let host = MockHost::new();
    let e1 = EventBuilder::new("orders")
        .key("id", 1)
        .avro(vec![1])
        .build();
    let e2 = EventBuilder::new("orders")
        .key("id", 2)
        .avro(vec![2])
        .build();
    let Err(Error::Backend(msg)) = ledger::republish("derived", [&e1]) else {
        panic!("publishing to a missing topic must fail")
    };
    assert!(msg.contains("create_topic"), "{msg}");
    ledger::create_topic("derived").unwrap();
    ledger::republish("derived", [&e1, &e2]).unwrap();
    ledger::republish("derived", []).unwrap();
    let got = host.published("derived");
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[0].data.as_slice(), got[0].ordering_key.as_str()),
        (&[1u8][..], "1")
    );
    assert_eq!(got[1].attributes, e2.attributes);
}

#[test]
fn injected_failures_reach_the_caller_until_healed() {
    let host = MockHost::new();
    host.fail(Capability::Blobstore, Error::Backend("disk full".into()));
    assert_eq!(
        blobstore::put("b", "o", b"x"),
        Err(Error::Backend("disk full".into()))
    );
    host.heal(Capability::Blobstore);
    blobstore::put("b", "o", b"x").unwrap();
    assert_eq!(blobstore::list("b", "").unwrap(), vec!["o".to_string()]);
    assert_eq!(host.blob("b", "o"), Some(b"x".to_vec()));
    assert!(matches!(
        blobstore::put("b", "../etc/passwd", b"x"),
        Err(Error::Invalid(_))
    ));
}

#[test]
fn warehouse_loads_need_a_table_and_are_idempotent_by_event_id() {
    let host = MockHost::new();
    let row = |id: &str| warehouse::Row {
        event_id: id.into(),
        fields: vec![],
    };
    assert!(matches!(
        warehouse::load("orders", &[row("a")]),
        Err(Error::Invalid(_))
    ));
    warehouse::ensure_table("orders", r#"{"type":"record","name":"orders","fields":[]}"#).unwrap();
    warehouse::load("orders", &[row("a"), row("b")]).unwrap();
    warehouse::load("orders", &[row("a")]).unwrap();
    assert_eq!(warehouse::count("orders").unwrap(), 2);
    assert_eq!(host.rows("orders").len(), 2);
}

#[test]
fn logs_are_recorded() {
    let host = MockHost::new();
    ledgerhost_sdk::log_warn!("slow batch of {}", 3);
    log::log(log::Level::Info, "orders/1/1", "hello");
    let logs = host.logs();
    assert_eq!(logs.len(), 2);
    assert_eq!(logs[0].2, "slow batch of 3");
    assert_eq!(logs[1].1, "orders/1/1");
}

#[test]
#[should_panic(expected = "MockHost::new")]
fn a_capability_without_a_fake_host_fails_the_test_with_the_fix() {
    let _ = kv::get("k");
}

#[test]
fn delivered_keeps_the_tables_the_manifest_subscribes_to() {
    let events = || {
        ["orders", "payments", "refunds"]
            .iter()
            .map(|t| EventBuilder::new(t).key("id", 1).build())
            .collect::<Vec<_>>()
    };
    let tables_of = |source: &str| {
        let host = MockHost::from_manifest(&format!(
            "name = \"many\"\nworld = \"consumer\"\n[subscription]\n{source}\n"
        ))
        .expect("manifest");
        host.delivered(events())
            .into_iter()
            .map(|e| e.table.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(tables_of("table = \"orders\""), ["orders"]);
    assert_eq!(
        tables_of("tables = [\"refunds\", \"orders\"]"),
        ["orders", "refunds"]
    );
    assert_eq!(
        tables_of("tables = [\"*\"]"),
        ["orders", "payments", "refunds"]
    );
    assert_eq!(
        tables_of("topic = \"replay-x\""),
        ["orders", "payments", "refunds"]
    );
    // The host's own rules: both keys at once is refused, by the same message.
    let Err(e) = MockHost::from_manifest(
        "name = \"many\"\nworld = \"consumer\"\n[subscription]\ntable = \"orders\"\n\
         tables = [\"payments\"]\n",
    ) else {
        panic!("both `table` and `tables` must be refused");
    };
    assert!(e.contains("exactly one of"), "{e}");
}

#[test]
fn the_standard_attributes_are_not_sent_and_republishing_restores_them() {
    let manifest = MANIFEST.replace(
        "table = \"orders\"",
        "table = \"orders\"\navro = true\nattributes = true",
    );
    let host = MockHost::from_manifest(&manifest).unwrap();
    let e = EventBuilder::new("orders")
        .key("id", 7)
        .field("amount", 5)
        .commit_ts(42)
        .avro(vec![9])
        .attribute("source", "test")
        .build();
    let got = host.delivered(vec![e.clone()]);
    // As the host sends them: only what the batch and event do not already say.
    assert_eq!(got[0].attributes, vec![("source".into(), "test".into())]);
    assert_eq!(got[0].attribute("commit_ts").as_deref(), Some("42"));
    assert_eq!(got[0].attribute("event_id").as_deref(), Some(e.id.as_str()));
    assert_eq!(got[0].attribute("table").as_deref(), Some("orders"));
    assert_eq!(got[0].attribute("nope"), None);
    assert_eq!(got[0].ledger_attributes(), e.attributes);
    ledger::create_topic("derived").unwrap();
    ledger::republish("derived", &got).unwrap();
    assert_eq!(
        host.published("derived")[0].attributes,
        e.attributes,
        "republished with exactly the attributes it arrived with"
    );

    // A manifest that does not ask for attributes gets none, and republishes none.
    let host = MockHost::from_manifest(MANIFEST).unwrap();
    let got = host.delivered(vec![e]);
    assert!(got[0].attributes.is_empty());
    assert_eq!(got[0].attribute("table"), None);
    assert!(got[0].ledger_attributes().is_empty());
    drop(host);
}
