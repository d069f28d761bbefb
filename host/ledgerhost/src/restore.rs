//! `ledgerhost restore`: rebuilds a table from its archive (the archiver's per-event objects
//! and the janitor's compacted files, read through the blobstore port) into a database
//! reached through the restore-target port ([`TableWriter`]).
//!
//! For each primary key the newest archived version committed at or before `--at` wins; a
//! key whose winner is a tombstone, or (with `--at`) whose versions all came later, is
//! deleted from the target. Every write is an upsert or a delete of that final state, so a
//! second run over the same archive changes nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use ledgerhost_archive::{ArchivedEvent, ObjectName, archived_event, bucket_for, read_compacted};
use ledgerhost_avro::Decoder;
use ledgerhost_core::capabilities::BlobStore;
use ledgerhost_core::target::{TableWriter, WriteBatch, restored_schema};
use ledgerhost_core::{Field, TableSchema, Value};

use crate::config::Config;

mod target;

use crate::progress_bar::ProgressBar;
pub use target::RestoreTarget;

/// The archiver's default `bucket-prefix` (its manifest's and docs/plugins-archive.md's).
const DEFAULT_BUCKET_PREFIX: &str = "archive-";

/// Times the archive is listed again when objects vanish while it is read (a janitor run
/// compacting them); the compacted file holding them appears in the next listing.
const MAX_LISTINGS: usize = 5;

/// `ledgerhost restore`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// Config file of the host whose archive is read (its `[blobstore]`; the archiver's
    /// `bucket-prefix` from `[plugins.archiver.config]`).
    #[arg(long, short, env = "LEDGERHOST_CONFIG")]
    pub config: PathBuf,
    /// Table to restore (as the archiver named it).
    #[arg(long)]
    pub table: String,
    /// Where to write: `sqlite:PATH` or `spanner:projects/P/instances/I/databases/D`.
    #[arg(long)]
    pub into: String,
    /// Restore the table as it stood at this commit time, µs since the epoch (default:
    /// everything archived).
    #[arg(long)]
    pub at: Option<i64>,
    /// Bucket prefix of the archive (default: the archiver's configured one, else `archive-`).
    #[arg(long)]
    pub bucket_prefix: Option<String>,
    /// Rows per write transaction (Spanner: lowered to fit its mutations per commit).
    #[arg(long, default_value_t = 1000)]
    pub batch_rows: usize,
    /// Spanner data-plane endpoint, e.g. `http://127.0.0.1:9010` (default:
    /// `SPANNER_EMULATOR_HOST`, else Google's).
    #[arg(long)]
    pub spanner_endpoint: Option<String>,
    /// Spanner admin (REST) endpoint for creating the table (default: derived by the client).
    #[arg(long)]
    pub spanner_admin_endpoint: Option<String>,
}

/// The archive of one table, folded to each key's newest version at or before `--at`.
#[derive(Debug, Default)]
pub struct Folded {
    /// Each key's newest version, by encoded key.
    pub newest: HashMap<String, ArchivedEvent>,
    /// Keys archived only after `--at` (they did not exist yet), by encoded key.
    pub later_only: HashMap<String, Vec<Value>>,
    /// Compacted files read.
    pub compacted_files: u64,
    /// Per-event objects read.
    pub single_objects: u64,
    /// Archived events read (a version present twice, loose and compacted, counts twice).
    pub events: u64,
}

impl Folded {
    fn add(&mut self, e: ArchivedEvent, at: Option<i64>) {
        self.events += 1;
        if at.is_some_and(|at| e.commit_ts > at) {
            if !self.newest.contains_key(&e.ordering_key) {
                self.later_only.insert(e.ordering_key.clone(), e.key);
            }
            return;
        }
        self.later_only.remove(&e.ordering_key);
        match self.newest.get(&e.ordering_key) {
            Some(kept) if kept.commit_ts >= e.commit_ts => {}
            _ => {
                self.newest.insert(e.ordering_key.clone(), e);
            }
        }
    }
}

/// Reads every archived object of `table` and folds it to the state at `at`.
pub async fn read_archive(
    blobs: &dyn BlobStore,
    bucket: &str,
    table: &str,
    at: Option<i64>,
) -> anyhow::Result<Folded> {
    let mut folded = Folded::default();
    // Objects after `at` are read too: the keys they create must be deleted from a target
    // restored earlier to a later instant.
    let (compacted, singles) = visit_archive(
        blobs,
        bucket,
        table,
        &format!("restore {table}: reading {bucket}"),
        |e| folded.add(e, at),
    )
    .await?;
    folded.compacted_files = compacted;
    folded.single_objects = singles;
    Ok(folded)
}

