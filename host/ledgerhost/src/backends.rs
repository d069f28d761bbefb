//! Builds each port from the configuration. The only place that names a backend: everything
//! else holds the traits.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ledgerhost_capabilities::registry::{self, HostContext, Ports};
use ledgerhost_core::capabilities::{BlobStore, KeyValue, Warehouse};
use ledgerhost_core::ledger::Ledger;
use ledgerhost_core::source::Source;
use ledgerhost_runtime::{CapabilityList, PluginState};

use crate::config::{
    BlobStoreConfig, Config, KeyValueConfig, LedgerKind, SourceConfig, WarehouseConfig,
};

/// The SQLite source's helpers for the tools beside the host: the capture DDL an
/// application runs (`ledgerhost sqlite-ddl`) and the demo's application writer
/// (`ledgerhost demo`).
pub use ledgerhost_source::sqlite::{capture_ddl as sqlite_capture_ddl, demo as sqlite_demo};

/// How long a start-up probe of a remote backend may take before the host refuses to start.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs a backend's start-up probe with [`PROBE_TIMEOUT`]; the error names the backend, the
/// endpoint and what to check.
async fn probe<F>(backend: &str, endpoint: &str, check: F) -> anyhow::Result<()>
where
    F: std::future::Future<Output = ledgerhost_core::PortResult<()>>,
{
    match tokio::time::timeout(PROBE_TIMEOUT, check).await {
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
            PROBE_TIMEOUT.as_secs()
        )),
    }
}

pub use ledgerhost_capabilities::Probe;

/// The ports of a running host.
#[derive(Clone)]
pub struct Backends {
    /// The database changes are captured from.
    pub source: Arc<dyn Source>,
    /// The topic backend events are published to and consumed from.
    pub ledger: Arc<dyn Ledger>,
    /// Object storage behind the `blobstore` capability.
    pub blobstore: Arc<dyn BlobStore>,
    /// Key-value store behind the `keyvalue` capability.
    pub keyvalue: Arc<dyn KeyValue>,
    /// Warehouse behind the `warehouse` capability.
    pub warehouse: Arc<dyn Warehouse>,
    /// Reachability checks of the remote backends, for readiness.
    pub probes: Vec<Probe>,
    /// Every registered capability, over these ports and the config's sections.
    pub capabilities: CapabilityList,
}

