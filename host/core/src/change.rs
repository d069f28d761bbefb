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

    /// Starts reading `stream`'s changes of `schema`'s table from `start`, every partition
    /// queried here.
    async fn read_stream(
        &self,
        schema: &TableSchema,
        stream: &str,
        start: StreamStart,
    ) -> PortResult<Box<dyn ChangeReader>>;

    /// As [`ChangeCapture::read_stream`], with the partitions read by whichever replica
    /// holds them: each is offered under `unit` ([`ChangeCapture::partition_offers`]), read
    /// there ([`ChangeCapture::read_partition`]) and handed over to this reader, which merges
    /// them in the same order. Offers of an earlier shared read of `unit` are withdrawn.
    async fn read_stream_shared(
        &self,
        schema: &TableSchema,
        stream: &str,
        start: StreamStart,
        unit: &str,
    ) -> PortResult<Box<dyn ChangeReader>>;

    /// The partitions a shared read of `unit` offers now.
    async fn partition_offers(&self, unit: &str) -> PortResult<Vec<PartitionOffer>>;

    /// Starts querying an offered partition on this replica, handing what it returns over
    /// to the shared read that offered it; the query stops when the returned read is dropped.
    async fn read_partition(
        &self,
        stream: &str,
        unit: &str,
        offer: &PartitionOffer,
    ) -> PortResult<Box<dyn PartitionRead>>;
}

/// One partition a shared read offers to whichever replica takes its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffer {
    /// A short name of the partition, stable for its life (its lease's and the status page's).
    pub id: String,
    /// The token its query takes (empty for the stream's root query).
    pub token: String,
    /// The shared read that offers it: a read of an older epoch stops (the merging replica
    /// changed, or read again from its stored progress).
    pub epoch: i64,
    /// Query it from this time (µs, inclusive); moves on while the shared read receives.
    pub start: i64,
}

/// A partition query running on this replica for a shared read.
pub trait PartitionRead: Send {
    /// `Some(Ok)` once the partition ended and everything it returned was handed over,
    /// `Some(Err)` when its query failed for good (the shared read fails with the same
    /// error), `None` while it runs. Transient failures are retried inside.
    fn finished(&mut self) -> Option<PortResult<()>>;
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
