//! The tables of the ledger file, created when missing, and the step that brings a file of
//! the earlier layout (whole data, JSON attributes) up to the compact one.

use std::time::Duration;

use rusqlite::Connection;

/// Sets the connection's pragmas and creates what the file lacks.
pub(super) fn prepare(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS topics (name TEXT PRIMARY KEY);
         CREATE TABLE IF NOT EXISTS messages (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             topic TEXT NOT NULL,
             ordering_key TEXT NOT NULL,
             attributes TEXT NOT NULL,
             data BLOB NOT NULL,
             published_at INTEGER NOT NULL);
         CREATE INDEX IF NOT EXISTS messages_by_topic ON messages (topic, id);
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
         -- The poller's progress per source table, written in the transaction of
         -- the page it covers (Ledger::publish_page).
         CREATE TABLE IF NOT EXISTS progress (tbl TEXT PRIMARY KEY,
             record TEXT NOT NULL);
         -- What the messages of a schema share, once (layout::header_len).
         CREATE TABLE IF NOT EXISTS headers (id INTEGER PRIMARY KEY,
             bytes BLOB NOT NULL UNIQUE);",
    )?;
    // A file written before `headers` existed: its rows keep their whole data
    // (header NULL) and JSON attributes, which the readers still understand.
    let has_header: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('messages') WHERE name = 'header'")?
        .exists([])?;
    if !has_header {
        conn.execute_batch("ALTER TABLE messages ADD COLUMN header INTEGER")?;
    }
    Ok(())
}
