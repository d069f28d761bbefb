//! The poller: publishes every newly committed row of one table to its ledger topic.
//!
//! Each poll reads inside one snapshot at read point R the rows with
//! `W < (commit_ts, key) <= R`, ordered by (commit_ts, primary key) and paged by that keyset,
//! publishes them in order, and only once every publish is confirmed moves the watermark W
//! to R and persists it. A crash anywhere republishes from the old W: duplicates carry the
//! same event id, nothing is skipped.
//!
//! Progress with the page: each page goes to the ledger through [`Ledger::publish_page`]
//! with a progress record (module `progress` below): the poll's W, and, while the snapshot is
//! not finished, the keyset position (commit_ts, key) of the page's last row. The embedded
//! ledger writes it in the page's own transaction, so after any crash (SIGKILL, OS crash,
//! power cut) the stored progress covers exactly the pages the ledger kept; a restart reads
//! it back ([`Ledger::progress`]) and resumes from that position in a new snapshot. Pub/Sub
//! stores nothing: W moves to R (file, lease) only after every publish is confirmed.
//!
//! Why resuming from a position p = (t, k) of snapshot R1 in a later snapshot R2 is
//! gap-free and republishes at most one page: every row at or before p in (commit_ts, key)
//! order has commit_ts <= t <= R1, and the commit clock gives every commit after R1's
//! snapshot a commit_ts > R1, so no row at or before p appears later; those rows were all
//! read in R1's snapshot on pages up to p's, which are on the ledger with p (same
//! transaction). Rows after p with commit_ts <= R2 are read by the resumed poll. So nothing
//! is skipped; what is republished is at most the page in flight when the crash came (none
//! on the embedded ledger, one on a ledger that confirms the page before the poller can
//! persist its progress).
//!
//! Shards: a table with `shards = N` has N pollers per replica, one per shard, each with
//! its own lease (`poller/<table>.shard-<i>-of-<N>`), progress record and watermark, and
//! reading only its shard's rows ([`ledgerhost_core::source::Snapshot::shard_page`]); the argument above holds per
//! shard, since a shard's rows are a fixed subset of the table's and every key stays in one
//! shard. The replicas share the leases out through [`fleet::Fleet`].
//!
//! Pipelining: while page N is written the poll encodes page N+1 (into one
//! [`ledgerhost_core::ledger::Batch`]) and reads page N+2 (two pages ahead, bounded by
//! construction). Writes are still one at a time and in page order, each with its own
//! progress record, so the argument above holds unchanged: a page read ahead is not stored
//! anywhere until its own write, and a failed write ends the poll before any page after
//! those is read. A read or encoding error is returned only after the write in flight has
//! finished, so the progress it stored is kept.
//!
//! The parts: this file (the poller, its settings and errors, the lease-and-tick loop),
//! `lease` (taking and keeping the table's lease), `resume` (where a poll starts after a
//! restart, a takeover or a lost topic), `page` (one poll: pages read, encoded and written
//! with their progress), `progress` (the progress record's format), [`fleet`] (the
//! replicas' fair share of shard leases), `stream` and `stream_read` (a table captured by
//! change stream instead: its pages from the source's change stream reader), [`partitions`]
//! (every replica's share of the partitions of a stream read with `share-partitions`).

pub mod fleet;
mod lease;
mod page;
pub mod partitions;
mod progress;
mod resume;
mod stream;
mod stream_read;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::config::StartFrom;
use crate::metrics::TableStats;
use crate::watermark::{WatermarkError, WatermarkStore};
use fleet::Fleet;
use ledgerhost_avro::Encoder;
use ledgerhost_core::ledger::Ledger;
use ledgerhost_core::ledger::ordering::Ordering as OrderingRule;
use ledgerhost_core::source::{Position, Shard, Source, TableSpec};
use ledgerhost_core::{PortError, TableSchema};
use tokio::sync::watch;
use tokio::time::Instant;

/// Why a poll failed. Transient errors are retried on the next tick; the others stop the table.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The source or the ledger failed.
    #[error("table {table}: {source}")]
    Port {
        /// The table being polled.
        table: String,
        /// The port's error.
        source: PortError,
    },
    /// A row could not be encoded as an Avro object container.
    #[error("table {table}: cannot encode row as Avro: {message}")]
    Encode {
        /// The table being polled.
        table: String,
        /// The encoder's error.
        message: String,
    },
    /// The table's schema changed in a way its Avro schema cannot follow.
    #[error(
        "table {table}: incompatible schema change, polling stopped: {message}. Make the change \
         compatible (add nullable columns, drop nullable non-key columns) or move the table to \
         a new name, then restart"
    )]
    Incompatible {
        /// The table being polled.
        table: String,
        /// Which change is incompatible.
        message: String,
    },
    /// The table's watermark file could not be read or written.
    #[error(transparent)]
    Watermark(#[from] WatermarkError),
    /// The progress record the ledger holds for the table cannot be read.
    #[error(
        "table {table}: the ledger's progress record {record:?} is unreadable ({message}); \
         with the host stopped, delete it (embedded: `DELETE FROM progress WHERE tbl = \
         '{table}'` in ledger.db) to resume from the watermark file or the table's `start`"
    )]
    Progress {
        /// The table being polled.
        table: String,
        /// The stored record.
        record: String,
        /// What is wrong with it.
        message: String,
    },
}

