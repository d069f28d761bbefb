//! The tables of the ledger file, its layout version (`PRAGMA user_version`), and the
//! migration that brings a file of layout 0 (a row per message) up to layout 1 (a row per
//! page, [`super::page`]) when it is opened.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use ledgerhost_core::{PortError, PortResult};
use rusqlite::{Connection, params};

use super::layout;
use super::page::PageWriter;
use super::state::BACKEND;

/// The layout this build writes. A file of an older one is migrated at open; a newer one is
/// refused, so an older ledgerhost never misreads what a newer one wrote.
pub(super) const LAYOUT: i64 = 1;

/// The tables of layout 1 (all `IF NOT EXISTS`).
const TABLES: &str = "
    CREATE TABLE IF NOT EXISTS topics (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
    -- The log: a row per page, keyed by the id of its first message; ids are global and
    -- never reused (read::end).
    CREATE TABLE IF NOT EXISTS pages (
        id INTEGER PRIMARY KEY,
        topic INTEGER NOT NULL,
        count INTEGER NOT NULL,
        published_at INTEGER NOT NULL,
        body BLOB NOT NULL);
    CREATE INDEX IF NOT EXISTS pages_by_topic ON pages (topic, id);
    CREATE TABLE IF NOT EXISTS subscriptions (
        name TEXT PRIMARY KEY,
        topic TEXT NOT NULL,
        filter TEXT NOT NULL,
        ack_deadline_ms INTEGER NOT NULL,
        dead_letter_topic TEXT NOT NULL,
        cursor INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS acks (sub TEXT NOT NULL, id INTEGER NOT NULL,
        PRIMARY KEY (sub, id)) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS nacks (sub TEXT NOT NULL, id INTEGER NOT NULL,
        attempt INTEGER NOT NULL, PRIMARY KEY (sub, id)) WITHOUT ROWID;
    -- The poller's progress per source table, written in the transaction of the page it
    -- covers (Ledger::publish_page).
    CREATE TABLE IF NOT EXISTS progress (tbl TEXT PRIMARY KEY, record TEXT NOT NULL);
    -- What the messages of a schema share, once (layout::header_len).
    CREATE TABLE IF NOT EXISTS headers (id INTEGER PRIMARY KEY, bytes BLOB NOT NULL UNIQUE);";

/// Sets the connection's pragmas, migrates a file of an older layout and creates what the
/// file lacks. `path` names the file in errors.
pub(super) fn prepare(conn: &Connection, path: &Path) -> PortResult<()> {
    let sqlite = |e: rusqlite::Error| {
        PortError::unavailable(BACKEND, format!("cannot prepare {}: {e}", path.display()))
    };
    conn.busy_timeout(Duration::from_secs(30)).map_err(sqlite)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sqlite)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sqlite)?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sqlite)?;
    if version > LAYOUT {
        return Err(PortError::Invalid {
            backend: BACKEND,
            message: format!(
                "{} has layout {version}, written by a newer ledgerhost; this one reads \
                 layouts up to {LAYOUT}: run the newer ledgerhost (files are not migrated \
                 backwards)",
                path.display()
            ),
        });
    }
    if version < 1 && has_table(conn, "messages").map_err(sqlite)? {
        let started = std::time::Instant::now();
        let moved = migrate_layout0(conn).map_err(|e| match e {
            Migration::Sqlite(e) => sqlite(e),
            Migration::Message(id, why) => PortError::Corrupt {
                backend: BACKEND,
                message: format!(
                    "cannot migrate {} to layout {LAYOUT}: message {id}: {why}; the file is \
                     left as it was (layout 0)",
                    path.display()
                ),
            },
        })?;
        tracing::info!(
            file = %path.display(),
            messages = moved,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "migrated the embedded ledger to layout {LAYOUT}"
        );
    }
    conn.execute_batch(TABLES).map_err(sqlite)?;
    conn.pragma_update(None, "user_version", LAYOUT)
        .map_err(sqlite)?;
    Ok(())
}

/// Sets up the reading half's connection to a prepared file: it waits for a checkpoint
/// rather than failing, and refuses to write (every write goes through the writer).
pub(super) fn prepare_reader(conn: &Connection, path: &Path) -> PortResult<()> {
    conn.busy_timeout(Duration::from_secs(30))
        .and_then(|()| conn.pragma_update(None, "query_only", true))
        .map_err(|e| {
            PortError::unavailable(BACKEND, format!("cannot prepare {}: {e}", path.display()))
        })
}

fn has_table(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")?
        .exists([name])
}

/// Why a migration stopped.
enum Migration {
    Sqlite(rusqlite::Error),
    /// A message whose row cannot be read: its id and why.
    Message(i64, String),
}

impl From<rusqlite::Error> for Migration {
    fn from(e: rusqlite::Error) -> Self {
        Migration::Sqlite(e)
    }
}

/// Rewrites a layout-0 file in one transaction: each message row becomes a page of one
/// message with the same id (cursors, acks and nacks stay valid), its attributes in the
/// binary form, its header reference kept; topics get integer ids. A crash or an error
/// leaves the file as it was. Returns how many messages moved.
fn migrate_layout0(conn: &Connection) -> Result<u64, Migration> {
    let tx = conn.unchecked_transaction()?;
    // A file older still has no `headers` table and no `header` column: its data is whole.
    let header = if tx
        .prepare("SELECT 1 FROM pragma_table_info('messages') WHERE name = 'header'")?
        .exists([])?
    {
        "m.header"
    } else {
        "NULL"
    };
    tx.execute_batch(
        "ALTER TABLE topics RENAME TO topics_layout0;
         CREATE TABLE topics (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
         INSERT INTO topics (name) SELECT name FROM topics_layout0 ORDER BY name;
         INSERT OR IGNORE INTO topics (name) SELECT DISTINCT topic FROM messages ORDER BY topic;
         DROP TABLE topics_layout0;",
    )?;
    tx.execute_batch(TABLES)?;
    let mut moved = 0u64;
    {
        let mut rows = tx.prepare(&format!(
            "SELECT m.id, t.id, m.ordering_key, m.attributes, m.data, m.published_at, {header}
             FROM messages m JOIN topics t ON t.name = m.topic ORDER BY m.id"
        ))?;
        let mut insert = tx.prepare(
            "INSERT INTO pages (id, topic, count, published_at, body) VALUES (?1, ?2, 1, ?3, ?4)",
        )?;
        let mut rows = rows.query([])?;
        let mut buf = Vec::new();
        let none = BTreeMap::new();
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let attributes = layout::decode_layout0_attributes(row.get_ref(3)?)
                .map_err(|e| Migration::Message(id, format!("its attributes: {e}")))?;
            let ordering_key: String = row.get(2)?;
            let body = row
                .get_ref(4)?
                .as_blob()
                .map_err(|e| Migration::Message(id, format!("its data is not a blob: {e}")))?;
            let mut page = PageWriter::new(&mut buf, 1, &none);
            page.push(row.get(6)?, &ordering_key, &attributes, body);
            let topic: i64 = row.get(1)?;
            let published_at: i64 = row.get(5)?;
            insert.execute(params![id, topic, published_at, page.finish()])?;
            moved += 1;
        }
    }
    tx.execute_batch("DROP TABLE messages;")?;
    tx.pragma_update(None, "user_version", LAYOUT)?;
    tx.commit()?;
    Ok(moved)
}
