//! Blocking backend work (SQLite, files) run off the async runtime.

/// Runs blocking work off the async runtime, mapping a panicked task to an error.
pub(crate) async fn blocking<T, F>(backend: &'static str, f: F) -> ledgerhost_core::PortResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> ledgerhost_core::PortResult<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ledgerhost_core::PortError::Unavailable {
            backend,
            message: format!("task failed: {e}"),
        })?
}
