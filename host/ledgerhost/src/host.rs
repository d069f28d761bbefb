//! Wiring: builds the ports from the config, starts the registry, one poller per table, one
//! dispatcher per consumer plugin, the scheduler and the admin HTTP port, and drains them
//! on shutdown.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ledgerhost_avro::Decoder;
use ledgerhost_core::source::TableSpec;
use ledgerhost_runtime::manifest::{World, names};
use ledgerhost_runtime::registry::{PluginSlot, Registry, RegistryEvent};
use ledgerhost_runtime::{Plugin, Runtime, RuntimeConfig};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::backends::Backends;
use crate::config::{Config, TableConfig};
use crate::dispatcher::{Dispatcher, EventFilter, SubscriptionPlan};
use crate::metrics::{Metrics, now_micros};
use crate::poller::fleet::Fleet;
use crate::poller::partitions::PartitionReads;
use crate::poller::{Poller, PollerSettings};
use crate::watermark::WatermarkStore;

/// A running host, as returned by [`Host::start`].
pub struct Host {
    /// The configuration the host was started with.
    pub config: Config,
    /// The ports the host runs on.
    pub backends: Backends,
    /// Counters of tables and plugins, served on the admin port.
    pub metrics: Arc<Metrics>,
    /// The loaded plugins, kept in sync with the plugin directory.
    pub registry: Arc<Registry>,
    /// Where the admin HTTP port listens.
    pub admin_addr: std::net::SocketAddr,
    shutdown_tx: watch::Sender<bool>,
    ready: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    plugin_tasks: Arc<tokio::sync::Mutex<BTreeMap<String, PluginTask>>>,
}

struct PluginTask {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
    plan_key: String,
}

/// Plugin files the registry refused, by plugin name: (file, reason). Shown by `/status`.
type Refused = Arc<std::sync::Mutex<BTreeMap<String, (String, String)>>>;

impl Host {
    /// Starts everything. Fails with a precise message if a backend or table is unusable.
    pub async fn start(config: Config) -> anyhow::Result<Host> {
        create_directories(&config)?;
        let backends = Backends::connect(&config).await?;
        // Tables first: a table that cannot be captured stops the start with its fix.
        let tables = prepare_tables(&config, &backends).await?;
        let (registry, events) = start_registry(&config, &backends).await?;
        let metrics = Arc::new(Metrics::default());
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let refused = Refused::default();
        let history = Arc::new(crate::history::History::default());
        let sampler =
            crate::history::spawn_sampler(history.clone(), metrics.clone(), shutdown_rx.clone());
        let (admin_addr, admin_task) = crate::admin::serve(
            &config.admin.listen,
            crate::admin::AdminState {
                metrics: metrics.clone(),
                registry: registry.clone(),
                ready: ready.clone(),
                refused: refused.clone(),
                probes: Arc::new(backends.probes.clone()),
                source: backends.source.clone(),
                history,
            },
            shutdown_rx.clone(),
        )
        .await?;
        let mut host = Host {
            config,
            backends,
            metrics,
            registry,
            admin_addr,
            shutdown_tx,
            ready,
            tasks: vec![admin_task, sampler],
            plugin_tasks: Arc::default(),
        };
        let decoder = Arc::new(Decoder::new());
        host.start_present_plugins(&decoder).await;
        let watcher = host.follow_registry(events, decoder, refused, shutdown_rx.clone());
        host.tasks.push(watcher);
        host.start_pollers(tables, &shutdown_rx).await?;
        host.ready.store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(admin = %host.admin_addr, tables = host.config.tables.len(), plugins = host.registry.plugins().len(), "ledgerhost ready");
        Ok(host)
    }

    /// Subscriptions of the plugins present at start exist before the first poll, so the
    /// bootstrap scan reaches them.
    async fn start_present_plugins(&self, decoder: &Arc<Decoder>) {
        for plugin in self.registry.plugins() {
            self.start_plugin(&plugin, decoder).await;
        }
    }

