//! The plugin runtime with real components: hot swap under load, refusals, isolation, and
//! the compile cache.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ledgerhost_capabilities::blobstore::local::LocalBlobStore;
use ledgerhost_capabilities::keyvalue::embedded::EmbeddedKeyValue;
use ledgerhost_capabilities::warehouse::sqlite::SqliteWarehouse;
use ledgerhost_core::capabilities::KeyValue;
use ledgerhost_core::{Disposition, Event, EventId, Field, Value};
use ledgerhost_ledger::embedded::{EmbeddedLedger, EmbeddedOptions};
use ledgerhost_runtime::registry::{Registry, RegistryEvent};
use ledgerhost_runtime::{CacheOutcome, CallError, Manifest, Ports, Runtime, RuntimeConfig};
use ledgerhost_tests::harness::{plugin_dir, plugin_manifest, plugin_wasm};
use tokio::sync::mpsc::UnboundedReceiver;

pub(crate) struct Fixture {
    pub(crate) dir: tempfile::TempDir,
    kv: Arc<EmbeddedKeyValue>,
    pub(crate) runtime: Arc<Runtime>,
}

pub(crate) fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let kv = Arc::new(EmbeddedKeyValue::open(&dir.path().join("kv.db")).unwrap());
    let caps = Ports {
        blobstore: Arc::new(LocalBlobStore::open(&dir.path().join("blobs")).unwrap()),
        keyvalue: kv.clone(),
        warehouse: Arc::new(SqliteWarehouse::open(&dir.path().join("wh.db")).unwrap()),
        ledger: Arc::new(
            EmbeddedLedger::open(&dir.path().join("ledger"), EmbeddedOptions::default()).unwrap(),
        ),
    };
    let runtime = Runtime::new(
        RuntimeConfig {
            cache_dir: Some(dir.path().join("cache")),
            ..RuntimeConfig::default()
        },
        caps,
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    Fixture { dir, kv, runtime }
}

pub(crate) fn event(n: u64, poison: bool) -> Event {
    let key = vec![Value::Int64(n as i64)];
    Event {
        id: EventId::new("orders", &key, 1000 + n as i64),
        table: "orders".into(),
        commit_ts: 1000 + n as i64,
        key: vec![Field {
            name: "id".into(),
            value: key[0].clone(),
        }],
        fields: vec![
            Field {
                name: "id".into(),
                value: key[0].clone(),
            },
            Field {
                name: "poison".into(),
                value: Value::Bool(poison),
            },
        ],
        deleted: false,
        schema_fingerprint: "f".into(),
        avro: vec![],
        attributes: vec![],
    }
}

fn install(dir: &Path, component: &str, name: &str) {
    std::fs::copy(plugin_manifest(component), dir.join(format!("{name}.toml"))).unwrap();
    std::fs::copy(plugin_wasm(component), dir.join(format!("{name}.wasm"))).unwrap();
}

async fn next_event(rx: &mut UnboundedReceiver<RegistryEvent>) -> RegistryEvent {
    tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("registry event within a minute")
        .expect("registry alive")
}

