//! This replica's share of the partitions of a change stream read with `share-partitions`.
//!
//! The replica holding the table's lease merges the stream: its reader offers every
//! partition it wants read ([`ChangeCapture::read_stream_shared`]). Every replica, that one
//! included, runs a [`PartitionReads`] per such table: every [`POLL`] it reads the offers and
//! the partition leases (`stream/<table>/<partition>`), takes free ones within its fair share
//! of the live replicas ([`Fleet`], as shard leases are shared), starts their queries here
//! ([`ChangeCapture::read_partition`]) and renews its leases every third of the TTL. A
//! partition read stops when its partition ended, when its offer is withdrawn or renewed
//! by a new merging read (another epoch), when its lease is lost, or when this replica holds
//! more than its share; a replica that dies leaves its leases to expire, and the others take
//! those partitions over from where the merging read has received them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ledgerhost_core::change::{ChangeCapture, PartitionOffer, PartitionRead};
use ledgerhost_core::source::Source;
use tokio::sync::watch;
use tokio::time::Instant;

use super::fleet::Fleet;
use crate::metrics::TableStats;

/// How often the offers and partition leases are read (a new partition waits at most this
/// long for a replica to query it, and holds the stream's watermark back meanwhile).
pub const POLL: Duration = Duration::from_millis(200);

/// Prefix of the partition leases of `table`.
pub fn lease_prefix(table: &str) -> String {
    format!("stream/{table}/")
}

/// A partition query running here.
struct Running {
    offer: PartitionOffer,
    read: Box<dyn PartitionRead>,
    renewed: Instant,
}

/// One replica's partition reads of one table (see the module docs).
pub struct PartitionReads {
    table: String,
    stream: String,
    port: Arc<dyn ChangeCapture>,
    source: Arc<dyn Source>,
    fleet: Arc<Fleet>,
    replica: String,
    ttl: Duration,
    stats: Arc<TableStats>,
    running: BTreeMap<String, Running>,
    /// Partitions whose query ended here, by id and offer epoch: not taken again while the
    /// merging read has not withdrawn their offer yet.
    ended: BTreeSet<(String, i64)>,
    /// Ticks in a row that could not read the offers or leases (logged on the first and
    /// every [`LOG_EVERY`]th).
    failing: u32,
}

/// While reading the offers or leases keeps failing, one warning per this many ticks.
const LOG_EVERY: u32 = 25;

/// The fleet's slot of a partition: the first 32 bits of its id (`root` is 0).
fn slot(id: &str) -> u32 {
    id.get(..8)
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .unwrap_or(0)
}

