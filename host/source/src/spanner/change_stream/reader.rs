//! Reading a change stream: one task per partition query, the records merged by the
//! [`Tracker`] and released as pages of rows. In a shared read the partitions are queried
//! by whichever replica holds them (`worker`), and one task here takes what they hand over
//! (`spool`) and reports it as a local query would.
//!
//! Each partition's query (`SELECT ChangeRecord FROM READ_<stream>(…)` in a single-use
//! read-only transaction, as Spanner requires of change stream queries:
//! https://cloud.google.com/spanner/docs/change-streams/details#query; streamed) runs in its own task and sends what it returns over one
//! bounded channel, so a reader not asked for pages holds the queries back (the stream waits
//! in gRPC's flow control). A query that fails is started again from the first time the
//! tracker has not got everything of (records read twice are dropped); one whose start is
//! older than the stream's retention is an error naming the repair.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use google_cloud_gax::error::rpc::Code;
use google_cloud_spanner::client::DatabaseClient;
use google_cloud_spanner::statement::Statement;
use google_cloud_spanner::types;
use google_cloud_spanner::value::Value as SpValue;
use ledgerhost_core::change::{ChangePage, ChangeReader};
use ledgerhost_core::{PortError, PortResult, TableSchema};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::parse::{Shape, records};
use super::record::ChangeRecord;
use super::rows::{RowsError, rows};
use super::spool::Handed;
use super::tracker::{ROOT, State, Tracker};
use crate::spanner::SpannerSource;
use crate::spanner::error::{BACKEND, map_err};
use crate::spanner::values::micros_timestamp;

/// How often a quiet partition reports progress: the wait before a change another
/// partition returned can be released.
pub const HEARTBEAT: Duration = Duration::from_millis(1000);

/// The wait before a failed partition query is started again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// How often a shared read takes what the partition reads handed over.
pub const HAND_OVER_POLL: Duration = Duration::from_millis(100);

/// How often a shared read moves its offers' start times on (so a partition taken over is
/// queried from near where the last holder got to, not from its start).
const OFFER_REFRESH: Duration = Duration::from_secs(5);

/// How often a shared read deletes the hand-over rows it took.
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// What a partition task reports.
pub(super) enum Report {
    Records(String, Vec<ChangeRecord>),
    Ended(String),
    Failed(String, PortError),
    /// The hand-over cannot be read (a shared read only).
    Broken(PortError),
}

/// Who queries the partitions.
// One per reader: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Queries {
    /// This replica, each in a task of its own.
    Local {
        client: DatabaseClient,
        heartbeat: Duration,
    },
    /// Whichever replica holds each partition's lease; what they return comes through the
    /// hand-over.
    Shared(Shared),
}

/// A shared read's side of the hand-over.
struct Shared {
    source: SpannerSource,
    unit: String,
    epoch: i64,
    /// Partitions to offer at the next page: (token, start).
    to_offer: Vec<(String, i64)>,
    /// Ended partitions whose offers to withdraw at the next page.
    to_withdraw: Vec<String>,
    refreshed: Instant,
    taker: JoinHandle<()>,
}

/// A running read of one table's changes from one stream.
pub struct StreamReader {
    queries: Queries,
    stream: String,
    schema: TableSchema,
    tracker: Tracker,
    reports: mpsc::Receiver<Report>,
    sender: mpsc::Sender<Report>,
    tasks: HashMap<String, JoinHandle<()>>,
}

impl StreamReader {
    /// A reader of `stream` (a validated identifier) for `schema`'s table, going on from
    /// `tracker`.
    pub(crate) fn new(
        client: DatabaseClient,
        stream: &str,
        schema: TableSchema,
        tracker: Tracker,
        heartbeat: Duration,
    ) -> StreamReader {
        let (sender, reports) = mpsc::channel(64);
        StreamReader::with(
            Queries::Local { client, heartbeat },
            (sender, reports),
            stream,
            schema,
            tracker,
        )
    }

    fn with(
        queries: Queries,
        (sender, reports): (mpsc::Sender<Report>, mpsc::Receiver<Report>),
        stream: &str,
        schema: TableSchema,
        tracker: Tracker,
    ) -> StreamReader {
        StreamReader {
            queries,
            stream: stream.to_string(),
            schema,
            tracker,
            reports,
            sender,
            tasks: HashMap::new(),
        }
    }

