//! The `ledgerhost:plugin/blobstore` capability: its private binding, the host side with the
//! `grants.buckets` check, and its registration.

use std::sync::Arc;

use ledgerhost_core::capabilities::BlobStore;
use wasmtime::component::{HasSelf, Linker};

use crate::capability::{
    Capability, CapabilityHost, Grant, GrantedTo, InstanceState, PluginInfo, PluginState, Probe,
};
use crate::setup::{HostContext, NoSettings, Setup};
use crate::wit::{backend, denied, granted, invalid_name, types};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        inline: "package ledgerhost:host; world blobstore { import ledgerhost:plugin/blobstore@0.1.0; }",
        imports: { default: async },
        with: { "ledgerhost:plugin/types": crate::wit::types },
    });
}
use bindings::ledgerhost::plugin0_1_0::blobstore;

/// Object storage for plugins, in the buckets their manifest grants.
pub struct BlobstoreCapability {
    store: Arc<dyn BlobStore>,
    probe: Option<Probe>,
}

impl BlobstoreCapability {
    /// The capability over `store`; `probe` checks a remote store's reachability.
    pub fn new(store: Arc<dyn BlobStore>, probe: Option<Probe>) -> Self {
        BlobstoreCapability { store, probe }
    }
}

/// One instance's view: its grants and the store.
struct Instance {
    plugin: GrantedTo,
    store: Arc<dyn BlobStore>,
}

impl<T: CapabilityHost> Capability<T> for BlobstoreCapability {
    fn name(&self) -> &'static str {
        "blobstore"
    }

    fn interfaces(&self) -> &'static [&'static str] {
        &["ledgerhost:plugin/blobstore@0.1."]
    }

    fn grant(&self) -> Option<Grant> {
        Some(Grant {
            key: "buckets",
            what: "buckets",
        })
    }

    fn add_to_linker(&self, linker: &mut Linker<T>) -> wasmtime::Result<()> {
        blobstore::add_to_linker::<T, HasSelf<Instance>>(linker, |t| {
            t.capability_state().expect::<Instance>()
        })
    }

    fn configure(&self, plugin: &PluginInfo<'_>) -> Result<PluginState, String> {
        Ok(GrantedTo::configure(plugin, "buckets"))
    }

    fn prepare(&self, plugin: &PluginState) -> InstanceState {
        Box::new(Instance {
            plugin: GrantedTo::of(plugin),
            store: self.store.clone(),
        })
    }

    fn probe(&self) -> Option<Probe> {
        self.probe.clone()
    }
}

/// Object names must not climb out of their bucket (the one rule in `ledgerhost_manifest`).
fn check_name(_what: &str, name: &str) -> Result<(), types::Error> {
    ledgerhost_manifest::names::check_object_name(name).map_err(invalid_name)
}

impl Instance {
    fn bucket(&self, bucket: &str) -> Result<(), types::Error> {
        ledgerhost_manifest::names::check_bucket_name(bucket).map_err(invalid_name)?;
        if !granted("buckets", &self.plugin.entries, bucket) {
            return Err(denied(&self.plugin.name, "bucket", bucket, "buckets"));
        }
        Ok(())
    }
}

impl blobstore::Host for Instance {
    async fn put(
        &mut self,
        bucket: String,
        name: String,
        data: Vec<u8>,
    ) -> Result<(), types::Error> {
        self.bucket(&bucket)?;
        check_name("object name", &name)?;
        self.store.ensure_bucket(&bucket).await.map_err(backend)?;
        self.store.put(&bucket, &name, data).await.map_err(backend)
    }

    async fn get(&mut self, bucket: String, name: String) -> Result<Option<Vec<u8>>, types::Error> {
        self.bucket(&bucket)?;
        check_name("object name", &name)?;
        self.store.get(&bucket, &name).await.map_err(backend)
    }

    async fn delete(&mut self, bucket: String, name: String) -> Result<(), types::Error> {
        self.bucket(&bucket)?;
        check_name("object name", &name)?;
        self.store.delete(&bucket, &name).await.map_err(backend)
    }

    async fn list(&mut self, bucket: String, prefix: String) -> Result<Vec<String>, types::Error> {
        self.bucket(&bucket)?;
        self.store.list(&bucket, &prefix).await.map_err(backend)
    }
}

impl<T: CapabilityHost> Setup<T> for BlobstoreCapability {
    const NAME: &'static str = "blobstore";
    type Config = NoSettings;

    fn build(_: NoSettings, host: &HostContext<'_>) -> anyhow::Result<Self> {
        Ok(BlobstoreCapability::new(
            host.ports.blobstore.clone(),
            host.probes.get("blobstore").cloned(),
        ))
    }
}
