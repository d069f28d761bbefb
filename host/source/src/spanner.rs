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

use std::time::Duration;

use async_trait::async_trait;
use google_cloud_gax::error::rpc::Code;
use google_cloud_lro::Poller;
use google_cloud_spanner::client::{DatabaseAdmin, DatabaseClient, Spanner};
use google_cloud_spanner::mutation::Mutation;
use google_cloud_spanner::statement::{Statement, StatementBuilder};
use google_cloud_spanner::transaction::{
    BeginTransactionOption, MultiUseReadOnlyTransaction, Timestamp,
};
use google_cloud_spanner::types;
use google_cloud_spanner::value::{Date, FromValue, Kind, Type, Value as SpValue};
use ledgerhost_core::source::{
    HeldLeases, Lease, LeaseInfo, Position, Row, Shard, Snapshot, Source, TableSpec,
    TransactionCount, TransactionCounters, TransactionKind, TransactionPurpose,
};
use ledgerhost_core::{Column, ColumnType, PortError, PortResult, TableSchema, Value};
use ledgerhost_google::SPANNER;
use ledgerhost_manifest::calendar;
use tracing::{debug, info};

const BACKEND: &str = "spanner";
/// Name of the table holding poller leases, created on first use. (Spanner refuses table
/// names starting with `_`, so it is not `_ledgerhost_leases` as on SQLite.)
pub const LEASE_TABLE: &str = "ledgerhost_leases";

/// Where the Spanner database is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpannerConfig {
    /// Google Cloud project id.
    pub project: String,
    /// Spanner instance id.
    pub instance: String,
    /// Database id.
    pub database: String,
    /// Data-plane (gRPC) endpoint override, e.g. `http://127.0.0.1:9010`. A plaintext
    /// `http://` endpoint implies anonymous credentials. When `None`, `SPANNER_EMULATOR_HOST`
    /// is honoured, else Google's endpoint with application default credentials.
    pub endpoint: Option<String>,
    /// Admin (REST) endpoint override, used for the lease table's DDL. When `None` the client
    /// derives it (for the emulator: gRPC port 9010 maps to REST port 9020).
    pub admin_endpoint: Option<String>,
    /// What to do with a table that has no index leading with its commit-timestamp column.
    pub missing_commit_index: MissingCommitIndex,
}

/// What [`Source::prepare_table`] does with a table whose commit-timestamp column leads no
/// index (so each poll's `commit_ts > @w AND commit_ts <= @r` would scan the whole table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingCommitIndex {
    /// Refuse the table, printing the `CREATE INDEX` to run (the default).
    #[default]
    Refuse,
    /// Log a warning with the `CREATE INDEX` and poll by full scans.
    Warn,
}

impl SpannerConfig {
    /// `projects/P/instances/I/databases/D`.
    pub fn database_path(&self) -> String {
        format!(
            "projects/{}/instances/{}/databases/{}",
            self.project, self.instance, self.database
        )
    }
}

/// The SQL that makes a Spanner table capturable, with the note for writers.
pub fn capture_ddl(table: &str, commit_ts_column: &str) -> String {
    format!(
        "ALTER TABLE {} ADD COLUMN {} TIMESTAMP OPTIONS (allow_commit_timestamp=true)",
        quote(table),
        quote(commit_ts_column)
    )
}

/// The index the poll of `table` reads through: `CREATE INDEX <table>_by_<column> ON
/// <table> (<column>)`. Spanner appends the primary key to every secondary index's key, so
/// the index is ordered by (commit timestamp, primary key), the order of the poll's keyset
/// pages, and a page is one range scan of it (plus a lookup of each row's other columns in
/// the table: add `STORING (...)` to save those at the cost of writing the columns twice).
/// A primary key with a descending column is listed explicitly, ascending, so the index
/// order still matches the page order.
pub fn commit_index_ddl(table: &str, commit_ts_column: &str, descending_key: &[String]) -> String {
    let mut columns = vec![quote(commit_ts_column)];
    columns.extend(descending_key.iter().map(|k| quote(k)));
    format!(
        "CREATE INDEX {} ON {} ({})",
        quote(&format!("{table}_by_{commit_ts_column}")),
        quote(table),
        columns.join(", ")
    )
}

/// Maps a client error to a port error, keeping `context` (what was being done).
fn map_err(context: &str, e: google_cloud_spanner::Error) -> PortError {
    // The emulator fails a transaction another one on the same session replaced with
    // FAILED_PRECONDITION / NOT_FOUND: a conflict, worth retrying, not a wrong request.
    if is_transaction_conflict(&e) {
        return PortError::unavailable(BACKEND, format!("{context}: {e}"));
    }
    let code = e.status().map(|s| s.code);
    match code {
        Some(Code::NotFound) => PortError::NotFound {
            backend: BACKEND,
            what: format!("{context}: {e}"),
        },
        Some(Code::InvalidArgument | Code::FailedPrecondition | Code::PermissionDenied) => {
            PortError::invalid(BACKEND, format!("{context}: {e}"))
        }
        _ => PortError::unavailable(BACKEND, format!("{context}: {e}")),
    }
}

/// Validates an identifier (Spanner's rule: letter or `_` first, then letters, digits, `_`)
/// and backquotes it.
fn ident(name: &str) -> PortResult<String> {
    let mut chars = name.chars();
    let ok_first = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !ok_first || name.len() > 128 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(PortError::invalid(
            BACKEND,
            format!(
                "`{name}` is not a valid Spanner identifier (letters, digits and `_`, starting \
             with a letter or `_`, at most 128 characters)"
            ),
        ));
    }
    Ok(quote(name))
}

fn quote(name: &str) -> String {
    format!("`{name}`")
}

/// Cloud Spanner as a [`Source`].
#[derive(Clone)]
pub struct SpannerSource {
    config: SpannerConfig,
    spanner: Spanner,
    client: DatabaseClient,
    lease_table_ready: std::sync::Arc<tokio::sync::OnceCell<()>>,
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

/// Idle snapshot clients kept; more exist only while more snapshots are open at once.
const MAX_IDLE_SNAPSHOT_CLIENTS: usize = 8;

/// How the poll of one table reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollIndex {
    /// The primary key leads with the commit-timestamp column: the table itself is in order.
    PrimaryKey,
    /// Through this secondary index (`@{FORCE_INDEX=...}`).
    Index(String),
    /// No usable index (allowed by [`MissingCommitIndex::Warn`]): each poll scans the table.
    FullScan,
}

