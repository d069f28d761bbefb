//! Well behaved: records `count/<event-id>` for every event and acks (the neighbour whose
//! throughput must not suffer from a misbehaving plugin).
use ledgerhost_sdk::prelude::*;

struct Counter;

impl Consumer for Counter {
    fn handle(events: Vec<Event>) -> Vec<Disposition> {
        events
            .iter()
            .map(|e| match kv::set(&format!("count/{}", e.id), b"1") {
                Ok(()) => Disposition::Ack,
                Err(err) => Disposition::Retry(format!("cannot count {}: {err}", e.id)),
            })
            .collect()
    }
}

export_consumer!(Counter);

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerhost_sdk::testing::{EventBuilder, MockHost};

    #[test]
    fn counts_every_event_once_under_its_grant() {
        let host = MockHost::from_manifest(include_str!("../plugin.toml")).unwrap();
        let batch: Vec<Event> = (0..3)
            .map(|i| EventBuilder::new("orders").key("id", i).build())
            .collect();
        assert_eq!(Counter::handle(batch.clone()), vec![Disposition::Ack; 3]);
        // A redelivery is idempotent.
        assert_eq!(Counter::handle(batch), vec![Disposition::Ack; 3]);
        assert_eq!(
            host.kv_keys(),
            vec!["count/orders/0/1", "count/orders/1/1", "count/orders/2/1"]
        );
    }
}
