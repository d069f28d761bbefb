//! The host's status as one typed contract: the admin port serves it as JSON at `/status`
//! ([`crate::admin`]) and `ledgerhost status` reads it back into the same structs and prints
//! [`HostStatus::render`]; the status page at `/` draws it. [`HostHistory`] is the recent
//! past (`/status/history`, kept by [`crate::history`]), which the page plots.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// `GET /status`: readiness, one entry per table, one per plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostStatus {
    /// The host finished starting and is not draining.
    pub ready: bool,
    /// Captured tables, by name.
    pub tables: Vec<TableStatus>,
    /// Serving and refused plugins.
    pub plugins: Vec<PluginStatus>,
    /// The host's clock when it answered, µs since the epoch (ages and lags are against it).
    #[serde(default)]
    pub now_micros: i64,
    /// The newest dead letters of all plugins since the host started, newest first.
    #[serde(default)]
    pub dead_letters: Vec<DeadLetterStatus>,
}

/// A dead letter as the status shows it (`ledgerhost dead-letter list` reads the ledger).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterStatus {
    /// The plugin that gave up.
    pub plugin: String,
    /// The event's id.
    pub event_id: String,
    /// Why (the plugin's reason, a trap, or "gave up after N attempts: …").
    pub reason: String,
    /// The delivery attempt that gave up.
    pub attempts: u32,
    /// When, µs since the epoch.
    pub at_micros: i64,
}

/// `GET /status/history`: a ring buffer of samples per table and per plugin, one every
/// `interval_secs`, at most `capacity` (15 minutes), oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostHistory {
    /// Seconds between samples.
    pub interval_secs: u64,
    /// Samples kept per series.
    pub capacity: usize,
    /// Per table: `rate` = rows published per second, `lag_secs` = watermark age.
    pub tables: Vec<Series>,
    /// Per plugin: `rate` = deliveries acknowledged per second, `lag_secs` = now minus the
    /// commit time of the newest event handled.
    pub plugins: Vec<Series>,
}

/// The samples of one table or plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Table or plugin name.
    pub name: String,
    /// Oldest first.
    pub samples: Vec<Sample>,
}

/// One sample: throughput since the previous sample and lag at the sample's time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// When, µs since the epoch.
    pub at_micros: i64,
    /// Per second since the previous sample (0 for the first).
    pub rate: f64,
    /// Seconds behind (0 before anything was polled or handled).
    pub lag_secs: f64,
}

/// One captured table's poller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableStatus {
    /// Source table name; for a shard of a sharded table, `<table>.shard-<i>-of-<n>`.
    pub table: String,
    /// Rows published to the ledger.
    pub rows_polled: u64,
    /// Polls that failed and were retried.
    pub poll_errors: u64,
    /// Commit time everything below was published, µs since the epoch (0: no poll yet).
    pub watermark_micros: i64,
    /// This replica holds the table's (or shard's) lease and polls it.
    pub leader: bool,
    /// The shard's index, for a shard of a sharded table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
    /// The replica holding the shard's lease at the last read (sharded tables only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// Why polling stopped for good (an incompatible schema change), if it did.
    pub stopped: Option<String>,
    /// Re-publishes from the start point after the ledger lost the topic.
    pub republishes: u64,
    /// The change stream the table is read from (`capture = "change-stream"`); absent for
    /// a table polled by commit timestamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_stream: Option<String>,
    /// The change stream's partitions this replica reads (none when another holds the
    /// table).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<PartitionStatus>,
}

/// One partition of a change stream being read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStatus {
    /// The partition's token (the root query's is empty).
    pub token: String,
    /// It has returned every change up to this time, µs since the epoch.
    pub through_micros: i64,
    /// With `share-partitions`: the replica querying it (`None`: this replica, or not
    /// taken yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
}

