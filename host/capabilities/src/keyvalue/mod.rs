//! Key-value backends.

pub mod embedded;
#[cfg(feature = "redis")]
pub mod redis;
