//! Runtime benchmark: the example filter as a WASM plugin against the same logic as a native
//! closure, measured in the same run; instance rebuild after a trap; time from dropping a
//! component into the watched directory to serving it, cold and cached.
//!
//! Needs the built plugins (`scripts/build-plugins`). Run:
//! `cargo bench -p ledgerhost-runtime --bench plugin`

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledgerhost_capabilities::blobstore::local::LocalBlobStore;
use ledgerhost_capabilities::keyvalue::embedded::EmbeddedKeyValue;
use ledgerhost_capabilities::warehouse::sqlite::SqliteWarehouse;
use ledgerhost_core::{Disposition, Event, EventId, Field, Value};
use ledgerhost_ledger::embedded::{EmbeddedLedger, EmbeddedOptions};
use ledgerhost_runtime::registry::{Registry, RegistryEvent};
use ledgerhost_runtime::{Capabilities, Runtime, RuntimeConfig};

fn wasm_dir() -> PathBuf {
    std::env::var_os("LEDGERHOST_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/wasm"))
}

fn caps(dir: &std::path::Path) -> Capabilities {
    Capabilities {
        blobstore: Arc::new(LocalBlobStore::open(&dir.join("blobs")).unwrap()),
        keyvalue: Arc::new(EmbeddedKeyValue::open(&dir.join("kv.db")).unwrap()),
        warehouse: Arc::new(SqliteWarehouse::open(&dir.join("wh.db")).unwrap()),
        ledger: Arc::new(
            EmbeddedLedger::open(&dir.join("ledger"), EmbeddedOptions::default()).unwrap(),
        ),
    }
}

/// A realistic order event: six columns and a 300-byte Avro payload.
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
        ],
    }
}

/// The filter's logic, natively: the baseline.
fn native_filter(events: Vec<Event>, threshold: f64) -> Vec<Disposition> {
    let mut high = Vec::new();
    for e in &events {
        let amount = match e.get("amount") {
            Some(Value::Int64(v)) => *v as f64,
            Some(Value::Float64(v)) => *v,
            _ => continue,
        };
        if !e.deleted && amount >= threshold {
            high.push(e);
        }
    }
    std::hint::black_box(&high);
    events.iter().map(|_| Disposition::Ack).collect()
}

fn per_event(total: Duration, events: usize) -> f64 {
    total.as_nanos() as f64 / events as f64
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = wasm_dir().join("filter.wasm");
    assert!(
        wasm.exists(),
        "{} missing: run scripts/build-plugins first",
        wasm.display()
    );
    let runtime = Runtime::new(
        RuntimeConfig {
            cache_dir: Some(dir.path().join("cache")),
            ..RuntimeConfig::default()
        },
        caps(dir.path()),
    )
    .unwrap();
    // No order reaches the threshold: both sides run the same filter logic with no I/O.
    // Decimal text: the filter reads its threshold as an exact decimal, and refuses "1e18".
    let overrides = BTreeMap::from([("threshold".to_string(), "1000000000000000000".to_string())]);
    let plugin = runtime
        .load(&wasm, &wasm_dir().join("filter.toml"), &overrides)
        .await
        .unwrap();

    println!("## Filter: WASM plugin vs native closure (ns per event, same run)\n");
    println!("| batch | native | wasm | wasm / native |");
    println!("| ---: | ---: | ---: | ---: |");
    for batch in [1usize, 64, 1024] {
        let events: Vec<Event> = (0..batch as i64).map(order).collect();
        let total_events = 200_000usize.max(batch * 50);
        let rounds = total_events / batch;
        // Warm both paths, and check they decide the same (every order acked, none routed),
        // so the figures compare the same work.
        for _ in 0..rounds / 10 + 1 {
            let native = native_filter(events.clone(), 1e18);
            let wasm = plugin.handle(events.clone()).await.unwrap();
            assert_eq!(native, wasm, "the WASM and native filters disagree");
            assert!(wasm.iter().all(|d| *d == Disposition::Ack), "{wasm:?}");
        }
        let t = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(native_filter(events.clone(), 1e18));
        }
        let native = per_event(t.elapsed(), rounds * batch);
        let t = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(plugin.handle(events.clone()).await.unwrap());
        }
        let wasm = per_event(t.elapsed(), rounds * batch);
        println!(
            "| {batch} | {native:.0} | {wasm:.0} | {:.1}x |",
            wasm / native
        );
    }

    println!(
        "\n## Instance rebuild (after a trap: drop the instance, instantiate from InstancePre)\n"
    );
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        plugin.reset().await;
        plugin.warm().await.unwrap();
    }
    println!(
        "mean {:.1} µs over {n} rebuilds",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );

    println!("\n## Drop a component into the watched directory → serving\n");
    println!("| case | time |");
    println!("| --- | ---: |");
    for (case, cache) in [("cold (compile)", "cold-cache"), ("cached", "cold-cache")] {
        let rt = Runtime::new(
            RuntimeConfig {
                cache_dir: Some(dir.path().join(cache)),
                ..RuntimeConfig::default()
            },
            caps(dir.path()),
        )
        .unwrap();
        let plugins = tempfile::tempdir().unwrap();
        let (_registry, mut events) =
            Registry::start(rt, plugins.path().to_path_buf(), BTreeMap::new())
                .await
                .unwrap();
        let t = Instant::now();
        std::fs::copy(
            wasm_dir().join("filter.toml"),
            plugins.path().join("filter.toml"),
        )
        .unwrap();
        std::fs::copy(&wasm, plugins.path().join("filter.wasm")).unwrap();
        match events.recv().await {
            Some(RegistryEvent::Loaded(_)) => {}
            Some(other) => panic!("unexpected {other:?}"),
            None => panic!("registry stopped"),
        }
        println!("| {case} | {:.1} ms |", t.elapsed().as_secs_f64() * 1e3);
    }
}
