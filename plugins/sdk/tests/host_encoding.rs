//! Events from `EventBuilder` carry exactly the ids the host gives the same rows.

use ledgerhost_core::event::EventId;
use ledgerhost_sdk::testing::EventBuilder;
use ledgerhost_sdk::{EventExt, Value};

type Core = ledgerhost_core::Value;

#[test]
fn builder_ids_equal_the_hosts_for_every_key_type() {
    let cases: Vec<(Value, Core)> = vec![
        (Value::Int64(-7), Core::Int64(-7)),
        (
            Value::String("a,b/c%d".into()),
            Core::String("a,b/c%d".into()),
        ),
        (Value::Bool(true), Core::Bool(true)),
        (Value::Float64(1.5), Core::Float64(1.5)),
        (Value::Float32(2.25), Core::Float32(2.25)),
        (
            Value::Numeric("10.50".into()),
            Core::Numeric("10.50".into()),
        ),
        (Value::Bytes(vec![0, 255]), Core::Bytes(vec![0, 255])),
        (Value::Date(19000), Core::Date(19000)),
        (Value::Timestamp(123), Core::Timestamp(123)),
        (Value::Json("{}".into()), Core::Json("{}".into())),
        (Value::Null, Core::Null),
    ];
    for (sdk, core) in cases {
        let e = EventBuilder::new("t")
            .key("a", sdk.clone())
            .key("b", 2i64)
            .commit_ts(99)
            .build();
        let key = [core, Core::Int64(2)];
        let host = EventId::new("t", &key, 99);
        assert_eq!(e.id, host.0, "key {sdk:?}");
        assert_eq!(e.attribute("event_id").as_deref(), Some(host.0.as_str()));
        assert_eq!(
            e.ordering_key(),
            ledgerhost_core::event::encode_key(&key),
            "key {sdk:?}"
        );
    }
}
