//! What the embedded ledger holds beside its file, in two halves with a lock each, so a
//! page being written does not stop pulls: the [`Writer`] (the connection every write goes
//! through, the cache of stored headers, retention) and the [`Reader`] (a second
//! connection, read-only, and each subscription's window of loaded messages and leases).
//! SQLite's WAL lets the reader read the last committed state while the writer writes.
//!
//! Lock order: the writer before the reader, never the other way (`Sides`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, TryLockError};
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

/// The writing half: pages, acks and nacks, subscriptions, topics, retention.
pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) retention: Duration,
    pub(super) last_cleanup: Instant,
    /// Ids of the stored headers (`headers` table) written or looked up so far.
    pub(super) headers: HashMap<Vec<u8>, i64>,
    /// The buffer pages are built in, kept from one page to the next.
    pub(super) page: Vec<u8>,
}

/// The reading half: leases and reads, on a connection of its own (`query_only`).
pub(super) struct Reader {
    pub(super) conn: Connection,
    pub(super) subs: HashMap<String, SubState>,
}

/// Acks taken out of a subscription's window, to be recorded by the writer.
pub(super) struct AckRecord {
    pub(super) subscription: String,
    pub(super) ids: Vec<i64>,
    /// The subscription's first unsettled id after these acks.
    pub(super) cursor: i64,
}

/// Both halves, each behind its lock, and the acks waiting for the writer. Whoever needs
/// both halves takes the writer first.
pub(super) struct Sides {
    writer: Mutex<Writer>,
    reader: Mutex<Reader>,
    acks: Mutex<Vec<AckRecord>>,
}

impl Sides {
    pub(super) fn new(writer: Writer, reader: Reader) -> Self {
        Sides {
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
            acks: Mutex::new(Vec::new()),
        }
    }

    /// The writing half, once no other call holds it. Acks queued meanwhile are recorded
    /// when it is let go ([`Sides::queue_acks`]).
    pub(super) fn writer(&self) -> WriterGuard<'_> {
        WriterGuard {
            guard: Some(lock(&self.writer)),
            sides: self,
        }
    }

    /// The reading half; a caller holding it must not then ask for the writer.
    pub(super) fn reader(&self) -> MutexGuard<'_, Reader> {
        lock(&self.reader)
    }

    /// Queues acks for the writer and records them at once if it is free. If a page is
    /// being written, they are recorded as soon as that write lets the writer go, so an ack
    /// never waits behind a page (a crash in between redelivers those messages: at least
    /// once, as on Pub/Sub).
    pub(super) fn queue_acks(&self, record: AckRecord) -> PortResult<()> {
        lock(&self.acks).push(record);
        self.record_queued_acks()
    }

    /// Records the queued acks while the writer is free; leaves them to its holder
    /// otherwise (who calls this again when letting it go).
    fn record_queued_acks(&self) -> PortResult<()> {
        loop {
            if lock(&self.acks).is_empty() {
                return Ok(());
            }
            let mut writer = match self.writer.try_lock() {
                Ok(writer) => writer,
                Err(TryLockError::Poisoned(e)) => e.into_inner(),
                Err(TryLockError::WouldBlock) => return Ok(()),
            };
            let queued = std::mem::take(&mut *lock(&self.acks));
            writer.record_acks(&queued)?;
        }
    }
}

/// The writing half, held; queued acks are recorded when it is let go.
pub(super) struct WriterGuard<'a> {
    guard: Option<MutexGuard<'a, Writer>>,
    sides: &'a Sides,
}

impl std::ops::Deref for WriterGuard<'_> {
    type Target = Writer;
    fn deref(&self) -> &Writer {
        self.guard.as_ref().expect("held until dropped")
    }
}

impl std::ops::DerefMut for WriterGuard<'_> {
    fn deref_mut(&mut self) -> &mut Writer {
        self.guard.as_mut().expect("held until dropped")
    }
}

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        if let Err(e) = self.sides.record_queued_acks() {
            // The messages stay unsettled on disk: redelivered after a restart.
            tracing::warn!(error = %e, "embedded ledger: recording acks failed");
        }
    }
}

/// `mutex`, locked; a panic elsewhere leaves SQLite consistent (its transaction rolled back).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The subscription `name`, or a not-found error naming it.
pub(super) fn sub_mut<'a>(
    subs: &'a mut HashMap<String, SubState>,
    name: &str,
) -> PortResult<&'a mut SubState> {
    subs.get_mut(name)
        .ok_or_else(|| PortError::not_found(BACKEND, format!("subscription `{name}`")))
}
