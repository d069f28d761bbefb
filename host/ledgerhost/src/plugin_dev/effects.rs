//! What a plugin did to the world, as effects: the stores of a scratch runtime wrapped so
//! every write through a capability is recorded ([`Recorded`]), in the order it was made.
//! `plugin test` lists the buckets and tables written from them; `plugin diff` compares two
//! versions' effects event by event.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ledgerhost_core::PortResult;
use ledgerhost_core::capabilities::{BlobStore, KeyValue, Warehouse, WarehouseRow};
use serde::Serialize;

/// Bytes a plugin wrote, as compared and shown: length, a 64-bit FNV-1a digest (two values
/// are the same bytes when both agree) and a printable preview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bytes {
    /// Length in bytes.
    pub len: usize,
    /// FNV-1a of the bytes, 16 hex digits.
    pub digest: String,
    /// The bytes as text when they are, else their size ([`show`]).
    pub shown: String,
}

impl Bytes {
    /// The record of `data`.
    pub fn of(data: &[u8]) -> Bytes {
        Bytes {
            len: data.len(),
            digest: format!("{:016x}", ledgerhost_core::hash::fnv1a(data)),
            shown: show(data),
        }
    }
}

/// Printable form of stored bytes: UTF-8 text when it is (its first 120 characters, quoted),
/// else its size.
pub fn show(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(|c| c.is_control() && c != '\n') => {
            let s: String = s.chars().take(120).collect();
            format!("{s:?}")
        }
        _ => format!("<{} bytes>", bytes.len()),
    }
}

/// One write a plugin made through a capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Effect {
    /// `blobstore` put.
    BlobPut {
        /// The bucket.
        bucket: String,
        /// The object.
        name: String,
        /// What was written.
        data: Bytes,
    },
    /// `blobstore` delete.
    BlobDelete {
        /// The bucket.
        bucket: String,
        /// The object.
        name: String,
    },
    /// `keyvalue` set (with the version of a versioned set).
    KeySet {
        /// The key.
        key: String,
        /// What was written.
        value: Bytes,
        /// The version of `set-if-newer`.
        version: Option<i64>,
    },
    /// `keyvalue` delete (with the version of a versioned delete).
    KeyDelete {
        /// The key.
        key: String,
        /// The version of `delete-if-newer`.
        version: Option<i64>,
    },
    /// `warehouse` load: each row's event id and a digest of its fields.
    WarehouseLoad {
        /// The table.
        table: String,
        /// `<event id> <digest of the fields>` per row.
        rows: Vec<String>,
    },
    /// `ledger` publish.
    Publish {
        /// The topic.
        topic: String,
        /// The message's ordering key.
        ordering_key: String,
        /// The message's data.
        data: Bytes,
        /// The message's attributes.
        attributes: BTreeMap<String, String>,
    },
}

impl std::fmt::Display for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let version = |v: &Option<i64>| v.map_or(String::new(), |v| format!(" (version {v})"));
        match self {
            Effect::BlobPut { bucket, name, data } => {
                write!(f, "blob put {bucket}/{name} = {}", data.shown)
            }
            Effect::BlobDelete { bucket, name } => write!(f, "blob delete {bucket}/{name}"),
            Effect::KeySet {
                key,
                value,
                version: v,
            } => write!(f, "key set {key} = {}{}", value.shown, version(v)),
            Effect::KeyDelete { key, version: v } => write!(f, "key delete {key}{}", version(v)),
            Effect::WarehouseLoad { table, rows } => {
                write!(f, "warehouse load {table}: {} rows", rows.len())
            }
            Effect::Publish {
                topic,
                ordering_key,
                data,
                ..
            } => write!(f, "publish {topic} [{ordering_key}] {}", data.shown),
        }
    }
}

