//! `ledgerhost demo`: the whole pipeline on embedded defaults in one directory — an SQLite
//! `orders` table, a writer inserting and updating orders, the shipped plugins, and a live
//! summary line per second.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::backends::sqlite_demo;
use crate::config::Config;
use crate::host::Host;
use crate::metrics::now_micros;

/// Plugins the demo installs when they have been built.
pub const SHIPPED_PLUGINS: &[&str] = &[
    "filter",
    "archiver",
    "bqloader",
    "janitor",
    "replayer",
    "materializer",
];

const DEMO_CONFIG: &str = r#"
[host]
data-dir = "state"
plugin-dir = "plugins"
drain-timeout-ms = 5000

[source]
kind = "sqlite"
path = "app.db"

[[tables]]
name = "orders"
deleted-column = "deleted"
interval-ms = 100

[admin]
listen = "127.0.0.1:0"
"#;

/// How the demo's line naming its status page starts (the address follows).
pub const STATUS_PAGE_LINE: &str = "status page: ";

/// Runs the demo until Ctrl-C / SIGTERM or `seconds`.
pub async fn run(
    dir: &Path,
    plugins: &Path,
    rate: u32,
    seconds: Option<u64>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("plugins"))
        .with_context(|| format!("cannot create the demo directory {}", dir.display()))?;
    let config_path = dir.join("ledgerhost.toml");
    if !config_path.exists() {
        std::fs::write(&config_path, DEMO_CONFIG)
            .with_context(|| format!("cannot write {}", config_path.display()))?;
    }
    let mut installed = Vec::new();
    for name in SHIPPED_PLUGINS {
        let wasm = plugins.join(format!("{name}.wasm"));
        let manifest = plugins.join(format!("{name}.toml"));
        if wasm.exists() && manifest.exists() {
            // Manifest first: the registry waits for both files of a pair.
            std::fs::copy(&manifest, dir.join("plugins").join(format!("{name}.toml")))?;
            std::fs::copy(&wasm, dir.join("plugins").join(format!("{name}.wasm")))?;
            installed.push(*name);
        }
    }
    if installed.is_empty() {
        anyhow::bail!(
            "no built plugins in {}: run `scripts/build-plugins` first (the README's demo command does)",
            plugins.display()
        );
    }
    let db = dir.join("app.db");
    sqlite_demo::create_orders(&db)
        .with_context(|| format!("cannot create the demo's orders table in {}", db.display()))?;

    let config = Config::load(&config_path)?;
    let host = Host::start(config).await?;
    // The admin port is a free one picked at start: say which, so the page can be opened.
    let mut open = say(format_args!(
        "ledgerhost demo in {} — plugins: {} — writing {rate} orders/s; Ctrl-C to stop",
        dir.display(),
        installed.join(", ")
    )) && say(format_args!(
        "{STATUS_PAGE_LINE}http://{}/ (JSON at /status, Prometheus at /metrics)",
        host.admin_addr
    ));

    let writer = tokio::task::spawn_blocking({
        let db = db.clone();
        let stop = host.shutdown_signal();
        move || sqlite_demo::write_orders(&db, rate, &|| *stop.borrow())
    });

    let started = Instant::now();
    let mut last_rows = 0u64;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    while open {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = crate::signal::wait_for_signal() => break,
        }
        let rows: u64 = host
            .metrics
            .tables()
            .iter()
            .map(|(_, t)| t.rows_polled.load(Ordering::Relaxed))
            .sum();
        let mut line = format!(
            "[{:>4}s] polled {rows} rows ({}/s)",
            started.elapsed().as_secs(),
            rows - last_rows
        );
        last_rows = rows;
        for (name, p) in host.metrics.plugins() {
            let last = p.last_commit_ts.load(Ordering::Relaxed);
            let lag_ms = if last > 0 {
                (now_micros() - last).max(0) / 1000
            } else {
                0
            };
            line.push_str(&format!(
                " | {name}: in {} ok {} retry {} dead {} lag {lag_ms}ms",
                p.events_in.load(Ordering::Relaxed),
                p.acked.load(Ordering::Relaxed),
                p.retried.load(Ordering::Relaxed),
                p.dead_lettered.load(Ordering::Relaxed),
            ));
        }
        open = say(format_args!("{line}"));
        if seconds.is_some_and(|s| started.elapsed() >= Duration::from_secs(s)) {
            break;
        }
    }
    if !open {
        tracing::warn!("standard output closed; stopping the demo");
    }
    say(format_args!("draining…"));
    let drained = host.shutdown().await;
    writer
        .await
        .context("demo writer panicked")?
        .context("demo writer failed")?;
    if !drained {
        anyhow::bail!("drain timed out");
    }
    say(format_args!("stopped cleanly"));
    Ok(())
}

/// Prints one line of the demo's output. False when standard output is gone (`ledgerhost demo
/// | head` closed it): the demo then stops as on Ctrl-C, where `println!` would panic and leave
/// the order writer running with nothing to stop it.
fn say(line: std::fmt::Arguments<'_>) -> bool {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_fmt(line)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .is_ok()
}