    /// Follows registry events while running: load, swap, unload, refusals (for `/status`).
    fn follow_registry(
        &self,
        mut events: mpsc::UnboundedReceiver<RegistryEvent>,
        decoder: Arc<Decoder>,
        refused: Refused,
        mut shutdown: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let ctx = self.plugin_context(decoder);
        let registry = self.registry.clone();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    e = events.recv() => e,
                    _ = shutdown.changed() => None,
                };
                let Some(event) = event else { break };
                note_refusal(&refused, &event);
                match event {
                    RegistryEvent::Loaded(p) => {
                        tracing::info!(
                            plugin = p.manifest().name,
                            version = p.version(),
                            "plugin loaded"
                        );
                        ctx.ensure_running(&registry, &p).await;
                    }
                    RegistryEvent::Replaced { old, new } => {
                        tracing::info!(
                            plugin = new.manifest().name,
                            from = old.version(),
                            to = new.version(),
                            "plugin swapped"
                        );
                        ctx.ensure_running(&registry, &new).await;
                    }
                    RegistryEvent::Removed(name) => {
                        tracing::info!(plugin = name, "plugin removed");
                        ctx.stop(&name).await;
                    }
                    RegistryEvent::Refused { path, error } => {
                        tracing::error!(path = %path.display(), error, "plugin refused; the previous version (if any) keeps running");
                    }
                }
            }
        })
    }

    /// One poller task per prepared table.
    async fn start_pollers(
        &mut self,
        tables: Vec<(TableConfig, TableSpec)>,
        shutdown: &watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let watermarks = WatermarkStore::open(&self.config.host.data_dir.join("watermarks"))
            .context("cannot open the watermark directory")?;
        let replica = self.config.replica_id();
        let ttl = Duration::from_millis(self.config.host.lease_ttl_ms);
        // The fleet view exists only when some table is sharded or shares its change
        // stream's partitions: other tables keep one lease each and no membership
        // transactions.
        let fleet = if tables
            .iter()
            .any(|(t, spec)| spec.sharding.count > 1 || t.share_partitions)
        {
            let fleet = Fleet::new(&replica);
            // Joined before any shard poller tries a lease, so a replica starting beside
            // others does not see itself alone and take every shard.
            fleet.refresh(self.backends.source.as_ref(), ttl).await;
            self.tasks.push(tokio::spawn(fleet.clone().run(
                self.backends.source.clone(),
                ttl,
                shutdown.clone(),
            )));
            Some(fleet)
        } else {
            None
        };
        for (t, spec) in tables {
            let start = t
                .start_from()
                .map_err(|e| anyhow::anyhow!("tables.{}.start {e}", t.name))?;
            for index in 0..spec.sharding.count {
                let shard = spec.sharding.shard(index);
                let stats = self.metrics.shard(&t.name, &shard);
                let settings = PollerSettings {
                    topic: self.config.topic_for(&t.name),
                    interval: t.interval(),
                    page_size: t.page_size,
                    start: start.clone(),
                    replica: replica.clone(),
                    lease_ttl: ttl,
                    ordering: self.config.ledger.ordering(),
                    shard,
                    spec: spec.clone(),
                };
                let mut poller = Poller::new(
                    settings,
                    self.backends.source.clone(),
                    self.backends.ledger.clone(),
                    watermarks.clone(),
                    stats,
                );
                if let Some(fleet) = &fleet {
                    poller = poller.with_fleet(fleet.clone());
                }
                if let (Some(stream), Some(port)) =
                    (&t.change_stream, &self.backends.change_capture)
                {
                    poller = poller.with_change_stream(port.clone(), stream.clone());
                    if let (true, Some(fleet)) = (t.share_partitions, &fleet) {
                        poller = poller.with_shared_partitions();
                        let reads = PartitionReads::new(
                            &t.name,
                            stream,
                            port.clone(),
                            self.backends.source.clone(),
                            fleet.clone(),
                            &replica,
                            ttl,
                            self.metrics.shard(&t.name, &spec.sharding.shard(index)),
                        );
                        self.tasks.push(tokio::spawn(reads.run(shutdown.clone())));
                    }
                }
                let rx = shutdown.clone();
                self.tasks.push(tokio::spawn(async move {
                    // The poller logs its own fatal error; other tables go on.
                    let _ = poller.run(rx).await;
                }));
            }
        }
        Ok(())
    }

    fn plugin_context(&self, decoder: Arc<Decoder>) -> PluginContext {
        PluginContext {
            config: self.config.clone(),
            backends: self.backends.clone(),
            metrics: self.metrics.clone(),
            decoder,
            tasks: self.plugin_tasks.clone(),
        }
    }

    async fn start_plugin(&self, plugin: &Arc<Plugin>, decoder: &Arc<Decoder>) {
        self.plugin_context(decoder.clone())
            .ensure_running(&self.registry, plugin)
            .await;
    }

    /// A receiver that turns true when shutdown starts.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown_tx.subscribe()
    }

    /// Stops pollers and dispatchers, letting in-flight batches finish within the drain
    /// timeout. Returns false if something had to be abandoned.
    pub async fn shutdown(self) -> bool {
        self.ready
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let _ = self.shutdown_tx.send(true);
        let timeout = Duration::from_millis(self.config.host.drain_timeout_ms);
        let mut handles = self.tasks;
        {
            let mut tasks = self.plugin_tasks.lock().await;
            for (_, t) in std::mem::take(&mut *tasks) {
                let _ = t.stop.send(true);
                handles.push(t.handle);
            }
        }
        let all = futures_join_all(handles);
        let drained = match tokio::time::timeout(timeout, all).await {
            Ok(()) => true,
            Err(_) => {
                tracing::error!(
                    timeout_ms = timeout.as_millis() as u64,
                    "drain timed out; unfinished batches will be redelivered"
                );
                false
            }
        };
        if let Err(e) = self.backends.ledger.release().await {
            tracing::warn!(error = %e, "cannot hand held deliveries back; they return after their ack deadline");
        }
        drained
    }
}

