//! The `ledgerhost:plugin/ledger` capability: publish to ledger topics the manifest grants
//! (`grants.topics`). The ledger itself is the host's port (`host/ledger`).

use std::sync::Arc;

use ledgerhost_core::ledger::{Ledger, Message};
use wasmtime::component::{HasSelf, Linker};

use crate::capability::{
    Capability, CapabilityHost, Grant, GrantedTo, InstanceState, PluginInfo, PluginState,
};
use crate::setup::{HostContext, NoSettings, Setup};
use crate::wit::{backend, denied, granted, types};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        inline: "package ledgerhost:host; world ledger { import ledgerhost:plugin/ledger@0.1.0; }",
        imports: { default: async },
        with: { "ledgerhost:plugin/types": crate::wit::types },
    });
}
use bindings::ledgerhost::plugin0_1_0::ledger;

/// Publishing to ledger topics, for plugins granted them.
pub struct LedgerCapability {
    ledger: Arc<dyn Ledger>,
}

impl LedgerCapability {
    /// The capability over the host's ledger.
    pub fn new(ledger: Arc<dyn Ledger>) -> Self {
        LedgerCapability { ledger }
    }
}

struct Instance {
    plugin: GrantedTo,
    ledger: Arc<dyn Ledger>,
}

impl<T: CapabilityHost> Capability<T> for LedgerCapability {
    fn name(&self) -> &'static str {
        "ledger"
    }

    fn interfaces(&self) -> &'static [&'static str] {
        &["ledgerhost:plugin/ledger@0.1."]
    }

    fn grant(&self) -> Option<Grant> {
        Some(Grant {
            key: "topics",
            what: "topics",
        })
    }

    fn add_to_linker(&self, linker: &mut Linker<T>) -> wasmtime::Result<()> {
        ledger::add_to_linker::<T, HasSelf<Instance>>(linker, |t| {
            t.capability_state().expect::<Instance>()
        })
    }

    fn configure(&self, plugin: &PluginInfo<'_>) -> Result<PluginState, String> {
        Ok(GrantedTo::configure(plugin, "topics"))
    }

    fn prepare(&self, plugin: &PluginState) -> InstanceState {
        Box::new(Instance {
            plugin: GrantedTo::of(plugin),
            ledger: self.ledger.clone(),
        })
    }
}

impl Instance {
    fn topic(&self, topic: &str) -> Result<(), types::Error> {
        if !granted("topics", &self.plugin.entries, topic) {
            return Err(denied(&self.plugin.name, "topic", topic, "topics"));
        }
        Ok(())
    }
}

impl ledger::Host for Instance {
    async fn create_topic(&mut self, topic: String) -> Result<(), types::Error> {
        self.topic(&topic)?;
        self.ledger.ensure_topic(&topic).await.map_err(backend)
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
        self.ledger.publish(&topic, messages).await.map_err(backend)
    }
}

impl<T: CapabilityHost> Setup<T> for LedgerCapability {
    const NAME: &'static str = "ledger";
    type Config = NoSettings;

    fn build(_: NoSettings, host: &HostContext<'_>) -> anyhow::Result<Self> {
        Ok(LedgerCapability::new(host.ports.ledger.clone()))
    }
}
