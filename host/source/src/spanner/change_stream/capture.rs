//! The Spanner source's change streams as the [`ChangeCapture`] port.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use ledgerhost_core::change::{
    ChangeCapture, ChangeReader, PartitionOffer, PartitionRead, StreamStart,
};
use ledgerhost_core::source::{TableSpec, TransactionKind, TransactionPurpose};
use ledgerhost_core::{PortError, PortResult, TableSchema};
use tracing::info;

use super::prepare::{check, event_schema, stream_facts};
use super::reader::{HEARTBEAT, StreamReader};
use super::tracker::{Progress, Tracker};
use super::worker::PartitionWorker;
use crate::spanner::SpannerSource;
use crate::spanner::error::BACKEND;
use crate::spanner::names::ident;
use crate::spanner::schema::read_table;

#[async_trait]
impl ChangeCapture for SpannerSource {
    async fn prepare_stream(&self, spec: &TableSpec, stream: &str) -> PortResult<TableSchema> {
        ident(stream)?;
        let client = self.client.clone();
        let counters = self.counters.clone();
        let query = |stmt| {
            let client = client.clone();
            counters.record(TransactionKind::ReadOnly, TransactionPurpose::Schema);
            async move { client.single_use().build().execute_query(stmt).await }
        };
        let table = read_table(spec, query).await?;
        let facts = stream_facts(stream, &spec.name, query).await?;
        let capture = check(stream, &table, &facts).map_err(|m| PortError::invalid(BACKEND, m))?;
        let schema = event_schema(
            table,
            spec.commit_ts_column.as_deref(),
            spec.deleted_column.as_deref(),
            capture,
        )
        .map_err(|m| PortError::invalid(BACKEND, m))?;
        info!(table = %schema.name, stream, ?capture, commit_ts_column = %schema.commit_ts_column,
              deleted_column = ?schema.deleted_column, "spanner table ready for change stream capture");
        Ok(schema)
    }

    async fn read_stream(
        &self,
        schema: &TableSchema,
        stream: &str,
        start: StreamStart,
    ) -> PortResult<Box<dyn ChangeReader>> {
        ident(stream)?;
        let client = self.new_client().await?;
        Ok(Box::new(StreamReader::new(
            client,
            stream,
            schema.clone(),
            tracker_from(start)?,
            self.heartbeat(),
        )))
    }

    async fn read_stream_shared(
        &self,
        schema: &TableSchema,
        stream: &str,
        start: StreamStart,
        unit: &str,
    ) -> PortResult<Box<dyn ChangeReader>> {
        ident(stream)?;
        let reader = StreamReader::shared(
            self.clone(),
            unit,
            stream,
            schema.clone(),
            tracker_from(start)?,
        )
        .await?;
        info!(table = %schema.name, stream, unit, "change stream partitions shared among the replicas");
        Ok(Box::new(reader))
    }

    async fn partition_offers(&self, unit: &str) -> PortResult<Vec<PartitionOffer>> {
        self.offers(unit).await
    }

    async fn read_partition(
        &self,
        stream: &str,
        unit: &str,
        offer: &PartitionOffer,
    ) -> PortResult<Box<dyn PartitionRead>> {
        ident(stream)?;
        static READS: AtomicU64 = AtomicU64::new(0);
        // Unique to this read, so two reads of one partition (its lease moved while the last
        // holder still read) never write the same hand-over row.
        let writer = format!(
            "{}-{}-{}",
            std::process::id(),
            READS.fetch_add(1, Ordering::Relaxed),
            ledgerhost_core::clock::now_micros()
        );
        Ok(Box::new(PartitionWorker::start(
            self.clone(),
            self.new_client().await?,
            stream,
            unit,
            writer,
            offer.clone(),
            self.heartbeat(),
        )))
    }
}

impl SpannerSource {
    /// The heartbeat partition queries ask for.
    fn heartbeat(&self) -> std::time::Duration {
        self.config.change_stream_heartbeat.unwrap_or(HEARTBEAT)
    }
}

/// The tracker a read starts with: at a time, or going on from a stored progress.
fn tracker_from(start: StreamStart) -> PortResult<Tracker> {
    Ok(match start {
        StreamStart::At(at) => Tracker::new(at),
        StreamStart::Progress(record) => {
            Tracker::resume(Progress::decode(&record).map_err(|e| PortError::corrupt(BACKEND, e))?)
        }
    })
}
