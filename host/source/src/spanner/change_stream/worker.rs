//! One partition of a shared read queried on this replica: what the query returns is handed
//! over (`spool`) in batches of at most [`HAND_OVER_EVERY`], then that it ended, or why it
//! failed for good. A query that fails transiently is started again from the first time it
//! has not returned everything of (the merging read drops what it receives twice).

use std::time::Duration;

use google_cloud_spanner::client::DatabaseClient;
use ledgerhost_core::PortResult;
use ledgerhost_core::change::{PartitionOffer, PartitionRead};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::reader::{Report, query_partition, short};
use super::record::ChangeRecord;
use super::spool::Handed;
use crate::spanner::SpannerSource;

/// The longest a partition read holds what its query returned before handing it over.
pub const HAND_OVER_EVERY: Duration = Duration::from_millis(100);

/// Records a partition read hands over in one row at most.
const HAND_OVER_RECORDS: usize = 1000;

/// The wait before a failed partition query is started again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// A partition query running here for a shared read (see [`PartitionRead`]).
pub struct PartitionWorker {
    done: oneshot::Receiver<PortResult<()>>,
    task: JoinHandle<()>,
}

impl PartitionWorker {
    /// Starts querying `offer`'s partition of `stream`, handing over under `unit` as
    /// `writer` (unique to this read).
    pub(crate) fn start(
        source: SpannerSource,
        client: DatabaseClient,
        stream: &str,
        unit: &str,
        writer: String,
        offer: PartitionOffer,
        heartbeat: Duration,
    ) -> PartitionWorker {
        let (tell, done) = oneshot::channel();
        let hand_over = HandOver {
            source,
            unit: unit.to_string(),
            writer,
            offer,
        };
        let stream = stream.to_string();
        let task = tokio::spawn(async move {
            let _ = tell.send(hand_over.run(client, stream, heartbeat).await);
        });
        PartitionWorker { done, task }
    }
}

impl PartitionRead for PartitionWorker {
    fn finished(&mut self) -> Option<PortResult<()>> {
        self.done.try_recv().ok()
    }
}

impl Drop for PartitionWorker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where a partition read hands over.
struct HandOver {
    source: SpannerSource,
    unit: String,
    writer: String,
    offer: PartitionOffer,
}

impl HandOver {
    async fn append(&self, handed: &Handed) -> PortResult<()> {
        self.source
            .spool_append(
                &self.unit,
                &self.writer,
                &self.offer.token,
                self.offer.epoch,
                handed,
            )
            .await
    }

    /// Hands `batch` over (emptying it), if it holds anything.
    async fn flush(&self, batch: &mut Vec<ChangeRecord>) -> PortResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.append(&Handed::Records(std::mem::take(batch))).await
    }

    async fn run(
        self,
        client: DatabaseClient,
        stream: String,
        heartbeat: Duration,
    ) -> PortResult<()> {
        let token = self.offer.token.clone();
        let mut from = self.offer.start;
        // Every record at or before this time has been returned (and handed over once the
        // batch is flushed).
        let mut through = from - 1;
        loop {
            debug!(stream, partition = %short(&token), from, "change stream partition query for a shared read");
            let (sender, mut reports) = mpsc::channel(64);
            let query = tokio::spawn(query_partition(
                client.clone(),
                stream.clone(),
                token.clone(),
                from,
                heartbeat,
                Duration::ZERO,
                sender,
            ));
            let _abort_query = AbortOnDrop(query);
            let mut batch: Vec<ChangeRecord> = Vec::new();
            let mut due: Option<Instant> = None;
            loop {
                let report = match due {
                    Some(at) => match tokio::time::timeout_at(at, reports.recv()).await {
                        Ok(r) => r,
                        Err(_) => {
                            self.flush(&mut batch).await?;
                            due = None;
                            continue;
                        }
                    },
                    None => reports.recv().await,
                };
                match report {
                    Some(Report::Records(_, records)) => {
                        for r in &records {
                            through = through.max(match r {
                                ChangeRecord::Data(d) => d.key.commit_ts - 1,
                                ChangeRecord::Heartbeat { at } => *at,
                                ChangeRecord::Children(c) => c.start - 1,
                            });
                        }
                        batch.extend(records);
                        due.get_or_insert_with(|| Instant::now() + HAND_OVER_EVERY);
                        if batch.len() >= HAND_OVER_RECORDS {
                            self.flush(&mut batch).await?;
                            due = None;
                        }
                    }
                    Some(Report::Ended(_)) => {
                        self.flush(&mut batch).await?;
                        self.append(&Handed::Ended).await?;
                        return Ok(());
                    }
                    Some(Report::Failed(_, e)) if e.is_transient() => {
                        self.flush(&mut batch).await?;
                        from = self.offer.start.max(through + 1);
                        warn!(stream, partition = %short(&token), from, error = %e,
                              "change stream partition query failed; starting it again");
                        tokio::time::sleep(RETRY_AFTER).await;
                        break;
                    }
                    Some(Report::Failed(_, e)) | Some(Report::Broken(e)) => {
                        self.flush(&mut batch).await?;
                        self.append(&Handed::Failed(e.to_string())).await?;
                        return Err(e);
                    }
                    // The query task always reports how it ended before it goes.
                    None => return Ok(()),
                }
            }
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