type PollIndexes = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, PollIndex>>>;
/// Keyed by (table, shard column).
type ShardIndexes =
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<(String, String), PollIndex>>>;

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
        let read_ts = micros_timestamp(now_micros_local())?;
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

    /// The database client, for callers that write rows (tests, tools).
    pub fn client(&self) -> &DatabaseClient {
        &self.client
    }

    /// The configuration this source was built from.
    pub fn config(&self) -> &SpannerConfig {
        &self.config
    }

    /// Applies DDL statements to the database and waits until they are done.
    pub async fn update_ddl(&self, statements: Vec<String>) -> PortResult<()> {
        let mut builder = self.spanner.database_admin_builder();
        // Only a configured admin endpoint: the emulator variable names the gRPC port, from
        // which the client derives the admin one.
        let admin = SPANNER.endpoint_with(self.config.admin_endpoint.as_deref(), None);
        if let Some(url) = admin.override_url() {
            builder = builder.with_endpoint(url.to_string());
        }
        if let Some(c) = admin.client_credentials() {
            builder = builder.with_credentials(c);
        }
        let admin: DatabaseAdmin = builder.build().await.map_err(|e| {
            PortError::unavailable(
                BACKEND,
                format!("cannot build the Spanner admin client: {e}"),
            )
        })?;
        debug!(database = %self.config.database_path(), ?statements, "applying DDL");
        let mut attempt = 0u64;
        loop {
            let result = admin
                .update_database_ddl()
                .set_database(self.config.database_path())
                .set_statements(statements.clone())
                .poller()
                .until_done()
                .await;
            match result {
                Ok(_) => return Ok(()),
                // The emulator refuses a schema change while any read-write transaction
                // runs (the application's, another replica's lease renewal).
                Err(e) if attempt < 30 && e.to_string().contains("concurrent schema change") => {
                    attempt += 1;
                    debug!(attempt, error = %e, "schema change refused for a concurrent transaction; retrying");
                    tokio::time::sleep(Duration::from_millis(50 * attempt.min(10))).await;
                }
                Err(e) => return Err(map_err(&format!("applying DDL {statements:?}"), e)),
            }
        }
    }

    async fn ensure_lease_table(&self) -> PortResult<()> {
        self.lease_table_ready
            .get_or_try_init(|| async {
                if self.table_exists(LEASE_TABLE).await? {
                    return self.ensure_lease_progress_column().await;
                }
                let ddl = format!(
                    "CREATE TABLE {LEASE_TABLE} (name STRING(MAX) NOT NULL, holder STRING(MAX) NOT NULL, \
                     expires_at TIMESTAMP NOT NULL, progress INT64) PRIMARY KEY (name)"
                );
                match self.update_ddl(vec![ddl]).await {
                    Ok(()) => {
                        info!(table = LEASE_TABLE, "created the lease table");
                        Ok(())
                    }
                    // Another replica may have created it at the same moment.
                    Err(e) if self.table_exists(LEASE_TABLE).await.unwrap_or(false) => {
                        debug!(error = %e, "lease table created concurrently");
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            })
            .await
            .map(|_| ())
    }

    /// Lease tables created by the first host version have no `progress` column.
    async fn ensure_lease_progress_column(&self) -> PortResult<()> {
        let stmt = Statement::builder(
            "SELECT COUNT(*) FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = '' \
             AND TABLE_NAME = @t AND COLUMN_NAME = 'progress'",
        )
        .add_param("t", LEASE_TABLE.to_string())
        .build();
        let context = "reading INFORMATION_SCHEMA.COLUMNS";
        self.counters
            .record(TransactionKind::ReadOnly, TransactionPurpose::Schema);
        let mut rs = self
            .client
            .single_use()
            .build()
            .execute_query(stmt)
            .await
            .map_err(|e| map_err(context, e))?;
        let n: i64 = match rs.next().await {
            Some(Ok(row)) => row.get(0).map_err(|e| map_err(context, e))?,
            Some(Err(e)) => return Err(map_err(context, e)),
            None => 0,
        };
        if n > 0 {
            return Ok(());
        }
        info!(
            table = LEASE_TABLE,
            "adding the progress column to the lease table"
        );
        match self
            .update_ddl(vec![format!(
                "ALTER TABLE {LEASE_TABLE} ADD COLUMN progress INT64"
            )])
            .await
        {
            Ok(()) => Ok(()),
            // Another replica may have added it at the same moment.
            Err(e) => {
                debug!(error = %e, "progress column added concurrently?");
                Ok(())
            }
        }
    }

    async fn table_exists(&self, table: &str) -> PortResult<bool> {
        let stmt = Statement::builder(
            "SELECT COUNT(*) FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_SCHEMA = '' AND TABLE_NAME = @t",
        )
        .add_param("t", table.to_string())
        .build();
        self.counters
            .record(TransactionKind::ReadOnly, TransactionPurpose::Schema);
        let mut rs = self
            .client
            .single_use()
            .build()
            .execute_query(stmt)
            .await
            .map_err(|e| map_err("reading INFORMATION_SCHEMA.TABLES", e))?;
        let n: i64 = match rs.next().await {
            Some(Ok(row)) => row
                .get(0)
                .map_err(|e| map_err("reading INFORMATION_SCHEMA.TABLES", e))?,
            Some(Err(e)) => return Err(map_err("reading INFORMATION_SCHEMA.TABLES", e)),
            None => 0,
        };
        Ok(n > 0)
    }
}

/// Runs a query and collects its rows as raw values with their column types.
async fn query_rows<F, Fut>(context: &str, run: F) -> PortResult<(Vec<Type>, Vec<Vec<SpValue>>)>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<
            Output = google_cloud_spanner::Result<google_cloud_spanner::result::ResultSet>,
        >,
{
    let mut rs = run().await.map_err(|e| map_err(context, e))?;
    let mut rows = Vec::new();
    while let Some(row) = rs.next().await {
        let row = row.map_err(|e| map_err(context, e))?;
        rows.push(row.into_values());
    }
    let types = rs.metadata().column_types().to_vec();
    Ok((types, rows))
}

/// Reads the schema of `spec.name` with `run_query` (a strong single-use read or a snapshot).
async fn read_schema<Q, Fut>(spec: &TableSpec, run_query: Q) -> PortResult<TableSchema>
where
    Q: Fn(Statement) -> Fut,
    Fut: std::future::Future<
            Output = google_cloud_spanner::Result<google_cloud_spanner::result::ResultSet>,
        >,
{
    ident(&spec.name)?;
    let table = spec.name.clone();
    let (_, cols) = query_rows("reading INFORMATION_SCHEMA.COLUMNS", || {
        run_query(
            Statement::builder(
                "SELECT COLUMN_NAME, SPANNER_TYPE, IS_NULLABLE FROM INFORMATION_SCHEMA.COLUMNS \
                 WHERE TABLE_SCHEMA = '' AND TABLE_NAME = @t ORDER BY ORDINAL_POSITION",
            )
            .add_param("t", table.clone())
            .build(),
        )
    })
    .await?;
    if cols.is_empty() {
        return Err(PortError::NotFound {
            backend: BACKEND,
            what: format!("table `{}`", spec.name),
        });
    }
    let (_, pk_rows) = query_rows("reading INFORMATION_SCHEMA.INDEX_COLUMNS", || {
        run_query(
            Statement::builder(
                "SELECT COLUMN_NAME FROM INFORMATION_SCHEMA.INDEX_COLUMNS \
                 WHERE TABLE_SCHEMA = '' AND TABLE_NAME = @t AND INDEX_TYPE = 'PRIMARY_KEY' \
                 ORDER BY ORDINAL_POSITION",
            )
            .add_param("t", table.clone())
            .build(),
        )
    })
    .await?;
    let (_, opt_rows) = query_rows("reading INFORMATION_SCHEMA.COLUMN_OPTIONS", || {
        run_query(
            Statement::builder(
                "SELECT COLUMN_NAME, OPTION_VALUE FROM INFORMATION_SCHEMA.COLUMN_OPTIONS \
                 WHERE TABLE_SCHEMA = '' AND TABLE_NAME = @t AND OPTION_NAME = 'allow_commit_timestamp'",
            )
            .add_param("t", table.clone())
            .build(),
        )
    })
    .await?;

    let text = |v: &SpValue, what: &str| -> PortResult<String> {
        v.as_str().map(str::to_string).ok_or_else(|| {
            PortError::corrupt(
                BACKEND,
                format!(
                    "INFORMATION_SCHEMA for table `{}`: {what} is not a string",
                    spec.name
                ),
            )
        })
    };
    let mut columns = Vec::new();
    for row in &cols {
        let [name, ty, nullable] = row.as_slice() else {
            return Err(PortError::corrupt(
                BACKEND,
                "INFORMATION_SCHEMA.COLUMNS returned an unexpected shape",
            ));
        };
        let name = text(name, "COLUMN_NAME")?;
        let spanner_type = text(ty, "SPANNER_TYPE")?;
        let ty = parse_spanner_type(&spanner_type).ok_or_else(|| {
            PortError::invalid(BACKEND, format!(
                "table `{}`, column `{name}`: type {spanner_type} is not supported (supported: BOOL, \
                 INT64, FLOAT32, FLOAT64, NUMERIC, STRING, BYTES, DATE, TIMESTAMP, JSON and ARRAYs of them)",
                spec.name
            ))
        })?;
        columns.push(Column {
            name,
            ty,
            nullable: text(nullable, "IS_NULLABLE")? == "YES",
        });
    }
    let primary_key = pk_rows
        .iter()
        .map(|r| {
            r.first()
                .ok_or_else(|| {
                    PortError::corrupt(
                        BACKEND,
                        "INFORMATION_SCHEMA.INDEX_COLUMNS returned no column",
                    )
                })
                .and_then(|v| text(v, "COLUMN_NAME"))
        })
        .collect::<PortResult<Vec<_>>>()?;
    let mut commit_cols = Vec::new();
    for r in &opt_rows {
        if let [name, value] = r.as_slice()
            && text(value, "OPTION_VALUE")?.eq_ignore_ascii_case("TRUE")
        {
            commit_cols.push(text(name, "COLUMN_NAME")?);
        }
    }
    let wanted = spec
        .commit_ts_column
        .clone()
        .unwrap_or_else(|| "commit_ts".to_string());
    let hint = format!(
        "Add one with:\n  {}\nand have every writer set it to PENDING_COMMIT_TIMESTAMP() on insert \
         and update (or spanner.commit_timestamp() in mutations).",
        capture_ddl(&spec.name, &wanted)
    );
    let commit_ts_column = match (&spec.commit_ts_column, commit_cols.as_slice()) {
        (Some(c), found) if found.contains(c) => c.clone(),
        (Some(c), _) => {
            return Err(PortError::invalid(
                BACKEND,
                format!(
                    "table `{}`: column `{c}` is not a commit-timestamp column \
                 (TIMESTAMP with allow_commit_timestamp=true). {hint}",
                    spec.name
                ),
            ));
        }
        (None, [one]) => one.clone(),
        (None, []) => {
            return Err(PortError::invalid(
                BACKEND,
                format!(
                    "table `{}` has no commit-timestamp column (TIMESTAMP with \
                 allow_commit_timestamp=true). {hint}",
                    spec.name
                ),
            ));
        }
        (None, many) => {
            return Err(PortError::invalid(
                BACKEND,
                format!(
                    "table `{}` has several commit-timestamp columns ({}); name the one to poll by \
                 in the table's commit-ts-column setting",
                    spec.name,
                    many.join(", ")
                ),
            ));
        }
    };
    if primary_key.is_empty() {
        return Err(PortError::invalid(
            BACKEND,
            format!(
                "table `{}` has no primary key columns; events are identified and ordered by it",
                spec.name
            ),
        ));
    }
    if let Some(d) = &spec.deleted_column
        && !columns.iter().any(|c| &c.name == d)
    {
        return Err(PortError::invalid(
            BACKEND,
            format!(
                "table `{}` has no soft-delete column `{d}` (tables.deleted-column)",
                spec.name
            ),
        ));
    }
    for c in &columns {
        ident(&c.name)?;
    }
    Ok(TableSchema {
        name: spec.name.clone(),
        columns,
        primary_key,
        commit_ts_column,
        deleted_column: spec.deleted_column.clone(),
    })
}

/// Parses `INFORMATION_SCHEMA.COLUMNS.SPANNER_TYPE` (GoogleSQL dialect).
fn parse_spanner_type(t: &str) -> Option<ColumnType> {
    let t = t.trim();
    if let Some(inner) = t.strip_prefix("ARRAY<").and_then(|s| s.strip_suffix('>')) {
        let elem = parse_spanner_type(inner)?;
        if matches!(elem, ColumnType::Array(_)) {
            return None;
        }
        return Some(ColumnType::Array(Box::new(elem)));
    }
    let base = t.split('(').next().unwrap_or(t).trim();
    Some(match base {
        "BOOL" => ColumnType::Bool,
        "INT64" => ColumnType::Int64,
        "FLOAT32" => ColumnType::Float32,
        "FLOAT64" => ColumnType::Float64,
        "NUMERIC" => ColumnType::Numeric,
        "STRING" => ColumnType::String,
        "BYTES" => ColumnType::Bytes,
        "DATE" => ColumnType::Date,
        "TIMESTAMP" => ColumnType::Timestamp,
        "JSON" => ColumnType::Json,
        _ => return None,
    })
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
            None => self
                .spanner
                .database_client(self.config.database_path())
                .build()
                .await
                .map_err(|e| {
                    map_err(
                        &format!("opening database {}", self.config.database_path()),
                        e,
                    )
                })?,
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
        self.ensure_lease_table().await?;
        self.counters.record(
            TransactionKind::ReadWrite,
            self.held.purpose_of_try(name, holder),
        );
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let client = self.client.clone();
        let (n, h) = (name.to_string(), holder.to_string());
        let what = format!("taking lease `{name}`");
        let lease = self.read_write(&what, move || {
            let (client, n, h) = (client.clone(), n.clone(), h.clone());
            async move {
            let runner = client.read_write_transaction().build();
            runner
                .run(async |tx| {
                    // Scalar subqueries give NULLs when the lease row does not exist yet;
                    // Spanner's clock judges expiry so replicas with skewed clocks agree.
                    let stmt = Statement::builder(format!(
                        "SELECT (SELECT holder FROM {LEASE_TABLE} WHERE name = @n), \
                         (SELECT expires_at > CURRENT_TIMESTAMP() FROM {LEASE_TABLE} WHERE name = @n), \
                         TIMESTAMP_ADD(CURRENT_TIMESTAMP(), INTERVAL @ms MILLISECOND), \
                         (SELECT progress FROM {LEASE_TABLE} WHERE name = @n), \
                         (SELECT TIMESTAMP_DIFF(expires_at, CURRENT_TIMESTAMP(), MICROSECOND) \
                          FROM {LEASE_TABLE} WHERE name = @n)"
                    ))
                    .add_param("n", n.clone())
                    .add_param("ms", ttl_ms)
                    .build();
                    let mut rs = tx.execute_query(stmt).await?;
                    let Some(row) = rs.next().await.transpose()? else {
                        return Ok(Lease {
                            held: false,
                            progress: None,
                            remaining: Duration::ZERO,
                        });
                    };
                    let current: Option<String> = row.get(0)?;
                    let live: Option<bool> = row.get(1)?;
                    let expires: Timestamp = row.get(2)?;
                    let stored: Option<i64> = row.get(3)?;
                    let left: Option<i64> = row.get(4)?;
                    if live == Some(true) && current.as_deref() != Some(h.as_str()) {
                        return Ok(Lease {
                            held: false,
                            progress: stored,
                            remaining: micros_duration(left.unwrap_or(0)),
                        });
                    }
                    let progress = progress.or(stored);
                    tx.buffer([Mutation::new_insert_or_update_builder(LEASE_TABLE)
                        .set("name")
                        .to(n.clone())
                        .set("holder")
                        .to(h.clone())
                        .set("expires_at")
                        .to(expires)
                        .set("progress")
                        .to(progress)
                        .build()])?;
                    Ok(Lease {
                        held: true,
                        progress,
                        remaining: ttl,
                    })
                })
                .await
                .map(|r| r.into_inner())
            }
        })
        .await;
        self.held
            .record(name, holder, matches!(&lease, Ok(l) if l.held));
        let lease = lease?;
        debug!(lease = %name, holder = %holder, held = lease.held, progress = ?lease.progress, "spanner lease");
        Ok(lease)
    }

    async fn leases(&self, prefix: &str) -> PortResult<Vec<LeaseInfo>> {
        self.ensure_lease_table().await?;
        self.counters
            .record(TransactionKind::ReadOnly, TransactionPurpose::LeaseRead);
        // One strong single-use read, as `read_lease`: no locks, Spanner's clock judges
        // expiry. STARTS_WITH keeps the prefix a parameter (LIKE would read `_` and `%`).
        let stmt = Statement::builder(format!(
            "SELECT name, holder, TIMESTAMP_DIFF(expires_at, CURRENT_TIMESTAMP(), MICROSECOND), \
             progress FROM {LEASE_TABLE} WHERE STARTS_WITH(name, @p) ORDER BY name"
        ))
        .add_param("p", prefix.to_string())
        .build();
        let context = format!("listing the leases starting with `{prefix}`");
        let mut rs = self
            .client
            .single_use()
            .build()
            .execute_query(stmt)
            .await
            .map_err(|e| map_err(&context, e))?;
        let mut leases = Vec::new();
        while let Some(row) = rs.next().await {
            let row = row.map_err(|e| map_err(&context, e))?;
            let left: i64 = row.get(2).map_err(|e| map_err(&context, e))?;
            leases.push(LeaseInfo {
                name: row.get(0).map_err(|e| map_err(&context, e))?,
                holder: row.get(1).map_err(|e| map_err(&context, e))?,
                // Negative once expired; a released lease expired at the epoch.
                remaining: micros_duration(left),
                progress: row.get(3).map_err(|e| map_err(&context, e))?,
            });
        }
        Ok(leases)
    }

    async fn read_lease(&self, name: &str, holder: &str) -> PortResult<Lease> {
        self.ensure_lease_table().await?;
        self.counters
            .record(TransactionKind::ReadOnly, TransactionPurpose::LeaseRead);
        // A strong single-use read: no locks, no commit, and Spanner's clock judges expiry.
        let stmt = Statement::builder(format!(
            "SELECT holder, TIMESTAMP_DIFF(expires_at, CURRENT_TIMESTAMP(), MICROSECOND), \
             progress FROM {LEASE_TABLE} WHERE name = @n"
        ))
        .add_param("n", name.to_string())
        .build();
        let context = format!("reading lease `{name}`");
        let mut rs = self
            .client
            .single_use()
            .build()
            .execute_query(stmt)
            .await
            .map_err(|e| map_err(&context, e))?;
        let lease = match rs.next().await {
            None => Lease {
                held: false,
                progress: None,
                remaining: Duration::ZERO,
            },
            Some(Err(e)) => return Err(map_err(&context, e)),
            Some(Ok(row)) => {
                let current: String = row.get(0).map_err(|e| map_err(&context, e))?;
                let left: i64 = row.get(1).map_err(|e| map_err(&context, e))?;
                let progress: Option<i64> = row.get(2).map_err(|e| map_err(&context, e))?;
                Lease {
                    held: current == holder && left > 0,
                    progress,
                    remaining: micros_duration(left),
                }
            }
        };
        Ok(lease)
    }

    async fn release_lease(
        &self,
        name: &str,
        holder: &str,
        progress: Option<i64>,
    ) -> PortResult<()> {
        self.ensure_lease_table().await?;
        self.counters
            .record(TransactionKind::ReadWrite, TransactionPurpose::Release);
        self.held.record(name, holder, false);
        let client = self.client.clone();
        let (n, h) = (name.to_string(), holder.to_string());
        let what = format!("releasing lease `{name}`");
        self.read_write(&what, move || {
            let (client, n, h) = (client.clone(), n.clone(), h.clone());
            async move {
                let runner = client.read_write_transaction().build();
                runner
                    .run(async |tx| {
                        // Expired rather than deleted: the progress stays for the next holder.
                        let stmt = Statement::builder(format!(
                            "UPDATE {LEASE_TABLE} SET expires_at = TIMESTAMP '1970-01-01T00:00:00Z', \
                             progress = COALESCE(@p, progress) WHERE name = @n AND holder = @h"
                        ))
                        .add_param("n", n.clone())
                        .add_param("h", h.clone())
                        .add_typed_param(
                            "p",
                            progress.map_or_else(SpValue::null, SpValue::from),
                            types::int64(),
                        )
                        .build();
                        tx.execute_update(stmt).await
                    })
                    .await
            }
        })
        .await?;
        Ok(())
    }

    fn transactions(&self) -> Vec<TransactionCount> {
        self.counters.snapshot()
    }
}

