//! Capture by change stream: a source that can read a table's changes from a log of them
//! (Spanner's change streams) instead of being polled by commit timestamp. Only the Spanner
//! source implements it; the host holds it beside its [`crate::source::Source`] when the
//! configured source has one.

use std::time::Duration;

use async_trait::async_trait;

use crate::source::{Row, TableSpec};
use crate::{PortResult, TableSchema};

/// The columns the host adds to a table captured by change stream, when the table has no
/// column in that role: they travel in every event like the table's own, and are never
/// written back to the source (restore leaves them out).
pub mod virtual_columns {
    /// The commit timestamp of the change (a table without a commit-timestamp column).
    pub const COMMIT_TS: &str = "ledgerhost_commit_ts";
    /// True for a hard `DELETE` (a table without a soft-delete column).
    pub const DELETED: &str = "ledgerhost_deleted";

    /// True for a column the host added, not the source table's own.
    pub fn is_virtual(column: &str) -> bool {
        column == COMMIT_TS || column == DELETED
    }
}

/// Where a change stream reader starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamStart {
    /// At this time (µs since the epoch, inclusive).
    At(i64),
    /// Where a reader's [`ChangePage::progress`] says (exactly after its last change).
    Progress(String),
}

/// Changes of one table, released in commit order.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangePage {
    /// The changed rows (a delete as a tombstone), in commit order; a transaction's rows in
    /// the order it wrote them.
    pub rows: Vec<Row>,
    /// What to store with the page to resume exactly after it ([`StreamStart::Progress`]).
    pub progress: String,
    /// Every change committed at or before this time (µs) has been released.
    pub watermark: i64,
}

/// A source's change streams.
#[async_trait]
pub trait ChangeCapture: Send + Sync {
    /// Checks `stream` watches `table` with whole rows and returns the schema its events
    /// carry (the table's columns, and the [`virtual_columns`] it lacks). A stream that
    /// cannot give whole rows is refused with the DDL that fixes it.
    async fn prepare_stream(&self, table: &TableSpec, stream: &str) -> PortResult<TableSchema>;

    /// Starts reading `stream`'s changes of `schema`'s table from `start`.
    async fn read_stream(
        &self,
        schema: &TableSchema,
        stream: &str,
        start: StreamStart,
    ) -> PortResult<Box<dyn ChangeReader>>;
}

/// A running read of one table's changes.
#[async_trait]
pub trait ChangeReader: Send + Sync {
    /// The changes released since the last call: waits up to `wait` for at least one,
    /// returns whole transactions' records up to about `max_rows` rows (a record is never
    /// split, so one large transaction can exceed it). An empty page when none came.
    async fn next_page(&mut self, max_rows: usize, wait: Duration) -> PortResult<ChangePage>;

    /// The partitions being read, with the time each has returned everything through.
    fn partitions(&self) -> Vec<(String, i64)>;
}
