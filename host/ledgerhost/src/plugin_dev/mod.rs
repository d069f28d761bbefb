//! The plugin author's loop without a running host: `plugin new` scaffolds a crate
//! ([`new`]), `plugin check` validates a component and its manifest as the host would at
//! load ([`check()`]), and `plugin test` runs a component against recorded events
//! ([`json_avro`]) on embedded capabilities in a scratch directory ([`test()`]) and reports
//! every disposition and everything the plugin wrote ([`report`]).

pub mod check;
pub mod diff;
pub mod effects;
pub mod json_avro;
pub mod new;
pub mod report;
mod scratch;
pub mod test;

pub use check::check;
pub use json_avro::read_events;
pub use new::{NewPlugin, new_plugin};
pub use report::TestReport;
pub use test::{TestRun, test};