/// What the host does with a plugin's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServeState {
    /// Loaded and serving.
    #[serde(rename = "serving")]
    Serving,
    /// A version serves; newer files on disk were refused (see `last_error`).
    #[serde(rename = "serving (newer files refused)")]
    ServingNewerRefused,
    /// The files were refused and no version serves.
    #[serde(rename = "refused")]
    Refused,
}

impl ServeState {
    /// The JSON and printed label.
    pub fn label(self) -> &'static str {
        match self {
            ServeState::Serving => "serving",
            ServeState::ServingNewerRefused => "serving (newer files refused)",
            ServeState::Refused => "refused",
        }
    }
}

/// One plugin: its serving version and counters (zero for a refused plugin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginStatus {
    /// Plugin name (the manifest's, or the refused file's stem).
    pub name: String,
    /// Serving version (content hash); `None` when none serves.
    pub version: Option<String>,
    /// World of the serving version (`Consumer`, `Scheduled`, `HttpTrigger`).
    #[serde(default)]
    pub world: Option<String>,
    /// Serving or refused.
    pub state: ServeState,
    /// Instances serving the version (`subscription.instances`; 1 for scheduled and HTTP
    /// plugins, 0 when none serves). Each has its own memory cap.
    #[serde(default)]
    pub instances: u32,
    /// The last failure: why files were refused, or the last call's error.
    pub last_error: Option<String>,
    /// Calls into the plugin.
    #[serde(default)]
    pub calls: u64,
    /// Calls that trapped.
    #[serde(default)]
    pub traps: u64,
    /// Instances rebuilt after a trap, deadline or memory limit.
    #[serde(default)]
    pub rebuilds: u64,
    /// Events given to the plugin.
    #[serde(default)]
    pub events_in: u64,
    /// Deliveries acknowledged.
    #[serde(default)]
    pub acked: u64,
    /// Deliveries returned for retry.
    #[serde(default)]
    pub retried: u64,
    /// Deliveries sent to the dead-letter topic.
    #[serde(default)]
    pub dead_lettered: u64,
    /// Commit time of the newest event handled, µs since the epoch (0: none yet); the lag
    /// is `now_micros` minus it.
    #[serde(default)]
    pub last_commit_micros: i64,
    /// The counts per source table the plugin reads (one subscription each; several with
    /// `subscription.tables`); the fields above are their totals. Empty for a topic.
    #[serde(default)]
    pub tables: Vec<SubscriptionStatus>,
}

/// One source table a plugin reads: its subscription's counts and how far it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionStatus {
    /// Source table name.
    pub table: String,
    /// The ledger subscription reading it.
    pub subscription: String,
    /// Events given to the plugin.
    pub events_in: u64,
    /// Deliveries acknowledged.
    pub acked: u64,
    /// Deliveries returned for retry.
    pub retried: u64,
    /// Deliveries sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Events the host-side filter skipped.
    pub filtered: u64,
    /// Commit time of the newest event handled, µs since the epoch (0: none yet).
    pub last_commit_micros: i64,
}

