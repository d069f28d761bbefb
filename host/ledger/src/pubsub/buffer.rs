//! What one subscription holds in this process: messages pulled and waiting, deliveries
//! handed out under a local lease, nacked ones held for their delay, and the ordering keys
//! they keep busy.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use ledgerhost_core::ledger::{Message, SubscriptionSpec};
use tokio::sync::Notify;
use tracing::debug;

/// Message ids whose deliveries one subscription counts locally.
pub(super) const SEEN_LIMIT: usize = 100_000;

/// A received message waiting in the buffer.
pub(super) struct Pending {
    pub(super) message: Message,
    pub(super) message_id: String,
    pub(super) ack_id: String,
    pub(super) attempt: u32,
}

/// A delivery handed out by `pull`, leased locally until `deadline`.
pub(super) struct Outstanding {
    pub(super) key: String,
    pub(super) message_id: String,
    pub(super) deadline: Instant,
}

#[derive(Default)]
/// What one subscription holds in this process.
pub(super) struct Buffer {
    pub(super) pending: VecDeque<Pending>,
    /// By Pub/Sub ack id.
    pub(super) outstanding: HashMap<String, Outstanding>,
    /// Nacked with a delay: held (and kept leased) until the delay is over.
    pub(super) held: HashSet<String>,
    /// Ordering keys with outstanding deliveries or delayed nacks, and how many.
    pub(super) busy: HashMap<String, usize>,
    /// Deliveries seen per message id (removed on ack).
    pub(super) seen: HashMap<String, u32>,
    /// Last pull error, reported by the next `pull` that finds nothing.
    pub(super) error: Option<String>,
}

impl Buffer {
    /// One delivery of `key` is settled or handed back.
    pub(super) fn free_key(&mut self, key: &str) {
        if let Some(n) = self.busy.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.busy.remove(key);
            }
        }
    }

    /// Takes every buffered message of `key` out of the buffer and returns their ack ids, to
    /// hand back to Pub/Sub so it redelivers the key in order.
    pub(super) fn return_key(&mut self, key: &str) -> Vec<String> {
        if key.is_empty() {
            return Vec::new();
        }
        let mut returned = Vec::new();
        self.pending.retain(|p| {
            let same = p.message.ordering_key == key;
            if same {
                returned.push(p.ack_id.clone());
            }
            !same
        });
        returned
    }

    /// Messages held in this process, buffered or handed out.
    pub(super) fn held_count(&self) -> usize {
        self.pending.len() + self.outstanding.len() + self.held.len()
    }

    /// Every ack id whose server deadline must be kept alive.
    pub(super) fn leased_ids(&self) -> Vec<String> {
        self.pending
            .iter()
            .map(|p| p.ack_id.clone())
            .chain(self.outstanding.keys().cloned())
            .chain(self.held.iter().cloned())
            .collect()
    }
}

/// One subscription this process reads: its spec, buffer and wake-ups.
pub(super) struct SubState {
    /// Pub/Sub subscription path.
    pub(super) path: String,
    pub(super) spec: SubscriptionSpec,
    pub(super) buffer: Mutex<Buffer>,
    /// New messages or freed keys.
    pub(super) notify: Notify,
    /// Room in the buffer.
    pub(super) room: Notify,
}

impl SubState {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes deliveries whose local lease expired out of the buffer; returns the ack ids to
    /// hand back (with their keys' later buffered messages).
    pub(super) fn expire(&self) -> Vec<String> {
        let now = Instant::now();
        let mut b = self.lock();
        let expired: Vec<String> = b
            .outstanding
            .iter()
            .filter(|(_, o)| o.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        let mut back = Vec::new();
        for id in expired {
            if let Some(o) = b.outstanding.remove(&id) {
                debug!(subscription = %self.spec.name, ack_id = %id, "lease expired; redelivering");
                b.free_key(&o.key);
                // The earliest first: the emulator requeues in the order handed back.
                back.push(id);
                back.extend(b.return_key(&o.key));
            }
        }
        back
    }
}
