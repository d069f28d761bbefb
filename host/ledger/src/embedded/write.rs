//! Writing to the log: a publish's messages as a page ([`super::page`]), with the poller's
//! progress record in the same transaction. A poller's page comes as a [`Batch`] whose
//! records are copied into the stored page as they are; other publishes come as messages.

use std::collections::HashMap;

use ledgerhost_core::ledger::{Batch, Message, Progress, wire};
use ledgerhost_core::{PortError, PortResult};
use rusqlite::params;

use super::read::{self, topic_id};
use super::state::{BACKEND, Writer};
use super::{layout, page};
use ledgerhost_core::clock::now_micros;

/// What one write appends to a topic.
pub(super) enum Appended {
    /// Messages of a publish.
    Messages(Vec<Message>),
    /// A poller's page, as the encoder wrote it.
    Batch(Batch),
}

impl Appended {
    /// Whether there is nothing to append.
    pub(super) fn is_empty(&self) -> bool {
        match self {
            Appended::Messages(messages) => messages.is_empty(),
            Appended::Batch(batch) => batch.is_empty(),
        }
    }
}

/// Appends to `topic` and, when given, replaces the table's progress record, in one
/// transaction: both are on disk after a crash, or neither (SQLite's WAL commits a
/// transaction atomically; `synchronous = NORMAL` may lose the last ones on a power cut,
/// but then it loses the progress with the messages it covers).
pub(super) fn append_page(
    writer: &mut Writer,
    topic: &str,
    appended: &Appended,
    progress: Option<&Progress>,
) -> PortResult<()> {
    let now = now_micros();
    let Writer {
        conn,
        headers,
        page,
        ..
    } = writer;
    let tx = conn
        .transaction()
        .map_err(|e| PortError::unavailable(BACKEND, e))?;
    let added = match appended {
        Appended::Messages(messages) => insert_messages(&tx, headers, page, topic, messages, now)?,
        Appended::Batch(batch) => insert_batch(&tx, headers, page, topic, batch, now)?,
    };
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

/// Appends `messages` to `topic`'s log inside `tx`, stamped `now` (µs), as pages
/// ([`page`]) built in `buf`: usually one row for the whole publish. Each message's
/// container header is stored once in `headers` and referred to by id (`headers` caches
/// them), its attributes in their binary form. Returns the headers it stored, for the
/// caller to cache once the transaction commits (a rolled-back id must not be reused).
pub(super) fn insert_messages(
    tx: &rusqlite::Transaction<'_>,
    headers: &HashMap<Vec<u8>, i64>,
    buf: &mut Vec<u8>,
    topic: &str,
    messages: &[Message],
    now: i64,
) -> PortResult<NewHeaders> {
    let err = |e: rusqlite::Error| PortError::unavailable(BACKEND, e);
    let topic_id = known_topic(tx, topic)?;
    let mut added: NewHeaders = Vec::new();
    // The messages of a page share one header: compared with the last one first, which
    // spares hashing it for every message.
    let mut last: Option<(&[u8], i64)> = None;
    let mut split = Vec::with_capacity(messages.len());
    for m in messages {
        split.push(match layout::header_len(&m.data) {
            Some(n) => {
                let bytes = &m.data[..n];
                let id = match last.filter(|(b, _)| *b == bytes) {
                    Some((_, id)) => id,
                    None => stored_header(tx, headers, &mut added, bytes)?,
                };
                last = Some((bytes, id));
                (Some(id), &m.data[n..])
            }
            None => (None, &m.data[..]),
        });
    }
    let mut first = read::end(tx)?;
    let mut stmt = tx.prepare_cached(INSERT_PAGE).map_err(err)?;
    let mut rest = messages.iter().zip(&split);
    while rest.len() > 0 {
        let count = page_count(rest.clone().map(|(m, (_, body))| {
            page::record_len_bound(
                &m.ordering_key,
                wire::encoded_attributes_len(&m.attributes),
                body,
            )
        }));
        let shared = page::shared_attributes(rest.clone().take(count).map(|(m, _)| &m.attributes));
        let mut page = page::PageWriter::new(buf, count, &shared);
        for (m, (header, body)) in rest.by_ref().take(count) {
            page.push(*header, &m.ordering_key, &m.attributes, body);
        }
        stmt.execute(params![first, topic_id, count as i64, now, page.finish()])
            .map_err(err)?;
        first += count as i64;
    }
    Ok(added)
}

/// Appends a poller's page to `topic`'s log inside `tx`, like [`insert_messages`]: the
/// batch's prefix, when it is an Avro container header, is stored once in `headers`, and
/// each record is copied into the stored page as the batch holds it.
pub(super) fn insert_batch(
    tx: &rusqlite::Transaction<'_>,
    headers: &HashMap<Vec<u8>, i64>,
    buf: &mut Vec<u8>,
    topic: &str,
    batch: &Batch,
    now: i64,
) -> PortResult<NewHeaders> {
    let prefix = batch.prefix();
    let mut added: NewHeaders = Vec::new();
    let header = if prefix.is_empty() {
        None
    } else if layout::header_len(prefix) == Some(prefix.len()) {
        Some(stored_header(tx, headers, &mut added, prefix)?)
    } else {
        // A prefix that is not a whole header: each message's data stored whole.
        return insert_messages(tx, headers, buf, topic, &batch.to_messages(), now);
    };
    let topic_id = known_topic(tx, topic)?;
    let mut first = read::end(tx)?;
    let mut stmt = tx
        .prepare_cached(INSERT_PAGE)
        .map_err(|e| PortError::unavailable(BACKEND, e))?;
    let mut rest = batch.raw_records();
    while rest.len() > 0 {
        let count = page_count(rest.clone().map(page::raw_record_len_bound));
        let mut page = page::PageWriter::new(buf, count, batch.shared());
        for raw in rest.by_ref().take(count) {
            page.push_raw(header, raw);
        }
        stmt.execute(params![first, topic_id, count as i64, now, page.finish()])
            .map_err(|e| PortError::unavailable(BACKEND, e))?;
        first += count as i64;
    }
    Ok(added)
}

/// The id of `topic`, which must exist.
fn known_topic(tx: &rusqlite::Transaction<'_>, topic: &str) -> PortResult<i64> {
    topic_id(tx, topic)?.ok_or_else(|| {
        PortError::not_found(
            BACKEND,
            format!("topic `{topic}` (create it first with ensure_topic)"),
        )
    })
}

/// The id of the stored header `bytes`: cached, stored by this transaction already, or
/// stored now (and then added to `added`).
fn stored_header(
    tx: &rusqlite::Transaction<'_>,
    headers: &HashMap<Vec<u8>, i64>,
    added: &mut NewHeaders,
    bytes: &[u8],
) -> PortResult<i64> {
    if let Some(id) = headers
        .get(bytes)
        .copied()
        .or_else(|| added.iter().find(|(b, _)| b == bytes).map(|(_, id)| *id))
    {
        return Ok(id);
    }
    let id = header_id(tx, bytes).map_err(|e| PortError::unavailable(BACKEND, e))?;
    added.push((bytes.to_vec(), id));
    Ok(id)
}

/// How many of the records ahead go into the next page, given each one's bound in bytes:
/// as many as stay within [`page::MAX_PAGE_BYTES`], at least one (all of any page the
/// poller writes).
fn page_count(bounds: impl Iterator<Item = usize>) -> usize {
    let mut bytes = 4;
    let mut n = 0;
    for bound in bounds {
        bytes += bound;
        if bytes > page::MAX_PAGE_BYTES && n > 0 {
            break;
        }
        n += 1;
    }
    n
}

/// One stored page: its first message id, topic id, message count, time and blob.
const INSERT_PAGE: &str =
    "INSERT INTO pages (id, topic, count, published_at, body) VALUES (?1, ?2, ?3, ?4, ?5)";

/// Headers stored by a transaction not yet committed, with their ids.
pub(super) type NewHeaders = Vec<(Vec<u8>, i64)>;

/// The id of a stored header, inserting it when new.
fn header_id(tx: &rusqlite::Transaction<'_>, bytes: &[u8]) -> rusqlite::Result<i64> {
    tx.prepare_cached("INSERT INTO headers (bytes) VALUES (?1) ON CONFLICT (bytes) DO NOTHING")?
        .execute([bytes])?;
    tx.prepare_cached("SELECT id FROM headers WHERE bytes = ?1")?
        .query_row([bytes], |r| r.get(0))
}
