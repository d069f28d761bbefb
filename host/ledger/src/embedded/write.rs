//! Writing to the log: a publish's messages as a page ([`super::page`]), with the poller's
//! progress record in the same transaction.

use std::collections::HashMap;

use ledgerhost_core::ledger::{Message, Progress};
use ledgerhost_core::{PortError, PortResult};
use rusqlite::params;

use super::read::{self, topic_id};
use super::state::{BACKEND, Writer};
use super::{layout, page};
use ledgerhost_core::clock::now_micros;

/// Appends `messages` to `topic` and, when given, replaces the table's progress record,
/// in one transaction: both are on disk after a crash, or neither (SQLite's WAL commits
/// a transaction atomically; `synchronous = NORMAL` may lose the last ones on a power
/// cut, but then it loses the progress with the messages it covers).
pub(super) fn append_page(
    writer: &mut Writer,
    topic: &str,
    messages: &[Message],
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
    let added = insert_messages(&tx, headers, page, topic, messages, now)?;
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
    let topic_id = topic_id(tx, topic)?.ok_or_else(|| {
        PortError::not_found(
            BACKEND,
            format!("topic `{topic}` (create it first with ensure_topic)"),
        )
    })?;
    let mut added: NewHeaders = Vec::new();
    // The messages of a page share one header: compared with the last one first, which
    // spares hashing it for every message.
    let mut last: Option<(&[u8], i64)> = None;
    let mut split = Vec::with_capacity(messages.len());
    for m in messages {
        split.push(match layout::header_len(&m.data) {
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
        });
    }
    let mut first = read::end(tx)?;
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO pages (id, topic, count, published_at, body) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(err)?;
    let mut rest = messages.iter().zip(&split);
    while rest.len() > 0 {
        let count = page_count(rest.clone());
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

/// How many of the messages ahead go into the next page: as many as stay within
/// [`page::MAX_PAGE_BYTES`], at least one (all of any page the poller writes).
fn page_count<'m>(
    ahead: impl Iterator<Item = (&'m Message, &'m (Option<i64>, &'m [u8]))>,
) -> usize {
    let mut bytes = 4;
    let mut n = 0;
    for (m, (_, body)) in ahead {
        bytes += page::record_len_bound(
            &m.ordering_key,
            layout::encoded_attributes_len(&m.attributes),
            body,
        );
        if bytes > page::MAX_PAGE_BYTES && n > 0 {
            break;
        }
        n += 1;
    }
    n
}

/// Headers stored by a transaction not yet committed, with their ids.
pub(super) type NewHeaders = Vec<(Vec<u8>, i64)>;

/// The id of a stored header, inserting it when new.
fn header_id(tx: &rusqlite::Transaction<'_>, bytes: &[u8]) -> rusqlite::Result<i64> {
    tx.prepare_cached("INSERT INTO headers (bytes) VALUES (?1) ON CONFLICT (bytes) DO NOTHING")?
        .execute([bytes])?;
    tx.prepare_cached("SELECT id FROM headers WHERE bytes = ?1")?
        .query_row([bytes], |r| r.get(0))
}
