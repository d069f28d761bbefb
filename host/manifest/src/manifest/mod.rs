//! The plugin manifest: `<name>.toml` beside `<name>.wasm`. It names the plugin's world,
//! what it consumes, its limits, and the capabilities it is granted — a plugin reaches
//! nothing else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::grant::{GRANTS, Rule, rule_for};
use crate::names::check_plugin_name;
mod grants;
mod limits;
mod subscription;

pub use grants::Grants;
pub use limits::{Limits, MAX_MEMORY_MB, Schedule};
pub use subscription::{EVERY_TABLE, MAX_INSTANCES, Subscription};

use subscription::check_table_list;

/// Why a manifest was refused. Names the file, the key and the expected form.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read manifest {path}: {source}")]
    Read {
        /// The manifest file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file breaks a rule.
    #[error("manifest {path}: {message}")]
    Invalid {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
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
    /// The plugin name ([`crate::names::check_plugin_name`]), equal to the file stem.
    pub name: String,
    /// The WIT world the component implements.
    pub world: World,
    /// What a consumer consumes (required for consumers, refused for others).
    #[serde(default)]
    pub subscription: Option<Subscription>,
    /// When a scheduled plugin runs (defaults apply when absent).
    #[serde(default)]
    pub schedule: Option<Schedule>,
    /// Resource limits of one instance.
    #[serde(default)]
    pub limits: Limits,
    /// What the plugin may reach.
    #[serde(default)]
    pub grants: Grants,
    /// Default values of the `wasi:config` keys granted in `grants.config`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// The file it was read from (for messages).
    #[serde(skip)]
    path: PathBuf,
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
        Manifest::parse_inner(text, path, true)
    }

    /// As [`Manifest::parse`] for a crate's manifest (`plugin.toml`), whose file is renamed to
    /// `<name>.toml` when deployed: every rule but the file-stem check.
    pub fn parse_source(text: &str, path: &Path) -> Result<Manifest, ManifestError> {
        Manifest::parse_inner(text, path, false)
    }

    fn parse_inner(text: &str, path: &Path, check_stem: bool) -> Result<Manifest, ManifestError> {
        let invalid = |message: String| ManifestError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let mut m: Manifest = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        m.path = path.to_path_buf();
        check_plugin_name(&m.name).map_err(|e| invalid(format!("`name`: {e}")))?;
        if let Some(stem) = path.file_stem().and_then(|s| s.to_str())
            && check_stem
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
                    "a consumer needs a [subscription] with `table`, `tables` or `topic`".into(),
                ));
            }
            (World::Consumer, Some(s)) => {
                let sources = [s.table.is_some(), s.tables.is_some(), s.topic.is_some()];
                if sources.iter().filter(|set| **set).count() != 1 {
                    return Err(invalid(
                        "[subscription] needs exactly one of `table = \"orders\"` (one table), \
                         `tables = [\"orders\", \"payments\"]` or `tables = [\"*\"]` (several, or \
                         every captured table) and `topic = \"...\"`"
                            .into(),
                    ));
                }
                if let Some(tables) = &s.tables {
                    check_table_list(tables).map_err(&invalid)?;
                }
                if !(1..=10_000).contains(&s.batch_size) {
                    return Err(invalid(
                        "`subscription.batch-size` must be between 1 and 10000".into(),
                    ));
                }
                if let Some(columns) = &s.columns {
                    if columns.is_empty() {
                        return Err(invalid(
                            "`subscription.columns` must name at least one column (leave it \
                             out to receive every column)"
                                .into(),
                        ));
                    }
                    if let Some(dup) = columns
                        .iter()
                        .enumerate()
                        .find_map(|(i, c)| columns[..i].contains(c).then_some(c))
                    {
                        return Err(invalid(format!(
                            "`subscription.columns` names `{dup}` twice"
                        )));
                    }
                }
                if s.max_attempts == 0 {
                    return Err(invalid(
                        "`subscription.max-attempts` must be at least 1".into(),
                    ));
                }
                if !(1..=MAX_INSTANCES).contains(&s.instances) {
                    return Err(invalid(format!(
                        "`subscription.instances` is {}; it must be between 1 and \
                         {MAX_INSTANCES} (each instance is a full copy of the plugin with its \
                         own memory)",
                        s.instances
                    )));
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
        let known: Vec<&str> = GRANTS.iter().map(|(n, _)| *n).collect();
        m.check_grant_names(&known)?;
        for (grant, entries) in m.grants.iter() {
            let rule = rule_for(grant).unwrap_or(Rule::Name);
            for entry in entries {
                rule.check_entry(entry)
                    .map_err(|e| invalid(format!("`grants.{grant}` entry \"{entry}\": {e}")))?;
            }
        }
        for key in m.config.keys() {
            if !m.grants.allows("config", key) {
                return Err(invalid(format!(
                    "[config] sets `{key}` but `grants.config` does not list it; add \"{key}\" \
                     to grants.config"
                )));
            }
        }
        Ok(m)
    }

    /// The file this manifest was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many instances serve this plugin: `subscription.instances` for a consumer, one for
    /// the other worlds.
    pub fn instances(&self) -> u32 {
        self.subscription.as_ref().map_or(1, |s| s.instances)
    }

    /// Refuses a grant this host does not know (`known`: the grant names of the capabilities
    /// it provides), naming the file, the key and the known grants.
    pub fn check_grant_names(&self, known: &[&str]) -> Result<(), ManifestError> {
        match self.grants.iter().find(|(g, _)| !known.contains(g)) {
            None => Ok(()),
            Some((grant, _)) => Err(ManifestError::Invalid {
                path: self.path.clone(),
                message: format!(
                    "`grants.{grant}` is not a grant this host knows; the known grants are {}",
                    known.join(", ")
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests;
