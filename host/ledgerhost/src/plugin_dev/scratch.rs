//! What `plugin check` and `plugin test` share: a runtime on embedded stores in a scratch
//! directory (stores that remember what was written), and loading a pair as the host does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use ledgerhost_runtime::manifest::{Manifest, World};
use ledgerhost_runtime::{Plugin, Runtime, RuntimeConfig};

use super::effects::{Recorded, Recorder};
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

/// A runtime on embedded stores in a scratch directory, as the host would build it, every
/// write through a capability recorded.
pub(crate) struct Scratch {
    pub(crate) runtime: Arc<Runtime>,
    /// The stores the plugin reaches (wrapped: what it writes is recorded).
    pub(crate) backends: Backends,
    /// What the plugin wrote, in order, and the buckets and tables it reached.
    pub(crate) recorder: Arc<Recorder>,
}

/// A [`Scratch`] runtime on embedded stores under `dir`.
pub(crate) async fn scratch_runtime(dir: &Path) -> anyhow::Result<Scratch> {
    let config = Config::parse("", Path::new("(plugin tool)"), dir)?;
    std::fs::create_dir_all(&config.host.data_dir)
        .with_context(|| format!("cannot create {}", config.host.data_dir.display()))?;
    let mut backends = Backends::connect(&config).await?;
    let recorder = Recorder::new();
    backends.blobstore = Recorded::new(backends.blobstore.clone(), recorder.clone());
    backends.keyvalue = Recorded::new(backends.keyvalue.clone(), recorder.clone());
    backends.warehouse = Recorded::new(backends.warehouse.clone(), recorder.clone());
    backends.rebuild_capabilities(&config)?;
    let runtime = Runtime::new(RuntimeConfig::default(), backends.capabilities())
        .context("cannot start the WebAssembly runtime")?;
    Ok(Scratch {
        runtime,
        backends,
        recorder,
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
