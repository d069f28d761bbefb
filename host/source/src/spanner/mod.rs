//! Cloud Spanner as the source (production), through the official `google-cloud-spanner`
//! client.
//!
//! - A poll runs in a multi-use read-only transaction begun explicitly, so its read
//!   timestamp R is known before the first statement (with inline begin Spanner reports it
//!   only after the first statement).
//! - Rows are selected by the keyset `(commit_ts, primary key)` with query parameters only;
//!   identifiers are validated and backquoted, values never appear in SQL text.
//! - The commit-timestamp column is the one declared `OPTIONS (allow_commit_timestamp=true)`;
//!   writers set it to `PENDING_COMMIT_TIMESTAMP()`.
//! - The poll reads through an index leading with the commit-timestamp column
//!   (`@{FORCE_INDEX=...}`), found in `INFORMATION_SCHEMA.INDEXES` when the table is
//!   prepared; without one every poll would scan the whole table, so the table is refused
//!   with the `CREATE INDEX` to run, or only warned about with
//!   [`MissingCommitIndex::Warn`].
//! - A sharded table ([`TableSpec::sharding`]) adds one condition to each page
//!   ([`shard`]): by its shard column, read through the index keyed (shard column,
//!   commit timestamp), found and refused-without like the commit-timestamp index; or by
//!   a hash of the primary key (`FARM_FINGERPRINT`), on the commit-timestamp index.
//! - Leases live in `ledgerhost_leases`, created on first use, taken and renewed in
//!   read-write transactions and watched with single-use reads, judged by Spanner's own clock
//!   (`CURRENT_TIMESTAMP()`), so replicas with skewed clocks agree.
//! - Every transaction is counted by kind and purpose ([`Source::transactions`]).
//!
//! Endpoint and credentials follow [`ledgerhost_google`]'s rule for [`SPANNER`]: the
//! configured `endpoint`, else `SPANNER_EMULATOR_HOST`, else Google's; anonymous against an
//! emulator, application default credentials otherwise.
//!
//! The parts: `config` (where the database is), `error`, `names` (identifiers), `values`
//! (types and values), `sql` (the page queries and DDL), `schema` (a table's columns),
//! `index` (the index a poll reads through), `snapshot` (a poll's view), `lease`, `ddl`,
//! [`shard`] (shard conditions) and [`target`] (writing rows, for restore).

use std::time::Duration;

use async_trait::async_trait;
use google_cloud_spanner::client::{DatabaseClient, Spanner};
use google_cloud_spanner::statement::Statement;
use google_cloud_spanner::transaction::BeginTransactionOption;
use ledgerhost_core::source::{
    HeldLeases, Lease, LeaseInfo, Position, Snapshot, Source, TableSpec, TransactionCount,
    TransactionCounters, TransactionKind, TransactionPurpose,
};
use ledgerhost_core::{PortError, PortResult, TableSchema};
use ledgerhost_google::SPANNER;
use tracing::info;

pub mod change_stream;
mod config;
mod ddl;
mod error;
mod index;
mod lease;
mod names;
mod read;
mod schema;
pub mod shard;
mod snapshot;
mod sql;
pub mod target;
mod values;

pub use config::{LEASE_TABLE, MissingCommitIndex, SpannerConfig};
pub use snapshot::SpannerSnapshot;
pub use sql::{PollIndex, capture_ddl, commit_index_ddl};

use error::{BACKEND, map_err};
use index::{PollIndexes, ShardIndexes, resolve_poll_index, resolve_shard_index};
use schema::read_schema;
use sql::page_statement;
use values::{micros_timestamp, timestamp_micros};

/// Cloud Spanner as a [`Source`].
#[derive(Clone)]
pub struct SpannerSource {
    config: SpannerConfig,
    spanner: Spanner,
    client: DatabaseClient,
    lease_table_ready: std::sync::Arc<tokio::sync::OnceCell<()>>,
    /// The change stream hand-over tables exist (see `change_stream::spool`).
    spool_tables_ready: std::sync::Arc<tokio::sync::OnceCell<()>>,
    /// Held while one of this source's read-write transactions runs.
    read_write_turn: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Transactions run, by kind and purpose.
    counters: std::sync::Arc<TransactionCounters>,
    /// Leases this source last saw held (renewal or take).
    held: std::sync::Arc<HeldLeases>,
    /// Per table, how its poll reads: through which index (see [`PollIndex`]).
    poll_index: PollIndexes,
    /// Per (table, shard column), how a shard's poll reads (see [`PollIndex`]).
    shard_index: ShardIndexes,
    /// Idle clients for snapshots, each with its own (multiplexed) session: the emulator
    /// keeps one transaction per session and fails the older one ("Invalid transaction
    /// ID") when another begins, so the snapshots of concurrent polls, and the lease
    /// transactions on `client`, must not share a session.
    snapshot_clients: std::sync::Arc<std::sync::Mutex<Vec<DatabaseClient>>>,
}

