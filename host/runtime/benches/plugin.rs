//! Runtime benchmark: the example filter, and a plugin reading every column of every type
//! (`allcols`), as WASM plugins (contract 0.2) against the same logic as native closures,
//! measured in the same run on the same input (events decoded from real Avro, cloned for
//! each call on both sides); instance rebuild after a trap; time from dropping a component
//! into the watched directory to serving it, cold and cached.
//!
//! Needs the built plugins (`scripts/build-plugins`). Run:
//! `cargo bench -p ledgerhost-runtime --bench plugin`

#[path = "native/allcols.rs"]
mod allcols;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledgerhost_avro::{Decoder, Encoder};
use ledgerhost_capabilities::blobstore::local::LocalBlobStore;
use ledgerhost_capabilities::keyvalue::embedded::EmbeddedKeyValue;
use ledgerhost_capabilities::warehouse::sqlite::SqliteWarehouse;
use ledgerhost_core::source::Row;
use ledgerhost_core::{Column, ColumnType, Disposition, Event, TableSchema, Value};
use ledgerhost_ledger::embedded::{EmbeddedLedger, EmbeddedOptions};
use ledgerhost_runtime::registry::{Registry, RegistryEvent};
use ledgerhost_runtime::{Ports, Runtime, RuntimeConfig};

fn wasm_dir() -> PathBuf {
    std::env::var_os("LEDGERHOST_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/wasm"))
}

fn caps(dir: &std::path::Path) -> Ports {
    Ports {
        blobstore: Arc::new(LocalBlobStore::open(&dir.join("blobs")).unwrap()),
        keyvalue: Arc::new(EmbeddedKeyValue::open(&dir.join("kv.db")).unwrap()),
        warehouse: Arc::new(SqliteWarehouse::open(&dir.join("wh.db")).unwrap()),
        ledger: Arc::new(
            EmbeddedLedger::open(&dir.join("ledger"), EmbeddedOptions::default()).unwrap(),
        ),
    }
}

fn col(name: &str, ty: ColumnType) -> Column {
    Column {
        name: name.into(),
        ty,
        nullable: true,
    }
}

/// Rows of `table` through the poller's encoder and the dispatcher's decoder: events exactly
/// as the host hands them to a plugin (real Avro, schema and attributes).
fn decoded(table: &TableSchema, rows: impl Iterator<Item = Row>) -> Vec<Event> {
    let encoder = Encoder::new(table).unwrap();
    let decoder = Decoder::new();
    rows.map(|row| {
        decoder
            .decode_message(&encoder.encode(&row).unwrap())
            .unwrap()
    })
    .collect()
}

/// Realistic order events: six columns.
fn orders(n: usize) -> Vec<Event> {
    let table = TableSchema {
        name: "orders".into(),
        columns: vec![
            col("id", ColumnType::Int64),
            col("client_id", ColumnType::String),
            col("amount", ColumnType::Int64),
            col("status", ColumnType::String),
            col("deleted", ColumnType::Bool),
            col("commit_ts", ColumnType::Timestamp),
        ],
        primary_key: vec!["id".into()],
        commit_ts_column: "commit_ts".into(),
        deleted_column: Some("deleted".into()),
    };
    decoded(
        &table,
        (0..n as i64).map(|i| Row {
            values: vec![
                Value::Int64(i),
                Value::String(format!("c-{}", i % 20)),
                Value::Int64(i % 2000),
                Value::String("new".into()),
                Value::Bool(false),
                Value::Timestamp(1_000 + i),
            ],
            commit_ts: 1_000 + i,
        }),
    )
}

