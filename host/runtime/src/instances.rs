//! K instances of one plugin version (`subscription.instances` in the manifest), built above
//! the single-instance [`Plugin`]: instance 0 is the version the registry loaded (and
//! validated by instantiating it), the others are its [`Plugin::sibling`]s. Each has its own
//! store, so its own memory cap, deadline and trap/rebuild cycle; a trap in one leaves the
//! others' instances alive. A sibling is instantiated at its first call, so instances that
//! never get events cost nothing.

use std::sync::Arc;

use crate::Plugin;

/// The instances serving one version of a plugin.
pub struct Instances {
    plugins: Vec<Arc<Plugin>>,
}

impl Instances {
    /// The instances `version`'s manifest asks for ([`crate::Manifest::instances`]),
    /// `version` itself first.
    pub fn of(version: Arc<Plugin>) -> Instances {
        let k = version.manifest().instances().max(1) as usize;
        let mut plugins = Vec::with_capacity(k);
        for _ in 1..k {
            plugins.push(Arc::new(version.sibling()));
        }
        plugins.insert(0, version);
        Instances { plugins }
    }

    /// How many instances serve the version (at least one).
    pub fn len(&self) -> usize {
        self.plugins.len()
    }

    /// Always false: a version has at least one instance.
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    /// Instance `i`, for `i < len()` (wrapped around beyond).
    pub fn get(&self, i: usize) -> &Arc<Plugin> {
        &self.plugins[i % self.plugins.len()]
    }

    /// The version these instances run (instance 0, as the registry holds it).
    pub fn version(&self) -> &Arc<Plugin> {
        &self.plugins[0]
    }

    /// True when these are the instances of exactly `version` (the same loaded value, not
    /// just the same digest: a reloaded manifest is a new version).
    pub fn runs(&self, version: &Arc<Plugin>) -> bool {
        Arc::ptr_eq(&self.plugins[0], version)
    }
}
