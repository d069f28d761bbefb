//! The `bqemulator` BigQuery emulator (PyPI, on DuckDB) on free loopback ports, in memory,
//! killed with its process group on drop. It runs offline only with DuckDB's extensions
//! linked locally, which `scripts/install-test-deps` does.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{ProcessGroup, free_port, wait_for_port};

/// Project id used on the emulator.
pub const PROJECT: &str = "ledgerhost-test";

const INSTALL: &str = "run scripts/install-test-deps (pip install bqemulator==1.4.0 \
                       duckdb==1.5.5 duckdb-extension-{spatial,avro,icu,json}==1.5.5 numpy, \
                       then link each .duckdb_extension into \
                       ~/.duckdb/extensions/v1.5.5/linux_amd64/)";

/// A running bqemulator.
pub struct BigQueryEmulator {
    _group: ProcessGroup,
    /// REST port.
    pub rest_port: u16,
}

fn require_extensions() {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let dir = home.join(".duckdb/extensions/v1.5.5/linux_amd64");
    for ext in ["json", "icu", "avro", "spatial"] {
        let p = dir.join(format!("{ext}.duckdb_extension"));
        assert!(
            p.exists(),
            "DuckDB extension {} is missing (bqemulator cannot download it offline): {INSTALL}",
            p.display()
        );
    }
}

impl BigQueryEmulator {
    /// Starts the emulator for [`PROJECT`] and waits until its REST port listens.
    pub fn start() -> Self {
        require_extensions();
        let bin = std::env::var_os("BQEMULATOR").map_or_else(|| "bqemulator".into(), PathBuf::from);
        let rest_port = free_port();
        let grpc_port = free_port();
        let mut cmd = Command::new(&bin);
        cmd.arg("start")
            .args([
                "--rest-host",
                "127.0.0.1",
                "--rest-port",
                &rest_port.to_string(),
            ])
            .args([
                "--grpc-host",
                "127.0.0.1",
                "--grpc-port",
                &grpc_port.to_string(),
            ])
            .args([
                "--project",
                PROJECT,
                "--ephemeral",
                "--log-level",
                "warning",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let group = ProcessGroup::spawn(&format!("bqemulator :{rest_port}"), cmd)
            .unwrap_or_else(|e| panic!("cannot start {} ({e}): {INSTALL}", bin.display()));
        assert!(
            wait_for_port(rest_port, Duration::from_secs(60)),
            "bqemulator did not listen on 127.0.0.1:{rest_port} within 60 s (is it installed? \
             {INSTALL})"
        );
        BigQueryEmulator {
            _group: group,
            rest_port,
        }
    }

    /// `http://127.0.0.1:PORT`, the base URL (the client appends `/bigquery/v2`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.rest_port)
    }
}
