//! The source port: where committed rows are read from (SQLite embedded, Spanner in production).

use async_trait::async_trait;

use crate::{PortResult, TableSchema, Value};

/// How a table is captured, from the host configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableSpec {
    /// Table name in the source.
    pub name: String,
    /// Commit-timestamp column; when `None` the source looks for its single commit-ts column.
    pub commit_ts_column: Option<String>,
    /// Soft-delete column: rows where it is true are published as tombstones.
    pub deleted_column: Option<String>,
    /// How the table's rows are split among pollers (one shard by default).
    pub sharding: Sharding,
}

/// How a table's rows are split among pollers: `count` shards, by the value of `column`
/// (an INT64 the application derives from the primary key) or, without one, by a hash of
/// the primary key. Every row falls in exactly one shard, and all rows of one key in the
/// same one, so per-key order holds across shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sharding {
    /// Number of shards, at least 1 (1: the table is polled whole, as without sharding).
    pub count: u32,
    /// The shard column; `None` shards by a hash of the primary key.
    pub column: Option<String>,
}

impl Default for Sharding {
    fn default() -> Self {
        Sharding {
            count: 1,
            column: None,
        }
    }
}

impl Sharding {
    /// Most shards a table may have.
    pub const MAX_COUNT: u32 = 1024;

    /// Checks the sharding against the table's schema: a count in `1..=MAX_COUNT`, and a
    /// shard column that exists and is a non-key-changing INT64 (the sources call this when
    /// preparing the table, so a wrong setting stops the host at start, naming the fix).
    pub fn check(&self, schema: &crate::TableSchema) -> Result<(), String> {
        if !(1..=Self::MAX_COUNT).contains(&self.count) {
            return Err(format!(
                "table `{}`: shards = {} (must be 1 to {})",
                schema.name,
                self.count,
                Self::MAX_COUNT
            ));
        }
        let Some(column) = &self.column else {
            return Ok(());
        };
        match schema.columns.iter().find(|c| &c.name == column) {
            None => Err(format!(
                "table `{}` has no shard column `{column}`: add an INT64 column the application \
                 derives from the primary key (e.g. a stored generated column \
                 `MOD(MOD(FARM_FINGERPRINT(CAST(Id AS STRING)), {n}) + {n}, {n})`), or drop \
                 `shard-column` to shard by a hash of the primary key",
                schema.name,
                n = self.count
            )),
            Some(c) if c.ty != crate::ColumnType::Int64 => Err(format!(
                "table `{}`: shard column `{column}` is {:?}, it must be INT64",
                schema.name, c.ty
            )),
            Some(_) => Ok(()),
        }
    }

    /// Shard `index` of this sharding.
    pub fn shard(&self, index: u32) -> Shard {
        Shard {
            index,
            count: self.count,
            column: self.column.clone(),
        }
    }
}

/// One shard of a table: the rows a single poller reads.
///
/// With a shard column, shard `i` holds the rows whose column value is `i`, and shard 0
/// also every row whose value is NULL or outside `0..count` (so no row is left unpolled
/// by a value the application got wrong). Without one, shard `i` holds the rows whose
/// primary-key hash (the source's own, stable for a key) is `i` modulo `count`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// This shard's index, `0..count`.
    pub index: u32,
    /// Number of shards of the table.
    pub count: u32,
    /// The shard column, or `None` for the primary-key hash.
    pub column: Option<String>,
}

impl Shard {
    /// The whole table as one shard.
    pub const WHOLE: Shard = Shard {
        index: 0,
        count: 1,
        column: None,
    };

    /// True when this shard is the whole table (no predicate to add).
    pub fn is_whole(&self) -> bool {
        self.count <= 1
    }

    /// The name a shard's lease, progress record, watermark file and metrics go by: the
    /// table's own name for an unsharded table (so nothing changes without sharding), else
    /// `<table>.shard-<i>-of-<n>` (Spanner and SQLite table names cannot hold `.`).
    pub fn unit_name(&self, table: &str) -> String {
        if self.is_whole() {
            table.to_string()
        } else {
            format!("{table}.shard-{}-of-{}", self.index, self.count)
        }
    }

    /// The `(index, count)` of a name [`Shard::unit_name`] made for `table`: `(0, 1)` for
    /// the table's own name, `None` for a name of another table.
    pub fn parse_unit_name(table: &str, name: &str) -> Option<(u32, u32)> {
        if name == table {
            return Some((0, 1));
        }
        let rest = name.strip_prefix(table)?.strip_prefix(".shard-")?;
        let (index, count) = rest.split_once("-of-")?;
        let (index, count) = (index.parse().ok()?, count.parse().ok()?);
        (index < count && count > 1).then_some((index, count))
    }

