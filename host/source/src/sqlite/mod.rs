//! The embedded source: an SQLite file the application writes to.
//!
//! # Commit timestamps
//!
//! SQLite has no commit timestamps, so the host keeps them, with commit order as strong as
//! Spanner's:
//!
//! - A clock row `_ledgerhost_clock(id = 1, ts, open)` holds the current *commit epoch*.
//! - Triggers the host installs on each captured table (`_ledgerhost_<table>_ins`,
//!   `_ledgerhost_<table>_upd`) stamp every inserted or updated row inside the writing
//!   transaction: the first write of an epoch opens it
//!   (`UPDATE _ledgerhost_clock SET ts = max(ts + 1, now µs), open = 1 WHERE open = 0`), then
//!   the row's commit-timestamp column gets the epoch's `ts` (matched by `rowid`, or by
//!   primary key for `WITHOUT ROWID` tables).
//! - A poll ([`Source::snapshot`]) first *closes* the epoch in a short `BEGIN IMMEDIATE`
//!   transaction (`open = 0`), which waits for any writer in progress, since SQLite
//!   serializes writers. The epoch's `ts` is the read point R: every row stamped `<= R` is
//!   committed (its writer finished before the close got the lock), and every later writer
//!   opens a new epoch with `ts > R`. Then a read transaction selects
//!   `(ts, key) > (W, last key) AND ts <= R ORDER BY ts, key LIMIT n`, with bound parameters.
//!   Polling is therefore gap-free.
//!
//! All rows of one transaction share one timestamp, like Spanner's. Transactions between two
//! polls may share one too, which is harmless: order is (commit timestamp, primary key).
//!
//! The update trigger is `AFTER UPDATE ... WHEN` the row does not already carry the open
//! epoch's timestamp, rather than `AFTER UPDATE OF <other columns>`: it cannot recurse into
//! its own stamping update (whatever `recursive_triggers` says), a row updated twice in one
//! transaction is stamped once, and a column added later by `ALTER TABLE` is covered
//! without reinstalling the trigger. Triggers from an older host version are replaced.
//!
//! [`Source::prepare_table`] also creates an index `_ledgerhost_<table>_ts` on
//! (commit-ts column, primary key) so each page is an index range scan, and stamps rows that
//! existed before capture began (commit timestamp NULL) so the first poll publishes them.
//!
//! Not captured: hard `DELETE`s (use a soft-delete column, `tables.deleted-column`) and the
//! old key of an update that changes a primary key (the new key is published).
//!
//! # Column types
//!
//! From the declared type: `INTEGER`/`INT`/`BIGINT`/`INT64` → INT64, `REAL`/`DOUBLE`/`FLOAT`/
//! `FLOAT64` → FLOAT64, `FLOAT32` → FLOAT32, `TEXT`/`VARCHAR`/`STRING` → STRING, `BLOB`/
//! `BYTES` → BYTES, `BOOLEAN`/`BOOL` → BOOL (0/1), `NUMERIC`/`DECIMAL` → NUMERIC,
//! `DATE` → DATE (`YYYY-MM-DD` text), `TIMESTAMP`/`DATETIME` → TIMESTAMP (integer µs since
//! the epoch), `JSON` → JSON, and `T ARRAY` or `"ARRAY<T>"` (SQLite's grammar needs the
//! quotes) → array of T stored as a JSON array (BYTES elements base64, DATE elements
//! `YYYY-MM-DD`). A column with no declared type is STRING.
//!
//! Exact decimals must be stored as TEXT: a column declared plain `NUMERIC` or `DECIMAL`
//! has numeric affinity, so SQLite turns `'12.50'` into the float 12.5 and loses digits of
//! big values. Declare it `DECIMAL TEXT` (text affinity, still read as NUMERIC).
//!
//! # Leases
//!
//! `_ledgerhost_leases(name PRIMARY KEY, holder, expires_at_micros, progress)` in the same
//! file, taken or renewed in one `BEGIN IMMEDIATE` transaction when the holder matches or the
//! lease expired, so host processes sharing the file agree on one holder; read
//! ([`Source::read_lease`]) with a plain `SELECT`, which takes no write lock.
//!
//! Transactions are counted by kind and purpose ([`Source::transactions`]): a snapshot is a
//! short write (the epoch close) plus a read transaction.
//!
//! # Code
//!
//! This file: the source's handle and the [`Source`] port. The parts: `connection` (opening
//! the file, clocks), `names`, `capture` (column, triggers, index), `schema` (catalog and
//! types), `shard`, `page` (the keyset queries), `values`, `snapshot`, `lease`; [`demo`] and
//! [`target`] use the source from outside.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ledgerhost_core::source::{
    HeldLeases, Lease, LeaseInfo, Snapshot, Source, TableSpec, TransactionCount,
    TransactionCounters, TransactionKind, TransactionPurpose,
};
use ledgerhost_core::{PortError, PortResult, TableSchema};
use rusqlite::Connection;