impl PollError {
    /// True when the next tick may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            PollError::Port { source, .. } => source.is_transient(),
            PollError::Watermark(_) => true,
            _ => false,
        }
    }
}

/// Settings of one table's poller.
#[derive(Debug, Clone)]
pub struct PollerSettings {
    /// The table to poll: name, columns, key and commit-timestamp column.
    pub spec: TableSpec,
    /// Ledger topic the table's events are published to.
    pub topic: String,
    /// Time between polls when the last poll found no new rows.
    pub interval: Duration,
    /// Most rows read per source query.
    pub page_size: usize,
    /// Where to start when the table has no watermark yet.
    pub start: StartFrom,
    /// This replica's id, for the table's lease.
    pub replica: String,
    /// How long the table's lease lasts without renewal.
    pub lease_ttl: Duration,
    /// How ordering keys derive from primary keys (the ledger's `[ledger] ordering`).
    pub ordering: OrderingRule,
    /// The shard of the table this poller reads ([`Shard::WHOLE`] when unsharded).
    pub shard: Shard,
}

/// One table's poller.
pub struct Poller {
    settings: PollerSettings,
    source: Arc<dyn Source>,
    ledger: Arc<dyn Ledger>,
    watermarks: WatermarkStore,
    stats: Arc<TableStats>,
    /// Schema and encoder of the last poll, to detect drift.
    current: Option<(TableSchema, Encoder)>,
    watermark: Option<i64>,
    /// The first watermark this process resumed from: where a lost topic is re-published
    /// from when `start = "now"`.
    first_watermark: Option<i64>,
    /// The ledger's generation of the topic when last published to (see
    /// [`Ledger::topic_generation`]).
    generation: Option<u64>,
    /// The progress stored with the table's lease when this replica took it: where the
    /// previous holder (maybe another replica) got to.
    lease_progress: Option<i64>,
    /// Within an unfinished poll: the keyset position up to which the ledger holds the
    /// table's rows (stored with the page it came from), where the next poll resumes.
    resume_after: Option<Position>,
    /// The fleet view that caps this replica's share of a sharded table's leases.
    fleet: Option<Arc<Fleet>>,
    /// The change stream the table is read from (`capture = "change-stream"`); `None`
    /// when it is polled by commit timestamp.
    stream: Option<stream_read::StreamCapture>,
}

impl Poller {
    /// A poller; nothing happens until [`Poller::run`] or [`Poller::poll_once`].
    pub fn new(
        settings: PollerSettings,
        source: Arc<dyn Source>,
        ledger: Arc<dyn Ledger>,
        watermarks: WatermarkStore,
        stats: Arc<TableStats>,
    ) -> Self {
        Poller {
            settings,
            source,
            ledger,
            watermarks,
            stats,
            current: None,
            watermark: None,
            first_watermark: None,
            generation: None,
            lease_progress: None,
            resume_after: None,
            fleet: None,
            stream: None,
        }
    }

    /// Reads the table's changes from the change stream `stream` of `port` instead of
    /// polling it by commit timestamp.
    pub fn with_change_stream(
        mut self,
        port: Arc<dyn ledgerhost_core::change::ChangeCapture>,
        stream: String,
    ) -> Self {
        let _ = self.stats.change_stream.set(stream.clone());
        self.stream = Some(stream_read::StreamCapture::new(port, stream));
        self
    }

    /// The change stream's partitions are queried by every replica's [`PartitionReads`]
    /// and merged here while this poller holds the table's lease.
    ///
    /// [`PartitionReads`]: partitions::PartitionReads
    pub fn with_shared_partitions(mut self) -> Self {
        if let Some(capture) = &mut self.stream {
            capture.shared = true;
        }
        self
    }

    /// Takes this shard's lease only within the replica's fair share (see [`Fleet`]), and
    /// gives it up when the replica holds more than its share.
    pub fn with_fleet(mut self, fleet: Arc<Fleet>) -> Self {
        self.fleet = Some(fleet);
        self
    }

    /// The name of what this poller owns: the table, or `<table>.shard-<i>-of-<n>`.
    fn unit(&self) -> String {
        self.settings.shard.unit_name(self.table())
    }

    fn table(&self) -> &str {
        &self.settings.spec.name
    }

    fn port_err(&self, source: PortError) -> PollError {
        PollError::Port {
            table: self.table().to_string(),
            source,
        }
    }

