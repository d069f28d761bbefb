//! The `ledgerhost:plugin/keyvalue` capability: its private binding, the host side with the
//! `grants.key-prefixes` check, and its registration.

use std::sync::Arc;

use ledgerhost_core::capabilities::KeyValue;
use wasmtime::component::{HasSelf, Linker};

use crate::capability::{Grant, StateOf};
use crate::port::{PortCapability, PortInstance, PortKind};
use crate::setup::Ports;
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
pub type KeyValueCapability = PortCapability<KeyValueKind>;

/// What the `keyvalue` capability is: its interface and grant over the host's [`KeyValue`] port.
pub struct KeyValueKind;

/// One instance's view: the plugin's grant and the port.
type Instance = PortInstance<dyn KeyValue>;

impl PortKind for KeyValueKind {
    type Port = dyn KeyValue;
    const NAME: &'static str = "keyvalue";
    const INTERFACES: &'static [&'static str] = &["ledgerhost:plugin/keyvalue@0.1."];
    const GRANT: Grant = Grant {
        key: "key-prefixes",
        what: "key prefixes",
    };

    fn port(ports: &Ports) -> Arc<dyn KeyValue> {
        ports.keyvalue.clone()
    }

    fn add_to_linker<T: StateOf<PortCapability<Self>>>(
        linker: &mut Linker<T>,
    ) -> wasmtime::Result<()> {
        keyvalue::add_to_linker::<T, HasSelf<Instance>>(linker, |t| t.state())
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
        self.port.get(&key).await.map_err(backend)
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), types::Error> {
        self.key(&key)?;
        self.port.set(&key, value).await.map_err(backend)
    }

    async fn delete(&mut self, key: String) -> Result<(), types::Error> {
        self.key(&key)?;
        self.port.delete(&key).await.map_err(backend)
    }

    async fn set_if_newer(
        &mut self,
        key: String,
        value: Vec<u8>,
        version: i64,
    ) -> Result<bool, types::Error> {
        self.key(&key)?;
        self.port
            .set_if_newer(&key, value, version)
            .await
            .map_err(backend)
    }

    async fn delete_if_newer(&mut self, key: String, version: i64) -> Result<bool, types::Error> {
        self.key(&key)?;
        self.port
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
        self.port.list_keys(&prefix).await.map_err(backend)
    }
}
