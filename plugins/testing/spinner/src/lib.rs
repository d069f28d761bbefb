//! Never returns: the host's deadline must stop it.
use ledgerhost_sdk::prelude::*;

struct Spinner;

impl Consumer for Spinner {
    fn handle(events: Vec<Event>) -> Vec<Disposition> {
        let mut n: u64 = events.len() as u64;
        loop {
            n = std::hint::black_box(n.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

export_consumer!(Spinner);
