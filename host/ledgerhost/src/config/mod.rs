//! The host configuration: one TOML file, every setting with a default, unknown keys rejected.
//!
//! This file: the whole [`Config`], how it is read (file, environment overrides, Google
//! project) and validated. Each section lives in its own file with its defaults and its
//! check: [`host`] (`[host]`, `[admin]`), [`source`], [`tables`], [`ledger`]; the
//! capability sections are their crates' `Settings`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ledgerhost_capabilities::{blobstore, keyvalue, warehouse};
use serde::Deserialize;

/// The Google Cloud project of every Google backend whose config names none
/// (`ledger.project`, `source.project`, `blobstore.project`, `warehouse.project`).
pub use ledgerhost_google::{PROJECT_ENV, project_from_env};

pub mod host;
pub mod ledger;
pub mod source;
pub mod tables;

pub use host::{AdminConfig, HostConfig};
pub use ledger::{LedgerConfig, LedgerKind, OrderingMode};
pub use source::{MissingCommitIndex, SourceConfig};
pub use tables::{CaptureMode, StartFrom, TableConfig, is_identifier};

use tables::check_tables;

/// Why a configuration could not be used. Always names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// Path of the config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this schema.
    #[error("config file {path} is invalid: {message}")]
    Parse {
        /// Path of the config file.
        path: PathBuf,
        /// The parser's error, with line and column.
        message: String,
    },
    /// A key has a value the host cannot use.
    #[error("config file {path}: `{key}` {problem}")]
    Invalid {
        /// Path of the config file.
        path: PathBuf,
        /// The offending key, dotted (e.g. `ledger.ordering-shards`).
        key: String,
        /// What is wrong with its value.
        problem: String,
    },
}

/// The whole configuration. See `docs/config.md` for every key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// `[host]`: data directory, plugin directory, polling and dispatch settings.
    #[serde(default)]
    pub host: HostConfig,
    /// `[source]`: the database the host captures changes from.
    #[serde(default)]
    pub source: SourceConfig,
    /// Tables to capture. Each gets a topic `<ledger.topic-prefix><name>`.
    #[serde(default)]
    pub tables: Vec<TableConfig>,
    /// `[ledger]`: the topic backend and how events are ordered on it.
    #[serde(default)]
    pub ledger: LedgerConfig,
    /// `[blobstore]`: the store behind the `blobstore` capability.
    #[serde(default)]
    pub blobstore: blobstore::Settings,
    /// `[keyvalue]`: the store behind the `keyvalue` capability.
    #[serde(default)]
    pub keyvalue: keyvalue::Settings,
    /// `[warehouse]`: the warehouse behind the `warehouse` capability.
    #[serde(default)]
    pub warehouse: warehouse::Settings,
    /// `[admin]`: the admin HTTP endpoint.
    #[serde(default)]
    pub admin: AdminConfig,
    /// `[capabilities.<name>]`: the settings of each capability that reads its own section
    /// (parsed and checked by the capability, see `ledgerhost_capabilities::set`).
    #[serde(default)]
    pub capabilities: BTreeMap<String, toml::Value>,
    /// Per-plugin `wasi:config` values overriding the manifest's `[config]`.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginOverrides>,
}

/// Host-side settings of one plugin.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PluginOverrides {
    /// Values for `wasi:config` keys the manifest grants.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}