mod capture;
mod connection;
pub mod demo;
mod lease;
mod names;
mod page;
mod schema;
mod shard;
mod snapshot;
pub mod target;
mod values;

pub use capture::{DEFAULT_COMMIT_TS_COLUMN, capture_ddl};

use capture::install_capture;
use connection::open_connection;
use names::BACKEND;
use schema::read_schema;
use snapshot::SqliteSnapshot;

/// An SQLite database as a source.
pub struct SqliteSource {
    path: PathBuf,
    /// The host's own writer connection: epoch closes, triggers, leases.
    conn: Arc<Mutex<Connection>>,
    /// Idle read connections, reused by snapshots (each keeps its prepared statements).
    readers: Arc<Mutex<Vec<Connection>>>,
    /// Transactions run, by kind and purpose.
    counters: Arc<TransactionCounters>,
    /// Leases this source last saw held (renewal or take).
    held: std::sync::Arc<HeldLeases>,
}

impl SqliteSource {
    /// Opens (and creates if missing) the database in WAL mode and creates the host's clock
    /// and lease tables in it.
    pub fn open(path: &Path) -> PortResult<Self> {
        let conn = open_connection(path).map_err(|e| {
            PortError::unavailable(BACKEND, format!("cannot open {}: {e}", path.display()))
        })?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS _ledgerhost_clock (
                 id INTEGER PRIMARY KEY CHECK (id = 1),
                 ts INTEGER NOT NULL,
                 open INTEGER NOT NULL);
             INSERT OR IGNORE INTO _ledgerhost_clock (id, ts, open) VALUES (1, 0, 0);
             CREATE TABLE IF NOT EXISTS _ledgerhost_leases (
                 name TEXT PRIMARY KEY,
                 holder TEXT NOT NULL,
                 expires_at_micros INTEGER NOT NULL,
                 progress INTEGER);",
        )
        .map_err(|e| {
            PortError::unavailable(BACKEND, format!("cannot prepare {}: {e}", path.display()))
        })?;
        // Files written by the first host version named the expiry column `expires_at`.
        let old_column: bool = conn
            .query_row(
                "SELECT count(*) FROM pragma_table_info('_ledgerhost_leases')
                 WHERE name = 'expires_at'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| {
                PortError::unavailable(BACKEND, format!("cannot inspect {}: {e}", path.display()))
            })?;
        if old_column {
            conn.execute_batch(
                "ALTER TABLE _ledgerhost_leases RENAME COLUMN expires_at TO expires_at_micros",
            )
            .map_err(|e| {
                PortError::unavailable(
                    BACKEND,
                    format!(
                        "cannot migrate _ledgerhost_leases in {}: {e}",
                        path.display()
                    ),
                )
            })?;
        }
        // ... and had no progress column.
        let has_progress: bool = conn
            .query_row(
                "SELECT count(*) FROM pragma_table_info('_ledgerhost_leases')
                 WHERE name = 'progress'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| {
                PortError::unavailable(BACKEND, format!("cannot inspect {}: {e}", path.display()))
            })?;
        if !has_progress {
            conn.execute_batch("ALTER TABLE _ledgerhost_leases ADD COLUMN progress INTEGER")
                .map_err(|e| {
                    PortError::unavailable(
                        BACKEND,
                        format!(
                            "cannot migrate _ledgerhost_leases in {}: {e}",
                            path.display()
                        ),
                    )
                })?;
        }
        tracing::debug!(path = %path.display(), "sqlite source opened");
        Ok(SqliteSource {
            path: path.to_path_buf(),
            conn: Arc::new(Mutex::new(conn)),
            readers: Arc::new(Mutex::new(Vec::new())),
            counters: Arc::default(),
            held: Arc::default(),
        })
    }

    async fn with_conn<T, F>(&self, f: F) -> PortResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> PortResult<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| PortError::unavailable(BACKEND, format!("SQLite task failed: {e}")))?
    }
}