impl Backends {
    /// Opens or connects every backend named in the config.
    pub async fn connect(config: &Config) -> anyhow::Result<Backends> {
        let mut probes = Vec::new();
        let mut capability_probes = std::collections::BTreeMap::new();
        let source: Arc<dyn Source> = match &config.source {
            SourceConfig::Sqlite { path } => Arc::new(
                ledgerhost_source::sqlite::SqliteSource::open(path)
                    .with_context(|| format!("cannot open the SQLite source {}", path.display()))?,
            ),
            #[cfg(feature = "google")]
            SourceConfig::Spanner {
                project,
                instance,
                database,
                endpoint,
                admin_endpoint,
                missing_commit_index,
            } => {
                use ledgerhost_source::spanner::{
                    MissingCommitIndex, SpannerConfig, SpannerSource,
                };
                let cfg = SpannerConfig {
                    project: project.clone(),
                    instance: instance.clone(),
                    database: database.clone(),
                    endpoint: endpoint.clone(),
                    admin_endpoint: admin_endpoint.clone(),
                    missing_commit_index: match missing_commit_index {
                        crate::config::MissingCommitIndex::Refuse => MissingCommitIndex::Refuse,
                        crate::config::MissingCommitIndex::Warn => MissingCommitIndex::Warn,
                    },
                };
                let where_ = format!(
                    "{} ({})",
                    ledgerhost_google::SPANNER.endpoint(endpoint.as_deref()),
                    cfg.database_path()
                );
                // Building the client already talks to Spanner (sessions), so the probe
                // bounds the connect too.
                let mut source = None;
                probe("Spanner", &where_, async {
                    let s = SpannerSource::connect(cfg).await?;
                    s.check().await?;
                    source = Some(s);
                    Ok(())
                })
                .await?;
                let source = Arc::new(source.context("the Spanner probe returned no client")?);
                probes.push(Probe::of(
                    "Spanner",
                    where_,
                    source.clone(),
                    |s| async move { s.check().await },
                ));
                source
            }
            #[cfg(not(feature = "google"))]
            SourceConfig::Spanner { .. } => {
                anyhow::bail!(
                    "source.kind = \"spanner\" is not compiled into this build; rebuild with \
                     `--features google` (on by default) or use \"sqlite\""
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
            #[cfg(feature = "google")]
            LedgerKind::Pubsub => {
                use ledgerhost_ledger::pubsub::{PubSubConfig, PubSubLedger};
                let project = config
                    .ledger
                    .project
                    .clone()
                    .context("ledger.project is required when ledger.kind = \"pubsub\"")?;
                let mut cfg = PubSubConfig::new(project);
                cfg.endpoint = config.ledger.endpoint.clone();
                let where_ = format!("{} (project {})", cfg.resolved_endpoint(), cfg.project);
                let ledger = PubSubLedger::connect(cfg)
                    .await
                    .with_context(|| format!("cannot connect to Pub/Sub at {where_}"))?;
                probe("Pub/Sub", &where_, ledger.check()).await?;
                let ledger = Arc::new(ledger);
                probes.push(Probe::of(
                    "Pub/Sub",
                    where_,
                    ledger.clone(),
                    |l| async move { l.check().await },
                ));
                ledger
            }
            #[cfg(not(feature = "google"))]
            LedgerKind::Pubsub => {
                anyhow::bail!(
                    "ledger.kind = \"pubsub\" is not compiled into this build; rebuild with \
                     `--features google` (on by default) or use \"embedded\""
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
            BlobStoreConfig::Gcs { endpoint, project } => {
                use ledgerhost_capabilities::blobstore::gcs::{GcsBlobStore, GcsConfig};
                let store = GcsBlobStore::connect(GcsConfig {
                    endpoint: endpoint.clone(),
                    project: project.clone(),
                    ..GcsConfig::default()
                })
                .context("cannot set up the Cloud Storage client")?;
                let where_ = store.endpoint().to_string();
                probe("Cloud Storage", &where_, store.check()).await?;
                let store = Arc::new(store);
                capability_probes.insert(
                    "blobstore",
                    Probe::of("Cloud Storage", where_, store.clone(), |s| async move {
                        s.check().await
                    }),
                );
                store
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
            KeyValueConfig::Redis {
                url,
                namespace,
                tls_ca_file,
                tls_cert_file,
                tls_key_file,
            } => {
                use ledgerhost_capabilities::keyvalue::redis::{
                    RedisConfig, RedisKeyValue, RedisTls,
                };
                let mut cfg = RedisConfig::new(url.clone());
                if let Some(ns) = namespace {
                    cfg.namespace = ns.clone();
                }
                cfg.tls = RedisTls {
                    ca_file: tls_ca_file.clone(),
                    client_cert_file: tls_cert_file.clone(),
                    client_key_file: tls_key_file.clone(),
                };
                let kv = RedisKeyValue::connect(cfg).with_context(|| {
                    format!("cannot set up the Redis client for {}", redact(url))
                })?;
                probe("Redis", &redact(url), kv.check()).await?;
                let kv = Arc::new(kv);
                capability_probes.insert(
                    "keyvalue",
                    Probe::of("Redis", redact(url), kv.clone(), |kv| async move {
                        kv.check().await
                    }),
                );
                kv
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
            WarehouseConfig::Bigquery {
                project,
                dataset,
                endpoint,
                location,
            } => {
                use ledgerhost_capabilities::warehouse::bigquery::{
                    BigQueryConfig, BigQueryWarehouse,
                };
                let mut cfg = BigQueryConfig::new(project.clone(), dataset.clone());
                cfg.endpoint = endpoint.clone();
                cfg.location = location.clone();
                let where_ = format!(
                    "{} (dataset {project}.{dataset})",
                    ledgerhost_google::BIGQUERY.endpoint(endpoint.as_deref())
                );
                let warehouse = BigQueryWarehouse::connect(cfg)
                    .await
                    .with_context(|| format!("cannot set up the BigQuery client for {where_}"))?;
                probe("BigQuery", &where_, warehouse.check()).await?;
                let warehouse = Arc::new(warehouse);
                capability_probes.insert(
                    "warehouse",
                    Probe::of("BigQuery", where_, warehouse.clone(), |w| async move {
                        w.check().await
                    }),
                );
                warehouse
            }
        };
        let ports = Ports {
            blobstore: blobstore.clone(),
            keyvalue: keyvalue.clone(),
            warehouse: warehouse.clone(),
            ledger: ledger.clone(),
        };
        let capabilities = registry::build::<PluginState>(&HostContext {
            ports: &ports,
            probes: &capability_probes,
            sections: &config.capabilities,
        })?;
        probes.extend(capabilities.iter().filter_map(|c| c.probe()));
        Ok(Backends {
            source,
            ledger,
            blobstore,
            keyvalue,
            warehouse,
            probes,
            capabilities,
        })
    }

    /// The capabilities handed to plugins.
    pub fn capabilities(&self) -> CapabilityList {
        self.capabilities.clone()
    }
}

/// A Redis URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}