impl Config {
    /// Reads and validates a config file; relative paths are resolved against its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse_in_env(
            &text,
            path,
            base,
            &crate::envconfig::from_process_env(),
            project_from_env().as_deref(),
        )
    }

    /// Embedded defaults in `base` plus this process's `LEDGERHOST__…` overrides and
    /// `GOOGLE_CLOUD_PROJECT` (for `ledgerhost run` without `--config`).
    pub fn defaults_with_env(base: &Path) -> Result<Config, ConfigError> {
        let overrides = crate::envconfig::from_process_env();
        Config::parse_in_env(
            "",
            Path::new("(built-in defaults)"),
            base,
            &overrides,
            project_from_env().as_deref(),
        )
    }

    /// As [`Config::parse`], then applies `LEDGERHOST__SECTION__KEY` overrides (see
    /// [`crate::envconfig`]); an invalid overridden value names its variable.
    pub fn parse_with_overrides(
        text: &str,
        path: &Path,
        base: &Path,
        overrides: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        Config::parse_in_env(text, path, base, overrides, None)
    }

    /// As [`Config::parse_with_overrides`]; then `google_project` (the value of
    /// `GOOGLE_CLOUD_PROJECT`) is the project of every Google backend whose config names none.
    pub fn parse_in_env(
        text: &str,
        path: &Path,
        base: &Path,
        overrides: &[(String, String)],
        google_project: Option<&str>,
    ) -> Result<Config, ConfigError> {
        if overrides.is_empty() {
            return Config::parse_with_project(text, path, base, google_project);
        }
        let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut root = toml::Value::Table(table);
        let mut applied = Vec::new();
        for (var, value) in overrides {
            let key = crate::envconfig::apply(&mut root, var, value).map_err(|problem| {
                ConfigError::Invalid {
                    path: path.to_path_buf(),
                    key: var.clone(),
                    problem,
                }
            })?;
            applied.push((var.clone(), key));
        }
        let names: Vec<&str> = applied.iter().map(|(v, _)| v.as_str()).collect();
        let mut config: Config =
            root.try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: format!(
                        "{} (after the environment overrides {})",
                        e.to_string().trim_end(),
                        names.join(", ")
                    ),
                })?;
        config.resolve_projects(google_project);
        config.validate(path).map_err(|e| match e {
            ConfigError::Invalid { path, key, problem } => {
                let from_env = applied.iter().find(|(_, k)| *k == key).map(|(v, _)| v);
                ConfigError::Invalid {
                    problem: match from_env {
                        Some(var) => format!("{problem} (set by the environment variable {var})"),
                        None => problem,
                    },
                    path,
                    key,
                }
            }
            other => other,
        })?;
        config.resolve_paths(base);
        Ok(config)
    }

    /// Parses config text; `path` is used in messages, `base` to resolve relative paths. Reads
    /// no environment: see [`Config::load`] for that.
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Config, ConfigError> {
        Config::parse_with_project(text, path, base, None)
    }

    fn parse_with_project(
        text: &str,
        path: &Path,
        base: &Path,
        google_project: Option<&str>,
    ) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.resolve_projects(google_project);
        config.validate(path)?;
        config.resolve_paths(base);
        Ok(config)
    }

    /// The default configuration (used by `ledgerhost run` without `--config`).
    pub fn embedded_defaults(base: &Path) -> Config {
        let mut config: Config = toml::from_str("").expect("empty config is valid");
        config.resolve_paths(base);
        config
    }

    /// Gives every Google backend whose config names no project `google_project` (the value
    /// of [`PROJECT_ENV`]); a project set in the file or a `LEDGERHOST__…` override wins.
    fn resolve_projects(&mut self, google_project: Option<&str>) {
        let Some(env) = google_project.map(str::trim).filter(|p| !p.is_empty()) else {
            return;
        };
        if self.ledger.kind == LedgerKind::Pubsub && self.ledger.project.is_none() {
            self.ledger.project = Some(env.to_string());
        }
        if let SourceConfig::Spanner { project, .. } = &mut self.source
            && project.trim().is_empty()
        {
            *project = env.to_string();
        }
        self.blobstore.default_project(env);
        self.warehouse.default_project(env);
    }
    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |(key, problem): (String, String)| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            problem,
        };
        // Each section checks itself (beside its fields), in the order of the file.
        check_tables(&self.tables).map_err(invalid)?;
        self.host.check().map_err(invalid)?;
        self.ledger.check().map_err(invalid)?;
        self.source.check().map_err(invalid)?;
        for section in [
            self.blobstore.check(),
            self.keyvalue.check(),
            self.warehouse.check(),
        ] {
            section.map_err(invalid)?;
        }
        ledgerhost_capabilities::CapabilitySet::check_sections(&self.capabilities)
            .map_err(invalid)?;
        self.admin.check().map_err(invalid)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        abs(&mut self.host.data_dir);
        abs(&mut self.host.plugin_dir);
        if let SourceConfig::Sqlite { path } = &mut self.source {
            abs(path);
        }
        let data = &self.host.data_dir;
        self.blobstore.resolve_paths(base, data);
        self.keyvalue.resolve_paths(base, data);
        self.warehouse.resolve_paths(base, data);
    }

    /// The ledger topic of a table.
    pub fn topic_for(&self, table: &str) -> String {
        format!("{}{table}", self.ledger.topic_prefix)
    }

    /// This replica's identity for leases.
    pub fn replica_id(&self) -> String {
        self.host.replica_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "host".into());
            format!("{host}-{}", std::process::id())
        })
    }
}

#[cfg(test)]
mod tests;
