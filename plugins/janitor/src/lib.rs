//! Janitor: on a schedule, compacts each closed span of a table's archived events into one
//! deflate Avro file (`<table>-YYYY_MM_DD_HHMM-HHMM.avro`) and deletes the per-event objects
//! only once the compacted file has been read back and holds every one of them.
//!
//! Crash safety, step by step (a crash or trap can stop a tick anywhere):
//! 1. read the span's per-event objects and its compacted file, if any;
//! 2. write the merged compacted file (the blobstore replaces an object whole, so the file
//!    is the old one or the new one, never torn; the new one is a superset of the old);
//! 3. read it back completely and check every event is in it, byte for byte;
//! 4. delete the per-event objects.
//!
//! Stopped after 1 or 2, the per-event objects are all still there; stopped during 4, the
//! compacted file already holds the deleted ones. Either way the next tick merges whatever
//! is loose into the file again and finishes. A redelivery archived after its span was
//! compacted is merged the same way. Nothing is deleted that was not verified.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use ledgerhost_archive::{
    ArchivedEvent, ObjectName, Span, archived_event, bucket_for, compacted_name, parse_object_name,
    read_compacted, sort_events, write_compacted,
};
use ledgerhost_avro::Decoder;
use ledgerhost_sdk::prelude::*;

/// The plugin.
pub struct Janitor;

fn decoder() -> &'static Decoder {
    static DECODER: OnceLock<Decoder> = OnceLock::new();
    DECODER.get_or_init(Decoder::new)
}

/// The janitor's settings, from its config.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub tables: Vec<String>,
    pub bucket_prefix: String,
    pub span_minutes: u32,
    pub min_age_secs: i64,
    pub keep_originals: bool,
    pub max_spans_per_tick: usize,
}

impl Settings {
    /// Reads and checks the config; the error names the key and the fix.
    pub fn from_config() -> Result<Settings, String> {
        let tables: Vec<String> = config::get("tables")
            .unwrap_or_else(|| "orders".into())
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        if tables.is_empty() {
            return Err("config `tables` names no table; set e.g. tables = \"orders\"".into());
        }
        let span_minutes: u32 = config::parse_or("span-minutes", 60)?;
        if span_minutes == 0 || 1440 % span_minutes != 0 {
            return Err(format!(
                "config `span-minutes` = {span_minutes} must divide a day (1440): e.g. 15, 60, 1440"
            ));
        }
        let min_age_secs: i64 = config::parse_or("min-age-secs", 600)?;
        if min_age_secs < 0 {
            return Err("config `min-age-secs` must not be negative".into());
        }
        let max_spans_per_tick: usize = config::parse_or("max-spans-per-tick", 48)?;
        if max_spans_per_tick == 0 {
            return Err("config `max-spans-per-tick` must be at least 1".into());
        }
        Ok(Settings {
            tables,
            bucket_prefix: config::get("bucket-prefix").unwrap_or_else(|| "archive-".into()),
            span_minutes,
            min_age_secs,
            keep_originals: config::parse_or("keep-originals", false)?,
            max_spans_per_tick,
        })
    }
}

/// What one span's compaction did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Compacted {
    /// Events in the compacted file afterwards.
    pub events: usize,
    /// Per-event objects merged into it by this run.
    pub merged: usize,
    /// Per-event objects deleted after verification.
    pub deleted: usize,
    /// Whether the compacted file was (re)written.
    pub written: bool,
}

fn err(what: &str, e: Error) -> String {
    format!("{what}: {e:?}")
}

