//! The host configuration: one TOML file, every setting with a default, unknown keys rejected.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ledgerhost_capabilities::{blobstore, keyvalue, warehouse};
use ledgerhost_core::ledger::ordering::Ordering;
use serde::Deserialize;

/// The Google Cloud project of every Google backend whose config names none
/// (`ledger.project`, `source.project`, `blobstore.project`, `warehouse.project`).
pub use ledgerhost_google::{PROJECT_ENV, project_from_env};
use ledgerhost_google::{check_endpoint, missing_project};

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
    /// (parsed and checked by the capability, see `ledgerhost_capabilities::registry`).
    #[serde(default)]
    pub capabilities: BTreeMap<String, toml::Value>,
    /// Per-plugin `wasi:config` values overriding the manifest's `[config]`.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginOverrides>,
}

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
    },
}

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

/// Where the poller starts on a table it has no watermark for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartFrom {
    /// Scan every existing row (the bootstrap).
    Beginning,
    /// Only rows committed from now on.
    Now,
    /// Rows committed after this instant (microseconds since the epoch).
    At(i64),
}

/// One captured table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TableConfig {
    /// Source table name; also the suffix of the table's topic.
    pub name: String,
    /// Commit-timestamp column (default `commit_ts`).
    #[serde(default)]
    pub commit_ts_column: Option<String>,
    /// Soft-delete column: rows where it is true are published as tombstones.
    #[serde(default)]
    pub deleted_column: Option<String>,
    /// Poll interval (default 200 ms).
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Rows per keyset page (default 5000).
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// `beginning` (default), `now`, or microseconds since the epoch: used only when neither a
    /// local watermark nor the ledger can tell where to resume.
    #[serde(default = "default_start")]
    pub start: String,
    /// Shards the table's polling is split into (default 1): each has its own lease,
    /// watermark and poller, and the replicas share the leases out (docs/operations.md).
    #[serde(default = "default_shards")]
    pub shards: u32,
    /// The INT64 column whose value is a row's shard (`0..shards`); without one, rows are
    /// sharded by a hash of the primary key.
    #[serde(default)]
    pub shard_column: Option<String>,
}

fn default_shards() -> u32 {
    1
}

fn default_interval_ms() -> u64 {
    200
}
fn default_page_size() -> usize {
    5000
}
fn default_start() -> String {
    "beginning".into()
}

impl TableConfig {
    /// The parsed `start` setting.
    pub fn start_from(&self) -> Result<StartFrom, String> {
        match self.start.as_str() {
            "beginning" => Ok(StartFrom::Beginning),
            "now" => Ok(StartFrom::Now),
            other => other.parse::<i64>().map(StartFrom::At).map_err(|_| {
                format!(
                    "must be `beginning`, `now` or microseconds since the Unix epoch, not `{other}`"
                )
            }),
        }
    }

    /// How the table's rows are split among pollers.
    pub fn sharding(&self) -> ledgerhost_core::source::Sharding {
        ledgerhost_core::source::Sharding {
            count: self.shards,
            column: self.shard_column.clone(),
        }
    }

    /// The poll interval.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }
}

/// The ledger backend and its topic settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LedgerConfig {
    /// `embedded` (a durable log under `host.data-dir`) or `pubsub`.
    #[serde(default)]
    pub kind: LedgerKind,
    /// Embedded: how long messages are kept.
    #[serde(default = "default_retention_hours")]
    pub retention_hours: u64,
    /// Pub/Sub: the Google Cloud project (default: the environment variable
    /// `GOOGLE_CLOUD_PROJECT`).
    #[serde(default)]
    pub project: Option<String>,
    /// Pub/Sub: endpoint override (else `PUBSUB_EMULATOR_HOST`, else Google's).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Prefix of the per-table topic names.
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// Lease on a delivery before it is redelivered (extended while a batch runs).
    #[serde(default = "default_ack_deadline_ms")]
    pub ack_deadline_ms: u64,
    /// How an event's ordering key is derived from its primary key: `shards` (the default:
    /// hashed into `ordering-shards` keys per table), `key` (the primary key itself) or `none`.
    #[serde(default)]
    pub ordering: OrderingMode,
    /// With `ordering = "shards"`: ordering keys per table (1 to 1024).
    #[serde(default = "default_ordering_shards")]
    pub ordering_shards: u32,
}