async fn futures_join_all(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

/// The data and plugin directories exist.
fn create_directories(config: &Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.host.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.host.data_dir.display()
        )
    })?;
    std::fs::create_dir_all(&config.host.plugin_dir).with_context(|| {
        format!(
            "cannot create the plugin directory {}",
            config.host.plugin_dir.display()
        )
    })
}

/// What the source needs to know of a configured table.
fn spec_of(t: &TableConfig) -> TableSpec {
    TableSpec {
        name: t.name.clone(),
        commit_ts_column: t.commit_ts_column.clone(),
        deleted_column: t.deleted_column.clone(),
        sharding: t.sharding(),
    }
}

/// Prepares every configured table for capture and creates its topic.
async fn prepare_tables(
    config: &Config,
    backends: &Backends,
) -> anyhow::Result<Vec<(TableConfig, TableSpec)>> {
    let mut tables = Vec::new();
    for t in &config.tables {
        let spec = spec_of(t);
        match (&t.change_stream, &backends.change_capture) {
            (None, _) => backends.source.prepare_table(&spec).await,
            (Some(stream), Some(capture)) => capture.prepare_stream(&spec, stream).await,
            (Some(_), None) => anyhow::bail!(
                "table `{}`: capture = \"change-stream\" needs a source with change streams \
                 (Spanner); the {} source is polled by commit timestamp",
                t.name,
                backends.source.backend()
            ),
        }
        .with_context(|| format!("table `{}` cannot be captured", t.name))?;
        backends
            .ledger
            .ensure_topic(&config.topic_for(&t.name))
            .await
            .with_context(|| format!("cannot create the topic of table `{}`", t.name))?;
        tables.push((t.clone(), spec));
    }
    Ok(tables)
}

/// The WebAssembly runtime on the capability ports, and the registry watching the plugin
/// directory (its events drive [`Host::follow_registry`]).
async fn start_registry(
    config: &Config,
    backends: &Backends,
) -> anyhow::Result<(Arc<Registry>, mpsc::UnboundedReceiver<RegistryEvent>)> {
    let runtime = Runtime::new(
        RuntimeConfig {
            cache_dir: Some(config.host.data_dir.join("component-cache")),
            tables: Some(config.tables.iter().map(|t| t.name.clone()).collect()),
            ..RuntimeConfig::default()
        },
        backends.capabilities(),
    )
    .context("cannot start the WebAssembly runtime")?;
    let overrides: BTreeMap<String, BTreeMap<String, String>> = config
        .plugins
        .iter()
        .map(|(k, v)| (k.clone(), v.config.clone()))
        .collect();
    let (registry, events) = Registry::start(runtime, config.host.plugin_dir.clone(), overrides)
        .await
        .with_context(|| {
            format!(
                "cannot watch the plugin directory {}",
                config.host.plugin_dir.display()
            )
        })?;
    Ok((Arc::new(registry), events))
}

/// Keeps the refused-files map of `/status` in step with a registry event.
fn note_refusal(refused: &Refused, event: &RegistryEvent) {
    let mut r = refused.lock().unwrap_or_else(|e| e.into_inner());
    match event {
        RegistryEvent::Loaded(p) => {
            r.remove(&p.manifest().name);
        }
        RegistryEvent::Replaced { new, .. } => {
            r.remove(&new.manifest().name);
        }
        RegistryEvent::Removed(name) => {
            r.remove(name);
        }
        RegistryEvent::Refused { path, error } => {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            r.insert(name, (path.display().to_string(), error.clone()));
        }
    }
}