#[async_trait]
impl Source for SqliteSource {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn prepare_table(&self, spec: &TableSpec) -> PortResult<TableSchema> {
        let spec = spec.clone();
        // The table's columns (read), then the capture index and triggers (one write).
        self.counters
            .record(TransactionKind::ReadOnly, TransactionPurpose::Schema);
        self.counters
            .record(TransactionKind::ReadWrite, TransactionPurpose::Schema);
        self.with_conn(move |conn| {
            let schema = read_schema(conn, &spec)?;
            spec.sharding
                .check(&schema)
                .map_err(|m| PortError::invalid(BACKEND, m))?;
            install_capture(conn, &schema)?;
            Ok(schema)
        })
        .await
    }

    async fn snapshot(&self) -> PortResult<Box<dyn Snapshot>> {
        // The epoch close (a short write), then the read transaction.
        self.counters
            .record(TransactionKind::ReadWrite, TransactionPurpose::PollSnapshot);
        self.counters
            .record(TransactionKind::ReadOnly, TransactionPurpose::PollSnapshot);
        let read_ts = self
            .with_conn(|conn| {
                // IMMEDIATE waits for the writer in progress, if any, to commit or roll back.
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(|e| {
                        PortError::unavailable(
                            BACKEND,
                            format!("cannot close the commit epoch: {e}"),
                        )
                    })?;
                tx.execute(
                    "UPDATE _ledgerhost_clock SET open = 0 WHERE id = 1 AND open = 1",
                    [],
                )
                .map_err(|e| {
                    PortError::unavailable(BACKEND, format!("cannot close the commit epoch: {e}"))
                })?;
                let ts: i64 = tx
                    .query_row("SELECT ts FROM _ledgerhost_clock WHERE id = 1", [], |r| {
                        r.get(0)
                    })
                    .map_err(|e| {
                        PortError::unavailable(
                            BACKEND,
                            format!("cannot read the commit epoch: {e}"),
                        )
                    })?;
                tx.commit().map_err(|e| {
                    PortError::unavailable(BACKEND, format!("cannot close the commit epoch: {e}"))
                })?;
                Ok(ts)
            })
            .await?;
        let path = self.path.clone();
        let pool = self.readers.clone();
        let conn = tokio::task::spawn_blocking(move || -> PortResult<Connection> {
            let idle = pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let conn = match idle {
                Some(c) => c,
                None => open_connection(&path).map_err(|e| {
                    PortError::unavailable(
                        BACKEND,
                        format!("cannot open {} for reading: {e}", path.display()),
                    )
                })?,
            };
            // A deferred read transaction: its snapshot starts at the first read, which is
            // after the epoch close committed.
            conn.execute_batch("BEGIN").map_err(|e| {
                PortError::unavailable(BACKEND, format!("cannot begin a read transaction: {e}"))
            })?;
            Ok(conn)
        })
        .await
        .map_err(|e| PortError::unavailable(BACKEND, format!("SQLite task failed: {e}")))??;
        tracing::trace!(read_ts, "sqlite snapshot opened");
        Ok(Box::new(SqliteSnapshot {
            conn: Some(conn),
            read_ts,
            pool: self.readers.clone(),
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
