//! The example filter in Rust, Python (componentize-py) and JavaScript (componentize-js),
//! measured in the same run: cold compile, cached load, instance rebuild, and the cost per
//! event of a batch, reported as ratios to the Rust component.
//!
//! Needs the built plugins (`scripts/build-plugins`). Run:
//! `cargo bench -p ledgerhost-runtime --bench languages`

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledgerhost_capabilities::blobstore::local::LocalBlobStore;
use ledgerhost_capabilities::keyvalue::embedded::EmbeddedKeyValue;
use ledgerhost_capabilities::warehouse::sqlite::SqliteWarehouse;
use ledgerhost_core::{Disposition, Event, EventId, Field, Value};
use ledgerhost_ledger::embedded::{EmbeddedLedger, EmbeddedOptions};
use ledgerhost_runtime::{Manifest, Plugin, Ports, Runtime, RuntimeConfig};

const PLUGINS: [&str; 3] = ["filter", "python-filter", "js-filter"];

fn wasm_dir() -> PathBuf {
    std::env::var_os("LEDGERHOST_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/wasm"))
}

fn caps(dir: &std::path::Path) -> Ports {
    Ports {
        blobstore: Arc::new(LocalBlobStore::open(&dir.join("blobs")).expect("blobs")),
        keyvalue: Arc::new(EmbeddedKeyValue::open(&dir.join("kv.db")).expect("kv")),
        warehouse: Arc::new(SqliteWarehouse::open(&dir.join("wh.db")).expect("wh")),
        ledger: Arc::new(
            EmbeddedLedger::open(&dir.join("ledger"), EmbeddedOptions::default()).expect("ledger"),
        ),
    }
}

/// A realistic order event: six columns, a 300-byte Avro payload and the four standard
/// attributes (which a 0.2 plugin is not sent: it restores them when it republishes).
fn order(n: i64) -> Event {
    let key = vec![Value::Int64(n)];
    let f = |name: &str, value: Value| Field {
        name: name.into(),
        value,
    };
    Event {
        id: EventId::new("orders", &key, 1_000 + n),
        table: "orders".into(),
        commit_ts: 1_000 + n,
        key: vec![f("id", Value::Int64(n))],
        fields: vec![
            f("id", Value::Int64(n)),
            f("client_id", Value::String(format!("c-{}", n % 20))),
            f("amount", Value::Int64(n % 2000)),
            f("status", Value::String("new".into())),
            f("deleted", Value::Bool(false)),
            f("commit_ts", Value::Timestamp(1_000 + n)),
        ],
        deleted: false,
        schema_fingerprint: "0123456789abcdef".into(),
        avro: vec![7u8; 300],
        attributes: vec![
            ("table".into(), "orders".into()),
            ("commit_ts".into(), (1_000 + n).to_string()),
            ("event_id".into(), format!("orders/{n}/{}", 1_000 + n)),
            ("schema_fingerprint".into(), "0123456789abcdef".into()),
        ],
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn load(
    runtime: &Arc<Runtime>,
    name: &str,
    overrides: &BTreeMap<String, String>,
) -> (Arc<Plugin>, Duration) {
    let wasm = wasm_dir().join(format!("{name}.wasm"));
    let bytes = std::fs::read(&wasm)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/build-plugins first", wasm.display()));
    let manifest =
        Manifest::load(&wasm_dir().join(format!("{name}.toml"))).expect("plugin manifest");
    let t = Instant::now();
    let (plugin, _) = runtime
        .load_bytes(&wasm, &bytes, manifest, overrides)
        .await
        .unwrap_or_else(|e| panic!("{name} loads: {e}"));
    (plugin, t.elapsed())
}

/// Mean ns per event of `rounds` calls with `events`, after a warm-up.
async fn per_event(plugin: &Plugin, events: &[Event], rounds: usize) -> f64 {
    for _ in 0..rounds / 10 + 1 {
        plugin.handle(events.to_vec()).await.expect("handle");
    }
    let t = Instant::now();
    for _ in 0..rounds {
        let d = plugin.handle(events.to_vec()).await.expect("handle");
        assert!(d.iter().all(|d| *d == Disposition::Ack), "{d:?}");
    }
    t.elapsed().as_nanos() as f64 / (rounds * events.len()) as f64
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sizes: Vec<String> = PLUGINS
        .iter()
        .map(|p| {
            let len = std::fs::metadata(wasm_dir().join(format!("{p}.wasm")))
                .map(|m| m.len())
                .unwrap_or_else(|e| panic!("{p}.wasm: {e}; run scripts/build-plugins first"));
            format!("{:.1} MiB", len as f64 / (1 << 20) as f64)
        })
        .collect();

    println!("## Loading: compile (no cache), load from the compile cache, instance rebuild\n");
    println!(
        "| plugin | component | cold compile + instantiate | cached load | rebuild after trap | linear memory |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let cached_rt = Runtime::new(
        RuntimeConfig {
            cache_dir: Some(dir.path().join("cache")),
            ..RuntimeConfig::default()
        },
        caps(&dir.path().join("cached")),
    )
    .expect("runtime");
    for (name, size) in PLUGINS.iter().zip(&sizes) {
        // The cache starts without this component: the first load compiles and stores it,
        // the second reads it back.
        let (_, cold) = load(&cached_rt, name, &BTreeMap::new()).await;
        let (plugin, cached) = load(&cached_rt, name, &BTreeMap::new()).await;
        let n = 50;
        let t = Instant::now();
        for _ in 0..n {
            plugin.reset().await;
            plugin.warm().await.expect("rebuild");
        }
        let rebuild = t.elapsed() / n;
        plugin
            .handle((0..256).map(order).collect())
            .await
            .expect("handle");
        println!(
            "| {name} | {size} | {:.0} ms | {:.0} ms | {:.2} ms | {:.1} MiB |",
            ms(cold),
            ms(cached),
            ms(rebuild),
            plugin.stats().memory_high_water as f64 / (1 << 20) as f64
        );
    }

    // Nothing reaches the threshold: the call carries the batch in and the answers out and
    // runs the filter's decision, no I/O. Then the realistic mix: about half the orders are
    // republished to the embedded ledger.
    for (title, threshold, total) in [
        (
            "decision only (threshold 10^18, no publish)",
            "1000000000000000000",
            20_000,
        ),
        (
            "with publishing (threshold 1000: half the orders republished)",
            "1000",
            5_000,
        ),
    ] {
        println!("\n## Per event, {title}: µs per event (ratio to Rust)\n");
        println!("| batch | filter (Rust) | python-filter | js-filter |");
        println!("| ---: | ---: | ---: | ---: |");
        let overrides = BTreeMap::from([("threshold".to_string(), threshold.to_string())]);
        let mut plugins = Vec::new();
        for name in PLUGINS {
            plugins.push(load(&cached_rt, name, &overrides).await.0);
        }
        for batch in [1usize, 64, 256] {
            let events: Vec<Event> = (0..batch as i64).map(order).collect();
            let rounds = (total / batch).max(20);
            let mut cells = Vec::new();
            let mut rust = 0.0;
            for (i, plugin) in plugins.iter().enumerate() {
                let ns = per_event(plugin, &events, rounds).await;
                if i == 0 {
                    rust = ns;
                    cells.push(format!("{:.2}", ns / 1e3));
                } else {
                    cells.push(format!("{:.2} ({:.1}x)", ns / 1e3, ns / rust));
                }
            }
            println!("| {batch} | {} |", cells.join(" | "));
        }
    }
}
