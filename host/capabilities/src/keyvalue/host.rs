//! The `ledgerhost:plugin/keyvalue` capability: its private binding, the host side with the
//! `grants.key-prefixes` check, and its registration.

use std::sync::Arc;

use ledgerhost_core::capabilities::KeyValue;
use wasmtime::component::{HasSelf, Linker};

use crate::capability::{
    Capability, CapabilityHost, Grant, GrantedTo, InstanceState, PluginInfo, PluginState, Probe,
};
use crate::setup::{HostContext, NoSettings, Setup};
use crate::wit::{backend, denied, granted, invalid_name, types};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        inline: "package ledgerhost:host; world keyvalue { import ledgerhost:plugin/keyvalue@0.1.0; }",
        imports: { default: async },
        with: { "ledgerhost:plugin/types": crate::wit::types },
    });
}
use bindings::ledgerhost::plugin0_1_0::keyvalue;

/// The versioned key-value store for plugins, under the key prefixes their manifest grants.
pub struct KeyValueCapability {
    store: Arc<dyn KeyValue>,
    probe: Option<Probe>,
}

impl KeyValueCapability {
    /// The capability over `store`; `probe` checks a remote store's reachability.
    pub fn new(store: Arc<dyn KeyValue>, probe: Option<Probe>) -> Self {
        KeyValueCapability { store, probe }
    }
}

struct Instance {
    plugin: GrantedTo,
    store: Arc<dyn KeyValue>,
}

impl<T: CapabilityHost> Capability<T> for KeyValueCapability {
    fn name(&self) -> &'static str {
        "keyvalue"
    }

    fn interfaces(&self) -> &'static [&'static str] {
        &["ledgerhost:plugin/keyvalue@0.1."]
    }

    fn grant(&self) -> Option<Grant> {
        Some(Grant {
            key: "key-prefixes",
            what: "key prefixes",
        })
    }

    fn add_to_linker(&self, linker: &mut Linker<T>) -> wasmtime::Result<()> {
        keyvalue::add_to_linker::<T, HasSelf<Instance>>(linker, |t| {
            t.capability_state().expect::<Instance>()
        })
    }

    fn configure(&self, plugin: &PluginInfo<'_>) -> Result<PluginState, String> {
        Ok(GrantedTo::configure(plugin, "key-prefixes"))
    }

    fn prepare(&self, plugin: &PluginState) -> InstanceState {
        Box::new(Instance {
            plugin: GrantedTo::of(plugin),
            store: self.store.clone(),
        })
    }

    fn probe(&self) -> Option<Probe> {
        self.probe.clone()
    }
}

impl Instance {
    fn under_prefix(&self, key: &str) -> bool {
        granted("key-prefixes", &self.plugin.entries, key)
    }

    fn key(&self, key: &str) -> Result<(), types::Error> {
        ledgerhost_manifest::names::check_key(key).map_err(invalid_name)?;
        if !self.under_prefix(key) {
            return Err(denied(&self.plugin.name, "key", key, "key-prefixes"));
        }
        Ok(())
    }
}

impl keyvalue::Host for Instance {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, types::Error> {
        self.key(&key)?;
        self.store.get(&key).await.map_err(backend)
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), types::Error> {
        self.key(&key)?;
        self.store.set(&key, value).await.map_err(backend)
    }

    async fn delete(&mut self, key: String) -> Result<(), types::Error> {
        self.key(&key)?;
        self.store.delete(&key).await.map_err(backend)
    }

    async fn set_if_newer(
        &mut self,
        key: String,
        value: Vec<u8>,
        version: i64,
    ) -> Result<bool, types::Error> {
        self.key(&key)?;
        self.store
            .set_if_newer(&key, value, version)
            .await
            .map_err(backend)
    }

    async fn delete_if_newer(&mut self, key: String, version: i64) -> Result<bool, types::Error> {
        self.key(&key)?;
        self.store
            .delete_if_newer(&key, version)
            .await
            .map_err(backend)
    }

    async fn list_keys(&mut self, prefix: String) -> Result<Vec<String>, types::Error> {
        // Listing is allowed under a granted prefix only, and never shows other keys.
        if !self.under_prefix(&prefix) {
            return Err(denied(
                &self.plugin.name,
                "key prefix",
                &prefix,
                "key-prefixes",
            ));
        }
        self.store.list_keys(&prefix).await.map_err(backend)
    }
}

impl<T: CapabilityHost> Setup<T> for KeyValueCapability {
    const NAME: &'static str = "keyvalue";
    type Config = NoSettings;

    fn build(_: NoSettings, host: &HostContext<'_>) -> anyhow::Result<Self> {
        Ok(KeyValueCapability::new(
            host.ports.keyvalue.clone(),
            host.probes.get("keyvalue").cloned(),
        ))
    }
}
