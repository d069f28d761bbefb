//! The `ledgerhost:plugin/blobstore` capability: its private binding, the host side with the
//! `grants.buckets` check, and its registration.

use std::sync::Arc;

use ledgerhost_core::capabilities::BlobStore;
use wasmtime::component::{HasSelf, Linker};

use crate::capability::{Grant, StateOf};
use crate::port::{PortCapability, PortInstance, PortKind};
use crate::setup::Ports;
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
pub type BlobstoreCapability = PortCapability<BlobstoreKind>;

/// What the `blobstore` capability is: its interface and grant over the host's [`BlobStore`] port.
pub struct BlobstoreKind;

/// One instance's view: the plugin's grant and the port.
type Instance = PortInstance<dyn BlobStore>;

impl PortKind for BlobstoreKind {
    type Port = dyn BlobStore;
    const NAME: &'static str = "blobstore";
    const INTERFACES: &'static [&'static str] = &["ledgerhost:plugin/blobstore@0.1."];
    const GRANT: Grant = Grant {
        key: "buckets",
        what: "buckets",
    };

    fn port(ports: &Ports) -> Arc<dyn BlobStore> {
        ports.blobstore.clone()
    }

    fn add_to_linker<T: StateOf<PortCapability<Self>>>(
        linker: &mut Linker<T>,
    ) -> wasmtime::Result<()> {
        blobstore::add_to_linker::<T, HasSelf<Instance>>(linker, |t| t.state())
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
        self.port.ensure_bucket(&bucket).await.map_err(backend)?;
        self.port.put(&bucket, &name, data).await.map_err(backend)
    }

    async fn get(&mut self, bucket: String, name: String) -> Result<Option<Vec<u8>>, types::Error> {
        self.bucket(&bucket)?;
        check_name("object name", &name)?;
        self.port.get(&bucket, &name).await.map_err(backend)
    }

    async fn delete(&mut self, bucket: String, name: String) -> Result<(), types::Error> {
        self.bucket(&bucket)?;
        check_name("object name", &name)?;
        self.port.delete(&bucket, &name).await.map_err(backend)
    }

    async fn list(&mut self, bucket: String, prefix: String) -> Result<Vec<String>, types::Error> {
        self.bucket(&bucket)?;
        self.port.list(&bucket, &prefix).await.map_err(backend)
    }
}
