//! A failed gRPC call as a port error: one rule for every Google backend that speaks gRPC
//! (Spanner, Pub/Sub's admin API), by the status codes of
//! <https://cloud.google.com/apis/design/errors#handling_errors>.

use google_cloud_gax::error::rpc::Code;
use ledgerhost_core::PortError;

/// The port error of a call that failed with status `code` (`None`: no status came back, a
/// transport failure). `NOT_FOUND` names what is missing; `INVALID_ARGUMENT`,
/// `FAILED_PRECONDITION` and `PERMISSION_DENIED` need a fix, not a retry; every other code
/// (`UNAVAILABLE`, `ABORTED`, `DEADLINE_EXCEEDED`, ...) is worth retrying.
pub fn port_error(backend: &'static str, code: Option<Code>, message: String) -> PortError {
    match code {
        Some(Code::NotFound) => PortError::NotFound {
            backend,
            what: message,
        },
        Some(Code::InvalidArgument | Code::FailedPrecondition | Code::PermissionDenied) => {
            PortError::invalid(backend, message)
        }
        _ => PortError::unavailable(backend, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_retry_fix_or_missing() {
        let e = |code| port_error("x", code, "m".into());
        assert!(matches!(
            e(Some(Code::NotFound)),
            PortError::NotFound { .. }
        ));
        for code in [
            Code::InvalidArgument,
            Code::FailedPrecondition,
            Code::PermissionDenied,
        ] {
            assert!(matches!(e(Some(code)), PortError::Invalid { .. }));
        }
        for code in [Some(Code::Unavailable), Some(Code::Aborted), None] {
            assert!(e(code).is_transient());
        }
    }
}
