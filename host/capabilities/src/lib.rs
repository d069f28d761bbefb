//! Backends of the capabilities plugins import, one module per capability, each with an
//! embedded implementation (the laptop default) and a cloud one (behind a cargo feature).
//!
//! - [`blobstore`]: [`blobstore::local`] (a directory), `blobstore::gcs` (Cloud Storage,
//!   feature `gcs`).
//! - [`keyvalue`]: [`keyvalue::embedded`] (an SQLite file), `keyvalue::redis` (Redis /
//!   Memorystore, feature `redis`).
//! - [`warehouse`]: [`warehouse::sqlite`] (an SQLite file), `warehouse::bigquery` (BigQuery,
//!   feature `bigquery`).
//!
//! Every backend has a constructor taking a path or a small config struct and an async
//! `check()` health probe for readiness. Every failure is a [`ledgerhost_core::PortError`]
//! naming the backend, the bucket/key/table and what to do; `Unavailable` means "retry".

pub mod blobstore;
pub mod capability;
pub mod config;
pub mod http;
pub mod keyvalue;
pub mod ledger;
pub mod logging;
pub mod port;
pub mod probe;
pub mod set;
pub mod settings;
pub mod setup;
mod task;
pub mod warehouse;
pub mod wit;

pub use capability::{Capability, Offer, PluginInfo, StateOf};
pub use probe::Probe;
pub use set::{CapabilityHost, CapabilitySet, InstanceCapabilities, PluginCapabilities};
pub use setup::{HostContext, Ports, Setup};
pub(crate) use task::blocking;
