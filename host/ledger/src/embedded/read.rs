//! Reading the log back: a stored record to the message it was (header joined back,
//! attributes decoded), the walk over a topic's pages from a message id on, and the reads
//! that list topics, retained messages and the poller's progress.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use ledgerhost_core::ledger::{Message, Retained, wire};
use ledgerhost_core::{PortError, PortResult};
use rusqlite::{Connection, OptionalExtension, params};

use super::layout;
use super::page::{Page, Record};
use super::state::BACKEND;

/// A message as read back from its page: attributes not yet checked.
pub(super) struct Stored {
    ordering_key: String,
    attributes: Result<BTreeMap<String, String>, String>,
    data: Vec<u8>,
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

/// The stored Avro headers a read needs, each fetched from `headers` once.
#[derive(Default)]
struct Headers(HashMap<i64, Vec<u8>>);

impl Headers {
    /// The message `record` holds, its header joined back.
    fn stored(&mut self, conn: &Connection, record: &Record<'_>, id: i64) -> PortResult<Stored> {
        let header = match record.header {
            None => None,
            Some(h) => match self.0.entry(h) {
                Entry::Occupied(known) => Some(known.into_mut().as_slice()),
                Entry::Vacant(slot) => {
                    let bytes: Vec<u8> = conn
                        .prepare_cached("SELECT bytes FROM headers WHERE id = ?1")
                        .and_then(|mut stmt| stmt.query_row([h], |r| r.get(0)).optional())
                        .map_err(|e| PortError::unavailable(BACKEND, e))?
                        .ok_or_else(|| corrupt(id, format!("its header {h} is not stored")))?;
                    Some(slot.insert(bytes).as_slice())
                }
            },
        };
        Ok(Stored {
            ordering_key: record.ordering_key.to_string(),
            attributes: page_attributes(record),
            data: layout::join(header, record.body),
        })
    }
}

/// A record's attributes: those its page shares, then its own.
fn page_attributes(record: &Record<'_>) -> Result<BTreeMap<String, String>, String> {
    let mut attributes = BTreeMap::new();
    if !record.shared.is_empty() {
        wire::decode_attributes_into(&mut attributes, record.shared)
            .map_err(|e| format!("the page's shared attributes: {e}"))?;
    }
    wire::decode_attributes_into(&mut attributes, record.attributes)?;
    Ok(attributes)
}

fn corrupt(id: i64, why: impl std::fmt::Display) -> PortError {
    PortError::Corrupt {
        backend: BACKEND,
        message: format!("message {id} of the log: {why}"),
    }
}

/// Record `i` of the page whose first message is `first`.
fn record<'a>(page: &Page<'a>, first: i64, i: usize) -> PortResult<Record<'a>> {
    page.record(i).map_err(|e| corrupt(first + i as i64, e))
}

/// The id of topic `name`, if it was created.
pub(super) fn topic_id(conn: &Connection, name: &str) -> PortResult<Option<i64>> {
    conn.prepare_cached("SELECT id FROM topics WHERE name = ?1")
        .and_then(|mut stmt| stmt.query_row([name], |r| r.get(0)).optional())
        .map_err(|e| PortError::unavailable(BACKEND, e))
}

/// The id the next message written gets: ids are never reused, and retention keeps each
/// topic's newest page, so the newest page always tells.
pub(super) fn end(conn: &Connection) -> PortResult<i64> {
    conn.prepare_cached(
        "SELECT COALESCE((SELECT id + count FROM pages ORDER BY id DESC LIMIT 1), 1)",
    )
    .and_then(|mut stmt| stmt.query_row([], |r| r.get(0)))
    .map_err(|e| PortError::unavailable(BACKEND, e))
}

