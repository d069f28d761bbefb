//! What the `[blobstore]`, `[keyvalue]` and `[warehouse]` settings of each capability folder
//! share.

use std::path::{Path, PathBuf};
#[cfg(any(feature = "gcs", feature = "redis", feature = "bigquery"))]
use std::{future::Future, sync::Arc};

#[cfg(any(feature = "gcs", feature = "redis", feature = "bigquery"))]
use crate::probe::{Probe, startup_probe};

/// A refused setting: its key (e.g. `keyvalue.url`) and the problem.
pub type Problem = (String, String);

/// A connected remote backend, probed once before the host starts (it refuses to start
/// without it), with its readiness probe running the same `check`.
#[cfg(any(feature = "gcs", feature = "redis", feature = "bigquery"))]
pub(crate) async fn remote<P, F, Fut>(
    backend: &'static str,
    endpoint: String,
    port: P,
    check: F,
) -> anyhow::Result<(Arc<P>, Option<Probe>)>
where
    P: Send + Sync + 'static,
    F: Fn(Arc<P>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ledgerhost_core::PortResult<()>> + Send + 'static,
{
    let port = Arc::new(port);
    startup_probe(backend, &endpoint, check(port.clone())).await?;
    let probe = Probe::of(backend, endpoint, port.clone(), check);
    Ok((port, Some(probe)))
}

/// Makes `path` absolute against `base` (the config file's directory).
pub(crate) fn absolute(path: &mut PathBuf, base: &Path) {
    if path.is_relative() {
        *path = base.join(&*path);
    }
}

/// A backend kind this build leaves out (its cargo feature is off), refused with one message
/// by the settings check and by the build of the port.
pub(crate) struct LeftOut {
    /// The settings section, e.g. `blobstore`.
    pub section: &'static str,
    /// The refused `kind`, e.g. `gcs`.
    pub kind: &'static str,
    /// The feature of `ledgerhost-capabilities` that compiles it in.
    pub feature: &'static str,
    /// The kind every build has.
    pub instead: &'static str,
}

impl LeftOut {
    fn message(&self) -> String {
        format!(
            "\"{}\" is not compiled into this build (feature `{}` of ledgerhost-capabilities, \
             on in the default `ledgerhost` build); use \"{}\" or build with the feature",
            self.kind, self.feature, self.instead
        )
    }

    /// The problem the settings check reports, on `<section>.kind`.
    pub fn problem(&self) -> Problem {
        (format!("{}.kind", self.section), self.message())
    }

    /// The error building the port gives, should a caller skip the check.
    #[cfg_attr(
        all(feature = "gcs", feature = "redis", feature = "bigquery"),
        allow(dead_code)
    )]
    pub fn error(&self) -> anyhow::Error {
        anyhow::anyhow!("{}.kind = {}", self.section, self.message())
    }
}
