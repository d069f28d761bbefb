//! Allocates (and touches) memory without bound: the host's memory cap must stop it.
use ledgerhost_sdk::prelude::*;

struct Hog;

impl Consumer for Hog {
    fn handle(events: Vec<Event>) -> Vec<Disposition> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![0xAB; 1 << 20]);
            std::hint::black_box(&hoard);
            if hoard.len() > 1 << 20 {
                return events.iter().map(|_| Disposition::Ack).collect();
            }
        }
    }
}

export_consumer!(Hog);