    /// The primary-key hash of the embedded source and of tests: FNV-1a over the key's
    /// values' text, each followed by a 0x1f separator, modulo `count`.
    pub fn of_key_text<'a>(parts: impl IntoIterator<Item = &'a [u8]>, count: u32) -> u32 {
        let mut h = crate::hash::Fnv1a::default();
        for part in parts {
            h.write(part);
            h.write(&[0x1f]);
        }
        (h.finish() % u64::from(count.max(1))) as u32
    }
}

/// One committed row, values in [`TableSchema::columns`] order.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Column values, one per schema column.
    pub values: Vec<Value>,
    /// Commit timestamp, microseconds since the Unix epoch (the commit-ts column's value).
    pub commit_ts: i64,
}

/// A keyset position: the (commit timestamp, primary key) of the last row read.
/// An empty `key` means "before every key at `commit_ts`", i.e. rows with a later timestamp only.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Position {
    /// Commit timestamp of the last row read, microseconds since the Unix epoch.
    pub commit_ts: i64,
    /// Primary-key values of the last row read, in key order.
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
    /// This is a read-write transaction: callers renew a held lease at most every third of
    /// its TTL and, while another replica holds it, watch it with [`Source::read_lease`]
    /// instead, calling this only once the lease has expired.
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

    /// Reads the lease `name` without taking it and without a read-write transaction (a
    /// single-use read on Spanner), judged by the source's clock: `held` is true when
    /// `holder` holds it and it has not expired; `remaining` is how long its current
    /// holder (whoever it is) still holds it, zero when it expired, was released or was
    /// never taken.
    async fn read_lease(&self, name: &str, holder: &str) -> PortResult<Lease>;

    /// Gives the lease up early (on clean shutdown) so another replica takes over at once,
    /// storing `progress` (when `Some`) with it, in one transaction; the progress stays for
    /// the next holder.
    async fn release_lease(
        &self,
        name: &str,
        holder: &str,
        progress: Option<i64>,
    ) -> PortResult<()>;

    /// Every lease whose name starts with `prefix`, judged by the source's clock, in name
    /// order (one read-only query): who holds which shard, which replicas are live, and
    /// where the shards of an earlier shard layout got to.
    async fn leases(&self, prefix: &str) -> PortResult<Vec<LeaseInfo>>;

    /// How many transactions this source ran, by kind and purpose (for `/metrics`). A
    /// source that does not count returns nothing.
    fn transactions(&self) -> Vec<TransactionCount> {
        Vec::new()
    }
}

/// A lease as [`Source::try_lease`] left it or [`Source::read_lease`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The caller holds the lease.
    pub held: bool,
    /// The progress stored with the lease, if any holder stored one.
    pub progress: Option<i64>,
    /// Time left until the lease expires, by the source's clock (for the caller if `held`,
    /// else for its current holder); zero when nobody holds it.
    pub remaining: std::time::Duration,
}

/// One lease as [`Source::leases`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The lease's name.
    pub name: String,
    /// Its last holder (also after it expired or was released).
    pub holder: String,
    /// Time left until it expires, by the source's clock; zero when expired or released.
    pub remaining: std::time::Duration,
    /// The progress stored with it, if any holder stored one.
    pub progress: Option<i64>,
}

/// What a source transaction was: a read-write transaction (locks, commit) or a read-only
/// one (a snapshot or a single-use read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TransactionKind {
    /// A read-write transaction (takes locks and commits).
    ReadWrite,
    /// A read-only transaction (a snapshot or a single-use read).
    ReadOnly,
}

impl TransactionKind {
    /// Every kind, in metric-label order.
    pub const ALL: [TransactionKind; 2] = [TransactionKind::ReadWrite, TransactionKind::ReadOnly];

    /// The metric label: `read_write`, `read_only`.
    pub fn label(self) -> &'static str {
        match self {
            TransactionKind::ReadWrite => "read_write",
            TransactionKind::ReadOnly => "read_only",
        }
    }
}

/// Why a source transaction ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TransactionPurpose {
    /// A poll's snapshot (SQLite: also the short write that closes the commit epoch).
    PollSnapshot,
    /// Schema, index and lease-table checks (`INFORMATION_SCHEMA`, capture triggers).
    Schema,
    /// Renewing a lease this replica holds.
    LeaseRenew,
    /// Trying to take a lease this replica does not hold (free, expired or another's).
    LeaseTake,
    /// Reading a lease without taking it.
    LeaseRead,
    /// Giving a lease up at shutdown.
    Release,
    /// Readiness and start-up probes.
    Probe,
    /// A shared change-stream read's hand-over: partition offers and the records a
    /// partition read on one replica passes to the replica merging the stream.
    HandOver,
}

