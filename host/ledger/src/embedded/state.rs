//! What the embedded ledger holds in memory beside its file: the connection, each
//! subscription's window of loaded messages and their leases, the cache of stored headers.
//! Every other part of the ledger works on an [`Inner`] behind the ledger's one lock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use ledgerhost_core::ledger::Message;
use ledgerhost_core::{PortError, PortResult};
use rusqlite::Connection;

/// The backend's name in errors.
pub(super) const BACKEND: &str = "embedded";
/// Messages kept in memory per subscription ahead of delivery.
pub(super) const WINDOW: usize = 10_000;

/// A loaded, unsettled message of a subscription.
pub(super) struct Pending {
    /// The message, until its first lease moves it into the delivery (no copy); a
    /// redelivery reads it again from the log.
    pub(super) message: Option<Message>,
    /// Its ordering key (per-key order holds while it is leased).
    pub(super) ordering_key: String,
    /// Deliveries so far.
    pub(super) attempt: u32,
    /// Leased until then (`None`: not leased).
    pub(super) leased_until: Option<Instant>,
    /// Not deliverable before then (after a nack).
    pub(super) visible_at: Instant,
}

/// A subscription: what it reads and its window of unsettled messages.
pub(super) struct SubState {
    pub(super) topic: String,
    pub(super) filter: BTreeMap<String, String>,
    pub(super) ack_deadline: Duration,
    /// Next message id to load from the log.
    pub(super) next_load: i64,
    /// Loaded, unsettled messages by id.
    pub(super) pending: BTreeMap<i64, Pending>,
    /// Durable attempt counts of nacked messages not yet loaded (after a restart).
    pub(super) nacked_attempts: HashMap<i64, u32>,
    /// Acked ids at or above the durable cursor (loaded at open, to skip them).
    pub(super) acked: HashSet<i64>,
}

/// The ledger's state behind its lock.
pub(super) struct Inner {
    pub(super) conn: Connection,
    pub(super) subs: HashMap<String, SubState>,
    pub(super) retention: Duration,
    pub(super) last_cleanup: Instant,
    /// Ids of the stored headers (`headers` table) written or looked up so far.
    pub(super) headers: HashMap<Vec<u8>, i64>,
}

/// The subscription `name`, or a not-found error naming it.
pub(super) fn sub_mut<'a>(
    subs: &'a mut HashMap<String, SubState>,
    name: &str,
) -> PortResult<&'a mut SubState> {
    subs.get_mut(name)
        .ok_or_else(|| PortError::not_found(BACKEND, format!("subscription `{name}`")))
}