    /// A shared read of `stream` under `unit`: every earlier offer and hand-over of `unit`
    /// withdrawn, the partitions offered afresh from `tracker` with a new epoch.
    pub(crate) async fn shared(
        source: SpannerSource,
        unit: &str,
        stream: &str,
        schema: TableSchema,
        tracker: Tracker,
    ) -> PortResult<StreamReader> {
        source.withdraw_unit(unit).await?;
        // Unlike any earlier read's (epochs are only compared for equality).
        let epoch = ledgerhost_core::clock::now_micros();
        let (sender, reports) = mpsc::channel(64);
        let taker = tokio::spawn(take_hand_over(
            source.clone(),
            unit.to_string(),
            epoch,
            sender.clone(),
        ));
        let shared = Shared {
            source,
            unit: unit.to_string(),
            epoch,
            to_offer: Vec::new(),
            to_withdraw: Vec::new(),
            refreshed: Instant::now(),
            taker,
        };
        Ok(StreamReader::with(
            Queries::Shared(shared),
            (sender, reports),
            stream,
            schema,
            tracker,
        ))
    }

    fn start_ready(&mut self) {
        for start in self.tracker.to_start() {
            self.spawn(start.token, start.from, Duration::ZERO);
        }
    }

    fn spawn(&mut self, token: String, from: i64, after: Duration) {
        debug!(stream = %self.stream, partition = %short(&token), from, "change stream partition query");
        let (client, heartbeat) = match &mut self.queries {
            Queries::Local { client, heartbeat } => (client.clone(), *heartbeat),
            Queries::Shared(shared) => {
                shared.to_offer.push((token, from));
                return;
            }
        };
        let task = tokio::spawn(query_partition(
            client,
            self.stream.clone(),
            token.clone(),
            from,
            heartbeat,
            after,
            self.sender.clone(),
        ));
        if let Some(old) = self.tasks.insert(token, task) {
            old.abort();
        }
    }

    /// A shared read writes its new offers and withdrawals, and every [`OFFER_REFRESH`]
    /// moves the running partitions' start times on to what it has received. A write that
    /// fails transiently is tried again at the next page.
    async fn hand_over_offers(&mut self) -> PortResult<()> {
        match self.write_offers().await {
            Err(e) if e.is_transient() => {
                warn!(stream = %self.stream, error = %e, "cannot write the change stream partition offers; retrying");
                Ok(())
            }
            other => other,
        }
    }

    async fn write_offers(&mut self) -> PortResult<()> {
        let Queries::Shared(shared) = &mut self.queries else {
            return Ok(());
        };
        if shared.refreshed.elapsed() >= OFFER_REFRESH {
            shared.refreshed = Instant::now();
            for (token, p) in self.tracker.partitions() {
                if p.state == State::Running
                    && !shared.to_offer.iter().any(|(t, _)| t == token)
                    && let Some(from) = self.tracker.restart_from(token)
                {
                    shared.to_offer.push((token.clone(), from));
                }
            }
        }
        if !shared.to_offer.is_empty() {
            shared
                .source
                .offer_partitions(&shared.unit, shared.epoch, &shared.to_offer)
                .await?;
            shared.to_offer.clear();
        }
        if !shared.to_withdraw.is_empty() {
            shared
                .source
                .withdraw_partitions(&shared.unit, &shared.to_withdraw)
                .await?;
            shared.to_withdraw.clear();
        }
        Ok(())
    }

