//! CPU-bound and nothing else: `work` rounds of arithmetic per event (config, default
//! 100 000), then ack. No capability calls, so K instances of it are limited by cores alone
//! (the instances bench).
use ledgerhost_sdk::prelude::*;

/// Rounds per event when `work` is absent or not a number.
pub const DEFAULT_WORK: u64 = 100_000;

/// `rounds` steps of a linear congruential generator seeded by `seed`; the result depends on
/// every step, so the optimiser cannot skip them.
pub fn burn(seed: u64, rounds: u64) -> u64 {
    let mut x = seed;
    for _ in 0..rounds {
        x = std::hint::black_box(
            x.wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407),
        );
    }
    x
}

struct Burner;

impl Consumer for Burner {
    fn handle(events: Vec<Event>) -> Vec<Disposition> {
        let rounds = config::get("work")
            .and_then(|w| w.parse().ok())
            .unwrap_or(DEFAULT_WORK);
        for e in &events {
            std::hint::black_box(burn(e.commit_ts as u64, rounds));
        }
        ack_all(&events)
    }
}

export_consumer!(Burner);

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerhost_sdk::testing::{EventBuilder, MockHost};

    #[test]
    fn burns_then_acks_every_event() {
        let _host = MockHost::from_manifest(include_str!("../plugin.toml")).unwrap();
        let events: Vec<Event> = (0..3)
            .map(|i| EventBuilder::new("orders").key("id", i).build())
            .collect();
        assert_eq!(Burner::handle(events), vec![Disposition::Ack; 3]);
        assert_ne!(burn(1, 10), burn(1, 11), "every round counts");
    }
}
