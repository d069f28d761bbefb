//! Reachability checks of the capabilities' remote backends: a [`Probe`] for `/readyz` and
//! [`startup_probe`] for start-up, each with its own timeout.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

type CheckFuture = Pin<Box<dyn Future<Output = ledgerhost_core::PortResult<()>> + Send + 'static>>;

/// How long a start-up probe of a remote backend may take before the host refuses to start.
pub const STARTUP_PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs a backend's start-up probe with [`STARTUP_PROBE_TIMEOUT`]; the error names the
/// backend, the endpoint and what to check.
pub async fn startup_probe<F>(backend: &str, endpoint: &str, check: F) -> anyhow::Result<()>
where
    F: Future<Output = ledgerhost_core::PortResult<()>>,
{
    match tokio::time::timeout(STARTUP_PROBE_TIMEOUT, check).await {
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
            STARTUP_PROBE_TIMEOUT.as_secs()
        )),
    }
}

/// How long `/readyz` waits for one remote backend before calling the host not ready.
pub const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A reachability check of one remote backend (embedded backends are files in this process
/// and have none).
#[derive(Clone)]
pub struct Probe {
    /// The backend's name for people: "Redis", "Pub/Sub", ...
    pub backend: &'static str,
    /// Where it is, without secrets.
    pub endpoint: String,
    check: Arc<dyn Fn() -> CheckFuture + Send + Sync>,
}

impl Probe {
    /// A probe that runs `check(target)`.
    pub fn of<P, F, Fut>(backend: &'static str, endpoint: String, target: Arc<P>, check: F) -> Probe
    where
        P: Send + Sync + ?Sized + 'static,
        F: Fn(Arc<P>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ledgerhost_core::PortResult<()>> + Send + 'static,
    {
        Probe {
            backend,
            endpoint,
            check: Arc::new(move || Box::pin(check(target.clone()))),
        }
    }

    /// Runs the check once, without a timeout.
    pub async fn check(&self) -> ledgerhost_core::PortResult<()> {
        (self.check)().await
    }

    /// Ok when the backend answered within [`READY_PROBE_TIMEOUT`]; else why not.
    pub async fn run(&self) -> Result<(), String> {
        match tokio::time::timeout(READY_PROBE_TIMEOUT, (self.check)()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("{} at {}: {e}", self.backend, self.endpoint)),
            Err(_) => Err(format!(
                "{} at {}: no answer within {}s",
                self.backend,
                self.endpoint,
                READY_PROBE_TIMEOUT.as_secs()
            )),
        }
    }
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("backend", &self.backend)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}
