//! What this crate's plugin benches share: where the built plugins are, and the embedded
//! ledger, ports and runtime they run plugins on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ledgerhost_capabilities::blobstore::local::LocalBlobStore;
use ledgerhost_capabilities::keyvalue::embedded::EmbeddedKeyValue;
use ledgerhost_capabilities::warehouse::sqlite::SqliteWarehouse;
use ledgerhost_core::ledger::Ledger;
use ledgerhost_ledger::embedded::{EmbeddedLedger, EmbeddedOptions};
use ledgerhost_runtime::{Ports, Runtime, RuntimeConfig};

/// `target/wasm` (or `LEDGERHOST_PLUGIN_DIR`), where `scripts/build-plugins` puts them.
pub fn wasm_dir() -> PathBuf {
    std::env::var_os("LEDGERHOST_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/wasm"))
}

/// `<wasm_dir>/<name>.wasm`, which must have been built.
pub fn built(name: &str) -> PathBuf {
    let wasm = wasm_dir().join(format!("{name}.wasm"));
    assert!(
        wasm.exists(),
        "{} missing: run scripts/build-plugins first",
        wasm.display()
    );
    wasm
}

/// An embedded ledger in `dir`, and a runtime whose capabilities are embedded stores in
/// `dir` over that ledger (compile cache in `dir` too).
pub fn embedded(dir: &Path) -> (Arc<dyn Ledger>, Arc<Runtime>) {
    let ledger: Arc<dyn Ledger> =
        Arc::new(EmbeddedLedger::open(&dir.join("ledger"), EmbeddedOptions::default()).unwrap());
    let ports = Ports {
        blobstore: Arc::new(LocalBlobStore::open(&dir.join("blobs")).unwrap()),
        keyvalue: Arc::new(EmbeddedKeyValue::open(&dir.join("kv.db")).unwrap()),
        warehouse: Arc::new(SqliteWarehouse::open(&dir.join("wh.db")).unwrap()),
        ledger: ledger.clone(),
    };
    let runtime = Runtime::new(
        RuntimeConfig {
            cache_dir: Some(dir.join("cache")),
            ..RuntimeConfig::default()
        },
        ports,
    )
    .unwrap();
    (ledger, runtime)
}

/// The built plugin `name`'s manifest with `settings` (key, value) set under
/// `[subscription]` (replacing the key's line if it has one), written as
/// `<dir>/<variant>/<name>.toml`.
pub fn manifest_with(
    dir: &Path,
    name: &str,
    variant: &str,
    settings: &[(&str, String)],
) -> PathBuf {
    let text = std::fs::read_to_string(wasm_dir().join(format!("{name}.toml")))
        .unwrap_or_else(|_| panic!("target/wasm/{name}.toml: run scripts/build-plugins first"));
    let set: String = settings
        .iter()
        .map(|(k, v)| format!("{k} = {v}\n"))
        .collect();
    let text: String = text
        .lines()
        .filter(|l| {
            !settings
                .iter()
                .any(|(k, _)| l.split('=').next().is_some_and(|key| key.trim() == *k))
        })
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .replace("[subscription]\n", &format!("[subscription]\n{set}"));
    let dir = dir.join(variant);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}
