//! The store data of one plugin instance: WASI (an empty sandbox), the memory limiter, the
//! deadline budget, and every capability's per-instance state. The host side of the
//! capabilities lives in their folders in `ledgerhost-capabilities`.

use ledgerhost_capabilities::{CapabilityHost, InstanceCapabilities};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::limits::MemoryLimiter;

/// Everything one plugin instance's store holds.
pub struct StoreData {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    /// Epoch ticks the current call may still run; at every tick the guest yields to the
    /// executor, so a busy plugin never holds a host thread for its whole deadline.
    pub(crate) ticks_left: u64,
    pub(crate) capabilities: InstanceCapabilities,
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl CapabilityHost for StoreData {
    fn capability_parts(&mut self) -> (&mut InstanceCapabilities, &mut ResourceTable) {
        (&mut self.capabilities, &mut self.table)
    }
}
