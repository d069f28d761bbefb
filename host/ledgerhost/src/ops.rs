//! Operator commands beside `run`: `status` (asks a running host's admin port), `replay`
//! (re-delivers retained ledger messages of a commit-time range), `backfill` (republishes
//! a table's rows from the source) and `dead-letter list|redrive` (a plugin's dead letters,
//! through the ledger port). The republishing commands keep event ids, ordering keys and
//! attributes, so idempotent sinks absorb the copies.

use std::path::PathBuf;

use anyhow::{Context, bail};
use ledgerhost_core::Value;
use ledgerhost_core::ledger::attr::{REPLAY_FOR, REPLAY_OF};
use ledgerhost_core::ledger::{Message, attr};
use ledgerhost_core::source::{Position, TableSpec};
use ledgerhost_manifest::names;

use crate::config::Config;
use crate::progress_bar::ProgressBar;

// ---------------------------------------------------------------------------------------
// status

/// Prints a running host's status ([`crate::status::HostStatus`]): as JSON with `json`,
/// else one line per table and plugin.
pub async fn status(addr: &str, json: bool) -> anyhow::Result<()> {
    let status = crate::admin_client::status(addr).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.render(crate::metrics::now_micros()));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// replay

/// `ledgerhost replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Config file of the host whose ledger is read.
    #[arg(long, short, env = "LEDGERHOST_CONFIG")]
    pub config: PathBuf,
    /// Source table whose topic is replayed.
    #[arg(long)]
    pub table: String,
    /// First commit time to replay, µs since the epoch (default: the oldest retained).
    #[arg(long)]
    pub from: Option<i64>,
    /// Last commit time to replay, µs since the epoch (default: the newest).
    #[arg(long)]
    pub to: Option<i64>,
    /// Re-deliver to this plugin only (its next batches handle the range again).
    #[arg(long, conflicts_with = "topic", required_unless_present = "topic")]
    pub plugin: Option<String>,
    /// Publish the range onto this new topic instead (created; must not exist yet).
    #[arg(long)]
    pub topic: Option<String>,
}

