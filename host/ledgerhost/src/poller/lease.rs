//! The table's (or shard's) lease: read without a read-write transaction while another
//! replica holds it, taken once it is free, and the fleet told when it is given up.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::Poller;
use super::fleet::POLLER_LEASE_PREFIX;

impl Poller {
    /// This poller no longer holds its lease: tells the fleet, and stops reading the change
    /// stream (the next holder reads it from the stored progress).
    pub(super) fn leave_fleet(&mut self) {
        if let Some(fleet) = &self.fleet {
            fleet.release(self.table(), self.settings.shard.index);
        }
        self.stop_stream();
    }

    /// The lease's name: `poller/<unit>`.
    pub(super) fn lease_name(&self) -> String {
        format!("{POLLER_LEASE_PREFIX}{}", self.unit())
    }

    /// Reads the lease (no read-write transaction) and takes it only if it is free, expired
    /// or already this replica's. True once taken; then `when` is the start of the taking
    /// transaction. Otherwise `when` is when to read it again: when the holder's lease
    /// expires, or after a third of the TTL (a release frees it early), whichever is first.
    pub(super) async fn take_lease_if_free(&mut self, ttl: Duration, when: &mut Instant) -> bool {
        let name = self.lease_name();
        let replica = self.settings.replica.clone();
        let again = |remaining: Duration| Instant::now() + remaining.min(ttl / 3);
        match self.source.read_lease(&name, &replica).await {
            Ok(lease) if lease.held || lease.remaining.is_zero() => {}
            Ok(lease) => {
                *when = again(lease.remaining);
                return false;
            }
            Err(e) => {
                self.stats.poll_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(table = self.table(), error = %e, "cannot read the poller lease; retrying next tick");
                return false;
            }
        }
        if let Some(fleet) = &self.fleet
            && !fleet.reserve(
                self.table(),
                self.settings.shard.index,
                self.settings.shard.count,
            )
        {
            // This replica holds its fair share already: the shard is left to another.
            *when = again(ttl);
            return false;
        }
        let started = Instant::now();
        match self.source.try_lease(&name, &replica, ttl, None).await {
            Ok(lease) if lease.held => {
                tracing::info!(table = self.table(), shard = %self.unit(), replica = %replica, "took the poller lease");
                self.stats.leader.store(1, Ordering::Relaxed);
                // Another replica may have moved the table on while we waited.
                self.watermark = None;
                self.lease_progress = lease.progress;
                *when = started;
                true
            }
            Ok(lease) => {
                // Another replica took it first.
                self.leave_fleet();
                *when = again(lease.remaining);
                false
            }
            Err(e) => {
                self.leave_fleet();
                self.stats.poll_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(table = self.table(), error = %e, "cannot take the poller lease; retrying next tick");
                false
            }
        }
    }
}