impl SpannerSource {
    /// Runs the read-write transaction `make` builds, one at a time per source (the
    /// emulator runs one read-write transaction at a time and fails the others with
    /// "Transaction not found" / "Invalid transaction ID" rather than ABORTED), retrying such
    /// conflicts, which the client's runner does not, a few times.
    async fn read_write<T, F, Fut>(&self, what: &str, make: F) -> PortResult<T>
    where
        F: Fn() -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = google_cloud_spanner::Result<T>>,
        T: Send + 'static,
    {
        let _one_at_a_time = self.read_write_turn.lock().await;
        let mut attempt = 0u32;
        loop {
            match run_detached(make.clone()).await? {
                Ok(v) => return Ok(v),
                Err(e) if attempt < RW_CONFLICT_RETRIES && is_transaction_conflict(&e) => {
                    attempt += 1;
                    debug!(what, attempt, error = %e, "read-write transaction conflicted; retrying");
                    tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                }
                Err(e) => return Err(map_err(what, e)),
            }
        }
    }
}

/// How often a conflicting read-write transaction is retried.
const RW_CONFLICT_RETRIES: u32 = 10;

/// An abort, or the emulator's way of failing a concurrent read-write transaction.
fn is_transaction_conflict(e: &google_cloud_spanner::Error) -> bool {
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
async fn run_detached<F, Fut, T>(make: F) -> PortResult<T>
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

/// A poll's consistent view: one read-only transaction at read timestamp R.
pub struct SpannerSnapshot {
    /// The snapshot's own client (session), back to `pool` when the snapshot ends.
    client: DatabaseClient,
    pool: std::sync::Arc<std::sync::Mutex<Vec<DatabaseClient>>>,
    /// The source's client, for single-use reads beside the transaction (on the emulator a
    /// single-use read on the snapshot's session would end its transaction).
    single_use: DatabaseClient,
    counters: std::sync::Arc<TransactionCounters>,
    /// The source's per-table [`PollIndex`] cache.
    poll_index: PollIndexes,
    /// The source's per-(table, shard column) [`PollIndex`] cache.
    shard_index: ShardIndexes,
    missing_commit_index: MissingCommitIndex,
    tx: MultiUseReadOnlyTransaction,
    read_ts: Timestamp,
    read_ts_micros: i64,
}

impl Drop for SpannerSnapshot {
    fn drop(&mut self) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < MAX_IDLE_SNAPSHOT_CLIENTS {
            pool.push(self.client.clone());
        }
    }
}

