//! The one trait the runtime iterates: a [`Capability`] links its WIT interface, checks a
//! manifest's grants for it, and puts its per-instance state into the store.
//!
//! The runtime holds a `Vec<Arc<dyn Capability<T>>>` (see [`crate::registry`]); `T` is the
//! runtime's store data, which reaches each capability's state through [`CapabilityHost`].

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Linker, ResourceTable};

/// The state a capability keeps for one plugin version (its checked grants, its config).
pub type PluginState = Box<dyn Any + Send + Sync>;

/// A plugin's name and the entries of the one grant a capability reads: the per-plugin state
/// of each capability over a port (blobstore, keyvalue, warehouse, ledger).
#[derive(Clone)]
pub struct GrantedTo {
    /// The plugin's name, for denials.
    pub name: Arc<str>,
    /// The entries of the grant.
    pub entries: Arc<[String]>,
}

impl GrantedTo {
    /// The per-plugin state of a capability that reads grant `key` (its `configure`).
    pub fn configure(plugin: &PluginInfo<'_>, key: &str) -> PluginState {
        Box::new(GrantedTo {
            name: plugin.name.into(),
            entries: plugin.grant(key).into(),
        })
    }

    /// The state [`GrantedTo::configure`] made, for `prepare`.
    pub fn of(state: &PluginState) -> GrantedTo {
        state
            .downcast_ref::<GrantedTo>()
            .expect("per-plugin state made by GrantedTo::configure")
            .clone()
    }
}

/// The state a capability keeps in one instance's store.
pub type InstanceState = Box<dyn Any + Send>;

/// The store data of a plugin instance, as capabilities see it.
pub trait CapabilityHost: Send + 'static {
    /// Every capability's per-instance state, and the store's one resource table (shared
    /// with WASI: resources, streams and pollables of every interface live there).
    fn capability_parts(&mut self) -> (&mut InstanceStates, &mut ResourceTable);

    /// Every capability's per-instance state, by type.
    fn capability_state(&mut self) -> &mut InstanceStates {
        self.capability_parts().0
    }
}

/// Per-instance states of every capability, one per type.
#[derive(Default)]
pub struct InstanceStates(HashMap<TypeId, InstanceState>);

impl InstanceStates {
    /// Puts a state (a boxed value keeps the type of the value inside).
    pub fn insert_boxed(&mut self, state: InstanceState) {
        let id = (*state).type_id();
        self.0.insert(id, state);
    }

    /// The state of type `S`, if a capability put one.
    pub fn get_mut<S: Any>(&mut self) -> Option<&mut S> {
        self.0
            .get_mut(&TypeId::of::<S>())
            .and_then(|s| s.downcast_mut())
    }

    /// The state of type `S`; the runtime prepares every capability's state before a
    /// component runs, so a missing one is a host bug.
    pub fn expect<S: Any>(&mut self) -> &mut S {
        self.get_mut::<S>().unwrap_or_else(|| {
            panic!(
                "no instance state {} (the runtime calls every capability's prepare)",
                std::any::type_name::<S>()
            )
        })
    }
}

/// What a capability may look at in a plugin's manifest.
#[derive(Debug, Clone, Copy)]
pub struct PluginInfo<'a> {
    /// The plugin's name (for messages and logs).
    pub name: &'a str,
    /// The manifest's grants, by grant name (`buckets`, `key-prefixes`, `config`, ...).
    pub grants: &'a BTreeMap<String, Vec<String>>,
    /// The plugin's `wasi:config` values (manifest `[config]` with the host's overrides).
    pub config: &'a BTreeMap<String, String>,
}

impl<'a> PluginInfo<'a> {
    /// The entries of one grant (empty when the manifest names none).
    pub fn grant(&self, name: &str) -> &'a [String] {
        self.grants.get(name).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// The manifest grant a capability's interface needs before a plugin may import it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The key under `[grants]`, e.g. `buckets`.
    pub key: &'static str,
    /// What its entries are, for messages: "buckets", "key prefixes".
    pub what: &'static str,
}

/// One host capability: a WIT interface, its grant check and its backend.
pub trait Capability<T>: Send + Sync {
    /// Short name for messages and status, e.g. `blobstore`.
    fn name(&self) -> &'static str;

