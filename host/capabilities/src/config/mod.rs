//! The `wasi:config/store` capability: a plugin reads the config keys its manifest grants
//! (`grants.config`), with the values of its `[config]` and the host's overrides. An
//! ungranted key reads as absent.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use crate::capability::{
    Capability, CapabilityHost, Grant, InstanceState, PluginInfo, PluginState,
};
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
#[derive(Default)]
pub struct ConfigCapability;

/// The granted keys' values of one plugin.
struct Values(Arc<BTreeMap<String, String>>);

impl<T: CapabilityHost> Capability<T> for ConfigCapability {
    fn name(&self) -> &'static str {
        "config"
    }

    fn interfaces(&self) -> &'static [&'static str] {
        &["wasi:config/store@0.2."]
    }

    fn grant(&self) -> Option<Grant> {
        Some(Grant {
            key: "config",
            what: "config keys",
        })
    }

    fn import_needs_grant(&self) -> bool {
        // Every plugin may import it; it only sees granted keys.
        false
    }

    fn add_to_linker(&self, linker: &mut Linker<T>) -> wasmtime::Result<()> {
        store::add_to_linker::<T, HasSelf<Values>>(linker, |t| {
            t.capability_state().expect::<Values>()
        })
    }

    fn configure(&self, plugin: &PluginInfo<'_>) -> Result<PluginState, String> {
        let granted = plugin.grant("config");
        let values: BTreeMap<String, String> = plugin
            .config
            .iter()
            .filter(|(k, _)| crate::wit::granted("config", granted, k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Box::new(Arc::new(values)))
    }

    fn prepare(&self, plugin: &PluginState) -> InstanceState {
        let values = plugin
            .downcast_ref::<Arc<BTreeMap<String, String>>>()
            .expect("config: state from configure");
        Box::new(Values(values.clone()))
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

impl<T: CapabilityHost> Setup<T> for ConfigCapability {
    const NAME: &'static str = "config";
    type Config = NoSettings;

    fn build(_: NoSettings, _: &HostContext<'_>) -> anyhow::Result<Self> {
        Ok(ConfigCapability)
    }
}