    fn handle(&mut self, report: Report) -> PortResult<()> {
        if let (Queries::Shared(_), Report::Records(token, _) | Report::Ended(token)) =
            (&self.queries, &report)
            && !self.tracker.partitions().contains_key(token)
        {
            // Handed over twice (a partition's lease moved while its last holder still read
            // it) for a partition already released and retired.
            debug!(stream = %self.stream, partition = %short(token), "hand-over of a retired partition dropped");
            return Ok(());
        }
        match report {
            Report::Records(token, records) => self
                .tracker
                .receive(&token, records)
                .map_err(|e| PortError::corrupt(BACKEND, e)),
            Report::Ended(token) => {
                self.tasks.remove(&token);
                if let Queries::Shared(shared) = &mut self.queries {
                    shared.to_withdraw.push(token.clone());
                }
                self.tracker
                    .ended(&token)
                    .map_err(|e| PortError::corrupt(BACKEND, e))
            }
            Report::Failed(token, e) if e.is_transient() => {
                let from = self.tracker.restart_from(&token).ok_or_else(|| {
                    PortError::corrupt(BACKEND, format!("partition {token:?} is not tracked"))
                })?;
                warn!(stream = %self.stream, partition = %short(&token), from, error = %e,
                      "change stream partition query failed; starting it again");
                self.spawn(token, from, RETRY_AFTER);
                Ok(())
            }
            Report::Failed(_, e) | Report::Broken(e) => Err(e),
        }
    }

    /// Releases whole records up to about `max_rows` rows of this reader's table.
    fn release(&mut self, max_rows: usize) -> PortResult<Vec<ledgerhost_core::source::Row>> {
        let mut out = Vec::new();
        while out.len() < max_rows {
            // Records of the stream's other tables count against the budget: go on until
            // this table's rows fill it or nothing more can leave.
            let released = self.tracker.release_rows(max_rows - out.len());
            if released.is_empty() {
                break;
            }
            for change in released.iter().filter(|c| c.table == self.schema.name) {
                // A column added since the schema was read: the poller drops this reader and
                // opens another from the stored progress with the schema read again (the
                // record is released here but was never published, so it is read again).
                out.extend(rows(&self.schema, change).map_err(|e| match e {
                    RowsError::SchemaChanged { .. } => PortError::unavailable(
                        BACKEND,
                        format!("change stream `{}`: {e}", self.stream),
                    ),
                    RowsError::Invalid(_) => {
                        PortError::invalid(BACKEND, format!("change stream `{}`: {e}", self.stream))
                    }
                })?);
            }
        }
        Ok(out)
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        for task in self.tasks.values() {
            task.abort();
        }
        if let Queries::Shared(shared) = &self.queries {
            shared.taker.abort();
        }
    }
}

#[async_trait]
impl ChangeReader for StreamReader {
    async fn next_page(&mut self, max_rows: usize, wait: Duration) -> PortResult<ChangePage> {
        let deadline = Instant::now() + wait;
        loop {
            while let Ok(report) = self.reports.try_recv() {
                self.handle(report)?;
            }
            // The first partitions, and the children of those that ended meanwhile.
            self.start_ready();
            self.hand_over_offers().await?;
            let rows = self.release(max_rows.max(1))?;
            if !rows.is_empty() {
                return Ok(self.page(rows));
            }
            match tokio::time::timeout_at(deadline, self.reports.recv()).await {
                Ok(Some(report)) => self.handle(report)?,
                // The sender is ours: the channel never closes while the reader lives.
                Ok(None) | Err(_) => return Ok(self.page(Vec::new())),
            }
        }
    }

    fn partitions(&self) -> Vec<(String, i64)> {
        self.tracker
            .partitions()
            .iter()
            .map(|(token, p)| (token.clone(), p.through))
            .collect()
    }
}

impl StreamReader {
    fn page(&mut self, rows: Vec<ledgerhost_core::source::Row>) -> ChangePage {
        ChangePage {
            rows,
            progress: self.tracker.progress().encode(),
            watermark: self.tracker.released_through(),
        }
    }
}

/// A token's first characters, for logs (tokens are a few hundred characters).
pub(super) fn short(token: &str) -> &str {
    if token == ROOT {
        return "root";
    }
    token.get(..12).unwrap_or(token)
}

