//! A loaded plugin version: its pre-instantiated component, its one long-lived instance
//! (rebuilt after a trap, a deadline or the memory cap), and its counters.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ledgerhost_capabilities::{InstanceStates, PluginInfo};
use ledgerhost_core::{Disposition, Event};
use wasmtime::Store;
use wasmtime::component::{Component, ResourceTable};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtxBuilder};

use crate::bindings::consumer::{Consumer, ConsumerPre};
use crate::bindings::consumer_v01::{Consumer as ConsumerV01, ConsumerPre as ConsumerV01Pre};
use crate::bindings::http::{HttpTrigger, HttpTriggerPre};
use crate::bindings::scheduled::{Scheduled, ScheduledPre};
use crate::bindings::{wit, wit02};
use crate::limits::MemoryLimiter;
use crate::manifest::{Manifest, World};
use crate::state::PluginState;
use crate::{LoadError, Runtime, convert};

/// Why a call into a plugin failed. The instance is rebuilt before the next call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The plugin trapped (panic, unreachable, bad memory access).
    #[error("plugin `{plugin}` trapped: {message}")]
    Trap {
        /// Name of the plugin.
        plugin: String,
        /// What went wrong, as reported by wasmtime or the plugin.
        message: String,
    },
    /// The call ran past the plugin's deadline and was interrupted.
    #[error("plugin `{plugin}` ran past its deadline of {deadline:?} (limits.deadline-ms)")]
    Deadline {
        /// Name of the plugin.
        plugin: String,
        /// The deadline that was exceeded (limits.deadline-ms).
        deadline: Duration,
    },
    /// The plugin tried to grow its memory past its limit.
    #[error("plugin `{plugin}` exceeded its memory limit of {limit_mb} MiB (limits.memory-mb)")]
    OutOfMemory {
        /// Name of the plugin.
        plugin: String,
        /// The memory limit, in MiB (limits.memory-mb).
        limit_mb: u64,
    },
    /// The plugin answered a batch with the wrong number of dispositions.
    #[error("plugin `{plugin}` returned {got} dispositions for {expected} events")]
    WrongDispositionCount {
        /// Name of the plugin.
        plugin: String,
        /// Number of events in the batch.
        expected: usize,
        /// Number of dispositions the plugin returned.
        got: usize,
    },
    /// The plugin returned an error for the whole call.
    #[error("plugin `{plugin}` reported a failure: {message}")]
    Failed {
        /// Name of the plugin.
        plugin: String,
        /// The error text the plugin returned.
        message: String,
    },
    /// The plugin was called through a world it does not implement.
    #[error("plugin `{plugin}` is not a {world:?} plugin")]
    WrongWorld {
        /// Name of the plugin.
        plugin: String,
        /// The world the plugin actually implements.
        world: World,
    },
    /// A fresh instance of the plugin could not be built.
    #[error("plugin `{plugin}` could not be instantiated: {message}")]
    Instantiate {
        /// Name of the plugin.
        plugin: String,
        /// What went wrong, as reported by wasmtime or the plugin.
        message: String,
    },
}

/// An HTTP request for an HTTP-triggered plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// HTTP method, e.g. "GET".
    pub method: String,
    /// Path below `/plugins/<name>`, starting with `/`.
    pub path: String,
    /// Query string without the leading `?`; empty if none.
    pub query: String,
    /// Request headers as (name, value) pairs, in received order.
    pub headers: Vec<(String, String)>,
    /// Request body bytes.
    pub body: Vec<u8>,
}

/// The plugin's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// HTTP status code.
    pub status: u16,
    /// Response headers as (name, value) pairs.
    pub headers: Vec<(String, String)>,
    /// Response body bytes.
    pub body: Vec<u8>,
}

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

#[derive(Clone)]
enum Pre {
    Consumer(ConsumerPre<PluginState>),
    /// A consumer built against the deprecated `ledgerhost:plugin@0.1.0`.
    ConsumerV01(ConsumerV01Pre<PluginState>),
    Scheduled(ScheduledPre<PluginState>),
    Http(HttpTriggerPre<PluginState>),
}

enum Exports {
    Consumer(Consumer),
    ConsumerV01(ConsumerV01),
    Scheduled(Scheduled),
    Http(HttpTrigger),
}

