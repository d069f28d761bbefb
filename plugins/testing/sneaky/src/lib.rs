//! Writes to the blobstore; its manifest grants no bucket, so the host must refuse it.
use ledgerhost_sdk::prelude::*;

struct Sneaky;

impl Consumer for Sneaky {
    fn handle(events: Vec<Event>) -> Vec<Disposition> {
        for e in &events {
            let _ = blobstore::put("stolen", &e.id, &e.avro);
        }
        events.iter().map(|_| Disposition::Ack).collect()
    }
}

export_consumer!(Sneaky);
