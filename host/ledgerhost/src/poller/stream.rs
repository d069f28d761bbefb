//! A table captured by change stream: the poller's lease, topic and ledger writes as for a
//! polled table, its pages read from the source's [`ChangeCapture`] instead of snapshots.
//!
//! A page's rows leave in commit order (the reader merges the stream's partitions up to their
//! low watermark) and go to the ledger with the reader's progress record, as a poll's pages
//! do: the embedded ledger stores it in the page's transaction and a restart resumes exactly
//! after the page; on Pub/Sub the watermark (every change at or before it published) moves,
//! in the file and with the lease, only after the page is confirmed, and a restart reads the
//! stream again from just after it (changes at later times published twice keep their
//! event ids). The reader lives across ticks (its partition queries stream); it is dropped
//! with the lease, after an error and when the ledger lost the topic, and opened again from
//! the stored progress.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ledgerhost_core::change::{ChangePage, StreamStart};
use ledgerhost_core::ledger::Progress;

use crate::config::StartFrom;
use crate::fault;
use crate::metrics::{PollStep, now_micros};

use super::page::encode_rows;
use super::progress;
use super::stream_read::QUIET_PROGRESS_EVERY;
use super::{PollError, Poller};

impl Poller {
    /// Publishes the changes the stream released since the last tick, waiting up to the
    /// poll interval for the first. Returns the number of rows published.
    pub(super) async fn stream_inner(&mut self) -> Result<u64, PollError> {
        let result = self.stream_pages().await;
        if result.is_err() {
            self.stop_stream();
        }
        result
    }

    /// Stops reading the change stream (its partition queries); the next tick, if this
    /// replica holds the lease, opens it again from the stored progress.
    pub(super) fn stop_stream(&mut self) {
        if let Some(capture) = &mut self.stream {
            capture.stop();
            self.stats
                .partitions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
    }

    async fn stream_pages(&mut self) -> Result<u64, PollError> {
        let table = self.unit();
        let (generation, rewound) = self.topic_ready().await?;
        if rewound {
            self.stop_stream();
        }
        self.open_reader().await?;
        let mut published = 0u64;
        let mut wait = self.settings.interval;
        loop {
            let started = Instant::now();
            let capture = self.stream.as_mut().expect("a change-stream poller");
            let reader = capture.reader.as_mut().expect("opened above");
            let page = reader
                .next_page(self.settings.page_size, wait)
                .await
                .map_err(|e| PollError::Port {
                    table: table.clone(),
                    source: e,
                })?;
            self.stats.time_step(PollStep::Read, started);
            wait = Duration::ZERO;
            let quiet = page.rows.is_empty();
            let due = capture
                .stored_at
                .is_none_or(|at| at.elapsed() >= QUIET_PROGRESS_EVERY);
            if quiet && (!due || self.watermark >= Some(page.watermark)) {
                break;
            }
            published += self.publish_page(page).await?;
            if quiet {
                break;
            }
        }
        if let Some(reader) = self.stream.as_ref().and_then(|c| c.reader.as_ref()) {
            *self
                .stats
                .partitions
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = reader.partitions();
        }
        if self.ledger.topic_generation(&self.settings.topic) != generation {
            // The topic was lost while we published: read again from the start point.
            self.rewind("while publishing").await?;
            self.stop_stream();
            self.generation = Some(self.ledger.topic_generation(&self.settings.topic));
        }
        if published > 0 {
            tracing::debug!(table, rows = published, watermark = ?self.watermark, "published");
        }
        Ok(published)
    }

    /// Opens the read if it is not running: the stream's schema checked and adopted, the
    /// start taken from the stored progress.
    async fn open_reader(&mut self) -> Result<(), PollError> {
        let Some(capture) = &self.stream else {
            return Ok(());
        };
        if capture.reader.is_some() {
            return Ok(());
        }
        let (port, stream, shared) = (capture.port.clone(), capture.stream.clone(), capture.shared);
        let schema = port
            .prepare_stream(&self.settings.spec, &stream)
            .await
            .map_err(|e| self.port_err(e))?;
        self.adopt_schema(schema)?;
        let start = self.stream_start().await?;
        tracing::info!(table = self.table(), stream, start = ?start_label(&start), "reading the change stream");
        let (schema, _) = self.current.as_ref().expect("schema adopted above");
        let reader = if shared {
            port.read_stream_shared(schema, &stream, start, &self.unit())
                .await
        } else {
            port.read_stream(schema, &stream, start).await
        }
        .map_err(|e| self.port_err(e))?;
        if let Some(capture) = &mut self.stream {
            capture.reader = Some(reader);
        }
        Ok(())
    }

    /// Where the read starts: the change stream's own progress record if the ledger holds
    /// one (exact), else just after the watermark the poller's resume rule finds (a
    /// progress record of commit-timestamp polling, the lease's, the file's, the start).
    async fn stream_start(&mut self) -> Result<StreamStart, PollError> {
        let unit = self.unit();
        let stored = self
            .ledger
            .progress(&unit)
            .await
            .map_err(|e| self.port_err(e))?;
        if let Some(record) = stored
            && progress::decode(&record).is_err()
        {
            // Not the poller's own form: the stream reader's (it refuses what it cannot read).
            self.watermark = None;
            self.lease_progress = None;
            return Ok(StreamStart::Progress(record));
        }
        let w = self.resume_point().await?;
        self.first_watermark.get_or_insert(w);
        if w == i64::MIN {
            // Configuration refuses `start = beginning` for a change stream; a table moved
            // from commit-timestamp polling before its first poll lands here.
            return Ok(StreamStart::At(match self.settings.start {
                StartFrom::At(t) => t,
                _ => now_micros(),
            }));
        }
        Ok(StreamStart::At(w.saturating_add(1)))
    }

    /// Encodes a page and writes it with its progress; moves the watermark once it is
    /// stored. Returns the rows published.
    async fn publish_page(&mut self, page: ChangePage) -> Result<u64, PollError> {
        let table = self.unit();
        let (_, encoder) = self.current.as_ref().expect("schema adopted on open");
        let batch = encode_rows(encoder, &page.rows, &self.stats, &table)?;
        let n = page.rows.len() as u64;
        let record = Progress {
            table: table.clone(),
            record: page.progress,
        };
        fault::point(fault::POLL_BEFORE_PUBLISH);
        let started = Instant::now();
        let stored_by_ledger = self
            .ledger
            .publish_page(&self.settings.topic, batch, &record)
            .await
            .map_err(|e| self.port_err(e))?;
        self.stats.time_step(PollStep::Publish, started);
        fault::point(fault::POLL_AFTER_PUBLISH);
        if !stored_by_ledger {
            self.watermarks.store(&table, page.watermark)?;
        }
        fault::point(fault::POLL_AFTER_WATERMARK);
        if let Some(capture) = &mut self.stream {
            capture.stored_at = Some(Instant::now());
        }
        self.watermark = Some(page.watermark);
        self.stats
            .watermark
            .store(page.watermark, Ordering::Relaxed);
        self.stats.rows_polled.fetch_add(n, Ordering::Relaxed);
        Ok(n)
    }
}

/// A start for the log: the time, or "stored progress".
fn start_label(start: &StreamStart) -> String {
    match start {
        StreamStart::At(t) => ledgerhost_manifest::calendar::timestamp_text(*t),
        StreamStart::Progress(_) => "stored progress".into(),
    }
}