#[async_trait]
impl Snapshot for SpannerSnapshot {
    fn read_ts(&self) -> i64 {
        self.read_ts_micros
    }

    async fn schema(&mut self, spec: &TableSpec) -> PortResult<TableSchema> {
        let tx = &self.tx;
        match read_schema(spec, |stmt| tx.execute_query(stmt)).await {
            Ok(s) => Ok(s),
            // Some deployments refuse INFORMATION_SCHEMA in multi-use transactions; a strong
            // read is then the closest view (the transaction was begun explicitly, so it
            // stays usable after a failed statement).
            Err(PortError::Unavailable { .. } | PortError::Invalid { .. }) => {
                let client = self.single_use.clone();
                let counters = self.counters.clone();
                read_schema(spec, |stmt| {
                    let client = client.clone();
                    counters.record(TransactionKind::ReadOnly, TransactionPurpose::Schema);
                    async move { client.single_use().build().execute_query(stmt).await }
                })
                .await
            }
            Err(e) => Err(e),
        }
    }

    async fn shard_page(
        &mut self,
        table: &TableSchema,
        shard: &Shard,
        after: &Position,
        limit: usize,
    ) -> PortResult<Vec<Row>> {
        // A shard-column shard reads the (shard column, commit timestamp) index; the whole
        // table and key-hash shards the commit-timestamp index.
        let shard_column = shard.column.as_ref().filter(|_| !shard.is_whole());
        let index = match shard_column {
            Some(column) => {
                resolve_shard_index(
                    &self.single_use,
                    &self.counters,
                    &self.shard_index,
                    self.missing_commit_index,
                    table,
                    column,
                )
                .await?
            }
            None => {
                resolve_poll_index(
                    &self.single_use,
                    &self.counters,
                    &self.poll_index,
                    self.missing_commit_index,
                    table,
                )
                .await?
            }
        };
        let stmt = shard_page_statement(table, shard, after, &self.read_ts, limit, &index)?;
        let context = if shard.is_whole() {
            format!("reading table `{}`", table.name)
        } else {
            format!("reading {}", shard.unit_name(&table.name))
        };
        let raw = match query_rows(&context, || self.tx.execute_query(stmt)).await {
            Ok((_, raw)) => raw,
            Err(PortError::Invalid { message, .. })
                if matches!(index, PollIndex::Index(_)) && message.contains("index") =>
            {
                // Dropped since the table was prepared: look again at the next poll (which
                // refuses the table, or polls by scans with missing-commit-index = "warn").
                let which = match shard_column {
                    Some(column) => {
                        self.shard_index
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&(table.name.clone(), column.clone()));
                        "shard"
                    }
                    None => {
                        self.poll_index
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&table.name);
                        "commit-timestamp"
                    }
                };
                return Err(PortError::unavailable(
                    BACKEND,
                    format!(
                        "{context} through {index:?} failed ({message}); looking for the table's \
                     {which} index again at the next poll"
                    ),
                ));
            }
            Err(e) => return Err(e),
        };
        let ts_index = table.column_index(&table.commit_ts_column).ok_or_else(|| {
            PortError::invalid(
                BACKEND,
                format!(
                    "table `{}`: schema has no column `{}`",
                    table.name, table.commit_ts_column
                ),
            )
        })?;
        let mut rows = Vec::with_capacity(raw.len());
        for values in raw {
            if values.len() != table.columns.len() {
                return Err(PortError::corrupt(
                    BACKEND,
                    format!(
                        "table `{}`: {} values for {} columns",
                        table.name,
                        values.len(),
                        table.columns.len()
                    ),
                ));
            }
            let mut out = Vec::with_capacity(values.len());
            for (v, col) in values.iter().zip(&table.columns) {
                out.push(from_spanner(v, &col.ty).map_err(|m| {
                    PortError::corrupt(
                        BACKEND,
                        format!("table `{}`, column `{}`: {m}", table.name, col.name),
                    )
                })?);
            }
            let commit_ts = match &out[ts_index] {
                Value::Timestamp(t) => *t,
                other => {
                    return Err(PortError::corrupt(
                        BACKEND,
                        format!(
                            "table `{}`: commit-timestamp column `{}` holds {other:?} \
                         (writers must set it to PENDING_COMMIT_TIMESTAMP())",
                            table.name, table.commit_ts_column
                        ),
                    ));
                }
            };
            rows.push(Row {
                values: out,
                commit_ts,
            });
        }
        debug!(table = %table.name, shard = shard.index, shards = shard.count, rows = rows.len(),
               read_ts = self.read_ts_micros, "spanner page");
        Ok(rows)
    }
}

