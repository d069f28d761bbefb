//! Subscriptions: created, checked against their stored settings as on Pub/Sub
//! ([`crate::drift`]), and loaded with their cursors, acks and nacks when the file opens.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use ledgerhost_core::ledger::{SubscriptionSpec, dead_letter_subscription};
use ledgerhost_core::{PortError, PortResult};
use rusqlite::{Connection, OptionalExtension, params};

use super::read;
use super::state::{BACKEND, Reader, SubState, Writer};
use crate::drift;

/// Creates `spec`'s subscription (and the one that keeps its dead letters), or checks and
/// updates them when they exist.
pub(super) fn ensure(
    writer: &mut Writer,
    reader: &mut Reader,
    spec: &SubscriptionSpec,
) -> PortResult<()> {
    ensure_one(writer, reader, spec, false)?;
    if !spec.dead_letter_topic.is_empty() {
        ensure_one(writer, reader, &dead_letter_spec(spec), true)?;
    }
    Ok(())
}

/// The topic and durable cursor of a stored subscription; `what` names it in the error.
pub(super) fn stored_subscription(
    conn: &Connection,
    name: &str,
    what: &str,
) -> PortResult<(String, i64)> {
    conn.query_row(
        "SELECT topic, cursor FROM subscriptions WHERE name = ?1",
        [name],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .map_err(|e| PortError::unavailable(BACKEND, e))?
    .ok_or_else(|| PortError::not_found(BACKEND, what.to_string()))
}

/// Every stored subscription with its cursor, acked ids and attempt counts.
pub(super) fn load(conn: &Connection) -> rusqlite::Result<HashMap<String, SubState>> {
    let mut subs = HashMap::new();
    let mut stmt =
        conn.prepare("SELECT name, topic, filter, ack_deadline_ms, cursor FROM subscriptions")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })?;
    for row in rows {
        let (name, topic, filter, deadline, cursor) = row?;
        let acked = conn
            .prepare("SELECT id FROM acks WHERE sub = ?1")?
            .query_map([&name], |r| r.get::<_, i64>(0))?
            .collect::<rusqlite::Result<HashSet<_>>>()?;
        let nacked_attempts = conn
            .prepare("SELECT id, attempt FROM nacks WHERE sub = ?1")?
            .query_map([&name], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, u32>(1)?)))?
            .collect::<rusqlite::Result<HashMap<_, _>>>()?;
        subs.insert(
            name,
            SubState {
                topic,
                filter: serde_json::from_str(&filter).unwrap_or_default(),
                ack_deadline: Duration::from_millis(deadline.max(0) as u64),
                next_load: cursor,
                pending: BTreeMap::new(),
                nacked_attempts,
                acked,
            },
        );
    }
    Ok(subs)
}

/// What the embedded ledger stores of a subscription, for [`drift::compare`]. Every
/// subscription here keeps per-key order; there is no retry policy (the dispatcher's
/// backoff is the nack delay).
fn drift_settings(
    topic: &str,
    filter: &BTreeMap<String, String>,
    ack_deadline: Duration,
    dead_letter_topic: &str,
) -> drift::Settings {
    drift::Settings {
        topic: topic.to_string(),
        filter: filter
            .iter()
            .map(|(k, v)| format!("{k} = {v:?}"))
            .collect::<Vec<_>>()
            .join(" AND "),
        message_ordering: true,
        ack_deadline,
        dead_letter: Some(drift::DeadLetter {
            topic: dead_letter_topic.to_string(),
            max_delivery_attempts: 0,
        }),
        retry: None,
    }
}