/// Calls `visit` with each message of `topic` from id `from` on, oldest first, with its
/// id and when it was published (µs), until `visit` returns `false` or the log ends. Pages
/// are read one at a time, so stopping early reads no further.
pub(super) fn scan(
    conn: &Connection,
    topic: &str,
    from: i64,
    mut visit: impl FnMut(i64, i64, Stored) -> PortResult<bool>,
) -> PortResult<()> {
    let unavailable = |e: rusqlite::Error| PortError::unavailable(BACKEND, e);
    // From the page holding `from` (the last one starting at or before it) on.
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, published_at, body FROM pages
             WHERE topic = (SELECT id FROM topics WHERE name = ?1)
               AND id >= (SELECT COALESCE(MAX(id), 0) FROM pages
                          WHERE topic = (SELECT id FROM topics WHERE name = ?1) AND id <= ?2)
             ORDER BY id",
        )
        .map_err(unavailable)?;
    let mut rows = stmt.query(params![topic, from]).map_err(unavailable)?;
    let mut headers = Headers::default();
    while let Some(row) = rows.next().map_err(unavailable)? {
        let first: i64 = row.get(0).map_err(unavailable)?;
        let published_at: i64 = row.get(1).map_err(unavailable)?;
        let blob = row.get_ref(2).map_err(unavailable)?;
        let blob = blob.as_blob().map_err(|e| corrupt(first, e))?;
        let page = Page::parse(blob).map_err(|e| corrupt(first, e))?;
        // `from` inside this page (the first one), or before it.
        let skip = usize::try_from(from.saturating_sub(first).max(0)).unwrap_or(usize::MAX);
        for i in skip.min(page.len())..page.len() {
            let id = first + i as i64;
            let stored = headers.stored(conn, &record(&page, first, i)?, id)?;
            if !visit(id, published_at, stored)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// What a run of [`message`] calls keeps between them: the page read last (id of its first
/// message, its count, its blob) and the headers fetched (a redelivery reads its messages one
/// by one, mostly from one page of one schema).
#[derive(Default)]
pub(super) struct Rereads {
    page: Option<(i64, i64, Vec<u8>)>,
    headers: Headers,
}

/// Message `id` of the log, if it is still there (retention deletes whole pages).
pub(super) fn message(
    conn: &Connection,
    id: i64,
    cache: &mut Rereads,
) -> PortResult<Option<Stored>> {
    let cached = cache
        .page
        .as_ref()
        .is_some_and(|(first, count, _)| *first <= id && id < first + count);
    if !cached {
        cache.page = conn
            .prepare_cached(
                "SELECT id, count, body FROM pages WHERE id <= ?1 ORDER BY id DESC LIMIT 1",
            )
            .and_then(|mut stmt| {
                stmt.query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()
            })
            .map_err(|e| PortError::unavailable(BACKEND, e))?;
    }
    let Some((first, count, blob)) = &cache.page else {
        return Ok(None);
    };
    if id >= first + count {
        return Ok(None);
    }
    let page = Page::parse(blob).map_err(|e| corrupt(*first, e))?;
    let record = record(&page, *first, (id - first) as usize)?;
    cache.headers.stored(conn, &record, id).map(Some)
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
    let mut out = Vec::new();
    if max == 0 {
        return Ok(out);
    }
    scan(
        conn,
        topic,
        after.saturating_add(1),
        |position, _, stored| {
            let message = stored.into_message(|| format!("message {position} on {topic}"))?;
            out.push(Retained { position, message });
            Ok(out.len() < max)
        },
    )?;
    Ok(out)
}

/// How many messages of `topic` the log retains.
pub(super) fn retained_count(conn: &Connection, topic: &str) -> PortResult<u64> {
    conn.query_row(
        "SELECT COALESCE(SUM(count), 0) FROM pages
         WHERE topic = (SELECT id FROM topics WHERE name = ?1)",
        [topic],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n as u64)
    .map_err(|e| PortError::unavailable(BACKEND, e))
}

/// The newest message of `topic`, if it has any.
pub(super) fn last_message(conn: &Connection, topic: &str) -> PortResult<Option<Message>> {
    let last: Option<(i64, i64)> = conn
        .query_row(
            "SELECT id, count FROM pages WHERE topic = (SELECT id FROM topics WHERE name = ?1)
             ORDER BY id DESC LIMIT 1",
            [topic],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(|e| PortError::unavailable(BACKEND, e))?;
    let Some((first, count)) = last.filter(|(_, count)| *count > 0) else {
        return Ok(None);
    };
    let id = first + count - 1;
    message(conn, id, &mut Rereads::default())?
        .map(|stored| stored.into_message(|| format!("the last message on {topic}")))
        .transpose()
}

/// The poller's progress record of `table`, if one was written.
pub(super) fn progress(conn: &Connection, table: &str) -> PortResult<Option<String>> {
    conn.prepare_cached("SELECT record FROM progress WHERE tbl = ?1")
        .and_then(|mut stmt| stmt.query_row([table], |r| r.get(0)).optional())
        .map_err(|e| PortError::unavailable(BACKEND, e))
}
