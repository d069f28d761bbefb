//! The `ledgerhost:plugin/ledger` capability: publish to ledger topics the manifest grants
//! (`grants.topics`). The ledger itself is the host's port (`host/ledger`).

use std::sync::Arc;

use ledgerhost_core::ledger::{Ledger, Message};
use wasmtime::component::{HasSelf, Linker};

use crate::capability::{Grant, StateOf};
use crate::port::{PortCapability, PortInstance, PortKind};
use crate::setup::Ports;
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
pub type LedgerCapability = PortCapability<LedgerKind>;

/// What the `ledger` capability is: its interface and grant over the host's [`Ledger`] port.
pub struct LedgerKind;

/// One instance's view: the plugin's grant and the port.
type Instance = PortInstance<dyn Ledger>;

impl PortKind for LedgerKind {
    type Port = dyn Ledger;
    const NAME: &'static str = "ledger";
    const INTERFACES: &'static [&'static str] = &["ledgerhost:plugin/ledger@0.1."];
    const GRANT: Grant = Grant {
        key: "topics",
        what: "topics",
    };

    fn port(ports: &Ports) -> Arc<dyn Ledger> {
        ports.ledger.clone()
    }

    fn add_to_linker<T: StateOf<PortCapability<Self>>>(
        linker: &mut Linker<T>,
    ) -> wasmtime::Result<()> {
        ledger::add_to_linker::<T, HasSelf<Instance>>(linker, |t| t.state())
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
        self.port.ensure_topic(&topic).await.map_err(backend)
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
        self.port.publish(&topic, messages).await.map_err(backend)
    }
}