/// Creates `spec`'s subscription, or checks and updates an existing one (as on Pub/Sub,
/// [`drift`]); a new one starts at the end of the log, or at its oldest with `from_oldest`.
fn ensure_one(
    writer: &mut Writer,
    reader: &mut Reader,
    spec: &SubscriptionSpec,
    from_oldest: bool,
) -> PortResult<()> {
    for t in [&spec.topic, &spec.dead_letter_topic] {
        if t.is_empty() {
            continue;
        }
        writer
            .conn
            .execute("INSERT OR IGNORE INTO topics (name) VALUES (?1)", [t])
            .map_err(|e| PortError::unavailable(BACKEND, e))?;
    }
    let filter = serde_json::to_string(&spec.attribute_filter).unwrap_or_default();
    let deadline = spec.ack_deadline.as_millis() as i64;
    if let Some(sub) = reader.subs.get_mut(&spec.name) {
        // It exists: it must match the manifest, as on Pub/Sub (crate::drift): the
        // ack deadline and dead-letter topic change in place, topic and filter not.
        let stored_dead_letter: String = writer
            .conn
            .query_row(
                "SELECT dead_letter_topic FROM subscriptions WHERE name = ?1",
                [&spec.name],
                |r| r.get(0),
            )
            .map_err(|e| PortError::unavailable(BACKEND, e))?;
        let existing = drift_settings(
            &sub.topic,
            &sub.filter,
            sub.ack_deadline,
            &stored_dead_letter,
        );
        let wanted = drift_settings(
            &spec.topic,
            &spec.attribute_filter,
            spec.ack_deadline,
            &spec.dead_letter_topic,
        );
        match drift::compare(&wanted, &existing) {
            drift::Verdict::Same => return Ok(()),
            drift::Verdict::Refuse(differences) => {
                let name = &spec.name;
                let remedy = format!(
                    "Give the plugin a new name (a new subscription `plugin-<name>`, \
                         starting at the topic's end), or, with the host stopped, remove \
                         the old one from the embedded ledger's `ledger.db` (`DELETE FROM \
                         subscriptions WHERE name = '{name}'; DELETE FROM acks WHERE sub = \
                         '{name}'; DELETE FROM nacks WHERE sub = '{name}';`)."
                );
                return Err(PortError::Invalid {
                    backend: BACKEND,
                    message: drift::refusal(name, &differences, &remedy),
                });
            }
            drift::Verdict::Update(_) => {}
        }
        sub.ack_deadline = spec.ack_deadline;
        writer
            .conn
            .execute(
                "UPDATE subscriptions SET ack_deadline_ms = ?2, dead_letter_topic = ?3
                     WHERE name = ?1",
                params![spec.name, deadline, spec.dead_letter_topic],
            )
            .map_err(|e| PortError::unavailable(BACKEND, e))?;
        tracing::info!(subscription = %spec.name, "updated embedded subscription to match its manifest");
        return Ok(());
    }
    // Like Pub/Sub: a new subscription starts at the topic's end. A dead-letter
    // subscription starts at its topic's oldest retained message instead: this log keeps
    // them, so dead letters from before it existed are listed too.
    let end: i64 = if from_oldest {
        0
    } else {
        read::end(&writer.conn)?
    };
    writer
        .conn
        .execute(
            "INSERT INTO subscriptions (name, topic, filter, ack_deadline_ms,
                 dead_letter_topic, cursor) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                spec.name,
                spec.topic,
                filter,
                deadline,
                spec.dead_letter_topic,
                end
            ],
        )
        .map_err(|e| PortError::unavailable(BACKEND, e))?;
    reader.subs.insert(
        spec.name.clone(),
        SubState {
            topic: spec.topic.clone(),
            filter: spec.attribute_filter.clone(),
            ack_deadline: spec.ack_deadline,
            next_load: end,
            pending: BTreeMap::new(),
            nacked_attempts: HashMap::new(),
            acked: HashSet::new(),
        },
    );
    Ok(())
}

/// The subscription on `spec`'s dead-letter topic that keeps its dead letters for the
/// dead-letter tools ([`dead_letter_subscription`]): no filter, no dead letters of its own.
fn dead_letter_spec(spec: &SubscriptionSpec) -> SubscriptionSpec {
    SubscriptionSpec {
        name: dead_letter_subscription(&spec.name),
        topic: spec.dead_letter_topic.clone(),
        attribute_filter: BTreeMap::new(),
        ack_deadline: spec.ack_deadline,
        dead_letter_topic: String::new(),
    }
}