impl TransactionPurpose {
    /// Every purpose, in metric-label order.
    pub const ALL: [TransactionPurpose; 8] = [
        TransactionPurpose::PollSnapshot,
        TransactionPurpose::Schema,
        TransactionPurpose::LeaseRenew,
        TransactionPurpose::LeaseTake,
        TransactionPurpose::LeaseRead,
        TransactionPurpose::Release,
        TransactionPurpose::Probe,
        TransactionPurpose::HandOver,
    ];

    /// The metric label: `poll_snapshot`, `schema`, `lease_renew`, `lease_take`,
    /// `lease_read`, `release`, `probe`, `hand_over`.
    pub fn label(self) -> &'static str {
        match self {
            TransactionPurpose::PollSnapshot => "poll_snapshot",
            TransactionPurpose::Schema => "schema",
            TransactionPurpose::LeaseRenew => "lease_renew",
            TransactionPurpose::LeaseTake => "lease_take",
            TransactionPurpose::LeaseRead => "lease_read",
            TransactionPurpose::Release => "release",
            TransactionPurpose::Probe => "probe",
            TransactionPurpose::HandOver => "hand_over",
        }
    }
}

/// One counter of [`Source::transactions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransactionCount {
    /// Whether the transactions were read-write or read-only.
    pub kind: TransactionKind,
    /// Why the transactions ran.
    pub purpose: TransactionPurpose,
    /// Number of transactions of this kind and purpose since start.
    pub count: u64,
}

/// The `(lease, holder)` pairs a source last saw held, so a `try_lease` of one is counted as a
/// renewal and any other as a take.
#[derive(Debug, Default)]
pub struct HeldLeases(std::sync::Mutex<std::collections::HashSet<(String, String)>>);

impl HeldLeases {
    fn pairs(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<(String, String)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What a `try_lease` of `name` by `holder` is now: a renewal or a take.
    pub fn purpose_of_try(&self, name: &str, holder: &str) -> TransactionPurpose {
        if self
            .pairs()
            .contains(&(name.to_string(), holder.to_string()))
        {
            TransactionPurpose::LeaseRenew
        } else {
            TransactionPurpose::LeaseTake
        }
    }

    /// Records whether `holder` holds `name` after a try (an error counts as not held).
    pub fn record(&self, name: &str, holder: &str, held: bool) {
        let pair = (name.to_string(), holder.to_string());
        if held {
            self.pairs().insert(pair);
        } else {
            self.pairs().remove(&pair);
        }
    }
}

/// Transaction counters by kind and purpose, for a source to keep.
#[derive(Debug, Default)]
pub struct TransactionCounters {
    counts:
        [[std::sync::atomic::AtomicU64; TransactionPurpose::ALL.len()]; TransactionKind::ALL.len()],
}

impl TransactionCounters {
    /// Counts one transaction.
    pub fn record(&self, kind: TransactionKind, purpose: TransactionPurpose) {
        self.counts[kind as usize][purpose as usize]
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The counters that are not zero, by kind then purpose.
    pub fn snapshot(&self) -> Vec<TransactionCount> {
        let mut out = Vec::new();
        for kind in TransactionKind::ALL {
            for purpose in TransactionPurpose::ALL {
                let count = self.counts[kind as usize][purpose as usize]
                    .load(std::sync::atomic::Ordering::Relaxed);
                if count > 0 {
                    out.push(TransactionCount {
                        kind,
                        purpose,
                        count,
                    });
                }
            }
        }
        out
    }

    /// One counter's value.
    pub fn get(&self, kind: TransactionKind, purpose: TransactionPurpose) -> u64 {
        self.counts[kind as usize][purpose as usize].load(std::sync::atomic::Ordering::Relaxed)
    }
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
    ) -> PortResult<Vec<Row>> {
        self.shard_page(table, &Shard::WHOLE, after, limit).await
    }

    /// [`Snapshot::page`] restricted to the rows of `shard` (see [`Shard`]).
    async fn shard_page(
        &mut self,
        table: &TableSchema,
        shard: &Shard,
        after: &Position,
        limit: usize,
    ) -> PortResult<Vec<Row>>;

    /// Up to `limit` rows after primary key `after` (empty: from the first), in key order,
    /// of a table captured by change stream whose commit-timestamp and deleted columns are
    /// the host's own (`ledgerhost_commit_ts`, `ledgerhost_deleted`, which the table lacks):
    /// each row as of [`Self::read_ts`], with that read point as its commit timestamp (its
    /// last commit is at or before it) and not deleted. What `ledgerhost backfill` reads
    /// such a table by; a source without change streams cannot.
    async fn key_page(
        &mut self,
        table: &TableSchema,
        after: &[Value],
        limit: usize,
    ) -> PortResult<Vec<Row>> {
        let _ = (after, limit);
        Err(crate::PortError::Unsupported {
            backend: "source",
            operation: "read a table by primary key",
            why: format!(
                "table `{}` has no commit-timestamp column; only a Spanner table captured by \
                 change stream is read so",
                table.name
            ),
        })
    }
}