/// Takes what the partition reads of a shared read hand over (`epoch`'s rows; others are
/// an earlier read's) every [`HAND_OVER_POLL`], reports it in the order it was written and
/// deletes what it took every [`TRIM_EVERY`].
async fn take_hand_over(
    source: SpannerSource,
    unit: String,
    epoch: i64,
    reports: mpsc::Sender<Report>,
) {
    let mut after = 0;
    let mut trimmed = after;
    let mut trimmed_at = Instant::now();
    loop {
        match source.spool_read(&unit, after).await {
            Ok(rows) => {
                for row in rows {
                    after = after.max(row.written_at);
                    if row.epoch != epoch {
                        continue;
                    }
                    let report = match row.handed {
                        Handed::Records(records) => Report::Records(row.token, records),
                        Handed::Ended => Report::Ended(row.token),
                        Handed::Failed(reason) => {
                            Report::Failed(row.token, PortError::invalid(BACKEND, reason))
                        }
                    };
                    if reports.send(report).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) if e.is_transient() => {
                warn!(unit, error = %e, "cannot read the change stream hand-over; retrying");
            }
            Err(e) => {
                let _ = reports.send(Report::Broken(e)).await;
                return;
            }
        }
        if after > trimmed && trimmed_at.elapsed() >= TRIM_EVERY {
            match source.spool_trim(&unit, after).await {
                Ok(()) => {
                    trimmed = after;
                    trimmed_at = Instant::now();
                }
                Err(e) => warn!(unit, error = %e, "cannot trim the change stream hand-over"),
            }
        }
        tokio::time::sleep(HAND_OVER_POLL).await;
    }
}

/// Runs one partition's query from `from` to its end, reporting what it returns.
pub(super) async fn query_partition(
    client: DatabaseClient,
    stream: String,
    token: String,
    from: i64,
    heartbeat: Duration,
    after: Duration,
    reports: mpsc::Sender<Report>,
) {
    tokio::time::sleep(after).await;
    let report = match run_query(&client, &stream, &token, from, heartbeat, &reports).await {
        Ok(()) => Report::Ended(token),
        Err(e) => Report::Failed(token, e),
    };
    let _ = reports.send(report).await;
}

async fn run_query(
    client: &DatabaseClient,
    stream: &str,
    token: &str,
    from: i64,
    heartbeat: Duration,
    reports: &mpsc::Sender<Report>,
) -> PortResult<()> {
    let token_param = if token == ROOT {
        SpValue::null()
    } else {
        SpValue::from(token.to_string())
    };
    let stmt = Statement::builder(format!(
        "SELECT ChangeRecord FROM READ_{stream}(start_timestamp => @start, \
         end_timestamp => @end, partition_token => @token, heartbeat_milliseconds => @heartbeat)"
    ))
    .add_typed_param("start", micros_timestamp(from)?, types::timestamp())
    .add_typed_param("end", SpValue::null(), types::timestamp())
    .add_typed_param("token", token_param, types::string())
    .add_typed_param(
        "heartbeat",
        i64::try_from(heartbeat.as_millis()).unwrap_or(i64::MAX),
        types::int64(),
    )
    .build();
    let context = format!("reading change stream `{stream}`");
    let refuse = |e: google_cloud_spanner::Error| {
        if e.status().map(|s| s.code) == Some(Code::OutOfRange) {
            return PortError::invalid(
                BACKEND,
                format!(
                    "change stream `{stream}` no longer holds changes from {} (older than its \
                     retention period, or than the stream): the changes since are lost to \
                     this reader. Publish the table's rows again with `ledgerhost backfill`, \
                     then start from `now` ({e})",
                    ledgerhost_manifest::calendar::timestamp_text(from)
                ),
            );
        }
        map_err(&context, e)
    };
    let mut rs = client
        .single_use()
        .build()
        .execute_query(stmt)
        .await
        .map_err(refuse)?;
    let shape = rs
        .metadata()
        .column_types()
        .first()
        .map(|t| Shape::of(&t.clone().into()))
        .ok_or_else(|| PortError::corrupt(BACKEND, format!("{context}: no column")))?;
    while let Some(row) = rs.next().await {
        let row = row.map_err(refuse)?;
        let value = row
            .raw_values()
            .first()
            .ok_or_else(|| PortError::corrupt(BACKEND, format!("{context}: an empty row")))?;
        let records = records(value, &shape)
            .map_err(|e| PortError::corrupt(BACKEND, format!("{context}: {e}")))?;
        if reports
            .send(Report::Records(token.to_string(), records))
            .await
            .is_err()
        {
            // The reader is gone.
            return Ok(());
        }
    }
    Ok(())
}
