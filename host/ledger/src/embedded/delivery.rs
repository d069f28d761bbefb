//! Delivery: a subscription's window filled from the log, leases handed out in per-key
//! order, and acks, nacks and lease extensions settled (durably for acks and nacks).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ledgerhost_core::ledger::Delivery;
use ledgerhost_core::{PortError, PortResult};
use rusqlite::params;

use super::read;
use super::state::{BACKEND, Inner, Pending, WINDOW, sub_mut};

impl Inner {
    /// Loads more of the log into a subscription's window, auto-acking filtered messages.
    fn fill(&mut self, name: &str) -> PortResult<()> {
        let Inner { conn, subs, .. } = self;
        let sub = sub_mut(subs, name)?;
        if sub.pending.len() >= WINDOW / 2 {
            return Ok(());
        }
        let want = WINDOW - sub.pending.len();
        let now = Instant::now();
        let topic = sub.topic.clone();
        let mut read = 0;
        read::scan(conn, &topic, sub.next_load, |id, _, stored| {
            read += 1;
            sub.next_load = id + 1;
            if sub.acked.remove(&id) {
                return Ok(read < want);
            }
            let message = stored.into_message(|| format!("message {id}"))?;
            // Filtered out: never delivered to this subscription (settled by the cursor).
            if !sub
                .filter
                .iter()
                .all(|(k, v)| message.attributes.get(k) == Some(v))
            {
                return Ok(read < want);
            }
            let attempt = sub.nacked_attempts.remove(&id).unwrap_or(0);
            sub.pending.insert(
                id,
                Pending {
                    ordering_key: message.ordering_key.clone(),
                    message: Some(message),
                    attempt,
                    leased_until: None,
                    visible_at: now,
                },
            );
            Ok(read < want)
        })
    }

    /// Persists the subscription's cursor: everything below the first unsettled id.
    fn advance_cursor(&mut self, name: &str) -> PortResult<()> {
        let Inner { conn, subs, .. } = self;
        let sub = sub_mut(subs, name)?;
        let cursor = sub.pending.keys().next().copied().unwrap_or(sub.next_load);
        conn.execute(
            "UPDATE subscriptions SET cursor = ?2 WHERE name = ?1",
            params![name, cursor],
        )
        .and_then(|_| {
            conn.execute(
                "DELETE FROM acks WHERE sub = ?1 AND id < ?2",
                params![name, cursor],
            )
        })
        .and_then(|_| {
            conn.execute(
                "DELETE FROM nacks WHERE sub = ?1 AND id < ?2",
                params![name, cursor],
            )
        })
        .map_err(|e| PortError::unavailable(BACKEND, e))?;
        Ok(())
    }

    /// Leases up to `max` deliverable messages.
    pub(super) fn lease(&mut self, name: &str, max: usize) -> PortResult<Vec<Delivery>> {
        self.fill(name)?;
        let Inner { conn, subs, .. } = self;
        let sub = sub_mut(subs, name)?;
        let now = Instant::now();
        let deadline = sub.ack_deadline;
        let mut blocked: HashSet<String> = HashSet::new();
        let mut out = Vec::new();
        let mut expired = Vec::new();
        let mut last_page = read::LastPage::default();
        for (id, p) in sub.pending.iter_mut() {
            if out.len() >= max {
                break;
            }
            if let Some(until) = p.leased_until {
                if until > now {
                    blocked.insert(p.ordering_key.clone());
                    continue;
                }
                // Lease expired: deliverable again.
                p.leased_until = None;
            }
            if p.visible_at > now || blocked.contains(&p.ordering_key) {
                blocked.insert(p.ordering_key.clone());
                continue;
            }
            let message = match p.message.take() {
                Some(message) => message,
                // Redelivered: its first lease moved it out of the window.
                None => match read::message(conn, *id, &mut last_page).and_then(|m| {
                    m.map(|s| s.into_message(|| format!("message {id}")))
                        .transpose()
                }) {
                    Ok(Some(message)) => message,
                    Ok(None) => {
                        // Deleted by retention since its last delivery: gone, acked or not,
                        // as on Pub/Sub (retention.rs).
                        expired.push(*id);
                        continue;
                    }
                    Err(e) if out.is_empty() => return Err(e),
                    Err(_) => break,
                },
            };
            p.attempt += 1;
            p.leased_until = Some(now + deadline);
            out.push(Delivery {
                ack_id: id.to_string(),
                message,
                attempt: p.attempt,
            });
        }
        for id in expired {
            sub.pending.remove(&id);
        }
        Ok(out)
    }

