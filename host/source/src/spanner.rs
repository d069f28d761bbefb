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
//! - Leases live in `ledgerhost_leases`, created on first use, taken in read-write
//!   transactions judged by Spanner's own clock (`CURRENT_TIMESTAMP()`), so replicas with
//!   skewed clocks agree.
//!
//! The emulator is reached through `SPANNER_EMULATOR_HOST` (read by the client crate) or an
//! explicit plaintext `endpoint`; both use anonymous credentials. Otherwise application
//! default credentials are used.

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
use ledgerhost_core::source::{Lease, Position, Row, Snapshot, Source, TableSpec};
use ledgerhost_core::{Column, ColumnType, PortError, PortResult, TableSchema, Value};
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

fn unavailable(what: impl std::fmt::Display) -> PortError {
    PortError::Unavailable {
        backend: BACKEND,
        message: what.to_string(),
    }
}

fn invalid(message: impl Into<String>) -> PortError {
    PortError::Invalid {
        backend: BACKEND,
        message: message.into(),
    }
}

fn corrupt(message: impl Into<String>) -> PortError {
    PortError::Corrupt {
        backend: BACKEND,
        message: message.into(),
    }
}

/// Maps a client error to a port error, keeping `context` (what was being done).
fn map_err(context: &str, e: google_cloud_spanner::Error) -> PortError {
    let code = e.status().map(|s| s.code);
    match code {
        Some(Code::NotFound) => PortError::NotFound {
            backend: BACKEND,
            what: format!("{context}: {e}"),
        },
        Some(Code::InvalidArgument | Code::FailedPrecondition | Code::PermissionDenied) => {
            invalid(format!("{context}: {e}"))
        }
        _ => unavailable(format!("{context}: {e}")),
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
        return Err(invalid(format!(
            "`{name}` is not a valid Spanner identifier (letters, digits and `_`, starting \
             with a letter or `_`, at most 128 characters)"
        )));
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
        if let Some(ep) = &config.endpoint {
            builder = builder.with_endpoint(ep.clone());
        }
        let spanner = builder.build().await.map_err(|e| {
            unavailable(format!(
                "cannot build the Spanner client for {}: {e}",
                config.database_path()
            ))
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
        })
    }

    /// Health probe: runs `SELECT 1` in the database (fails if Spanner is unreachable or the
    /// database does not exist).
    pub async fn check(&self) -> PortResult<()> {
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
        if let Some(ep) = &self.config.admin_endpoint {
            builder = builder.with_endpoint(ep.clone());
            if ep.starts_with("http://") {
                builder = builder.with_credentials(
                    google_cloud_auth::credentials::anonymous::Builder::new().build(),
                );
            }
        }
        let admin: DatabaseAdmin = builder
            .build()
            .await
            .map_err(|e| unavailable(format!("cannot build the Spanner admin client: {e}")))?;
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
            corrupt(format!(
                "INFORMATION_SCHEMA for table `{}`: {what} is not a string",
                spec.name
            ))
        })
    };
    let mut columns = Vec::new();
    for row in &cols {
        let [name, ty, nullable] = row.as_slice() else {
            return Err(corrupt(
                "INFORMATION_SCHEMA.COLUMNS returned an unexpected shape",
            ));
        };
        let name = text(name, "COLUMN_NAME")?;
        let spanner_type = text(ty, "SPANNER_TYPE")?;
        let ty = parse_spanner_type(&spanner_type).ok_or_else(|| {
            invalid(format!(
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
                .ok_or_else(|| corrupt("INFORMATION_SCHEMA.INDEX_COLUMNS returned no column"))
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
            return Err(invalid(format!(
                "table `{}`: column `{c}` is not a commit-timestamp column \
                 (TIMESTAMP with allow_commit_timestamp=true). {hint}",
                spec.name
            )));
        }
        (None, [one]) => one.clone(),
        (None, []) => {
            return Err(invalid(format!(
                "table `{}` has no commit-timestamp column (TIMESTAMP with \
                 allow_commit_timestamp=true). {hint}",
                spec.name
            )));
        }
        (None, many) => {
            return Err(invalid(format!(
                "table `{}` has several commit-timestamp columns ({}); name the one to poll by \
                 in the table's commit-ts-column setting",
                spec.name,
                many.join(", ")
            )));
        }
    };
    if primary_key.is_empty() {
        return Err(invalid(format!(
            "table `{}` has no primary key columns; events are identified and ordered by it",
            spec.name
        )));
    }
    if let Some(d) = &spec.deleted_column
        && !columns.iter().any(|c| &c.name == d)
    {
        return Err(invalid(format!(
            "table `{}` has no soft-delete column `{d}` (tables.deleted-column)",
            spec.name
        )));
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
        let schema = read_schema(spec, |stmt| {
            let client = client.clone();
            async move { client.single_use().build().execute_query(stmt).await }
        })
        .await?;
        info!(table = %schema.name, commit_ts_column = %schema.commit_ts_column,
              primary_key = ?schema.primary_key, "spanner table ready for capture");
        Ok(schema)
    }

    async fn snapshot(&self) -> PortResult<Box<dyn Snapshot>> {
        let tx = self
            .client
            .read_only_transaction()
            .set_begin_transaction_option(BeginTransactionOption::ExplicitBegin)
            .build()
            .await
            .map_err(|e| map_err("beginning a read-only transaction", e))?;
        let read_ts = tx.read_timestamp().ok_or_else(|| {
            unavailable(
                "Spanner began a read-only transaction without reporting its read timestamp",
            )
        })?;
        Ok(Box::new(SpannerSnapshot {
            client: self.client.clone(),
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
                         (SELECT progress FROM {LEASE_TABLE} WHERE name = @n)"
                    ))
                    .add_param("n", n.clone())
                    .add_param("ms", ttl_ms)
                    .build();
                    let mut rs = tx.execute_query(stmt).await?;
                    let Some(row) = rs.next().await.transpose()? else {
                        return Ok(Lease {
                            held: false,
                            progress: None,
                        });
                    };
                    let current: Option<String> = row.get(0)?;
                    let live: Option<bool> = row.get(1)?;
                    let expires: Timestamp = row.get(2)?;
                    let stored: Option<i64> = row.get(3)?;
                    if live == Some(true) && current.as_deref() != Some(h.as_str()) {
                        return Ok(Lease {
                            held: false,
                            progress: stored,
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
                    })
                })
                .await
                .map(|r| r.into_inner())
            }
        })
        .await?;
        debug!(lease = %name, holder = %holder, held = lease.held, progress = ?lease.progress, "spanner lease");
        Ok(lease)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> PortResult<()> {
        self.ensure_lease_table().await?;
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
                        "UPDATE {LEASE_TABLE} SET expires_at = TIMESTAMP '1970-01-01T00:00:00Z' \
                         WHERE name = @n AND holder = @h"
                    ))
                    .add_param("n", n.clone())
                    .add_param("h", h.clone())
                    .build();
                        tx.execute_update(stmt).await
                    })
                    .await
            }
        })
        .await?;
        Ok(())
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
        .map_err(|e| unavailable(format!("Spanner read-write transaction task failed: {e}")))
}

