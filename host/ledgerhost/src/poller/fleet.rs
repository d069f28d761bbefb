//! The fleet of replicas polling one source, as this replica sees it: which replicas are
//! live and which shards of each sharded table this one holds, so that it takes no more
//! than its fair share of a table's shard leases while others are live, and gives shards
//! back when more replicas join.
//!
//! Membership is a lease per replica, `replicas/<id>`, renewed every third of the lease TTL
//! (one read-write transaction), and one read of every `replicas/` lease at the same
//! cadence (one read-only query): a replica is live while its lease has not expired. The
//! same pass reads the `poller/` leases, so the status page can say which replica holds
//! every shard. Only started when a table has more than one shard: an unsharded fleet runs
//! no extra transaction.
//!
//! Fair share of a table with `n` shards among `live` replicas: `ceil(n / live)`. A shard
//! poller takes a free lease only after reserving a slot below the share
//! ([`Fleet::reserve`]), and a replica above its share gives up its highest shard first,
//! one per poll tick ([`Fleet::should_give_up`]), so shares converge without all pollers
//! letting go at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ledgerhost_core::source::Source;
use tokio::sync::watch;

/// Prefix of the replicas' membership leases.
pub const REPLICA_LEASE_PREFIX: &str = "replicas/";
/// Prefix of the pollers' leases (`poller/<unit name>`).
pub const POLLER_LEASE_PREFIX: &str = "poller/";

/// This replica's view of the fleet.
#[derive(Debug)]
pub struct Fleet {
    replica: String,
    /// Live replicas at the last membership read, this one included (at least 1).
    live: AtomicUsize,
    /// The shards of each table this replica holds or is taking.
    held: Mutex<BTreeMap<String, BTreeSet<u32>>>,
    /// The holder of every held poller lease, by lease name, at the last read.
    holders: Mutex<BTreeMap<String, String>>,
}

impl Fleet {
    /// A fleet view for `replica`, alone until the first membership read.
    pub fn new(replica: &str) -> Arc<Self> {
        Arc::new(Fleet {
            replica: replica.to_string(),
            live: AtomicUsize::new(1),
            held: Mutex::new(BTreeMap::new()),
            holders: Mutex::new(BTreeMap::new()),
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, BTreeSet<u32>>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Live replicas at the last membership read.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed).max(1)
    }

    /// The most shards of a table of `count` this replica may hold now.
    pub fn fair_share(&self, count: u32) -> u32 {
        let live = u32::try_from(self.live()).unwrap_or(u32::MAX);
        count.div_ceil(live).max(1)
    }

    /// Reserves shard `index` of `table` before trying to take its lease: false when this
    /// replica already holds its fair share. Undo with [`Fleet::release`] when not taken.
    pub fn reserve(&self, table: &str, index: u32, count: u32) -> bool {
        let share = self.fair_share(count);
        let mut held = self.held();
        let mine = held.entry(table.to_string()).or_default();
        if mine.contains(&index) {
            return true;
        }
        if mine.len() as u32 >= share {
            return false;
        }
        mine.insert(index);
        true
    }

    /// Forgets shard `index` of `table` (given up, lost, or not taken after all).
    pub fn release(&self, table: &str, index: u32) {
        if let Some(mine) = self.held().get_mut(table) {
            mine.remove(&index);
        }
    }

    /// True (and the shard forgotten) when this replica holds more than its fair share of
    /// `table` and `index` is the highest shard it holds: that poller gives its lease up.
    pub fn should_give_up(&self, table: &str, index: u32, count: u32) -> bool {
        let share = self.fair_share(count);
        let mut held = self.held();
        let Some(mine) = held.get_mut(table) else {
            return false;
        };
        if mine.len() as u32 > share && mine.last() == Some(&index) {
            mine.remove(&index);
            return true;
        }
        false
    }

    /// The replica holding the poller lease `name` at the last read, if any.
    pub fn holder(&self, name: &str) -> Option<String> {
        self.holders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// One membership pass: renews this replica's lease, then reads who is live and who
    /// holds each poller lease. Errors are logged and leave the last view in place.
    pub async fn refresh(&self, source: &dyn Source, ttl: Duration) {
        let name = format!("{REPLICA_LEASE_PREFIX}{}", self.replica);
        if let Err(e) = source.try_lease(&name, &self.replica, ttl, None).await {
            tracing::warn!(error = %e, "cannot renew this replica's membership lease; retrying");
        }
        match source.leases(REPLICA_LEASE_PREFIX).await {
            Ok(leases) => {
                let live = leases
                    .iter()
                    .filter(|l| !l.remaining.is_zero() || l.holder == self.replica)
                    .count()
                    .max(1);
                let before = self.live.swap(live, Ordering::Relaxed);
                if before != live {
                    tracing::info!(live, "replicas polling this source changed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the replicas' leases; retrying"),
        }
        match source.leases(POLLER_LEASE_PREFIX).await {
            Ok(leases) => {
                let holders = leases
                    .into_iter()
                    .filter(|l| !l.remaining.is_zero())
                    .map(|l| (l.name, l.holder))
                    .collect();
                *self.holders.lock().unwrap_or_else(|e| e.into_inner()) = holders;
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the pollers' leases; retrying"),
        }
    }

    /// Refreshes every third of `ttl` until `shutdown`, then gives the membership lease up
    /// so the others' share grows at once.
    pub async fn run(
        self: Arc<Self>,
        source: Arc<dyn Source>,
        ttl: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut ticker = tokio::time::interval(ttl / 3);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.refresh(source.as_ref(), ttl).await,
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        let name = format!("{REPLICA_LEASE_PREFIX}{}", self.replica);
        let _ = source.release_lease(&name, &self.replica, None).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fair_share_caps_takes_and_gives_up_the_highest_shard_first() {
        let fleet = Fleet::new("a");
        // Alone: every shard is this replica's share.
        for i in 0..6 {
            assert!(fleet.reserve("t", i, 6));
        }
        fleet.live.store(3, Ordering::Relaxed);
        assert_eq!(fleet.fair_share(6), 2);
        assert!(!fleet.should_give_up("t", 3, 6), "not the highest held");
        assert!(fleet.should_give_up("t", 5, 6));
        assert!(fleet.should_give_up("t", 4, 6));
        assert!(fleet.should_give_up("t", 3, 6));
        assert!(fleet.should_give_up("t", 2, 6));
        assert!(!fleet.should_give_up("t", 1, 6), "at its share");
        assert!(!fleet.reserve("t", 4, 6), "no take above the share");
        // A replica dies: the share grows and a free shard may be taken.
        fleet.live.store(2, Ordering::Relaxed);
        assert!(fleet.reserve("t", 4, 6));
        fleet.release("t", 4);
        assert!(fleet.reserve("t", 5, 6));
        // Seven shards over three replicas: shares of three cover them all.
        assert_eq!(Fleet::new("b").fair_share(7), 7);
        let f = Fleet::new("c");
        f.live.store(3, Ordering::Relaxed);
        assert_eq!(f.fair_share(7), 3);
        assert_eq!(f.fair_share(1), 1);
    }
}