/// A duration of `micros` microseconds, zero when negative (an expired lease).
fn micros_duration(micros: i64) -> Duration {
    Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}

fn now_micros_local() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// How the poll of `table` reads ([`PollIndex`]), from the cache or, once per table, from
/// `INFORMATION_SCHEMA` (a table without a usable index is refused or warned about, as
/// `policy` says).
async fn resolve_poll_index(
    client: &DatabaseClient,
    counters: &TransactionCounters,
    cache: &PollIndexes,
    policy: MissingCommitIndex,
    table: &TableSchema,
) -> PortResult<PollIndex> {
    if let Some(found) = cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&table.name)
    {
        return Ok(found.clone());
    }
    let indexes = read_indexes(client, counters, table).await?;
    let found = match choose_poll_index(table, &indexes) {
        Ok(found) => found,
        Err(why) => missing_index(
            policy,
            &table.name,
            &missing_index_message(table, &indexes, &why),
        )?,
    };
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(table.name.clone(), found.clone());
    Ok(found)
}

/// How a poll of a shard of `table` sharded by `shard_column` reads ([`PollIndex`]), from
/// the cache or, once per (table, column), from `INFORMATION_SCHEMA`: through an index
/// keyed (shard column, commit timestamp, ...). A table without one is refused or warned
/// about as `policy` says (the same setting as the commit-timestamp index: both keep a poll
/// from scanning the table).
async fn resolve_shard_index(
    client: &DatabaseClient,
    counters: &TransactionCounters,
    cache: &ShardIndexes,
    policy: MissingCommitIndex,
    table: &TableSchema,
    shard_column: &str,
) -> PortResult<PollIndex> {
    let cache_key = (table.name.clone(), shard_column.to_string());
    if let Some(found) = cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&cache_key)
    {
        return Ok(found.clone());
    }
    let indexes = read_indexes(client, counters, table).await?;
    let found = match choose_index(table, &indexes, &[shard_column, &table.commit_ts_column]) {
        Ok(found) => found,
        Err(why) => missing_index(
            policy,
            &table.name,
            &missing_shard_index_message(table, shard_column, &indexes, &why),
        )?,
    };
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(cache_key, found.clone());
    Ok(found)
}

/// What a missing index means under `policy`: the table refused with `message`, or polled
/// by full scans after a warning.
fn missing_index(policy: MissingCommitIndex, table: &str, message: &str) -> PortResult<PollIndex> {
    match policy {
        MissingCommitIndex::Refuse => Err(PortError::invalid(
            BACKEND,
            format!(
                "{message}; or set [source] missing-commit-index = \"warn\" to poll by \
                 full scans"
            ),
        )),
        MissingCommitIndex::Warn => {
            tracing::warn!(table = %table, "{message}; polling by full scans (missing-commit-index = \"warn\")");
            Ok(PollIndex::FullScan)
        }
    }
}

/// The indexes of `table` (the primary key among them) with their key columns, from
/// `INFORMATION_SCHEMA` (a strong single-use read).
async fn read_indexes(
    client: &DatabaseClient,
    counters: &TransactionCounters,
    table: &TableSchema,
) -> PortResult<Vec<IndexInfo>> {
    counters.record(TransactionKind::ReadOnly, TransactionPurpose::Schema);
    let client = client.clone();
    let (_, rows) = query_rows("reading INFORMATION_SCHEMA.INDEXES", || {
        let stmt = Statement::builder(
            "SELECT i.INDEX_NAME, i.INDEX_TYPE, i.INDEX_STATE, i.SPANNER_IS_MANAGED, \
             c.COLUMN_NAME, c.COLUMN_ORDERING \
             FROM INFORMATION_SCHEMA.INDEXES AS i JOIN INFORMATION_SCHEMA.INDEX_COLUMNS AS c \
             ON c.TABLE_SCHEMA = i.TABLE_SCHEMA AND c.TABLE_NAME = i.TABLE_NAME \
             AND c.INDEX_NAME = i.INDEX_NAME \
             WHERE i.TABLE_SCHEMA = '' AND i.TABLE_NAME = @t AND c.ORDINAL_POSITION IS NOT NULL \
             ORDER BY i.INDEX_NAME, c.ORDINAL_POSITION",
        )
        .add_param("t", table.name.clone())
        .build();
        async move { client.single_use().build().execute_query(stmt).await }
    })
    .await?;
    let mut indexes: Vec<IndexInfo> = Vec::new();
    for row in &rows {
        let [name, kind, state, managed, column, ordering] = row.as_slice() else {
            return Err(PortError::corrupt(
                BACKEND,
                "INFORMATION_SCHEMA.INDEXES returned an unexpected shape",
            ));
        };
        let text = |v: &SpValue| v.as_str().unwrap_or_default().to_string();
        let name = text(name);
        if indexes.last().is_none_or(|i| i.name != name) {
            indexes.push(IndexInfo {
                name: name.clone(),
                kind: text(kind),
                state: text(state),
                managed: managed.as_bool().unwrap_or(false),
                columns: Vec::new(),
            });
        }
        if let Some(last) = indexes.last_mut() {
            last.columns.push((text(column), text(ordering)));
        }
    }
    Ok(indexes)
}

/// The primary key's columns when one of them is descending (an index must then list them
/// explicitly, ascending, to be in page order), else none.
fn descending_key(indexes: &[IndexInfo]) -> Vec<String> {
    indexes
        .iter()
        .find(|i| i.kind == "PRIMARY_KEY")
        .filter(|pk| pk.columns.iter().any(|(_, o)| o == "DESC"))
        .map(|pk| pk.columns.iter().map(|(c, _)| c.clone()).collect())
        .unwrap_or_default()
}

/// Why the shards of `table` by `shard_column` cannot be polled cheaply, with the DDL that
/// fixes it.
fn missing_shard_index_message(
    table: &TableSchema,
    shard_column: &str,
    indexes: &[IndexInfo],
    why: &str,
) -> String {
    let ddl = shard::shard_index_ddl(
        &table.name,
        shard_column,
        &table.commit_ts_column,
        &descending_key(indexes),
    );
    format!(
        "table `{}` (sharded by `{shard_column}`): {why}, so every poll of a shard \
         (`{shard_column} = @shard AND {ts} > @w AND {ts} <= @r ORDER BY {ts}, primary key`) \
         would scan the whole table. Create the index with:\n  {ddl}\n(Spanner appends the \
         primary key to the index, so each shard's rows are in the poll's page order)",
        table.name,
        ts = table.commit_ts_column
    )
}

/// Why `table` cannot be polled cheaply, with the DDL that fixes it.
fn missing_index_message(table: &TableSchema, indexes: &[IndexInfo], why: &str) -> String {
    let ddl = commit_index_ddl(
        &table.name,
        &table.commit_ts_column,
        &descending_key(indexes),
    );
    format!(
        "table `{}`: {why}, so every poll (`{ts} > @w AND {ts} <= @r ORDER BY {ts}, primary \
         key`) would scan the whole table. Create the index with:\n  {ddl}\n(Spanner appends \
         the primary key to the index, so it is in the poll's page order; STORING (...) spares \
         the lookup of each row's other columns at the cost of writing them twice)",
        table.name,
        ts = table.commit_ts_column
    )
}

