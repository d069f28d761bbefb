//! Reading the log back: a stored row to the message it was (header joined back, attributes
//! decoded), and the reads that list topics, retained messages and the poller's progress.

use std::collections::BTreeMap;

use ledgerhost_core::ledger::{Message, Retained};
use ledgerhost_core::{PortError, PortResult};
use rusqlite::{Connection, OptionalExtension, params};

use super::layout;
use super::state::BACKEND;

/// The columns of a stored message [`stored`] reads (after those a query puts first), and
/// the join that restores its header.
pub(super) const STORED_COLUMNS: &str = "m.ordering_key, m.attributes, m.data, h.bytes";
pub(super) const STORED_FROM: &str = "messages m LEFT JOIN headers h ON h.id = m.header";

/// A message as read back from its row: attributes not yet checked.
pub(super) struct Stored {
    ordering_key: String,
    attributes: Result<BTreeMap<String, String>, String>,
    data: Vec<u8>,
}

/// Reads [`STORED_COLUMNS`] from `row`, starting at column `first`.
pub(super) fn stored(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Stored> {
    let header = row.get_ref(first + 3)?.as_blob_or_null()?;
    Ok(Stored {
        ordering_key: row.get(first)?,
        attributes: layout::decode_attributes(row.get_ref(first + 1)?),
        data: layout::join(header, row.get_ref(first + 2)?.as_blob()?),
    })
}

impl Stored {
    /// The message; `what` names it in the error when its attributes are unreadable.
    pub(super) fn into_message(self, what: impl FnOnce() -> String) -> PortResult<Message> {
        let attributes = self.attributes.map_err(|e| PortError::Corrupt {
            backend: BACKEND,
            message: format!("attributes of {}: {e}", what()),
        })?;
        Ok(Message {
            data: self.data,
            ordering_key: self.ordering_key,
            attributes,
        })
    }
}

/// The names of every topic, sorted.
pub(super) fn topics(conn: &Connection) -> PortResult<Vec<String>> {
    let mut stmt = conn
        .prepare_cached("SELECT name FROM topics ORDER BY name")
        .map_err(|e| PortError::unavailable(BACKEND, e))?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(|e| PortError::unavailable(BACKEND, e))?
        .collect::<rusqlite::Result<Vec<String>>>()
        .map_err(|e| PortError::unavailable(BACKEND, e))?;
    Ok(names)
}

/// The retained messages of `topic` after log position `after`, oldest first, at most `max`.
pub(super) fn retained(
    conn: &Connection,
    topic: &str,
    after: i64,
    max: usize,
) -> PortResult<Vec<Retained>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT m.id, {STORED_COLUMNS} FROM {STORED_FROM}
                 WHERE m.topic = ?1 AND m.id > ?2 ORDER BY m.id LIMIT ?3"
        ))
        .map_err(|e| PortError::unavailable(BACKEND, e))?;
    let rows = stmt
        .query_map(params![topic, after, max as i64], |r| {
            Ok((r.get::<_, i64>(0)?, stored(r, 1)?))
        })
        .map_err(|e| PortError::unavailable(BACKEND, e))?;
    let mut out = Vec::new();
    for row in rows {
        let (position, stored) = row.map_err(|e| PortError::unavailable(BACKEND, e))?;
        let message = stored.into_message(|| format!("message {position} on {topic}"))?;
        out.push(Retained { position, message });
    }
    Ok(out)
}

/// How many messages of `topic` the log retains.
pub(super) fn retained_count(conn: &Connection, topic: &str) -> PortResult<u64> {
    conn.query_row(
        "SELECT COUNT(*) FROM messages WHERE topic = ?1",
        [topic],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n as u64)
    .map_err(|e| PortError::unavailable(BACKEND, e))
}

/// The newest message of `topic`, if it has any.
pub(super) fn last_message(conn: &Connection, topic: &str) -> PortResult<Option<Message>> {
    let row = conn
        .query_row(
            &format!(
                "SELECT {STORED_COLUMNS} FROM {STORED_FROM}
                 WHERE m.topic = ?1 ORDER BY m.id DESC LIMIT 1"
            ),
            [topic],
            |r| stored(r, 0),
        )
        .optional()
        .map_err(|e| PortError::unavailable(BACKEND, e))?;
    row.map(|stored| stored.into_message(|| format!("the last message on {topic}")))
        .transpose()
}

/// The poller's progress record of `table`, if one was written.
pub(super) fn progress(conn: &Connection, table: &str) -> PortResult<Option<String>> {
    conn.prepare_cached("SELECT record FROM progress WHERE tbl = ?1")
        .and_then(|mut stmt| stmt.query_row([table], |r| r.get(0)).optional())
        .map_err(|e| PortError::unavailable(BACKEND, e))
}
