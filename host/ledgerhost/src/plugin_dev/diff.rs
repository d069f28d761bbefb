//! `plugin diff`: two versions of a consumer plugin fed the same events — recorded files, or
//! a table's archive over a time range read through the blobstore port in commit order —
//! each on its own scratch stores, one event per call, and what each did compared event by
//! event: the disposition and every effect (writes through `blobstore`, `keyvalue`,
//! `warehouse`, publishes through `ledger`), same capability, same key or object, same bytes.
//!
//! Each version starts from empty stores and sees only its own writes; outbound HTTP is not
//! captured yet, so a plugin granted `http` is refused.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use ledgerhost_core::{Disposition, Event};
use ledgerhost_runtime::Plugin;
use ledgerhost_runtime::manifest::World;
use serde::Serialize;

use super::effects::{Bytes, Effect};
use super::json_avro::read_events;
use super::scratch::{Scratch, load, scratch_runtime, world_name};
use crate::config::Config;
use crate::dispatcher::EventFilter;

/// One version of the plugin: its component and manifest.
#[derive(Debug, Clone)]
pub struct Version {
    /// The component.
    pub wasm: PathBuf,
    /// Its manifest (default: beside the component).
    pub manifest: Option<PathBuf>,
}

/// Where the events come from.
#[derive(Debug, Clone)]
pub enum Events {
    /// Recorded events: JSON, an Avro file or a directory of them (as `plugin test`).
    Files(PathBuf),
    /// A table's archive, as the archiver of the host configured in `config` keeps it.
    Archive {
        /// The host's config (its `[blobstore]` and archiver's `bucket-prefix`).
        config: PathBuf,
        /// The table.
        table: String,
        /// Events committed at or after this time, µs (default: the first).
        from: Option<i64>,
        /// Events committed at or before this time, µs (default: the last).
        to: Option<i64>,
        /// The archive's bucket prefix (default: the archiver's, else `archive-`).
        bucket_prefix: Option<String>,
    },
    /// A table's messages the ledger of the host configured in `config` still retains
    /// (where the archive is not there; the embedded ledger reads them, Pub/Sub cannot).
    Ledger {
        /// The host's config (its `[ledger]` and topic prefix).
        config: PathBuf,
        /// The table.
        table: String,
        /// Events committed at or after this time, µs (default: the first).
        from: Option<i64>,
        /// Events committed at or before this time, µs (default: the last).
        to: Option<i64>,
    },
}

/// Options of `plugin diff`.
#[derive(Debug, Clone)]
pub struct DiffRun {
    /// The serving version.
    pub old: Version,
    /// The version to compare with it.
    pub new: Version,
    /// The events both are fed.
    pub events: Events,
    /// Differing events kept in the report, the first ones.
    pub max_differences: usize,
}

/// What one version did with one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// `ack`, `retry: …`, `reject: …`, `filtered` (the manifest's host-side filter) or
    /// `failed: …` (a trap, a deadline, a wrong answer).
    pub disposition: String,
    /// Its writes, in order.
    pub effects: Vec<Effect>,
}

/// An event the versions handled differently.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    /// The event's id.
    pub event: String,
    /// What the old version did.
    pub old: Outcome,
    /// What the new version did.
    pub new: Outcome,
    /// The first thing that differs, in words.
    pub first: String,
}

/// The report of `plugin diff`.
#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    /// `name@version` of the old version.
    pub old: String,
    /// `name@version` of the new version.
    pub new: String,
    /// Events compared.
    pub events: u64,
    /// Events both handled alike.
    pub equal: u64,
    /// Events they handled differently.
    pub differing: u64,
    /// Events the old version failed on (trap, deadline).
    pub old_failures: u64,
    /// Events the new version failed on.
    pub new_failures: u64,
    /// The first differing events (at most `max_differences`).
    pub differences: Vec<Difference>,
}

impl DiffReport {
    /// The report for people.
    pub fn render(&self) -> String {
        let mut out = format!(
            "plugin diff: {} → {} over {} events\n  equal      {}\n  differing  {}\n  \
             failed     {} (old), {} (new)\n",
            self.old,
            self.new,
            self.events,
            self.equal,
            self.differing,
            self.old_failures,
            self.new_failures
        );
        if !self.differences.is_empty() {
            out.push_str(&format!(
                "first {} differing events:\n",
                self.differences.len()
            ));
        }
        for d in &self.differences {
            out.push_str(&format!("  {}\n    {}\n", d.event, d.first));
        }
        out
    }
}

