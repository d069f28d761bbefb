//! Records `seen/<tag>/<event-id>` = "1" for each event; the tag is the build's version
//! (`v1`, or `v2` with the cargo feature `v2`), so a hot-swap test can tell which version
//! handled every event.
use ledgerhost_sdk::prelude::*;

/// This build's tag.
pub const TAG: &str = if cfg!(feature = "v2") { "v2" } else { "v1" };

struct Tagger;

impl Consumer for Tagger {
    fn handle(events: Vec<Event>) -> Vec<Disposition> {
        events
            .iter()
            .map(|e| match kv::set(&format!("seen/{TAG}/{}", e.id), b"1") {
                Ok(()) => Disposition::Ack,
                Err(err) => Disposition::Retry(format!("cannot mark {}: {err}", e.id)),
            })
            .collect()
    }
}

export_consumer!(Tagger);

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerhost_sdk::testing::{Capability, EventBuilder, MockHost};

    #[test]
    fn marks_each_event_with_this_builds_tag() {
        let host = MockHost::from_manifest(include_str!("../plugin.toml")).unwrap();
        let events = vec![
            EventBuilder::new("orders")
                .key("id", 1)
                .commit_ts(7)
                .build(),
            EventBuilder::new("orders")
                .key("id", 2)
                .commit_ts(7)
                .build(),
        ];
        assert_eq!(Tagger::handle(events), vec![Disposition::Ack; 2]);
        let tag = if cfg!(feature = "v2") { "v2" } else { "v1" };
        assert_eq!(
            host.kv_keys(),
            vec![
                format!("seen/{tag}/orders/1/7"),
                format!("seen/{tag}/orders/2/7")
            ]
        );
        assert_eq!(
            host.kv(&format!("seen/{tag}/orders/1/7")),
            Some(b"1".to_vec())
        );
    }

    #[test]
    fn a_failing_store_retries_instead_of_acking() {
        let host = MockHost::from_manifest(include_str!("../plugin.toml")).unwrap();
        host.fail(Capability::Keyvalue, Error::Backend("down".into()));
        let d = Tagger::handle(vec![EventBuilder::new("orders").key("id", 1).build()]);
        assert!(
            matches!(&d[0], Disposition::Retry(r) if r.contains("down")),
            "{d:?}"
        );
    }
}
