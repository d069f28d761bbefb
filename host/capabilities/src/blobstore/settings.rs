//! `[blobstore]`: which store backs the capability, and building it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ledgerhost_core::capabilities::BlobStore;
use serde::Deserialize;

use crate::probe::Probe;
use crate::settings::{Problem, absolute};

/// What a build without the `gcs` feature says of `blobstore.kind = "gcs"`.
#[cfg(not(feature = "gcs"))]
const GCS_LEFT_OUT: crate::settings::LeftOut = crate::settings::LeftOut {
    section: "blobstore",
    kind: "gcs",
    feature: "gcs",
    instead: "local",
};

/// The local store's directory under the data directory, when `path` is not set.
const DEFAULT_DIR: &str = "blobs";

/// The store behind the `blobstore` capability (`[blobstore]`, chosen by `kind`).
#[derive(Debug, Clone, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    deny_unknown_fields
)]
pub enum Settings {
    /// A directory (default `<data-dir>/blobs`).
    Local {
        /// Directory path; relative to the config file.
        #[serde(default)]
        path: Option<PathBuf>,
    },
    /// Cloud Storage: application default credentials, or the emulator through
    /// `STORAGE_EMULATOR_HOST` / an explicit `endpoint`.
    Gcs {
        /// Base URL override, e.g. `http://127.0.0.1:4443`.
        #[serde(default)]
        endpoint: Option<String>,
        /// Project owning the buckets the host creates (required by Google; default: the
        /// environment variable `GOOGLE_CLOUD_PROJECT`).
        #[serde(default)]
        project: Option<String>,
    },
}

impl Default for Settings {
    fn default() -> Self {
        Settings::Local { path: None }
    }
}

impl Settings {
    /// Checks the settings; a problem names its key (`blobstore.<key>`).
    pub fn check(&self) -> Result<(), Problem> {
        match self {
            Settings::Local { .. } => Ok(()),
            #[cfg(feature = "gcs")]
            Settings::Gcs { endpoint, .. } => match endpoint {
                Some(ep) => ledgerhost_google::check_endpoint(ep)
                    .map_err(|p| ("blobstore.endpoint".into(), p)),
                None => Ok(()),
            },
            #[cfg(not(feature = "gcs"))]
            Settings::Gcs { .. } => Err(GCS_LEFT_OUT.problem()),
        }
    }

    /// Gives a Cloud Storage store without a project `project` (the deployment's).
    pub fn default_project(&mut self, project: &str) {
        if let Settings::Gcs { project: p, .. } = self
            && p.is_none()
        {
            *p = Some(project.to_string());
        }
    }

    /// Makes paths absolute against `base` (the config file's directory), defaulting the
    /// local directory into `data_dir`.
    pub fn resolve_paths(&mut self, base: &Path, data_dir: &Path) {
        if let Settings::Local { path } = self {
            absolute(path.get_or_insert_with(|| data_dir.join(DEFAULT_DIR)), base);
        }
    }

    /// Opens or connects the store; a remote one is probed first (the host refuses to start
    /// without it) and comes with its readiness probe.
    pub async fn build(
        &self,
        data_dir: &Path,
    ) -> anyhow::Result<(Arc<dyn BlobStore>, Option<Probe>)> {
        use anyhow::Context;
        match self {
            Settings::Local { path } => {
                let path = path.clone().unwrap_or_else(|| data_dir.join(DEFAULT_DIR));
                let store = super::local::LocalBlobStore::open(&path)
                    .with_context(|| format!("cannot open blob directory {}", path.display()))?;
                Ok((Arc::new(store), None))
            }
            #[cfg(feature = "gcs")]
            Settings::Gcs { endpoint, project } => {
                use super::gcs::{GcsBlobStore, GcsConfig};
                let store = GcsBlobStore::connect(GcsConfig {
                    endpoint: endpoint.clone(),
                    project: project.clone(),
                    ..GcsConfig::default()
                })
                .context("cannot set up the Cloud Storage client")?;
                let where_ = store.endpoint().to_string();
                let (store, probe) =
                    crate::settings::remote("Cloud Storage", where_, store, |s| async move {
                        s.check().await
                    })
                    .await?;
                Ok((store, probe))
            }
            #[cfg(not(feature = "gcs"))]
            Settings::Gcs { .. } => Err(GCS_LEFT_OUT.error()),
        }
    }
}
