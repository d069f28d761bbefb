//! The watched plugin directory: `<name>.wasm` beside `<name>.toml`.
//!
//! A new pair is loaded; a changed one (component or manifest) is compiled and instantiated
//! beside the serving version and only then swapped into the plugin's [`PluginSlot`]; a
//! removed one is unloaded. A pair that fails to load is refused with its reason and the
//! serving version, if any, stays. A pair that fails while one of its files is younger than
//! [`SETTLE`] is taken to be still being written (`cp` truncates, then writes) and is looked
//! at again once it has settled, so a deploy by plain copy is not refused half-way. Callers take [`PluginSlot::current`] once per batch, so a
//! batch is handled entirely by one version: swaps happen between batches.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::cache::CompileCache;
use crate::engine::Runtime;
use crate::plugin::Plugin;
use ledgerhost_manifest::Manifest;

/// What happened in the plugin directory.
#[derive(Clone)]
pub enum RegistryEvent {
    /// A new plugin was loaded.
    Loaded(Arc<Plugin>),
    /// A plugin's component changed and the new version replaced the old one.
    Replaced {
        /// The version that was running before.
        old: Arc<Plugin>,
        /// The version now running.
        new: Arc<Plugin>,
    },
    /// A plugin was removed from the directory; carries its name.
    Removed(String),
    /// A plugin file was refused at load.
    Refused {
        /// Path of the refused file.
        path: PathBuf,
        /// Why it was refused.
        error: String,
    },
}

impl std::fmt::Debug for RegistryEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryEvent::Loaded(p) => write!(f, "Loaded({} {})", p.manifest().name, p.version()),
            RegistryEvent::Replaced { old, new } => write!(
                f,
                "Replaced({} {} -> {})",
                new.manifest().name,
                old.version(),
                new.version()
            ),
            RegistryEvent::Removed(n) => write!(f, "Removed({n})"),
            RegistryEvent::Refused { path, error } => {
                write!(f, "Refused({}: {error})", path.display())
            }
        }
    }
}

/// The serving version of one plugin, swapped atomically.
#[derive(Default)]
pub struct PluginSlot {
    current: RwLock<Option<Arc<Plugin>>>,
}

impl PluginSlot {
    /// The version to use for the next batch; `None` once the plugin was removed.
    pub fn current(&self) -> Option<Arc<Plugin>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn replace(&self, plugin: Option<Arc<Plugin>>) -> Option<Arc<Plugin>> {
        std::mem::replace(
            &mut *self.current.write().unwrap_or_else(|e| e.into_inner()),
            plugin,
        )
    }
}

/// Identity of what is on disk for one plugin.
type Fingerprint = (String, String);

struct Inner {
    runtime: Arc<Runtime>,
    dir: PathBuf,
    overrides: BTreeMap<String, BTreeMap<String, String>>,
    slots: Mutex<BTreeMap<String, Arc<PluginSlot>>>,
    loaded: Mutex<BTreeMap<String, Fingerprint>>,
    refused: Mutex<BTreeMap<String, Fingerprint>>,
    events: mpsc::UnboundedSender<RegistryEvent>,
    /// Wakes the watch loop; also used to re-check a pair that was still being written.
    changed: mpsc::UnboundedSender<()>,
}

/// The watcher of one plugin directory.
pub struct Registry {
    inner: Arc<Inner>,
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The plugin directory cannot be watched.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch plugin directory {dir}: {message}")]
pub struct RegistryError {
    /// The directory that cannot be watched.
    pub dir: PathBuf,
    /// The watcher's error.
    pub message: String,
}

const DEBOUNCE: Duration = Duration::from_millis(25);
/// A full rescan also runs this often, in case a file system drops change notifications.
const RESCAN: Duration = Duration::from_secs(10);
/// A file modified less than this long ago may still be being written.
pub const SETTLE: Duration = Duration::from_millis(500);

impl Registry {
    /// Loads every plugin in `dir`, then watches it. `overrides` are per-plugin
    /// `wasi:config` values. Events of the initial load are delivered too.
    pub async fn start(
        runtime: Arc<Runtime>,
        dir: PathBuf,
        overrides: BTreeMap<String, BTreeMap<String, String>>,
    ) -> Result<(Registry, mpsc::UnboundedReceiver<RegistryEvent>), RegistryError> {
        let (events, rx) = mpsc::unbounded_channel();
        let (changed_tx, mut changed_rx) = mpsc::unbounded_channel::<()>();
        let inner = Arc::new(Inner {
            runtime,
            dir: dir.clone(),
            overrides,
            slots: Mutex::new(BTreeMap::new()),
            loaded: Mutex::new(BTreeMap::new()),
            refused: Mutex::new(BTreeMap::new()),
            events,
            changed: changed_tx.clone(),
        });
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if res.is_ok() {
                let _ = changed_tx.send(());
            }
        })
        .map_err(|e| RegistryError {
            dir: dir.clone(),
            message: e.to_string(),
        })?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|e| RegistryError {
                dir: dir.clone(),
                message: e.to_string(),
            })?;
        inner.rescan().await;
        let task = {
            let inner = inner.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        got = changed_rx.recv() => {
                            if got.is_none() {
                                break;
                            }
                            // Debounce: wait until the directory is quiet.
                            while let Ok(Some(())) =
                                tokio::time::timeout(DEBOUNCE, changed_rx.recv()).await
                            {}
                        }
                        _ = tokio::time::sleep(RESCAN) => {}
                    }
                    inner.rescan().await;
                }
            })
        };
        Ok((
            Registry {
                inner,
                _watcher: watcher,
                task,
            },
            rx,
        ))
    }

    /// The slot of a plugin, if it was ever loaded.
    pub fn slot(&self, name: &str) -> Option<Arc<PluginSlot>> {
        self.inner
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Every serving plugin.
    pub fn plugins(&self) -> Vec<Arc<Plugin>> {
        self.inner
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter_map(|s| s.current())
            .collect()
    }

    /// Rescans the directory now (tests and tools; the watcher does this on its own).
    pub async fn rescan(&self) {
        self.inner.rescan().await;
    }
}

