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

/// The allocator the `ledgerhost` binary and its benches install (`#[global_allocator]`, in
/// each program): the poller allocates rows and pages on one thread and frees them on
/// another, and with glibc's malloc its steps slowed each other down when they ran side by
/// side (BENCHMARKS.md, issue 25).
pub use mimalloc::MiMalloc as Allocator;