impl HostStatus {
    /// The human form `ledgerhost status` prints; `now` (µs) dates the watermarks.
    pub fn render(&self, now: i64) -> String {
        let mut out = String::new();
        let ready = if self.ready { "ready" } else { "not ready" };
        let _ = writeln!(out, "host: {ready}");
        for t in &self.tables {
            let age = behind(now, t.watermark_micros, "no poll yet");
            let _ = write!(
                out,
                "table  {:<20} {} rows polled, {} poll errors, {age}{}",
                t.table,
                t.rows_polled,
                t.poll_errors,
                match (t.leader, &t.holder) {
                    (true, _) => String::new(),
                    (false, Some(h)) => format!(" ({h} polls)"),
                    (false, None) => " (another replica polls)".to_string(),
                }
            );
            if let Some(stream) = &t.change_stream {
                let oldest = t.partitions.iter().map(|p| p.through_micros).min();
                let holders: std::collections::BTreeSet<&str> = t
                    .partitions
                    .iter()
                    .filter_map(|p| p.holder.as_deref())
                    .collect();
                let _ = write!(
                    out,
                    "\n       change stream {stream}: {} partitions read here{}{}",
                    t.partitions.len(),
                    oldest.map_or(String::new(), |o| format!(
                        ", the slowest through {}",
                        behind(now, o, "nothing yet")
                    )),
                    if holders.is_empty() {
                        String::new()
                    } else {
                        format!(
                            ", queried by {}",
                            holders.into_iter().collect::<Vec<_>>().join(", ")
                        )
                    }
                );
            }
            if let Some(why) = &t.stopped {
                let _ = write!(out, "\n       stopped: {why}");
            }
            out.push('\n');
        }
        for p in &self.plugins {
            let err = p
                .last_error
                .as_deref()
                .map(|e| format!("\n       last error: {e}"))
                .unwrap_or_default();
            let lag = if p.last_commit_micros > 0 {
                format!(", lag {:.1}s", age_secs(now, p.last_commit_micros))
            } else {
                String::new()
            };
            let instances = if p.instances > 1 {
                format!(" ({} instances)", p.instances)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "plugin {:<20} {} {}{instances} in {}, acked {}, retried {}, dead-lettered {}{lag}{err}",
                p.name,
                p.state.label(),
                p.version.as_deref().map(short).unwrap_or("-"),
                p.events_in,
                p.acked,
                p.retried,
                p.dead_lettered,
            );
            // One table: the plugin line says it all. Several: each table's own line.
            if p.tables.len() > 1 {
                for t in &p.tables {
                    let _ = writeln!(
                        out,
                        "       table {:<14} in {}, acked {}, retried {}, dead-lettered {}, {}",
                        t.table,
                        t.events_in,
                        t.acked,
                        t.retried,
                        t.dead_lettered,
                        behind(now, t.last_commit_micros, "nothing handled yet")
                    );
                }
            }
        }
        for d in &self.dead_letters {
            let _ = writeln!(
                out,
                "dead letter {} {} ({} attempts, {:.0}s ago): {}",
                d.plugin,
                d.event_id,
                d.attempts,
                age_secs(now, d.at_micros),
                d.reason
            );
        }
        out
    }
}

/// Seconds from `micros` to `now` (both µs since the epoch), never negative.
pub fn age_secs(now: i64, micros: i64) -> f64 {
    (now - micros).max(0) as f64 / 1e6
}

/// `12.5s behind` for a commit time `at` (µs) seen at `now`; `none` when `at` is 0.
fn behind(now: i64, at: i64, none: &str) -> String {
    if at > 0 {
        format!("{:.1}s behind", age_secs(now, at))
    } else {
        none.into()
    }
}