/// One index of a table as `INFORMATION_SCHEMA` describes it.
#[derive(Debug, Clone)]
struct IndexInfo {
    name: String,
    /// `PRIMARY_KEY`, `INDEX` (or another kind, not usable here).
    kind: String,
    /// `READ_WRITE` once built (empty for the primary key).
    state: String,
    managed: bool,
    /// Key columns in order, with `ASC` / `DESC`.
    columns: Vec<(String, String)>,
}

/// The best index for the poll of `table` among `indexes`, or why there is none: one whose
/// first key column is the commit-timestamp column, ascending, built, not managed by
/// Spanner. The primary key is best (no hint needed), then an index whose next columns
/// are the primary key (or none: Spanner appends it), then any other, by name.
fn choose_poll_index(table: &TableSchema, indexes: &[IndexInfo]) -> Result<PollIndex, String> {
    choose_index(table, indexes, &[&table.commit_ts_column])
}

/// The best index among `indexes` whose key starts with the columns `leading`, ascending
/// (the commit-timestamp column; or the shard column then it), built, not managed by
/// Spanner, ranked as [`choose_poll_index`] says; or why there is none.
fn choose_index(
    table: &TableSchema,
    indexes: &[IndexInfo],
    leading: &[&str],
) -> Result<PollIndex, String> {
    let leads = |i: &IndexInfo| {
        i.columns.len() >= leading.len()
            && i.columns
                .iter()
                .zip(leading)
                .all(|((c, o), want)| c == want && o != "DESC")
    };
    let what = match leading {
        [ts] => format!("its commit-timestamp column `{ts}`"),
        _ => format!(
            "its columns ({})",
            leading
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let key: Vec<&str> = table.primary_key.iter().map(String::as_str).collect();
    let mut best: Option<(u8, &IndexInfo)> = None;
    let mut building = None;
    for i in indexes.iter().filter(|i| leads(i)) {
        let rank = match i.kind.as_str() {
            "PRIMARY_KEY" => 0,
            "INDEX" if i.managed => continue,
            "INDEX" if i.state != "READ_WRITE" => {
                building = Some(format!(
                    "index `{}` on {what} is not built yet (state {}); wait until it is",
                    i.name, i.state
                ));
                continue;
            }
            "INDEX" => {
                let rest: Vec<&str> = i.columns[leading.len()..]
                    .iter()
                    .map(|(c, _)| c.as_str())
                    .collect();
                if rest.is_empty() || rest == key { 1 } else { 2 }
            }
            _ => continue,
        };
        if best.is_none_or(|(r, b)| (rank, &i.name) < (r, &b.name)) {
            best = Some((rank, i));
        }
    }
    match best {
        Some((0, _)) => Ok(PollIndex::PrimaryKey),
        Some((_, i)) => Ok(PollIndex::Index(i.name.clone())),
        None => Err(building.unwrap_or_else(|| format!("no index leads with {what}"))),
    }
}

/// Builds the keyset page query: rows after `after` up to R, ordered by (commit ts, key).
fn page_statement(
    table: &TableSchema,
    after: &Position,
    read_ts: &Timestamp,
    limit: usize,
    index: &PollIndex,
) -> PortResult<Statement> {
    shard_page_statement(table, &Shard::WHOLE, after, read_ts, limit, index)
}

/// [`page_statement`] restricted to the rows of `shard` (one more condition, see
/// [`shard::shard_condition`]); for the whole table, exactly [`page_statement`]'s SQL.
fn shard_page_statement(
    table: &TableSchema,
    shard: &Shard,
    after: &Position,
    read_ts: &Timestamp,
    limit: usize,
    index: &PollIndex,
) -> PortResult<Statement> {
    let cols = table
        .columns
        .iter()
        .map(|c| ident(&c.name))
        .collect::<PortResult<Vec<_>>>()?
        .join(", ");
    let ts = ident(&table.commit_ts_column)?;
    let keys = table
        .primary_key
        .iter()
        .map(|k| ident(k))
        .collect::<PortResult<Vec<_>>>()?;
    let key_types: Vec<ColumnType> = table
        .primary_key
        .iter()
        .map(|k| {
            table
                .columns
                .iter()
                .find(|c| &c.name == k)
                .map(|c| c.ty.clone())
                .ok_or_else(|| {
                    PortError::invalid(
                        BACKEND,
                        format!(
                            "table `{}`: key column `{k}` is not in the schema",
                            table.name
                        ),
                    )
                })
        })
        .collect::<PortResult<_>>()?;
    if after.key.len() > keys.len() {
        return Err(PortError::invalid(
            BACKEND,
            format!(
                "table `{}`: position has {} key values, the key has {} columns",
                table.name,
                after.key.len(),
                keys.len()
            ),
        ));
    }
    // A watermark before Spanner's first instant (e.g. `i64::MIN`, "from the beginning")
    // selects the same rows as that instant: no commit timestamp can be earlier.
    let w = micros_timestamp(after.commit_ts.max(SPANNER_MIN_MICROS))?;
    let mut params: Vec<(String, SpValue, Type)> = vec![
        ("r".into(), SpValue::from(*read_ts), types::timestamp()),
        ("w".into(), SpValue::from(w), types::timestamp()),
        (
            "n".into(),
            SpValue::from(i64::try_from(limit).unwrap_or(i64::MAX)),
            types::int64(),
        ),
    ];
    // (k1, .., kn) > (p1, .., pn) expanded as ORs; NULL sorts first in Spanner's ascending
    // order, so `k > NULL` means `k IS NOT NULL` and `k = NULL` means `k IS NULL`.
    let mut same_ts = String::new();
    if !after.key.is_empty() {
        let mut ors = Vec::new();
        for i in 0..after.key.len() {
            let mut ands = Vec::new();
            for (j, (v, key)) in after.key.iter().zip(&keys).enumerate().take(i + 1) {
                let null = matches!(v, Value::Null);
                ands.push(match (j < i, null) {
                    (true, true) => format!("{key} IS NULL"),
                    (true, false) => format!("{key} = @k{j}"),
                    (false, true) => format!("{key} IS NOT NULL"),
                    (false, false) => format!("{key} > @k{j}"),
                });
            }
            ors.push(format!("({})", ands.join(" AND ")));
        }
        for (j, v) in after.key.iter().enumerate() {
            if !matches!(v, Value::Null) {
                let (value, ty) = to_param(v, &key_types[j]).map_err(|m| {
                    PortError::invalid(
                        BACKEND,
                        format!(
                            "table `{}`, key column `{}`: {m}",
                            table.name, table.primary_key[j]
                        ),
                    )
                })?;
                params.push((format!("k{j}"), value, ty));
            }
        }
        same_ts = format!(" OR ({ts} = @w AND ({}))", ors.join(" OR "));
    }
    let order = std::iter::once(ts.clone())
        .chain(keys.iter().cloned())
        .collect::<Vec<_>>()
        .join(", ");
    // The hint makes the planner read the commit-timestamp (or shard) index (a range scan in
    // page order) rather than choose by statistics it may not have yet; Spanner joins each
    // index row back to the table for the columns the index lacks. Table hints:
    // https://cloud.google.com/spanner/docs/reference/standard-sql/query-syntax#table_hints
    let hint = match index {
        PollIndex::Index(name) => format!("@{{FORCE_INDEX={}}}", ident(name)?),
        PollIndex::PrimaryKey | PollIndex::FullScan => String::new(),
    };
    let in_shard = match shard::shard_condition(table, shard)? {
        Some((condition, shard_params)) => {
            params.extend(shard_params);
            format!(" AND {condition}")
        }
        None => String::new(),
    };
    let sql = format!(
        "SELECT {cols} FROM {}{hint} WHERE {ts} <= @r AND ({ts} > @w{same_ts}){in_shard} ORDER BY {order} LIMIT @n",
        ident(&table.name)?
    );
    let mut builder: StatementBuilder = Statement::builder(sql);
    for (name, value, ty) in params {
        builder = builder.add_typed_param(name, value, ty);
    }
    Ok(builder.build())
}

/// Microseconds since the epoch of a Spanner timestamp (sub-microsecond digits dropped).
fn timestamp_micros(t: &Timestamp) -> i64 {
    t.seconds()
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(t.nanos()) / 1_000)
}

/// 0001-01-01T00:00:00Z, the earliest timestamp Spanner accepts, in µs since the epoch.
const SPANNER_MIN_MICROS: i64 = -62_135_596_800 * 1_000_000;

fn micros_timestamp(us: i64) -> PortResult<Timestamp> {
    Timestamp::new(
        us.div_euclid(1_000_000),
        (us.rem_euclid(1_000_000) * 1_000) as i32,
    )
    .map_err(|e| {
        PortError::invalid(
            BACKEND,
            format!("timestamp {us} µs is out of Spanner's range: {e}"),
        )
    })
}

fn spanner_type(ty: &ColumnType) -> Type {
    match ty {
        ColumnType::Bool => types::bool(),
        ColumnType::Int64 => types::int64(),
        ColumnType::Float32 => types::float32(),
        ColumnType::Float64 => types::float64(),
        ColumnType::Numeric => types::numeric(),
        ColumnType::String => types::string(),
        ColumnType::Bytes => types::bytes(),
        ColumnType::Date => types::date(),
        ColumnType::Timestamp => types::timestamp(),
        ColumnType::Json => types::json(),
        ColumnType::Array(e) => types::array(spanner_type(e)),
    }
}

/// A core value as a typed Spanner query parameter.
pub(crate) fn to_param(v: &Value, ty: &ColumnType) -> Result<(SpValue, Type), String> {
    let value = match v {
        Value::Null => SpValue::null(),
        Value::Bool(b) => SpValue::from(*b),
        Value::Int64(n) => SpValue::from(*n),
        Value::Float32(x) => SpValue::from(*x),
        Value::Float64(x) => SpValue::from(*x),
        // Sent as text with an explicit type so Spanner parses them exactly.
        Value::Numeric(s) | Value::String(s) | Value::Json(s) => SpValue::from(s.clone()),
        Value::Bytes(b) => SpValue::from(b.clone()),
        Value::Date(d) => {
            let (y, m, day) = calendar::civil_from_days(i64::from(*d));
            // A DATE's year (days in an i32) fits an i32; month and day are small.
            SpValue::from(
                Date::new()
                    .set_year(y as i32)
                    .set_month(m as i32)
                    .set_day(day as i32),
            )
        }
        Value::Timestamp(t) => SpValue::from(micros_timestamp(*t).map_err(|e| e.to_string())?),
        Value::Array(elem, items) => {
            let list = items
                .iter()
                .map(|i| to_param(i, elem).map(|(v, _)| v))
                .collect::<Result<Vec<_>, _>>()?;
            SpValue::from(list)
        }
    };
    Ok((value, spanner_type(ty)))
}

/// A Spanner result value as a core value of column type `ty`.
fn from_spanner(v: &SpValue, ty: &ColumnType) -> Result<Value, String> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    let st = spanner_type(ty);
    let conv = |e: google_cloud_spanner::value::ConvertError| format!("{e}");
    Ok(match ty {
        ColumnType::Bool => Value::Bool(bool::from_value(v, &st).map_err(conv)?),
        ColumnType::Int64 => Value::Int64(i64::from_value(v, &st).map_err(conv)?),
        ColumnType::Float32 => Value::Float32(f32::from_value(v, &st).map_err(conv)?),
        ColumnType::Float64 => Value::Float64(f64::from_value(v, &st).map_err(conv)?),
        ColumnType::Numeric | ColumnType::String | ColumnType::Json => {
            let s = v
                .as_str()
                .ok_or_else(|| format!("expected text, got {:?}", v.kind()))?
                .to_string();
            match ty {
                ColumnType::Numeric => Value::Numeric(s),
                ColumnType::Json => Value::Json(s),
                _ => Value::String(s),
            }
        }
        ColumnType::Bytes => Value::Bytes(Vec::<u8>::from_value(v, &st).map_err(conv)?),
        ColumnType::Date => {
            let d = Date::from_value(v, &st).map_err(conv)?;
            let (m, day) = (u32::try_from(d.month), u32::try_from(d.day));
            match (m, day) {
                (Ok(m), Ok(day)) => calendar::checked_days(i64::from(d.year), m, day),
                _ => None,
            }
            .map(Value::Date)
            .ok_or_else(|| format!("{}-{}-{} is not a DATE", d.year, d.month, d.day))?
        }
        ColumnType::Timestamp => Value::Timestamp(timestamp_micros(
            &Timestamp::from_value(v, &st).map_err(conv)?,
        )),
        ColumnType::Array(elem) => {
            if v.kind() != Kind::List {
                return Err(format!("expected an array, got {:?}", v.kind()));
            }
            let list = v.as_list().ok_or("expected an array")?;
            let items = list
                .iter()
                .map(|i| from_spanner(i, elem))
                .collect::<Result<Vec<_>, _>>()?;
            Value::Array((**elem).clone(), items)
        }
    })
}