/// Events with a column of every Spanner type, scalar and array (with NULL elements), and
/// every fourth value NULL.
fn alltypes(n: usize) -> Vec<Event> {
    use ColumnType as T;
    let scalars = [
        T::Bool,
        T::Int64,
        T::Float32,
        T::Float64,
        T::Numeric,
        T::String,
        T::Bytes,
        T::Date,
        T::Timestamp,
        T::Json,
    ];
    let mut columns = vec![col("id", T::Int64)];
    for t in &scalars {
        columns.push(col(&format!("{t:?}").to_lowercase(), t.clone()));
        columns.push(col(
            &format!("{t:?}_array").to_lowercase(),
            T::Array(Box::new(t.clone())),
        ));
    }
    columns.push(col("commit_ts", T::Timestamp));
    let table = TableSchema {
        name: "alltypes".into(),
        columns,
        primary_key: vec!["id".into()],
        commit_ts_column: "commit_ts".into(),
        deleted_column: None,
    };
    let scalar = |t: &ColumnType, i: i64| match t {
        T::Bool => Value::Bool(i % 2 == 0),
        T::Int64 => Value::Int64(i * 7),
        T::Float32 => Value::Float32(i as f32 / 4.0),
        T::Float64 => Value::Float64(i as f64 / 3.0),
        T::Numeric => Value::Numeric(format!("{i}.125000001")),
        T::String => Value::String(format!("name-{i}")),
        T::Bytes => Value::Bytes(vec![i as u8; 16]),
        T::Date => Value::Date(20_000 + i as i32),
        T::Timestamp => Value::Timestamp(1_700_000_000_000_000 + i),
        _ => Value::Json(format!("{{\"n\":{i}}}")),
    };
    decoded(
        &table,
        (0..n as i64).map(|i| {
            let mut values = vec![Value::Int64(i)];
            for (k, t) in scalars.iter().enumerate() {
                let null = (i + k as i64) % 4 == 0;
                values.push(if null { Value::Null } else { scalar(t, i) });
                values.push(Value::Array(
                    t.clone(),
                    vec![scalar(t, i), Value::Null, scalar(t, i + 1)],
                ));
            }
            values.push(Value::Timestamp(1_000 + i));
            Row {
                values,
                commit_ts: 1_000 + i,
            }
        }),
    )
}

/// The allcols plugin's logic, natively: every column of every event by name, folded.
fn native_allcols(events: Vec<Event>) -> Vec<Disposition> {
    std::hint::black_box(allcols::checksum(&events));
    events.iter().map(|_| Disposition::Ack).collect()
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

/// One bench case: its title, the plugin, its native twin, and its input of a batch size.
type Case<'a> = (
    &'a str,
    &'a ledgerhost_runtime::Plugin,
    &'a dyn Fn(Vec<Event>) -> Vec<Disposition>,
    fn(usize) -> Vec<Event>,
);

/// Alternating slices per side and batch size (see the loop in `main`).
const REPS: usize = 5;

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

    let allcols = runtime
        .load(
            &wasm_dir().join("allcols.wasm"),
            &wasm_dir().join("allcols.toml"),
            &BTreeMap::new(),
        )
        .await
        .unwrap();
    let filter_native = |events: Vec<Event>| native_filter(events, 1e18);
    let cases: [Case<'_>; 2] = [
        (
            "Filter (reads `amount`; gets it, the Avro and the attributes)",
            &plugin,
            &filter_native,
            orders,
        ),
        (
            "allcols (reads all 22 columns of every type, NULLs included)",
            &allcols,
            &native_allcols,
            alltypes,
        ),
    ];
    // `LEDGERHOST_BENCH_CASE=filter` (or `allcols`) runs only that case: a profile of one.
    let only = std::env::var("LEDGERHOST_BENCH_CASE").ok();
    for (title, plugin, native_fn, input) in cases {
        if only.as_deref().is_some_and(|o| !title.starts_with(o)) {
            continue;
        }
        println!(
            "## {title}: WASM plugin vs native closure (ns per event, same run, best of {REPS} \
             alternating slices)\n"
        );
        println!("| batch | native | wasm | wasm / native |");
        println!("| ---: | ---: | ---: | ---: |");
        for batch in [1usize, 64, 1024] {
            let events: Vec<Event> = input(batch);
            let total_events = 200_000usize.max(batch * 50);
            let rounds = total_events / batch;
            // Warm both paths, and check they decide the same (every event acked), so the
            // figures compare the same work.
            for _ in 0..rounds / 10 + 1 {
                let native = native_fn(events.clone());
                let wasm = plugin.handle(events.clone()).await.unwrap();
                assert_eq!(native, wasm, "the WASM and native plugins disagree");
                assert!(wasm.iter().all(|d| *d == Disposition::Ack), "{wasm:?}");
            }
            // The VM is shared: a neighbour's burst only ever adds time, and would land on
            // one side if each were timed once. So the rounds are split into REPS slices,
            // native and WASM alternate slice by slice, and each side reports its fastest.
            let slice = (rounds / REPS).max(1);
            let (mut native, mut wasm) = (f64::MAX, f64::MAX);
            for _ in 0..REPS {
                let t = Instant::now();
                for _ in 0..slice {
                    std::hint::black_box(native_fn(events.clone()));
                }
                native = native.min(per_event(t.elapsed(), slice * batch));
                let t = Instant::now();
                for _ in 0..slice {
                    std::hint::black_box(plugin.handle(events.clone()).await.unwrap());
                }
                wasm = wasm.min(per_event(t.elapsed(), slice * batch));
            }
            println!(
                "| {batch} | {native:.0} | {wasm:.0} | {:.1}x |",
                wasm / native
            );
        }
        println!();
    }

    if only.is_some() {
        // A profile of one case: no compile or rebuild in it.
        return;
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