/// `[ledger] ordering`: see [`ledgerhost_core::ledger::ordering::Ordering`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OrderingMode {
    /// Events are spread over `ordering-shards` ordering keys by primary-key hash.
    #[default]
    Shards,
    /// The ordering key is the row's primary key.
    Key,
    /// No ordering key: Pub/Sub may deliver in any order.
    None,
}

impl LedgerConfig {
    /// The ordering every publisher of events on this ledger uses.
    pub fn ordering(&self) -> Ordering {
        match self.ordering {
            OrderingMode::Shards => Ordering::Shards(self.ordering_shards),
            OrderingMode::Key => Ordering::Key,
            OrderingMode::None => Ordering::None,
        }
    }
}

fn default_ordering_shards() -> u32 {
    ledgerhost_core::ledger::ordering::DEFAULT_SHARDS
}

/// Which ledger backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LedgerKind {
    /// The embedded SQLite-backed ledger under the data directory.
    #[default]
    Embedded,
    /// Google Cloud Pub/Sub (or its emulator).
    Pubsub,
}

fn default_topic_prefix() -> String {
    "ledger-".into()
}
fn default_ack_deadline_ms() -> u64 {
    30_000
}
fn default_retention_hours() -> u64 {
    168
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            kind: LedgerKind::default(),
            retention_hours: default_retention_hours(),
            project: None,
            endpoint: None,
            topic_prefix: default_topic_prefix(),
            ack_deadline_ms: default_ack_deadline_ms(),
            ordering: OrderingMode::default(),
            ordering_shards: default_ordering_shards(),
        }
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
        let invalid = |key: String, problem: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            problem,
        };
        let mut seen = std::collections::BTreeSet::new();
        for (i, t) in self.tables.iter().enumerate() {
            let key = |k: &str| format!("tables[{i}].{k}");
            if !is_identifier(&t.name) {
                return Err(invalid(
                    key("name"),
                    format!(
                        "must be a table name of letters, digits and `_`, not `{}`",
                        t.name
                    ),
                ));
            }
            if !seen.insert(t.name.clone()) {
                return Err(invalid(
                    key("name"),
                    format!("`{}` is listed twice", t.name),
                ));
            }
            if t.interval_ms == 0 || t.interval_ms > 60_000 {
                return Err(invalid(
                    key("interval-ms"),
                    "must be between 1 and 60000 milliseconds".into(),
                ));
            }
            if t.page_size == 0 || t.page_size > 100_000 {
                return Err(invalid(
                    key("page-size"),
                    "must be between 1 and 100000".into(),
                ));
            }
            t.start_from().map_err(|p| invalid(key("start"), p))?;
            let max = ledgerhost_core::source::Sharding::MAX_COUNT;
            if !(1..=max).contains(&t.shards) {
                return Err(invalid(
                    key("shards"),
                    format!("must be between 1 and {max}, not {}", t.shards),
                ));
            }
            if let Some(c) = &t.shard_column
                && !is_identifier(c)
            {
                return Err(invalid(
                    key("shard-column"),
                    format!("must be a column name of letters, digits and `_`, not `{c}`"),
                ));
            }
        }
        if self.host.lease_ttl_ms < 500 {
            return Err(invalid(
                "host.lease-ttl-ms".into(),
                "must be at least 500 milliseconds".into(),
            ));
        }
        if !(1..=1024).contains(&self.ledger.ordering_shards) {
            return Err(invalid(
                "ledger.ordering-shards".into(),
                format!(
                    "must be between 1 and 1024, not {}",
                    self.ledger.ordering_shards
                ),
            ));
        }
        if self.ledger.ack_deadline_ms < 1000 {
            return Err(invalid(
                "ledger.ack-deadline-ms".into(),
                "must be at least 1000 milliseconds".into(),
            ));
        }
        if self.ledger.kind == LedgerKind::Pubsub
            && self
                .ledger
                .project
                .as_deref()
                .is_none_or(|p| p.trim().is_empty())
        {
            return Err(invalid(
                "ledger.project".into(),
                missing_project("ledger.kind = \"pubsub\""),
            ));
        }
        if let LedgerConfig {
            kind: LedgerKind::Pubsub,
            endpoint: Some(ep),
            ..
        } = &self.ledger
        {
            check_endpoint(ep).map_err(|p| invalid("ledger.endpoint".into(), p))?;
        }
        if let SourceConfig::Spanner {
            project,
            instance,
            database,
            endpoint,
            admin_endpoint,
            ..
        } = &self.source
        {
            if project.trim().is_empty() {
                return Err(invalid(
                    "source.project".into(),
                    missing_project("source.kind = \"spanner\""),
                ));
            }
            for (k, v) in [("instance", instance), ("database", database)] {
                if v.trim().is_empty() {
                    return Err(invalid(format!("source.{k}"), "must not be empty".into()));
                }
            }
            if let Some(ep) = endpoint {
                check_endpoint(ep).map_err(|p| invalid("source.endpoint".into(), p))?;
            }
            if let Some(ep) = admin_endpoint {
                check_endpoint(ep).map_err(|p| invalid("source.admin-endpoint".into(), p))?;
            }
        }
        for section in [
            self.blobstore.check(),
            self.keyvalue.check(),
            self.warehouse.check(),
        ] {
            section.map_err(|(key, problem)| invalid(key, problem))?;
        }
        ledgerhost_capabilities::registry::check_sections::<ledgerhost_runtime::PluginState>(
            &self.capabilities,
        )
        .map_err(|(key, problem)| invalid(key, problem))?;
        if self.admin.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "admin.listen".into(),
                format!(
                    "must be an address like `127.0.0.1:8686`, not `{}`",
                    self.admin.listen
                ),
            ));
        }
        Ok(())
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

