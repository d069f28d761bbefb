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

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ledgerhost_core::source::{
    HeldLeases, Lease, LeaseInfo, Position, Row, Shard, Snapshot, Source, TableSpec,
    TransactionCount, TransactionCounters, TransactionKind, TransactionPurpose,
};
use ledgerhost_core::{Column, ColumnType, PortError, PortResult, TableSchema, Value};
use ledgerhost_manifest::calendar::{self, date_text};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, params_from_iter};

const BACKEND: &str = "sqlite";
/// Default name of the commit-timestamp column.
pub const DEFAULT_COMMIT_TS_COLUMN: &str = "commit_ts";

const NOW_MICROS: &str = "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)";

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The SQL a user runs to make a table capturable: the commit-timestamp column. The host
/// installs the stamping triggers itself when it starts.
pub fn capture_ddl(table: &str, commit_ts_column: &str) -> String {
    format!(
        "ALTER TABLE {} ADD COLUMN {} INTEGER;",
        quote(table),
        quote(commit_ts_column)
    )
}

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    register_shard_function(&conn)?;
    Ok(conn)
}

/// The SQL function name of the primary-key hash a shard page filters on.
const SHARD_FUNCTION: &str = "ledgerhost_shard";

/// Registers `ledgerhost_shard(count, k1, .., kn)`: the shard of a key by
/// [`Shard::of_key_text`] over each value's text (integers in decimal, text and blobs as
/// their bytes, NULL as nothing), so a key always lands in the same shard.
fn register_shard_function(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        SHARD_FUNCTION,
        -1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let count: i64 = ctx.get(0)?;
            let mut parts: Vec<Vec<u8>> = Vec::with_capacity(ctx.len().saturating_sub(1));
            for i in 1..ctx.len() {
                parts.push(match ctx.get_raw(i) {
                    ValueRef::Null => Vec::new(),
                    ValueRef::Integer(n) => n.to_string().into_bytes(),
                    ValueRef::Real(f) => f.to_string().into_bytes(),
                    ValueRef::Text(b) | ValueRef::Blob(b) => b.to_vec(),
                });
            }
            let count = u32::try_from(count.max(1)).unwrap_or(u32::MAX);
            Ok(i64::from(Shard::of_key_text(
                parts.iter().map(Vec::as_slice),
                count,
            )))
        },
    )
}

/// The SQL condition selecting `shard`'s rows of `table` (see [`Shard`]), `None` for the
/// whole table.
fn shard_condition(table: &TableSchema, shard: &Shard) -> Option<String> {
    if shard.is_whole() {
        return None;
    }
    Some(match &shard.column {
        Some(column) if shard.index == 0 => {
            // Shard 0 also takes every value no other shard reads: nothing goes unpolled.
            let others = (1..shard.count)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            format!("NOT coalesce({} IN ({others}), 0)", quote(column))
        }
        Some(column) => format!("{} = {}", quote(column), shard.index),
        None => {
            let keys = table
                .primary_key
                .iter()
                .map(|k| quote(k))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "{SHARD_FUNCTION}({}, {keys}) = {}",
                shard.count, shard.index
            )
        }
    })
}

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

/// Idle read connections kept for reuse; more only occur with concurrent snapshots.
const MAX_IDLE_READERS: usize = 4;

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

