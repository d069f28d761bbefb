//! Consuming: a background long-poll per subscription fills its buffer, a lease keeper keeps
//! held messages' server deadlines alive, and pull, ack, nack, extend and release act on the
//! buffer with the per-key rule (one outstanding delivery per ordering key across pulls).
//! Unary Pull rather than streaming: a stream pins ordering keys to itself, which the emulator
//! never undoes when the streaming process is killed.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ledgerhost_core::ledger::{Delivery, Message, SubscriptionSpec};
use ledgerhost_core::{PortError, PortResult};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::admin::ack_deadline_secs;
use super::buffer::{Buffer, Outstanding, Pending, SEEN_LIMIT, SubState};
use super::client::Inner;
use super::error::BACKEND;
use super::rest::{self, Received, RestError};

/// Messages one subscription may hold unacked in this process (buffered or handed out).
pub const MAX_BUFFERED: usize = 1000;

/// Registers `spec`'s subscription in this process (once) and starts its reader and lease
/// keeper.
pub(super) fn start(inner: &Arc<Inner>, spec: &SubscriptionSpec) {
    let mut subs = inner.subs.lock().unwrap_or_else(|e| e.into_inner());
    if !subs.contains_key(&spec.name) {
        let state = Arc::new(SubState {
            path: inner.subscription_path(&spec.name),
            spec: spec.clone(),
            buffer: Mutex::default(),
            notify: Notify::new(),
            room: Notify::new(),
        });
        subs.insert(spec.name.clone(), state.clone());
        let mut readers = inner.readers.lock().unwrap_or_else(|e| e.into_inner());
        readers.push(tokio::spawn(read_pulls(inner.clone(), state.clone())));
        readers.push(tokio::spawn(keep_leases(inner.clone(), state)));
    }
}

/// Hands out up to `max` deliveries, waiting up to `wait` for the first.
pub(super) async fn pull(
    inner: &Inner,
    subscription: &str,
    max: usize,
    wait: Duration,
) -> PortResult<Vec<Delivery>> {
    let state = inner.state(subscription)?;
    let deadline = Instant::now() + wait;
    loop {
        let back = state.expire();
        inner.hand_back(&state, &back).await;
        let notified = state.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let mut out = Vec::new();
        {
            let mut b = state.lock();
            let lease = Instant::now() + state.spec.ack_deadline;
            // A key with deliveries out from an earlier pull waits for them; within this
            // pull a key's messages go out together, in order (a shard's events batch).
            let blocked: HashSet<String> = b.busy.keys().cloned().collect();
            let mut i = 0;
            while i < b.pending.len() && out.len() < max {
                let key = b.pending[i].message.ordering_key.clone();
                if !key.is_empty() && blocked.contains(&key) {
                    i += 1;
                    continue;
                }
                let Some(p) = b.pending.remove(i) else { break };
                if !key.is_empty() {
                    *b.busy.entry(key.clone()).or_insert(0) += 1;
                }
                out.push(Delivery {
                    ack_id: p.ack_id.clone(),
                    message: p.message,
                    attempt: p.attempt,
                });
                b.outstanding.insert(
                    p.ack_id,
                    Outstanding {
                        key,
                        message_id: p.message_id,
                        deadline: lease,
                    },
                );
            }
            if out.is_empty()
                && Instant::now() >= deadline
                && let Some(e) = b.error.take()
            {
                return Err(PortError::unavailable(BACKEND, e));
            }
        }
        if !out.is_empty() || Instant::now() >= deadline {
            return Ok(out);
        }
        // Wake for new messages, and soon enough to expire leases.
        let nap = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(250));
        let _ = tokio::time::timeout(nap, notified).await;
    }
}

/// Acknowledges deliveries; Pub/Sub redelivers what it did not hear acked.
pub(super) async fn ack(inner: &Inner, subscription: &str, ack_ids: &[String]) -> PortResult<()> {
    let state = inner.state(subscription)?;
    let mut settled = Vec::with_capacity(ack_ids.len());
    {
        let mut b = state.lock();
        for id in ack_ids {
            match b.outstanding.remove(id) {
                Some(o) => {
                    b.free_key(&o.key);
                    b.seen.remove(&o.message_id);
                    settled.push(id.clone());
                }
                None => {
                    debug!(subscription, ack_id = %id, "ack of an unknown or expired delivery")
                }
            }
        }
    }
    state.notify.notify_waiters();
    state.room.notify_waiters();
    // Pub/Sub redelivers what it did not hear acked: a failure here costs a duplicate
    // (same event id), never a loss.
    inner
        .rest
        .acknowledge(&state.path, &settled)
        .await
        .map_err(|e| {
            PortError::unavailable(BACKEND, format!("acknowledging on {}: {e}", state.path))
        })
}

/// Hands deliveries back now, or after `delay` (held and kept leased until then).
pub(super) async fn nack(
    inner: &Arc<Inner>,
    subscription: &str,
    ack_ids: &[String],
    delay: Duration,
) -> PortResult<()> {
    let state = inner.state(subscription)?;
    let mut back = Vec::new();
    let mut held = Vec::new();
    {
        let mut b = state.lock();
        for id in ack_ids {
            let Some(o) = b.outstanding.remove(id) else {
                debug!(subscription, ack_id = %id, "nack of an unknown or expired delivery");
                continue;
            };
            if delay.is_zero() {
                b.free_key(&o.key);
                back.push(id.clone());
                back.extend(b.return_key(&o.key));
            } else {
                // The key stays busy and the lease keeper keeps the message leased.
                b.held.insert(id.clone());
                held.push((id.clone(), o.key));
            }
        }
    }
    inner.hand_back(&state, &back).await;
    if !held.is_empty() {
        let (inner, state) = (inner.clone(), state.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut back = Vec::new();
            {
                let mut b = state.lock();
                for (id, key) in held {
                    b.held.remove(&id);
                    b.free_key(&key);
                    back.push(id);
                    back.extend(b.return_key(&key));
                }
            }
            inner.hand_back(&state, &back).await;
            state.notify.notify_waiters();
            state.room.notify_waiters();
        });
    }
    state.notify.notify_waiters();
    state.room.notify_waiters();
    Ok(())
}

