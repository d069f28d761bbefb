//! The command line: `ledgerhost run`, `ledgerhost demo`, `ledgerhost sqlite-ddl`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::host::Host;

/// Run event consumers as sandboxed WebAssembly plugins next to an event-sourced database.
#[derive(Debug, Parser)]
#[command(name = "ledgerhost", version, about, long_about = None)]
pub struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "LEDGERHOST_LOG_JSON")]
    pub log_json: bool,
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
    },
    /// Print the SQL that prepares an SQLite table for capture (the commit-timestamp column).
    SqliteDdl {
        /// Table name.
        table: String,
        /// Commit-timestamp column to add.
        #[arg(long, default_value = "commit_ts")]
        commit_ts_column: String,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own summary; only problems should interrupt it.
    let default_level = match cli.command {
        Command::Demo { .. } => "warn",
        _ => "info,wasmtime=warn,cranelift=warn",
    };
    init_logging(cli.log_json, default_level);
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
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("LEDGERHOST_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config } => {
            let config = match config {
                Some(path) => Config::load(&path)?,
                None => Config::embedded_defaults(
                    &std::env::current_dir().context("cannot read the current directory")?,
                ),
            };
            run_until_signal(config).await
        }
        Command::Demo {
            dir,
            plugins,
            rate,
            seconds,
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
                ledgerhost_source::sqlite::capture_ddl(&table, &commit_ts_column)
            );
            Ok(())
        }
    }
}

/// Runs the host until SIGTERM or Ctrl-C, then drains.
pub async fn run_until_signal(config: Config) -> anyhow::Result<()> {
    let host = Host::start(config).await?;
    wait_for_signal().await;
    tracing::info!("shutting down: draining in-flight batches");
    if host.shutdown().await {
        tracing::info!("drained; bye");
        Ok(())
    } else {
        anyhow::bail!("drain timed out; unfinished batches will be redelivered on restart")
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the host");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
