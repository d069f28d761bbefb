//! `[host]` and `[admin]`: where the host keeps its state and finds plugins, its replica
//! identity and lease, and the admin HTTP port.

use std::path::PathBuf;

use serde::Deserialize;

/// Where the host keeps its own state and finds plugins.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct HostConfig {
    /// Local state: watermarks, embedded ledger, compile cache. Relative to the config file.
    pub data_dir: PathBuf,
    /// Watched directory of `<name>.wasm` + `<name>.toml` plugins. Relative to the config file.
    pub plugin_dir: PathBuf,
    /// Identity of this replica for poller leases; defaults to `<hostname>-<pid>`.
    pub replica_id: Option<String>,
    /// How long a poller lease lasts without renewal before another replica takes over.
    pub lease_ttl_ms: u64,
    /// Time SIGTERM / Ctrl-C waits for in-flight batches before exiting.
    pub drain_timeout_ms: u64,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            data_dir: PathBuf::from(".ledgerhost"),
            plugin_dir: PathBuf::from("plugins"),
            replica_id: None,
            lease_ttl_ms: 5000,
            drain_timeout_ms: 10_000,
        }
    }
}

impl HostConfig {
    /// Checks the values serde cannot: `Err((key, problem))`.
    pub fn check(&self) -> Result<(), (String, String)> {
        if self.lease_ttl_ms < 500 {
            return Err((
                "host.lease-ttl-ms".into(),
                "must be at least 500 milliseconds".into(),
            ));
        }
        Ok(())
    }
}

/// The admin HTTP port (health, metrics, status, HTTP-triggered plugins).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AdminConfig {
    /// `host:port`; loopback by default. Port 0 picks a free port.
    pub listen: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:8686".into(),
        }
    }
}

impl AdminConfig {
    /// Checks the listen address: `Err((key, problem))`.
    pub fn check(&self) -> Result<(), (String, String)> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err((
                "admin.listen".into(),
                format!(
                    "must be an address like `127.0.0.1:8686`, not `{}`",
                    self.listen
                ),
            ));
        }
        Ok(())
    }
}
