//! Ports behind the capabilities plugins import: blobstore, keyvalue, warehouse.
//! (Ledger publish goes through [`crate::ledger::Ledger`].) Grants are enforced by the
//! runtime before a call reaches these traits.

use async_trait::async_trait;

use crate::{Field, PortResult};

/// Object storage: a local directory by default, Cloud Storage in production.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Name of the backend implementation (for errors and metrics).
    fn backend(&self) -> &'static str;
    /// Creates the bucket if missing.
    async fn ensure_bucket(&self, bucket: &str) -> PortResult<()>;
    /// Writes or overwrites an object atomically (readers see the old or the new object whole).
    async fn put(&self, bucket: &str, name: &str, data: Vec<u8>) -> PortResult<()>;
    /// Reads an object; `None` if it does not exist.
    async fn get(&self, bucket: &str, name: &str) -> PortResult<Option<Vec<u8>>>;
    /// Deleting a missing object is not an error.
    async fn delete(&self, bucket: &str, name: &str) -> PortResult<()>;
    /// Names starting with `prefix`, sorted.
    async fn list(&self, bucket: &str, prefix: &str) -> PortResult<Vec<String>>;
}

/// Key-value store with versioned writes: embedded by default, Redis in production.
#[async_trait]
pub trait KeyValue: Send + Sync {
    /// Name of the backend implementation (for errors and metrics).
    fn backend(&self) -> &'static str;
    /// Current value; `None` if absent or deleted.
    async fn get(&self, key: &str) -> PortResult<Option<Vec<u8>>>;
    /// Writes or overwrites a value (unversioned).
    async fn set(&self, key: &str, value: Vec<u8>) -> PortResult<()>;
    /// Deletes a key; deleting a missing key is not an error.
    async fn delete(&self, key: &str) -> PortResult<()>;
    /// Atomically writes if `version` is newer than the stored version. Returns whether applied.
    async fn set_if_newer(&self, key: &str, value: Vec<u8>, version: i64) -> PortResult<bool>;
    /// Atomically deletes if `version` is newer, keeping a tombstone with that version so an
    /// older write cannot resurrect the key. Returns whether applied.
    async fn delete_if_newer(&self, key: &str, version: i64) -> PortResult<bool>;
    /// Live keys starting with `prefix`, sorted.
    async fn list_keys(&self, prefix: &str) -> PortResult<Vec<String>>;
}

/// One warehouse row, identified by its event id.
#[derive(Debug, Clone, PartialEq)]
pub struct WarehouseRow {
    /// Id of the event the row came from; the row's identity for idempotent loads.
    pub event_id: String,
    /// Column values of the row.
    pub fields: Vec<Field>,
}

/// Analytics warehouse: an embedded SQLite file by default, BigQuery in production.
#[async_trait]
pub trait Warehouse: Send + Sync {
    /// Name of the backend implementation (for errors and metrics).
    fn backend(&self) -> &'static str;
    /// Creates the table from an Avro record schema (JSON) if missing; adds new columns.
    async fn ensure_table(&self, table: &str, avro_schema: &str) -> PortResult<()>;
    /// Loads rows idempotently: a row whose event id is present replaces it.
    async fn load(&self, table: &str, rows: Vec<WarehouseRow>) -> PortResult<()>;
    /// Number of rows in the table.
    async fn count(&self, table: &str) -> PortResult<u64>;
    /// Every row, ordered by event id (for verification and tests).
    async fn scan(&self, table: &str) -> PortResult<Vec<WarehouseRow>>;
}
