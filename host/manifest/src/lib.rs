//! The one rule set of ledgerhost: what a plugin manifest may say ([`Manifest`]), how a
//! grant entry matches a name ([`grant`]), which names are valid ([`names`]), what a
//! host-side filter means ([`filter`]) and how decimal text reads ([`decimal`]).
//!
//! The host's runtime, its CLI and the SDK's native `MockHost` all call these functions, so
//! a plugin tested natively meets the rules the host enforces. No wasmtime, no tokio: with
//! the default `manifest` feature off the crate is small enough for a wasm32 guest.

#![warn(missing_docs)]

pub mod attributes;
pub mod calendar;
pub mod decimal;
pub mod filter;
pub mod grant;
#[cfg(feature = "manifest")]
mod manifest;
pub mod names;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use decimal::BigDecimal;
pub use filter::{Filter, FilterError};
pub use grant::{Rule, grant_matches};
#[cfg(feature = "manifest")]
pub use manifest::{
    EVERY_TABLE, Grants, Limits, MAX_INSTANCES, MAX_MEMORY_MB, Manifest, ManifestError, Schedule,
    Subscription, World,
};
pub use names::NameError;
