//! Panics (a trap) on an event whose `poison` field is true; acks the others.
use ledgerhost_sdk::prelude::*;

/// Whether the event asks the plugin to trap.
pub fn is_poison(e: &Event) -> bool {
    e.bool("poison") == Some(true) || e.i64("poison") == Some(1)
}

struct Trapper;

impl Consumer for Trapper {
    fn handle(events: Vec<Event>) -> Vec<Disposition> {
        for e in &events {
            if is_poison(e) {
                panic!("poison event {}", e.id);
            }
        }
        ack_all(&events)
    }
}

export_consumer!(Trapper);

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerhost_sdk::testing::EventBuilder;

    fn event(id: i64, poison: bool) -> Event {
        EventBuilder::new("orders")
            .key("id", id)
            .field("poison", poison)
            .build()
    }

    #[test]
    fn healthy_events_are_acked() {
        assert_eq!(
            Trapper::handle(vec![event(1, false), event(2, false)]),
            vec![Disposition::Ack; 2]
        );
        let no_field = EventBuilder::new("orders").key("id", 3).build();
        assert!(!is_poison(&no_field));
    }

    #[test]
    #[should_panic(expected = "poison event orders/2/1")]
    fn a_poison_event_panics_naming_it() {
        Trapper::handle(vec![event(1, false), event(2, true)]);
    }
}
