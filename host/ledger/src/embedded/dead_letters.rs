//! Dead letters: the unsettled messages of a subscription's `<name>.dead-letters`, read from
//! the file (so another process, the CLI, sees what the host wrote), and their redrive onto
//! the subscription's topic.

use std::collections::BTreeMap;

use ledgerhost_core::ledger::{
    DeadLetter, Message, RedriveSelection, dead_letter_subscription, limits,
};
use ledgerhost_core::{PortError, PortResult};
use rusqlite::{Connection, params};

use super::read::{STORED_COLUMNS, STORED_FROM, stored};
use super::state::{BACKEND, Inner};
use super::subscriptions::stored_subscription;
use super::write::insert_messages;
use ledgerhost_core::clock::now_micros;

/// The unsettled messages of the dead-letter subscription `name` on `topic` (each with its
/// log id), oldest first, at most `max`.
pub(super) fn unsettled_dead_letters(
    conn: &Connection,
    subscription: &str,
    max: usize,
) -> PortResult<Vec<(i64, DeadLetter)>> {
    let name = dead_letter_subscription(subscription);
    let (topic, cursor) = stored_subscription(
        conn,
        &name,
        &format!(
            "dead-letter subscription `{name}` (the host creates it with `{subscription}` when \
             it starts the plugin; is the plugin name right?)"
        ),
    )?;
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT m.id, m.published_at, {STORED_COLUMNS} FROM {STORED_FROM}
                 WHERE m.topic = ?1 AND m.id >= ?2
                   AND NOT EXISTS (SELECT 1 FROM acks a WHERE a.sub = ?3 AND a.id = m.id)
                 ORDER BY m.id LIMIT ?4"
        ))
        .map_err(|e| PortError::unavailable(BACKEND, e))?;
    let rows = stmt
        .query_map(
            params![topic, cursor, name, max.min(i64::MAX as usize) as i64],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, stored(r, 2)?)),
        )
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| PortError::unavailable(BACKEND, e))?;
    rows.into_iter()
        .map(|(id, at, stored)| {
            let message = stored.into_message(|| format!("message {id} on {topic}"))?;
            Ok((id, DeadLetter::from_message(message, at)))
        })
        .collect()
}

/// Appends copies of the dead letters `selection` picks (with `extra` attributes) to the
/// subscription's topic and settles them, in one transaction: a crash redrives all of them
/// or none, never one twice. Returns the dead letters redriven.
pub(super) fn redrive(
    inner: &mut Inner,
    subscription: &str,
    selection: &RedriveSelection,
    extra: &BTreeMap<String, String>,
) -> PortResult<Vec<DeadLetter>> {
    let (topic, _) = stored_subscription(
        &inner.conn,
        subscription,
        &format!("subscription `{subscription}`"),
    )?;
    let chosen: Vec<(i64, DeadLetter)> =
        unsettled_dead_letters(&inner.conn, subscription, usize::MAX)?
            .into_iter()
            .filter(|(_, d)| selection.selects(d))
            .collect();
    let copies: Vec<Message> = chosen.iter().map(|(_, d)| d.redrive_copy(extra)).collect();
    for m in &copies {
        limits::check_message(m).map_err(|e| PortError::Invalid {
            backend: BACKEND,
            message: format!("redriving onto topic `{topic}`: {e}"),
        })?;
    }
    let dead_letter_sub = dead_letter_subscription(subscription);
    let Inner { conn, headers, .. } = &mut *inner;
    let tx = conn
        .transaction()
        .map_err(|e| PortError::unavailable(BACKEND, e))?;
    let added = insert_messages(&tx, headers, &topic, &copies, now_micros())?;
    {
        let mut stmt = tx
            .prepare_cached("INSERT OR IGNORE INTO acks (sub, id) VALUES (?1, ?2)")
            .map_err(|e| PortError::unavailable(BACKEND, e))?;
        for (id, _) in &chosen {
            stmt.execute(params![dead_letter_sub, id])
                .map_err(|e| PortError::unavailable(BACKEND, e))?;
        }
    }
    tx.commit()
        .map_err(|e| PortError::unavailable(BACKEND, e))?;
    headers.extend(added);
    Ok(chosen.into_iter().map(|(_, d)| d).collect())
}
