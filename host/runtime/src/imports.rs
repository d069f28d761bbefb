//! The host side of every import a plugin may use. Capability calls are checked against the
//! plugin's grants on every call, then forwarded to the port behind them.

use std::collections::BTreeMap;
use std::sync::Arc;

use ledgerhost_core::PortError;
use ledgerhost_core::capabilities::WarehouseRow;
use ledgerhost_core::ledger::Message;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::Capabilities;
use crate::bindings::consumer::ledgerhost::plugin::{
    blobstore, keyvalue, ledger, types, warehouse,
};
use crate::bindings::consumer::wasi::{config, logging};
use crate::convert;
use crate::limits::MemoryLimiter;
use crate::manifest::{Grants, names};

/// Everything one plugin instance's store holds.
pub struct PluginState {
    pub(crate) name: Arc<str>,
    pub(crate) grants: Arc<Grants>,
    pub(crate) config: Arc<BTreeMap<String, String>>,
    pub(crate) caps: Capabilities,
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    /// Epoch ticks the current call may still run; at every tick the guest yields to the
    /// executor, so a busy plugin never holds a host thread for its whole deadline.
    pub(crate) ticks_left: u64,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

fn denied(plugin: &str, what: &str, name: &str, grant: &str) -> types::Error {
    types::Error::Denied(format!(
        "plugin `{plugin}` is not granted {what} `{name}`; add \"{name}\" to grants.{grant} in \
         {plugin}.toml"
    ))
}

fn backend(e: PortError) -> types::Error {
    match e {
        PortError::Invalid { .. } => types::Error::Invalid(e.to_string()),
        _ => types::Error::Backend(e.to_string()),
    }
}

/// Object and bucket names must not climb out of where they point (the shared rule).
fn check_name(what: &str, name: &str) -> Result<(), types::Error> {
    match what {
        "bucket" => names::check_bucket_name(name),
        _ => names::check_object_name(name),
    }
    .map_err(|e| types::Error::Invalid(e.to_string()))
}

impl PluginState {
    fn bucket(&self, bucket: &str) -> Result<(), types::Error> {
        check_name("bucket", bucket)?;
        if !self.grants.allows("buckets", bucket) {
            return Err(denied(&self.name, "bucket", bucket, "buckets"));
        }
        Ok(())
    }

    fn key(&self, key: &str) -> Result<(), types::Error> {
        names::check_key(key).map_err(|e| types::Error::Invalid(e.to_string()))?;
        if !self.grants.allows("key-prefixes", key) {
            return Err(denied(&self.name, "key", key, "key-prefixes"));
        }
        Ok(())
    }

    fn warehouse_table(&self, table: &str) -> Result<(), types::Error> {
        if !self.grants.allows("warehouse-tables", table) {
            return Err(denied(
                &self.name,
                "warehouse table",
                table,
                "warehouse-tables",
            ));
        }
        Ok(())
    }

    fn topic(&self, topic: &str) -> Result<(), types::Error> {
        if !self.grants.allows("topics", topic) {
            return Err(denied(&self.name, "topic", topic, "topics"));
        }
        Ok(())
    }
}

impl types::Host for PluginState {}

impl blobstore::Host for PluginState {
    async fn put(
        &mut self,
        bucket: String,
        name: String,
        data: Vec<u8>,
    ) -> Result<(), types::Error> {
        self.bucket(&bucket)?;
        check_name("object name", &name)?;
        self.caps
            .blobstore
            .ensure_bucket(&bucket)
            .await
            .map_err(backend)?;
        self.caps
            .blobstore
            .put(&bucket, &name, data)
            .await
            .map_err(backend)
    }

    async fn get(&mut self, bucket: String, name: String) -> Result<Option<Vec<u8>>, types::Error> {
        self.bucket(&bucket)?;
        check_name("object name", &name)?;
        self.caps
            .blobstore
            .get(&bucket, &name)
            .await
            .map_err(backend)
    }

    async fn delete(&mut self, bucket: String, name: String) -> Result<(), types::Error> {
        self.bucket(&bucket)?;
        check_name("object name", &name)?;
        self.caps
            .blobstore
            .delete(&bucket, &name)
            .await
            .map_err(backend)
    }

