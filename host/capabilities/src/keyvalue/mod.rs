//! Key-value backends.

pub mod embedded;
mod host;
#[cfg(feature = "redis")]
pub mod redis;
mod settings;

pub use host::KeyValueCapability;
pub use settings::Settings;
