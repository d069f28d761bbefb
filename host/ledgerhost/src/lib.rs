//! The ledgerhost sidecar as a library: the binary's CLI is a thin layer over it, and the
//! end-to-end tests drive it directly.
//!
//! Data flows one way: source → [`poller`] → ledger → [`dispatcher`] → plugin → capability.

pub mod admin;
pub mod admin_client;
pub mod backends;
pub mod cli;
pub mod config;
pub mod demo;
pub mod dispatcher;
pub mod envconfig;
pub mod fault;
pub mod history;
pub mod host;
pub mod logging;
pub mod metrics;
pub mod ops;
pub mod plugin_dev;
pub mod poller;
mod progress_bar;
pub mod restore;
pub mod signal;
pub mod status;
pub mod trigger;
pub mod watermark;

pub use config::Config;
pub use host::Host;