struct Live {
    store: Store<PluginState>,
    exports: Exports,
    stderr: MemoryOutputPipe,
}

/// A plugin has no clock: time stands still at the epoch unless the host passes it in.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// One loaded version of a plugin.
pub struct Plugin {
    runtime: Arc<Runtime>,
    manifest: Manifest,
    version: String,
    path: PathBuf,
    pre: Pre,
    /// Each registered capability's state for this plugin, in registration order; shared by
    /// the instances of one version ([`Plugin::sibling`]).
    capability_states: Arc<Vec<ledgerhost_capabilities::capability::PluginState>>,
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
        let capability_states = runtime
            .capabilities
            .iter()
            .map(|c| c.configure(&info))
            .collect::<Result<Vec<_>, _>>()
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
            capability_states: Arc::new(capability_states),
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
            capability_states: self.capability_states.clone(),
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
        let mut capabilities = InstanceStates::default();
        for (capability, state) in self
            .runtime
            .capabilities
            .iter()
            .zip(self.capability_states.iter())
        {
            capabilities.insert_boxed(capability.prepare(state));
        }
        let state = PluginState {
            capabilities,
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

    /// Hands a batch to a consumer; one disposition per event comes back, in order. A 0.2
    /// consumer gets one call per run of one table and writer schema (normally the whole
    /// batch), with only the columns, Avro and attributes its manifest asks for.
    pub async fn handle(&self, events: Vec<Event>) -> Result<Vec<Disposition>, CallError> {
        let expected = events.len();
        if let Pre::ConsumerV01(_) = self.pre {
            let wit_events: Vec<wit::Event> =
                events.into_iter().map(convert::event_to_wit).collect();
            return self.call_v01(expected, wit_events).await;
        }
        let mut batches: Vec<_> = convert::runs(events)
            .into_iter()
            .map(|run| self.layout(&run).batch(run, &self.selection))
            .collect();
        // An empty batch is still a call (as in 0.1): the plugin answers it with nothing.
        if batches.is_empty() {
            batches.push(wit02::Batch {
                table: String::new(),
                schema_fingerprint: String::new(),
                columns: Vec::new(),
                events: Vec::new(),
            });
        }
        let mut guard = self.begin().await?;
        let live = guard.as_mut().expect("instance built by begin");
        let Exports::Consumer(exports) = &live.exports else {
            return Err(CallError::WrongWorld {
                plugin: self.plugin_name(),
                world: self.manifest.world,
            });
        };
        let mut out = Vec::with_capacity(expected);
        for batch in &batches {
            let n = batch.events.len();
            let result = exports.call_handle(&mut live.store, batch).await;
            match result {
                Ok(d) if d.len() == n => {
                    out.extend(d.into_iter().map(convert::disposition_from_wit))
                }
                Ok(d) => {
                    self.end(live);
                    return Err(CallError::WrongDispositionCount {
                        plugin: self.plugin_name(),
                        expected: n,
                        got: d.len(),
                    });
                }
                Err(e) => {
                    self.end(live);
                    let err = self.failure(live, e);
                    *guard = None;
                    return Err(err);
                }
            }
        }
        self.end(live);
        Ok(out)
    }

    /// A batch through a 0.1 consumer: every event with its field names.
    async fn call_v01(
        &self,
        expected: usize,
        wit_events: Vec<wit::Event>,
    ) -> Result<Vec<Disposition>, CallError> {
        let mut guard = self.begin().await?;
        let live = guard.as_mut().expect("instance built by begin");
        let Exports::ConsumerV01(exports) = &live.exports else {
            return Err(CallError::WrongWorld {
                plugin: self.plugin_name(),
                world: self.manifest.world,
            });
        };
        let result = exports.call_handle(&mut live.store, &wit_events).await;
        self.end(live);
        match result {
            Ok(d) if d.len() == expected => {
                Ok(d.into_iter().map(convert::disposition_from_wit).collect())
            }
            Ok(d) => Err(CallError::WrongDispositionCount {
                plugin: self.plugin_name(),
                expected,
                got: d.len(),
            }),
            Err(e) => {
                let err = self.failure(live, e);
                *guard = None;
                Err(err)
            }
        }
    }

    /// One tick of a scheduled plugin; `now_micros` is the host's clock.
    pub async fn tick(&self, now_micros: i64) -> Result<(), CallError> {
        let mut guard = self.begin().await?;
        let live = guard.as_mut().expect("instance built by begin");
        let Exports::Scheduled(exports) = &live.exports else {
            return Err(CallError::WrongWorld {
                plugin: self.plugin_name(),
                world: self.manifest.world,
            });
        };
        let result = exports.call_tick(&mut live.store, now_micros).await;
        self.end(live);
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(CallError::Failed {
                plugin: self.plugin_name(),
                message,
            }),
            Err(e) => {
                let err = self.failure(live, e);
                *guard = None;
                Err(err)
            }
        }
    }

