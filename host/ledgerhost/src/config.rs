//! The host configuration: one TOML file, every setting with a default, unknown keys rejected.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Why a configuration could not be used. Always names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: `{key}` {problem}")]
    Invalid {
        path: PathBuf,
        key: String,
        problem: String,
    },
}

/// The whole configuration. See `docs/config.md` for every key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    #[serde(default)]
    pub host: HostConfig,
    #[serde(default)]
    pub source: SourceConfig,
    /// Tables to capture. Each gets a topic `<ledger.topic-prefix><name>`.
    #[serde(default)]
    pub tables: Vec<TableConfig>,
    #[serde(default)]
    pub ledger: LedgerConfig,
    #[serde(default)]
    pub blobstore: BlobStoreConfig,
    #[serde(default)]
    pub keyvalue: KeyValueConfig,
    #[serde(default)]
    pub warehouse: WarehouseConfig,
    #[serde(default)]
    pub admin: AdminConfig,
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
        project: String,
        instance: String,
        database: String,
        /// gRPC endpoint override, e.g. `http://127.0.0.1:9010` (plaintext = anonymous).
        #[serde(default)]
        endpoint: Option<String>,
        /// REST admin endpoint override (creates the lease table), e.g.
        /// `http://127.0.0.1:9020`.
        #[serde(default)]
        admin_endpoint: Option<String>,
    },
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
    /// Pub/Sub: the Google Cloud project.
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
}

/// Which ledger backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LedgerKind {
    #[default]
    Embedded,
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
        }
    }
}

/// Object storage behind the `blobstore` capability.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    deny_unknown_fields
)]
pub enum BlobStoreConfig {
    /// A directory (default `<data-dir>/blobs`).
    Local {
        #[serde(default)]
        path: Option<PathBuf>,
    },
    /// Cloud Storage: application default credentials, or the emulator through
    /// `STORAGE_EMULATOR_HOST` / an explicit `endpoint`.
    Gcs {
        /// Base URL override, e.g. `http://127.0.0.1:4443`.
        #[serde(default)]
        endpoint: Option<String>,
        /// Project owning the buckets the host creates (required by Google).
        #[serde(default)]
        project: Option<String>,
    },
}

impl Default for BlobStoreConfig {
    fn default() -> Self {
        BlobStoreConfig::Local { path: None }
    }
}

/// Store behind the `keyvalue` capability.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    deny_unknown_fields
)]
pub enum KeyValueConfig {
    /// An SQLite file (default `<data-dir>/keyvalue.db`).
    Embedded {
        #[serde(default)]
        path: Option<PathBuf>,
    },
    /// Redis / Memorystore, e.g. `redis://127.0.0.1:6379`.
    Redis {
        url: String,
        /// Prefix of every stored key (default `ledgerhost:`), so deployments can share one
        /// Redis.
        #[serde(default)]
        namespace: Option<String>,
    },
}

impl Default for KeyValueConfig {
    fn default() -> Self {
        KeyValueConfig::Embedded { path: None }
    }
}

/// Warehouse behind the `warehouse` capability.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    deny_unknown_fields
)]
pub enum WarehouseConfig {
    /// An SQLite file (default `<data-dir>/warehouse.db`).
    Sqlite {
        #[serde(default)]
        path: Option<PathBuf>,
    },
    /// BigQuery: application default credentials, or an emulator through
    /// `BIGQUERY_EMULATOR_HOST` / an explicit `endpoint`.
    Bigquery {
        project: String,
        dataset: String,
        /// Base URL override, e.g. `http://127.0.0.1:9050`.
        #[serde(default)]
        endpoint: Option<String>,
        /// Location of the dataset if the host creates it (e.g. `EU`).
        #[serde(default)]
        location: Option<String>,
    },
}

impl Default for WarehouseConfig {
    fn default() -> Self {
        WarehouseConfig::Sqlite { path: None }
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
        Config::parse_with_overrides(&text, path, base, &crate::envconfig::from_process_env())
    }

    /// Embedded defaults in `base` plus this process's `LEDGERHOST__…` overrides (for
    /// `ledgerhost run` without `--config`).
    pub fn defaults_with_env(base: &Path) -> Result<Config, ConfigError> {
        let overrides = crate::envconfig::from_process_env();
        Config::parse_with_overrides("", Path::new("(built-in defaults)"), base, &overrides)
    }