/// The first difference between two outcomes, in words; `None` when they are the same.
pub fn first_difference(old: &Outcome, new: &Outcome) -> Option<String> {
    if old.disposition != new.disposition {
        return Some(format!(
            "disposition: old {}, new {}",
            old.disposition, new.disposition
        ));
    }
    let n = old.effects.len().max(new.effects.len());
    (0..n).find_map(|i| {
        let (a, b) = (old.effects.get(i), new.effects.get(i));
        (a != b).then(|| {
            let side = |e: Option<&Effect>| e.map_or("nothing".to_string(), |e| e.to_string());
            format!("write {} of {}: old {}; new {}", i + 1, n, side(a), side(b))
        })
    })
}

/// One version loaded on its own scratch stores.
struct Side {
    _dir: tempfile::TempDir,
    scratch: Scratch,
    plugin: Arc<Plugin>,
    filter: EventFilter,
    /// The granted topics and the position read up to on each.
    topics: BTreeMap<String, i64>,
}

impl Side {
    async fn load(v: &Version) -> anyhow::Result<Side> {
        let dir = tempfile::tempdir().context("cannot create a scratch directory")?;
        let scratch = scratch_runtime(dir.path()).await?;
        let plugin = load(
            &scratch.runtime,
            &v.wasm,
            v.manifest.as_deref(),
            &BTreeMap::new(),
            dir.path(),
        )
        .await?;
        let m = plugin.manifest().clone();
        if m.world != World::Consumer {
            bail!(
                "`plugin diff` compares consumer plugins; `{}` is a {} plugin",
                m.name,
                world_name(m.world)
            );
        }
        if !m.grants.get("http").is_empty() {
            bail!(
                "`{}` is granted HTTP requests ({}): `plugin diff` does not capture outbound \
                 HTTP yet, and would send them; compare a build without the grant",
                m.name,
                m.grants.get("http").join(", ")
            );
        }
        let sub = m
            .subscription
            .clone()
            .context("consumer manifest without [subscription]")?;
        let mut topics = BTreeMap::new();
        for topic in m.grants.topics().iter().filter(|t| !t.ends_with('*')) {
            scratch.backends.ledger.ensure_topic(topic).await?;
            topics.insert(topic.clone(), 0);
        }
        Ok(Side {
            _dir: dir,
            scratch,
            plugin,
            filter: EventFilter::from(sub.filter),
            topics,
        })
    }

    fn name(&self) -> String {
        format!("{}@{}", self.plugin.manifest().name, self.plugin.version())
    }

    /// Feeds one event and returns what the version did with it.
    async fn handle(&mut self, event: &Event) -> anyhow::Result<Outcome> {
        if !self.filter.matches(event) {
            return Ok(Outcome {
                disposition: "filtered".into(),
                effects: Vec::new(),
            });
        }
        let disposition = match self.plugin.handle(vec![event.clone()]).await {
            Ok(d) => match d.into_iter().next() {
                Some(Disposition::Ack) => "ack".to_string(),
                Some(Disposition::Retry(r)) => format!("retry: {r}"),
                Some(Disposition::Reject(r)) => format!("reject: {r}"),
                None => "failed: no disposition".to_string(),
            },
            Err(e) => format!("failed: {e}"),
        };
        let mut effects = self.scratch.recorder.take();
        let ledger = &self.scratch.backends.ledger;
        for (topic, after) in self.topics.iter_mut() {
            loop {
                let page = ledger.read_retained(topic, *after, 1000).await?;
                let Some(last) = page.last() else { break };
                *after = last.position;
                effects.extend(page.into_iter().map(|r| Effect::Publish {
                    topic: topic.clone(),
                    ordering_key: r.message.ordering_key,
                    data: Bytes::of(&r.message.data),
                    attributes: r.message.attributes.into_iter().collect(),
                }));
            }
        }
        Ok(Outcome {
            disposition,
            effects,
        })
    }
}

/// The events of `source`, in commit order (an archive's: each version once, though the
/// janitor may have compacted some and not deleted their single objects yet).
async fn events_of(source: &Events) -> anyhow::Result<Vec<Event>> {
    let (config, table, from, to, prefix) = match source {
        Events::Files(path) => return read_events(path),
        Events::Ledger {
            config,
            table,
            from,
            to,
        } => return retained_events(config, table, *from, *to).await,
        Events::Archive {
            config,
            table,
            from,
            to,
            bucket_prefix,
        } => (config, table, *from, *to, bucket_prefix),
    };
    let config = Config::load(config)?;
    let bucket = crate::restore::archive_bucket(&config, table, prefix.as_deref());
    let (blobs, _) = config
        .blobstore
        .build(&config.host.data_dir)
        .await
        .context("cannot open the archive's blobstore ([blobstore] of the config)")?;
    let mut archived = Vec::new();
    let mut seen = BTreeSet::new();
    let in_range = |ts: i64| from.is_none_or(|f| ts >= f) && to.is_none_or(|t| ts <= t);
    crate::restore::visit_archive(
        blobs.as_ref(),
        &bucket,
        table,
        &format!("plugin diff: reading {bucket}"),
        |e| {
            if in_range(e.commit_ts) && seen.insert(e.event_id.clone()) {
                archived.push(e);
            }
        },
    )
    .await?;
    ledgerhost_archive::sort_events(&mut archived);
    let decoder = ledgerhost_avro::Decoder::new();
    archived
        .iter()
        .map(|e| {
            decoder
                .decode(&e.avro, &e.attributes())
                .with_context(|| format!("archived event {}", e.event_id))
        })
        .collect()
}