    /// One request to an HTTP-triggered plugin.
    pub async fn http(&self, request: HttpRequest) -> Result<HttpResponse, CallError> {
        let mut guard = self.begin().await?;
        let live = guard.as_mut().expect("instance built by begin");
        let Exports::Http(exports) = &live.exports else {
            return Err(CallError::WrongWorld {
                plugin: self.plugin_name(),
                world: self.manifest.world,
            });
        };
        let req = wit::HttpRequest {
            method: request.method,
            path: request.path,
            query: request.query,
            headers: request.headers,
            body: request.body,
        };
        let started = Instant::now();
        let result = exports.call_handle_request(&mut live.store, &req).await;
        self.end(live);
        tracing::debug!(
            plugin = self.manifest.name,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "http call"
        );
        match result {
            Ok(r) => Ok(HttpResponse {
                status: r.status,
                headers: r.headers,
                body: r.body,
            }),
            Err(e) => {
                let err = self.failure(live, e);
                *guard = None;
                Err(err)
            }
        }
    }
}

/// Refuses components that import what the manifest does not grant, or what this host
/// does not provide, with a message naming the fix. The registered capabilities say which
/// interface each provides and which grant it needs.
fn check_imports(
    runtime: &Runtime,
    path: &Path,
    component: &Component,
    manifest: &Manifest,
) -> Result<(), LoadError> {
    let refuse = |message: String| LoadError::Imports {
        path: path.to_path_buf(),
        message,
    };
    let grants = manifest.grants.to_map();
    let known: Vec<&str> = runtime
        .capabilities
        .iter()
        .filter_map(|c| c.grant().map(|g| g.key))
        .collect();
    if let Some(unknown) = grants.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(refuse(format!(
            "{}.toml: `grants.{unknown}` is not a grant of this host (it knows {})",
            manifest.name,
            known.join(", ")
        )));
    }
    let ty = component.component_type();
    for (name, _) in ty.imports(&runtime.engine) {
        if ledgerhost_capabilities::wit::TYPES_INTERFACES
            .iter()
            .any(|t| name.starts_with(t))
        {
            continue;
        }
        let provider = runtime
            .capabilities
            .iter()
            .find(|c| c.interfaces().iter().any(|i| name.starts_with(i)));
        if let Some(capability) = provider {
            if let Some(grant) = capability.grant()
                && capability.import_needs_grant()
                && grants.get(grant.key).is_none_or(|g| g.is_empty())
            {
                return Err(refuse(format!(
                    "imports `{name}` but its manifest grants none: add the {what} it needs to \
                     `grants.{key}` in {}.toml",
                    manifest.name,
                    what = grant.what,
                    key = grant.key,
                )));
            }
            continue;
        }
        if name.starts_with("wasi:") {
            // WASI itself (an empty sandbox), linked by the runtime; the linker refuses the
            // interfaces it lacks.
            continue;
        }
        let unversioned = |n: &str| n.split('@').next().unwrap_or(n).to_string();
        let other_version = runtime.capabilities.iter().any(|c| {
            c.interfaces()
                .iter()
                .any(|i| unversioned(i) == unversioned(name))
        });
        if other_version {
            return Err(refuse(format!(
                "imports `{name}`; this host provides ledgerhost:plugin@0.2.0 (and 0.1.0), rebuild the plugin against 0.2.0"
            )));
        }
        let hint = if name.starts_with("ledgerhost:plugin/") {
            " (this host provides ledgerhost:plugin@0.2.0 and 0.1.0; rebuild the plugin against 0.2.0)"
        } else {
            ""
        };
        return Err(refuse(format!(
            "imports `{name}`, which ledgerhost does not provide{hint}"
        )));
    }
    Ok(())
}
