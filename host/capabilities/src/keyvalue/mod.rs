//! Key-value backends.

pub mod embedded;
mod host;
#[cfg(feature = "redis")]
pub mod redis;

pub use host::KeyValueCapability;
