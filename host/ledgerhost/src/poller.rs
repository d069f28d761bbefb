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
//! reading only its shard's rows ([`Snapshot::shard_page`]); the argument above holds per
//! shard, since a shard's rows are a fixed subset of the table's and every key stays in one
//! shard. The replicas share the leases out through [`fleet::Fleet`].
//!
//! Pipelining: the poll reads and encodes page N+1 while page N is written (one page
//! ahead, bounded by construction). Writes are still one at a time and in page order, each
//! with its own progress record, so the argument above holds unchanged: a page read ahead
//! is not stored anywhere until its own write, and a failed write ends the poll before the
//! page after the one read ahead is read. A read error is returned only after the write in
//! flight has finished, so the progress it stored is kept.

pub mod fleet;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ledgerhost_avro::Encoder;
use ledgerhost_core::ledger::ordering::Ordering as OrderingRule;
use ledgerhost_core::ledger::{Ledger, attr};
use ledgerhost_core::source::{Position, Shard, Snapshot, Source, TableSpec};
use ledgerhost_core::{PortError, TableSchema};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::StartFrom;
use crate::fault;
use crate::metrics::{PollStep, TableStats, now_micros};
use crate::watermark::{WatermarkError, WatermarkStore};
use fleet::{Fleet, POLLER_LEASE_PREFIX};

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
        }
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

    /// Tells the fleet this poller no longer holds its shard.
    fn leave_fleet(&self) {
        if let Some(fleet) = &self.fleet {
            fleet.release(self.table(), self.settings.shard.index);
        }
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

    fn lease_name(&self) -> String {
        format!("{POLLER_LEASE_PREFIX}{}", self.unit())
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

    /// Reads the lease (no read-write transaction) and takes it only if it is free, expired
    /// or already this replica's. True once taken; then `when` is the start of the taking
    /// transaction. Otherwise `when` is when to read it again: when the holder's lease
    /// expires, or after a third of the TTL (a release frees it early), whichever is first.
    async fn take_lease_if_free(&mut self, ttl: Duration, when: &mut Instant) -> bool {
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

    /// The watermark to resume from: the ledger's own progress record, else the progress
    /// stored with the lease (shared by every replica), else the local file, else where an
    /// earlier shard layout of the table got to, else (unsharded) the ledger's newest
    /// message, else the configured start.
    async fn resume_point(&mut self) -> Result<i64, PollError> {
        if let Some(w) = self.watermark {
            return Ok(w);
        }
        let table = self.unit();
        let stored = self
            .ledger
            .progress(&table)
            .await
            .map_err(|e| self.port_err(e))?;
        if let Some(record) = stored {
            // The ledger's own record is the only one that cannot stand past its messages
            // (written in the transaction of the page it covers): preferred to the lease's
            // and the file's, which a power cut may have left ahead of it.
            let (w, at) = progress::decode(&record).map_err(|message| PollError::Progress {
                table: table.clone(),
                record: record.clone(),
                message,
            })?;
            self.lease_progress = None;
            tracing::info!(
                table,
                watermark = w,
                mid_poll = at.is_some(),
                "resuming from the progress stored in the ledger"
            );
            self.watermark = Some(w);
            self.resume_after = at;
            return Ok(w);
        }
        if let Some(w) = self.lease_progress.take() {
            // Preferred over the local file, which may be another era's: this replica may
            // have polled before, then lost the lease while others went on (or rewound).
            tracing::info!(
                table,
                watermark = w,
                "resuming from the watermark stored with the lease"
            );
            self.watermark = Some(w);
            return Ok(w);
        }
        if let Some(w) = self.watermarks.load(&table)? {
            tracing::info!(table, watermark = w, "resuming from the local watermark");
            self.watermark = Some(w);
            return Ok(w);
        }
        if let Some(w) = self.earlier_layout_progress().await? {
            tracing::info!(
                table,
                watermark = w,
                "resuming from where the table's earlier shard layout got to"
            );
            self.watermark = Some(w);
            return Ok(w);
        }
        if !self.settings.shard.is_whole() {
            // The topic's newest message may come from a shard further ahead than this one.
            return Ok(self.bootstrap(&table));
        }
        let last = self
            .ledger
            .last_message(&self.settings.topic)
            .await
            .map_err(|e| self.port_err(e))?;
        if let Some(ts) = last
            .as_ref()
            .and_then(|m| m.attributes.get(attr::COMMIT_TS))
            .and_then(|ts| ts.parse::<i64>().ok())
        {
            // Rows sharing the last timestamp may not all have been published before the
            // state was lost: republish that timestamp (duplicates keep their ids).
            let w = ts - 1;
            tracing::warn!(
                table,
                watermark = w,
                "local watermark lost; recovered it from the ledger's newest message"
            );
            self.watermark = Some(w);
            return Ok(w);
        }
        Ok(self.bootstrap(&table))
    }

    /// The configured start, adopted as the watermark when nothing says where to resume.
    fn bootstrap(&mut self, table: &str) -> i64 {
        let w = match self.settings.start {
            StartFrom::Beginning => i64::MIN,
            StartFrom::Now => now_micros(),
            StartFrom::At(t) => t,
        };
        tracing::info!(table, watermark = w, start = ?self.settings.start, "no watermark yet: bootstrapping");
        self.watermark = Some(w);
        w
    }

    /// After the table's shard count changed: a watermark every row of this shard was
    /// published up to, from the leases of the table's other layouts. A layout counts only
    /// when each of its shards stored progress (then its lowest is such a watermark: every
    /// row, whichever shard it fell in then, is at or below it); of those, the highest.
    async fn earlier_layout_progress(&self) -> Result<Option<i64>, PollError> {
        let table = self.table();
        let leases = self
            .source
            .leases(&format!("{POLLER_LEASE_PREFIX}{table}"))
            .await
            .map_err(|e| self.port_err(e))?;
        let mut layouts: BTreeMap<u32, BTreeMap<u32, i64>> = BTreeMap::new();
        for lease in leases {
            let Some((index, count)) = lease
                .name
                .strip_prefix(POLLER_LEASE_PREFIX)
                .and_then(|unit| Shard::parse_unit_name(table, unit))
            else {
                continue;
            };
            if let (Some(w), true) = (lease.progress, count != self.settings.shard.count) {
                layouts.entry(count).or_default().insert(index, w);
            }
        }
        Ok(layouts
            .into_iter()
            .filter(|(count, shards)| shards.len() as u32 == *count)
            .filter_map(|(_, shards)| shards.into_values().min())
            .max())
    }

    /// One poll: publishes every row committed after the watermark, then advances it.
    /// Returns the number of rows published.
    pub async fn poll_once(&mut self) -> Result<u64, PollError> {
        let started = now_micros();
        let result = self.poll_inner().await;
        // One line per poll: which replica polled which shard when (the e2e test checks from
        // these that no shard is polled by two replicas at once).
        tracing::debug!(
            table = self.table(),
            shard = %self.unit(),
            replica = %self.settings.replica,
            started_micros = started,
            ended_micros = now_micros(),
            rows = result.as_ref().map_or(0, |n| *n),
            ok = result.is_ok(),
            "poll"
        );
        result
    }

    async fn poll_inner(&mut self) -> Result<u64, PollError> {
        let table = self.unit();
        if self.current.is_none() {
            self.ledger
                .ensure_topic(&self.settings.topic)
                .await
                .map_err(|e| self.port_err(e))?;
        }
        let generation = self.ledger.topic_generation(&self.settings.topic);
        if self.generation.is_some_and(|g| g != generation) {
            self.rewind("before this poll").await?;
        }
        self.generation = Some(generation);
        let w = self.resume_point().await?;
        self.first_watermark.get_or_insert(w);
        let mut snapshot = self.source.snapshot().await.map_err(|e| self.port_err(e))?;
        let r = snapshot.read_ts();
        let schema = snapshot
            .schema(&self.settings.spec)
            .await
            .map_err(|e| self.port_err(e))?;
        self.adopt_schema(schema)?;
        let (schema, encoder) = self.current.as_ref().expect("schema adopted above");

        // Resuming an unfinished poll: the ledger holds every row up to that position.
        let mut after = self
            .resume_after
            .take()
            .unwrap_or_else(|| Position::after_ts(w));
        let mut published = 0u64;
        // Whether the ledger stored the last progress record itself, and whether that record
        // already said "done at R".
        let mut stored_by_ledger = false;
        let mut done_stored = false;
        // Pipelined, one page ahead: while page N is written (a blocking SQLite or network
        // task), page N+1 is read and encoded. Writes stay strictly in order and one at a
        // time, each page with its own progress record, so progress never passes a page
        // whose messages are not durable; a failed write returns before page N+2 is read.
        let page_size = self.settings.page_size;
        let stats = &self.stats;
        let reader = PageReader {
            stats,
            schema,
            shard: &self.settings.shard,
            encoder,
            page_size,
            table: &table,
        };
        let mut next = read_encoded_page(snapshot.as_mut(), &reader, &after).await?;
        while let Some(page) = next.take() {
            after = page.after;
            let full = page.full;
            let n = page.messages.len() as u64;
            // A short page is the snapshot's last: its record says the poll is done at R.
            let record = if full {
                progress::encode(w, Some(&after))
            } else {
                progress::encode(r, None)
            }
            .map_err(|message| PollError::Progress {
                table: table.clone(),
                record: String::new(),
                message,
            })?;
            let record = ledgerhost_core::ledger::Progress {
                table: table.clone(),
                record,
            };
            fault::point(fault::POLL_BEFORE_PUBLISH);
            let publish = async {
                let started = std::time::Instant::now();
                let stored = self
                    .ledger
                    .publish_page(&self.settings.topic, page.messages, &record)
                    .await;
                stats.time_step(PollStep::Publish, started);
                stored
            };
            let (stored, ahead) = if full {
                let (stored, ahead) = tokio::join!(
                    publish,
                    read_encoded_page(snapshot.as_mut(), &reader, &after)
                );
                (stored, Some(ahead))
            } else {
                (publish.await, None)
            };
            stored_by_ledger = stored.map_err(|e| PollError::Port {
                table: table.clone(),
                source: e,
            })?;
            fault::point(fault::POLL_AFTER_PUBLISH);
            done_stored = stored_by_ledger && !full;
            if stored_by_ledger && full {
                // A later failure of this poll resumes here rather than from W.
                self.resume_after = Some(after.clone());
            }
            published += n;
            self.stats.rows_polled.fetch_add(n, Ordering::Relaxed);
            // A read error surfaces only after the page before it is safely written.
            if let Some(ahead) = ahead {
                next = ahead?;
            }
        }
        self.resume_after = None;
        if self.ledger.topic_generation(&self.settings.topic) != generation {
            // The topic was lost while we published: what earlier polls put there is gone.
            self.rewind("while publishing").await?;
            self.generation = Some(self.ledger.topic_generation(&self.settings.topic));
            return Ok(published);
        }
        // Every row up to R is confirmed on the ledger: only now may W move.
        if r > w {
            let started = std::time::Instant::now();
            if !done_stored {
                let record = ledgerhost_core::ledger::Progress {
                    table: table.clone(),
                    record: progress::encode(r, None).map_err(|message| PollError::Progress {
                        table: table.clone(),
                        record: String::new(),
                        message,
                    })?,
                };
                // Nothing to publish: the embedded ledger stores the record alone, others
                // store nothing and the file below holds W.
                stored_by_ledger = self
                    .ledger
                    .publish_page(&self.settings.topic, Vec::new(), &record)
                    .await
                    .map_err(|e| self.port_err(e))?;
            }
            if !stored_by_ledger {
                self.watermarks.store(&table, r)?;
            }
            self.stats.time_step(PollStep::Watermark, started);
            fault::point(fault::POLL_AFTER_WATERMARK);
            self.watermark = Some(r);
            self.stats.watermark.store(r, Ordering::Relaxed);
        }
        if published > 0 {
            tracing::debug!(table, rows = published, watermark = r, "published");
        }
        Ok(published)
    }

    /// Moves the watermark back to the start point after the ledger lost the topic's
    /// messages (the next poll re-publishes; duplicates keep their event ids). Persisted at
    /// once, so a crash before the re-publish does not resume past the lost messages.
    async fn rewind(&mut self, when: &str) -> Result<(), PollError> {
        let to = match self.settings.start {
            StartFrom::Beginning => i64::MIN,
            StartFrom::At(t) => t,
            StartFrom::Now => self.first_watermark.unwrap_or(i64::MIN),
        };
        tracing::warn!(
            table = self.table(),
            topic = %self.settings.topic,
            when,
            from = ?self.watermark,
            to,
            "the ledger lost the topic and its messages; re-publishing from the start point"
        );
        self.watermarks.store(&self.unit(), to)?;
        // A ledger that keeps progress is read first at start: it must say `to` too.
        let record = ledgerhost_core::ledger::Progress {
            table: self.unit(),
            record: progress::encode(to, None).map_err(|message| PollError::Progress {
                table: self.unit(),
                record: String::new(),
                message,
            })?,
        };
        self.ledger
            .publish_page(&self.settings.topic, Vec::new(), &record)
            .await
            .map_err(|e| self.port_err(e))?;
        self.watermark = Some(to);
        self.resume_after = None;
        self.stats.republishes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Switches to a new schema if the table changed, refusing incompatible changes.
    fn adopt_schema(&mut self, schema: TableSchema) -> Result<(), PollError> {
        let table = self.table().to_string();
        if let Some((old, _)) = &self.current {
            if *old == schema {
                return Ok(());
            }
            ledgerhost_avro::check_compatible(old, &schema).map_err(|e| {
                PollError::Incompatible {
                    table: table.clone(),
                    message: e.to_string(),
                }
            })?;
            tracing::info!(
                table,
                "compatible schema change: publishing with the new schema"
            );
        }
        let encoder = Encoder::new(&schema)
            .map_err(|e| PollError::Encode {
                table,
                message: e.to_string(),
            })?
            .with_ordering(self.settings.ordering);
        self.current = Some((schema, encoder));
        Ok(())
    }
}

/// One page read from the snapshot and encoded, ready to publish.
struct EncodedPage {
    messages: Vec<ledgerhost_core::ledger::Message>,
    /// Keyset position of the page's last row.
    after: Position,
    /// The page has `page_size` rows: the snapshot may hold more.
    full: bool,
}

/// What a poll reads its pages with: the shard of the table, its schema and encoder.
struct PageReader<'a> {
    stats: &'a TableStats,
    schema: &'a TableSchema,
    shard: &'a Shard,
    encoder: &'a Encoder,
    page_size: usize,
    /// The table (or shard unit) name, for errors.
    table: &'a str,
}

/// Reads the page after `after` and encodes it; `None` when the snapshot has no more rows.
async fn read_encoded_page(
    snapshot: &mut dyn Snapshot,
    reader: &PageReader<'_>,
    after: &Position,
) -> Result<Option<EncodedPage>, PollError> {
    let PageReader {
        stats,
        schema,
        shard,
        encoder,
        page_size,
        table,
    } = *reader;
    let started = std::time::Instant::now();
    let rows = snapshot
        .shard_page(schema, shard, after, page_size)
        .await
        .map_err(|e| PollError::Port {
            table: table.to_string(),
            source: e,
        })?;
    stats.time_step(PollStep::Read, started);
    let Some(last) = rows.last() else {
        return Ok(None);
    };
    let started = std::time::Instant::now();
    let after = Position {
        commit_ts: last.commit_ts,
        key: schema
            .key_indexes()
            .iter()
            .map(|i| last.values[*i].clone())
            .collect(),
    };
    let messages = rows
        .iter()
        .map(|row| encoder.encode(row))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PollError::Encode {
            table: table.to_string(),
            message: e.to_string(),
        })?;
    stats.time_step(PollStep::Encode, started);
    Ok(Some(EncodedPage {
        messages,
        after,
        full: rows.len() == page_size,
    }))
}

/// Sleeps until `at`, or forever when `None`.
async fn sleep_until_or_forever(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The poller's progress record, as the ledger stores it: JSON
/// `{"w": W, "at": null | {"ts": commit_ts, "key": [[tag, text], …]}}`. `at` is the keyset
/// position of the last stored page of an unfinished poll; `null` means W covers everything.
/// Key values are tagged by type so the position is read back exactly.
mod progress {
    use ledgerhost_core::Value;
    use ledgerhost_core::source::Position;
    use serde_json::{Value as Json, json};

    /// The record of watermark `w` and, mid-poll, the position `at`.
    pub fn encode(w: i64, at: Option<&Position>) -> Result<String, String> {
        let at = match at {
            None => Json::Null,
            Some(p) => {
                let key = p
                    .key
                    .iter()
                    .map(|v| {
                        let (tag, text) = match v {
                            Value::Null => ("null", String::new()),
                            Value::Bool(b) => ("bool", b.to_string()),
                            Value::Int64(n) => ("int64", n.to_string()),
                            Value::Float32(x) => ("float32", x.to_string()),
                            Value::Float64(x) => ("float64", x.to_string()),
                            Value::Numeric(t) => ("numeric", t.clone()),
                            Value::String(t) => ("string", t.clone()),
                            Value::Bytes(b) => {
                                ("bytes", b.iter().map(|x| format!("{x:02x}")).collect())
                            }
                            Value::Date(d) => ("date", d.to_string()),
                            Value::Timestamp(t) => ("timestamp", t.to_string()),
                            Value::Json(t) => ("json", t.clone()),
                            Value::Array(..) => return Err("an array in a primary key".to_string()),
                        };
                        Ok(json!([tag, text]))
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                json!({"ts": p.commit_ts, "key": key})
            }
        };
        Ok(json!({"w": w, "at": at}).to_string())
    }

    /// The watermark and mid-poll position of a record.
    pub fn decode(record: &str) -> Result<(i64, Option<Position>), String> {
        let v: Json = serde_json::from_str(record).map_err(|e| e.to_string())?;
        let w = v["w"].as_i64().ok_or("no integer `w`")?;
        let at = &v["at"];
        if at.is_null() {
            return Ok((w, None));
        }
        let commit_ts = at["ts"].as_i64().ok_or("no integer `at.ts`")?;
        let parts = at["key"].as_array().ok_or("no array `at.key`")?;
        let mut key = Vec::with_capacity(parts.len());
        for part in parts {
            let (Some(tag), Some(text)) = (part[0].as_str(), part[1].as_str()) else {
                return Err(format!("key part {part} is not [tag, text]"));
            };
            let bad = |e: &dyn std::fmt::Display| format!("key part {part}: {e}");
            key.push(match tag {
                "null" => Value::Null,
                "bool" => Value::Bool(text.parse().map_err(|e| bad(&e))?),
                "int64" => Value::Int64(text.parse().map_err(|e| bad(&e))?),
                "float32" => Value::Float32(text.parse().map_err(|e| bad(&e))?),
                "float64" => Value::Float64(text.parse().map_err(|e| bad(&e))?),
                "numeric" => Value::Numeric(text.to_string()),
                "string" => Value::String(text.to_string()),
                "bytes" => Value::Bytes(
                    (0..text.len())
                        .step_by(2)
                        .map(|i| {
                            text.get(i..i + 2)
                                .ok_or_else(|| bad(&"odd hex length"))
                                .and_then(|h| u8::from_str_radix(h, 16).map_err(|e| bad(&e)))
                        })
                        .collect::<Result<_, _>>()?,
                ),
                "date" => Value::Date(text.parse().map_err(|e| bad(&e))?),
                "timestamp" => Value::Timestamp(text.parse().map_err(|e| bad(&e))?),
                "json" => Value::Json(text.to_string()),
                other => return Err(format!("unknown key type `{other}`")),
            });
        }
        Ok((w, Some(Position { commit_ts, key })))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn records_round_trip_every_key_type() {
            let p = Position {
                commit_ts: 17,
                key: vec![
                    Value::Int64(-5),
                    Value::String("a,b/\"".into()),
                    Value::Bytes(vec![0, 255]),
                    Value::Float64(0.1),
                    Value::Bool(true),
                    Value::Date(-3),
                    Value::Timestamp(9),
                    Value::Numeric("1.50".into()),
                    Value::Null,
                ],
            };
            let record = encode(4, Some(&p)).unwrap();
            assert_eq!(decode(&record).unwrap(), (4, Some(p)));
            assert_eq!(
                decode(&encode(i64::MIN, None).unwrap()).unwrap(),
                (i64::MIN, None)
            );
            assert!(decode("{\"w\": 1, \"at\": {\"ts\": 2, \"key\": [[\"x\", \"1\"]]}}").is_err());
            assert!(
                encode(
                    1,
                    Some(&Position {
                        commit_ts: 1,
                        key: vec![Value::Array(ledgerhost_core::ColumnType::Int64, vec![])]
                    })
                )
                .is_err()
            );
        }
    }
}