/// What starting and stopping plugin tasks needs; cloned into the registry-event task.
#[derive(Clone)]
struct PluginContext {
    config: Config,
    backends: Backends,
    metrics: Arc<Metrics>,
    decoder: Arc<Decoder>,
    tasks: Arc<tokio::sync::Mutex<BTreeMap<String, PluginTask>>>,
}

impl PluginContext {
    /// The host's captured tables, in config order (what `subscription.tables = ["*"]`
    /// means).
    fn table_names(&self) -> Vec<&str> {
        self.config.tables.iter().map(|t| t.name.as_str()).collect()
    }

    /// The subscription plans of a consumer plugin: one per table it reads
    /// (`subscription.table`, or each of `subscription.tables`), or one for its `topic`.
    /// Names from [`names::subscription_name`]; the dead-letter topic is the plugin's.
    fn plans(&self, plugin: &Plugin) -> anyhow::Result<Vec<SubscriptionPlan>> {
        let m = plugin.manifest();
        let sub = m
            .subscription
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("consumer plugin `{}` has no [subscription]", m.name))?;
        // Checked at load too (the runtime knows the tables); here `*` is expanded.
        let tables = sub
            .tables_in(self.table_names())
            .map_err(|e| anyhow::anyhow!("plugin `{}` refused: {}.toml: {e}", m.name, m.name))?;
        // (topic, table it carries, the table its names carry: `tables` only)
        let sources: Vec<(String, Option<String>, Option<String>)> = match (&sub.topic, &sub.table)
        {
            (Some(topic), _) => vec![(topic.clone(), None, None)],
            // One `table`: the names it always had, so an upgrade keeps its cursor.
            (None, Some(table)) => {
                vec![(self.config.topic_for(table), Some(table.clone()), None)]
            }
            (None, None) => tables
                .into_iter()
                .map(|t| (self.config.topic_for(&t), Some(t.clone()), Some(t)))
                .collect(),
        };
        if sources.is_empty() {
            anyhow::bail!(
                "plugin `{}`: `subscription.tables = [\"*\"]` but the host config has no \
                 [[tables]]",
                m.name
            );
        }
        // Parsed (and refused if bad) when the manifest was loaded.
        let filter = EventFilter::from(sub.filter.clone());
        Ok(sources
            .into_iter()
            .map(|(topic, table, per_table)| SubscriptionPlan {
                plugin: m.name.clone(),
                subscription: names::subscription_name(&m.name, per_table.as_deref()),
                dead_letter_topic: names::dead_letter_topic(&m.name, per_table.as_deref()),
                topic,
                table,
                filter: filter.clone(),
                batch_size: sub.batch_size,
                max_wait: Duration::from_millis(sub.max_wait_ms),
                max_attempts: sub.max_attempts,
                backoff_initial: Duration::from_millis(sub.backoff_initial_ms),
                backoff_max: Duration::from_millis(sub.backoff_max_ms),
                ack_deadline: Duration::from_millis(self.config.ledger.ack_deadline_ms),
            })
            .collect())
    }

    /// Refuses a `subscription.columns` entry a subscribed table does not have (naming it,
    /// the table and the table's columns): with several tables, every one of them must have
    /// every named column. Only for configured tables: a topic's schema is known only from
    /// its messages, where a missing column is just not sent.
    async fn check_columns(
        &self,
        plugin: &Plugin,
        plans: &[SubscriptionPlan],
    ) -> anyhow::Result<()> {
        let m = plugin.manifest();
        let Some(sub) = &m.subscription else {
            return Ok(());
        };
        if sub.columns.is_none() {
            return Ok(());
        }
        let mut snapshot = None;
        for table in plans.iter().filter_map(|p| p.table.as_deref()) {
            let Some(t) = self.config.tables.iter().find(|t| t.name == table) else {
                continue;
            };
            let snapshot = match &mut snapshot {
                Some(s) => s,
                None => snapshot.insert(self.backends.source.snapshot().await?),
            };
            let schema = snapshot
                .schema(&spec_of(t))
                .await
                .with_context(|| format!("cannot read the schema of table `{table}`"))?;
            sub.check_columns(table, schema.columns.iter().map(|c| c.name.as_str()))
                .map_err(|e| {
                    anyhow::anyhow!("plugin `{}` refused: {}.toml: {e}", m.name, m.name)
                })?;
        }
        Ok(())
    }

    /// Starts the plugin's task, or restarts it when its subscription or schedule changed.
    async fn ensure_running(&self, registry: &Arc<Registry>, plugin: &Arc<Plugin>) {
        let name = plugin.manifest().name.clone();
        let Some(slot) = registry.slot(&name) else {
            return;
        };
        let plan_key = format!("{:?}", plugin.manifest().subscription)
            + &format!("{:?}", plugin.manifest().schedule);
        {
            let tasks = self.tasks.lock().await;
            if let Some(t) = tasks.get(&name)
                && t.plan_key == plan_key
                && !t.handle.is_finished()
            {
                // Same subscription: the loop picks the new version at its next batch.
                return;
            }
        }
        self.stop(&name).await;
        // The topics a plugin may publish to exist before it runs (wildcards are created by
        // the plugin itself through `create-topic`).
        for topic in plugin.manifest().grants.topics() {
            if !topic.ends_with('*')
                && let Err(e) = self.backends.ledger.ensure_topic(topic).await
            {
                tracing::warn!(plugin = name, topic, error = %e, "cannot create a granted topic");
            }
        }
        let (stop, stop_rx) = watch::channel(false);
        let handle = match plugin.manifest().world {
            World::Consumer => match self.start_consumer(slot, plugin, stop_rx).await {
                Ok(h) => h,
                Err(e) => {
                    tracing::error!(plugin = name, error = %format!("{e:#}"), "cannot start the plugin's subscription");
                    return;
                }
            },
            World::Scheduled => self.start_scheduled(slot, plugin, stop_rx),
            // Served by the admin HTTP port on demand.
            World::HttpTrigger => return,
        };
        self.tasks.lock().await.insert(
            name,
            PluginTask {
                stop,
                handle,
                plan_key,
            },
        );
    }

    /// One dispatcher per subscription of the plugin, all in one task (stopped, drained
    /// and restarted together). They share one serving handler: the plugin's K instances
    /// (`subscription.instances`) serve all its tables, and a hot swap replaces them between
    /// batches of every subscription.
    async fn start_consumer(
        &self,
        slot: Arc<PluginSlot>,
        plugin: &Arc<Plugin>,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<JoinHandle<()>> {
        let plans = self.plans(plugin)?;
        self.check_columns(plugin, &plans).await?;
        let current = crate::dispatcher::instances::serving(slot);
        let stats = self.metrics.plugin(&plugin.manifest().name);
        let tables: Vec<String> = plans.iter().filter_map(|p| p.table.clone()).collect();
        stats.retain_tables(&tables);
        let mut dispatchers = Vec::with_capacity(plans.len());
        for plan in plans {
            let dispatcher = Dispatcher::new(
                plan.clone(),
                self.backends.ledger.clone(),
                self.decoder.clone(),
                current.clone(),
                stats.clone(),
            );
            dispatcher
                .bootstrap()
                .await
                .with_context(|| format!("cannot create subscription `{}`", plan.subscription))?;
            tracing::info!(
                plugin = plan.plugin,
                topic = plan.topic,
                subscription = plan.subscription,
                instances = plugin.manifest().instances(),
                "consuming"
            );
            dispatchers.push(dispatcher);
        }
        Ok(tokio::spawn(async move {
            // Dropping the set (the plugin task aborted) aborts every loop; a stop drains each.
            let mut loops = tokio::task::JoinSet::new();
            for d in dispatchers {
                loops.spawn(d.run(stop.clone()));
            }
            while loops.join_next().await.is_some() {}
        }))
    }

    fn start_scheduled(
        &self,
        slot: Arc<PluginSlot>,
        plugin: &Arc<Plugin>,
        mut stop: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let every = plugin
            .manifest()
            .schedule
            .as_ref()
            .map(|s| Duration::from_secs(s.every_secs))
            .unwrap_or(Duration::from_secs(3600));
        let name = plugin.manifest().name.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stop.changed() => break,
                }
                let Some(p) = slot.current() else { break };
                match p.tick(now_micros()).await {
                    Ok(()) => tracing::info!(plugin = name, "tick done"),
                    Err(e) => {
                        tracing::warn!(plugin = name, error = %e, "tick failed; retried at the next tick")
                    }
                }
            }
        })
    }

    async fn stop(&self, name: &str) {
        let task = self.tasks.lock().await.remove(name);
        if let Some(t) = task {
            let _ = t.stop.send(true);
            let _ = t.handle.await;
        }
    }
}
