//! The WebAssembly runtime of ledgerhost.
//!
//! One [`Runtime`] per process holds the wasmtime engine (pooling allocator, epoch
//! interruption), a linker with WASI (empty sandbox) and the imports of every capability of
//! its [`CapabilitySet`], and the compile cache. [`Runtime::load`] turns a component and its
//! [`manifest::Manifest`] into a [`Plugin`]: a pre-instantiated component with one
//! long-lived instance, rebuilt after a trap; [`Instances`] holds the K instances of one
//! version a manifest may ask for (`subscription.instances`). The [`registry`] watches a
//! plugin directory and swaps versions between batches.

mod bindings;
mod cache;
mod convert;
mod engine;
mod error;
mod instances;
mod limits;
pub use ledgerhost_manifest as manifest;
mod plugin;
pub mod registry;
mod state;
mod trap;

pub use cache::CacheOutcome;
pub use engine::{Runtime, RuntimeConfig};
pub use error::{BoxError, LoadError, RuntimeError};
pub use instances::Instances;
pub use ledgerhost_capabilities::{CapabilitySet, Ports};
pub use manifest::{Manifest, World};
pub use plugin::{CallError, HttpRequest, HttpResponse, Plugin, PluginStats};
pub use state::StoreData;
