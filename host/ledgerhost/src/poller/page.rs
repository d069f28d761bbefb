//! One poll: a snapshot read page by page in (commit_ts, key) order, each page encoded and
//! written to the ledger with its progress record, the next two pages encoded and read
//! while one is written.

use std::sync::atomic::Ordering;

use ledgerhost_avro::Encoder;
use ledgerhost_core::TableSchema;
use ledgerhost_core::source::{Position, Row, Shard, Snapshot};

use crate::fault;
use crate::metrics::{PollStep, TableStats, now_micros};

use super::progress;
use super::{PollError, Poller};

impl Poller {
    /// One poll: publishes every row committed after the watermark, then advances it.
    /// Returns the number of rows published.
    pub async fn poll_once(&mut self) -> Result<u64, PollError> {
        let started = now_micros();
        let result = match self.stream {
            Some(_) => self.stream_inner().await,
            None => self.poll_inner().await,
        };
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

    pub(super) async fn poll_inner(&mut self) -> Result<u64, PollError> {
        let table = self.unit();
        let (generation, _) = self.topic_ready().await?;
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
        // Pipelined, two pages ahead: while page N is written (a blocking SQLite or network
        // task), page N+1 is encoded (on this task) and page N+2 read (a blocking task).
        // Writes stay strictly in order and one at a time, each page with its own progress
        // record, so progress never passes a page whose messages are not durable; a failed
        // write returns before page N+3 is read.
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
        // `next`: the page to write, encoded; `ahead`: the one after it, read, when `next`
        // is full.
        let (mut next, mut ahead) = match read_page(snapshot.as_mut(), &reader, &after).await? {
            None => (None, None),
            Some(first) => {
                let read_after = first.full.then(|| first.after.clone());
                let (encoded, ahead) = tokio::join!(
                    encode_later(&reader, first),
                    read_if(snapshot.as_mut(), &reader, read_after.as_ref())
                );
                (Some(encoded?), ahead?)
            }
        };
        while let Some(page) = next.take() {
            after = page.after;
            let full = page.full;
            let n = page.batch.len() as u64;
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
                    .publish_page(&self.settings.topic, page.batch, &record)
                    .await;
                stats.time_step(PollStep::Publish, started);
                stored
            };
            let (stored, further) = match ahead.take() {
                Some(read) => {
                    let read_after = read.full.then(|| read.after.clone());
                    let (stored, further, encoded) = tokio::join!(
                        publish,
                        read_if(snapshot.as_mut(), &reader, read_after.as_ref()),
                        encode_later(&reader, read)
                    );
                    (stored, Some((encoded, further)))
                }
                None => (publish.await, None),
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
            // A read or encoding error surfaces only after the page before it is safely
            // written.
            if let Some((encoded, further)) = further {
                next = Some(encoded?);
                ahead = further?;
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
                    .publish_page(&self.settings.topic, Default::default(), &record)
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

    /// Switches to a new schema if the table changed, refusing incompatible changes.
    pub(super) fn adopt_schema(&mut self, schema: TableSchema) -> Result<(), PollError> {
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
    /// The page's rows, encoded into one buffer.
    batch: ledgerhost_core::ledger::Batch,
    /// Keyset position of the page's last row.
    after: Position,
    /// The page has `page_size` rows: the snapshot may hold more.
    full: bool,
}

/// One page read from the snapshot, not yet encoded.
struct ReadPage {
    rows: Vec<Row>,
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

/// Reads the page after `after`; `None` when the snapshot has no more rows.
async fn read_page(
    snapshot: &mut dyn Snapshot,
    reader: &PageReader<'_>,
    after: &Position,
) -> Result<Option<ReadPage>, PollError> {
    let started = std::time::Instant::now();
    let rows = snapshot
        .shard_page(reader.schema, reader.shard, after, reader.page_size)
        .await
        .map_err(|e| PollError::Port {
            table: reader.table.to_string(),
            source: e,
        })?;
    reader.stats.time_step(PollStep::Read, started);
    let Some(last) = rows.last() else {
        return Ok(None);
    };
    let after = Position {
        commit_ts: last.commit_ts,
        key: reader
            .schema
            .key_indexes()
            .iter()
            .map(|i| last.values[*i].clone())
            .collect(),
    };
    let full = rows.len() == reader.page_size;
    Ok(Some(ReadPage { rows, after, full }))
}

/// [`read_page`] when there is a position to read after (the page before was full).
async fn read_if(
    snapshot: &mut dyn Snapshot,
    reader: &PageReader<'_>,
    after: Option<&Position>,
) -> Result<Option<ReadPage>, PollError> {
    match after {
        Some(after) => read_page(snapshot, reader, after).await,
        None => Ok(None),
    }
}

/// Encodes a page read, on this task, once the branches joined with it have started their
/// blocking work (a page write, the next read): encoding first would hold them back.
async fn encode_later(reader: &PageReader<'_>, page: ReadPage) -> Result<EncodedPage, PollError> {
    tokio::task::yield_now().await;
    let batch = encode_rows(reader.encoder, &page.rows, reader.stats, reader.table)?;
    Ok(EncodedPage {
        batch,
        after: page.after,
        full: page.full,
    })
}

/// `rows` encoded into one batch, timed as the poll's encode step; `table` names the table
/// (or shard) in the error.
pub(super) fn encode_rows(
    encoder: &Encoder,
    rows: &[Row],
    stats: &TableStats,
    table: &str,
) -> Result<ledgerhost_core::ledger::Batch, PollError> {
    let started = std::time::Instant::now();
    let mut batch = encoder.batch();
    for row in rows {
        encoder
            .encode_into(&mut batch, row)
            .map_err(|e| PollError::Encode {
                table: table.to_string(),
                message: e.to_string(),
            })?;
    }
    stats.time_step(PollStep::Encode, started);
    Ok(batch)
}
