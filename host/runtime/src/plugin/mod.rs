//! A loaded plugin version: its pre-instantiated component, its one long-lived instance
//! (rebuilt after a trap, a deadline or the memory cap), and its counters.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ledgerhost_capabilities::{PluginCapabilities, PluginInfo};
use ledgerhost_core::Event;
use wasmtime::Store;
use wasmtime::component::{Component, ResourceTable};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use crate::bindings::consumer::ConsumerPre;
use crate::bindings::consumer_v01::ConsumerPre as ConsumerV01Pre;
use crate::bindings::http::HttpTriggerPre;
use crate::bindings::scheduled::ScheduledPre;
use crate::convert;
use crate::engine::Runtime;
use crate::error::LoadError;
use crate::limits::MemoryLimiter;
use crate::state::StoreData;
use ledgerhost_manifest::{Manifest, World};

mod calls;
mod error;
mod http;
mod imports;
mod instance;
mod load;

pub use error::CallError;
pub use http::{HttpRequest, HttpResponse};

use imports::check_imports;
use instance::{Exports, FrozenClock, Live, Pre};

/// 0.2 batch layouts by (table, writer-schema fingerprint, field count).
type LayoutCache = HashMap<(String, String, usize), Arc<convert::Layout>>;

/// Counters of one plugin version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginStats {
    /// Calls made into the plugin.
    pub calls: u64,
    /// Calls that ended in a trap.
    pub traps: u64,
    /// Calls interrupted at their deadline.
    pub deadline_hits: u64,
    /// Calls that hit the memory limit.
    pub out_of_memory: u64,
    /// Instances built after the first (after a trap, deadline or memory cap).
    pub rebuilds: u64,
    /// Largest linear memory any instance reached, in bytes.
    pub memory_high_water: u64,
    /// Message of the most recent failure, if any.
    pub last_error: Option<String>,
}

/// One loaded version of a plugin.
pub struct Plugin {
    runtime: Arc<Runtime>,
    manifest: Manifest,
    version: String,
    path: PathBuf,
    pre: Pre,
    /// What each capability keeps for this version; shared by the instances of one version
    /// ([`Plugin::sibling`]).
    capabilities: Arc<PluginCapabilities>,
    live: tokio::sync::Mutex<Option<Live>>,
    /// What a 0.2 consumer's manifest asks to receive.
    selection: convert::Selection,
    /// 0.2 batch layouts by (table, writer-schema fingerprint, field count), for events
    /// whose Avro carried their schema; shared by the siblings of this version.
    layouts: Arc<Mutex<LayoutCache>>,
    instances_built: AtomicU64,
    /// Shared by the instances of one version: the version's counters are their sum.
    stats: Arc<Mutex<PluginStats>>,
}

