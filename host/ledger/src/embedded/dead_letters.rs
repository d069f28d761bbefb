//! Dead letters: the unsettled messages of a subscription's `<name>.dead-letters`, read from
//! the file (so another process, the CLI, sees what the host wrote), and their redrive onto
//! the subscription's topic.

use std::collections::{BTreeMap, HashSet};

use ledgerhost_core::ledger::{
    DeadLetter, Message, RedriveSelection, dead_letter_subscription, limits,
};
use ledgerhost_core::{PortError, PortResult};
use rusqlite::{Connection, params};

use super::read;
use super::state::{BACKEND, Writer};
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
    let acked: HashSet<i64> = conn
        .prepare_cached("SELECT id FROM acks WHERE sub = ?1 AND id >= ?2")
        .and_then(|mut stmt| {
            stmt.query_map(params![name, cursor], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(|e| PortError::unavailable(BACKEND, e))?;
    let mut out = Vec::new();
    if max == 0 {
        return Ok(out);
    }
    read::scan(conn, &topic, cursor, |id, published_at, stored| {
        if !acked.contains(&id) {
            let message = stored.into_message(|| format!("message {id} on {topic}"))?;
            out.push((id, DeadLetter::from_message(message, published_at)));
        }
        Ok(out.len() < max)
    })?;
    Ok(out)
}

/// Appends copies of the dead letters `selection` picks (with `extra` attributes) to the
/// subscription's topic and settles them, in one transaction: a crash redrives all of them
/// or none, never one twice. Returns the dead letters redriven.
pub(super) fn redrive(
    writer: &mut Writer,
    subscription: &str,
    selection: &RedriveSelection,
    extra: &BTreeMap<String, String>,
) -> PortResult<Vec<DeadLetter>> {
    let (topic, _) = stored_subscription(
        &writer.conn,
        subscription,
        &format!("subscription `{subscription}`"),
    )?;
    let chosen: Vec<(i64, DeadLetter)> =
        unsettled_dead_letters(&writer.conn, subscription, usize::MAX)?
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
    let Writer {
        conn,
        headers,
        page,
        ..
    } = writer;
    let tx = conn
        .transaction()
        .map_err(|e| PortError::unavailable(BACKEND, e))?;
    let added = insert_messages(&tx, headers, page, &topic, &copies, now_micros())?;
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
