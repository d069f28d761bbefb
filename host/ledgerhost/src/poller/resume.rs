//! Where a poll starts: the progress the ledger stored with its last page, the lease's or
//! the watermark file's copy, an earlier shard layout's, or the table's `start`; and the
//! rewind that republishes after the ledger lost the topic.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use ledgerhost_core::ledger::attr;
use ledgerhost_core::source::Shard;

use crate::config::StartFrom;
use crate::metrics::now_micros;

use super::fleet::POLLER_LEASE_PREFIX;
use super::progress;
use super::{PollError, Poller};

impl Poller {
    /// The watermark to resume from: the ledger's own progress record, else the progress
    /// stored with the lease (shared by every replica), else the local file, else where an
    /// earlier shard layout of the table got to, else (unsharded) the ledger's newest
    /// message, else the configured start.
    pub(super) async fn resume_point(&mut self) -> Result<i64, PollError> {
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
    pub(super) fn bootstrap(&mut self, table: &str) -> i64 {
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
    pub(super) async fn earlier_layout_progress(&self) -> Result<Option<i64>, PollError> {
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

    /// The start of every tick: the topic exists (created on the first), and if the ledger
    /// lost it since the last tick the watermark is rewound. Returns the topic's generation
    /// now and whether it rewound.
    pub(super) async fn topic_ready(&mut self) -> Result<(u64, bool), PollError> {
        if self.current.is_none() {
            self.ledger
                .ensure_topic(&self.settings.topic)
                .await
                .map_err(|e| self.port_err(e))?;
        }
        let generation = self.ledger.topic_generation(&self.settings.topic);
        let rewound = self.generation.is_some_and(|g| g != generation);
        if rewound {
            self.rewind("before this poll").await?;
        }
        self.generation = Some(generation);
        Ok((generation, rewound))
    }

    /// Moves the watermark back to the start point after the ledger lost the topic's
    /// messages (the next poll re-publishes; duplicates keep their event ids). Persisted at
    /// once, so a crash before the re-publish does not resume past the lost messages.
    pub(super) async fn rewind(&mut self, when: &str) -> Result<(), PollError> {
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
            .publish_page(&self.settings.topic, Default::default(), &record)
            .await
            .map_err(|e| self.port_err(e))?;
        self.watermark = Some(to);
        self.resume_after = None;
        self.stats.republishes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