impl Inner {
    fn emit(&self, event: RegistryEvent) {
        let _ = self.events.send(event);
    }

    /// True when one of `paths` was modified within [`SETTLE`].
    fn still_being_written(&self, paths: &[&Path]) -> bool {
        let now = SystemTime::now();
        paths.iter().any(|p| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).map_or(true, |age| age < SETTLE))
        })
    }

    /// Plugin names with both files present.
    fn pairs(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            tracing::warn!(dir = %self.dir.display(), "plugin directory unreadable");
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(str::to_string))
            .filter(|n| self.dir.join(format!("{n}.toml")).exists())
            .collect();
        names.sort();
        names
    }

    async fn rescan(&self) {
        let present = self.pairs();
        for name in &present {
            self.consider(name).await;
        }
        let gone: Vec<String> = self
            .loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .filter(|n| !present.contains(n))
            .cloned()
            .collect();
        for name in gone {
            self.loaded
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&name);
            let slot = self
                .slots
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&name)
                .cloned();
            if let Some(slot) = slot
                && let Some(old) = slot.replace(None)
            {
                tracing::info!(plugin = name, version = old.version(), "plugin removed");
                self.emit(RegistryEvent::Removed(name));
            }
        }
    }

    /// Loads or swaps one plugin if its files changed.
    async fn consider(&self, name: &str) {
        let wasm_path = self.dir.join(format!("{name}.wasm"));
        let manifest_path = self.dir.join(format!("{name}.toml"));
        let (bytes, text) = match (
            std::fs::read(&wasm_path),
            std::fs::read_to_string(&manifest_path),
        ) {
            (Ok(b), Ok(t)) => (b, t),
            // Vanished or unreadable between listing and reading: the next scan decides.
            _ => return,
        };
        let fp: Fingerprint = (
            CompileCache::digest(&bytes),
            CompileCache::digest(text.as_bytes()),
        );
        let same = |m: &Mutex<BTreeMap<String, Fingerprint>>| {
            m.lock().unwrap_or_else(|e| e.into_inner()).get(name) == Some(&fp)
        };
        if same(&self.loaded) || same(&self.refused) {
            return;
        }
        let overrides = self.overrides.get(name).cloned().unwrap_or_default();
        let result = match Manifest::parse(&text, &manifest_path) {
            Ok(manifest) => self
                .runtime
                .load_bytes(&wasm_path, &bytes, manifest, &overrides)
                .await
                .map(|(p, _)| p),
            Err(e) => Err(e.into()),
        };
        match result {
            Ok(plugin) => {
                self.refused
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(name);
                self.loaded
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.to_string(), fp);
                let slot = self
                    .slots
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(name.to_string())
                    .or_default()
                    .clone();
                match slot.replace(Some(plugin.clone())) {
                    Some(old) => {
                        tracing::info!(
                            plugin = name,
                            from = old.version(),
                            to = plugin.version(),
                            "plugin swapped"
                        );
                        self.emit(RegistryEvent::Replaced { old, new: plugin });
                    }
                    None => {
                        tracing::info!(plugin = name, version = plugin.version(), world = ?plugin.manifest().world, "plugin loaded");
                        self.emit(RegistryEvent::Loaded(plugin));
                    }
                }
            }
            Err(e) if self.still_being_written(&[&wasm_path, &manifest_path]) => {
                tracing::debug!(plugin = name, error = %e, "plugin files still being written; looking again once they settle");
                let changed = self.changed.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(SETTLE).await;
                    let _ = changed.send(());
                });
            }
            Err(e) => {
                let serving = self
                    .slots
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(name)
                    .and_then(|s| s.current())
                    .map(|p| p.version().to_string());
                tracing::error!(plugin = name, error = %e, serving = serving.as_deref().unwrap_or("none"), "plugin refused; the serving version (if any) keeps running");
                self.refused
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.to_string(), fp);
                self.emit(RegistryEvent::Refused {
                    path: wasm_path,
                    error: e.to_string(),
                });
            }
        }
    }
}

/// True for a path the registry watches (for tools that copy files in).
pub fn is_plugin_file(path: &Path) -> bool {
    path.extension().is_some_and(|x| x == "wasm" || x == "toml")
}