/// Compacts the per-event objects `singles` of `span` into the span's file and, unless
/// `keep_originals`, deletes them once the file is verified.
pub fn compact_span(
    bucket: &str,
    table: &str,
    span: Span,
    singles: &[String],
    keep_originals: bool,
) -> Result<Compacted, String> {
    let file = compacted_name(table, span);
    let mut events: BTreeMap<String, ArchivedEvent> = BTreeMap::new();
    let existing =
        blobstore::get(bucket, &file).map_err(|e| err(&format!("reading {bucket}/{file}"), e))?;
    if let Some(bytes) = existing {
        for e in read_compacted(&bytes, decoder()).map_err(|e| {
            format!("{bucket}/{file}: {e}; left as it is, its span's per-event objects are kept")
        })? {
            events.insert(e.event_id.clone(), e);
        }
    }
    let before: BTreeMap<String, Vec<u8>> = events
        .iter()
        .map(|(k, e)| (k.clone(), e.avro.clone()))
        .collect();

    // (object name, event id) of every per-event object merged.
    let mut loose: Vec<(String, String)> = Vec::new();
    for name in singles {
        let Some(bytes) = blobstore::get(bucket, name)
            .map_err(|e| err(&format!("reading {bucket}/{name}"), e))?
        else {
            continue; // deleted meanwhile (a concurrent run)
        };
        let e = match archived_event(decoder(), &bytes, name) {
            Ok(e) if e.table == table && span.contains(e.commit_ts) => e,
            Ok(e) => {
                log_warn!(
                    "{bucket}/{name} holds event {} of {} at {}, which does not belong in {file}; left in place",
                    e.event_id,
                    e.table,
                    e.commit_ts
                );
                continue;
            }
            Err(e) => {
                log_warn!("{bucket}/{name}: {e}; left in place");
                continue;
            }
        };
        loose.push((name.clone(), e.event_id.clone()));
        events.insert(e.event_id.clone(), e);
    }

    let after: BTreeMap<String, Vec<u8>> = events
        .iter()
        .map(|(k, e)| (k.clone(), e.avro.clone()))
        .collect();
    let written = after != before;
    if written {
        let mut ordered: Vec<ArchivedEvent> = events.into_values().collect();
        sort_events(&mut ordered);
        let bytes = write_compacted(&ordered).map_err(|e| format!("{bucket}/{file}: {e}"))?;
        blobstore::put(bucket, &file, &bytes)
            .map_err(|e| err(&format!("writing {bucket}/{file}"), e))?;
    }

    // Verify what is stored now, not what was meant to be written.
    let stored = blobstore::get(bucket, &file)
        .map_err(|e| err(&format!("reading back {bucket}/{file}"), e))?
        .ok_or_else(|| {
            format!("{bucket}/{file} is missing right after writing it; nothing deleted")
        })?;
    let stored: BTreeMap<String, Vec<u8>> = read_compacted(&stored, decoder())
        .map_err(|e| format!("{bucket}/{file} does not read back: {e}; nothing deleted"))?
        .into_iter()
        .map(|e| (e.event_id, e.avro))
        .collect();
    if let Some((id, _)) = after
        .iter()
        .find(|(id, avro)| stored.get(*id) != Some(*avro))
    {
        return Err(format!(
            "{bucket}/{file} read back without event {id} as archived; nothing deleted"
        ));
    }

    let mut deleted = 0;
    if !keep_originals {
        for (name, _) in &loose {
            blobstore::delete(bucket, name)
                .map_err(|e| err(&format!("deleting {bucket}/{name}"), e))?;
            deleted += 1;
        }
    }
    Ok(Compacted {
        events: stored.len(),
        merged: loose.len(),
        deleted,
        written,
    })
}

/// One table's pass: every closed span with per-event objects, oldest first, at most `budget`.
/// Returns the spans handled and the failures (each already logged).
fn compact_table(
    s: &Settings,
    table: &str,
    now: i64,
    budget: usize,
) -> Result<(usize, Vec<String>), String> {
    let bucket = bucket_for(&s.bucket_prefix, table);
    let names = blobstore::list(&bucket, &format!("{table}-"))
        .map_err(|e| err(&format!("listing {bucket}"), e))?;
    let mut spans: BTreeMap<Span, Vec<String>> = BTreeMap::new();
    for name in names {
        if let Some(ObjectName::Single { millis, .. }) = parse_object_name(table, &name) {
            spans
                .entry(Span::containing(
                    millis.saturating_mul(1000),
                    s.span_minutes,
                ))
                .or_default()
                .push(name);
        }
    }
    let closed_before = now.saturating_sub(s.min_age_secs.saturating_mul(1_000_000));
    let mut failures = Vec::new();
    let mut done = 0;
    for (span, singles) in spans
        .iter()
        .filter(|(span, _)| span.end <= closed_before)
        .take(budget)
    {
        let file = compacted_name(table, *span);
        match compact_span(&bucket, table, *span, singles, s.keep_originals) {
            Ok(c) => log_info!(
                "{bucket}/{file}: {} events ({} merged from per-event objects, {} of them deleted{})",
                c.events,
                c.merged,
                c.deleted,
                if c.written { "" } else { "; file unchanged" }
            ),
            Err(e) => {
                log_error!("{e}");
                failures.push(e);
            }
        }
        done += 1;
    }
    Ok((done, failures))
}

impl Scheduled for Janitor {
    fn tick(now: i64) -> Result<(), String> {
        let s = Settings::from_config()?;
        let mut budget = s.max_spans_per_tick;
        let mut failures = Vec::new();
        for table in &s.tables {
            match compact_table(&s, table, now, budget) {
                Ok((done, f)) => {
                    budget = budget.saturating_sub(done);
                    failures.extend(f);
                }
                Err(e) => {
                    log_error!("{e}");
                    failures.push(e);
                }
            }
            if budget == 0 {
                log_info!("span budget of this tick used up; the rest at the next tick");
                break;
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} span(s) not compacted (retried at the next tick): {}",
                failures.len(),
                failures.join("; ")
            ))
        }
    }
}

export_scheduled!(Janitor);

#[cfg(test)]
mod tests;
