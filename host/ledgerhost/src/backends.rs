//! Builds each port from the configuration. The only place that names a backend: everything
//! else holds the traits.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ledgerhost_capabilities::CapabilitySet;
use ledgerhost_capabilities::setup::{HostContext, Ports};
use ledgerhost_core::capabilities::{BlobStore, KeyValue, Warehouse};
use ledgerhost_core::ledger::Ledger;
use ledgerhost_core::source::Source;

use crate::config::{Config, LedgerKind, SourceConfig};

/// The SQLite source's helpers for the tools beside the host: the capture DDL an
/// application runs (`ledgerhost sqlite-ddl`) and the demo's application writer
/// (`ledgerhost demo`).
pub use ledgerhost_source::sqlite::{capture_ddl as sqlite_capture_ddl, demo as sqlite_demo};

pub use ledgerhost_capabilities::Probe;
#[cfg(feature = "google")]
use ledgerhost_capabilities::probe::startup_probe as probe;

/// The ports of a running host.
#[derive(Clone)]
pub struct Backends {
    /// The database changes are captured from.
    pub source: Arc<dyn Source>,
    /// The source's change streams, when it has them (Spanner).
    pub change_capture: Option<Arc<dyn ledgerhost_core::change::ChangeCapture>>,
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
    /// Every capability of the set, over these ports and the config's sections.
    pub capabilities: CapabilitySet,
}

impl Backends {
    /// Opens or connects every backend named in the config.
    pub async fn connect(config: &Config) -> anyhow::Result<Backends> {
        let mut probes = Vec::new();
        let mut capability_probes = std::collections::BTreeMap::new();
        let mut change_capture: Option<Arc<dyn ledgerhost_core::change::ChangeCapture>> = None;
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
                change_stream_heartbeat_ms,
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
                    change_stream_heartbeat: change_stream_heartbeat_ms
                        .map(std::time::Duration::from_millis),
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
                change_capture = Some(source.clone());
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
        let data_dir = &config.host.data_dir;
        let (blobstore, blobstore_probe) = config.blobstore.build(data_dir).await?;
        let (keyvalue, keyvalue_probe) = config.keyvalue.build(data_dir).await?;
        let (warehouse, warehouse_probe) = config.warehouse.build(data_dir).await?;
        for (name, probe) in [
            ("blobstore", blobstore_probe),
            ("keyvalue", keyvalue_probe),
            ("warehouse", warehouse_probe),
        ] {
            if let Some(p) = probe {
                capability_probes.insert(name, p);
            }
        }
        let ports = Ports {
            blobstore: blobstore.clone(),
            keyvalue: keyvalue.clone(),
            warehouse: warehouse.clone(),
            ledger: ledger.clone(),
        };
        let capabilities = CapabilitySet::build(&HostContext {
            ports: &ports,
            probes: &capability_probes,
            sections: &config.capabilities,
        })?;
        probes.extend(capabilities.probes());
        Ok(Backends {
            source,
            change_capture,
            ledger,
            blobstore,
            keyvalue,
            warehouse,
            probes,
            capabilities,
        })
    }

    /// Builds the capabilities again over the ports as they stand (after some were wrapped,
    /// as `plugin test` and `plugin diff` wrap the stores to record what a plugin writes).
    pub fn rebuild_capabilities(&mut self, config: &Config) -> anyhow::Result<()> {
        let ports = Ports {
            blobstore: self.blobstore.clone(),
            keyvalue: self.keyvalue.clone(),
            warehouse: self.warehouse.clone(),
            ledger: self.ledger.clone(),
        };
        self.capabilities = CapabilitySet::build(&HostContext {
            ports: &ports,
            probes: &std::collections::BTreeMap::new(),
            sections: &config.capabilities,
        })?;
        Ok(())
    }

    /// The capabilities handed to plugins.
    pub fn capabilities(&self) -> CapabilitySet {
        self.capabilities.clone()
    }
}

/// Opens the database `ledgerhost restore` writes into (the restore-target port).
pub async fn restore_target(
    target: &crate::restore::RestoreTarget,
) -> anyhow::Result<Arc<dyn ledgerhost_core::target::TableWriter>> {
    use crate::restore::RestoreTarget;
    match target {
        RestoreTarget::Sqlite(path) => Ok(Arc::new(
            ledgerhost_source::sqlite::target::SqliteTarget::open(path)
                .with_context(|| format!("cannot open the SQLite file {}", path.display()))?,
        )),
        #[cfg(feature = "google")]
        RestoreTarget::Spanner {
            project,
            instance,
            database,
            endpoint,
            admin_endpoint,
        } => {
            use ledgerhost_source::spanner::SpannerConfig;
            use ledgerhost_source::spanner::target::SpannerTarget;
            let cfg = SpannerConfig {
                project: project.clone(),
                instance: instance.clone(),
                database: database.clone(),
                endpoint: endpoint.clone(),
                admin_endpoint: admin_endpoint.clone(),
                missing_commit_index: Default::default(),
                change_stream_heartbeat: None,
            };
            let where_ = format!(
                "{} ({})",
                ledgerhost_google::SPANNER.endpoint(endpoint.as_deref()),
                cfg.database_path()
            );
            let mut writer = None;
            probe("Spanner", &where_, async {
                writer = Some(SpannerTarget::connect(cfg).await?);
                Ok(())
            })
            .await?;
            Ok(Arc::new(
                writer.context("the Spanner probe returned no client")?,
            ))
        }
        #[cfg(not(feature = "google"))]
        RestoreTarget::Spanner { .. } => anyhow::bail!(
            "restoring into Spanner is not compiled into this build; rebuild with \
             `--features google` (on by default) or restore into sqlite:PATH"
        ),
    }
}
