//! Builds each port from the configuration. The only place that names a backend: everything
//! else holds the traits.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ledgerhost_core::capabilities::{BlobStore, KeyValue, Warehouse};
use ledgerhost_core::ledger::Ledger;
use ledgerhost_core::source::Source;
use ledgerhost_runtime::Capabilities;

use crate::config::{
    BlobStoreConfig, Config, KeyValueConfig, LedgerKind, SourceConfig, WarehouseConfig,
};

/// The ports of a running host.
#[derive(Clone)]
pub struct Backends {
    pub source: Arc<dyn Source>,
    pub ledger: Arc<dyn Ledger>,
    pub blobstore: Arc<dyn BlobStore>,
    pub keyvalue: Arc<dyn KeyValue>,
    pub warehouse: Arc<dyn Warehouse>,
}

impl Backends {
    /// Opens or connects every backend named in the config.
    pub async fn connect(config: &Config) -> anyhow::Result<Backends> {
        let source: Arc<dyn Source> = match &config.source {
            SourceConfig::Sqlite { path } => Arc::new(
                ledgerhost_source::sqlite::SqliteSource::open(path)
                    .with_context(|| format!("cannot open the SQLite source {}", path.display()))?,
            ),
            SourceConfig::Spanner { .. } => {
                anyhow::bail!(
                    "source.kind = \"spanner\" is not available in this build yet; use \"sqlite\""
                )
            }
        };
        let ledger: Arc<dyn Ledger> = match config.ledger.kind {
            LedgerKind::Embedded => {
                let dir = config.host.data_dir.join("ledger");
                Arc::new(
                    ledgerhost_ledger::embedded::EmbeddedLedger::open(
                        &dir,
                        ledgerhost_ledger::embedded::EmbeddedOptions {
                            retention: Duration::from_secs(config.ledger.retention_hours * 3600),
                        },
                    )
                    .with_context(|| {
                        format!("cannot open the embedded ledger in {}", dir.display())
                    })?,
                )
            }
            LedgerKind::Pubsub => {
                anyhow::bail!(
                    "ledger.kind = \"pubsub\" is not available in this build yet; use \"embedded\""
                )
            }
        };
        let blobstore: Arc<dyn BlobStore> = match &config.blobstore {
            BlobStoreConfig::Local { path } => {
                let path = path
                    .clone()
                    .unwrap_or_else(|| config.host.data_dir.join("blobs"));
                Arc::new(
                    ledgerhost_capabilities::blobstore::local::LocalBlobStore::open(&path)
                        .with_context(|| {
                            format!("cannot open blob directory {}", path.display())
                        })?,
                )
            }
            BlobStoreConfig::Gcs { .. } => {
                anyhow::bail!(
                    "blobstore.kind = \"gcs\" is not available in this build yet; use \"local\""
                )
            }
        };
        let keyvalue: Arc<dyn KeyValue> = match &config.keyvalue {
            KeyValueConfig::Embedded { path } => {
                let path = path
                    .clone()
                    .unwrap_or_else(|| config.host.data_dir.join("keyvalue.db"));
                Arc::new(
                    ledgerhost_capabilities::keyvalue::embedded::EmbeddedKeyValue::open(&path)
                        .with_context(|| {
                            format!("cannot open key-value file {}", path.display())
                        })?,
                )
            }
            KeyValueConfig::Redis { .. } => {
                anyhow::bail!(
                    "keyvalue.kind = \"redis\" is not available in this build yet; use \"embedded\""
                )
            }
        };
        let warehouse: Arc<dyn Warehouse> = match &config.warehouse {
            WarehouseConfig::Sqlite { path } => {
                let path = path
                    .clone()
                    .unwrap_or_else(|| config.host.data_dir.join("warehouse.db"));
                Arc::new(
                    ledgerhost_capabilities::warehouse::sqlite::SqliteWarehouse::open(&path)
                        .with_context(|| {
                            format!("cannot open warehouse file {}", path.display())
                        })?,
                )
            }
            WarehouseConfig::Bigquery { .. } => {
                anyhow::bail!(
                    "warehouse.kind = \"bigquery\" is not available in this build yet; use \"sqlite\""
                )
            }
        };
        Ok(Backends {
            source,
            ledger,
            blobstore,
            keyvalue,
            warehouse,
        })
    }

    /// The capability backends handed to plugins.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            blobstore: self.blobstore.clone(),
            keyvalue: self.keyvalue.clone(),
            warehouse: self.warehouse.clone(),
            ledger: self.ledger.clone(),
        }
    }
}
