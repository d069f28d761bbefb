//! The consumer contract a plugin implements ([`Consumer`]) and the macro that exports it
//! as the 0.2 world's `handle(batch)` ([`export_consumer!`](crate::export_consumer)).

use crate::bindings::consumer::ledgerhost::plugin0_1_0::types::Disposition;
use crate::event::Event;

/// An event consumer (contract `ledgerhost:plugin@0.2.0`): handles a batch's events, one
/// disposition each, in order. Export it with [`export_consumer!`](crate::export_consumer).
pub trait Consumer {
    /// Handles a batch. Must return exactly one disposition per event, in the same order.
    fn handle(events: Vec<Event>) -> Vec<Disposition>;
}

/// Exports a consumer: `$t` implements [`crate::Consumer`] (a handler over the batch's
/// events); this adapts it to the 0.2 world's `handle(batch)`.
#[macro_export]
macro_rules! export_consumer {
    ($t:ty) => {
        const _: () = {
            struct __LedgerhostConsumer;
            impl $crate::bindings::consumer::Guest for __LedgerhostConsumer {
                fn handle(
                    batch: $crate::bindings::consumer::ledgerhost::plugin0_2_0::events::Batch,
                ) -> ::std::vec::Vec<$crate::Disposition> {
                    <$t as $crate::Consumer>::handle($crate::Event::from_batch(batch))
                }
            }
            $crate::bindings::consumer::export_consumer_raw!(
                __LedgerhostConsumer with_types_in $crate::bindings::consumer
            );
        };
    };
}