/// The effects recorded so far, and the buckets and tables ever written.
#[derive(Debug, Default)]
pub struct Recorder {
    effects: Mutex<Vec<Effect>>,
    buckets: Mutex<BTreeSet<String>>,
    tables: Mutex<BTreeSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Recorder {
    /// A recorder with nothing recorded.
    pub fn new() -> Arc<Recorder> {
        Arc::default()
    }

    fn record(&self, effect: Effect) {
        lock(&self.effects).push(effect);
    }

    /// The effects recorded since the last call, in order.
    pub fn take(&self) -> Vec<Effect> {
        std::mem::take(&mut *lock(&self.effects))
    }

    /// Every bucket written (a bucket grant may be a pattern: these are the ones reached).
    pub fn buckets(&self) -> Vec<String> {
        lock(&self.buckets).iter().cloned().collect()
    }

    /// Every warehouse table written.
    pub fn tables(&self) -> Vec<String> {
        lock(&self.tables).iter().cloned().collect()
    }
}

/// A store whose writes are recorded before they reach it.
pub struct Recorded<T: ?Sized> {
    inner: Arc<T>,
    recorder: Arc<Recorder>,
}

impl<T: ?Sized> Recorded<T> {
    /// Wraps `inner`, recording into `recorder`.
    pub fn new(inner: Arc<T>, recorder: Arc<Recorder>) -> Arc<Self> {
        Arc::new(Recorded { inner, recorder })
    }
}

#[async_trait]
impl BlobStore for Recorded<dyn BlobStore> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn ensure_bucket(&self, bucket: &str) -> PortResult<()> {
        lock(&self.recorder.buckets).insert(bucket.to_string());
        self.inner.ensure_bucket(bucket).await
    }
    async fn put(&self, bucket: &str, name: &str, data: Vec<u8>) -> PortResult<()> {
        lock(&self.recorder.buckets).insert(bucket.to_string());
        self.recorder.record(Effect::BlobPut {
            bucket: bucket.to_string(),
            name: name.to_string(),
            data: Bytes::of(&data),
        });
        self.inner.put(bucket, name, data).await
    }
    async fn get(&self, bucket: &str, name: &str) -> PortResult<Option<Vec<u8>>> {
        self.inner.get(bucket, name).await
    }
    async fn delete(&self, bucket: &str, name: &str) -> PortResult<()> {
        self.recorder.record(Effect::BlobDelete {
            bucket: bucket.to_string(),
            name: name.to_string(),
        });
        self.inner.delete(bucket, name).await
    }
    async fn list(&self, bucket: &str, prefix: &str) -> PortResult<Vec<String>> {
        self.inner.list(bucket, prefix).await
    }
}

#[async_trait]
impl KeyValue for Recorded<dyn KeyValue> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn get(&self, key: &str) -> PortResult<Option<Vec<u8>>> {
        self.inner.get(key).await
    }
    async fn set(&self, key: &str, value: Vec<u8>) -> PortResult<()> {
        self.recorder.record(Effect::KeySet {
            key: key.to_string(),
            value: Bytes::of(&value),
            version: None,
        });
        self.inner.set(key, value).await
    }
    async fn delete(&self, key: &str) -> PortResult<()> {
        self.recorder.record(Effect::KeyDelete {
            key: key.to_string(),
            version: None,
        });
        self.inner.delete(key).await
    }
    async fn set_if_newer(&self, key: &str, value: Vec<u8>, version: i64) -> PortResult<bool> {
        self.recorder.record(Effect::KeySet {
            key: key.to_string(),
            value: Bytes::of(&value),
            version: Some(version),
        });
        self.inner.set_if_newer(key, value, version).await
    }
    async fn delete_if_newer(&self, key: &str, version: i64) -> PortResult<bool> {
        self.recorder.record(Effect::KeyDelete {
            key: key.to_string(),
            version: Some(version),
        });
        self.inner.delete_if_newer(key, version).await
    }
    async fn list_keys(&self, prefix: &str) -> PortResult<Vec<String>> {
        self.inner.list_keys(prefix).await
    }
}

#[async_trait]
impl Warehouse for Recorded<dyn Warehouse> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn ensure_table(&self, table: &str, avro_schema: &str) -> PortResult<()> {
        lock(&self.recorder.tables).insert(table.to_string());
        self.inner.ensure_table(table, avro_schema).await
    }
    async fn load(&self, table: &str, rows: Vec<WarehouseRow>) -> PortResult<()> {
        lock(&self.recorder.tables).insert(table.to_string());
        self.recorder.record(Effect::WarehouseLoad {
            table: table.to_string(),
            rows: rows
                .iter()
                .map(|r| {
                    let fields = Bytes::of(format!("{:?}", r.fields).as_bytes());
                    format!("{} {}", r.event_id, fields.digest)
                })
                .collect(),
        });
        self.inner.load(table, rows).await
    }
    async fn count(&self, table: &str) -> PortResult<u64> {
        self.inner.count(table).await
    }
    async fn scan(&self, table: &str) -> PortResult<Vec<WarehouseRow>> {
        self.inner.scan(table).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_write_is_recorded_in_order_and_reaches_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let kv: Arc<dyn KeyValue> = Arc::new(
            ledgerhost_capabilities::keyvalue::embedded::EmbeddedKeyValue::open(
                &dir.path().join("kv.db"),
            )
            .unwrap(),
        );
        let recorder = Recorder::new();
        let recorded = Recorded::new(kv.clone(), recorder.clone());
        recorded.set("a", b"1".to_vec()).await.unwrap();
        recorded.set_if_newer("b", b"2".to_vec(), 7).await.unwrap();
        recorded.delete("a").await.unwrap();
        assert_eq!(kv.get("b").await.unwrap(), Some(b"2".to_vec()));
        let effects = recorder.take();
        assert_eq!(
            effects.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            [
                "key set a = \"1\"",
                "key set b = \"2\" (version 7)",
                "key delete a"
            ]
        );
        assert!(recorder.take().is_empty(), "taken once");
        assert_ne!(Bytes::of(b"x").digest, Bytes::of(b"y").digest);
        assert_eq!(show(&[0, 1, 2]), "<3 bytes>");
    }
}
