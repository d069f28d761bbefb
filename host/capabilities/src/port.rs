//! The capabilities that put one host port behind one manifest grant (blobstore, keyvalue,
//! warehouse, ledger) share everything but their interface: one generic capability,
//! [`PortCapability`], built from what each says about itself, [`PortKind`]. Each folder
//! keeps only its private binding, its [`PortKind`] and its `Host` impl (the checks of its
//! own names) on [`PortInstance`].

use std::sync::Arc;

use wasmtime::component::Linker;

use crate::capability::{Capability, Grant, PluginInfo, StateOf};
use crate::probe::Probe;
use crate::setup::{HostContext, NoSettings, Ports, Setup};

/// What one port capability is: its name, interface, grant, port, and how it links.
pub trait PortKind: Send + Sync + Sized + 'static {
    /// The port it wraps (`dyn BlobStore`, ...).
    type Port: ?Sized + Send + Sync + 'static;
    /// Its name, also its config section and the key of its backend's probe.
    const NAME: &'static str;
    /// Its interfaces, as import-name prefixes (`ledgerhost:plugin/blobstore@0.1.`).
    const INTERFACES: &'static [&'static str];
    /// The manifest grant a plugin needs to import it.
    const GRANT: Grant;

    /// Its port among the host's.
    fn port(ports: &Ports) -> Arc<Self::Port>;

    /// Links its interface, each call served by the instance's `PortInstance<Self::Port>`.
    fn add_to_linker<T: StateOf<PortCapability<Self>>>(
        linker: &mut Linker<T>,
    ) -> wasmtime::Result<()>;
}

/// A host port behind a manifest grant, as a capability.
pub struct PortCapability<K: PortKind> {
    port: Arc<K::Port>,
    probe: Option<Probe>,
}

impl<K: PortKind> Clone for PortCapability<K> {
    fn clone(&self) -> Self {
        PortCapability::new(self.port.clone(), self.probe.clone())
    }
}

impl<K: PortKind> PortCapability<K> {
    /// The capability over `port`; `probe` checks a remote backend's reachability.
    pub fn new(port: Arc<K::Port>, probe: Option<Probe>) -> Self {
        PortCapability { port, probe }
    }
}

/// A plugin's name and the entries of the one grant a port capability reads: what it keeps
/// for one plugin version.
#[derive(Clone)]
pub struct GrantedTo {
    /// The plugin's name, for denials.
    pub name: Arc<str>,
    /// The entries of the grant.
    pub entries: Arc<[String]>,
}

/// One instance's view of a port capability: the plugin with its grant, and the port.
pub struct PortInstance<P: ?Sized> {
    /// The plugin and the entries of its grant.
    pub plugin: GrantedTo,
    /// The port.
    pub port: Arc<P>,
}

impl<K: PortKind> Capability for PortCapability<K> {
    const NAME: &'static str = K::NAME;
    const INTERFACES: &'static [&'static str] = K::INTERFACES;
    const GRANT: Option<Grant> = Some(K::GRANT);

    type Configured = GrantedTo;
    type Instance = PortInstance<K::Port>;

    fn add_to_linker<T: StateOf<Self>>(&self, linker: &mut Linker<T>) -> wasmtime::Result<()> {
        K::add_to_linker(linker)
    }

    fn configure(&self, plugin: &PluginInfo<'_>) -> Result<GrantedTo, String> {
        Ok(GrantedTo {
            name: plugin.name.into(),
            entries: plugin.grant(K::GRANT.key).into(),
        })
    }

    fn prepare(&self, plugin: &GrantedTo) -> PortInstance<K::Port> {
        PortInstance {
            plugin: plugin.clone(),
            port: self.port.clone(),
        }
    }

    fn probe(&self) -> Option<Probe> {
        self.probe.clone()
    }
}

impl<K: PortKind> Setup for PortCapability<K> {
    type Config = NoSettings;

    fn build(_: NoSettings, host: &HostContext<'_>) -> anyhow::Result<Self> {
        Ok(PortCapability::new(
            K::port(host.ports),
            host.probes.get(K::NAME).cloned(),
        ))
    }
}
