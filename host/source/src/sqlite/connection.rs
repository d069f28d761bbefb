//! Opening the file: WAL, the busy timeout, the shard function; and SQLite's own clock,
//! for the triggers.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::shard::register_shard_function;

/// SQLite's clock in microseconds since the epoch, as SQL (the triggers stamp with it).
pub(super) const NOW_MICROS: &str =
    "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)";

/// Opens `path` with the pragmas and functions every connection of the host needs.
pub(super) fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    register_shard_function(&conn)?;
    Ok(conn)
}
