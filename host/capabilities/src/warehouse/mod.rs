//! Warehouse backends: [`sqlite`] (an embedded file) and, with feature `bigquery`,
//! [`bigquery`]. Both create tables from the events' Avro schema, key rows by event id and
//! read them back with their column types.

#[cfg(feature = "bigquery")]
pub mod bigquery;
mod host;
mod settings;
pub mod sqlite;
mod stored;

pub use host::WarehouseCapability;
pub use settings::Settings;