    /// Polls at the configured interval until `shutdown` turns true, while this replica
    /// holds the table's lease. Returns early only on a non-transient error (incompatible
    /// schema change), which the caller reports.
    ///
    /// Lease cadence (each step one source transaction, counted in `/metrics`):
    /// - holding it: renewed (read-write, carrying the watermark of the last completed poll)
    ///   at most every third of the TTL, so a failed renewal leaves two thirds of the TTL to
    ///   retry; the table is polled only while the last renewal is younger than two thirds
    ///   of the TTL;
    /// - not holding it: read without a read-write transaction ([`Source::read_lease`]) at
    ///   most every third of the TTL and when it is due to expire, and taken (read-write)
    ///   only once the read shows it expired or released;
    /// - at shutdown: released with the final watermark (one read-write transaction).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), PollError> {
        let mut ticker = tokio::time::interval(self.settings.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ttl = self.settings.lease_ttl;
        let renew_every = ttl / 3;
        // Holding the lease: when it was last taken or renewed (the start of that
        // transaction, so the lease is known to last at least until then + ttl).
        let mut renewed_at: Option<Instant> = None;
        // Not holding it: when to read it again.
        let mut next_read = Instant::now();
        // After a failed renewal: not retried before this (the next tick).
        let mut renew_not_before = Instant::now();
        loop {
            // A renewal may fall due between two ticks when the interval is long.
            let renew_due = renewed_at.map(|at| (at + renew_every).max(renew_not_before));
            let tick = tokio::select! {
                _ = ticker.tick() => true,
                _ = sleep_until_or_forever(renew_due) => false,
                changed = shutdown.changed() => {
                    // Nobody can stop us any more once the sender is gone: stop now.
                    if changed.is_err() {
                        break;
                    }
                    false
                }
            };
            if *shutdown.borrow() {
                break;
            }
            if tick && let Some(fleet) = &self.fleet {
                *self.stats.holder.lock().unwrap_or_else(|p| p.into_inner()) =
                    fleet.holder(&self.lease_name());
            }
            if let Some(at) = renewed_at {
                if at.elapsed() >= renew_every && Instant::now() >= renew_not_before {
                    let started = Instant::now();
                    match self
                        .source
                        .try_lease(
                            &self.lease_name(),
                            &self.settings.replica,
                            ttl,
                            self.watermark,
                        )
                        .await
                    {
                        Ok(lease) if lease.held => renewed_at = Some(started),
                        Ok(lease) => {
                            tracing::warn!(table = self.table(), shard = %self.unit(), "lost the poller lease");
                            self.leave_fleet();
                            renewed_at = None;
                            self.stats.leader.store(0, Ordering::Relaxed);
                            next_read = Instant::now() + lease.remaining.min(renew_every);
                            continue;
                        }
                        Err(e) => {
                            self.stats.poll_errors.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(table = self.table(), error = %e, "cannot renew the poller lease; retrying");
                            renew_not_before =
                                Instant::now() + self.settings.interval.min(renew_every);
                            if at.elapsed() >= ttl {
                                tracing::warn!(
                                    table = self.table(),
                                    "the poller lease may have expired: stopped polling until it is taken again"
                                );
                                renewed_at = None;
                                self.leave_fleet();
                                self.stats.leader.store(0, Ordering::Relaxed);
                                continue;
                            }
                        }
                    }
                }
            } else {
                if !tick || Instant::now() < next_read {
                    continue;
                }
                if !self.take_lease_if_free(ttl, &mut next_read).await {
                    continue;
                }
                renewed_at = Some(next_read);
            }
            let Some(at) = renewed_at else { continue };
            if tick
                && let Some(fleet) = &self.fleet
                && fleet.should_give_up(
                    self.table(),
                    self.settings.shard.index,
                    self.settings.shard.count,
                )
            {
                // Logged before the release, so in the log this replica's hold of the shard
                // ends before another's begins.
                tracing::info!(
                    table = self.table(),
                    shard = %self.unit(),
                    share = fleet.fair_share(self.settings.shard.count),
                    "giving the shard lease up: this replica holds more than its fair share"
                );
                if let Err(e) = self
                    .source
                    .release_lease(&self.lease_name(), &self.settings.replica, self.watermark)
                    .await
                {
                    tracing::warn!(table = self.table(), error = %e, "cannot release the shard lease; it expires after its TTL");
                }
                renewed_at = None;
                self.stats.leader.store(0, Ordering::Relaxed);
                next_read = Instant::now() + renew_every;
                continue;
            }
            if !tick || at.elapsed() >= ttl * 2 / 3 {
                // Not a poll tick, or the lease is too close to its expiry to start a poll.
                continue;
            }
            match self.poll_once().await {
                Ok(_) => {}
                Err(e) if e.is_transient() => {
                    self.stats.poll_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(table = self.table(), error = %e, "poll failed; retrying next tick");
                }
                Err(e) => {
                    self.stats.poll_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(table = self.table(), error = %e, "poller stopped");
                    *self.stats.stopped.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(e.to_string());
                    // The lease is left to expire: this replica no longer polls the table.
                    self.stats.leader.store(0, Ordering::Relaxed);
                    self.leave_fleet();
                    return Err(e);
                }
            }
        }
        if renewed_at.is_some() {
            // Record the final watermark and let another replica take over at once.
            let _ = self
                .source
                .release_lease(&self.lease_name(), &self.settings.replica, self.watermark)
                .await;
        }
        Ok(())
    }
}

/// Sleeps until `at`, or forever when `None`.
async fn sleep_until_or_forever(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