    async fn list(&mut self, bucket: String, prefix: String) -> Result<Vec<String>, types::Error> {
        self.bucket(&bucket)?;
        self.caps
            .blobstore
            .list(&bucket, &prefix)
            .await
            .map_err(backend)
    }
}

impl keyvalue::Host for PluginState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, types::Error> {
        self.key(&key)?;
        self.caps.keyvalue.get(&key).await.map_err(backend)
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), types::Error> {
        self.key(&key)?;
        self.caps.keyvalue.set(&key, value).await.map_err(backend)
    }

    async fn delete(&mut self, key: String) -> Result<(), types::Error> {
        self.key(&key)?;
        self.caps.keyvalue.delete(&key).await.map_err(backend)
    }

    async fn set_if_newer(
        &mut self,
        key: String,
        value: Vec<u8>,
        version: i64,
    ) -> Result<bool, types::Error> {
        self.key(&key)?;
        self.caps
            .keyvalue
            .set_if_newer(&key, value, version)
            .await
            .map_err(backend)
    }

    async fn delete_if_newer(&mut self, key: String, version: i64) -> Result<bool, types::Error> {
        self.key(&key)?;
        self.caps
            .keyvalue
            .delete_if_newer(&key, version)
            .await
            .map_err(backend)
    }

    async fn list_keys(&mut self, prefix: String) -> Result<Vec<String>, types::Error> {
        // Listing is allowed under a granted prefix only, and never shows other keys.
        if !self.grants.allows("key-prefixes", &prefix) {
            return Err(denied(&self.name, "key prefix", &prefix, "key-prefixes"));
        }
        self.caps.keyvalue.list_keys(&prefix).await.map_err(backend)
    }
}

impl warehouse::Host for PluginState {
    async fn ensure_table(
        &mut self,
        table: String,
        avro_schema: String,
    ) -> Result<(), types::Error> {
        self.warehouse_table(&table)?;
        self.caps
            .warehouse
            .ensure_table(&table, &avro_schema)
            .await
            .map_err(backend)
    }

    async fn load(&mut self, table: String, rows: Vec<warehouse::Row>) -> Result<(), types::Error> {
        self.warehouse_table(&table)?;
        let rows = rows
            .into_iter()
            .map(|r| WarehouseRow {
                event_id: r.event_id,
                fields: r.fields.into_iter().map(convert::field_from_wit).collect(),
            })
            .collect();
        self.caps
            .warehouse
            .load(&table, rows)
            .await
            .map_err(backend)
    }

    async fn count(&mut self, table: String) -> Result<u64, types::Error> {
        self.warehouse_table(&table)?;
        self.caps.warehouse.count(&table).await.map_err(backend)
    }
}

impl ledger::Host for PluginState {
    async fn create_topic(&mut self, topic: String) -> Result<(), types::Error> {
        self.topic(&topic)?;
        self.caps.ledger.ensure_topic(&topic).await.map_err(backend)
    }

    async fn publish(
        &mut self,
        topic: String,
        messages: Vec<ledger::Message>,
    ) -> Result<(), types::Error> {
        self.topic(&topic)?;
        let messages = messages
            .into_iter()
            .map(|m| Message {
                data: m.data,
                ordering_key: m.ordering_key,
                attributes: m.attributes.into_iter().collect(),
            })
            .collect();
        self.caps
            .ledger
            .publish(&topic, messages)
            .await
            .map_err(backend)
    }
}

impl logging::logging::Host for PluginState {
    async fn log(&mut self, level: logging::logging::Level, context: String, message: String) {
        use logging::logging::Level;
        let plugin = &*self.name;
        match level {
            Level::Trace => tracing::trace!(plugin, context, "{message}"),
            Level::Debug => tracing::debug!(plugin, context, "{message}"),
            Level::Info => tracing::info!(plugin, context, "{message}"),
            Level::Warn => tracing::warn!(plugin, context, "{message}"),
            Level::Error | Level::Critical => tracing::error!(plugin, context, "{message}"),
        }
    }
}

impl config::store::Host for PluginState {
    async fn get(&mut self, key: String) -> Result<Option<String>, config::store::Error> {
        if !self.grants.allows("config", &key) {
            return Ok(None);
        }
        Ok(self.config.get(&key).cloned())
    }

    async fn get_all(&mut self) -> Result<Vec<(String, String)>, config::store::Error> {
        Ok(self
            .config
            .iter()
            .filter(|(k, _)| self.grants.allows("config", k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}