impl PartitionReads {
    /// The partition reads of `table`'s `stream` on `replica`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        table: &str,
        stream: &str,
        port: Arc<dyn ChangeCapture>,
        source: Arc<dyn Source>,
        fleet: Arc<Fleet>,
        replica: &str,
        ttl: Duration,
        stats: Arc<TableStats>,
    ) -> PartitionReads {
        PartitionReads {
            table: table.to_string(),
            stream: stream.to_string(),
            port,
            source,
            fleet,
            replica: replica.to_string(),
            ttl,
            stats,
            running: BTreeMap::new(),
            ended: BTreeSet::new(),
            failing: 0,
        }
    }

    fn fleet_key(&self) -> String {
        lease_prefix(&self.table)
    }

    fn lease_name(&self, id: &str) -> String {
        format!("{}{id}", lease_prefix(&self.table))
    }

    /// Reads partitions until `shutdown`, then gives every lease up so the other replicas
    /// take the partitions over at once.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(POLL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.tick().await,
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        let ids: Vec<String> = self.running.keys().cloned().collect();
        for id in ids {
            self.stop(&id, "the host stops").await;
        }
    }

    /// Stops the read of partition `id` and gives its lease up.
    async fn stop(&mut self, id: &str, why: &str) {
        if self.running.remove(id).is_none() {
            return;
        }
        self.fleet.release(&self.fleet_key(), slot(id));
        self.stats
            .partitions_queried
            .store(self.running.len() as u64, Ordering::Relaxed);
        tracing::info!(table = %self.table, partition = id, why, "stopped reading a change stream partition");
        if let Err(e) = self
            .source
            .release_lease(&self.lease_name(id), &self.replica, None)
            .await
        {
            tracing::debug!(table = %self.table, partition = id, error = %e, "cannot give a partition lease up; it expires");
        }
    }

    async fn tick(&mut self) {
        let read = async {
            let offers = self.port.partition_offers(&self.table).await?;
            let leases = self.source.leases(&lease_prefix(&self.table)).await?;
            Ok::<_, ledgerhost_core::PortError>((offers, leases))
        };
        let (offers, leases) = match read.await {
            Ok(read) => {
                self.failing = 0;
                read
            }
            Err(e) => {
                if self.failing.is_multiple_of(LOG_EVERY) {
                    tracing::warn!(table = %self.table, error = %e, failed_ticks = self.failing + 1,
                                   "cannot read the change stream partitions offered or their leases; retrying");
                }
                self.failing += 1;
                return;
            }
        };
        let prefix = lease_prefix(&self.table);
        let holders: BTreeMap<String, String> = leases
            .into_iter()
            .filter(|l| !l.remaining.is_zero())
            .filter_map(|l| {
                let id = l.name.strip_prefix(&prefix)?.to_string();
                Some((id, l.holder))
            })
            .collect();
        *self
            .stats
            .partition_holders
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = offers
            .iter()
            .filter_map(|o| Some((o.token.clone(), holders.get(&o.id)?.clone())))
            .collect();
        let count = u32::try_from(offers.len()).unwrap_or(u32::MAX).max(1);
        let offered: BTreeMap<&str, &PartitionOffer> =
            offers.iter().map(|o| (o.id.as_str(), o)).collect();

        // The reads running here: ended, failed, withdrawn, re-offered, above the share.
        let ids: Vec<String> = self.running.keys().cloned().collect();
        for id in ids {
            let why = {
                let r = self.running.get_mut(&id).expect("listed above");
                match (r.read.finished(), offered.get(id.as_str())) {
                    (Some(Ok(())), _) => {
                        self.ended.insert((id.clone(), r.offer.epoch));
                        Some("the partition ended".to_string())
                    }
                    (Some(Err(e)), _) => Some(format!("its query failed: {e}")),
                    (None, None) => Some("its offer was withdrawn".to_string()),
                    (None, Some(o)) if o.epoch != r.offer.epoch => {
                        Some("a new merging read offered it again".to_string())
                    }
                    (None, Some(_)) => None,
                }
            };
            if let Some(why) = why {
                self.stop(&id, &why).await;
                continue;
            }
            if self
                .fleet
                .should_give_up(&self.fleet_key(), slot(&id), count)
            {
                self.stop(&id, "this replica holds more than its fair share")
                    .await;
                continue;
            }
            let renewed = self.running.get(&id).map(|r| r.renewed);
            if renewed.is_some_and(|at| at.elapsed() >= self.ttl / 3) {
                match self
                    .source
                    .try_lease(&self.lease_name(&id), &self.replica, self.ttl, None)
                    .await
                {
                    Ok(l) if l.held => {
                        if let Some(r) = self.running.get_mut(&id) {
                            r.renewed = Instant::now();
                        }
                    }
                    Ok(_) => self.stop(&id, "its lease was taken over").await,
                    Err(e) => {
                        tracing::warn!(table = %self.table, partition = id, error = %e, "cannot renew a partition lease; retrying")
                    }
                }
            }
        }

        // Free partitions, within this replica's share.
        self.ended
            .retain(|(id, epoch)| offered.get(id.as_str()).is_some_and(|o| o.epoch == *epoch));
        for offer in &offers {
            if self.running.contains_key(&offer.id)
                || self.ended.contains(&(offer.id.clone(), offer.epoch))
                || holders.get(&offer.id).is_some_and(|h| *h != self.replica)
            {
                continue;
            }
            if !self
                .fleet
                .reserve(&self.fleet_key(), slot(&offer.id), count)
            {
                break;
            }
            let taken = self
                .source
                .try_lease(&self.lease_name(&offer.id), &self.replica, self.ttl, None)
                .await;
            match taken {
                Ok(l) if l.held => {}
                Ok(_) => {
                    self.fleet.release(&self.fleet_key(), slot(&offer.id));
                    continue;
                }
                Err(e) => {
                    self.fleet.release(&self.fleet_key(), slot(&offer.id));
                    tracing::warn!(table = %self.table, partition = %offer.id, error = %e, "cannot take a partition lease; retrying");
                    continue;
                }
            }
            match self
                .port
                .read_partition(&self.stream, &self.table, offer)
                .await
            {
                Ok(read) => {
                    tracing::info!(table = %self.table, partition = %offer.id, from = offer.start, "reading a change stream partition for the shared read");
                    self.running.insert(
                        offer.id.clone(),
                        Running {
                            offer: offer.clone(),
                            read,
                            renewed: Instant::now(),
                        },
                    );
                    self.stats
                        .partitions_queried
                        .store(self.running.len() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    self.fleet.release(&self.fleet_key(), slot(&offer.id));
                    let _ = self
                        .source
                        .release_lease(&self.lease_name(&offer.id), &self.replica, None)
                        .await;
                    tracing::warn!(table = %self.table, partition = %offer.id, error = %e, "cannot start a partition query; retrying");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_s_fleet_slot_comes_from_its_id() {
        assert_eq!(slot("root"), 0);
        assert_eq!(slot("00000001ffffffff"), 1);
        assert_eq!(slot("ffffffff00000000"), u32::MAX);
        assert_eq!(lease_prefix("accounts"), "stream/accounts/");
    }
}