async fn load(f: &Fixture, name: &str) -> Arc<ledgerhost_runtime::Plugin> {
    f.runtime
        .load(&plugin_wasm(name), &plugin_manifest(name), &BTreeMap::new())
        .await
        .unwrap_or_else(|e| panic!("{name} loads: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_under_a_continuous_stream_handles_every_event_exactly_once() {
    let f = fixture();
    let plugins = f.dir.path().join("plugins");
    install(&plugins, "tagger", "tagger");
    let (registry, mut events) =
        Registry::start(f.runtime.clone(), plugins.clone(), BTreeMap::new())
            .await
            .unwrap();
    assert!(matches!(
        next_event(&mut events).await,
        RegistryEvent::Loaded(_)
    ));
    let slot = registry.slot("tagger").expect("tagger slot");
    let v1 = slot.current().unwrap().version().to_string();

    let stop = Arc::new(AtomicBool::new(false));
    let fed = Arc::new(AtomicU64::new(0));
    let feeder = {
        let (stop, fed, slot) = (stop.clone(), fed.clone(), slot.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<Event> = (n..n + 16).map(|i| event(i, false)).collect();
                let plugin = slot.current().expect("a version always serves");
                let d = plugin.handle(batch).await.expect("tagger never fails");
                assert!(d.iter().all(|d| *d == Disposition::Ack));
                n += 16;
                fed.store(n, Ordering::Relaxed);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Drop the new version in place, as a deploy would.
    std::fs::copy(
        plugin_dir().join("alt/tagger.wasm"),
        plugins.join("tagger.wasm"),
    )
    .unwrap();
    match next_event(&mut events).await {
        RegistryEvent::Replaced { old, new } => {
            assert_eq!(old.version(), v1);
            assert_ne!(new.version(), v1);
        }
        other => panic!("expected a swap, got {other:?}"),
    }
    let at_swap = fed.load(Ordering::Relaxed);
    // Keep the stream going on the new version for a while.
    while fed.load(Ordering::Relaxed) < at_swap + 320 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    feeder.await.unwrap();
    let total = fed.load(Ordering::Relaxed);

    let v1_keys = f.kv.list_keys("seen/v1/").await.unwrap();
    let v2_keys = f.kv.list_keys("seen/v2/").await.unwrap();
    let ids = |keys: &[String], tag: &str| -> BTreeSet<String> {
        keys.iter()
            .map(|k| k.trim_start_matches(&format!("seen/{tag}/")).to_string())
            .collect()
    };
    let (a, b) = (ids(&v1_keys, "v1"), ids(&v2_keys, "v2"));
    assert!(!a.is_empty() && !b.is_empty(), "both versions served");
    assert!(a.is_disjoint(&b), "no event handled by both versions");
    let all: BTreeSet<String> = a.union(&b).cloned().collect();
    let expected: BTreeSet<String> = (0..total).map(|i| event(i, false).id.0).collect();
    assert_eq!(all, expected, "every event handled exactly once, none lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_components_and_manifests_are_refused_and_the_old_version_keeps_serving() {
    let f = fixture();
    let plugins = f.dir.path().join("plugins");
    install(&plugins, "tagger", "tagger");
    let (registry, mut events) =
        Registry::start(f.runtime.clone(), plugins.clone(), BTreeMap::new())
            .await
            .unwrap();
    assert!(matches!(
        next_event(&mut events).await,
        RegistryEvent::Loaded(_)
    ));
    let slot = registry.slot("tagger").unwrap();
    let serving = slot.current().unwrap().version().to_string();
    let still_serves = |n: u64| {
        let slot = slot.clone();
        let serving = serving.clone();
        async move {
            let p = slot.current().unwrap();
            assert_eq!(p.version(), serving, "the previous version still serves");
            assert_eq!(
                p.handle(vec![event(n, false)]).await.unwrap(),
                vec![Disposition::Ack]
            );
        }
    };

    // 1. Garbage bytes.
    std::fs::write(plugins.join("tagger.wasm"), b"this is not wasm at all").unwrap();
    match next_event(&mut events).await {
        RegistryEvent::Refused { error, .. } => {
            assert!(
                error.contains("not a valid WebAssembly component"),
                "{error}"
            );
            assert!(error.contains("magic"), "{error}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    still_serves(1).await;

    // 2. A manifest with an unknown world (over a valid component).
    std::fs::copy(plugin_wasm("tagger"), plugins.join("tagger.wasm")).unwrap();
    let manifest = std::fs::read_to_string(plugin_manifest("tagger")).unwrap();
    std::fs::write(
        plugins.join("tagger.toml"),
        manifest.replace("world = \"consumer\"", "world = \"consumr\""),
    )
    .unwrap();
    match next_event(&mut events).await {
        RegistryEvent::Refused { error, .. } => {
            assert!(error.contains("tagger.toml"), "{error}");
            assert!(
                error.contains("consumr") && error.contains("http-trigger"),
                "{error}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    still_serves(2).await;

    // 3. A component importing a capability its manifest does not grant.
    install(&plugins, "sneaky", "sneaky");
    match next_event(&mut events).await {
        RegistryEvent::Refused { path, error } => {
            assert!(path.ends_with("sneaky.wasm"));
            assert!(error.contains("ledgerhost:plugin/blobstore"), "{error}");
            assert!(error.contains("grants.buckets"), "{error}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(registry.slot("sneaky").and_then(|s| s.current()).is_none());
    still_serves(3).await;

    // Fixing the manifest brings the plugin back to life.
    std::fs::write(plugins.join("tagger.toml"), &manifest).unwrap();
    still_serves(4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_caught_half_written_is_swapped_once_complete_not_refused() {
    let f = fixture();
    let plugins = f.dir.path().join("plugins");
    install(&plugins, "tagger", "tagger");
    let (_registry, mut events) =
        Registry::start(f.runtime.clone(), plugins.clone(), BTreeMap::new())
            .await
            .unwrap();
    assert!(matches!(
        next_event(&mut events).await,
        RegistryEvent::Loaded(_)
    ));
    // A slow copy: the watcher sees the directory quiet with half a component in place.
    let bytes = std::fs::read(plugin_dir().join("alt/tagger.wasm")).unwrap();
    let mut file = std::fs::File::create(plugins.join("tagger.wasm")).unwrap();
    file.write_all(&bytes[..bytes.len() / 2]).unwrap();
    file.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    file.write_all(&bytes[bytes.len() / 2..]).unwrap();
    drop(file);
    match next_event(&mut events).await {
        RegistryEvent::Replaced { .. } => {}
        other => panic!("expected a swap once the copy completed, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_plugins_are_stopped_and_nothing_else_is_disturbed() {
    // SAFETY: set before any other thread of this test reads the environment; the sandbox
    // must keep the plugin from seeing it.
    unsafe { std::env::set_var("LEDGERHOST_SECRET", "hunter2") };
    let _ = std::fs::remove_file("/tmp/escaped");
    let f = fixture();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();

    let counter = load(&f, "counter").await;
    let trapper = load(&f, "trapper").await;
    let spinner = load(&f, "spinner").await;
    let hog = load(&f, "hog").await;
    let escaper = f
        .runtime
        .load(
            &plugin_wasm("escaper"),
            &plugin_manifest("escaper"),
            &BTreeMap::from([("port".to_string(), port.to_string())]),
        )
        .await
        .unwrap();

    // A well-behaved neighbour keeps working the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let neighbour = {
        let stop = stop.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut n = 100_000u64;
            let mut batches = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let d = counter
                    .handle((n..n + 8).map(|i| event(i, false)).collect())
                    .await
                    .expect("counter never fails");
                assert_eq!(d.len(), 8);
                n += 8;
                batches += 1;
                progress.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
            batches
        })
    };

    // A trap fails only that call; the instance is rebuilt for the next one.
    let err = trapper.handle(vec![event(1, true)]).await.unwrap_err();
    match &err {
        // The reason is the plugin's own panic message on one line, not a wasm backtrace.
        CallError::Trap { message, .. } => {
            assert!(
                message.contains("panicked at ") && message.contains("trapper/src/lib.rs:"),
                "{message}"
            );
            assert!(message.contains("poison event orders/1/"), "{message}");
            assert!(
                !message.contains("wasm function") && !message.contains('\n'),
                "{message}"
            );
        }
        other => panic!("expected a trap, got {other}"),
    }
    assert_eq!(
        trapper.handle(vec![event(2, false)]).await.unwrap(),
        vec![Disposition::Ack]
    );
    assert!(trapper.stats().rebuilds >= 1);
    // Unbounded recursion is named as what it is.
    let mut deep = event(4, false);
    deep.fields.push(Field {
        name: "recurse".into(),
        value: Value::Bool(true),
    });
    match trapper.handle(vec![deep]).await.unwrap_err() {
        CallError::Trap { message, .. } => {
            assert!(message.starts_with("stack overflow"), "{message}");
            assert!(!message.contains("wasm function"), "{message}");
        }
        other => panic!("expected a stack overflow, got {other}"),
    }

    // The neighbour makes progress while the spinner burns its whole deadline: the loop
    // blocks neither the host nor other plugins.
    let before = progress.load(Ordering::Relaxed);
    let err = spinner.handle(vec![event(3, false)]).await.unwrap_err();
    assert!(matches!(err, CallError::Deadline { .. }), "{err}");
    assert!(
        progress.load(Ordering::Relaxed) > before,
        "the neighbour was stalled while the spinner ran"
    );
    assert!(err.to_string().contains("limits.deadline-ms"));

    let err = hog.handle(vec![event(4, false)]).await.unwrap_err();
    assert!(matches!(err, CallError::OutOfMemory { .. }), "{err}");
    assert!(hog.stats().memory_high_water <= 32 << 20);

    let d = escaper.handle(vec![event(5, false)]).await.unwrap();
    let Disposition::Reject(report) = &d[0] else {
        panic!("escaper reports through reject, got {d:?}")
    };
    assert_eq!(
        report, "fs-read:denied fs-write:denied env:none vars:0 net:denied clock:0",
        "the sandbox let something through"
    );
    assert!(!Path::new("/tmp/escaped").exists(), "no file was written");
    assert!(
        listener.accept().is_err(),
        "no connection reached the host's socket"
    );

    stop.store(true, Ordering::Relaxed);
    let batches = neighbour.await.unwrap();
    assert!(batches > 0, "the neighbour kept processing");
    // After everything, each misbehaving plugin still answers (rebuilt instances).
    assert!(spinner.handle(vec![]).await.is_err());
    assert_eq!(
        trapper.handle(vec![event(6, false)]).await.unwrap().len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compile_cache_is_reused_across_loads() {
    let f = fixture();
    let bytes = std::fs::read(plugin_wasm("counter")).unwrap();
    let manifest = Manifest::load(&plugin_manifest("counter")).unwrap();
    let path = plugin_wasm("counter");
    let (_, first) = f
        .runtime
        .load_bytes(&path, &bytes, manifest.clone(), &BTreeMap::new())
        .await
        .unwrap();
    let (_, second) = f
        .runtime
        .load_bytes(&path, &bytes, manifest, &BTreeMap::new())
        .await
        .unwrap();
    assert_eq!(first, CacheOutcome::Miss);
    assert_eq!(second, CacheOutcome::Hit);
    let entries = std::fs::read_dir(f.dir.path().join("cache"))
        .unwrap()
        .count();
    assert_eq!(entries, 1, "one compiled artifact on disk");
}
