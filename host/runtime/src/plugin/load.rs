//! Loading a plugin version on the [`Runtime`]: the component's header checked, compiled
//! (or read from the compile cache), checked against its world and grants, and
//! instantiated once before it is handed out.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use ledgerhost_manifest::{self as manifest, Manifest};

use super::Plugin;
use crate::cache::{CacheOutcome, CompileCache};
use crate::engine::Runtime;
use crate::error::LoadError;

impl Runtime {
    /// Loads `wasm` with the manifest at `manifest_path`; `config_overrides` replace the
    /// manifest's `[config]` values. The component is compiled (or read from the cache),
    /// checked against its world and grants, and instantiated once before it is returned.
    pub async fn load(
        self: &Arc<Self>,
        wasm: &Path,
        manifest_path: &Path,
        config_overrides: &BTreeMap<String, String>,
    ) -> Result<Arc<Plugin>, LoadError> {
        let manifest = Manifest::load(manifest_path)?;
        let bytes = tokio::fs::read(wasm)
            .await
            .map_err(|source| LoadError::Read {
                path: wasm.to_path_buf(),
                source,
            })?;
        self.load_bytes(wasm, &bytes, manifest, config_overrides)
            .await
            .map(|(p, _)| p)
    }

    /// As [`Runtime::load`], from bytes and a parsed manifest; also says whether the compile
    /// cache was hit.
    pub async fn load_bytes(
        self: &Arc<Self>,
        path: &Path,
        bytes: &[u8],
        manifest: Manifest,
        config_overrides: &BTreeMap<String, String>,
    ) -> Result<(Arc<Plugin>, CacheOutcome), LoadError> {
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            return Err(LoadError::Invalid {
                path: path.to_path_buf(),
                message: "the file does not start with the WebAssembly magic bytes".into(),
            });
        }
        if bytes[4..8] != [0x0d, 0x00, 0x01, 0x00] {
            return Err(LoadError::Invalid {
                path: path.to_path_buf(),
                message: "this is a core module, not a component; build for wasm32-wasip2 \
                          (or wrap the module with `wasm-tools component new`)"
                    .into(),
            });
        }
        if let (Some(tables), Some(sub)) = (&self.config.tables, &manifest.subscription) {
            sub.tables_in(tables.iter().map(String::as_str))
                .map_err(|message| {
                    LoadError::Manifest(manifest::ManifestError::Invalid {
                        path: manifest.path().to_path_buf(),
                        message,
                    })
                })?;
        }
        let digest = CompileCache::digest(bytes);
        let this = self.clone();
        let owned = bytes.to_vec();
        let digest2 = digest.clone();
        let (component, outcome) =
            tokio::task::spawn_blocking(move || this.cache.load(&this.engine, &owned, &digest2))
                .await
                .map_err(|e| LoadError::Invalid {
                    path: path.to_path_buf(),
                    message: format!("compilation task failed: {e}"),
                })?
                .map_err(|e| LoadError::Compile {
                    path: path.to_path_buf(),
                    source: e.into(),
                })?;
        let plugin = Plugin::new(
            self.clone(),
            path,
            component,
            manifest,
            digest,
            config_overrides,
        )?;
        // Validate by instantiating once now, beside whatever version is serving.
        plugin
            .warm()
            .await
            .map_err(|source| LoadError::Instantiate {
                path: path.to_path_buf(),
                source,
            })?;
        Ok((Arc::new(plugin), outcome))
    }
}
