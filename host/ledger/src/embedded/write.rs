//! Writing to the log: a page of messages (with the poller's progress record, in one
//! transaction) in the compact layout of [`super::layout`].

use std::collections::HashMap;

use ledgerhost_core::ledger::{Message, Progress};
use ledgerhost_core::{PortError, PortResult};
use rusqlite::params;

use super::layout;
use super::state::{BACKEND, Inner, topic_exists};
use ledgerhost_core::clock::now_micros;

/// Appends `messages` to `topic` and, when given, replaces the table's progress record,
/// in one transaction: both are on disk after a crash, or neither (SQLite's WAL commits
/// a transaction atomically; `synchronous = NORMAL` may lose the last ones on a power
/// cut, but then it loses the progress with the messages it covers).
pub(super) fn append_page(
    inner: &mut Inner,
    topic: &str,
    messages: &[Message],
    progress: Option<&Progress>,
) -> PortResult<()> {
    if !topic_exists(&inner.conn, topic)? {
        return Err(PortError::not_found(
            BACKEND,
            format!("topic `{topic}` (create it first with ensure_topic)"),
        ));
    }
    let now = now_micros();
    let Inner { conn, headers, .. } = &mut *inner;
    let tx = conn
        .transaction()
        .map_err(|e| PortError::unavailable(BACKEND, e))?;
    let added = insert_messages(&tx, headers, topic, messages, now)?;
    if let Some(p) = progress {
        tx.prepare_cached(
            "INSERT INTO progress (tbl, record) VALUES (?1, ?2)
             ON CONFLICT (tbl) DO UPDATE SET record = excluded.record",
        )
        .and_then(|mut stmt| stmt.execute(params![p.table, p.record]))
        .map_err(|e| PortError::unavailable(BACKEND, e))?;
    }
    tx.commit()
        .map_err(|e| PortError::unavailable(BACKEND, e))?;
    headers.extend(added);
    Ok(())
}

/// Appends `messages` to `topic`'s log inside `tx`, stamped `now` (µs), in the compact
/// layout ([`layout`]): each message's container header by id (`headers` caches them),
/// the rest of its data, its attributes as one blob. Returns the headers it stored, for
/// the caller to cache once the transaction commits (a rolled-back id must not be reused).
pub(super) fn insert_messages(
    tx: &rusqlite::Transaction<'_>,
    headers: &HashMap<Vec<u8>, i64>,
    topic: &str,
    messages: &[Message],
    now: i64,
) -> PortResult<NewHeaders> {
    let err = |e: rusqlite::Error| PortError::unavailable(BACKEND, e);
    let mut added: NewHeaders = Vec::new();
    // The messages of a page share one header: compared with the last one first, which
    // spares hashing it for every message.
    let mut last: Option<(&[u8], i64)> = None;
    let mut rows = Vec::with_capacity(messages.len());
    for m in messages {
        let (header, body) = match layout::header_len(&m.data) {
            Some(n) => {
                let bytes = &m.data[..n];
                let known = last
                    .filter(|(b, _)| *b == bytes)
                    .map(|(_, id)| id)
                    .or_else(|| headers.get(bytes).copied())
                    .or_else(|| added.iter().find(|(b, _)| b == bytes).map(|(_, id)| *id));
                let id = match known {
                    Some(id) => id,
                    None => {
                        let id = header_id(tx, bytes).map_err(err)?;
                        added.push((bytes.to_vec(), id));
                        id
                    }
                };
                last = Some((bytes, id));
                (Some(id), &m.data[n..])
            }
            None => (None, &m.data[..]),
        };
        rows.push((m, header, body, layout::encode_attributes(&m.attributes)));
    }
    // Many rows per statement: SQLite's per-statement work (bind, step, reset) was a
    // large share of a page's write.
    for chunk in rows.chunks(INSERT_ROWS) {
        let mut sql = String::from(
            "INSERT INTO messages (topic, ordering_key, attributes, data, published_at, header)
             VALUES ",
        );
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 {
                "(?, ?, ?, ?, ?, ?)"
            } else {
                ", (?, ?, ?, ?, ?, ?)"
            });
        }
        let mut stmt = tx.prepare_cached(&sql).map_err(err)?;
        let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(chunk.len() * 6);
        for (m, header, body, attrs) in chunk {
            values.extend_from_slice(&[
                &topic as &dyn rusqlite::ToSql,
                &m.ordering_key,
                attrs,
                body,
                &now,
                header,
            ]);
        }
        stmt.execute(values.as_slice()).map_err(err)?;
    }
    Ok(added)
}

/// Rows per `INSERT` statement (6 parameters each, far below SQLite's limit of 32 766).
const INSERT_ROWS: usize = 100;

/// Headers stored by a transaction not yet committed, with their ids.
pub(super) type NewHeaders = Vec<(Vec<u8>, i64)>;

/// The id of a stored header, inserting it when new.
fn header_id(tx: &rusqlite::Transaction<'_>, bytes: &[u8]) -> rusqlite::Result<i64> {
    tx.prepare_cached("INSERT INTO headers (bytes) VALUES (?1) ON CONFLICT (bytes) DO NOTHING")?
        .execute([bytes])?;
    tx.prepare_cached("SELECT id FROM headers WHERE bytes = ?1")?
        .query_row([bytes], |r| r.get(0))
}
