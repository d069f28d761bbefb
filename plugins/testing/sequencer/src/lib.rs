//! Makes each key's delivery order observable under retries and traps (K instances):
//! - an event whose `flaky` field is true is retried the first time it is seen (a
//!   `tried/<event-id>` marker), and later events of its key in the same batch are retried
//!   too, as the host would hold them (run it with `ordering = "key"` so the host's key and
//!   this one agree);
//! - a batch holding an event whose `poison` field is true traps before touching anything;
//! - every event it acks appends its commit timestamp to `order/<table>/<key>`, so a test can
//!   check that each key's acks are complete and in commit order.
//!
//! Deliveries of one key are serialised by the host (one instance per key), so the
//! read-modify-write of `order/…` is safe.
use std::collections::HashSet;

use ledgerhost_sdk::prelude::*;

/// `table/key` of an event id `table/key/commit_ts`.
pub fn key_of(e: &Event) -> &str {
    e.id.rsplit_once('/').map_or(e.id.as_str(), |(k, _)| k)
}

fn append(e: &Event) -> Result<(), Error> {
    let order_key = format!("order/{}", key_of(e));
    let mut seen = kv::get(&order_key)?.unwrap_or_default();
    seen.extend_from_slice(format!("{},", e.commit_ts).as_bytes());
    kv::set(&order_key, &seen)
}

/// Whether this is the first delivery of a flaky event (and marks it seen).
fn first_try_of_flaky(e: &Event) -> Result<bool, Error> {
    if e.bool("flaky") != Some(true) && e.i64("flaky") != Some(1) {
        return Ok(false);
    }
    let marker = format!("tried/{}", e.id);
    if kv::get(&marker)?.is_some() {
        return Ok(false);
    }
    kv::set(&marker, b"1")?;
    Ok(true)
}

fn one(e: &Event) -> Result<Disposition, Error> {
    if first_try_of_flaky(e)? {
        return Ok(Disposition::Retry(format!(
            "{} is flaky: first delivery",
            e.id
        )));
    }
    append(e)?;
    Ok(Disposition::Ack)
}

struct Sequencer;

impl Consumer for Sequencer {
    fn handle(events: Vec<Event>) -> Vec<Disposition> {
        if let Some(p) = events
            .iter()
            .find(|e| e.bool("poison") == Some(true) || e.i64("poison") == Some(1))
        {
            panic!("poison event {}", p.id);
        }
        let mut held: HashSet<String> = HashSet::new();
        events
            .iter()
            .map(|e| {
                let key = key_of(e).to_string();
                if held.contains(&key) {
                    return Disposition::Retry(format!("{key}: an earlier event is retried"));
                }
                let d = one(e).unwrap_or_else(|err| Disposition::Retry(format!("{}: {err}", e.id)));
                if !matches!(d, Disposition::Ack) {
                    held.insert(key);
                }
                d
            })
            .collect()
    }
}

export_consumer!(Sequencer);

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerhost_sdk::testing::{EventBuilder, MockHost};

    fn event(id: i64, ts: i64, flaky: bool) -> Event {
        EventBuilder::new("orders")
            .key("id", id)
            .field("flaky", flaky)
            .commit_ts(ts)
            .build()
    }

    #[test]
    fn a_flaky_event_is_retried_once_holding_its_key_and_acks_record_order() {
        let host = MockHost::from_manifest(include_str!("../plugin.toml")).unwrap();
        let batch = vec![event(1, 5, true), event(2, 5, false), event(1, 9, false)];
        assert_eq!(
            Sequencer::handle(batch.clone()),
            vec![
                Disposition::Retry("orders/1/5 is flaky: first delivery".into()),
                Disposition::Ack,
                Disposition::Retry("orders/1: an earlier event is retried".into()),
            ]
        );
        assert_eq!(host.kv("order/orders/1"), None);
        let again = vec![batch[0].clone(), batch[2].clone()];
        assert_eq!(Sequencer::handle(again), vec![Disposition::Ack; 2]);
        assert_eq!(host.kv("order/orders/1"), Some(b"5,9,".to_vec()));
        assert_eq!(host.kv("order/orders/2"), Some(b"5,".to_vec()));
    }

    #[test]
    #[should_panic(expected = "poison event orders/3/1")]
    fn a_poison_event_traps_the_batch() {
        let _host = MockHost::from_manifest(include_str!("../plugin.toml")).unwrap();
        let poison = EventBuilder::new("orders")
            .key("id", 3)
            .field("poison", true)
            .commit_ts(1)
            .build();
        Sequencer::handle(vec![event(1, 1, false), poison]);
    }
}
