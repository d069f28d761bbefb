//! Panics (a trap) on an event whose `poison` field is true, overflows its stack on one whose
//! `recurse` field is true; acks the others.
use ledgerhost_sdk::prelude::*;

/// Recursion the optimiser cannot turn into a loop (no locals in linear memory, so the
/// engine's call stack, not the guest's shadow stack, runs out).
#[inline(never)]
fn dig(depth: u64) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    1 + dig(std::hint::black_box(depth + 1))
}

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
            if e.bool("recurse") == Some(true) {
                std::hint::black_box(dig(0));
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
