//! The plugin manifest: `<name>.toml` beside `<name>.wasm`. It names the plugin's world,
//! what it consumes, its limits, and the capabilities it is granted — a plugin reaches
//! nothing else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why a manifest was refused. Names the file, the key and the expected form.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("manifest {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Which WIT world the component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    /// `handle(list<event>) -> list<disposition>`.
    Consumer,
    /// `tick(now)`, on a schedule.
    Scheduled,
    /// `handle-request(request) -> response`, served under `/plugins/<name>/`.
    HttpTrigger,
}

/// A parsed, validated manifest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manifest {
    /// `[a-z0-9-]+`, equal to the file stem.
    pub name: String,
    pub world: World,
    /// What a consumer consumes (required for consumers, refused for others).
    #[serde(default)]
    pub subscription: Option<Subscription>,
    /// When a scheduled plugin runs (defaults apply when absent).
    #[serde(default)]
    pub schedule: Option<Schedule>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub grants: Grants,
    /// Default values of the `wasi:config` keys granted in `grants.config`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

/// A consumer's subscription.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Subscription {
    /// A source table (its ledger topic); exactly one of `table` and `topic`.
    #[serde(default)]
    pub table: Option<String>,
    /// Any ledger topic (e.g. one a filter or the replayer publishes to).
    #[serde(default)]
    pub topic: Option<String>,
    /// Host-side filter expressions, ANDed (`amount >= 1000`, `status == 'paid'`).
    #[serde(default)]
    pub filter: Vec<String>,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
}

fn default_batch_size() -> usize {
    64
}
fn default_max_wait_ms() -> u64 {
    100
}
fn default_max_attempts() -> u32 {
    5
}
fn default_backoff_initial_ms() -> u64 {
    100
}
fn default_backoff_max_ms() -> u64 {
    10_000
}

/// A scheduled plugin's period.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Schedule {
    #[serde(default = "default_every_secs")]
    pub every_secs: u64,
}

fn default_every_secs() -> u64 {
    3600
}

/// Resource limits of one instance.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Limits {
    /// Linear memory cap.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    /// Wall-clock budget of one call (a batch, a tick, a request).
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
}

/// The largest memory a manifest may ask for.
pub const MAX_MEMORY_MB: u64 = 512;

fn default_memory_mb() -> u64 {
    64
}
fn default_deadline_ms() -> u64 {
    1000
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: default_memory_mb(),
            deadline_ms: default_deadline_ms(),
        }
    }
}

/// What the plugin may reach. A trailing `*` makes an entry a prefix (`archive-*`).
/// Grants of other capabilities land in `other`; the runtime refuses a name no registered
/// capability claims when it loads the plugin.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Grants {
    #[serde(default)]
    pub buckets: Vec<String>,
    #[serde(default)]
    pub key_prefixes: Vec<String>,
    #[serde(default)]
    pub warehouse_tables: Vec<String>,
    #[serde(default)]
    pub topics: Vec<String>,
    /// `wasi:config` keys the plugin may read.
    #[serde(default)]
    pub config: Vec<String>,
    /// The grants of the other capabilities, by name (e.g. `http`).
    #[serde(flatten)]
    pub other: BTreeMap<String, Vec<String>>,
}

impl Grants {
    /// Every grant by its manifest key (`buckets`, `key-prefixes`, ...), as the capabilities
    /// read them.
    pub fn to_map(&self) -> BTreeMap<String, Vec<String>> {
        [
            ("buckets", &self.buckets),
            ("key-prefixes", &self.key_prefixes),
            ("warehouse-tables", &self.warehouse_tables),
            ("topics", &self.topics),
            ("config", &self.config),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .chain(self.other.clone())
        .collect()
    }
}

/// True when `name` matches a grant entry (exact, or prefix for entries ending in `*`).
pub fn grant_matches(grants: &[String], name: &str) -> bool {
    grants.iter().any(|g| match g.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => g == name,
    })
}

