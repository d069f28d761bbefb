//! `[warehouse]`: which warehouse backs the capability, and building it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ledgerhost_core::capabilities::Warehouse;
use serde::Deserialize;

use crate::probe::Probe;
use crate::settings::{Problem, absolute};

/// What a build without the `bigquery` feature says of `warehouse.kind = "bigquery"`.
#[cfg(not(feature = "bigquery"))]
const BIGQUERY_LEFT_OUT: crate::settings::LeftOut = crate::settings::LeftOut {
    section: "warehouse",
    kind: "bigquery",
    feature: "bigquery",
    instead: "sqlite",
};

/// The SQLite warehouse's file under the data directory, when `path` is not set.
const DEFAULT_FILE: &str = "warehouse.db";

/// The warehouse behind the `warehouse` capability (`[warehouse]`, chosen by `kind`).
#[derive(Debug, Clone, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    deny_unknown_fields
)]
pub enum Settings {
    /// An SQLite file (default `<data-dir>/warehouse.db`).
    Sqlite {
        /// SQLite file path; relative to the config file.
        #[serde(default)]
        path: Option<PathBuf>,
    },
    /// BigQuery: application default credentials, or an emulator through
    /// `BIGQUERY_EMULATOR_HOST` / an explicit `endpoint`.
    Bigquery {
        /// Default: the environment variable `GOOGLE_CLOUD_PROJECT`.
        #[serde(default)]
        project: String,
        /// BigQuery dataset that holds the tables.
        dataset: String,
        /// Base URL override, e.g. `http://127.0.0.1:9050`.
        #[serde(default)]
        endpoint: Option<String>,
        /// Location of the dataset if the host creates it (e.g. `EU`).
        #[serde(default)]
        location: Option<String>,
    },
}

impl Default for Settings {
    fn default() -> Self {
        Settings::Sqlite { path: None }
    }
}

impl Settings {
    /// Checks the settings; a problem names its key (`warehouse.<key>`).
    pub fn check(&self) -> Result<(), Problem> {
        match self {
            Settings::Sqlite { .. } => Ok(()),
            #[cfg(feature = "bigquery")]
            Settings::Bigquery {
                project,
                dataset,
                endpoint,
                ..
            } => {
                if project.trim().is_empty() {
                    return Err((
                        "warehouse.project".into(),
                        ledgerhost_google::missing_project("warehouse.kind = \"bigquery\""),
                    ));
                }
                if dataset.trim().is_empty() {
                    return Err((
                        "warehouse.dataset".into(),
                        "must be set when warehouse.kind = \"bigquery\"".into(),
                    ));
                }
                match endpoint {
                    Some(ep) => ledgerhost_google::check_endpoint(ep)
                        .map_err(|p| ("warehouse.endpoint".into(), p)),
                    None => Ok(()),
                }
            }
            #[cfg(not(feature = "bigquery"))]
            Settings::Bigquery { .. } => Err(BIGQUERY_LEFT_OUT.problem()),
        }
    }

    /// Gives a BigQuery warehouse without a project `project` (the deployment's).
    pub fn default_project(&mut self, project: &str) {
        if let Settings::Bigquery { project: p, .. } = self
            && p.trim().is_empty()
        {
            *p = project.to_string();
        }
    }

    /// Makes paths absolute against `base` (the config file's directory), defaulting the
    /// SQLite file into `data_dir`.
    pub fn resolve_paths(&mut self, base: &Path, data_dir: &Path) {
        if let Settings::Sqlite { path } = self {
            absolute(
                path.get_or_insert_with(|| data_dir.join(DEFAULT_FILE)),
                base,
            );
        }
    }

    /// Opens or connects the warehouse; a remote one is probed first (the host refuses to
    /// start without it) and comes with its readiness probe.
    pub async fn build(
        &self,
        data_dir: &Path,
    ) -> anyhow::Result<(Arc<dyn Warehouse>, Option<Probe>)> {
        use anyhow::Context;
        match self {
            Settings::Sqlite { path } => {
                let path = path.clone().unwrap_or_else(|| data_dir.join(DEFAULT_FILE));
                let w = super::sqlite::SqliteWarehouse::open(&path)
                    .with_context(|| format!("cannot open warehouse file {}", path.display()))?;
                Ok((Arc::new(w), None))
            }
            #[cfg(feature = "bigquery")]
            Settings::Bigquery {
                project,
                dataset,
                endpoint,
                location,
            } => {
                use super::bigquery::{BigQueryConfig, BigQueryWarehouse};
                let mut cfg = BigQueryConfig::new(project.clone(), dataset.clone());
                cfg.endpoint = endpoint.clone();
                cfg.location = location.clone();
                let where_ = format!(
                    "{} (dataset {project}.{dataset})",
                    ledgerhost_google::BIGQUERY.endpoint(endpoint.as_deref())
                );
                let w = BigQueryWarehouse::connect(cfg)
                    .await
                    .with_context(|| format!("cannot set up the BigQuery client for {where_}"))?;
                let (w, probe) =
                    crate::settings::remote(
                        "BigQuery",
                        where_,
                        w,
                        |w| async move { w.check().await },
                    )
                    .await?;
                Ok((w, probe))
            }
            #[cfg(not(feature = "bigquery"))]
            Settings::Bigquery { .. } => Err(BIGQUERY_LEFT_OUT.error()),
        }
    }
}