/// Reads a table's schema and checks it can be captured.
fn read_schema(conn: &Connection, spec: &TableSpec) -> PortResult<TableSchema> {
    let ts_col = spec
        .commit_ts_column
        .clone()
        .unwrap_or_else(|| DEFAULT_COMMIT_TS_COLUMN.to_string());
    let mut stmt = conn
        .prepare("SELECT name, type, \"notnull\", pk, hidden FROM pragma_table_xinfo(?1)")
        .map_err(|e| PortError::unavailable(BACKEND, e))?;
    let rows = stmt
        .query_map([&spec.name], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| PortError::unavailable(BACKEND, e))?;
    if rows.is_empty() {
        return Err(PortError::NotFound {
            backend: BACKEND,
            what: format!("table `{}`", spec.name),
        });
    }
    let mut columns = Vec::new();
    let mut pk: Vec<(i64, String)> = Vec::new();
    for (name, decl, notnull, pk_pos, hidden) in rows {
        // 1 = hidden column of a virtual table; 2 and 3 are generated columns, which are real.
        if hidden == 1 {
            continue;
        }
        let ty = column_type(&decl).map_err(|m| {
            PortError::invalid(
                BACKEND,
                format!("table `{}`, column `{name}`: {m}", spec.name),
            )
        })?;
        let ty = if name == ts_col {
            if !matches!(ty, ColumnType::Int64 | ColumnType::Timestamp) {
                return Err(PortError::invalid(
                    BACKEND,
                    format!(
                        "table `{}`: commit-timestamp column `{ts_col}` is declared `{decl}`, but                      the host stores integer microseconds in it. SQLite cannot change a                      column's type: add a new column with\n  {}\nand name it in the table's                      commit-ts-column setting",
                        spec.name,
                        capture_ddl(&spec.name, "commit_ts_micros")
                    ),
                ));
            }
            ColumnType::Timestamp
        } else {
            ty
        };
        if pk_pos > 0 {
            pk.push((pk_pos, name.clone()));
        }
        columns.push(Column {
            name,
            ty,
            nullable: notnull == 0 && pk_pos == 0,
        });
    }
    let ts = columns.iter().find(|c| c.name == ts_col);
    if ts.is_none() {
        return Err(PortError::invalid(
            BACKEND,
            format!(
                "table `{}` has no commit-timestamp column `{ts_col}`. Add it with:\n  {}\n\
             (the host installs the triggers that fill it; `ledgerhost sqlite-ddl {}` prints this)",
                spec.name,
                capture_ddl(&spec.name, &ts_col),
                spec.name
            ),
        ));
    }
    if pk.is_empty() {
        return Err(PortError::invalid(
            BACKEND,
            format!(
                "table `{}` has no PRIMARY KEY; events are identified and ordered by it, so declare one",
                spec.name
            ),
        ));
    }
    pk.sort();
    if let Some(d) = &spec.deleted_column {
        match columns.iter().find(|c| &c.name == d) {
            None => {
                return Err(PortError::invalid(
                    BACKEND,
                    format!(
                        "table `{}` has no soft-delete column `{d}` (tables.deleted-column)",
                        spec.name
                    ),
                ));
            }
            Some(c) if !matches!(c.ty, ColumnType::Bool | ColumnType::Int64) => {
                return Err(PortError::invalid(
                    BACKEND,
                    format!(
                        "table `{}`: soft-delete column `{d}` is {:?}; declare it BOOLEAN \
                     (1 = deleted)",
                        spec.name, c.ty
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(TableSchema {
        name: spec.name.clone(),
        columns,
        primary_key: pk.into_iter().map(|(_, n)| n).collect(),
        commit_ts_column: ts_col,
        deleted_column: spec.deleted_column.clone(),
    })
}

/// Maps a declared SQLite column type to a column type.
fn column_type(decl: &str) -> Result<ColumnType, String> {
    // SQLite's grammar needs `ARRAY<T>` quoted; the declared type may keep the quotes.
    let d = decl.trim().to_ascii_uppercase();
    let d = d.trim_matches(|c| matches!(c, '"' | '`' | '[' | ']'));
    let array_of = d
        .strip_suffix(" ARRAY")
        .or_else(|| d.strip_prefix("ARRAY<").and_then(|r| r.strip_suffix('>')));
    if let Some(inner) = array_of {
        let elem = column_type(inner)?;
        if matches!(elem, ColumnType::Array(_)) {
            return Err("arrays of arrays are not supported".into());
        }
        return Ok(ColumnType::Array(Box::new(elem)));
    }
    Ok(if d.contains("BOOL") {
        ColumnType::Bool
    } else if d.contains("INT") {
        ColumnType::Int64
    } else if d.contains("FLOAT32") {
        ColumnType::Float32
    } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
        ColumnType::Float64
    } else if d.contains("NUMERIC") || d.contains("DECIMAL") {
        ColumnType::Numeric
    } else if d.contains("TIMESTAMP") || d.contains("DATETIME") {
        ColumnType::Timestamp
    } else if d.contains("DATE") {
        ColumnType::Date
    } else if d.contains("JSON") {
        ColumnType::Json
    } else if d.contains("BLOB") || d.contains("BYTES") {
        ColumnType::Bytes
    } else if d.is_empty()
        || d.contains("TEXT")
        || d.contains("CHAR")
        || d.contains("CLOB")
        || d.contains("STRING")
    {
        ColumnType::String
    } else {
        return Err(format!(
            "declared type `{decl}` is not understood; use INTEGER, REAL, FLOAT32, TEXT, BLOB, \
             BOOLEAN, DECIMAL TEXT, DATE, TIMESTAMP, JSON or ARRAY<T>"
        ));
    })
}

/// The capture index on (commit-ts column, primary key) that every page reads through.
fn index_name(table: &str) -> String {
    format!("_ledgerhost_{table}_ts")
}

/// Installs the keyset index and the stamping triggers (replacing triggers of another
/// definition), and stamps rows that predate capture. Idempotent; one write transaction.
/// Returns how many rows were stamped.
fn install_capture(conn: &mut Connection, schema: &TableSchema) -> PortResult<usize> {
    let failed = |what: &str, e: rusqlite::Error| {
        PortError::unavailable(
            BACKEND,
            format!("cannot {what} on table `{}`: {e}", schema.name),
        )
    };
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| failed("start the capture transaction", e))?;
    let without_rowid: bool = tx
        .query_row(
            "SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?1",
            [&schema.name],
            |r| r.get(0),
        )
        .map_err(|e| failed("read the table kind", e))?;
    let t = quote(&schema.name);
    let ts = quote(&schema.commit_ts_column);
    let keys: Vec<String> = schema.primary_key.iter().map(|k| quote(k)).collect();
    tx.execute_batch(&format!(
        "CREATE INDEX IF NOT EXISTS {} ON {t} ({ts}, {})",
        quote(&index_name(&schema.name)),
        keys.join(", ")
    ))
    .map_err(|e| failed("create the commit-timestamp index", e))?;
    let this_row = if without_rowid {
        keys.iter()
            .map(|k| format!("{k} = NEW.{k}"))
            .collect::<Vec<_>>()
            .join(" AND ")
    } else {
        "rowid = NEW.rowid".to_string()
    };
    let stamp = format!(
        "BEGIN
  UPDATE _ledgerhost_clock SET ts = max(ts + 1, {NOW_MICROS}), open = 1 WHERE id = 1 AND open = 0;
  UPDATE {t} SET {ts} = (SELECT ts FROM _ledgerhost_clock WHERE id = 1) WHERE {this_row};
END"
    );
    let triggers = [
        (
            format!("_ledgerhost_{}_ins", schema.name),
            format!("AFTER INSERT ON {t}"),
        ),
        (
            format!("_ledgerhost_{}_upd", schema.name),
            // Skips rows already stamped with the open epoch: the trigger's own update, and a
            // row written twice in one transaction.
            format!(
                "AFTER UPDATE ON {t} WHEN NOT EXISTS (SELECT 1 FROM _ledgerhost_clock \
                 WHERE id = 1 AND open = 1 AND ts IS NEW.{ts})"
            ),
        ),
    ];
    for (name, when) in triggers {
        let sql = format!("CREATE TRIGGER {} {when}\n{stamp}", quote(&name));
        let existing: Option<String> = tx
            .query_row(
                "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?1",
                [&name],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| failed("read the capture triggers", e))?;
        if existing.as_deref() == Some(sql.as_str()) {
            continue;
        }
        if existing.is_some() {
            tracing::info!(table = %schema.name, trigger = %name, "replacing capture trigger of an older definition");
            tx.execute_batch(&format!("DROP TRIGGER {}", quote(&name)))
                .map_err(|e| failed("drop an outdated capture trigger", e))?;
        }
        tx.execute_batch(&sql)
            .map_err(|e| failed("install the capture triggers", e))?;
        tracing::info!(table = %schema.name, trigger = %name, "capture trigger installed");
    }
    // Setting NULL to NULL fires the update trigger, which stamps the row.
    let stamped = tx
        .execute(
            &format!("UPDATE {t} SET {ts} = NULL WHERE {ts} IS NULL"),
            [],
        )
        .map_err(|e| failed("stamp rows written before capture", e))?;
    tx.commit()
        .map_err(|e| failed("commit the capture transaction", e))?;
    if stamped > 0 {
        tracing::info!(table = %schema.name, rows = stamped, "stamped rows written before capture began");
    }
    Ok(stamped)
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
        self.counters.record(
            TransactionKind::ReadWrite,
            self.held.purpose_of_try(name, holder),
        );
        let (lease_name, lease_holder) = (name, holder);
        let (name, holder) = (name.to_string(), holder.to_string());
        let ttl_micros = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX);
        let result = self.with_conn(move |conn| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(|e| PortError::unavailable(BACKEND, e))?;
            let now = now_micros();
            let current: Option<(String, i64, Option<i64>)> = tx
                .query_row(
                    "SELECT holder, expires_at_micros, progress FROM _ledgerhost_leases
                     WHERE name = ?1",
                    [&name],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(|e| PortError::unavailable(BACKEND, e))?;
            let free = match &current {
                None => true,
                Some((h, expires, _)) => *h == holder || *expires <= now,
            };
            let remaining = if free {
                ttl_micros
            } else {
                current.as_ref().map_or(0, |c| c.1.saturating_sub(now).max(0))
            };
            let stored = current.as_ref().and_then(|c| c.2);
            let progress = if free { progress.or(stored) } else { stored };
            if free {
                tx.execute(
                    "INSERT INTO _ledgerhost_leases (name, holder, expires_at_micros, progress)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(name) DO UPDATE SET holder = excluded.holder,
                                            expires_at_micros = excluded.expires_at_micros,
                                            progress = excluded.progress",
                    rusqlite::params![
                        name,
                        holder,
                        now.saturating_add(ttl_micros),
                        progress
                    ],
                )
                .map_err(|e| PortError::unavailable(BACKEND, e))?;
            }
            tx.commit().map_err(|e| PortError::unavailable(BACKEND, e))?;
            if !free {
                tracing::debug!(lease = %name, holder = %holder, "lease held by another holder");
            }
            Ok(Lease {
                held: free,
                progress,
                remaining: Duration::from_micros(u64::try_from(remaining).unwrap_or(0)),
            })
        })
        .await;
        self.held.record(
            lease_name,
            lease_holder,
            matches!(&result, Ok(lease) if lease.held),
        );
        result
    }

    async fn leases(&self, prefix: &str) -> PortResult<Vec<LeaseInfo>> {
        self.counters
            .record(TransactionKind::ReadOnly, TransactionPurpose::LeaseRead);
        let prefix = prefix.to_string();
        self.with_conn(move |conn| {
            let now = now_micros();
            let mut stmt = conn
                .prepare_cached(
                    "SELECT name, holder, expires_at_micros, progress FROM _ledgerhost_leases
                     WHERE substr(name, 1, length(?1)) = ?1 ORDER BY name",
                )
                .map_err(|e| PortError::unavailable(BACKEND, e))?;
            let rows = stmt
                .query_map([&prefix], |r| {
                    let expires: i64 = r.get(2)?;
                    let remaining = expires.saturating_sub(now).max(0);
                    Ok(LeaseInfo {
                        name: r.get(0)?,
                        holder: r.get(1)?,
                        remaining: Duration::from_micros(u64::try_from(remaining).unwrap_or(0)),
                        progress: r.get(3)?,
                    })
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(|e| PortError::unavailable(BACKEND, e))?;
            Ok(rows)
        })
        .await
    }

    async fn read_lease(&self, name: &str, holder: &str) -> PortResult<Lease> {
        self.counters
            .record(TransactionKind::ReadOnly, TransactionPurpose::LeaseRead);
        let (name, holder) = (name.to_string(), holder.to_string());
        // A plain read on the host's connection: no write lock, so it never waits for (or
        // holds up) the application's writers.
        self.with_conn(move |conn| {
            let current: Option<(String, i64, Option<i64>)> = conn
                .query_row(
                    "SELECT holder, expires_at_micros, progress FROM _ledgerhost_leases
                     WHERE name = ?1",
                    [&name],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(|e| PortError::unavailable(BACKEND, e))?;
            Ok(lease_as_read(current, &holder, now_micros()))
        })
        .await
    }

    async fn release_lease(
        &self,
        name: &str,
        holder: &str,
        progress: Option<i64>,
    ) -> PortResult<()> {
        self.counters
            .record(TransactionKind::ReadWrite, TransactionPurpose::Release);
        let (name, holder) = (name.to_string(), holder.to_string());
        self.held.record(&name, &holder, false);
        self.with_conn(move |conn| {
            // Expired rather than deleted: the progress stays for the next holder.
            conn.execute(
                "UPDATE _ledgerhost_leases SET expires_at_micros = 0,
                        progress = coalesce(?3, progress)
                 WHERE name = ?1 AND holder = ?2",
                rusqlite::params![name, holder, progress],
            )
            .map_err(|e| PortError::unavailable(BACKEND, e))?;
            Ok(())
        })
        .await
    }

    fn transactions(&self) -> Vec<TransactionCount> {
        self.counters.snapshot()
    }
}

/// The lease `holder` sees in the row `(holder, expires_at_micros, progress)` at `now`.
fn lease_as_read(row: Option<(String, i64, Option<i64>)>, holder: &str, now: i64) -> Lease {
    let Some((h, expires, progress)) = row else {
        return Lease {
            held: false,
            progress: None,
            remaining: Duration::ZERO,
        };
    };
    let remaining = expires.saturating_sub(now).max(0);
    Lease {
        held: h == holder && remaining > 0,
        progress,
        remaining: Duration::from_micros(u64::try_from(remaining).unwrap_or(0)),
    }
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// A read transaction at the closed epoch R.
struct SqliteSnapshot {
    /// Taken while a blocking task uses it.
    conn: Option<Connection>,
    read_ts: i64,
    /// Where the connection goes back when the snapshot ends.
    pool: Arc<Mutex<Vec<Connection>>>,
}

impl Drop for SqliteSnapshot {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        // Ending a read transaction writes nothing, so doing it here does not block for long.
        if let Err(e) = conn.execute_batch("COMMIT") {
            tracing::debug!(error = %e, "read connection dropped instead of reused");
            return;
        }
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < MAX_IDLE_READERS {
            pool.push(conn);
        }
    }
}

impl SqliteSnapshot {
    async fn run<T, F>(&mut self, f: F) -> PortResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> PortResult<T> + Send + 'static,
    {
        let conn = self
            .conn
            .take()
            .ok_or_else(|| PortError::unavailable(BACKEND, "snapshot used after a failed read"))?;
        let (conn, out) = tokio::task::spawn_blocking(move || {
            let out = f(&conn);
            (conn, out)
        })
        .await
        .map_err(|e| PortError::unavailable(BACKEND, format!("SQLite task failed: {e}")))?;
        self.conn = Some(conn);
        out
    }
}

#[async_trait]
impl Snapshot for SqliteSnapshot {
    fn read_ts(&self) -> i64 {
        self.read_ts
    }

    async fn schema(&mut self, spec: &TableSpec) -> PortResult<TableSchema> {
        let spec = spec.clone();
        self.run(move |conn| read_schema(conn, &spec)).await
    }

    async fn shard_page(
        &mut self,
        table: &TableSchema,
        shard: &Shard,
        after: &Position,
        limit: usize,
    ) -> PortResult<Vec<Row>> {
        let table = table.clone();
        let after = after.clone();
        let read_ts = self.read_ts;
        let shard = shard.clone();
        self.run(move |conn| read_page(conn, &table, &shard, &after, limit, read_ts))
            .await
    }
}

/// The two page queries, each one index range scan in index order over
/// (commit-ts column, primary key):
/// - the rest of timestamp W after the last key read (`ts = ?1 AND key > (?3..)`, limit ?2),
///   only when a key is given;
/// - then the later timestamps up to R (`ts > ?1 AND ts <= ?3`, limit ?2).
///
/// One combined row-value condition `(ts, key) > (W, last key)` is not enough: SQLite then
/// seeks on `ts` alone, so paging through one big transaction (one timestamp) rescans it
/// from its start for every page.
///
/// A shard's condition (see [`shard_condition`]) is one more filter on the same range scan.
fn page_sql(
    table: &TableSchema,
    shard: &Shard,
    after: &Position,
) -> PortResult<(Option<String>, String)> {
    let ts = quote(&table.commit_ts_column);
    let in_shard = shard_condition(table, shard)
        .map(|c| format!(" AND {c}"))
        .unwrap_or_default();
    let cols = table
        .columns
        .iter()
        .map(|c| quote(&c.name))
        .collect::<Vec<_>>()
        .join(", ");
    // INDEXED BY: without statistics the planner may prefer the rowid for `key > ?` and
    // filter the timestamp, which scans the rest of the table.
    let t = format!(
        "{} INDEXED BY {}",
        quote(&table.name),
        quote(&index_name(&table.name))
    );
    let keys: Vec<String> = table.primary_key.iter().map(|k| quote(k)).collect();
    let order = keys.join(", ");
    let rest_of_w = if after.key.is_empty() {
        None
    } else {
        if after.key.len() != keys.len() {
            return Err(PortError::invalid(
                BACKEND,
                format!(
                    "table `{}`: keyset position has {} key values for a {}-column primary key",
                    table.name,
                    after.key.len(),
                    keys.len()
                ),
            ));
        }
        let placeholders = (0..keys.len())
            .map(|i| format!("?{}", i + 3))
            .collect::<Vec<_>>()
            .join(", ");
        Some(format!(
            "SELECT {cols} FROM {t} WHERE {ts} = ?1 AND ({order}) > ({placeholders}){in_shard} \
             ORDER BY {order} LIMIT ?2"
        ))
    };
    let later = format!(
        "SELECT {cols} FROM {t} WHERE {ts} > ?1 AND {ts} <= ?3{in_shard} \
         ORDER BY {ts}, {order} LIMIT ?2"
    );
    Ok((rest_of_w, later))
}

/// Parameters of the first [`page_sql`] query.
fn rest_of_w_params(after: &Position, limit: usize) -> Vec<rusqlite::types::Value> {
    let mut params = vec![
        rusqlite::types::Value::Integer(after.commit_ts),
        rusqlite::types::Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)),
    ];
    params.extend(after.key.iter().map(to_sql));
    params
}

/// Parameters of the second [`page_sql`] query.
fn later_params(after: &Position, limit: usize, read_ts: i64) -> Vec<rusqlite::types::Value> {
    vec![
        rusqlite::types::Value::Integer(after.commit_ts),
        rusqlite::types::Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)),
        rusqlite::types::Value::Integer(read_ts),
    ]
}

fn read_page(
    conn: &Connection,
    table: &TableSchema,
    shard: &Shard,
    after: &Position,
    limit: usize,
    read_ts: i64,
) -> PortResult<Vec<Row>> {
    let (rest_of_w, later) = page_sql(table, shard, after)?;
    let mut out = Vec::with_capacity(limit.min(10_000));
    // W itself is a timestamp already read in full up to the last key, so W <= R holds.
    if let Some(sql) = rest_of_w
        && after.commit_ts <= read_ts
    {
        read_rows(conn, table, &sql, rest_of_w_params(after, limit), &mut out)?;
    }
    if out.len() < limit {
        let params = later_params(after, limit - out.len(), read_ts);
        read_rows(conn, table, &later, params, &mut out)?;
    }
    Ok(out)
}

/// Runs one page query and appends its rows.
fn read_rows(
    conn: &Connection,
    table: &TableSchema,
    sql: &str,
    params: Vec<rusqlite::types::Value>,
    out: &mut Vec<Row>,
) -> PortResult<()> {
    let read_failed = |e: rusqlite::Error| {
        let hint = if e.to_string().contains("no such index") {
            " (the capture index and triggers are installed when the host prepares the table \
             at start; restart the host after dropping and re-creating a captured table)"
        } else {
            ""
        };
        PortError::unavailable(
            BACKEND,
            format!("cannot read table `{}`: {e}{hint}", table.name),
        )
    };
    let mut stmt = conn.prepare_cached(sql).map_err(read_failed)?;
    let ts_index = table
        .column_index(&table.commit_ts_column)
        .ok_or_else(|| PortError::invalid(BACKEND, "commit-timestamp column missing"))?;
    let mut rows = stmt.query(params_from_iter(params)).map_err(read_failed)?;
    while let Some(r) = rows.next().map_err(read_failed)? {
        let mut values = Vec::with_capacity(table.columns.len());
        for (i, c) in table.columns.iter().enumerate() {
            let v = r.get_ref(i).map_err(read_failed)?;
            values.push(from_sql(v, &c.ty).map_err(|m| {
                let key: Vec<String> = table
                    .key_indexes()
                    .iter()
                    .map(|k| format!("{:?}", r.get_ref(*k).map(|v| format!("{v:?}"))))
                    .collect();
                PortError::Corrupt {
                    backend: BACKEND,
                    message: format!(
                        "table `{}`, row with key ({}), column `{}`: {m}",
                        table.name,
                        key.join(", "),
                        c.name
                    ),
                }
            })?);
        }
        let commit_ts = match values[ts_index] {
            Value::Timestamp(t) => t,
            _ => {
                return Err(PortError::Corrupt {
                    backend: BACKEND,
                    message: format!("table `{}`: a row without commit timestamp", table.name),
                });
            }
        };
        out.push(Row { values, commit_ts });
    }
    Ok(())
}

fn to_sql(v: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as S;
    match v {
        Value::Null => S::Null,
        Value::Bool(b) => S::Integer(i64::from(*b)),
        Value::Int64(i) | Value::Timestamp(i) => S::Integer(*i),
        Value::Float32(f) => S::Real(f64::from(*f)),
        Value::Float64(f) => S::Real(*f),
        Value::Date(d) => S::Text(date_text(*d)),
        Value::Numeric(s) | Value::String(s) | Value::Json(s) => S::Text(s.clone()),
        Value::Bytes(b) => S::Blob(b.clone()),
        Value::Array(..) => S::Null,
    }
}

fn from_sql(v: ValueRef<'_>, ty: &ColumnType) -> Result<Value, String> {
    let text = |b: &[u8]| {
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| "text is not UTF-8".to_string())
    };
    Ok(match (ty, v) {
        (_, ValueRef::Null) => Value::Null,
        (ColumnType::Bool, ValueRef::Integer(i)) => Value::Bool(i != 0),
        (ColumnType::Int64, ValueRef::Integer(i)) => Value::Int64(i),
        (ColumnType::Timestamp, ValueRef::Integer(i)) => Value::Timestamp(i),
        (ColumnType::Float64, ValueRef::Real(f)) => Value::Float64(f),
        (ColumnType::Float64, ValueRef::Integer(i)) => Value::Float64(i as f64),
        (ColumnType::Float32, ValueRef::Real(f)) => Value::Float32(f as f32),
        (ColumnType::Float32, ValueRef::Integer(i)) => Value::Float32(i as f32),
        (ColumnType::Numeric, ValueRef::Text(t)) => Value::Numeric(text(t)?),
        (ColumnType::Numeric, ValueRef::Integer(i)) => Value::Numeric(i.to_string()),
        (ColumnType::Numeric, ValueRef::Real(f)) => Value::Numeric(f.to_string()),
        (ColumnType::String, ValueRef::Text(t)) => Value::String(text(t)?),
        (ColumnType::String, ValueRef::Integer(i)) => Value::String(i.to_string()),
        (ColumnType::String, ValueRef::Real(f)) => Value::String(f.to_string()),
        (ColumnType::Json, ValueRef::Text(t)) => Value::Json(text(t)?),
        // A JSON column has numeric affinity: SQLite stores the documents `12` and `1.5` as
        // numbers.
        (ColumnType::Json, ValueRef::Integer(i)) => Value::Json(i.to_string()),
        (ColumnType::Json, ValueRef::Real(f)) => Value::Json(
            serde_json::Number::from_f64(f)
                .ok_or_else(|| format!("{f} is not a JSON number"))?
                .to_string(),
        ),
        (ColumnType::Bytes, ValueRef::Blob(b)) => Value::Bytes(b.to_vec()),
        (ColumnType::Date, ValueRef::Text(t)) => Value::Date(parse_date(&text(t)?)?),
        (ColumnType::Array(elem), ValueRef::Text(t)) => {
            let json: serde_json::Value = serde_json::from_slice(t)
                .map_err(|e| format!("array column is not a JSON array: {e}"))?;
            let items = json
                .as_array()
                .ok_or("array column is not a JSON array")?
                .iter()
                .map(|j| from_json(j, elem))
                .collect::<Result<Vec<_>, _>>()?;
            Value::Array((**elem).clone(), items)
        }
        (ty, v) => return Err(format!("stored value {v:?} does not fit type {ty:?}")),
    })
}

