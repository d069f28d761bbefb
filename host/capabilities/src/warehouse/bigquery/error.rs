//! BigQuery's errors as the port's, saying what to do: an answer's HTTP status, and the
//! errors a query job reports in its answer.

use gcp_bigquery_client::error::BQError;
use ledgerhost_core::{PortError, PortResult};

/// The backend's name in errors.
pub(super) const BACKEND: &str = "bigquery warehouse";

/// HTTP status of an API error, if the failure was an answer.
pub(super) fn status(e: &BQError) -> Option<i64> {
    match e {
        BQError::ResponseError { error } => Some(error.error.code),
        _ => None,
    }
}

/// Maps a client error about `what` to a port error saying what to do.
pub(super) fn map_err(what: &str, e: BQError) -> PortError {
    match status(&e) {
        Some(400) => PortError::invalid(BACKEND, format!("{what}: rejected: {e}")),
        Some(404) => PortError::NotFound {
            backend: BACKEND,
            what: format!("{what} ({e})"),
        },
        Some(401 | 403) => PortError::unavailable(
            BACKEND,
            format!(
                "{what}: access denied: {e}; grant the host's service account \
             roles/bigquery.dataEditor on the dataset and roles/bigquery.jobUser on the project \
             (retried until it is)"
            ),
        ),
        _ => PortError::unavailable(BACKEND, format!("{what}: {e}")),
    }
}

/// Fails on errors a query job reported in its answer; backend-side ones are retryable.
pub(super) fn check_job(
    what: &str,
    errors: Option<&Vec<gcp_bigquery_client::model::error_proto::ErrorProto>>,
) -> PortResult<()> {
    let Some(errors) = errors.filter(|e| !e.is_empty()) else {
        return Ok(());
    };
    let text = errors
        .iter()
        .map(|e| {
            format!(
                "{}: {}",
                e.reason.as_deref().unwrap_or("error"),
                e.message.as_deref().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let transient = errors.iter().any(|e| {
        matches!(
            e.reason.as_deref(),
            Some("backendError" | "internalError" | "rateLimitExceeded" | "jobRateLimitExceeded")
        ) || e
            .message
            .as_deref()
            .is_some_and(|m| m.contains("concurrent update"))
    });
    Err(if transient {
        PortError::unavailable(BACKEND, format!("{what}: {text}"))
    } else {
        PortError::invalid(BACKEND, format!("{what}: {text}"))
    })
}
