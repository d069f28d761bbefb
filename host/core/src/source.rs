//! The source port: where committed rows are read from (SQLite embedded, Spanner in production).

use async_trait::async_trait;

use crate::{PortResult, TableSchema, Value};

/// How a table is captured, from the host configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    /// Table name in the source.
    pub name: String,
    /// Commit-timestamp column; when `None` the source looks for its single commit-ts column.
    pub commit_ts_column: Option<String>,
    /// Soft-delete column: rows where it is true are published as tombstones.
    pub deleted_column: Option<String>,
}

/// One committed row, values in [`TableSchema::columns`] order.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub values: Vec<Value>,
    /// Commit timestamp, microseconds since the Unix epoch (the commit-ts column's value).
    pub commit_ts: i64,
}

/// A keyset position: the (commit timestamp, primary key) of the last row read.
/// An empty `key` means "before every key at `commit_ts`", i.e. rows with a later timestamp only.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Position {
    pub commit_ts: i64,
    pub key: Vec<Value>,
}

impl Position {
    /// The position just after every row committed at or before `commit_ts`.
    pub fn after_ts(commit_ts: i64) -> Self {
        Position {
            commit_ts,
            key: Vec::new(),
        }
    }
}

/// A source of committed rows.
#[async_trait]
pub trait Source: Send + Sync {
    /// Backend name for logs and errors ("sqlite", "spanner").
    fn backend(&self) -> &'static str;

    /// Checks a table can be captured and returns its schema. Idempotent. A table without a
    /// commit-timestamp column is refused with an error saying how to add one.
    async fn prepare_table(&self, spec: &TableSpec) -> PortResult<TableSchema>;

    /// Opens a consistent read-only snapshot.
    async fn snapshot(&self) -> PortResult<Box<dyn Snapshot>>;

    /// Takes or renews the lease `name` for `holder` until `ttl` from now, stored in the
    /// source itself so every host replica sees it. `held` is true when `holder` now holds
    /// it; false when another holder's lease has not expired. Only the holder of a table's
    /// lease polls that table (single writer per topic).
    ///
    /// The lease row also carries the holder's progress (the poller's watermark), so a
    /// replica taking the lease over resumes where the last holder got to: a `Some`
    /// `progress` is stored when the lease is held; the returned `progress` is the row's.
    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
        progress: Option<i64>,
    ) -> PortResult<Lease>;

    /// Gives the lease up early (on clean shutdown) so another replica takes over at once;
    /// its progress stays for the next holder.
    async fn release_lease(&self, name: &str, holder: &str) -> PortResult<()>;
}

/// A lease as [`Source::try_lease`] left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The caller holds the lease.
    pub held: bool,
    /// The progress stored with the lease, if any holder stored one.
    pub progress: Option<i64>,
}

/// A consistent read-only view of the source at one read point.
#[async_trait]
pub trait Snapshot: Send {
    /// The read point R in microseconds: every commit with a timestamp <= R is visible in
    /// this snapshot, and no commit that is not visible can ever get a timestamp <= R.
    fn read_ts(&self) -> i64;

    /// The table's schema as of this snapshot (columns may have been added or dropped).
    async fn schema(&mut self, spec: &TableSpec) -> PortResult<TableSchema>;

    /// Up to `limit` rows with (commit_ts, key) > `after` and commit_ts <= [`Self::read_ts`],
    /// ordered by (commit_ts, primary key).
    async fn page(
        &mut self,
        table: &TableSchema,
        after: &Position,
        limit: usize,
    ) -> PortResult<Vec<Row>>;
}
