//! `plugin test`: runs a consumer plugin over recorded events in the manifest's batch size
//! and host-side filter, on embedded stores, and reads back what it wrote through the ports
//! ([`TestReport`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use ledgerhost_core::ledger::attr;
use ledgerhost_core::{Disposition, Event};
use ledgerhost_runtime::manifest::World;

use super::effects::show;
use super::json_avro::read_events;
use super::report::{EventOutcome, Outcome, Published, RuntimeCounters, TestReport, Written};
use super::scratch::{Scratch, load, scratch_runtime, world_name};
use crate::dispatcher::EventFilter;

/// Options of `plugin test`.
#[derive(Debug, Clone)]
pub struct TestRun {
    /// The component.
    pub wasm: PathBuf,
    /// Its manifest (default: beside the component).
    pub manifest: Option<PathBuf>,
    /// Events: JSON, an Avro file or a directory of them.
    pub events: PathBuf,
    /// `wasi:config` values overriding the manifest's.
    pub config: BTreeMap<String, String>,
    /// Keep the embedded stores here instead of a temporary directory.
    pub state_dir: Option<PathBuf>,
}

/// Runs a consumer plugin over the events, in the manifest's batch size and host-side
/// filter, and reports dispositions and writes.
pub async fn test(run: &TestRun) -> anyhow::Result<TestReport> {
    let events = read_events(&run.events)?;
    let scratch = tempfile::tempdir().context("cannot create a scratch directory")?;
    let dir = match &run.state_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            d.canonicalize()?
        }
        None => scratch.path().to_path_buf(),
    };
    let scratch_stores = scratch_runtime(&dir).await?;
    let backends = &scratch_stores.backends;
    let plugin = load(
        &scratch_stores.runtime,
        &run.wasm,
        run.manifest.as_deref(),
        &run.config,
        scratch.path(),
    )
    .await?;
    let m = plugin.manifest().clone();
    if m.world != World::Consumer {
        bail!(
            "`plugin test` runs consumer plugins; `{}` is a {} plugin",
            m.name,
            world_name(m.world)
        );
    }
    let sub = m
        .subscription
        .clone()
        .context("consumer manifest without [subscription]")?;
    let filter = EventFilter::from(sub.filter.clone());
    // Granted topics exist, as the host creates them before a plugin runs.
    for topic in m.grants.topics().iter().filter(|t| !t.ends_with('*')) {
        backends.ledger.ensure_topic(topic).await?;
    }
    let mut results = Vec::new();
    let mut counts: BTreeMap<Outcome, u64> = BTreeMap::new();
    let mut note = |event: &Event, disposition: Outcome, reason: Option<String>| {
        *counts.entry(disposition).or_default() += 1;
        results.push(EventOutcome {
            event: event.id.0.clone(),
            disposition,
            reason,
        });
    };
    let mut selected: Vec<&Event> = Vec::new();
    for e in &events {
        if filter.matches(e) {
            selected.push(e);
        } else {
            note(e, Outcome::Filtered, None);
        }
    }
    for batch in selected.chunks(sub.batch_size.max(1)) {
        let owned: Vec<Event> = batch.iter().map(|e| (*e).clone()).collect();
        match plugin.handle(owned).await {
            Ok(dispositions) => {
                for (e, d) in batch.iter().zip(dispositions) {
                    let (kind, reason) = match d {
                        Disposition::Ack => (Outcome::Ack, None),
                        Disposition::Retry(r) => (Outcome::Retry, Some(r)),
                        Disposition::Reject(r) => (Outcome::Reject, Some(r)),
                    };
                    note(e, kind, reason);
                }
            }
            Err(err) => {
                // The host would retry these one by one and rebuild the instance.
                for e in batch {
                    note(e, Outcome::Failed, Some(err.to_string()));
                }
            }
        }
    }
    let wrote = written(&scratch_stores).await?;
    let stats = plugin.stats();
    Ok(TestReport {
        plugin: m.name.clone(),
        version: plugin.version().to_string(),
        events: events.len(),
        counts,
        dispositions: results,
        wrote,
        runtime: RuntimeCounters {
            calls: stats.calls,
            traps: stats.traps,
            deadline_hits: stats.deadline_hits,
            rebuilds: stats.rebuilds,
            memory_high_water_bytes: stats.memory_high_water,
        },
        state_dir: run.state_dir.as_ref().map(|_| dir.display().to_string()),
    })
}

/// Everything the plugin left in the scratch stores, read through the ports.
async fn written(scratch: &Scratch) -> anyhow::Result<Written> {
    let backends = &scratch.backends;
    let mut wrote = Written::default();
    for key in backends.keyvalue.list_keys("").await? {
        if let Some(v) = backends.keyvalue.get(&key).await? {
            wrote.keyvalue.insert(key, show(&v));
        }
    }
    for bucket in scratch.recorder.buckets() {
        let names = backends.blobstore.list(&bucket, "").await?;
        if !names.is_empty() {
            wrote.blobs.insert(bucket, names);
        }
    }
    for table in scratch.recorder.tables() {
        let rows = backends.warehouse.scan(&table).await?;
        wrote
            .warehouse
            .insert(table, rows.into_iter().map(|r| r.event_id).collect());
    }
    for topic in backends.ledger.list_topics().await? {
        let mut after = 0;
        loop {
            let page = backends.ledger.read_retained(&topic, after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = last.position;
            let list = wrote.topics.entry(topic.clone()).or_default();
            list.extend(page.into_iter().map(|r| Published {
                event_id: r.message.attributes.get(attr::EVENT_ID).cloned(),
                ordering_key: r.message.ordering_key,
            }));
        }
    }
    Ok(wrote)
}