/// Hands every archived event of `table` in `bucket` — the archiver's per-event objects and
/// the janitor's compacted files — to `each`, once per object it sits in (a version both
/// loose and compacted comes twice); objects compacted while they are read are found in
/// the next listing. `label` names the progress bar. Returns the compacted files and single
/// objects read.
pub async fn visit_archive(
    blobs: &dyn BlobStore,
    bucket: &str,
    table: &str,
    label: &str,
    mut each: impl FnMut(ArchivedEvent),
) -> anyhow::Result<(u64, u64)> {
    let decoder = Decoder::new();
    let (mut compacted, mut singles) = (0u64, 0u64);
    let mut read: HashSet<String> = HashSet::new();
    let mut progress = ProgressBar::counting(label, "objects");
    for listing in 1..=MAX_LISTINGS {
        let names = blobs
            .list(bucket, &format!("{table}-"))
            .await
            .with_context(|| format!("cannot list bucket {bucket} ({})", blobs.backend()))?;
        let wanted: Vec<(String, ObjectName)> = names
            .into_iter()
            .filter(|n| !read.contains(n))
            .filter_map(|n| ledgerhost_archive::parse_object_name(table, &n).map(|o| (n, o)))
            .collect();
        if listing == 1 && wanted.is_empty() {
            bail!(
                "bucket {bucket} ({}) holds no archived object of table `{table}`: check \
                 --table, --bucket-prefix and the config's [blobstore]",
                blobs.backend()
            );
        }
        let total = wanted.len();
        let mut vanished = 0usize;
        for (i, (name, object)) in wanted.into_iter().enumerate() {
            let Some(bytes) = blobs
                .get(bucket, &name)
                .await
                .with_context(|| format!("cannot read {bucket}/{name}"))?
            else {
                vanished += 1;
                continue;
            };
            let events = match object {
                ObjectName::Single { .. } => {
                    singles += 1;
                    vec![archived_event(&decoder, &bytes, &name)?]
                }
                ObjectName::Compacted(_) => {
                    compacted += 1;
                    read_compacted(&bytes, &decoder).with_context(|| format!("{bucket}/{name}"))?
                }
            };
            for e in events {
                if e.table != table {
                    bail!(
                        "{bucket}/{name} holds an event of table `{}`, not `{table}`; the \
                         bucket is shared by tables whose names differ only in case",
                        e.table
                    );
                }
                each(e);
            }
            read.insert(name);
            progress.update(
                (i + 1) as f64 / total.max(1) as f64,
                read.len() as u64,
                false,
            );
        }
        if vanished == 0 {
            progress.update(1.0, read.len() as u64, true);
            return Ok((compacted, singles));
        }
        tracing::info!(
            vanished,
            listing,
            "archived objects vanished while reading (compacted meanwhile); listing again"
        );
    }
    bail!(
        "bucket {bucket} kept changing while it was read ({MAX_LISTINGS} listings): stop the \
         janitor or run the command again"
    )
}

/// The table schema restored rows are written with: that of the newest kept version, checked
/// against every other writer schema among the kept versions (same key, same types).
fn target_schema(folded: &Folded) -> anyhow::Result<(TableSchema, HashMap<String, TableSchema>)> {
    let mut schemas: HashMap<String, TableSchema> = HashMap::new();
    let mut newest: Option<&ArchivedEvent> = None;
    for e in folded.newest.values() {
        if !schemas.contains_key(&e.schema_fingerprint) {
            let s = ledgerhost_avro::table_schema_of(&e.avro)
                .with_context(|| format!("event {}", e.event_id))?;
            schemas.insert(e.schema_fingerprint.clone(), s);
        }
        if newest.is_none_or(|n| e.commit_ts > n.commit_ts) {
            newest = Some(e);
        }
    }
    let Some(newest) = newest else {
        bail!("no archived version to restore");
    };
    let target = schemas[&newest.schema_fingerprint].clone();
    for s in schemas.values() {
        if s.primary_key != target.primary_key {
            bail!(
                "the archive's rows have different primary keys ({} and {}); restore cannot \
                 merge them into one table",
                s.primary_key.join(", "),
                target.primary_key.join(", ")
            );
        }
        for c in &s.columns {
            if let Some(t) = target.columns.iter().find(|t| t.name == c.name)
                && t.ty != c.ty
            {
                bail!(
                    "column `{}` is {:?} in older archived rows but {:?} in the newest; \
                     restore cannot write both into one column",
                    c.name,
                    c.ty,
                    t.ty
                );
            }
        }
    }
    Ok((target, schemas))
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// True when the target table was created.
    pub created: bool,
    /// Rows upserted (each key's newest live version).
    pub upserted: u64,
    /// Keys deleted (newest version a tombstone, or created after `--at`).
    pub deleted: u64,
    /// Rows per write transaction used.
    pub batch_rows: usize,
}

