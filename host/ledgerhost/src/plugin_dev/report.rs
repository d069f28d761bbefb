//! The report of `plugin test`: one typed struct, serialised for `--json` and printed by
//! [`TestReport::render`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// What `plugin test` found: every event's disposition and everything the plugin wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestReport {
    /// Plugin name (manifest).
    pub plugin: String,
    /// Component version (content hash).
    pub version: String,
    /// Events read.
    pub events: usize,
    /// Events per outcome (`ack`, `retry`, `reject`, `failed`, `filtered`).
    pub counts: BTreeMap<Outcome, u64>,
    /// One entry per event, in input order for the filtered ones first, then by batch.
    pub dispositions: Vec<EventOutcome>,
    /// What the plugin left in the stores.
    pub wrote: Written,
    /// The runtime's counters after the run.
    pub runtime: RuntimeCounters,
    /// Where the stores were kept (`--state-dir`), if kept.
    pub state_dir: Option<String>,
}

/// What became of one event (declared in label order: counts print alphabetically).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Handled.
    Ack,
    /// The plugin call failed (trap, deadline, memory); the host would isolate and retry.
    Failed,
    /// Skipped by the manifest's host-side filter.
    Filtered,
    /// Rejected (the host would dead-letter it).
    Reject,
    /// Returned for retry (the host would redeliver with backoff).
    Retry,
}

impl Outcome {
    /// The label in the report.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ack => "ack",
            Outcome::Retry => "retry",
            Outcome::Reject => "reject",
            Outcome::Failed => "failed",
            Outcome::Filtered => "filtered",
        }
    }
}

/// One event's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventOutcome {
    /// Event id.
    pub event: String,
    /// What happened to it.
    pub disposition: Outcome,
    /// The plugin's reason (retry, reject) or the call's error (failed).
    pub reason: Option<String>,
}

/// Everything the plugin left in the stores, read back through the ports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Written {
    /// Live keys and a printable form of their values.
    pub keyvalue: BTreeMap<String, String>,
    /// Object names by bucket.
    pub blobs: BTreeMap<String, Vec<String>>,
    /// Event ids of the rows by warehouse table.
    pub warehouse: BTreeMap<String, Vec<String>>,
    /// Published messages by topic.
    pub topics: BTreeMap<String, Vec<Published>>,
}

/// One message the plugin published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Published {
    /// Its ordering key.
    pub ordering_key: String,
    /// Its `event_id` attribute, if it has one.
    pub event_id: Option<String>,
}

/// The runtime's counters of the plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RuntimeCounters {
    /// Calls into the plugin.
    pub calls: u64,
    /// Calls that trapped.
    pub traps: u64,
    /// Calls stopped at their deadline.
    pub deadline_hits: u64,
    /// Instances rebuilt.
    pub rebuilds: u64,
    /// Largest linear memory reached, in bytes.
    pub memory_high_water_bytes: u64,
}

impl TestReport {
    /// The human form `plugin test` prints without `--json`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "plugin {} ({}) over {} events",
            self.plugin, self.version, self.events
        );
        for d in &self.dispositions {
            let reason = d
                .reason
                .as_deref()
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            let _ = writeln!(out, "  {:<9} {}{reason}", d.disposition.label(), d.event);
        }
        let parts: Vec<String> = self
            .counts
            .iter()
            .map(|(k, v)| format!("{} {v}", k.label()))
            .collect();
        let _ = writeln!(out, "totals: {}", parts.join(", "));
        let w = &self.wrote;
        let mut nothing = true;
        for (k, v) in &w.keyvalue {
            nothing = false;
            let _ = writeln!(out, "keyvalue  {k} = {v}");
        }
        for (label, map) in [("blob", &w.blobs), ("warehouse", &w.warehouse)] {
            for (k, items) in map {
                for item in items {
                    nothing = false;
                    let _ = writeln!(out, "{label:<9} {k}/{item}");
                }
            }
        }
        for (topic, msgs) in &w.topics {
            for m in msgs {
                nothing = false;
                let _ = writeln!(
                    out,
                    "published {topic} key={} event={}",
                    m.ordering_key,
                    m.event_id.as_deref().unwrap_or("-")
                );
            }
        }
        if nothing {
            let _ = writeln!(out, "wrote nothing");
        }
        if let Some(dir) = &self.state_dir {
            let _ = writeln!(out, "stores kept in {dir}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TestReport {
        let mut wrote = Written::default();
        wrote.keyvalue.insert("v/1".into(), "\"x\"".into());
        wrote
            .blobs
            .insert("archive-orders".into(), vec!["a.avro".into()]);
        wrote.topics.insert(
            "out".into(),
            vec![Published {
                ordering_key: "k".into(),
                event_id: None,
            }],
        );
        TestReport {
            plugin: "p".into(),
            version: "v1".into(),
            events: 2,
            counts: [(Outcome::Ack, 1), (Outcome::Filtered, 1)].into(),
            dispositions: vec![
                EventOutcome {
                    event: "t/2/2".into(),
                    disposition: Outcome::Filtered,
                    reason: None,
                },
                EventOutcome {
                    event: "t/1/1".into(),
                    disposition: Outcome::Ack,
                    reason: None,
                },
            ],
            wrote,
            runtime: RuntimeCounters {
                calls: 1,
                traps: 0,
                deadline_hits: 0,
                rebuilds: 0,
                memory_high_water_bytes: 65536,
            },
            state_dir: None,
        }
    }

    #[test]
    fn json_keeps_the_documented_shape() {
        let j = serde_json::to_value(sample()).unwrap();
        assert_eq!(j["counts"]["ack"], 1);
        assert_eq!(j["counts"]["filtered"], 1);
        assert_eq!(j["dispositions"][0]["disposition"], "filtered");
        assert_eq!(j["wrote"]["keyvalue"]["v/1"], "\"x\"");
        assert_eq!(j["wrote"]["blobs"]["archive-orders"][0], "a.avro");
        assert_eq!(j["wrote"]["topics"]["out"][0]["ordering_key"], "k");
        assert_eq!(j["runtime"]["memory_high_water_bytes"], 65536);
    }

    #[test]
    fn render_reads_the_struct() {
        let text = sample().render();
        assert!(text.starts_with("plugin p (v1) over 2 events\n"), "{text}");
        assert!(text.contains("  filtered  t/2/2\n"), "{text}");
        assert!(text.contains("totals: ack 1, filtered 1\n"), "{text}");
        assert!(text.contains("blob      archive-orders/a.avro\n"), "{text}");
        assert!(text.contains("published out key=k event=-\n"), "{text}");
        assert!(!text.contains("wrote nothing"), "{text}");
    }
}