impl std::fmt::Debug for SpannerSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpannerSource")
            .field("database", &self.config.database_path())
            .finish()
    }
}

impl SpannerSource {
    /// Connects to the database (no table is touched yet).
    pub async fn connect(config: SpannerConfig) -> PortResult<Self> {
        let mut builder = Spanner::builder();
        let endpoint = SPANNER.endpoint(config.endpoint.as_deref());
        if let Some(url) = endpoint.override_url() {
            builder = builder.with_endpoint(url.to_string());
        }
        if let Some(c) = endpoint.client_credentials() {
            builder = builder.with_credentials(c);
        }
        let spanner = builder.build().await.map_err(|e| {
            PortError::unavailable(
                BACKEND,
                format!(
                    "cannot build the Spanner client for {}: {e}",
                    config.database_path()
                ),
            )
        })?;
        let client = spanner
            .database_client(config.database_path())
            .build()
            .await
            .map_err(|e| map_err(&format!("opening database {}", config.database_path()), e))?;
        info!(database = %config.database_path(), "spanner source connected");
        Ok(SpannerSource {
            config,
            spanner,
            client,
            lease_table_ready: Default::default(),
            spool_tables_ready: Default::default(),
            read_write_turn: Default::default(),
            counters: Default::default(),
            held: Default::default(),
            poll_index: Default::default(),
            shard_index: Default::default(),
            snapshot_clients: Default::default(),
        })
    }

    /// How the poll of `table` reads, once the table was prepared (or polled).
    pub fn poll_index(&self, table: &str) -> Option<PollIndex> {
        self.poll_index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(table)
            .cloned()
    }

    /// How the poll of a shard of `table` sharded by `shard_column` reads, once the table
    /// was prepared with that sharding (or such a shard polled).
    pub fn shard_index(&self, table: &str, shard_column: &str) -> Option<PollIndex> {
        self.shard_index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(table.to_string(), shard_column.to_string()))
            .cloned()
    }

    /// The first page query of `table` (the statement every poll runs, after watermark
    /// 0) and Spanner's plan for it (`queryMode: PLAN`): the display names of the plan's
    /// nodes with their metadata, one per line. The emulator answers "No query plan".
    pub async fn poll_query_plan(&self, table: &TableSchema) -> PortResult<(String, Vec<String>)> {
        use google_cloud_spanner::model::execute_sql_request::QueryMode;
        let index = resolve_poll_index(
            &self.client,
            &self.counters,
            &self.poll_index,
            self.config.missing_commit_index,
            table,
        )
        .await?;
        let read_ts = micros_timestamp(ledgerhost_core::clock::now_micros())?;
        let stmt = page_statement(table, &Position::after_ts(0), &read_ts, 100, &index)?;
        let sql = stmt.sql().to_string();
        self.counters
            .record(TransactionKind::ReadOnly, TransactionPurpose::Schema);
        let context = format!("planning the poll query of `{}`", table.name);
        let mut rs = self
            .client
            .single_use()
            .build()
            .execute_query(stmt.set_query_mode(QueryMode::Plan))
            .await
            .map_err(|e| map_err(&context, e))?;
        while let Some(row) = rs.next().await {
            row.map_err(|e| map_err(&context, e))?;
        }
        let nodes = rs
            .stats()
            .and_then(|s| s.query_plan.as_ref())
            .map(|p| {
                p.plan_nodes
                    .iter()
                    .map(|n| format!("{} {:?}", n.display_name, n.metadata))
                    .collect()
            })
            .unwrap_or_default();
        Ok((sql, nodes))
    }

    /// Health probe: runs `SELECT 1` in the database (fails if Spanner is unreachable or the
    /// database does not exist).
    pub async fn check(&self) -> PortResult<()> {
        self.counters
            .record(TransactionKind::ReadOnly, TransactionPurpose::Probe);
        let mut rs = self
            .client
            .single_use()
            .build()
            .execute_query(Statement::builder("SELECT 1").build())
            .await
            .map_err(|e| {
                map_err(
                    &format!("health probe of {}", self.config.database_path()),
                    e,
                )
            })?;
        match rs.next().await {
            Some(Ok(_)) | None => Ok(()),
            Some(Err(e)) => Err(map_err(
                &format!("health probe of {}", self.config.database_path()),
                e,
            )),
        }
    }

    /// A database client of its own (its own session): for a snapshot, and for a change
    /// stream's partition queries, which stream for as long as their partition lives.
    pub(crate) async fn new_client(&self) -> PortResult<DatabaseClient> {
        self.spanner
            .database_client(self.config.database_path())
            .build()
            .await
            .map_err(|e| {
                map_err(
                    &format!("opening database {}", self.config.database_path()),
                    e,
                )
            })
    }

    /// The database client, for callers that write rows (tests, tools).
    pub fn client(&self) -> &DatabaseClient {
        &self.client
    }

    /// The configuration this source was built from.
    pub fn config(&self) -> &SpannerConfig {
        &self.config
    }
}

