//! The one [`Runtime`] of a process: the wasmtime engine (pooling allocator, epoch
//! interruption), the linker with WASI (an empty sandbox) and every capability's imports,
//! the capability set and the compile cache. Loading a plugin on it is `plugin/load.rs`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ledgerhost_capabilities::CapabilitySet;
use ledgerhost_manifest as manifest;
use wasmtime::component::Linker;
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::cache::CompileCache;
use crate::error::RuntimeError;
use crate::state::StoreData;

/// Runtime settings.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Compiled components are kept here; `None` compiles on every load.
    pub cache_dir: Option<PathBuf>,
    /// Granularity of call deadlines.
    pub epoch_tick: Duration,
    /// Most plugin instances alive at once (pool size).
    pub max_instances: u32,
    /// The host's captured tables (its config's `[[tables]]`): a consumer whose
    /// `subscription.table`/`tables` names another is refused at load. `None` (tools
    /// without a host config, e.g. `plugin check`) does not check.
    pub tables: Option<Vec<String>>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: None,
            epoch_tick: Duration::from_millis(10),
            max_instances: 64,
            tables: None,
        }
    }
}

/// The engine, linker and cache shared by every plugin.
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<StoreData>,
    pub(crate) capabilities: CapabilitySet,
    pub(crate) config: RuntimeConfig,
    pub(crate) cache: CompileCache,
}

impl Runtime {
    /// Builds the engine, starts the epoch ticker, links WASI and every capability's imports.
    /// `capabilities`: a built [`CapabilitySet`], or just the host's [`Ports`](crate::Ports) (default
    /// settings, no probes).
    pub fn new(
        config: RuntimeConfig,
        capabilities: impl Into<CapabilitySet>,
    ) -> Result<Arc<Runtime>, RuntimeError> {
        let capabilities = capabilities.into();
        let err = |e: wasmtime::Error| RuntimeError(e.to_string());
        let mut pool = PoolingAllocationConfig::new();
        let n = config.max_instances.max(4);
        pool.total_component_instances(n)
            .total_core_instances(n * 8)
            .total_memories(n * 2)
            .total_tables(n * 8)
            .total_stacks(n)
            .max_memories_per_component(4)
            .max_tables_per_component(8)
            .max_core_instances_per_component(16)
            .max_memory_size((manifest::MAX_MEMORY_MB as usize) << 20);
        let mut wasm = wasmtime::Config::new();
        wasm.epoch_interruption(true)
            .wasm_component_model(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm).map_err(err)?;

        // The ticker only holds a weak reference so dropping the runtime stops it.
        let weak = engine.weak();
        let tick = config.epoch_tick;
        std::thread::Builder::new()
            .name("ledgerhost-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(tick);
                }
            })
            .map_err(|e| RuntimeError(format!("cannot start the epoch ticker: {e}")))?;

        let mut linker: Linker<StoreData> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(err)?;
        ledgerhost_capabilities::wit::add_types_to_linker(&mut linker).map_err(err)?;
        capabilities
            .add_to_linker(&mut linker)
            .map_err(|(name, e)| RuntimeError(format!("capability `{name}`: {e}")))?;
        let cache = CompileCache::new(&engine, config.cache_dir.clone());
        Ok(Arc::new(Runtime {
            engine,
            linker,
            capabilities,
            config,
            cache,
        }))
    }
}