/// Re-delivers the range; prints where it went and how many messages.
pub async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    if !config.tables.iter().any(|t| t.name == args.table) {
        bail!(
            "--table {}: not a table of {} (tables: {})",
            args.table,
            args.config.display(),
            config
                .tables
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let (Some(f), Some(t)) = (args.from, args.to)
        && f > t
    {
        bail!("--from {f} is after --to {t}");
    }
    let backends = crate::backends::Backends::connect(&config).await?;
    let ledger = &backends.ledger;
    let source_topic = config.topic_for(&args.table);
    // The retained log is read through the ledger port; a ledger that cannot read a topic
    // (Pub/Sub) says what to do instead.
    let total = ledger
        .retained_count(&source_topic)
        .await
        .context("replay reads the topic's retained messages")?;
    let (target, tag) = match (&args.plugin, &args.topic) {
        (Some(p), _) => {
            let manifest = config.host.plugin_dir.join(format!("{p}.toml"));
            if !manifest.is_file() {
                bail!(
                    "--plugin {p}: no {} in the plugin directory",
                    manifest.display()
                );
            }
            // Copies go onto the table's topic: a plugin reading another topic would
            // never see them.
            let m = ledgerhost_runtime::Manifest::load(&manifest)?;
            let configured = config.tables.iter().map(|t| t.name.as_str());
            let reads: Vec<String> = match &m.subscription {
                Some(s) => match &s.topic {
                    Some(topic) => vec![topic.clone()],
                    None => s
                        .tables_in(configured)
                        .map_err(|e| anyhow::anyhow!("--plugin {p}: {e}"))?
                        .iter()
                        .map(|t| config.topic_for(t))
                        .collect(),
                },
                None => Vec::new(),
            };
            if !reads.contains(&source_topic) {
                bail!(
                    "--plugin {p} does not consume table {} (its subscriptions read {}); \
                     replay onto a new topic with --topic instead",
                    args.table,
                    if reads.is_empty() {
                        "nothing".to_string()
                    } else {
                        reads.join(", ")
                    }
                );
            }
            (source_topic.clone(), Some((REPLAY_FOR, p.clone())))
        }
        (None, Some(t)) => {
            if t.len() < 3
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                bail!("--topic `{t}`: use 3 or more letters, digits, `-`, `_` or `.`");
            }
            if ledger.retained_count(t).await? > 0 {
                bail!("--topic {t} already holds messages; replay onto a new topic");
            }
            ledger.ensure_topic(t).await?;
            (t.clone(), None)
        }
        (None, None) => bail!("pass --plugin NAME or --topic NEW"),
    };
    let mut progress = ProgressBar::new(&format!("replay {source_topic} → {target}"));
    let (mut after, mut seen, mut sent) = (0i64, 0u64, 0u64);
    loop {
        let page = ledger.read_retained(&source_topic, after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        seen += page.len() as u64;
        let batch: Vec<Message> = page
            .into_iter()
            .map(|r| r.message)
            // Copies made by earlier replays are not replayed again.
            .filter(|m| !m.attributes.contains_key(REPLAY_FOR))
            .filter(|m| {
                let ts = m
                    .attributes
                    .get(attr::COMMIT_TS)
                    .and_then(|t| t.parse::<i64>().ok());
                match ts {
                    Some(ts) => {
                        args.from.is_none_or(|f| ts >= f) && args.to.is_none_or(|t| ts <= t)
                    }
                    None => false,
                }
            })
            .map(|mut m| {
                m.attributes.insert(REPLAY_OF.into(), source_topic.clone());
                if let Some((k, v)) = &tag {
                    m.attributes.insert((*k).into(), v.clone());
                }
                m
            })
            .collect();
        sent += batch.len() as u64;
        ledger.publish(&target, batch).await?;
        progress.update(seen as f64 / total.max(1) as f64, sent, false);
    }
    progress.update(1.0, sent, true);
    match &args.plugin {
        Some(p) => println!("replayed {sent} messages of {source_topic} to plugin {p}"),
        None => println!("{target}"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// backfill

/// `ledgerhost backfill`.
#[derive(Debug, clap::Args)]
pub struct BackfillArgs {
    /// Config file of the host (source, ledger, table settings).
    #[arg(long, short, env = "LEDGERHOST_CONFIG")]
    pub config: PathBuf,
    /// Table to backfill.
    #[arg(long)]
    pub table: String,
    /// First commit time, µs since the epoch (default: every row).
    #[arg(long)]
    pub from: Option<i64>,
    /// Last commit time, µs since the epoch (default: now).
    #[arg(long)]
    pub to: Option<i64>,
    /// Topic to publish onto (default: the table's own topic, so every plugin sees the rows).
    #[arg(long)]
    pub topic: Option<String>,
}

/// Publishes the table's rows with commit time in [from, to] as they are now in the source.
pub async fn backfill(args: BackfillArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let Some(table) = config.tables.iter().find(|t| t.name == args.table) else {
        bail!(
            "--table {}: not a table of {}",
            args.table,
            args.config.display()
        );
    };
    let backends = crate::backends::Backends::connect(&config).await?;
    let spec = TableSpec {
        name: table.name.clone(),
        commit_ts_column: table.commit_ts_column.clone(),
        deleted_column: table.deleted_column.clone(),
        sharding: Default::default(),
    };
    if let (Some(stream), Some(capture)) = (&table.change_stream, &backends.change_capture) {
        let schema = capture
            .prepare_stream(&spec, stream)
            .await
            .with_context(|| format!("table `{}` cannot be captured", spec.name))?;
        if ledgerhost_core::change::virtual_columns::is_virtual(&schema.commit_ts_column) {
            return backfill_by_key(&args, &config, table, &backends, &schema).await;
        }
    }
    backends
        .source
        .prepare_table(&spec)
        .await
        .with_context(|| format!("table `{}` cannot be captured", spec.name))?;
    let topic = backfill_topic(&args, &config, &table.name, &backends).await?;
    let mut snapshot = backends.source.snapshot().await?;
    let read_ts = snapshot.read_ts();
    let end = args.to.map_or(read_ts, |t| t.min(read_ts));
    let schema = snapshot.schema(&spec).await?;
    let encoder = ledgerhost_avro::Encoder::new(&schema)?.with_ordering(config.ledger.ordering());
    let start = args.from.unwrap_or(0);
    let mut after = Position::after_ts(start.saturating_sub(1));
    let mut first_ts: Option<i64> = None;
    let mut published = 0u64;
    let mut progress = ProgressBar::new(&format!("backfill {} → {topic}", table.name));
    'pages: loop {
        let rows = snapshot.page(&schema, &after, table.page_size).await?;
        let Some(last) = rows.last() else { break };
        let key_idx = schema.key_indexes();
        after = Position {
            commit_ts: last.commit_ts,
            key: key_idx
                .iter()
                .map(|i| last.values[*i].clone())
                .collect::<Vec<Value>>(),
        };
        let mut page = encoder.batch();
        let mut done = false;
        for row in &rows {
            if row.commit_ts > end {
                done = true;
                break;
            }
            first_ts.get_or_insert(row.commit_ts);
            encoder.encode_into(&mut page, row)?;
        }
        published += page.len() as u64;
        backends.ledger.publish(&topic, page.to_messages()).await?;
        let lo = first_ts.unwrap_or(start);
        progress.update(
            (after.commit_ts - lo) as f64 / (end - lo).max(1) as f64,
            published,
            false,
        );
        if done {
            break 'pages;
        }
    }
    progress.update(1.0, published, true);
    println!("backfilled {published} rows of {} onto {topic}", table.name);
    Ok(())
}

/// The topic a backfill publishes onto (`--topic`, else the table's), created if missing.
async fn backfill_topic(
    args: &BackfillArgs,
    config: &Config,
    table: &str,
    backends: &crate::backends::Backends,
) -> anyhow::Result<String> {
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| config.topic_for(table));
    backends.ledger.ensure_topic(&topic).await?;
    Ok(topic)
}

/// Backfill of a table captured by change stream that has no commit-timestamp column: every
/// row as it stands now, in key order, each with the snapshot's read point as its commit
/// time (events with the stream's schema, so plugins see one schema; a later change has a
/// later commit time).
async fn backfill_by_key(
    args: &BackfillArgs,
    config: &Config,
    table: &crate::config::TableConfig,
    backends: &crate::backends::Backends,
    schema: &ledgerhost_core::TableSchema,
) -> anyhow::Result<()> {
    if args.from.is_some() || args.to.is_some() {
        bail!(
            "--from/--to: table `{}` has no commit-timestamp column to select rows by; backfill \
             publishes every row as it stands now (leave both out)",
            table.name
        );
    }
    let topic = backfill_topic(args, config, &table.name, backends).await?;
    let mut snapshot = backends.source.snapshot().await?;
    let encoder = ledgerhost_avro::Encoder::new(schema)?.with_ordering(config.ledger.ordering());
    let key_idx = schema.key_indexes();
    let mut after: Vec<Value> = Vec::new();
    let mut published = 0u64;
    let mut progress = ProgressBar::new(&format!("backfill {} → {topic}", table.name));
    loop {
        let rows = snapshot.key_page(schema, &after, table.page_size).await?;
        let Some(last) = rows.last() else { break };
        after = key_idx.iter().map(|i| last.values[*i].clone()).collect();
        let mut page = encoder.batch();
        for row in &rows {
            encoder.encode_into(&mut page, row)?;
        }
        published += page.len() as u64;
        backends.ledger.publish(&topic, page.to_messages()).await?;
        // Rows are read in key order: no fraction of the whole to show.
        progress.update(0.0, published, false);
    }
    progress.update(1.0, published, true);
    println!(
        "backfilled {published} rows of {} onto {topic}, as of {}",
        table.name,
        ledgerhost_manifest::calendar::timestamp_text(snapshot.read_ts())
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// dead letters

/// `ledgerhost dead-letter ...`.
#[derive(Debug, clap::Subcommand)]
pub enum DeadLetterCommand {
    /// List a plugin's dead letters: event id, attempts, when, reason (oldest first).
    List {
        /// The plugin whose dead letters to list.
        plugin: String,
        /// Config file of the host whose ledger is read.
        #[arg(long, short, env = "LEDGERHOST_CONFIG")]
        config: PathBuf,
        /// For a plugin with `subscription.tables`: the table whose subscription's dead
        /// letters to list (each has its own).
        #[arg(long)]
        table: Option<String>,
        /// List at most this many.
        #[arg(long, default_value_t = 1000)]
        max: usize,
        /// Print JSON lines (event_id, attempts, dead_lettered_at_micros, reason).
        #[arg(long)]
        json: bool,
    },
    /// Deliver a plugin's dead letters again, to that plugin only (the other plugins on the
    /// topic settle the copies unseen), and remove them from its dead letters.
    Redrive {
        /// The plugin whose dead letters to redrive.
        plugin: String,
        /// Config file of the host whose ledger is used.
        #[arg(long, short, env = "LEDGERHOST_CONFIG")]
        config: PathBuf,
        /// For a plugin with `subscription.tables`: the table whose subscription's dead
        /// letters to redrive (each has its own).
        #[arg(long)]
        table: Option<String>,
        /// Redrive the dead letters of this event id.
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        event: Option<String>,
        /// Redrive every dead letter of the plugin.
        #[arg(long)]
        all: bool,
    },
}

/// One dead letter as `dead-letter list --json` prints it.
#[derive(Debug, serde::Serialize)]
struct DeadLetterLine<'a> {
    event_id: &'a str,
    attempts: u32,
    dead_lettered_at_micros: i64,
    reason: &'a str,
}

/// `ledgerhost dead-letter list|redrive`, through the ledger port of the config's ledger.
pub async fn dead_letter(command: DeadLetterCommand) -> anyhow::Result<()> {
    use ledgerhost_core::ledger::RedriveSelection;
    let (plugin, config, table) = match &command {
        DeadLetterCommand::List {
            plugin,
            config,
            table,
            ..
        }
        | DeadLetterCommand::Redrive {
            plugin,
            config,
            table,
            ..
        } => (plugin.clone(), config.clone(), table.clone()),
    };
    let plugin = &plugin;
    let loaded = Config::load(&config)?;
    let backends = crate::backends::Backends::connect(&loaded).await?;
    let subscription = names::subscription_name(plugin, table.as_deref());
    match command {
        DeadLetterCommand::List { max, json, .. } => {
            let found = backends
                .ledger
                .dead_letters(&subscription, max)
                .await
                .with_context(|| format!("listing the dead letters of plugin {plugin}"))?;
            let now = crate::metrics::now_micros();
            for d in &found {
                if json {
                    println!(
                        "{}",
                        serde_json::to_string(&DeadLetterLine {
                            event_id: &d.event_id,
                            attempts: d.attempts,
                            dead_lettered_at_micros: d.dead_lettered_at_micros,
                            reason: &d.reason,
                        })?
                    );
                } else {
                    println!(
                        "{}  attempts {}  {} ({:.0}s ago)  {}",
                        d.event_id,
                        d.attempts,
                        ledgerhost_manifest::calendar::timestamp_text(d.dead_lettered_at_micros),
                        crate::status::age_secs(now, d.dead_lettered_at_micros),
                        d.reason
                    );
                }
            }
            if !json {
                eprintln!("{} dead letters of plugin {plugin}", found.len());
            }
            Ok(())
        }
        DeadLetterCommand::Redrive { event, .. } => {
            let selection = match event {
                Some(id) => RedriveSelection::Event(id),
                None => RedriveSelection::All,
            };
            // Only this plugin handles the copies: the dispatchers of the other plugins on
            // the topic settle a message that names another plugin (as `replay --plugin`).
            let extra = std::collections::BTreeMap::from([
                (REPLAY_FOR.to_string(), plugin.clone()),
                (
                    REPLAY_OF.to_string(),
                    names::dead_letter_topic(plugin, table.as_deref()),
                ),
            ]);
            let redriven = backends
                .ledger
                .redrive(&subscription, &selection, &extra)
                .await
                .with_context(|| format!("redriving the dead letters of plugin {plugin}"))?;
            if let RedriveSelection::Event(id) = &selection
                && redriven.is_empty()
            {
                bail!(
                    "plugin {plugin} has no dead letter of event {id} \
                     (`ledgerhost dead-letter list {plugin}` shows those it has)"
                );
            }
            for d in &redriven {
                println!("redriven {}", d.event_id);
            }
            eprintln!("redrove {} dead letters to plugin {plugin}", redriven.len());
            Ok(())
        }
    }
}
