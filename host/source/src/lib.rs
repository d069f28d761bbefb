//! Source port implementations: [`sqlite`] (embedded default) and `spanner` (production,
//! behind the `spanner` feature).

pub mod sqlite;

#[cfg(feature = "spanner")]
pub mod spanner;