#[async_trait]
impl Source for SpannerSource {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn prepare_table(&self, spec: &TableSpec) -> PortResult<TableSchema> {
        let client = self.client.clone();
        let counters = self.counters.clone();
        let schema = read_schema(spec, |stmt| {
            let client = client.clone();
            counters.record(TransactionKind::ReadOnly, TransactionPurpose::Schema);
            async move { client.single_use().build().execute_query(stmt).await }
        })
        .await?;
        spec.sharding
            .check(&schema)
            .map_err(|m| PortError::invalid(BACKEND, m))?;
        // Looked up again rather than kept: the index may have been created since.
        self.poll_index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&schema.name);
        // The commit-timestamp index serves whole-table reads (backfill) and key-hash shards.
        let index = resolve_poll_index(
            &self.client,
            &self.counters,
            &self.poll_index,
            self.config.missing_commit_index,
            &schema,
        )
        .await?;
        let mut shard_index = None;
        if spec.sharding.count > 1 {
            match &spec.sharding.column {
                Some(column) => {
                    self.shard_index
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&(schema.name.clone(), column.clone()));
                    shard_index = Some(
                        resolve_shard_index(
                            &self.client,
                            &self.counters,
                            &self.shard_index,
                            self.config.missing_commit_index,
                            &schema,
                            column,
                        )
                        .await?,
                    );
                }
                // A key Spanner cannot hash is refused now rather than at the first poll.
                None => {
                    shard::key_text(&schema)?;
                }
            }
        }
        info!(table = %schema.name, commit_ts_column = %schema.commit_ts_column,
              primary_key = ?schema.primary_key, poll_index = ?index, shards = spec.sharding.count,
              shard_column = ?spec.sharding.column, ?shard_index, "spanner table ready for capture");
        Ok(schema)
    }

    async fn snapshot(&self) -> PortResult<Box<dyn Snapshot>> {
        self.counters
            .record(TransactionKind::ReadOnly, TransactionPurpose::PollSnapshot);
        let idle = self
            .snapshot_clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        let client = match idle {
            Some(c) => c,
            None => self.new_client().await?,
        };
        let tx = client
            .read_only_transaction()
            .set_begin_transaction_option(BeginTransactionOption::ExplicitBegin)
            .build()
            .await
            .map_err(|e| map_err("beginning a read-only transaction", e))?;
        let read_ts = tx.read_timestamp().ok_or_else(|| {
            PortError::unavailable(
                BACKEND,
                "Spanner began a read-only transaction without reporting its read timestamp",
            )
        })?;
        Ok(Box::new(SpannerSnapshot {
            client,
            pool: self.snapshot_clients.clone(),
            single_use: self.client.clone(),
            counters: self.counters.clone(),
            poll_index: self.poll_index.clone(),
            shard_index: self.shard_index.clone(),
            missing_commit_index: self.config.missing_commit_index,
            read_ts_micros: timestamp_micros(&read_ts),
            read_ts,
            tx,
        }))
    }

    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        progress: Option<i64>,
    ) -> PortResult<Lease> {
        self.lease_take(name, holder, ttl, progress).await
    }

    async fn leases(&self, prefix: &str) -> PortResult<Vec<LeaseInfo>> {
        self.lease_list(prefix).await
    }

    async fn read_lease(&self, name: &str, holder: &str) -> PortResult<Lease> {
        self.lease_read(name, holder).await
    }

    async fn release_lease(
        &self,
        name: &str,
        holder: &str,
        progress: Option<i64>,
    ) -> PortResult<()> {
        self.lease_release(name, holder, progress).await
    }

    fn transactions(&self) -> Vec<TransactionCount> {
        self.counters.snapshot()
    }
}

#[cfg(test)]
mod tests;
