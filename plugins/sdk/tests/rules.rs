//! The manifest crate's table of rule cases, run through `MockHost` and the SDK's
//! capability wrappers: a plugin tested natively meets the same rules as on the host.

use ledgerhost_manifest::filter::Scalar;
use ledgerhost_manifest::testing::{CASES, Case};
use ledgerhost_sdk::testing::{EventBuilder, MockHost};
use ledgerhost_sdk::{Error, Value, blobstore, config, kv, ledger, warehouse};

/// A scheduled manifest with one grant entry.
fn manifest(grant: &str, entry: &str) -> String {
    format!("name = \"rules\"\nworld = \"scheduled\"\n[grants]\n{grant} = [{entry:?}]\n")
}

fn value(v: Scalar<'static>) -> Value {
    match v {
        Scalar::Null => Value::Null,
        Scalar::Bool(b) => Value::Bool(b),
        Scalar::Int(i) => Value::Int64(i),
        Scalar::Float(x) => Value::Float64(x),
        Scalar::Decimal(s) => Value::Numeric(s.into()),
        Scalar::Text(s) => Value::String(s.into()),
        Scalar::Json(s) => Value::Json(s.into()),
        Scalar::Bytes(b) => Value::Bytes(b.to_vec()),
        Scalar::Date(d) => Value::Date(d),
        Scalar::Timestamp(t) => Value::Timestamp(t),
        Scalar::Other => Value::Null,
    }
}

/// `Ok` is allowed; a denial or refusal is not; anything else is a failure of the test.
fn allowed(r: Result<(), Error>) -> bool {
    match r {
        Ok(()) => true,
        Err(Error::Denied(_) | Error::Invalid(_)) => false,
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

/// The answer through the SDK, or `None` for a case MockHost has no capability for yet.
fn through_mock_host(case: &Case) -> Option<bool> {
    Some(match *case {
        Case::PluginName(n) => {
            MockHost::from_manifest(&format!("name = \"{n}\"\nworld = \"scheduled\"\n")).is_ok()
        }
        Case::BucketName(b) => {
            let _host = MockHost::new();
            allowed(blobstore::put(b, "object", b"x"))
        }
        Case::ObjectName(o) => {
            let _host = MockHost::new();
            allowed(blobstore::put("bucket", o, b"x"))
        }
        Case::Key(k) => {
            let _host = MockHost::new();
            allowed(kv::set(k, b"x"))
        }
        Case::GrantEntry { grant, entry } => {
            MockHost::from_manifest(&manifest(grant, entry)).is_ok()
        }
        Case::Grant {
            grant,
            entry,
            value,
        } => {
            let host = MockHost::from_manifest(&manifest(grant, entry)).expect("manifest");
            match grant {
                "buckets" => allowed(blobstore::put(value, "object", b"x")),
                "key-prefixes" => allowed(kv::set(value, b"x")),
                "warehouse-tables" => allowed(warehouse::ensure_table(value, "{}")),
                "topics" => allowed(ledger::create_topic(value)),
                "config" => {
                    let _host = host.with_config(value, "v");
                    return Some(config::get(value).is_some());
                }
                // No outbound HTTP capability in the SDK yet.
                _ => return None,
            }
        }
        Case::Filter {
            expr,
            column,
            value: v,
        } => {
            let host = MockHost::from_manifest(&format!(
                "name = \"rules\"\nworld = \"consumer\"\n[subscription]\ntable = \"orders\"\n\
                 filter = [{expr:?}]\n"
            ))
            .expect("manifest");
            let e = EventBuilder::new("orders")
                .key("id", 1)
                .field(column, value(v))
                .build();
            host.delivered(vec![e]).len() == 1
        }
    })
}

#[test]
fn mock_host_answers_every_case_of_the_shared_table() {
    let mut skipped = 0;
    for case in CASES {
        match through_mock_host(&case.case) {
            Some(got) => assert_eq!(got, case.allowed, "{case:?}"),
            None => skipped += 1,
        }
    }
    // Only the outbound-HTTP matches, which need an SDK capability first.
    assert!(skipped <= 4, "{skipped} cases skipped");
}