/// Moves the local lease of deliveries to `deadline` from now.
pub(super) fn extend(
    inner: &Inner,
    subscription: &str,
    ack_ids: &[String],
    deadline: Duration,
) -> PortResult<()> {
    let state = inner.state(subscription)?;
    let until = Instant::now() + deadline;
    let mut b = state.lock();
    for id in ack_ids {
        if let Some(o) = b.outstanding.get_mut(id) {
            o.deadline = until;
        }
    }
    Ok(())
}

/// Shutdown: readers finish their Pull in flight, then everything held goes back to
/// Pub/Sub so other replicas get it at once.
pub(super) async fn release(inner: &Inner) -> PortResult<()> {
    inner.stopping.send_replace(true);
    let tasks: Vec<_> = inner
        .readers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
        .collect();
    for mut t in tasks {
        // Each reader finishes the Pull it has in flight (bounded by the pull timeout).
        if tokio::time::timeout(rest::PULL_TIMEOUT, &mut t)
            .await
            .is_err()
        {
            t.abort();
        }
    }
    let subs: Vec<Arc<SubState>> = inner
        .subs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .cloned()
        .collect();
    for state in subs {
        let ids = {
            let mut b = state.lock();
            let ids = b.leased_ids();
            *b = Buffer::default();
            ids
        };
        if !ids.is_empty() {
            info!(subscription = %state.spec.name, n = ids.len(), "handing held deliveries back to Pub/Sub");
            inner.hand_back(&state, &ids).await;
        }
    }
    Ok(())
}

/// Long-polls one subscription into its buffer, forever (backing off on errors).
async fn read_pulls(inner: Arc<Inner>, state: Arc<SubState>) {
    let mut backoff = Duration::from_millis(100);
    // A Pull is never abandoned midway, only not started again: the emulator does not
    // notice an abandoned Pull and would hand it the next messages.
    while !*inner.stopping.borrow() {
        let room = MAX_BUFFERED.saturating_sub(state.lock().held_count());
        if room == 0 {
            let _ = tokio::time::timeout(Duration::from_millis(250), state.room.notified()).await;
            continue;
        }
        let received = match inner.rest.pull(&state.path, room).await {
            Ok(r) => r,
            Err(RestError::PullTimedOut) => continue,
            Err(e) => {
                let missing = matches!(e, RestError::NotFound(_));
                warn!(subscription = %state.spec.name, error = %e, missing, "pubsub pull failed; retrying");
                state.lock().error = Some(format!("pulling from {}: {e}", state.path));
                state.notify.notify_waiters();
                if missing && let Err(e) = inner.recreate_topic(&state.spec.topic).await {
                    warn!(subscription = %state.spec.name, error = %e, "cannot recreate the subscription");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let mut settled = Vec::new();
        {
            let mut b = state.lock();
            b.error = None;
            for r in received {
                let Received {
                    ack_id,
                    message_id,
                    data,
                    ordering_key,
                    attributes,
                    delivery_attempt,
                    ..
                } = r;
                // Pub/Sub applies the filter server-side; the emulator does not, so check it
                // here too (a non-matching message is settled, as the server would have).
                let matches = state
                    .spec
                    .attribute_filter
                    .iter()
                    .all(|(k, v)| attributes.get(k) == Some(v));
                if !matches {
                    settled.push(ack_id);
                    continue;
                }
                if b.seen.len() >= SEEN_LIMIT {
                    // Entries of messages handed back and then acked elsewhere are never
                    // removed here; forget them all rather than grow without bound (the
                    // server's count still applies).
                    b.seen.clear();
                }
                let seen = b.seen.entry(message_id.clone()).or_insert(0);
                *seen += 1;
                let attempt = delivery_attempt.max(1).max(*seen);
                b.pending.push_back(Pending {
                    message: Message {
                        data,
                        ordering_key,
                        attributes: attributes.into_iter().collect(),
                    },
                    message_id,
                    ack_id,
                    attempt,
                });
            }
        }
        state.notify.notify_waiters();
        if !settled.is_empty()
            && let Err(e) = inner.rest.acknowledge(&state.path, &settled).await
        {
            debug!(subscription = %state.spec.name, error = %e, "cannot settle filtered-out messages; they come back and are settled again");
        }
    }
}

/// Keeps the server deadline of every message this process holds ahead of its expiry, and
/// hands back deliveries whose local lease expired.
async fn keep_leases(inner: Arc<Inner>, state: Arc<SubState>) {
    let deadline = ack_deadline_secs(&state.spec);
    let every = Duration::from_secs(u64::from(deadline) / 3).max(Duration::from_secs(1));
    let mut stopping = inner.stopping.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopping.wait_for(|s| *s) => break,
        }
        let back = state.expire();
        inner.hand_back(&state, &back).await;
        let ids = state.lock().leased_ids();
        if ids.is_empty() {
            continue;
        }
        if let Err(e) = inner
            .rest
            .modify_ack_deadline(&state.path, &ids, u64::from(deadline))
            .await
        {
            warn!(subscription = %state.spec.name, error = %e, n = ids.len(), "cannot extend leases; Pub/Sub may redeliver (same event ids)");
        }
    }
}
