//! Reading a change stream: one task per partition query, the records merged by the
//! [`Tracker`] and released as pages of rows.
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
use super::tracker::{ROOT, Tracker};
use crate::spanner::error::{BACKEND, map_err};
use crate::spanner::values::micros_timestamp;

/// How often a quiet partition reports progress: the wait before a change another
/// partition returned can be released.
pub const HEARTBEAT: Duration = Duration::from_millis(1000);

/// The wait before a failed partition query is started again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// What a partition task reports.
enum Report {
    Records(String, Vec<ChangeRecord>),
    Ended(String),
    Failed(String, PortError),
}

/// A running read of one table's changes from one stream.
pub struct StreamReader {
    client: DatabaseClient,
    stream: String,
    schema: TableSchema,
    heartbeat: Duration,
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
        StreamReader {
            client,
            stream: stream.to_string(),
            schema,
            heartbeat,
            tracker,
            reports,
            sender,
            tasks: HashMap::new(),
        }
    }

    fn start_ready(&mut self) {
        for start in self.tracker.to_start() {
            self.spawn(start.token, start.from, Duration::ZERO);
        }
    }

    fn spawn(&mut self, token: String, from: i64, after: Duration) {
        debug!(stream = %self.stream, partition = %short(&token), from, "change stream partition query");
        let task = tokio::spawn(query_partition(
            self.client.clone(),
            self.stream.clone(),
            token.clone(),
            from,
            self.heartbeat,
            after,
            self.sender.clone(),
        ));
        if let Some(old) = self.tasks.insert(token, task) {
            old.abort();
        }
    }

    fn handle(&mut self, report: Report) -> PortResult<()> {
        match report {
            Report::Records(token, records) => self
                .tracker
                .receive(&token, records)
                .map_err(|e| PortError::corrupt(BACKEND, e)),
            Report::Ended(token) => {
                self.tasks.remove(&token);
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
            Report::Failed(_, e) => Err(e),
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
fn short(token: &str) -> &str {
    if token == ROOT {
        return "root";
    }
    token.get(..12).unwrap_or(token)
}

/// Runs one partition's query from `from` to its end, reporting what it returns.
async fn query_partition(
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
