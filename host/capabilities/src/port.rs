//! The capabilities that put one host port behind one manifest grant (blobstore, keyvalue,
//! warehouse, ledger) share everything but their interface: one generic capability,
//! [`PortCapability`], built from what each says about itself, [`PortKind`]. Each folder
//! keeps only its private binding, its [`PortKind`] and its `Host` impl (the checks of its
//! own names) on [`PortInstance`].

use std::sync::Arc;

use wasmtime::component::Linker;

use crate::capability::{
    Capability, CapabilityHost, Grant, GrantedTo, InstanceState, PluginInfo, PluginState, Probe,
};
use crate::setup::{HostContext, NoSettings, Ports, Setup};

/// What one port capability is: its name, interface, grant, port, and how it links.
pub trait PortKind: Send + Sync + 'static {
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

    /// Links its interface, each call served by the instance's
    /// `PortInstance<Self::Port>` (from the store's capability states).
    fn add_to_linker<T: CapabilityHost>(linker: &mut Linker<T>) -> wasmtime::Result<()>;
}

/// A host port behind a manifest grant, as a capability.
pub struct PortCapability<K: PortKind> {
    port: Arc<K::Port>,
    probe: Option<Probe>,
}

impl<K: PortKind> PortCapability<K> {
    /// The capability over `port`; `probe` checks a remote backend's reachability.
    pub fn new(port: Arc<K::Port>, probe: Option<Probe>) -> Self {
        PortCapability { port, probe }
    }
}

/// One instance's view of a port capability: the plugin with its grant, and the port.
pub struct PortInstance<P: ?Sized> {
    /// The plugin and the entries of its grant.
    pub plugin: GrantedTo,
    /// The port.
    pub port: Arc<P>,
}

impl<T: CapabilityHost, K: PortKind> Capability<T> for PortCapability<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }

    fn interfaces(&self) -> &'static [&'static str] {
        K::INTERFACES
    }

    fn grant(&self) -> Option<Grant> {
        Some(K::GRANT)
    }

    fn add_to_linker(&self, linker: &mut Linker<T>) -> wasmtime::Result<()> {
        K::add_to_linker(linker)
    }

    fn configure(&self, plugin: &PluginInfo<'_>) -> Result<PluginState, String> {
        Ok(GrantedTo::configure(plugin, K::GRANT.key))
    }

    fn prepare(&self, plugin: &PluginState) -> InstanceState {
        Box::new(PortInstance {
            plugin: GrantedTo::of(plugin),
            port: self.port.clone(),
        })
    }

    fn probe(&self) -> Option<Probe> {
        self.probe.clone()
    }
}

impl<T: CapabilityHost, K: PortKind> Setup<T> for PortCapability<K> {
    const NAME: &'static str = K::NAME;
    type Config = NoSettings;

    fn build(_: NoSettings, host: &HostContext<'_>) -> anyhow::Result<Self> {
        Ok(PortCapability::new(
            K::port(host.ports),
            host.probes.get(K::NAME).cloned(),
        ))
    }
}