/// Writes the folded archive into `writer` in batches of at most `batch_rows` rows.
pub async fn write_folded(
    writer: &dyn TableWriter,
    folded: Folded,
    batch_rows: usize,
    label: &str,
) -> anyhow::Result<Summary> {
    let (schema, _) = target_schema(&folded)?;
    let schema = restored_schema(schema);
    let prepared = writer
        .ensure_table(&schema)
        .await
        .with_context(|| format!("cannot restore into table `{}`", schema.name))?;
    let batch_rows = prepared
        .max_batch_rows
        .map_or(batch_rows, |m| m.min(batch_rows))
        .max(1);
    let decoder = Decoder::new();
    // Key order, so batches (and a rerun's batches) are the same every time.
    let mut finals: BTreeMap<String, Result<Vec<Field>, Vec<Value>>> = BTreeMap::new();
    for (k, e) in folded.newest {
        if e.deleted {
            finals.insert(k, Err(e.key));
            continue;
        }
        let event = decoder
            .decode(&e.avro, &[])
            .with_context(|| format!("event {}", e.event_id))?;
        let fields: Vec<Field> = event
            .fields
            .into_iter()
            // A column dropped from the table since this version was archived, or one the
            // host added in capture by change stream, is not restored.
            .filter(|f| schema.column_index(&f.name).is_some())
            .collect();
        finals.insert(k, Ok(fields));
    }
    for (k, key) in folded.later_only {
        finals.insert(k, Err(key));
    }
    let total = finals.len();
    let mut progress = ProgressBar::counting(label, "rows");
    let (mut upserted, mut deleted, mut done) = (0u64, 0u64, 0u64);
    let mut batch = WriteBatch::default();
    let mut rows = finals.into_values().peekable();
    while let Some(row) = rows.next() {
        match row {
            Ok(fields) => batch.upserts.push(fields),
            Err(key) => batch.deletes.push(key),
        }
        if batch.len() >= batch_rows || rows.peek().is_none() {
            let (u, d) = (batch.upserts.len() as u64, batch.deletes.len() as u64);
            writer
                .write_batch(&schema, std::mem::take(&mut batch))
                .await
                .with_context(|| {
                    format!(
                        "writing rows {}..{} of {total} into `{}` ({})",
                        done + 1,
                        done + u + d,
                        schema.name,
                        writer.backend()
                    )
                })?;
            upserted += u;
            deleted += d;
            done += u + d;
            progress.update(done as f64 / total.max(1) as f64, done, false);
        }
    }
    progress.update(1.0, done, true);
    Ok(Summary {
        created: prepared.created,
        upserted,
        deleted,
        batch_rows,
    })
}

/// The bucket the archiver of `config` keeps `table`'s events in: `bucket_prefix`, else the
/// archiver's configured `bucket-prefix`, else `archive-`, then the table.
pub fn archive_bucket(config: &Config, table: &str, bucket_prefix: Option<&str>) -> String {
    let prefix = bucket_prefix
        .map(str::to_string)
        .or_else(|| {
            config
                .plugins
                .get("archiver")
                .and_then(|p| p.config.get("bucket-prefix").cloned())
        })
        .unwrap_or_else(|| DEFAULT_BUCKET_PREFIX.to_string());
    bucket_for(&prefix, table)
}

/// `ledgerhost restore`: reads the archive, writes the final state, prints a summary.
pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    if !crate::config::is_identifier(&args.table) {
        bail!(
            "--table `{}`: table names are letters, digits and `_`",
            args.table
        );
    }
    if args.batch_rows == 0 {
        bail!("--batch-rows must be at least 1");
    }
    let mut target = RestoreTarget::parse(&args.into)?;
    if let RestoreTarget::Spanner {
        endpoint,
        admin_endpoint,
        ..
    } = &mut target
    {
        endpoint.clone_from(&args.spanner_endpoint);
        admin_endpoint.clone_from(&args.spanner_admin_endpoint);
    }
    let bucket = archive_bucket(&config, &args.table, args.bucket_prefix.as_deref());
    let (blobs, _) = config
        .blobstore
        .build(&config.host.data_dir)
        .await
        .context("cannot open the archive's blobstore ([blobstore] of the config)")?;
    let folded = read_archive(blobs.as_ref(), &bucket, &args.table, args.at).await?;
    let (objects, events) = (
        folded.compacted_files + folded.single_objects,
        folded.events,
    );
    if folded.newest.is_empty() && folded.later_only.is_empty() {
        println!(
            "nothing to restore: no version of `{}` committed at or before {} in {bucket}",
            args.table,
            args.at.map_or("now".into(), |a| a.to_string())
        );
        return Ok(());
    }
    if folded.newest.is_empty() {
        bail!(
            "no version of `{}` was committed at or before --at {}; the table schema to \
             create is unknown, and there is nothing to write",
            args.table,
            args.at.unwrap_or_default()
        );
    }
    let writer: Arc<dyn TableWriter> = crate::backends::restore_target(&target).await?;
    let summary = write_folded(
        writer.as_ref(),
        folded,
        args.batch_rows,
        &format!("restore {} → {}", args.table, args.into),
    )
    .await?;
    println!(
        "restored `{}` into {}{}: {} rows written, {} keys deleted, from {events} archived \
         events in {objects} objects of {bucket} ({} rows per transaction)",
        args.table,
        args.into,
        if summary.created {
            " (table created)"
        } else {
            ""
        },
        summary.upserted,
        summary.deleted,
        summary.batch_rows
    );
    Ok(())
}

#[cfg(test)]
mod tests;
