//! The `ledgerhost:plugin/warehouse` capability: its private binding, the host side with the
//! `grants.warehouse-tables` check, and its registration.

use std::sync::Arc;

use ledgerhost_core::capabilities::{Warehouse, WarehouseRow};
use wasmtime::component::{HasSelf, Linker};

use crate::capability::{Grant, StateOf};
use crate::port::{PortCapability, PortInstance, PortKind};
use crate::setup::Ports;
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
pub type WarehouseCapability = PortCapability<WarehouseKind>;

/// What the `warehouse` capability is: its interface and grant over the host's [`Warehouse`] port.
pub struct WarehouseKind;

/// One instance's view: the plugin's grant and the port.
type Instance = PortInstance<dyn Warehouse>;

impl PortKind for WarehouseKind {
    type Port = dyn Warehouse;
    const NAME: &'static str = "warehouse";
    const INTERFACES: &'static [&'static str] = &["ledgerhost:plugin/warehouse@0.1."];
    const GRANT: Grant = Grant {
        key: "warehouse-tables",
        what: "warehouse tables",
    };

    fn port(ports: &Ports) -> Arc<dyn Warehouse> {
        ports.warehouse.clone()
    }

    fn add_to_linker<T: StateOf<PortCapability<Self>>>(
        linker: &mut Linker<T>,
    ) -> wasmtime::Result<()> {
        warehouse::add_to_linker::<T, HasSelf<Instance>>(linker, |t| t.state())
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
        self.port
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
        self.port.load(&table, rows).await.map_err(backend)
    }

    async fn count(&mut self, table: String) -> Result<u64, types::Error> {
        self.table(&table)?;
        self.port.count(&table).await.map_err(backend)
    }
}