    /// As [`Config::parse`], then applies `LEDGERHOST__SECTION__KEY` overrides (see
    /// [`crate::envconfig`]); an invalid overridden value names its variable.
    pub fn parse_with_overrides(
        text: &str,
        path: &Path,
        base: &Path,
        overrides: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        if overrides.is_empty() {
            return Config::parse(text, path, base);
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

    /// Parses config text; `path` is used in messages, `base` to resolve relative paths.
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
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
        }
        if self.host.lease_ttl_ms < 500 {
            return Err(invalid(
                "host.lease-ttl-ms".into(),
                "must be at least 500 milliseconds".into(),
            ));
        }
        if self.ledger.ack_deadline_ms < 1000 {
            return Err(invalid(
                "ledger.ack-deadline-ms".into(),
                "must be at least 1000 milliseconds".into(),
            ));
        }
        if self.ledger.kind == LedgerKind::Pubsub && self.ledger.project.is_none() {
            return Err(invalid(
                "ledger.project".into(),
                "is required when ledger.kind = \"pubsub\" (the Google Cloud project id)".into(),
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
        } = &self.source
        {
            for (k, v) in [
                ("project", project),
                ("instance", instance),
                ("database", database),
            ] {
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
        if let BlobStoreConfig::Gcs {
            endpoint: Some(ep), ..
        } = &self.blobstore
        {
            check_endpoint(ep).map_err(|p| invalid("blobstore.endpoint".into(), p))?;
        }
        if let KeyValueConfig::Redis { url, .. } = &self.keyvalue
            && !(url.starts_with("redis://") || url.starts_with("redis+unix://"))
        {
            return Err(invalid(
                "keyvalue.url".into(),
                "must be a URL like `redis://127.0.0.1:6379` (or `redis://:password@host:port/db`)"
                    .into(),
            ));
        }
        if let WarehouseConfig::Bigquery {
            project,
            dataset,
            endpoint,
            ..
        } = &self.warehouse
        {
            if project.trim().is_empty() || dataset.trim().is_empty() {
                return Err(invalid(
                    "warehouse.project".into(),
                    "and warehouse.dataset must both be set when warehouse.kind = \"bigquery\""
                        .into(),
                ));
            }
            if let Some(ep) = endpoint {
                check_endpoint(ep).map_err(|p| invalid("warehouse.endpoint".into(), p))?;
            }
        }
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
        let data = self.host.data_dir.clone();
        match &mut self.blobstore {
            BlobStoreConfig::Local { path } => {
                let p = path.get_or_insert_with(|| data.join("blobs"));
                abs(p);
            }
            BlobStoreConfig::Gcs { .. } => {}
        }
        match &mut self.keyvalue {
            KeyValueConfig::Embedded { path } => {
                let p = path.get_or_insert_with(|| data.join("keyvalue.db"));
                abs(p);
            }
            KeyValueConfig::Redis { .. } => {}
        }
        match &mut self.warehouse {
            WarehouseConfig::Sqlite { path } => {
                let p = path.get_or_insert_with(|| data.join("warehouse.db"));
                abs(p);
            }
            WarehouseConfig::Bigquery { .. } => {}
        }
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

/// Checks an endpoint setting: `http(s)://host:port[/...]` or `host:port`.
fn check_endpoint(ep: &str) -> Result<(), String> {
    let rest = ep
        .strip_prefix("http://")
        .or_else(|| ep.strip_prefix("https://"))
        .unwrap_or(ep);
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() || rest.contains("://") || ep.contains(char::is_whitespace) {
        return Err(format!(
            "must be an endpoint like `http://127.0.0.1:8085` or `127.0.0.1:8085`, not `{ep}`"
        ));
    }
    Ok(())
}

/// An endpoint setting (or emulator variable) as a URL: `host:port` gets `http://`, the
/// emulators' plaintext scheme.
pub fn endpoint_url(ep: &str) -> String {
    let ep = ep.trim().trim_end_matches('/');
    if ep.starts_with("http://") || ep.starts_with("https://") {
        ep.to_string()
    } else {
        format!("http://{ep}")
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
        assert!(matches!(c.keyvalue, KeyValueConfig::Redis { .. }));
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
                    endpoint_url(endpoint.as_deref().unwrap()),
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
}
