//! `ledgerhost demo`: the whole pipeline on embedded defaults in one directory — an SQLite
//! `orders` table, a writer inserting and updating orders, the shipped plugins, and a live
//! summary line per second.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;

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

/// The demo's table, as an application would create it (see `ledgerhost sqlite-ddl`).
pub const ORDERS_DDL: &str = "CREATE TABLE IF NOT EXISTS orders (
    id INTEGER PRIMARY KEY,
    client_id TEXT NOT NULL,
    amount INTEGER NOT NULL,
    status TEXT NOT NULL,
    deleted BOOLEAN NOT NULL DEFAULT 0,
    commit_ts INTEGER
)";

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
    let conn =
        rusqlite::Connection::open(&db).with_context(|| format!("cannot open {}", db.display()))?;
    conn.execute_batch(ORDERS_DDL)
        .context("cannot create the demo's orders table")?;
    drop(conn);

    let config = Config::load(&config_path)?;
    let host = Host::start(config).await?;
    println!(
        "ledgerhost demo in {} — plugins: {} — writing {rate} orders/s; Ctrl-C to stop",
        dir.display(),
        installed.join(", ")
    );

    let writer = tokio::task::spawn_blocking({
        let db = db.clone();
        let stop = host.shutdown_signal();
        move || write_orders(&db, rate, stop)
    });

    let started = Instant::now();
    let mut last_rows = 0u64;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = crate::cli::wait_for_signal() => break,
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
        println!("{line}");
        if seconds.is_some_and(|s| started.elapsed() >= Duration::from_secs(s)) {
            break;
        }
    }
    println!("draining…");
    let drained = host.shutdown().await;
    writer
        .await
        .context("demo writer panicked")?
        .context("demo writer failed")?;
    if !drained {
        anyhow::bail!("drain timed out");
    }
    println!("stopped cleanly");
    Ok(())
}

/// Inserts `rate` orders per second in small transactions, updates and soft-deletes a few.
fn write_orders(
    db: &Path,
    rate: u32,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut conn = rusqlite::Connection::open(db)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mut next_id: i64 =
        conn.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM orders", [], |r| {
            r.get(0)
        })?;
    let per_tick = (rate / 10).max(1);
    // A small deterministic generator: the demo needs variety, not randomness.
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15 ^ next_id as u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    while !*stop.borrow() {
        let tx = conn.transaction()?;
        for _ in 0..per_tick {
            let client = format!("c-{}", rnd() % 20);
            let amount = (rnd() % 2000) as i64;
            tx.execute(
                "INSERT INTO orders (id, client_id, amount, status) VALUES (?1, ?2, ?3, 'new')",
                rusqlite::params![next_id, client, amount],
            )?;
            next_id += 1;
        }
        if next_id > 10 {
            let id = (rnd() % (next_id as u64 - 1)) as i64 + 1;
            if rnd() % 10 == 0 {
                tx.execute("UPDATE orders SET deleted = 1 WHERE id = ?1", [id])?;
            } else {
                tx.execute("UPDATE orders SET status = 'shipped' WHERE id = ?1", [id])?;
            }
        }
        tx.commit()?;
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