pub mod shard;
pub mod target;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_validated() {
        assert_eq!(ident("orders_2").unwrap(), "`orders_2`");
        assert!(ident("a`; DROP TABLE x").is_err());
        assert!(ident("1abc").is_err());
        assert!(ident("").is_err());
    }

    #[test]
    fn spanner_types_parse() {
        assert_eq!(parse_spanner_type("STRING(MAX)"), Some(ColumnType::String));
        assert_eq!(
            parse_spanner_type("ARRAY<BYTES(16)>"),
            Some(ColumnType::Array(Box::new(ColumnType::Bytes)))
        );
        assert_eq!(parse_spanner_type("PROTO<x.Y>"), None);
    }

    #[test]
    fn page_sql_uses_parameters_only() {
        let table = TableSchema {
            name: "orders".into(),
            columns: vec![
                Column {
                    name: "id".into(),
                    ty: ColumnType::String,
                    nullable: false,
                },
                Column {
                    name: "n".into(),
                    ty: ColumnType::Int64,
                    nullable: false,
                },
                Column {
                    name: "commit_ts".into(),
                    ty: ColumnType::Timestamp,
                    nullable: false,
                },
            ],
            primary_key: vec!["id".into(), "n".into()],
            commit_ts_column: "commit_ts".into(),
            deleted_column: None,
        };
        let after = Position {
            commit_ts: 5,
            key: vec![Value::String("x'; --".into()), Value::Null],
        };
        let r = micros_timestamp(10).unwrap();
        let stmt = page_statement(&table, &after, &r, 7, &PollIndex::FullScan).unwrap();
        let sql = stmt.sql();
        assert!(sql.contains("FROM `orders` WHERE"), "{sql}");
        assert!(!sql.contains("x'"), "{sql}");
        assert!(
            sql.contains("(`id` > @k0) OR (`id` = @k0 AND `n` IS NOT NULL)"),
            "{sql}"
        );
        assert!(
            sql.ends_with("ORDER BY `commit_ts`, `id`, `n` LIMIT @n"),
            "{sql}"
        );
    }

    fn orders() -> TableSchema {
        TableSchema {
            name: "orders".into(),
            columns: ["id", "client", "commit_ts"]
                .iter()
                .map(|n| Column {
                    name: (*n).into(),
                    ty: if *n == "commit_ts" {
                        ColumnType::Timestamp
                    } else {
                        ColumnType::String
                    },
                    nullable: false,
                })
                .collect(),
            primary_key: vec!["id".into()],
            commit_ts_column: "commit_ts".into(),
            deleted_column: None,
        }
    }

    fn index(name: &str, kind: &str, state: &str, columns: &[(&str, &str)]) -> IndexInfo {
        IndexInfo {
            name: name.into(),
            kind: kind.into(),
            state: state.into(),
            managed: false,
            columns: columns
                .iter()
                .map(|(c, o)| ((*c).into(), (*o).into()))
                .collect(),
        }
    }

    #[test]
    fn the_poll_index_leads_with_the_commit_timestamp() {
        let t = orders();
        let pk = index("PRIMARY_KEY", "PRIMARY_KEY", "", &[("id", "ASC")]);
        let by_ts = index(
            "orders_by_commit_ts",
            "INDEX",
            "READ_WRITE",
            &[("commit_ts", "ASC")],
        );
        let by_ts_client = index(
            "a_by_ts_client",
            "INDEX",
            "READ_WRITE",
            &[("commit_ts", "ASC"), ("client", "ASC")],
        );
        let sharded = index(
            "orders_by_shard",
            "INDEX",
            "READ_WRITE",
            &[("shard", "ASC"), ("commit_ts", "ASC")],
        );
        let desc = index(
            "orders_desc",
            "INDEX",
            "READ_WRITE",
            &[("commit_ts", "DESC")],
        );
        let building = index("orders_new", "INDEX", "WRITE_ONLY", &[("commit_ts", "ASC")]);

        assert_eq!(
            choose_poll_index(&t, &[pk.clone(), by_ts_client.clone(), by_ts.clone()]),
            Ok(PollIndex::Index("orders_by_commit_ts".into())),
            "an index in page order wins over another leading with the timestamp"
        );
        assert_eq!(
            choose_poll_index(&t, &[pk.clone(), by_ts_client.clone()]),
            Ok(PollIndex::Index("a_by_ts_client".into()))
        );
        let refused = choose_poll_index(&t, &[pk.clone(), sharded, desc]).unwrap_err();
        assert!(refused.contains("no index leads"), "{refused}");
        let not_yet = choose_poll_index(&t, &[pk.clone(), building]).unwrap_err();
        assert!(
            not_yet.contains("`orders_new`") && not_yet.contains("WRITE_ONLY"),
            "{not_yet}"
        );
        let mut managed = by_ts.clone();
        managed.managed = true;
        assert!(choose_poll_index(&t, &[pk, managed]).is_err());
        let ts_key = index(
            "PRIMARY_KEY",
            "PRIMARY_KEY",
            "",
            &[("commit_ts", "ASC"), ("id", "ASC")],
        );
        assert_eq!(choose_poll_index(&t, &[ts_key]), Ok(PollIndex::PrimaryKey));
    }

    #[test]
    fn the_missing_index_message_names_the_ddl() {
        let t = orders();
        let pk = index("PRIMARY_KEY", "PRIMARY_KEY", "", &[("id", "ASC")]);
        let msg = missing_index_message(&t, &[pk], "no index");
        assert!(
            msg.contains("CREATE INDEX `orders_by_commit_ts` ON `orders` (`commit_ts`)"),
            "{msg}"
        );
        // A descending key column is listed, ascending, so the index is in page order.
        let desc = index("PRIMARY_KEY", "PRIMARY_KEY", "", &[("id", "DESC")]);
        let msg = missing_index_message(&t, &[desc], "no index");
        assert!(
            msg.contains("CREATE INDEX `orders_by_commit_ts` ON `orders` (`commit_ts`, `id`)"),
            "{msg}"
        );
    }

    #[test]
    fn the_page_query_forces_the_commit_timestamp_index() {
        let r = micros_timestamp(10).unwrap();
        let stmt = page_statement(
            &orders(),
            &Position::after_ts(5),
            &r,
            7,
            &PollIndex::Index("orders_by_commit_ts".into()),
        )
        .unwrap();
        assert!(
            stmt.sql()
                .contains("FROM `orders`@{FORCE_INDEX=`orders_by_commit_ts`} WHERE"),
            "{}",
            stmt.sql()
        );
        let stmt = page_statement(
            &orders(),
            &Position::after_ts(5),
            &r,
            7,
            &PollIndex::PrimaryKey,
        )
        .unwrap();
        assert!(!stmt.sql().contains("FORCE_INDEX"), "{}", stmt.sql());
    }

    fn sharded_orders() -> TableSchema {
        let mut t = orders();
        t.columns
            .push(Column::new("shard", ColumnType::Int64, true));
        t
    }

    #[test]
    fn a_whole_shard_page_is_exactly_the_unsharded_page() {
        let r = micros_timestamp(10).unwrap();
        let after = Position {
            commit_ts: 5,
            key: vec![Value::String("a".into())],
        };
        for index in [
            PollIndex::FullScan,
            PollIndex::PrimaryKey,
            PollIndex::Index("orders_by_commit_ts".into()),
        ] {
            let plain = page_statement(&sharded_orders(), &after, &r, 7, &index).unwrap();
            let whole =
                shard_page_statement(&sharded_orders(), &Shard::WHOLE, &after, &r, 7, &index)
                    .unwrap();
            assert_eq!(plain.sql(), whole.sql());
            assert!(!whole.sql().contains("@shard") && !whole.sql().contains("@count"));
        }
        // The text every unsharded poll ran before shards existed.
        let stmt = shard_page_statement(
            &orders(),
            &Shard::WHOLE,
            &Position::after_ts(5),
            &r,
            7,
            &PollIndex::Index("orders_by_commit_ts".into()),
        )
        .unwrap();
        assert_eq!(
            stmt.sql(),
            "SELECT `id`, `client`, `commit_ts` FROM `orders`@{FORCE_INDEX=`orders_by_commit_ts`} \
             WHERE `commit_ts` <= @r AND (`commit_ts` > @w) ORDER BY `commit_ts`, `id` LIMIT @n"
        );
    }

    #[test]
    fn a_column_shard_page_reads_the_shard_index_with_one_more_condition() {
        let r = micros_timestamp(10).unwrap();
        let sharding = ledgerhost_core::source::Sharding {
            count: 3,
            column: Some("shard".into()),
        };
        let index = PollIndex::Index("ordersByShard".into());
        let stmt = shard_page_statement(
            &sharded_orders(),
            &sharding.shard(2),
            &Position::after_ts(5),
            &r,
            7,
            &index,
        )
        .unwrap();
        assert_eq!(
            stmt.sql(),
            "SELECT `id`, `client`, `commit_ts`, `shard` FROM `orders`@{FORCE_INDEX=`ordersByShard`} \
             WHERE `commit_ts` <= @r AND (`commit_ts` > @w) AND `shard` = @shard \
             ORDER BY `commit_ts`, `id` LIMIT @n"
        );
        let after = Position {
            commit_ts: 5,
            key: vec![Value::String("a".into())],
        };
        let stmt =
            shard_page_statement(&sharded_orders(), &sharding.shard(0), &after, &r, 7, &index)
                .unwrap();
        assert!(
            stmt.sql().contains(
                "AND (`commit_ts` > @w OR (`commit_ts` = @w AND ((`id` > @k0)))) \
                 AND (`shard` IS NULL OR `shard` < 1 OR `shard` >= @count) ORDER BY"
            ),
            "{}",
            stmt.sql()
        );
    }

    #[test]
    fn a_key_hash_shard_page_reads_the_commit_timestamp_index() {
        let r = micros_timestamp(10).unwrap();
        let sharding = ledgerhost_core::source::Sharding {
            count: 4,
            column: None,
        };
        let stmt = shard_page_statement(
            &orders(),
            &sharding.shard(3),
            &Position::after_ts(5),
            &r,
            7,
            &PollIndex::Index("orders_by_commit_ts".into()),
        )
        .unwrap();
        assert!(
            stmt.sql().contains(
                "FROM `orders`@{FORCE_INDEX=`orders_by_commit_ts`} WHERE `commit_ts` <= @r AND \
                 (`commit_ts` > @w) AND MOD(MOD(FARM_FINGERPRINT(CONCAT(IFNULL(`id`, ''))), \
                 @count) + @count, @count) = @shard ORDER BY"
            ),
            "{}",
            stmt.sql()
        );
    }

    #[test]
    fn the_shard_index_leads_with_the_shard_column_then_the_commit_timestamp() {
        let t = sharded_orders();
        let pk = index("PRIMARY_KEY", "PRIMARY_KEY", "", &[("id", "ASC")]);
        let by_ts = index(
            "orders_by_commit_ts",
            "INDEX",
            "READ_WRITE",
            &[("commit_ts", "ASC")],
        );
        let by_shard = index(
            "ordersByShard",
            "INDEX",
            "READ_WRITE",
            &[("shard", "ASC"), ("commit_ts", "ASC")],
        );
        let shard_only = index("orders_shard", "INDEX", "READ_WRITE", &[("shard", "ASC")]);
        let leading = ["shard", "commit_ts"];
        assert_eq!(
            choose_index(&t, &[pk.clone(), by_ts.clone(), by_shard.clone()], &leading),
            Ok(PollIndex::Index("ordersByShard".into()))
        );
        let refused = choose_index(&t, &[pk.clone(), by_ts, shard_only], &leading).unwrap_err();
        assert!(
            refused.contains("no index leads with its columns (`shard`, `commit_ts`)"),
            "{refused}"
        );
        let mut building = by_shard;
        building.state = "WRITE_ONLY".into();
        let not_yet = choose_index(&t, &[pk.clone(), building], &leading).unwrap_err();
        assert!(not_yet.contains("WRITE_ONLY"), "{not_yet}");
        let msg = missing_shard_index_message(&t, "shard", &[pk], &refused);
        assert!(
            msg.contains("CREATE INDEX `ordersByShard` ON `orders` (`shard`, `commit_ts`)"),
            "{msg}"
        );
    }
}
