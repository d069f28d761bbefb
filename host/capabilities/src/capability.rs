//! The contract of one host capability: a [`Capability`] links its WIT interface, checks a
//! manifest's grants for it at load ([`Capability::configure`]) and gives each instance its
//! state ([`Capability::prepare`]). Both states are typed, declared by the capability; the
//! store reaches its own through [`StateOf`]. The list of capabilities is [`crate::set`].

use std::collections::BTreeMap;

use wasmtime::component::{Linker, ResourceTable};

use crate::probe::Probe;

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

/// One host capability: a WIT interface, its grant check, its backend and its two states.
pub trait Capability: Send + Sync + Sized + 'static {
    /// Short name for messages and status, also its config section, e.g. `blobstore`.
    const NAME: &'static str;
    /// The WIT interfaces it provides, as import-name prefixes including the major and
    /// minor version, e.g. `ledgerhost:plugin/blobstore@0.1.`.
    const INTERFACES: &'static [&'static str];
    /// The manifest grant it reads; `None`: it reads none.
    const GRANT: Option<Grant>;
    /// Whether a plugin needs a non-empty [`Capability::GRANT`] to import it (`wasi:config`
    /// does not: an ungranted key just reads as absent).
    const IMPORT_NEEDS_GRANT: bool = true;

    /// What it keeps for one plugin version (its checked grants, its config), shared by
    /// the version's instances.
    type Configured: Send + Sync + 'static;
    /// What one instance's store holds for it.
    type Instance: Send + 'static;

    /// Adds its host functions to a linker whose store data holds its [`Capability::Instance`].
    fn add_to_linker<T: StateOf<Self>>(&self, linker: &mut Linker<T>) -> wasmtime::Result<()>;

    /// Checks a plugin's grants for this capability at load and keeps what its instances
    /// need. An error names what to fix in the manifest.
    fn configure(&self, plugin: &PluginInfo<'_>) -> Result<Self::Configured, String>;

    /// The state one new instance of the plugin gets.
    fn prepare(&self, plugin: &Self::Configured) -> Self::Instance;

    /// Its backend's reachability check, if it is remote (for start-up and `/readyz`).
    fn probe(&self) -> Option<Probe> {
        None
    }
}

/// Store data that holds capability `C`'s per-instance state (implemented by
/// [`crate::set`] for every store data of the runtime).
pub trait StateOf<C: Capability>: Send + 'static {
    /// `C`'s state, and the store's one resource table (shared with WASI: resources,
    /// streams and pollables of every interface live there).
    fn state_and_table(&mut self) -> (&mut C::Instance, &mut ResourceTable);

    /// `C`'s state.
    fn state(&mut self) -> &mut C::Instance {
        self.state_and_table().0
    }
}

/// What a capability offers, as data: the runtime's import check reads it.
#[derive(Debug, Clone, Copy)]
pub struct Offer {
    /// [`Capability::NAME`].
    pub name: &'static str,
    /// [`Capability::INTERFACES`].
    pub interfaces: &'static [&'static str],
    /// [`Capability::GRANT`].
    pub grant: Option<Grant>,
    /// [`Capability::IMPORT_NEEDS_GRANT`].
    pub import_needs_grant: bool,
}

impl Offer {
    /// The offer of capability `C`.
    pub const fn of<C: Capability>() -> Offer {
        Offer {
            name: C::NAME,
            interfaces: C::INTERFACES,
            grant: C::GRANT,
            import_needs_grant: C::IMPORT_NEEDS_GRANT,
        }
    }
}
