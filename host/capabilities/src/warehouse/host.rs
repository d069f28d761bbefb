//! The `ledgerhost:plugin/warehouse` capability: its private binding, the host side with the
//! `grants.warehouse-tables` check, and its registration.

use std::sync::Arc;

use ledgerhost_core::capabilities::{Warehouse, WarehouseRow};
use wasmtime::component::{HasSelf, Linker};

use crate::capability::{
    Capability, CapabilityHost, Grant, GrantedTo, InstanceState, PluginInfo, PluginState, Probe,
};
use crate::setup::{HostContext, NoSettings, Setup};
use crate::wit::{backend, denied, field_from_wit, granted, types};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        inline: "package ledgerhost:host; world warehouse { import ledgerhost:plugin/warehouse@0.1.0; }",
        imports: { default: async },
        with: { "ledgerhost:plugin/types": crate::wit::types },
    });
}
use bindings::ledgerhost::plugin0_1_0::warehouse;

/// The analytics warehouse for plugins, in the tables their manifest grants.
pub struct WarehouseCapability {
    store: Arc<dyn Warehouse>,
    probe: Option<Probe>,
}

impl WarehouseCapability {
    /// The capability over `store`; `probe` checks a remote warehouse's reachability.
    pub fn new(store: Arc<dyn Warehouse>, probe: Option<Probe>) -> Self {
        WarehouseCapability { store, probe }
    }
}

struct Instance {
    plugin: GrantedTo,
    store: Arc<dyn Warehouse>,
}

impl<T: CapabilityHost> Capability<T> for WarehouseCapability {
    fn name(&self) -> &'static str {
        "warehouse"
    }

    fn interfaces(&self) -> &'static [&'static str] {
        &["ledgerhost:plugin/warehouse@0.1."]
    }

    fn grant(&self) -> Option<Grant> {
        Some(Grant {
            key: "warehouse-tables",
            what: "warehouse tables",
        })
    }

    fn add_to_linker(&self, linker: &mut Linker<T>) -> wasmtime::Result<()> {
        warehouse::add_to_linker::<T, HasSelf<Instance>>(linker, |t| {
            t.capability_state().expect::<Instance>()
        })
    }

    fn configure(&self, plugin: &PluginInfo<'_>) -> Result<PluginState, String> {
        Ok(GrantedTo::configure(plugin, "warehouse-tables"))
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
    fn table(&self, table: &str) -> Result<(), types::Error> {
        if !granted("warehouse-tables", &self.plugin.entries, table) {
            return Err(denied(
                &self.plugin.name,
                "warehouse table",
                table,
                "warehouse-tables",
            ));
        }
        Ok(())
    }
}

impl warehouse::Host for Instance {
    async fn ensure_table(
        &mut self,
        table: String,
        avro_schema: String,
    ) -> Result<(), types::Error> {
        self.table(&table)?;
        self.store
            .ensure_table(&table, &avro_schema)
            .await
            .map_err(backend)
    }

    async fn load(&mut self, table: String, rows: Vec<warehouse::Row>) -> Result<(), types::Error> {
        self.table(&table)?;
        let rows = rows
            .into_iter()
            .map(|r| WarehouseRow {
                event_id: r.event_id,
                fields: r.fields.into_iter().map(field_from_wit).collect(),
            })
            .collect();
        self.store.load(&table, rows).await.map_err(backend)
    }

    async fn count(&mut self, table: String) -> Result<u64, types::Error> {
        self.table(&table)?;
        self.store.count(&table).await.map_err(backend)
    }
}

impl<T: CapabilityHost> Setup<T> for WarehouseCapability {
    const NAME: &'static str = "warehouse";
    type Config = NoSettings;

    fn build(_: NoSettings, host: &HostContext<'_>) -> anyhow::Result<Self> {
        Ok(WarehouseCapability::new(
            host.ports.warehouse.clone(),
            host.probes.get("warehouse").cloned(),
        ))
    }
}
