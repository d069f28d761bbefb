//! A real `redis-server` on a free loopback port, killed with its process group on drop.
//!
//! ```text
//! let mut redis = RedisServer::start();            // in memory, like a cache
//! let mut redis = RedisServer::start_persistent(); // AOF fsync'd on every write
//! redis.stop(); redis.restart();                   // same port (and data, if persistent)
//! ```

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{ProcessGroup, free_port, wait_for_port};

const INSTALL: &str = "apt-get install -y redis-server (or run scripts/install-test-deps)";

/// A running (or stopped, restartable) Redis server.
pub struct RedisServer {
    group: Option<ProcessGroup>,
    /// The loopback port it listens on (kept across restarts).
    pub port: u16,
    dir: tempfile::TempDir,
    persistent: bool,
}

fn binary() -> PathBuf {
    let path =
        std::env::var_os("REDIS_SERVER").map_or_else(|| "redis-server".into(), PathBuf::from);
    match Command::new(&path).arg("--version").output() {
        Ok(o) if o.status.success() => path,
        Ok(o) => panic!(
            "`{} --version` failed ({}): reinstall with {INSTALL}",
            path.display(),
            o.status
        ),
        Err(e) => panic!("redis-server is missing ({e}): {INSTALL}"),
    }
}

impl RedisServer {
    /// Starts Redis without persistence (`--save "" --appendonly no`).
    pub fn start() -> Self {
        Self::launch(false)
    }

    /// Starts Redis with an append-only file fsync'd on every write in a temporary
    /// directory, so its data survives [`Self::stop`] + [`Self::restart`] as Memorystore's
    /// does across a failover.
    pub fn start_persistent() -> Self {
        Self::launch(true)
    }

    fn launch(persistent: bool) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory for redis");
        let mut server = RedisServer {
            group: None,
            port: free_port(),
            dir,
            persistent,
        };
        server.restart();
        server
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: no shutdown save, as a crash).
    pub fn stop(&mut self) {
        if let Some(mut g) = self.group.take() {
            g.kill();
        }
    }

    /// Starts the server again on the same port; waits until it accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        let mut cmd = Command::new(binary());
        cmd.current_dir(self.dir.path())
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path());
        if self.persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let group = ProcessGroup::spawn(&format!("redis-server :{}", self.port), cmd)
            .unwrap_or_else(|e| panic!("cannot start redis-server ({e}): {INSTALL}"));
        self.group = Some(group);
        assert!(
            wait_for_port(self.port, Duration::from_secs(20)),
            "redis-server did not listen on 127.0.0.1:{} within 20 s",
            self.port
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
