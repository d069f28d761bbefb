//! Delivery, on the reading half: a subscription's window filled from the log, leases
//! handed out in per-key order, acks, nacks and extensions applied to the window (`settle`
//! makes acks and nacks durable on the writing half).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ledgerhost_core::ledger::Delivery;
use ledgerhost_core::{PortError, PortResult};

use super::read;
use super::state::{BACKEND, Pending, Reader, WINDOW, sub_mut};

impl Reader {
    /// Loads more of the log into a subscription's window, auto-acking filtered messages.
    fn fill(&mut self, name: &str) -> PortResult<()> {
        let Reader { conn, subs } = self;
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

    /// The subscription's cursor: everything below its first unsettled id is settled.
    pub(super) fn cursor(&mut self, name: &str) -> PortResult<i64> {
        let sub = sub_mut(&mut self.subs, name)?;
        Ok(sub.pending.keys().next().copied().unwrap_or(sub.next_load))
    }

    /// Leases up to `max` deliverable messages.
    pub(super) fn lease(&mut self, name: &str, max: usize) -> PortResult<Vec<Delivery>> {
        self.fill(name)?;
        let Reader { conn, subs } = self;
        let sub = sub_mut(subs, name)?;
        let now = Instant::now();
        let deadline = sub.ack_deadline;
        let mut blocked: HashSet<String> = HashSet::new();
        let mut out = Vec::new();
        let mut expired = Vec::new();
        let mut rereads = read::Rereads::default();
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
                None => match read::message(conn, *id, &mut rereads).and_then(|m| {
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

    /// Takes the messages `ids` out of subscription `name`'s window; returns those that were
    /// in it, for the writer to record.
    pub(super) fn ack(&mut self, name: &str, ids: Vec<i64>) -> PortResult<Vec<i64>> {
        let sub = sub_mut(&mut self.subs, name)?;
        Ok(ids
            .into_iter()
            .filter(|id| sub.pending.remove(id).is_some())
            .collect())
    }

    /// Hands the messages `ids` back for another delivery after `delay`; returns each with
    /// its attempt count, for the writer to record.
    pub(super) fn nack(
        &mut self,
        name: &str,
        ids: Vec<i64>,
        delay: Duration,
    ) -> PortResult<Vec<(i64, u32)>> {
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
        Ok(attempts)
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
