//! The command line: `run`, `status`, `plugin new|check|test`, `replay`, `backfill`,
//! `dead-letter list|redrive`, `restore`, `demo`, `sqlite-ddl`. See `docs/operations.md` and
//! `docs/plugin-authors.md`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::host::Host;

/// Run event consumers as sandboxed WebAssembly plugins next to an event-sourced database.
#[derive(Debug, Parser)]
#[command(
    name = "ledgerhost",
    version,
    about = "Run event consumers as sandboxed WebAssembly plugins next to an event-sourced database.",
    long_about = None,
    after_help = "Operate:  ledgerhost run --config ledgerhost.toml   (SIGTERM drains, exits 0)\n          \
                  ledgerhost status --config ledgerhost.toml\n\
                  Develop:  ledgerhost plugin new my-plugin  →  cargo test  →  \
                  cargo build --release --target wasm32-wasip2\n          \
                  ledgerhost plugin check FILE.wasm  →  ledgerhost plugin test FILE.wasm --events events.json\n\
                  Config keys can be overridden by LEDGERHOST__SECTION__KEY=value (e.g. LEDGERHOST__ADMIN__LISTEN=0.0.0.0:8686)."
)]
pub struct Cli {
    /// Log as JSON lines instead of text, in the form Cloud Logging reads (`severity`,
    /// `message`, `time`, source location, trace; see docs/operations.md).
    #[arg(
        long,
        global = true,
        env = "LEDGERHOST_LOG_JSON",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub log_json: bool,
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the host: poll the configured tables and feed the plugins in the plugin directory.
    Run {
        /// Config file (TOML). Without it, embedded defaults in the current directory.
        #[arg(long, short, env = "LEDGERHOST_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run a self-contained demo: an SQLite `orders` table, a writer inserting orders, the
    /// shipped plugins consuming them, and a live summary. Ctrl-C drains and exits.
    Demo {
        /// Working directory of the demo (created).
        #[arg(long, default_value = ".ledgerhost-demo")]
        dir: PathBuf,
        /// Where the built plugins are (`<name>.wasm` + `<name>.toml`).
        #[arg(long, default_value = "target/wasm", env = "LEDGERHOST_PLUGIN_DIR")]
        plugins: PathBuf,
        /// Orders written per second.
        #[arg(long, default_value_t = 200)]
        rate: u32,
        /// Stop after this many seconds (runs until Ctrl-C when absent).
        #[arg(long)]
        seconds: Option<u64>,
        /// Print the names of the plugins the demo runs, one per line, and exit (what
        /// `scripts/demo` builds).
        #[arg(long)]
        list_plugins: bool,
    },
    /// Show a running host's tables and plugins (asks its admin port).
    Status {
        /// Config file of the host: its `admin.listen` is asked.
        #[arg(long, short, env = "LEDGERHOST_CONFIG", conflicts_with = "admin")]
        config: Option<PathBuf>,
        /// Admin address to ask instead, `host:port` (default 127.0.0.1:8686).
        #[arg(long)]
        admin: Option<String>,
        /// Print the raw JSON status.
        #[arg(long)]
        json: bool,
    },
    /// Write, check and try plugins without a running host.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Re-deliver a table's retained ledger messages of a commit-time range, to one plugin
    /// (only it handles them again) or onto a new topic.
    Replay(crate::ops::ReplayArgs),
    /// Republish a table's current rows from the source (e.g. those committed since a start
    /// time) onto its ledger topic or another topic.
    Backfill(crate::ops::BackfillArgs),
    /// List a plugin's dead letters, or deliver them to it again (`redrive`).
    #[command(subcommand)]
    DeadLetter(crate::ops::DeadLetterCommand),
    /// Rebuild a table from its archive (the archiver's objects and the janitor's compacted
    /// files) into an SQLite file or a Spanner database, as of now or of `--at`.
    Restore(crate::restore::RestoreArgs),
    /// Print the SQL that prepares an SQLite table for capture (the commit-timestamp column).
    SqliteDdl {
        /// Table name.
        table: String,
        /// Commit-timestamp column to add.
        #[arg(long, default_value = "commit_ts")]
        commit_ts_column: String,
    },
}

/// `ledgerhost plugin ...`.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Create a plugin crate NAME/ (outside any workspace) that builds to a component and
    /// passes its own `cargo test` as is.
    New {
        /// Plugin name: lower-case letters, digits and `-`.
        name: String,
        /// Directory to create the crate in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The ledgerhost SDK crate (`plugins/sdk` of a ledgerhost checkout); found next to
        /// this binary or the current directory when omitted.
        #[arg(long, env = "LEDGERHOST_SDK")]
        sdk: Option<PathBuf>,
        /// Source table the plugin subscribes to.
        #[arg(long, default_value = "orders")]
        table: String,
    },
    /// Validate a component and its manifest as the host would load them (world, imports
    /// against grants, limits, one instantiation). Exits non-zero with the reason.
    Check {
        /// The component (`.wasm`).
        file: PathBuf,
        /// Manifest; default `<file stem>.toml` beside the component, else `plugin.toml`.
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
    /// Run a consumer plugin over recorded events on embedded capabilities in a scratch
    /// directory; print each disposition and everything the plugin wrote.
    Test {
        /// The component (`.wasm`).
        file: PathBuf,
        /// Events: JSON (array or lines of {"table","key","commit_ts","row"}), an Avro event
        /// container, or a directory of them.
        #[arg(long)]
        events: PathBuf,
        /// Manifest; default `<file stem>.toml` beside the component, else `plugin.toml`.
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// A `wasi:config` value, KEY=VALUE (repeatable), overriding the manifest's.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// Keep the embedded stores in this directory (default: a temporary one).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Feed two versions of a consumer plugin the same events — recorded files, or a
    /// table's archive over a time range — each on its own scratch stores, and compare
    /// their dispositions and writes event by event. Exits 0 when they handled every event
    /// alike, 1 when they differ, 2 on an error.
    Diff {
        /// The serving version's component (`.wasm`).
        old: PathBuf,
        /// The new version's component.
        new: PathBuf,
        /// The old version's manifest; default `<file stem>.toml` beside it, else
        /// `plugin.toml`.
        #[arg(long)]
        old_manifest: Option<PathBuf>,
        /// The new version's manifest; default as for the old one.
        #[arg(long)]
        new_manifest: Option<PathBuf>,
        /// Recorded events (as `plugin test --events`) instead of an archive.
        #[arg(long, conflicts_with_all = ["config", "table"])]
        events: Option<PathBuf>,
        /// Config file of the host whose archive is read (its `[blobstore]` and the
        /// archiver's `bucket-prefix`).
        #[arg(long, short, requires = "table")]
        config: Option<PathBuf>,
        /// The archived table whose events are fed.
        #[arg(long, requires = "config")]
        table: Option<String>,
        /// Archived events committed at or after this time, µs since the epoch.
        #[arg(long)]
        from: Option<i64>,
        /// Archived events committed at or before this time, µs since the epoch.
        #[arg(long)]
        to: Option<i64>,
        /// Bucket prefix of the archive (default: the archiver's configured one).
        #[arg(long)]
        bucket_prefix: Option<String>,
        /// Read the table's messages the host's ledger retains instead of its archive
        /// (the embedded ledger; Pub/Sub cannot read a topic back).
        #[arg(long, requires = "table")]
        from_ledger: bool,
        /// Differing events listed in the report.
        #[arg(long, default_value_t = 10)]
        max_differences: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own summary; only problems should interrupt it.
    let default_level = match cli.command {
        Command::Demo { .. } => "warn",
        Command::Plugin(_) | Command::Status { .. } => "warn,ledgerhost_runtime=info",
        Command::Replay(_)
        | Command::Backfill(_)
        | Command::DeadLetter(_)
        | Command::Restore(_) => "warn",
        _ => "info,wasmtime=warn,cranelift=warn",
    };
    crate::logging::init(cli.log_json, default_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // `plugin diff` says "they differ" with 1, so its errors exit 2.
    let error_code = match cli.command {
        Command::Plugin(PluginCommand::Diff { .. }) => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e)
            if e.downcast_ref::<crate::plugin_dev::diff::Differ>()
                .is_some() =>
        {
            ExitCode::FAILURE
        }
        Err(e) if cli.log_json => {
            // One structured line, so the reason shows as an ERROR entry in Cloud Logging.
            tracing::error!("error: {e:#}");
            error_code
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            error_code
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config } => {
            let config = match config {
                Some(path) => Config::load(&path)?,
                None => Config::defaults_with_env(
                    &std::env::current_dir().context("cannot read the current directory")?,
                )?,
            };
            run_until_signal(config).await
        }
        Command::Status {
            config,
            admin,
            json,
        } => {
            let addr = match (admin, config) {
                (Some(a), _) => a,
                (None, Some(path)) => Config::load(&path)?.admin.listen,
                (None, None) => crate::config::AdminConfig::default().listen,
            };
            crate::ops::status(&addr, json).await
        }
        Command::Plugin(PluginCommand::New {
            name,
            dir,
            sdk,
            table,
        }) => {
            let created = crate::plugin_dev::new_plugin(&crate::plugin_dev::NewPlugin {
                name: name.clone(),
                parent: dir,
                sdk,
                table,
            })?;
            println!("created {}", created.display());
            println!(
                "next: cd {} && cargo test && cargo build --release --target wasm32-wasip2",
                created.display()
            );
            println!(
                "then: ledgerhost plugin check target/wasm32-wasip2/release/{}.wasm --manifest plugin.toml",
                name.replace('-', "_")
            );
            Ok(())
        }
        Command::Plugin(PluginCommand::Check { file, manifest }) => {
            crate::plugin_dev::check(&file, manifest.as_deref()).await
        }
        Command::Plugin(PluginCommand::Test {
            file,
            events,
            manifest,
            config,
            state_dir,
            json,
        }) => {
            let mut values = std::collections::BTreeMap::new();
            for kv in config {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("--config `{kv}`: expected KEY=VALUE"))?;
                values.insert(k.to_string(), v.to_string());
            }
            let report = crate::plugin_dev::test(&crate::plugin_dev::TestRun {
                wasm: file,
                manifest,
                events,
                config: values,
                state_dir,
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            Ok(())
        }
        Command::Plugin(PluginCommand::Diff {
            old,
            new,
            old_manifest,
            new_manifest,
            events,
            config,
            table,
            from,
            to,
            bucket_prefix,
            from_ledger,
            max_differences,
            json,
        }) => {
            use crate::plugin_dev::diff::{DiffRun, Differ, Events, Version};
            let events = match (events, config, table) {
                (Some(path), _, _) => Events::Files(path),
                (None, Some(config), Some(table)) if from_ledger => Events::Ledger {
                    config,
                    table,
                    from,
                    to,
                },
                (None, Some(config), Some(table)) => Events::Archive {
                    config,
                    table,
                    from,
                    to,
                    bucket_prefix,
                },
                _ => anyhow::bail!(
                    "name the events: --events FILE, or --config F --table T [--from µs] \
                     [--to µs] for a table's archive"
                ),
            };
            let report = crate::plugin_dev::diff::diff(&DiffRun {
                old: Version {
                    wasm: old,
                    manifest: old_manifest,
                },
                new: Version {
                    wasm: new,
                    manifest: new_manifest,
                },
                events,
                max_differences,
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            match report.differing {
                0 => Ok(()),
                n => Err(Differ(n).into()),
            }
        }
        Command::Replay(args) => crate::ops::replay(args).await,
        Command::Backfill(args) => crate::ops::backfill(args).await,
        Command::DeadLetter(command) => crate::ops::dead_letter(command).await,
        Command::Restore(args) => crate::restore::restore(args).await,
        Command::Demo {
            list_plugins: true, ..
        } => {
            crate::demo::SHIPPED_PLUGINS
                .iter()
                .for_each(|name| println!("{name}"));
            Ok(())
        }
        Command::Demo {
            dir,
            plugins,
            rate,
            seconds,
            list_plugins: false,
        } => crate::demo::run(&dir, &plugins, rate, seconds).await,
        Command::SqliteDdl {
            table,
            commit_ts_column,
        } => {
            if !crate::config::is_identifier(&table)
                || !crate::config::is_identifier(&commit_ts_column)
            {
                anyhow::bail!("table and column names must be letters, digits and `_`");
            }
            println!(
                "{}",
                crate::backends::sqlite_capture_ddl(&table, &commit_ts_column)
            );
            Ok(())
        }
    }
}

/// Runs the host until SIGTERM or Ctrl-C, then drains.
pub async fn run_until_signal(config: Config) -> anyhow::Result<()> {
    let host = Host::start(config).await?;
    crate::signal::wait_for_signal().await;
    tracing::info!("shutting down: draining in-flight batches");
    if host.shutdown().await {
        tracing::info!("drained; bye");
        Ok(())
    } else {
        anyhow::bail!("drain timed out; unfinished batches will be redelivered on restart")
    }
}
