//! The contract a capability implements to be built by the host ([`Setup`]), and what it is
//! built from ([`HostContext`]: the host's [`Ports`], readiness probes, config sections).
//! The list of capabilities is [`crate::set`]; a capability imports only this file and
//! [`crate::capability`].

use std::collections::BTreeMap;
use std::sync::Arc;

use ledgerhost_core::capabilities::{BlobStore, KeyValue, Warehouse};
use ledgerhost_core::ledger::Ledger;

use crate::capability::Capability;
use crate::probe::Probe;

/// The ports behind the built-in capabilities, built by the host from its config.
#[derive(Clone)]
pub struct Ports {
    /// Behind `ledgerhost:plugin/blobstore`.
    pub blobstore: Arc<dyn BlobStore>,
    /// Behind `ledgerhost:plugin/keyvalue`.
    pub keyvalue: Arc<dyn KeyValue>,
    /// Behind `ledgerhost:plugin/warehouse`.
    pub warehouse: Arc<dyn Warehouse>,
    /// Behind `ledgerhost:plugin/ledger` (the host's own ledger).
    pub ledger: Arc<dyn Ledger>,
}

/// What the capability set builds capabilities from.
pub struct HostContext<'a> {
    /// The host's ports (the built-in capabilities wrap them).
    pub ports: &'a Ports,
    /// Readiness probes of the ports' remote backends, by capability name.
    pub probes: &'a BTreeMap<&'static str, Probe>,
    /// The config's `[capabilities.<name>]` sections, by name.
    pub sections: &'a BTreeMap<String, toml::Value>,
}

/// A capability the set can build: its settings type (section `[capabilities.<NAME>]`) and
/// its constructor.
pub trait Setup: Capability {
    /// Its settings (a serde struct, unknown keys refused); `Default` when the section is absent.
    type Config: serde::de::DeserializeOwned + Default;

    /// Checks settings beyond their shape; `Err((key, problem))`, the key relative to the
    /// section.
    fn validate(config: &Self::Config) -> Result<(), (String, String)> {
        let _ = config;
        Ok(())
    }

    /// Builds it from its settings and the host's ports.
    fn build(config: Self::Config, host: &HostContext<'_>) -> anyhow::Result<Self>;
}

/// The settings of a capability that has none (its section, if given, must be empty).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoSettings {}
