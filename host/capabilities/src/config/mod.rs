//! The `wasi:config/store` capability: a plugin reads the config keys its manifest grants
//! (`grants.config`), with the values of its `[config]` and the host's overrides. An
//! ungranted key reads as absent.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use crate::capability::{Capability, Grant, PluginInfo, StateOf};
use crate::setup::{HostContext, NoSettings, Setup};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        inline: "package ledgerhost:host; world config { import wasi:config/store@0.2.0-rc.1; }",
        imports: { default: async },
    });
}
use bindings::wasi::config::store;

/// Per-plugin configuration through `wasi:config`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConfigCapability;

/// The granted keys' values of one plugin.
pub struct Values(Arc<BTreeMap<String, String>>);

impl Capability for ConfigCapability {
    const NAME: &'static str = "config";
    const INTERFACES: &'static [&'static str] = &["wasi:config/store@0.2."];
    const GRANT: Option<Grant> = Some(Grant {
        key: "config",
        what: "config keys",
    });
    // Every plugin may import it; it only sees granted keys.
    const IMPORT_NEEDS_GRANT: bool = false;

    type Configured = Arc<BTreeMap<String, String>>;
    type Instance = Values;

    fn add_to_linker<T: StateOf<Self>>(&self, linker: &mut Linker<T>) -> wasmtime::Result<()> {
        store::add_to_linker::<T, HasSelf<Values>>(linker, |t| t.state())
    }

    fn configure(&self, plugin: &PluginInfo<'_>) -> Result<Self::Configured, String> {
        let granted = plugin.grant("config");
        let values: BTreeMap<String, String> = plugin
            .config
            .iter()
            .filter(|(k, _)| crate::wit::granted("config", granted, k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Arc::new(values))
    }

    fn prepare(&self, plugin: &Self::Configured) -> Values {
        Values(plugin.clone())
    }
}

impl store::Host for Values {
    async fn get(&mut self, key: String) -> Result<Option<String>, store::Error> {
        Ok(self.0.get(&key).cloned())
    }

    async fn get_all(&mut self) -> Result<Vec<(String, String)>, store::Error> {
        Ok(self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

impl Setup for ConfigCapability {
    type Config = NoSettings;

    fn build(_: NoSettings, _: &HostContext<'_>) -> anyhow::Result<Self> {
        Ok(ConfigCapability)
    }
}