/// The table's messages the ledger retains, decoded, in commit order, each version once
/// (a replay or backfill copy of an event comes again with its id, and is left out).
async fn retained_events(
    config: &std::path::Path,
    table: &str,
    from: Option<i64>,
    to: Option<i64>,
) -> anyhow::Result<Vec<Event>> {
    let config = Config::load(config)?;
    let backends = crate::backends::Backends::connect(&config).await?;
    let topic = config.topic_for(table);
    let decoder = ledgerhost_avro::Decoder::new();
    // By commit time, then as published (a transaction's rows in key order); each id once.
    let mut events: BTreeMap<(i64, i64), Event> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut after = 0;
    loop {
        let page = backends
            .ledger
            .read_retained(&topic, after, 1000)
            .await
            .with_context(|| format!("plugin diff reads the retained messages of {topic}"))?;
        let Some(last) = page.last() else { break };
        after = last.position;
        for r in page {
            let e = decoder
                .decode_message(&r.message)
                .with_context(|| format!("message {} of {topic}", r.position))?;
            if from.is_none_or(|f| e.commit_ts >= f)
                && to.is_none_or(|t| e.commit_ts <= t)
                && seen.insert(e.id.0.clone())
            {
                events.insert((e.commit_ts, r.position), e);
            }
        }
    }
    Ok(events.into_values().collect())
}

/// Runs both versions over the events and compares them.
pub async fn diff(run: &DiffRun) -> anyhow::Result<DiffReport> {
    let events = events_of(&run.events).await?;
    let mut old = Side::load(&run.old).await.context("the old version")?;
    let mut new = Side::load(&run.new).await.context("the new version")?;
    let mut report = DiffReport {
        old: old.name(),
        new: new.name(),
        events: 0,
        equal: 0,
        differing: 0,
        old_failures: 0,
        new_failures: 0,
        differences: Vec::new(),
    };
    for event in &events {
        let a = old.handle(event).await?;
        let b = new.handle(event).await?;
        report.events += 1;
        report.old_failures += u64::from(a.disposition.starts_with("failed"));
        report.new_failures += u64::from(b.disposition.starts_with("failed"));
        match first_difference(&a, &b) {
            None => report.equal += 1,
            Some(first) => {
                report.differing += 1;
                if report.differences.len() < run.max_differences {
                    report.differences.push(Difference {
                        event: event.id.0.clone(),
                        old: a,
                        new: b,
                        first,
                    });
                }
            }
        }
    }
    // Nothing to compare is not "equal": the range or the files were wrong.
    if report.events == 0 {
        bail!("no event to compare: check the events file, or --table, --from and --to");
    }
    Ok(report)
}

/// The versions differ: `plugin diff` exits 1 after printing its report.
#[derive(Debug, thiserror::Error)]
#[error("the versions differ on {0} events")]
pub struct Differ(pub u64);

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> Effect {
        Effect::KeySet {
            key: key.into(),
            value: Bytes::of(value.as_bytes()),
            version: None,
        }
    }

    #[test]
    fn the_first_difference_names_the_disposition_or_the_write() {
        let ack = |effects| Outcome {
            disposition: "ack".into(),
            effects,
        };
        assert_eq!(
            first_difference(&ack(vec![put("a", "1")]), &ack(vec![put("a", "1")])),
            None
        );
        let d = first_difference(&ack(vec![put("a", "1")]), &ack(vec![put("a", "2")])).unwrap();
        assert_eq!(
            d,
            "write 1 of 1: old key set a = \"1\"; new key set a = \"2\""
        );
        let d = first_difference(&ack(vec![put("a", "1")]), &ack(vec![])).unwrap();
        assert_eq!(d, "write 1 of 1: old key set a = \"1\"; new nothing");
        let failed = Outcome {
            disposition: "failed: trap".into(),
            effects: vec![],
        };
        let d = first_difference(&ack(vec![]), &failed).unwrap();
        assert_eq!(d, "disposition: old ack, new failed: trap");
    }
}