    /// When the next pending message becomes deliverable (lease expiry or nack delay).
    pub(super) fn next_wake(&self, name: &str) -> Option<Instant> {
        let sub = self.subs.get(name)?;
        sub.pending
            .values()
            .map(|p| p.leased_until.unwrap_or(p.visible_at))
            .filter(|t| *t > Instant::now())
            .min()
    }

    /// Settles the leased messages `ids` of subscription `name` durably and moves its cursor.
    pub(super) fn ack(&mut self, name: &str, ids: Vec<i64>) -> PortResult<()> {
        let sub = sub_mut(&mut self.subs, name)?;
        let mut settled = Vec::with_capacity(ids.len());
        for id in ids {
            if sub.pending.remove(&id).is_some() {
                settled.push(id);
            }
        }
        let tx = self
            .conn
            .transaction()
            .map_err(|e| PortError::unavailable(BACKEND, e))?;
        {
            let mut stmt = tx
                .prepare_cached("INSERT OR IGNORE INTO acks (sub, id) VALUES (?1, ?2)")
                .map_err(|e| PortError::unavailable(BACKEND, e))?;
            for id in &settled {
                stmt.execute(params![name, id])
                    .map_err(|e| PortError::unavailable(BACKEND, e))?;
            }
        }
        tx.commit()
            .map_err(|e| PortError::unavailable(BACKEND, e))?;
        self.advance_cursor(name)
    }

    /// Hands the messages `ids` back for another delivery after `delay`, keeping their
    /// attempt counts durably.
    pub(super) fn nack(&mut self, name: &str, ids: Vec<i64>, delay: Duration) -> PortResult<()> {
        let sub = sub_mut(&mut self.subs, name)?;
        let visible_at = Instant::now() + delay;
        let mut attempts = Vec::new();
        for id in ids {
            if let Some(p) = sub.pending.get_mut(&id) {
                p.leased_until = None;
                p.visible_at = visible_at;
                attempts.push((id, p.attempt));
            }
        }
        let tx = self
            .conn
            .transaction()
            .map_err(|e| PortError::unavailable(BACKEND, e))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO nacks (sub, id, attempt) VALUES (?1, ?2, ?3)",
                )
                .map_err(|e| PortError::unavailable(BACKEND, e))?;
            for (id, attempt) in attempts {
                stmt.execute(params![name, id, attempt])
                    .map_err(|e| PortError::unavailable(BACKEND, e))?;
            }
        }
        tx.commit().map_err(|e| PortError::unavailable(BACKEND, e))
    }

    /// Extends the leases of the messages `ids` that are still leased to `deadline` from now.
    pub(super) fn extend(
        &mut self,
        name: &str,
        ids: Vec<i64>,
        deadline: Duration,
    ) -> PortResult<()> {
        let sub = sub_mut(&mut self.subs, name)?;
        let until = Instant::now() + deadline;
        for id in ids {
            if let Some(p) = sub.pending.get_mut(&id)
                && p.leased_until.is_some()
            {
                p.leased_until = Some(until);
            }
        }
        Ok(())
    }
}

/// Ack ids as log ids; one that is not a number is not ours.
pub(super) fn parse_ids(ids: &[String]) -> PortResult<Vec<i64>> {
    ids.iter()
        .map(|s| {
            s.parse::<i64>().map_err(|_| PortError::Invalid {
                backend: BACKEND,
                message: format!("`{s}` is not an ack id of this ledger"),
            })
        })
        .collect()
}
