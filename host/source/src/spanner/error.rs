//! Spanner's errors as the source port's, and the conflicts worth retrying.

use google_cloud_gax::error::rpc::Code;
use ledgerhost_core::{PortError, PortResult};

/// The backend's name in errors.
pub(super) const BACKEND: &str = "spanner";

/// Maps a client error to a port error, keeping `context` (what was being done).
pub(super) fn map_err(context: &str, e: google_cloud_spanner::Error) -> PortError {
    // The emulator fails a transaction another one on the same session replaced with
    // FAILED_PRECONDITION / NOT_FOUND: a conflict, worth retrying, not a wrong request.
    if is_transaction_conflict(&e) {
        return PortError::unavailable(BACKEND, format!("{context}: {e}"));
    }
    ledgerhost_google::grpc::port_error(
        BACKEND,
        e.status().map(|s| s.code),
        format!("{context}: {e}"),
    )
}

/// An abort, or the emulator's way of failing a concurrent read-write transaction.
pub(super) fn is_transaction_conflict(e: &google_cloud_spanner::Error) -> bool {
    match e.status().map(|s| s.code) {
        Some(Code::Aborted) => true,
        Some(Code::NotFound | Code::FailedPrecondition) => {
            let text = e.to_string();
            text.contains("Transaction not found") || text.contains("Invalid transaction ID")
        }
        _ => false,
    }
}

/// Runs a future built by `make` to completion on a blocking thread of the current runtime.
///
/// The transaction runner takes an async closure whose futures borrow the closure's state,
/// and the compiler cannot prove those futures `Send` for every lifetime, which
/// `#[async_trait]` requires; driving them on their own thread sidesteps the bound.
pub(super) async fn run_detached<F, Fut, T>(make: F) -> PortResult<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(make()))
        .await
        .map_err(|e| {
            PortError::unavailable(
                BACKEND,
                format!("Spanner read-write transaction task failed: {e}"),
            )
        })
}
