//! What the `[blobstore]`, `[keyvalue]` and `[warehouse]` settings of each capability folder
//! share.

use std::path::{Path, PathBuf};
#[cfg(any(feature = "gcs", feature = "redis", feature = "bigquery"))]
use std::{future::Future, sync::Arc};

#[cfg(any(feature = "gcs", feature = "redis", feature = "bigquery"))]
use crate::capability::{Probe, startup_probe};

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
