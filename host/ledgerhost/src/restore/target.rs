//! Where `restore` writes, parsed from `--into`: an SQLite file or a Spanner database.

use std::path::PathBuf;

use anyhow::bail;

/// Where restored rows go, parsed from `--into`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreTarget {
    /// An SQLite file (created when missing).
    Sqlite(PathBuf),
    /// A Spanner database (which must exist).
    Spanner {
        /// Google Cloud project id.
        project: String,
        /// Spanner instance id.
        instance: String,
        /// Database id.
        database: String,
        /// Data-plane endpoint override.
        endpoint: Option<String>,
        /// Admin endpoint override.
        admin_endpoint: Option<String>,
    },
}

impl RestoreTarget {
    /// Parses `sqlite:PATH` or `spanner:projects/P/instances/I/databases/D`.
    pub fn parse(text: &str) -> anyhow::Result<RestoreTarget> {
        let usage = "use sqlite:PATH or spanner:projects/P/instances/I/databases/D";
        if let Some(path) = text.strip_prefix("sqlite:") {
            if path.is_empty() {
                bail!("--into {text}: no file after `sqlite:`; {usage}");
            }
            return Ok(RestoreTarget::Sqlite(PathBuf::from(path)));
        }
        if let Some(path) = text.strip_prefix("spanner:") {
            let parts: Vec<&str> = path.split('/').collect();
            if let ["projects", p, "instances", i, "databases", d] = parts.as_slice()
                && ![p, i, d].iter().any(|s| s.is_empty())
            {
                return Ok(RestoreTarget::Spanner {
                    project: p.to_string(),
                    instance: i.to_string(),
                    database: d.to_string(),
                    endpoint: None,
                    admin_endpoint: None,
                });
            }
            bail!("--into {text}: not a Spanner database path; {usage}");
        }
        bail!("--into {text}: unknown target; {usage}");
    }
}
