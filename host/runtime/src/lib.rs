//! The WebAssembly runtime of ledgerhost.
//!
//! One [`Runtime`] per process holds the wasmtime engine (pooling allocator, epoch
//! interruption), a linker with WASI (empty sandbox) and the imports of every capability of
//! its [`CapabilitySet`], and the compile cache. [`Runtime::load`] turns a component and its [`manifest::Manifest`] into a
//! [`Plugin`]: a pre-instantiated component with one long-lived instance, rebuilt after a
//! trap; [`Instances`] holds the K instances of one version a manifest may ask for
//! (`subscription.instances`). The [`registry`] watches a plugin directory and swaps versions between batches.

mod bindings;
mod cache;
mod convert;
mod instances;
mod limits;
pub use ledgerhost_manifest as manifest;
mod plugin;
pub mod registry;
mod state;
mod trap;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use cache::CacheOutcome;
use cache::CompileCache;
pub use instances::Instances;
pub use ledgerhost_capabilities::{CapabilitySet, Ports};
pub use manifest::{Manifest, World};
pub use plugin::{CallError, HttpRequest, HttpResponse, Plugin, PluginStats};
pub use state::StoreData;

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

/// The runtime could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the WebAssembly runtime: {0}")]
pub struct RuntimeError(String);

/// A plugin was refused at load. The message says what and what to do.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The plugin's manifest is missing or invalid.
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    /// The component file could not be read.
    #[error("cannot read component {path}: {source}")]
    Read {
        /// Path of the component file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a WebAssembly component at all (our own checks of its header).
    #[error("{path} is not a valid WebAssembly component: {message}")]
    Invalid {
        /// Path of the component file.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
    /// wasmtime could not compile the component.
    #[error("{path} is not a valid WebAssembly component: {source}")]
    Compile {
        /// Path of the component file.
        path: PathBuf,
        /// wasmtime's error, with its chain.
        source: BoxError,
    },
    /// The linker could not satisfy the component's imports.
    #[error("{path}: {source}")]
    Link {
        /// Path of the component file.
        path: PathBuf,
        /// wasmtime's error, with its chain.
        source: BoxError,
    },
    /// The component imports something the host does not provide or did not grant.
    #[error("{path}: {message}")]
    Imports {
        /// Path of the component file.
        path: PathBuf,
        /// Which imports are wrong.
        message: String,
    },
    /// The component does not implement the world its manifest declares.
    #[error(
        "{path} does not implement world `{world}` of ledgerhost:plugin@0.2.0 (or 0.1.0): {source}"
    )]
    World {
        /// Path of the component file.
        path: PathBuf,
        /// The world named in the manifest.
        world: String,
        /// What is missing or mismatched (wasmtime's error, with its chain).
        source: BoxError,
    },
    /// The component failed to instantiate.
    #[error("{path}: instantiation failed: {source}")]
    Instantiate {
        /// Path of the component file.
        path: PathBuf,
        /// Why the first instance could not be built.
        source: CallError,
    },
}

/// An error from wasmtime kept as the source of a [`LoadError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The engine, linker and cache shared by every plugin.
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<StoreData>,
    pub(crate) capabilities: CapabilitySet,
    pub(crate) config: RuntimeConfig,
    cache: CompileCache,
}

impl Runtime {
    /// Builds the engine, starts the epoch ticker, links WASI and every capability's imports.
    /// `capabilities`: a built [`CapabilitySet`], or just the host's [`Ports`] (default
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

    /// Loads `wasm` with the manifest at `manifest_path`; `config_overrides` replace the
    /// manifest's `[config]` values. The component is compiled (or read from the cache),
    /// checked against its world and grants, and instantiated once before it is returned.
    pub async fn load(
        self: &Arc<Self>,
        wasm: &Path,
        manifest_path: &Path,
        config_overrides: &BTreeMap<String, String>,
    ) -> Result<Arc<Plugin>, LoadError> {
        let manifest = Manifest::load(manifest_path)?;
        let bytes = tokio::fs::read(wasm)
            .await
            .map_err(|source| LoadError::Read {
                path: wasm.to_path_buf(),
                source,
            })?;
        self.load_bytes(wasm, &bytes, manifest, config_overrides)
            .await
            .map(|(p, _)| p)
    }

    /// As [`Runtime::load`], from bytes and a parsed manifest; also says whether the compile
    /// cache was hit.
    pub async fn load_bytes(
        self: &Arc<Self>,
        path: &Path,
        bytes: &[u8],
        manifest: Manifest,
        config_overrides: &BTreeMap<String, String>,
    ) -> Result<(Arc<Plugin>, CacheOutcome), LoadError> {
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            return Err(LoadError::Invalid {
                path: path.to_path_buf(),
                message: "the file does not start with the WebAssembly magic bytes".into(),
            });
        }
        if bytes[4..8] != [0x0d, 0x00, 0x01, 0x00] {
            return Err(LoadError::Invalid {
                path: path.to_path_buf(),
                message: "this is a core module, not a component; build for wasm32-wasip2 \
                          (or wrap the module with `wasm-tools component new`)"
                    .into(),
            });
        }
        if let (Some(tables), Some(sub)) = (&self.config.tables, &manifest.subscription) {
            sub.tables_in(tables.iter().map(String::as_str))
                .map_err(|message| {
                    LoadError::Manifest(manifest::ManifestError::Invalid {
                        path: manifest.path().to_path_buf(),
                        message,
                    })
                })?;
        }
        let digest = CompileCache::digest(bytes);
        let this = self.clone();
        let owned = bytes.to_vec();
        let digest2 = digest.clone();
        let (component, outcome) =
            tokio::task::spawn_blocking(move || this.cache.load(&this.engine, &owned, &digest2))
                .await
                .map_err(|e| LoadError::Invalid {
                    path: path.to_path_buf(),
                    message: format!("compilation task failed: {e}"),
                })?
                .map_err(|e| LoadError::Compile {
                    path: path.to_path_buf(),
                    source: e.into(),
                })?;
        let plugin = Plugin::new(
            self.clone(),
            path,
            component,
            manifest,
            digest,
            config_overrides,
        )?;
        // Validate by instantiating once now, beside whatever version is serving.
        plugin
            .warm()
            .await
            .map_err(|source| LoadError::Instantiate {
                path: path.to_path_buf(),
                source,
            })?;
        Ok((Arc::new(plugin), outcome))
    }
}
