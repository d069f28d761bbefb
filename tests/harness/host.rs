//! Running the real host for a test: in-process through the library, or as a child process
//! that can be SIGKILLed and restarted.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::ProcessGroup;

/// A scratch directory laid out like a deployment: `ledgerhost.toml`, `app.db`, `plugins/`.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    /// A new empty workspace with a `plugins/` directory.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("plugins")).expect("plugins dir");
        Workspace { dir }
    }

    /// The workspace root.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The SQLite source file.
    pub fn db(&self) -> PathBuf {
        self.path().join("app.db")
    }

    /// The host's data directory (as set by [`Workspace::write_config`]).
    pub fn data_dir(&self) -> PathBuf {
        self.path().join("state")
    }

    /// The host's embedded keyvalue store, opened as another process would.
    pub fn keyvalue(&self) -> ledgerhost_capabilities::keyvalue::embedded::EmbeddedKeyValue {
        ledgerhost_capabilities::keyvalue::embedded::EmbeddedKeyValue::open(
            &self.data_dir().join("keyvalue.db"),
        )
        .expect("open the host's keyvalue store")
    }

    /// The keys under `prefix` in the host's embedded keyvalue store (read through the port,
    /// as another process would).
    pub async fn kv_keys(&self, prefix: &str) -> std::collections::BTreeSet<String> {
        use ledgerhost_core::capabilities::KeyValue as _;
        self.keyvalue()
            .list_keys(prefix)
            .await
            .expect("list keys")
            .into_iter()
            .collect()
    }

    /// Writes `ledgerhost.toml`: an SQLite source at `app.db`, data in `state/`, plugins in
    /// `plugins/`, admin on a free port, plus `extra` TOML (tables, plugin overrides).
    pub fn write_config(&self, extra: &str) -> PathBuf {
        let text = format!(
            "[host]\ndata-dir = \"state\"\nplugin-dir = \"plugins\"\nlease-ttl-ms = 2000\n\
             drain-timeout-ms = 10000\n\n[source]\nkind = \"sqlite\"\npath = \"app.db\"\n\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\n{extra}\n"
        );
        let path = self.path().join("ledgerhost.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// Installs a built plugin component under `name` with the given manifest text
    /// (the manifest's `name` must be `name`). Manifest first: the registry wants both files.
    pub fn install_plugin(&self, component: &str, name: &str, manifest: &str) {
        let dir = self.path().join("plugins");
        std::fs::write(dir.join(format!("{name}.toml")), manifest).expect("write manifest");
        std::fs::copy(
            super::plugin_wasm(component),
            dir.join(format!("{name}.wasm")),
        )
        .expect("copy component");
    }

    /// Runs SQL on the source database (the application's side).
    pub fn sql(&self, sql: &str) {
        let conn = rusqlite::Connection::open(self.db()).expect("open app.db");
        conn.busy_timeout(Duration::from_secs(10))
            .expect("busy timeout");
        conn.execute_batch(sql).expect("run SQL");
    }
}

impl Default for Workspace {
    fn default() -> Self {
        Self::new()
    }
}

/// The host binary running as a child process.
pub struct HostProcess {
    pub group: ProcessGroup,
    pub log: PathBuf,
}

impl HostProcess {
    /// Starts `<binary> run --config <config>`; stderr goes to `log` (appended). Tests pass
    /// `env!("CARGO_BIN_EXE_ledgerhost-under-test")` as the binary.
    pub fn start(binary: &Path, config: &Path, log: &Path) -> Self {
        Self::start_with_env(binary, config, log, &[])
    }

    /// Like [`HostProcess::start`], with extra environment variables (e.g. the Google
    /// emulator variables).
    pub fn start_with_env(
        binary: &Path,
        config: &Path,
        log: &Path,
        env: &[(String, String)],
    ) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open host log");
        let mut cmd = Command::new(binary);
        cmd.arg("run")
            .arg("--config")
            .arg(config)
            .env("LEDGERHOST_LOG", "info,wasmtime=warn,cranelift=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let group = ProcessGroup::spawn("ledgerhost", cmd).expect("start ledgerhost");
        HostProcess {
            group,
            log: log.to_path_buf(),
        }
    }

    /// SIGKILLs the host (no drain, no cleanup: a crash).
    pub fn kill(&mut self) {
        self.group.kill();
    }

    /// The host's log so far, for assertion messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The manifest of the `recorder` test plugin installed as `name`, reading `table` (each
/// name has its own subscription `plugin-<name>`, so scenarios sharing a ledger stay apart).
pub fn recorder_manifest(name: &str, table: &str) -> String {
    format!(
        "name = \"{name}\"\nworld = \"consumer\"\n[subscription]\ntable = \"{table}\"\n\
         batch-size = 256\nmax-wait-ms = 20\n[limits]\nmemory-mb = 64\ndeadline-ms = 5000\n\
         [grants]\nkey-prefixes = [\"rec/\", \"order/\"]\n"
    )
}