fn short(version: &str) -> &str {
    version.get(..12).unwrap_or(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> HostStatus {
        HostStatus {
            ready: true,
            tables: vec![TableStatus {
                table: "orders".into(),
                rows_polled: 7,
                poll_errors: 1,
                watermark_micros: 1_000_000,
                leader: true,
                shard: None,
                holder: None,
                stopped: None,
                republishes: 0,
                change_stream: None,
                partitions: Vec::new(),
            }],
            plugins: vec![
                PluginStatus {
                    name: "counter".into(),
                    version: Some("0123456789abcdef".into()),
                    world: Some("Consumer".into()),
                    state: ServeState::Serving,
                    instances: 1,
                    last_error: None,
                    calls: 3,
                    traps: 0,
                    rebuilds: 0,
                    events_in: 7,
                    acked: 7,
                    retried: 0,
                    dead_lettered: 0,
                    last_commit_micros: 1_500_000,
                    tables: Vec::new(),
                },
                PluginStatus {
                    name: "busy".into(),
                    version: Some("fedcba9876543210".into()),
                    world: Some("Consumer".into()),
                    state: ServeState::Serving,
                    instances: 3,
                    last_error: None,
                    calls: 9,
                    traps: 1,
                    rebuilds: 1,
                    events_in: 30,
                    acked: 30,
                    retried: 0,
                    dead_lettered: 0,
                    last_commit_micros: 0,
                    tables: ["orders", "payments"]
                        .iter()
                        .zip([(20, 3_000_000), (10, 0)])
                        .map(|(t, (n, last))| SubscriptionStatus {
                            table: t.to_string(),
                            subscription: format!("plugin-busy.{t}"),
                            events_in: n,
                            acked: n,
                            retried: 0,
                            dead_lettered: 0,
                            filtered: 0,
                            last_commit_micros: last,
                        })
                        .collect(),
                },
                PluginStatus {
                    name: "broken".into(),
                    version: None,
                    world: None,
                    state: ServeState::Refused,
                    instances: 0,
                    last_error: Some("broken.wasm: magic bytes".into()),
                    calls: 0,
                    traps: 0,
                    rebuilds: 0,
                    events_in: 0,
                    acked: 0,
                    retried: 0,
                    dead_lettered: 0,
                    last_commit_micros: 0,
                    tables: Vec::new(),
                },
            ],
            now_micros: 3_500_000,
            dead_letters: vec![DeadLetterStatus {
                plugin: "counter".into(),
                event_id: "orders/7/1".into(),
                reason: "poison".into(),
                attempts: 5,
                at_micros: 2_500_000,
            }],
        }
    }

    #[test]
    fn json_round_trips_with_the_documented_labels() {
        let s = sample();
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["plugins"][0]["state"], "serving");
        assert_eq!(json["plugins"][1]["instances"], 3);
        assert_eq!(
            json["plugins"][1]["tables"][1]["subscription"],
            "plugin-busy.payments"
        );
        assert_eq!(json["plugins"][2]["state"], "refused");
        assert_eq!(json["tables"][0]["watermark_micros"], 1_000_000);
        let back: HostStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn a_table_read_from_a_change_stream_shows_its_partitions() {
        let mut status = sample();
        status.tables[0].change_stream = Some("orders_changes".into());
        status.tables[0].partitions = vec![
            PartitionStatus {
                token: "a".into(),
                through_micros: 2_000_000,
                holder: None,
            },
            PartitionStatus {
                token: "b".into(),
                through_micros: 3_000_000,
                holder: None,
            },
        ];
        let text = status.render(3_500_000);
        assert!(
            text.contains("change stream orders_changes: 2 partitions read here, the slowest through 1.5s behind"),
            "{text}"
        );
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(
            json["tables"][0]["partitions"][1]["through_micros"],
            3_000_000
        );
        let polled = serde_json::to_value(sample()).unwrap();
        assert!(polled["tables"][0].get("change_stream").is_none());
    }

    #[test]
    fn render_names_each_table_and_plugin() {
        let text = sample().render(3_500_000);
        assert!(text.starts_with("host: ready\n"), "{text}");
        assert!(
            text.contains("orders") && text.contains("2.5s behind"),
            "{text}"
        );
        assert!(
            text.contains("serving 0123456789ab in 7, acked 7")
                && text.contains("dead-lettered 0, lag 2.0s"),
            "{text}"
        );
        assert!(
            text.contains("broken") && text.contains("refused -"),
            "{text}"
        );
        assert!(
            text.contains("serving fedcba987654 (3 instances) in 30"),
            "{text}"
        );
        assert!(
            text.contains("last error: broken.wasm: magic bytes"),
            "{text}"
        );
        assert!(
            text.contains("dead letter counter orders/7/1 (5 attempts, 1s ago): poison"),
            "{text}"
        );
        assert!(
            text.contains("table orders         in 20, acked 20, retried 0, dead-lettered 0, 0.5s behind")
                && text.contains("table payments       in 10, acked 10, retried 0, dead-lettered 0, nothing handled yet"),
            "{text}"
        );
        // A plugin of one table gets no per-table lines.
        assert_eq!(text.matches("       table ").count(), 2, "{text}");
    }
}