impl Plugin {
    pub(crate) fn new(
        runtime: Arc<Runtime>,
        path: &Path,
        component: Component,
        manifest: Manifest,
        digest: String,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Plugin, LoadError> {
        check_imports(&runtime, path, &component, &manifest)?;
        let instance_pre =
            runtime
                .linker
                .instantiate_pre(&component)
                .map_err(|e| LoadError::Link {
                    path: path.to_path_buf(),
                    source: e.into(),
                })?;
        let world_err = |world: &str, e: wasmtime::Error| LoadError::World {
            path: path.to_path_buf(),
            world: world.to_string(),
            source: e.into(),
        };
        let pre = match manifest.world {
            // 0.2 first; a component whose `handle` takes 0.1's `list<event>` is served by
            // the 0.1 path, with one deprecation line.
            World::Consumer => match ConsumerPre::new(instance_pre.clone()) {
                Ok(pre) => Pre::Consumer(pre),
                Err(e02) => match ConsumerV01Pre::new(instance_pre) {
                    Ok(pre) => {
                        tracing::warn!(
                            plugin = manifest.name,
                            "plugin `{}` is built against ledgerhost:plugin@0.1.0, which is \
                             deprecated: rebuild it against 0.2.0 (see docs/plugin-authors.md, \
                             \"Moving to contract 0.2\")",
                            manifest.name
                        );
                        Pre::ConsumerV01(pre)
                    }
                    Err(_) => return Err(world_err("consumer", e02)),
                },
            },
            World::Scheduled => Pre::Scheduled(
                ScheduledPre::new(instance_pre).map_err(|e| world_err("scheduled", e))?,
            ),
            World::HttpTrigger => Pre::Http(
                HttpTriggerPre::new(instance_pre).map_err(|e| world_err("http-trigger", e))?,
            ),
        };
        let mut config = manifest.config.clone();
        for (k, v) in overrides {
            if manifest.grants.allows("config", k) {
                config.insert(k.clone(), v.clone());
            } else {
                tracing::warn!(
                    plugin = manifest.name,
                    key = k,
                    "config override ignored: the manifest does not grant this key"
                );
            }
        }
        let grants = manifest.grants.to_map();
        let info = PluginInfo {
            name: &manifest.name,
            grants: &grants,
            config: &config,
        };
        let capabilities =
            runtime
                .capabilities
                .configure(&info)
                .map_err(|message| LoadError::Imports {
                    path: path.to_path_buf(),
                    message,
                })?;
        let selection = manifest
            .subscription
            .as_ref()
            .map(|s| convert::Selection {
                columns: s.columns.clone(),
                avro: s.avro,
                attributes: s.attributes,
            })
            .unwrap_or_default();
        Ok(Plugin {
            selection,
            layouts: Arc::default(),
            version: digest[..12.min(digest.len())].to_string(),
            capabilities: Arc::new(capabilities),
            runtime,
            manifest,
            path: path.to_path_buf(),
            pre,
            live: tokio::sync::Mutex::new(None),
            instances_built: AtomicU64::new(0),
            stats: Arc::default(),
        })
    }

    /// Another instance of this version (`subscription.instances`): the same pre-instantiated
    /// component, manifest and capability state, its own store and limits (built at its first
    /// call, rebuilt after its own traps), counters shared with this one.
    pub fn sibling(&self) -> Plugin {
        Plugin {
            runtime: self.runtime.clone(),
            manifest: self.manifest.clone(),
            version: self.version.clone(),
            path: self.path.clone(),
            pre: self.pre.clone(),
            selection: self.selection.clone(),
            layouts: self.layouts.clone(),
            capabilities: self.capabilities.clone(),
            live: tokio::sync::Mutex::new(None),
            instances_built: AtomicU64::new(0),
            stats: self.stats.clone(),
        }
    }

    /// The manifest this version was loaded with.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Short hex digest of the component: identifies the version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The component file this version was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A copy of the counters.
    pub fn stats(&self) -> PluginStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn plugin_name(&self) -> String {
        self.manifest.name.clone()
    }

    async fn instantiate(&self) -> Result<Live, CallError> {
        let stderr = MemoryOutputPipe::new(64 * 1024);
        let wasi = WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = StoreData {
            capabilities: self.runtime.capabilities.prepare(&self.capabilities),
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new((self.manifest.limits.memory_mb as usize) << 20),
            ticks_left: self.deadline_ticks(),
        };
        let mut store = Store::new(&self.runtime.engine, state);
        store.limiter(|s| &mut s.limiter);
        // Every epoch tick: out of ticks → trap (the deadline); otherwise yield to tokio and
        // go on, so a long call shares its thread with the rest of the host.
        store.epoch_deadline_callback(|mut ctx| {
            let state = ctx.data_mut();
            if state.ticks_left == 0 {
                return Ok(wasmtime::UpdateDeadline::Interrupt);
            }
            state.ticks_left -= 1;
            Ok(wasmtime::UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        });
        store.set_epoch_deadline(1);
        let err = |e: wasmtime::Error| CallError::Instantiate {
            plugin: self.plugin_name(),
            message: e.to_string(),
        };
        let exports = match &self.pre {
            Pre::Consumer(p) => {
                Exports::Consumer(p.instantiate_async(&mut store).await.map_err(err)?)
            }
            Pre::ConsumerV01(p) => {
                Exports::ConsumerV01(p.instantiate_async(&mut store).await.map_err(err)?)
            }
            Pre::Scheduled(p) => {
                Exports::Scheduled(p.instantiate_async(&mut store).await.map_err(err)?)
            }
            Pre::Http(p) => Exports::Http(p.instantiate_async(&mut store).await.map_err(err)?),
        };
        if self.instances_built.fetch_add(1, Ordering::Relaxed) > 0 {
            self.stats
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .rebuilds += 1;
        }
        Ok(Live {
            store,
            exports,
            stderr,
        })
    }

    fn deadline_ticks(&self) -> u64 {
        let tick = self.runtime.config.epoch_tick.as_millis().max(1) as u64;
        // One extra tick: the current one may be about to end.
        self.manifest.limits.deadline_ms.div_ceil(tick) + 1
    }

    /// Builds the instance now (validation at load time, and benchmarks).
    pub async fn warm(&self) -> Result<(), CallError> {
        let mut guard = self.live.lock().await;
        if guard.is_none() {
            *guard = Some(self.instantiate().await?);
        }
        Ok(())
    }

    /// Drops the instance, as a trap would; the next call builds a new one.
    pub async fn reset(&self) {
        *self.live.lock().await = None;
    }

    /// Turns a failed call into a [`CallError`] and records it.
    fn failure(&self, live: &Live, e: wasmtime::Error) -> CallError {
        let plugin = self.plugin_name();
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let err = if matches!(
            e.downcast_ref::<wasmtime::Trap>(),
            Some(wasmtime::Trap::Interrupt)
        ) {
            stats.deadline_hits += 1;
            CallError::Deadline {
                plugin,
                deadline: Duration::from_millis(self.manifest.limits.deadline_ms),
            }
        } else if live.store.data().limiter.denied {
            stats.out_of_memory += 1;
            CallError::OutOfMemory {
                plugin,
                limit_mb: self.manifest.limits.memory_mb,
            }
        } else {
            stats.traps += 1;
            let stderr = live.stderr.contents();
            CallError::Trap {
                message: crate::trap::reason(&plugin, &e, &String::from_utf8_lossy(&stderr)),
                plugin,
            }
        };
        stats.last_error = Some(err.to_string());
        err
    }

    /// Takes the live instance (building it if needed) and prepares it for one call.
    async fn begin(&self) -> Result<tokio::sync::MutexGuard<'_, Option<Live>>, CallError> {
        let mut guard = self.live.lock().await;
        if guard.is_none() {
            *guard = Some(self.instantiate().await?);
        }
        if let Some(live) = guard.as_mut() {
            live.store.data_mut().ticks_left = self.deadline_ticks();
            live.store.set_epoch_deadline(1);
            live.store.data_mut().limiter.denied = false;
        }
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.calls += 1;
        Ok(guard)
    }

    fn end(&self, live: &Live) {
        let hw = live.store.data().limiter.high_water as u64;
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.memory_high_water = stats.memory_high_water.max(hw);
    }

    /// Whether this version is a consumer built against the deprecated contract 0.1.
    pub fn is_contract_v01(&self) -> bool {
        matches!(self.pre, Pre::ConsumerV01(_))
    }

    /// The 0.2 layout of a run: cached by table and writer schema when the events' Avro
    /// names its schema, else derived from the run itself.
    fn layout(&self, run: &[Event]) -> Arc<convert::Layout> {
        let first = &run[0];
        // The field count too: an event built in a test may carry fields its Avro lacks.
        let cache_key = (
            first.table.clone(),
            first.schema_fingerprint.clone(),
            first.fields.len(),
        );
        if let Some(l) = self
            .layouts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&cache_key)
        {
            return l.clone();
        }
        match ledgerhost_avro::table_schema_of(&first.avro) {
            Ok(table) => {
                let layout = Arc::new(convert::Layout::new(
                    first,
                    run,
                    Some(&table),
                    &self.selection,
                ));
                let mut cache = self.layouts.lock().unwrap_or_else(|e| e.into_inner());
                // Schemas change rarely; a bound keeps a long-lived plugin's cache small.
                if cache.len() >= 64 {
                    cache.clear();
                }
                cache.insert(cache_key, layout.clone());
                layout
            }
            Err(_) => Arc::new(convert::Layout::new(first, run, None, &self.selection)),
        }
    }
}
