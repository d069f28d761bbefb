//! Pub/Sub's errors as the ledger port's: one mapping of status codes, and the refusal of
//! what Pub/Sub's API cannot do.

use google_cloud_gax::error::rpc::Code;
use ledgerhost_core::PortError;

/// The backend's name in errors.
pub(super) const BACKEND: &str = "pubsub";

/// The gRPC status of a failed call (or the one its HTTP status stands for).
pub(super) fn code_of(e: &google_cloud_pubsub::Error) -> Option<Code> {
    e.status()
        .map(|s| s.code)
        .or_else(|| match e.http_status_code() {
            Some(404) => Some(Code::NotFound),
            Some(409) => Some(Code::AlreadyExists),
            Some(400) => Some(Code::InvalidArgument),
            _ => None,
        })
}

/// A failed admin call about `context` as a port error ([`ledgerhost_google::grpc`]).
pub(super) fn map_err(context: &str, e: &google_cloud_pubsub::Error) -> PortError {
    ledgerhost_google::grpc::port_error(BACKEND, code_of(e), format!("{context}: {e}"))
}

/// Pub/Sub's API has no read of a topic: messages reach a reader only through a
/// subscription, from the time it was created (or sought to).
pub(super) fn no_topic_reads(operation: &'static str) -> PortError {
    PortError::Unsupported {
        backend: BACKEND,
        operation,
        why: "Pub/Sub delivers messages only through subscriptions (there is no API to read \
              a topic); to re-deliver a time range, seek the plugin's subscription \
              (`gcloud pubsub subscriptions seek plugin-<name> --time=...`, which needs \
              `retain-acked-messages` on it) or republish from the source with `ledgerhost backfill`"
            .into(),
    }
}
