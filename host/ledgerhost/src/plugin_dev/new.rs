//! `plugin new`: scaffolds a plugin crate (a materialized-view consumer with native tests)
//! from the templates in `templates/`.

use std::path::PathBuf;

use anyhow::{Context, bail};

/// What `plugin new` creates.
#[derive(Debug, Clone)]
pub struct NewPlugin {
    /// Plugin name (`[a-z0-9-]+`): crate, manifest and component name.
    pub name: String,
    /// Directory the crate directory `<name>/` is created in.
    pub parent: PathBuf,
    /// The SDK crate (`plugins/sdk` of a ledgerhost checkout); found automatically if `None`.
    pub sdk: Option<PathBuf>,
    /// Source table the plugin subscribes to.
    pub table: String,
}

/// Looks for `plugins/sdk` above the running binary, then above the current directory.
fn find_sdk() -> Option<PathBuf> {
    let mut starts = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    for start in starts {
        for dir in start.ancestors() {
            let candidate = dir.join("plugins/sdk");
            if candidate.join("Cargo.toml").is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// Creates the crate; returns its directory.
pub fn new_plugin(opts: &NewPlugin) -> anyhow::Result<PathBuf> {
    ledgerhost_manifest::names::check_plugin_name(&opts.name)?;
    if !crate::config::is_identifier(&opts.table) {
        bail!(
            "--table `{}` is not a table name (letters, digits and `_`)",
            opts.table
        );
    }
    let sdk = match &opts.sdk {
        Some(p) => p.clone(),
        None => find_sdk().context(
            "cannot find the ledgerhost SDK: pass --sdk PATH (the `plugins/sdk` directory of \
             a ledgerhost checkout)",
        )?,
    };
    let sdk = sdk
        .canonicalize()
        .with_context(|| format!("--sdk {}: no such directory", sdk.display()))?;
    let sdk_manifest = sdk.join("Cargo.toml");
    let sdk_toml = std::fs::read_to_string(&sdk_manifest).with_context(|| {
        format!(
            "--sdk {}: no Cargo.toml there (point it at `plugins/sdk`)",
            sdk.display()
        )
    })?;
    if !sdk_toml.contains("name = \"ledgerhost-sdk\"") {
        bail!(
            "--sdk {}: that crate is not ledgerhost-sdk (point it at `plugins/sdk`)",
            sdk.display()
        );
    }
    let dir = opts.parent.join(&opts.name);
    if dir.exists() {
        bail!(
            "{} already exists; choose another name or remove it",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir.join("src"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let name = &opts.name;
    let table = &opts.table;
    let sdk_path = sdk.display().to_string().replace('\\', "/");
    let file = name.replace('-', "_");
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{table}}", table)
            .replace("{{sdk}}", &sdk_path)
            .replace("{{file}}", &file)
    };
    let files: [(&str, String); 5] = [
        ("Cargo.toml", fill(CARGO_TOML)),
        ("plugin.toml", fill(PLUGIN_TOML)),
        ("src/lib.rs", fill(LIB_RS)),
        ("README.md", fill(README_MD)),
        (".gitignore", "/target\n".into()),
    ];
    for (file, text) in files {
        let path = dir.join(file);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    // The versions the SDK was tested with: a new crate builds offline and reproducibly.
    if let Some(lock) = sdk
        .ancestors()
        .map(|d| d.join("Cargo.lock"))
        .find(|p| p.is_file())
    {
        std::fs::copy(&lock, dir.join("Cargo.lock"))
            .with_context(|| format!("cannot copy {}", lock.display()))?;
    }
    Ok(dir)
}

// The files of a new crate; `{{name}}`, `{{table}}`, `{{sdk}}` and `{{file}}` are filled in.
const CARGO_TOML: &str = include_str!("templates/Cargo.toml.in");
const PLUGIN_TOML: &str = include_str!("templates/plugin.toml.in");
const LIB_RS: &str = include_str!("templates/lib.rs.in");
const README_MD: &str = include_str!("templates/README.md.in");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_filled_completely() {
        let dir = tempfile::tempdir().unwrap();
        let sdk = dir.path().join("sdk");
        std::fs::create_dir_all(&sdk).unwrap();
        std::fs::write(
            sdk.join("Cargo.toml"),
            "[package]\nname = \"ledgerhost-sdk\"\n",
        )
        .unwrap();
        let created = new_plugin(&NewPlugin {
            name: "order-view".into(),
            parent: dir.path().to_path_buf(),
            sdk: Some(sdk),
            table: "orders".into(),
        })
        .unwrap();
        for file in ["Cargo.toml", "plugin.toml", "src/lib.rs", "README.md"] {
            let text = std::fs::read_to_string(created.join(file)).unwrap();
            assert!(!text.contains("{{"), "{file} keeps a placeholder:\n{text}");
        }
        let lib = std::fs::read_to_string(created.join("src/lib.rs")).unwrap();
        assert!(
            lib.contains("const PREFIX: &str = \"order-view/\";"),
            "{lib}"
        );
        assert!(
            lib.contains("format!(\"{PREFIX}{}\", e.ordering_key())"),
            "{lib}"
        );
        let readme = std::fs::read_to_string(created.join("README.md")).unwrap();
        assert!(readme.contains("release/order_view.wasm"), "{readme}");
        let manifest = std::fs::read_to_string(created.join("plugin.toml")).unwrap();
        assert!(manifest.contains("table = \"orders\""), "{manifest}");
    }
}