/// True for names safe to use as SQL identifiers and topic suffixes.
pub fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("ledgerhost.toml"), Path::new("/base"))
    }

    #[test]
    fn empty_config_gives_embedded_defaults() {
        let c = parse("").unwrap();
        assert!(matches!(c.source, SourceConfig::Sqlite { .. }));
        assert_eq!(c.ledger.kind, LedgerKind::Embedded);
        assert_eq!(c.host.data_dir, PathBuf::from("/base/.ledgerhost"));
        assert_eq!(c.topic_for("orders"), "ledger-orders");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("[host]\nplugin-dri = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("plugin-dri"), "{err}");
        assert!(err.contains("ledgerhost.toml"), "{err}");
    }

    #[test]
    fn bad_table_setting_names_key_and_form() {
        let err = parse("[[tables]]\nname = \"orders\"\nstart = \"yesterday\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tables[0].start"), "{err}");
        assert!(err.contains("beginning"), "{err}");
    }

    #[test]
    fn partial_sections_keep_their_defaults() {
        let c = parse("[host]\ndata-dir = \"state\"\n[admin]\n").unwrap();
        assert_eq!(c.host.lease_ttl_ms, 5000);
        assert_eq!(c.admin.listen, "127.0.0.1:8686");
    }

    #[test]
    fn backends_are_chosen_by_kind() {
        let c = parse(
            "[source]\nkind = \"spanner\"\nproject = \"p\"\ninstance = \"i\"\ndatabase = \"d\"\n\
             [ledger]\nkind = \"pubsub\"\nproject = \"p\"\n[keyvalue]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:1\"\n",
        )
        .unwrap();
        assert!(matches!(c.source, SourceConfig::Spanner { .. }));
        assert_eq!(c.ledger.kind, LedgerKind::Pubsub);
        assert!(matches!(c.keyvalue, keyvalue::Settings::Redis { .. }));
    }

    #[test]
    fn a_missing_commit_index_is_refused_unless_set_to_warn() {
        let spanner = "[source]\nkind = \"spanner\"\nproject = \"p\"\ninstance = \"i\"\n\
                       database = \"d\"\n";
        let policy = |c: Config| match c.source {
            SourceConfig::Spanner {
                missing_commit_index,
                ..
            } => missing_commit_index,
            other => panic!("{other:?}"),
        };
        assert_eq!(policy(parse(spanner).unwrap()), MissingCommitIndex::Refuse);
        assert_eq!(
            policy(parse(&format!("{spanner}missing-commit-index = \"warn\"\n")).unwrap()),
            MissingCommitIndex::Warn
        );
        let err = parse(&format!("{spanner}missing-commit-index = \"ignore\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("refuse") && err.contains("warn"), "{err}");
    }

    #[test]
    fn cloud_sections_reject_unknown_keys_by_name() {
        let err = parse(
            "[source]\nkind = \"spanner\"\nproject = \"p\"\ninstance = \"i\"\ndatabase = \"d\"\n\
             emulator = \"x\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("emulator"), "{err}");
        let err = parse("[blobstore]\nkind = \"gcs\"\nbucket = \"b\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bucket"), "{err}");
        let err = parse(
            "[warehouse]\nkind = \"bigquery\"\nproject = \"p\"\ndataset = \"d\"\nregion = \"EU\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("region"), "{err}");
    }

    #[test]
    fn cloud_endpoints_are_checked_and_normalised() {
        let c = parse(
            "[source]\nkind = \"spanner\"\nproject = \"p\"\ninstance = \"i\"\ndatabase = \"d\"\n\
             endpoint = \"127.0.0.1:9010\"\nadmin-endpoint = \"http://127.0.0.1:9020\"\n",
        )
        .unwrap();
        match c.source {
            SourceConfig::Spanner {
                endpoint,
                admin_endpoint,
                ..
            } => {
                assert_eq!(
                    ledgerhost_google::url(endpoint.as_deref().unwrap()),
                    "http://127.0.0.1:9010"
                );
                assert_eq!(admin_endpoint.as_deref(), Some("http://127.0.0.1:9020"));
            }
            other => panic!("{other:?}"),
        }
        let err = parse("[ledger]\nkind = \"pubsub\"\nproject = \"p\"\nendpoint = \"http://\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ledger.endpoint"), "{err}");
        let err = parse("[keyvalue]\nkind = \"redis\"\nurl = \"127.0.0.1:6379\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("keyvalue.url") && err.contains("redis://"),
            "{err}"
        );
        let err = parse(
            "[source]\nkind = \"spanner\"\nproject = \"p\"\ninstance = \"\"\ndatabase = \"d\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("source.instance"), "{err}");
    }

    #[test]
    fn google_projects_come_from_the_config_else_google_cloud_project() {
        let in_env = |text: &str, overrides: &[(String, String)], project: Option<&str>| {
            Config::parse_in_env(
                text,
                Path::new("ledgerhost.toml"),
                Path::new("/base"),
                overrides,
                project,
            )
        };
        let projects = |c: &Config| {
            let source = match &c.source {
                SourceConfig::Spanner { project, .. } => project.clone(),
                other => panic!("{other:?}"),
            };
            let blob = match &c.blobstore {
                blobstore::Settings::Gcs { project, .. } => project.clone(),
                other => panic!("{other:?}"),
            };
            let warehouse = match &c.warehouse {
                warehouse::Settings::Bigquery { project, .. } => project.clone(),
                other => panic!("{other:?}"),
            };
            (c.ledger.project.clone(), source, blob, warehouse)
        };
        let google = "[source]\nkind = \"spanner\"\ninstance = \"i\"\ndatabase = \"d\"\n\
                      [ledger]\nkind = \"pubsub\"\n[blobstore]\nkind = \"gcs\"\n\
                      [warehouse]\nkind = \"bigquery\"\ndataset = \"ds\"\n";
        let env = Some("env-proj");
        let c = in_env(google, &[], env).unwrap();
        assert_eq!(
            projects(&c),
            (
                Some("env-proj".into()),
                "env-proj".into(),
                Some("env-proj".into()),
                "env-proj".into()
            )
        );

        // A project in the file, or a LEDGERHOST__ override, wins over the variable.
        let text = google
            .replace(
                "kind = \"pubsub\"\n",
                "kind = \"pubsub\"\nproject = \"file-proj\"\n",
            )
            .replace(
                "kind = \"gcs\"\n",
                "kind = \"gcs\"\nproject = \"blob-proj\"\n",
            );
        let overrides = [(
            "LEDGERHOST__WAREHOUSE__PROJECT".to_string(),
            "wh-proj".to_string(),
        )];
        let c = in_env(&text, &overrides, env).unwrap();
        assert_eq!(
            projects(&c),
            (
                Some("file-proj".into()),
                "env-proj".into(),
                Some("blob-proj".into()),
                "wh-proj".into()
            )
        );

        // The embedded defaults take nothing from the variable.
        let c = in_env("", &[], env).unwrap();
        assert_eq!(c.ledger.project, None);

        // Missing everywhere: the key and the variable are named, per backend. A blank
        // variable counts as unset; Cloud Storage alone may go without a project.
        for (text, key) in [
            ("[ledger]\nkind = \"pubsub\"\n", "ledger.project"),
            (
                "[source]\nkind = \"spanner\"\ninstance = \"i\"\ndatabase = \"d\"\n",
                "source.project",
            ),
            (
                "[warehouse]\nkind = \"bigquery\"\ndataset = \"ds\"\n",
                "warehouse.project",
            ),
        ] {
            for project in [None, Some("  ")] {
                let err = in_env(text, &[], project).unwrap_err().to_string();
                assert!(
                    err.contains(key) && err.contains("GOOGLE_CLOUD_PROJECT"),
                    "{key}: {err}"
                );
            }
        }
        let c = in_env("[blobstore]\nkind = \"gcs\"\n", &[], None).unwrap();
        assert!(matches!(
            c.blobstore,
            blobstore::Settings::Gcs { project: None, .. }
        ));
        // A missing dataset is its own key.
        let err = in_env(
            "[warehouse]\nkind = \"bigquery\"\ndataset = \" \"\n",
            &[],
            env,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("warehouse.dataset"), "{err}");
    }

    #[test]
    fn redis_tls_settings_are_checked_and_resolved() {
        let c = parse(
            "[keyvalue]\nkind = \"redis\"\nurl = \"rediss://10.0.0.3:6378\"\n\
             tls-ca-file = \"server-ca.pem\"\ntls-cert-file = \"/etc/c.pem\"\n\
             tls-key-file = \"k.pem\"\n",
        )
        .unwrap();
        match c.keyvalue {
            keyvalue::Settings::Redis {
                tls_ca_file,
                tls_cert_file,
                tls_key_file,
                ..
            } => {
                assert_eq!(tls_ca_file, Some(PathBuf::from("/base/server-ca.pem")));
                assert_eq!(tls_cert_file, Some(PathBuf::from("/etc/c.pem")));
                assert_eq!(tls_key_file, Some(PathBuf::from("/base/k.pem")));
            }
            other => panic!("{other:?}"),
        }
        let err = parse(
            "[keyvalue]\nkind = \"redis\"\nurl = \"redis://h:6379\"\n\
             tls-ca-file = \"server-ca.pem\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("keyvalue.tls-ca-file") && err.contains("rediss://"),
            "{err}"
        );
        let err = parse(
            "[keyvalue]\nkind = \"redis\"\nurl = \"rediss://h:6378\"\n\
             tls-cert-file = \"c.pem\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("keyvalue.tls-key-file"), "{err}");
        let err =
            parse("[keyvalue]\nkind = \"redis\"\nurl = \"rediss://h:6378\"\ntls-ca = \"x\"\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("tls-ca"), "unknown key named: {err}");
    }
}
