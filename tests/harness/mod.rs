//! Helpers every end-to-end test uses.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// The encoded primary key of an event message, read from its `event_id` attribute
/// (`table/key/commit_ts`; the key part escapes `/`). The ordering key is an ordering shard,
/// not the key.
pub fn event_key(m: &ledgerhost_core::ledger::Message) -> String {
    let id = m
        .attributes
        .get(ledgerhost_core::ledger::attr::EVENT_ID)
        .expect("an event message carries its event id");
    let rest = id.split_once('/').map_or("", |(_, r)| r);
    rest.rsplit_once('/').map_or(rest, |(k, _)| k).to_string()
}

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Directory holding the built plugins (`<name>.wasm` beside `<name>.toml`), as produced by
/// `scripts/build-plugins`. Overridable with `LEDGERHOST_PLUGIN_DIR`.
pub fn plugin_dir() -> PathBuf {
    std::env::var_os("LEDGERHOST_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/wasm"))
}

/// Path of a built plugin component; panics with the command to run if it is missing.
pub fn plugin_wasm(name: &str) -> PathBuf {
    let p = plugin_dir().join(format!("{name}.wasm"));
    assert!(
        p.exists(),
        "plugin component {} is missing: build the plugins first with `scripts/build-plugins` \
         (the README's test command does this)",
        p.display()
    );
    p
}

/// Path of a built plugin's manifest.
pub fn plugin_manifest(name: &str) -> PathBuf {
    let p = plugin_dir().join(format!("{name}.toml"));
    assert!(
        p.exists(),
        "plugin manifest {} is missing: run `scripts/build-plugins`",
        p.display()
    );
    p
}

/// A free TCP port on 127.0.0.1 (bound then released; good enough for a test's own servers).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// Waits until something accepts TCP connections on `127.0.0.1:port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A child process started in its own process group, killed with its whole group on drop
/// (emulators fork helpers that would otherwise keep ports and state alive).
pub struct ProcessGroup {
    child: Option<Child>,
    name: String,
}

impl ProcessGroup {
    /// Spawns `cmd` as the leader of a new process group.
    pub fn spawn(name: &str, mut cmd: std::process::Command) -> std::io::Result<Self> {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        let child = cmd.spawn()?;
        Ok(ProcessGroup {
            child: Some(child),
            name: name.to_string(),
        })
    }

    /// The leader's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends `signal` (e.g. "TERM") to the leader only and waits up to `timeout` for it to
    /// exit; returns its exit status, or `None` if it is still running (then killed).
    pub fn signal_and_wait(
        &mut self,
        signal: &str,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let _ = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        None
    }

    /// Waits up to `timeout` for the leader to exit by itself; its status, or `None` if it
    /// is still running.
    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Kills the whole group (SIGKILL) and reaps the leader.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pgid = child.id() as i32;
            // The `kill` command reaches the whole group without a libc dependency.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .status();
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("stopped {}", self.name);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` until it returns true or `timeout` passes. Returns the last result.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub mod bigquery;
pub mod gcs;
pub mod google;
pub mod host;
pub mod metrics;
pub mod pubsub_front;
pub mod redis;
pub mod views;
pub mod webhook_server;
