//! `[[tables]]`: each captured table, how often and from where it is polled, its shards.

use std::time::Duration;

use serde::Deserialize;

/// Where the poller starts on a table it has no watermark for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartFrom {
    /// Scan every existing row (the bootstrap).
    Beginning,
    /// Only rows committed from now on.
    Now,
    /// Rows committed after this instant (microseconds since the epoch).
    At(i64),
}

/// How a table's changes are captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CaptureMode {
    /// Polled by its commit-timestamp column (the seed's poller).
    #[default]
    CommitTimestamp,
    /// Read from a Spanner change stream (`change-stream` names it): hard deletes, no
    /// commit-timestamp column needed, every committed version.
    ChangeStream,
}

/// One captured table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TableConfig {
    /// Source table name; also the suffix of the table's topic.
    pub name: String,
    /// Commit-timestamp column (default `commit_ts`).
    #[serde(default)]
    pub commit_ts_column: Option<String>,
    /// Soft-delete column: rows where it is true are published as tombstones.
    #[serde(default)]
    pub deleted_column: Option<String>,
    /// Poll interval (default 200 ms).
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Rows per keyset page (default 5000).
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// `beginning` (the default when polled), `now` (the default, and the earliest, when read
    /// from a change stream), or microseconds since the epoch: used only when neither a local
    /// watermark nor the ledger can tell where to resume.
    #[serde(default)]
    pub start: Option<String>,
    /// How the table's changes are captured: `commit-timestamp` (default) or `change-stream`.
    #[serde(default)]
    pub capture: CaptureMode,
    /// The Spanner change stream to read with `capture = "change-stream"`.
    #[serde(default)]
    pub change_stream: Option<String>,
    /// With `capture = "change-stream"`: the stream's partitions are queried by every
    /// replica, each taking its fair share of partition leases, and handed over to the
    /// replica holding the table's lease, which merges them (default false: that replica
    /// queries them all).
    #[serde(default)]
    pub share_partitions: bool,
    /// Shards the table's polling is split into (default 1): each has its own lease,
    /// watermark and poller, and the replicas share the leases out (docs/operations.md).
    #[serde(default = "default_shards")]
    pub shards: u32,
    /// The INT64 column whose value is a row's shard (`0..shards`); without one, rows are
    /// sharded by a hash of the primary key.
    #[serde(default)]
    pub shard_column: Option<String>,
}

fn default_shards() -> u32 {
    1
}

fn default_interval_ms() -> u64 {
    200
}
fn default_page_size() -> usize {
    5000
}

impl TableConfig {
    /// The parsed `start` setting.
    pub fn start_from(&self) -> Result<StartFrom, String> {
        let default = match self.capture {
            CaptureMode::CommitTimestamp => "beginning",
            CaptureMode::ChangeStream => "now",
        };
        match self.start.as_deref().unwrap_or(default) {
            "beginning" => Ok(StartFrom::Beginning),
            "now" => Ok(StartFrom::Now),
            other => other.parse::<i64>().map(StartFrom::At).map_err(|_| {
                format!(
                    "must be `beginning`, `now` or microseconds since the Unix epoch, not `{other}`"
                )
            }),
        }
    }

    /// How the table's rows are split among pollers.
    pub fn sharding(&self) -> ledgerhost_core::source::Sharding {
        ledgerhost_core::source::Sharding {
            count: self.shards,
            column: self.shard_column.clone(),
        }
    }

    /// The poll interval.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }
}

/// Checks every table's settings and that no table is listed twice: `Err((key, problem))`.
pub fn check_tables(tables: &[TableConfig]) -> Result<(), (String, String)> {
    let mut seen = std::collections::BTreeSet::new();
    for (i, t) in tables.iter().enumerate() {
        let key = |k: &str| format!("tables[{i}].{k}");
        if !is_identifier(&t.name) {
            return Err((
                key("name"),
                format!(
                    "must be a table name of letters, digits and `_`, not `{}`",
                    t.name
                ),
            ));
        }
        if !seen.insert(t.name.clone()) {
            return Err((key("name"), format!("`{}` is listed twice", t.name)));
        }
        if t.interval_ms == 0 || t.interval_ms > 60_000 {
            return Err((
                key("interval-ms"),
                "must be between 1 and 60000 milliseconds".into(),
            ));
        }
        if t.page_size == 0 || t.page_size > 100_000 {
            return Err((key("page-size"), "must be between 1 and 100000".into()));
        }
        let start = t.start_from().map_err(|p| (key("start"), p))?;
        match (t.capture, &t.change_stream) {
            (CaptureMode::ChangeStream, None) => {
                return Err((
                    key("change-stream"),
                    "must name the Spanner change stream to read (capture = \"change-stream\")"
                        .into(),
                ));
            }
            (CaptureMode::ChangeStream, Some(stream)) if !is_identifier(stream) => {
                return Err((
                    key("change-stream"),
                    format!(
                        "must be a change stream name of letters, digits and `_`, not `{stream}`"
                    ),
                ));
            }
            (CaptureMode::CommitTimestamp, Some(_)) => {
                return Err((
                    key("change-stream"),
                    "is read only with capture = \"change-stream\"".into(),
                ));
            }
            _ => {}
        }
        if t.share_partitions && t.capture != CaptureMode::ChangeStream {
            return Err((
                key("share-partitions"),
                "applies to capture = \"change-stream\" (a polled table is shared by its shards)"
                    .into(),
            ));
        }
        if t.capture == CaptureMode::ChangeStream {
            if start == StartFrom::Beginning {
                return Err((
                    key("start"),
                    "a change stream holds changes only since it was created, for its retention \
                     period: start from `now` (the default) or a time within it, and publish the \
                     rows that exist already with `ledgerhost backfill`"
                        .into(),
                ));
            }
            if t.shards != 1 || t.shard_column.is_some() {
                return Err((
                    key("shards"),
                    "applies to capture = \"commit-timestamp\": a change stream is read whole, \
                     its partitions merged in commit order"
                        .into(),
                ));
            }
        }
        let max = ledgerhost_core::source::Sharding::MAX_COUNT;
        if !(1..=max).contains(&t.shards) {
            return Err((
                key("shards"),
                format!("must be between 1 and {max}, not {}", t.shards),
            ));
        }
        if let Some(c) = &t.shard_column
            && !is_identifier(c)
        {
            return Err((
                key("shard-column"),
                format!("must be a column name of letters, digits and `_`, not `{c}`"),
            ));
        }
    }
    Ok(())
}

/// True for names safe to use as SQL identifiers and topic suffixes.
pub fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}
