//! What `plugin check` and `plugin test` share: a runtime on embedded stores in a scratch
//! directory (stores that remember what was written), and loading a pair as the host does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use async_trait::async_trait;
use ledgerhost_core::PortResult;
use ledgerhost_core::capabilities::{BlobStore, Warehouse, WarehouseRow};
use ledgerhost_runtime::manifest::{Manifest, World};
use ledgerhost_runtime::{Plugin, Runtime, RuntimeConfig};

use crate::backends::Backends;
use crate::config::Config;

/// The manifest path of a component: `--manifest`, else `<stem>.toml` beside it, else
/// `plugin.toml` beside it.
pub(crate) fn manifest_path(wasm: &Path, manifest: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(m) = manifest {
        return Ok(m.to_path_buf());
    }
    let sibling = wasm.with_extension("toml");
    if sibling.is_file() {
        return Ok(sibling);
    }
    let plugin_toml = wasm.parent().unwrap_or(Path::new(".")).join("plugin.toml");
    if plugin_toml.is_file() {
        return Ok(plugin_toml);
    }
    bail!(
        "no manifest for {}: expected {} (or pass --manifest FILE)",
        wasm.display(),
        sibling.display()
    )
}

/// A runtime on embedded stores in a scratch directory, as the host would build it.
pub(crate) struct Scratch {
    pub(crate) runtime: Arc<Runtime>,
    /// The stores the plugin reaches (blob store and warehouse through `buckets`/`tables`).
    pub(crate) backends: Backends,
    /// The blob store, remembering the buckets written.
    pub(crate) buckets: Arc<Touched<dyn BlobStore>>,
    /// The warehouse, remembering the tables written.
    pub(crate) tables: Arc<Touched<dyn Warehouse>>,
}

/// A [`Scratch`] runtime on embedded stores under `dir`.
pub(crate) async fn scratch_runtime(dir: &Path) -> anyhow::Result<Scratch> {
    let config = Config::parse("", Path::new("(plugin tool)"), dir)?;
    std::fs::create_dir_all(&config.host.data_dir)
        .with_context(|| format!("cannot create {}", config.host.data_dir.display()))?;
    let mut backends = Backends::connect(&config).await?;
    let buckets = Arc::new(Touched::new(backends.blobstore.clone()));
    let tables = Arc::new(Touched::new(backends.warehouse.clone()));
    backends.blobstore = buckets.clone();
    backends.warehouse = tables.clone();
    let runtime = Runtime::new(RuntimeConfig::default(), backends.capabilities())
        .context("cannot start the WebAssembly runtime")?;
    Ok(Scratch {
        runtime,
        backends,
        buckets,
        tables,
    })
}

/// Loads the pair exactly as the host's registry does (manifest rules, component, world,
/// imports against grants, one instantiation). A crate's `plugin.toml` is staged under the
/// plugin's name first, as deploying it does.
pub(crate) async fn load(
    runtime: &Arc<Runtime>,
    wasm: &Path,
    manifest: Option<&Path>,
    config: &BTreeMap<String, String>,
    scratch: &Path,
) -> anyhow::Result<Arc<Plugin>> {
    let manifest_path = manifest_path(wasm, manifest)?;
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("cannot read manifest {}", manifest_path.display()))?;
    let stem = manifest_path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("");
    if stem != "plugin" {
        // Deployed form `<name>.toml`: the host's own stem check applies as is.
        Manifest::parse(&text, &manifest_path)?;
    }
    let name = toml::from_str::<toml::Table>(&text)
        .ok()
        .and_then(|t| t.get("name").and_then(|n| n.as_str().map(String::from)))
        .unwrap_or_else(|| stem.to_string());
    let staged = scratch.join(format!("{}.toml", name.replace(['/', '\\'], "_")));
    std::fs::write(&staged, &text)
        .with_context(|| format!("cannot stage the manifest in {}", scratch.display()))?;
    runtime.load(wasm, &staged, config).await.map_err(|e| {
        anyhow::anyhow!(
            "{}",
            e.to_string().replace(
                &staged.display().to_string(),
                &manifest_path.display().to_string()
            )
        )
    })
}

pub(crate) fn world_name(w: World) -> &'static str {
    match w {
        World::Consumer => "consumer",
        World::Scheduled => "scheduled",
        World::HttpTrigger => "http-trigger",
    }
}

/// A capability store that remembers which buckets or tables were written, so the report
/// lists exactly those through the port (a bucket grant may be a pattern, `archive-*`).
pub(crate) struct Touched<T: ?Sized> {
    inner: Arc<T>,
    names: Mutex<BTreeSet<String>>,
}

impl<T: ?Sized> Touched<T> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: Arc<T>) -> Self {
        Touched {
            inner,
            names: Mutex::default(),
        }
    }

    fn touch(&self, name: &str) {
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string());
    }

    /// The names written so far, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        names.iter().cloned().collect()
    }
}

#[async_trait]
impl BlobStore for Touched<dyn BlobStore> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn ensure_bucket(&self, bucket: &str) -> PortResult<()> {
        self.touch(bucket);
        self.inner.ensure_bucket(bucket).await
    }
    async fn put(&self, bucket: &str, name: &str, data: Vec<u8>) -> PortResult<()> {
        self.touch(bucket);
        self.inner.put(bucket, name, data).await
    }
    async fn get(&self, bucket: &str, name: &str) -> PortResult<Option<Vec<u8>>> {
        self.inner.get(bucket, name).await
    }
    async fn delete(&self, bucket: &str, name: &str) -> PortResult<()> {
        self.inner.delete(bucket, name).await
    }
    async fn list(&self, bucket: &str, prefix: &str) -> PortResult<Vec<String>> {
        self.inner.list(bucket, prefix).await
    }
}

#[async_trait]
impl Warehouse for Touched<dyn Warehouse> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn ensure_table(&self, table: &str, avro_schema: &str) -> PortResult<()> {
        self.touch(table);
        self.inner.ensure_table(table, avro_schema).await
    }
    async fn load(&self, table: &str, rows: Vec<WarehouseRow>) -> PortResult<()> {
        self.touch(table);
        self.inner.load(table, rows).await
    }
    async fn count(&self, table: &str) -> PortResult<u64> {
        self.inner.count(table).await
    }
    async fn scan(&self, table: &str) -> PortResult<Vec<WarehouseRow>> {
        self.inner.scan(table).await
    }
}