fn from_json(j: &serde_json::Value, ty: &ColumnType) -> Result<Value, String> {
    use serde_json::Value as J;
    Ok(match (ty, j) {
        (_, J::Null) => Value::Null,
        (ColumnType::Bool, J::Bool(b)) => Value::Bool(*b),
        (ColumnType::Int64, J::Number(n)) => Value::Int64(n.as_i64().ok_or("not an integer")?),
        (ColumnType::Timestamp, J::Number(n)) => {
            Value::Timestamp(n.as_i64().ok_or("not an integer")?)
        }
        (ColumnType::Float64, J::Number(n)) => Value::Float64(n.as_f64().ok_or("not a number")?),
        (ColumnType::Float32, J::Number(n)) => {
            Value::Float32(n.as_f64().ok_or("not a number")? as f32)
        }
        (ColumnType::Numeric, J::Number(n)) => Value::Numeric(n.to_string()),
        (ColumnType::Numeric, J::String(s)) => Value::Numeric(s.clone()),
        (ColumnType::String, J::String(s)) => Value::String(s.clone()),
        (ColumnType::Json, other) => Value::Json(other.to_string()),
        (ColumnType::Date, J::String(s)) => Value::Date(parse_date(s)?),
        (ColumnType::Bytes, J::String(s)) => Value::Bytes(base64_decode(s)?),
        (ty, j) => return Err(format!("array element {j} does not fit type {ty:?}")),
    })
}

/// Standard base64 (padding optional), as Spanner writes BYTES in JSON.
fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    let bad = || format!("array element `{s}` is not base64 (BYTES elements are base64 text)");
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(bad()),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be padding zeros, and a lone 6-bit group encodes nothing.
    if bits >= 6 || acc != 0 {
        return Err(bad());
    }
    Ok(out)
}

/// Standard base64 with padding, as [`base64_decode`] reads it.
fn base64_encode(b: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, x)| acc | (u32::from(*x) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Days since 1970-01-01 of the `YYYY-MM-DD` date a text starts with.
fn parse_date(s: &str) -> Result<i32, String> {
    s.get(..10)
        .and_then(calendar::parse_date)
        .ok_or_else(|| format!("`{s}` is not a YYYY-MM-DD date"))
}

pub mod demo;
pub mod target;
#[cfg(test)]
mod tests;