impl Manifest {
    /// Reads and validates `<name>.toml`; `name` must equal the file stem.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Manifest::parse(&text, path)
    }

    /// Parses and validates manifest text (`path` for messages and the stem check).
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, ManifestError> {
        let invalid = |message: String| ManifestError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let m: Manifest = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if m.name.is_empty()
            || !m
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(invalid(format!(
                "`name` must be lowercase letters, digits and `-`, not `{}`",
                m.name
            )));
        }
        if let Some(stem) = path.file_stem().and_then(|s| s.to_str())
            && stem != m.name
        {
            return Err(invalid(format!(
                "`name` is `{}` but the file is `{stem}.toml`; they must match (and the \
                 component must be `{}.wasm`)",
                m.name, m.name
            )));
        }
        match (m.world, &m.subscription) {
            (World::Consumer, None) => {
                return Err(invalid(
                    "a consumer needs a [subscription] with `table` or `topic`".into(),
                ));
            }
            (World::Consumer, Some(s)) => {
                if s.table.is_some() == s.topic.is_some() {
                    return Err(invalid(
                        "[subscription] needs exactly one of `table` and `topic`".into(),
                    ));
                }
                if !(1..=10_000).contains(&s.batch_size) {
                    return Err(invalid(
                        "`subscription.batch-size` must be between 1 and 10000".into(),
                    ));
                }
                if s.max_attempts == 0 {
                    return Err(invalid(
                        "`subscription.max-attempts` must be at least 1".into(),
                    ));
                }
                if s.backoff_initial_ms == 0 || s.backoff_max_ms < s.backoff_initial_ms {
                    return Err(invalid(
                        "`subscription.backoff-initial-ms` must be > 0 and at most \
                         `backoff-max-ms`"
                            .into(),
                    ));
                }
            }
            (_, Some(_)) => {
                return Err(invalid(
                    "[subscription] is only for world = \"consumer\"".into(),
                ));
            }
            _ => {}
        }
        if m.schedule.is_some() && m.world != World::Scheduled {
            return Err(invalid(
                "[schedule] is only for world = \"scheduled\"".into(),
            ));
        }
        if let Some(s) = &m.schedule
            && s.every_secs == 0
        {
            return Err(invalid("`schedule.every-secs` must be at least 1".into()));
        }
        if !(1..=MAX_MEMORY_MB).contains(&m.limits.memory_mb) {
            return Err(invalid(format!(
                "`limits.memory-mb` must be between 1 and {MAX_MEMORY_MB}"
            )));
        }
        if !(1..=600_000).contains(&m.limits.deadline_ms) {
            return Err(invalid(
                "`limits.deadline-ms` must be between 1 and 600000".into(),
            ));
        }
        for key in m.config.keys() {
            if !m.grants.config.contains(key) {
                return Err(invalid(format!(
                    "[config] sets `{key}` but `grants.config` does not list it; add \"{key}\" \
                     to grants.config"
                )));
            }
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, String> {
        Manifest::parse(text, Path::new("plugins/echo.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_full_manifest_parses_with_defaults() {
        let m = parse(
            "name = \"echo\"\nworld = \"consumer\"\n[subscription]\ntable = \"orders\"\n\
             [grants]\nbuckets = [\"archive-*\"]\nconfig = [\"k\"]\n[config]\nk = \"v\"\n",
        )
        .unwrap();
        let s = m.subscription.unwrap();
        assert_eq!((s.batch_size, s.max_wait_ms, s.max_attempts), (64, 100, 5));
        assert_eq!(m.limits, Limits::default());
        assert!(grant_matches(&m.grants.buckets, "archive-orders"));
        assert!(!grant_matches(&m.grants.buckets, "other"));
    }

    #[test]
    fn errors_name_the_problem() {
        let e = parse("name = \"echo\"\nworld = \"consumr\"\n").unwrap_err();
        assert!(e.contains("http-trigger") && e.contains("echo.toml"), "{e}");
        let e = parse("name = \"echo\"\nworld = \"consumer\"\nbatch = 1\n").unwrap_err();
        assert!(e.contains("batch"), "{e}");
        let e = parse("name = \"other\"\nworld = \"scheduled\"\n").unwrap_err();
        assert!(e.contains("must match"), "{e}");
        let e = parse("name = \"echo\"\nworld = \"consumer\"\n").unwrap_err();
        assert!(e.contains("[subscription]"), "{e}");
        let e = parse("name = \"echo\"\nworld = \"scheduled\"\n[config]\nsecret = \"x\"\n")
            .unwrap_err();
        assert!(e.contains("grants.config"), "{e}");
    }
}
