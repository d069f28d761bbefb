//! The event model and the ports of ledgerhost.
//!
//! Data flows one way: [`source::Source`] → poller → [`ledger::Ledger`] → dispatcher →
//! plugin → capabilities ([`capabilities::BlobStore`], [`capabilities::KeyValue`],
//! [`capabilities::Warehouse`], [`ledger::Ledger`] publish). Every port is a small trait
//! with an embedded implementation and a cloud one; the rest of the host depends only on
//! these traits. `ledgerhost restore` writes rows back through [`target::TableWriter`].

pub mod capabilities;
pub mod change;
pub mod clock;
pub mod event;
pub mod hash;
pub mod ledger;
pub mod schema;
pub mod source;
pub mod target;

pub use event::{Disposition, Event, EventId, Field, Value};
pub use schema::{Column, ColumnType, TableSchema};

/// Error returned by a port. Every variant says what failed and where.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The backend could not be reached or failed; retrying may help.
    #[error("{backend} unavailable: {message}")]
    Unavailable {
        /// Name of the backend that failed (e.g. `"sqlite"`, `"s3"`).
        backend: &'static str,
        /// Human-readable detail of the failure, as reported by the backend.
        message: String,
    },
    /// The request is wrong and retrying will not help (bad name, bad schema, ...).
    #[error("invalid request to {backend}: {message}")]
    Invalid {
        /// Name of the backend that failed (e.g. `"sqlite"`, `"s3"`).
        backend: &'static str,
        /// Human-readable detail of the failure, as reported by the backend.
        message: String,
    },
    /// A named thing (table, topic, subscription, object) does not exist.
    #[error("{backend}: {what} not found")]
    NotFound {
        /// Name of the backend that was asked.
        backend: &'static str,
        /// Description of the missing thing (its kind and name).
        what: String,
    },
    /// Stored data could not be read back (corruption, schema drift).
    #[error("{backend}: corrupt data: {message}")]
    Corrupt {
        /// Name of the backend that failed (e.g. `"sqlite"`, `"s3"`).
        backend: &'static str,
        /// Human-readable detail of the failure, as reported by the backend.
        message: String,
    },
    /// The backend has no such operation (its API cannot do it); `why` says what to use
    /// instead. Retrying will not help.
    #[error("{backend} cannot {operation}: {why}")]
    Unsupported {
        /// Name of the backend that failed (e.g. `"sqlite"`, `"s3"`).
        backend: &'static str,
        /// The operation the backend cannot perform.
        operation: &'static str,
        /// Why it cannot, and what to use instead.
        why: String,
    },
}

impl PortError {
    /// `backend` could not be reached or failed; retrying may help.
    pub fn unavailable(backend: &'static str, message: impl std::fmt::Display) -> PortError {
        PortError::Unavailable {
            backend,
            message: message.to_string(),
        }
    }

    /// The request to `backend` is wrong; retrying will not help.
    pub fn invalid(backend: &'static str, message: impl std::fmt::Display) -> PortError {
        PortError::Invalid {
            backend,
            message: message.to_string(),
        }
    }

    /// `what` does not exist in `backend`.
    pub fn not_found(backend: &'static str, what: impl std::fmt::Display) -> PortError {
        PortError::NotFound {
            backend,
            what: what.to_string(),
        }
    }

    /// Data stored in `backend` could not be read back.
    pub fn corrupt(backend: &'static str, message: impl std::fmt::Display) -> PortError {
        PortError::Corrupt {
            backend,
            message: message.to_string(),
        }
    }

    /// True when a retry of the same request may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, PortError::Unavailable { .. })
    }
}

/// Result type of every port.
pub type PortResult<T> = Result<T, PortError>;
