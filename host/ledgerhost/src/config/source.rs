//! `[source]`: the database the host captures changes from.

use std::path::PathBuf;

use ledgerhost_google::{check_endpoint, missing_project};
use serde::Deserialize;

/// The source of truth.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    deny_unknown_fields
)]
pub enum SourceConfig {
    /// An SQLite file the application writes to.
    Sqlite {
        /// Relative to the config file.
        path: PathBuf,
    },
    /// Cloud Spanner: application default credentials, or the emulator through
    /// `SPANNER_EMULATOR_HOST` / an explicit plaintext `endpoint`.
    Spanner {
        /// Default: the environment variable `GOOGLE_CLOUD_PROJECT`.
        #[serde(default)]
        project: String,
        /// Spanner instance id.
        instance: String,
        /// Spanner database id.
        database: String,
        /// gRPC endpoint override, e.g. `http://127.0.0.1:9010` (plaintext = anonymous).
        #[serde(default)]
        endpoint: Option<String>,
        /// REST admin endpoint override (creates the lease table), e.g.
        /// `http://127.0.0.1:9020`.
        #[serde(default)]
        admin_endpoint: Option<String>,
        /// A table whose commit-timestamp column leads no index is refused at start (each
        /// poll would scan it whole), or only warned about.
        #[serde(default)]
        missing_commit_index: MissingCommitIndex,
        /// How often a quiet partition of a change stream reports progress, ms (default
        /// 1000): the longest a change read from a stream waits for the other partitions.
        #[serde(default)]
        change_stream_heartbeat_ms: Option<u64>,
    },
}

/// `[source] change-stream-heartbeat-ms`: from a tenth of a second (the emulator reads in
/// 100 ms slices) to five minutes. The host's own bounds: Spanner's reference documents the
/// argument, not a range, and values below a second were measured on the emulator only.
const CHANGE_STREAM_HEARTBEAT_MS: std::ops::RangeInclusive<u64> = 100..=300_000;

/// `[source] missing-commit-index` (Spanner): what the host does at start with a table that
/// has no index leading with its commit-timestamp column.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MissingCommitIndex {
    /// Refuse to start, printing the `CREATE INDEX` to run.
    #[default]
    Refuse,
    /// Log a warning with the `CREATE INDEX` and poll by full table scans.
    Warn,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig::Sqlite {
            path: PathBuf::from(".ledgerhost/source.db"),
        }
    }
}

impl SourceConfig {
    /// Checks what serde cannot (a Spanner source's project, instance, database and
    /// endpoints): `Err((key, problem))`.
    pub fn check(&self) -> Result<(), (String, String)> {
        if let SourceConfig::Spanner {
            project,
            instance,
            database,
            endpoint,
            admin_endpoint,
            change_stream_heartbeat_ms,
            ..
        } = self
        {
            if let Some(ms) = change_stream_heartbeat_ms
                && !(CHANGE_STREAM_HEARTBEAT_MS).contains(ms)
            {
                return Err((
                    "source.change-stream-heartbeat-ms".into(),
                    format!(
                        "must be between {} and {} milliseconds, not {ms}",
                        CHANGE_STREAM_HEARTBEAT_MS.start(),
                        CHANGE_STREAM_HEARTBEAT_MS.end()
                    ),
                ));
            }
            if project.trim().is_empty() {
                return Err((
                    "source.project".into(),
                    missing_project("source.kind = \"spanner\""),
                ));
            }
            for (k, v) in [("instance", instance), ("database", database)] {
                if v.trim().is_empty() {
                    return Err((format!("source.{k}"), "must not be empty".into()));
                }
            }
            if let Some(ep) = endpoint {
                check_endpoint(ep).map_err(|p| ("source.endpoint".to_string(), p))?;
            }
            if let Some(ep) = admin_endpoint {
                check_endpoint(ep).map_err(|p| ("source.admin-endpoint".to_string(), p))?;
            }
        }
        Ok(())
    }
}