/// A poll's consistent view: one read-only transaction at read timestamp R.
pub struct SpannerSnapshot {
    client: DatabaseClient,
    tx: MultiUseReadOnlyTransaction,
    read_ts: Timestamp,
    read_ts_micros: i64,
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
                let client = self.client.clone();
                read_schema(spec, |stmt| {
                    let client = client.clone();
                    async move { client.single_use().build().execute_query(stmt).await }
                })
                .await
            }
            Err(e) => Err(e),
        }
    }

    async fn page(
        &mut self,
        table: &TableSchema,
        after: &Position,
        limit: usize,
    ) -> PortResult<Vec<Row>> {
        let stmt = page_statement(table, after, &self.read_ts, limit)?;
        let context = format!("reading table `{}`", table.name);
        let (_, raw) = query_rows(&context, || self.tx.execute_query(stmt)).await?;
        let ts_index = table.column_index(&table.commit_ts_column).ok_or_else(|| {
            invalid(format!(
                "table `{}`: schema has no column `{}`",
                table.name, table.commit_ts_column
            ))
        })?;
        let mut rows = Vec::with_capacity(raw.len());
        for values in raw {
            if values.len() != table.columns.len() {
                return Err(corrupt(format!(
                    "table `{}`: {} values for {} columns",
                    table.name,
                    values.len(),
                    table.columns.len()
                )));
            }
            let mut out = Vec::with_capacity(values.len());
            for (v, col) in values.iter().zip(&table.columns) {
                out.push(from_spanner(v, &col.ty).map_err(|m| {
                    corrupt(format!(
                        "table `{}`, column `{}`: {m}",
                        table.name, col.name
                    ))
                })?);
            }
            let commit_ts = match &out[ts_index] {
                Value::Timestamp(t) => *t,
                other => {
                    return Err(corrupt(format!(
                        "table `{}`: commit-timestamp column `{}` holds {other:?} \
                         (writers must set it to PENDING_COMMIT_TIMESTAMP())",
                        table.name, table.commit_ts_column
                    )));
                }
            };
            rows.push(Row {
                values: out,
                commit_ts,
            });
        }
        debug!(table = %table.name, rows = rows.len(), read_ts = self.read_ts_micros, "spanner page");
        Ok(rows)
    }
}

/// Builds the keyset page query: rows after `after` up to R, ordered by (commit ts, key).
fn page_statement(
    table: &TableSchema,
    after: &Position,
    read_ts: &Timestamp,
    limit: usize,
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
                    invalid(format!(
                        "table `{}`: key column `{k}` is not in the schema",
                        table.name
                    ))
                })
        })
        .collect::<PortResult<_>>()?;
    if after.key.len() > keys.len() {
        return Err(invalid(format!(
            "table `{}`: position has {} key values, the key has {} columns",
            table.name,
            after.key.len(),
            keys.len()
        )));
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
                    invalid(format!(
                        "table `{}`, key column `{}`: {m}",
                        table.name, table.primary_key[j]
                    ))
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
    let sql = format!(
        "SELECT {cols} FROM {} WHERE {ts} <= @r AND ({ts} > @w{same_ts}) ORDER BY {order} LIMIT @n",
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
    .map_err(|e| invalid(format!("timestamp {us} µs is out of Spanner's range: {e}")))
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian; H. Hinnant's algorithm).
fn days_from_civil(y: i32, m: i32, d: i32) -> i32 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(z: i32) -> (i32, i32, i32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
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
            let (y, m, day) = civil_from_days(*d);
            SpValue::from(Date::new().set_year(y).set_month(m).set_day(day))
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
            Value::Date(days_from_civil(d.year, d.month, d.day))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        for (y, m, d, days) in [
            (1970, 1, 1, 0),
            (2000, 3, 1, 11_017),
            (1969, 12, 31, -1),
            (1, 1, 1, -719_162),
            (9999, 12, 31, 2_932_896),
        ] {
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
            assert_eq!(civil_from_days(days), (y, m, d));
        }
    }

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
        let stmt = page_statement(&table, &after, &r, 7).unwrap();
        let sql = stmt.sql();
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
}
