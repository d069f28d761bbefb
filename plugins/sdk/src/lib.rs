//! Guest SDK for ledgerhost plugins: a consumer is a few lines.
//!
//! ```
//! use ledgerhost_sdk::prelude::*;
//!
//! struct LastAmount;
//!
//! impl Consumer for LastAmount {
//!     fn handle(events: Vec<Event>) -> Vec<Disposition> {
//!         events
//!             .iter()
//!             .map(|e| {
//!                 let Some(amount) = e.i64("amount") else {
//!                     return Disposition::Reject(format!("{}: no INT64 amount", e.id));
//!                 };
//!                 let key = format!("amount/{}", e.ordering_key());
//!                 match kv::set_if_newer(&key, amount.to_string().as_bytes(), e.commit_ts) {
//!                     Ok(_) => Disposition::Ack,
//!                     Err(err) => Disposition::Retry(format!("{}: {err}", e.id)),
//!                 }
//!             })
//!             .collect()
//!     }
//! }
//!
//! export_consumer!(LastAmount);
//!
//! // Natively, the same code runs against a fake host:
//! use ledgerhost_sdk::testing::{EventBuilder, MockHost};
//! let host = MockHost::new();
//! let e = EventBuilder::new("orders").key("id", 1).field("amount", 1200).commit_ts(5).build();
//! assert_eq!(LastAmount::handle(vec![e]), vec![Disposition::Ack]);
//! assert_eq!(host.kv("amount/1"), Some(b"1200".to_vec()));
//! ```
//!
//! Capabilities are plain functions ([`blobstore`], [`kv`], [`warehouse`], [`ledger`],
//! [`config`], [`log`]); a call the manifest does not grant returns
//! [`Error::Denied`] naming the grant to add. A component imports only the capabilities it
//! calls, and the host refuses to load one that imports a capability its manifest does not
//! grant. [`testing`] builds events and fakes the host ([`testing::MockHost`]) so a plugin's
//! handler is unit-tested natively with `cargo test`.

pub mod bindings;
mod caps;
mod consumer;
mod dispositions;
mod event;
mod ext;
pub mod testing;
pub mod time;

pub use caps::{blobstore, config, kv, ledger, log, warehouse};

/// Exact decimals, read by the host's rule: [`decimal::parse_decimal`] for text (a config
/// value, a NUMERIC), [`EventExt::decimal`] and [`EventExt::cmp_decimal`] for fields.
pub mod decimal {
    pub use ledgerhost_manifest::decimal::{
        BigDecimal, NotADecimal, cmp_f64, cmp_i64, decimal_of_f64, parse_decimal,
    };
}
pub use decimal::BigDecimal;

pub use bindings::consumer::ledgerhost::plugin0_1_0::types::{
    Disposition, Error, Field, HttpRequest, HttpResponse, Value,
};
pub use bindings::http::Guest as HttpHandler;
pub use bindings::http::export_http;
pub use bindings::scheduled::Guest as Scheduled;
pub use bindings::scheduled::export_scheduled;
pub use consumer::Consumer;
pub use dispositions::{ack_all, filter_to_topic, per_event, retry_all};
pub use event::{Column, Event, ScalarType, Schema};
pub use ext::{EventExt, NotANumber};

/// Everything a plugin usually needs.
pub mod prelude {
    pub use crate::{
        BigDecimal, Consumer, Disposition, Error, Event, EventExt, Field, HttpHandler, HttpRequest,
        HttpResponse, NotANumber, Scheduled, Value, ack_all, blobstore, config, decimal,
        export_consumer, export_http, export_scheduled, filter_to_topic, kv, ledger, log,
        log_debug, log_error, log_info, log_warn, per_event, retry_all, warehouse,
    };
}