    /// The WIT interfaces it provides, as import-name prefixes including the major and
    /// minor version, e.g. `ledgerhost:plugin/blobstore@0.1.`.
    fn interfaces(&self) -> &'static [&'static str];

    /// The manifest grant it reads; `None`: it reads none.
    fn grant(&self) -> Option<Grant>;

    /// Whether a plugin needs a non-empty [`Capability::grant`] to import it (`wasi:config`
    /// does not: an ungranted key just reads as absent).
    fn import_needs_grant(&self) -> bool {
        true
    }

    /// Adds its host functions to the runtime's linker.
    fn add_to_linker(&self, linker: &mut Linker<T>) -> wasmtime::Result<()>;

    /// Checks a plugin's grants for this capability at load and keeps what its instances
    /// need. An error names what to fix in the manifest.
    fn configure(&self, plugin: &PluginInfo<'_>) -> Result<PluginState, String>;

    /// The state one new instance of the plugin gets (put into its [`InstanceStates`]).
    fn prepare(&self, plugin: &PluginState) -> InstanceState;

    /// Its backend's reachability check, if it is remote (for start-up and `/readyz`).
    fn probe(&self) -> Option<Probe> {
        None
    }
}

/// The shared part of every capability's registration: an `Arc<dyn Capability<T>>`.
pub type DynCapability<T> = Arc<dyn Capability<T>>;

type CheckFuture = Pin<Box<dyn Future<Output = ledgerhost_core::PortResult<()>> + Send + 'static>>;

/// How long a start-up probe of a remote backend may take before the host refuses to start.
pub const STARTUP_PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs a backend's start-up probe with [`STARTUP_PROBE_TIMEOUT`]; the error names the
/// backend, the endpoint and what to check.
pub async fn startup_probe<F>(backend: &str, endpoint: &str, check: F) -> anyhow::Result<()>
where
    F: Future<Output = ledgerhost_core::PortResult<()>>,
{
    match tokio::time::timeout(STARTUP_PROBE_TIMEOUT, check).await {
        Ok(Ok(())) => {
            tracing::info!(backend, endpoint, "backend reachable");
            Ok(())
        }
        Ok(Err(e)) => Err(anyhow::anyhow!(
            "{backend} at {endpoint} is not usable: {e}. Check that it is running and \
             reachable, and the credentials and names in the config"
        )),
        Err(_) => Err(anyhow::anyhow!(
            "{backend} at {endpoint} did not answer within {}s. Check that it is running and \
             reachable (for an emulator: the host and port in the config or the \
             *_EMULATOR_HOST variable)",
            STARTUP_PROBE_TIMEOUT.as_secs()
        )),
    }
}

/// How long `/readyz` waits for one remote backend before calling the host not ready.
pub const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A reachability check of one remote backend (embedded backends are files in this process
/// and have none).
#[derive(Clone)]
pub struct Probe {
    /// The backend's name for people: "Redis", "Pub/Sub", ...
    pub backend: &'static str,
    /// Where it is, without secrets.
    pub endpoint: String,
    check: Arc<dyn Fn() -> CheckFuture + Send + Sync>,
}

impl Probe {
    /// A probe that runs `check(target)`.
    pub fn of<P, F, Fut>(backend: &'static str, endpoint: String, target: Arc<P>, check: F) -> Probe
    where
        P: Send + Sync + ?Sized + 'static,
        F: Fn(Arc<P>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ledgerhost_core::PortResult<()>> + Send + 'static,
    {
        Probe {
            backend,
            endpoint,
            check: Arc::new(move || Box::pin(check(target.clone()))),
        }
    }

    /// Runs the check once, without a timeout.
    pub async fn check(&self) -> ledgerhost_core::PortResult<()> {
        (self.check)().await
    }

    /// Ok when the backend answered within [`READY_PROBE_TIMEOUT`]; else why not.
    pub async fn run(&self) -> Result<(), String> {
        match tokio::time::timeout(READY_PROBE_TIMEOUT, (self.check)()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("{} at {}: {e}", self.backend, self.endpoint)),
            Err(_) => Err(format!(
                "{} at {}: no answer within {}s",
                self.backend,
                self.endpoint,
                READY_PROBE_TIMEOUT.as_secs()
            )),
        }
    }
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("backend", &self.backend)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}
