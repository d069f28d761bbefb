//! Ledger port implementations: [`embedded`] (a durable log in one SQLite file, the
//! default) and `pubsub` (Cloud Pub/Sub, behind the `pubsub` feature).

pub mod drift;
pub mod embedded;

#[cfg(feature = "pubsub")]
pub mod pubsub;
