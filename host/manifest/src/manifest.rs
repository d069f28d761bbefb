//! The plugin manifest: `<name>.toml` beside `<name>.wasm`. It names the plugin's world,
//! what it consumes, its limits, and the capabilities it is granted — a plugin reaches
//! nothing else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::filter::Filter;
use crate::grant::{GRANTS, Rule, rule_for};
use crate::names::check_plugin_name;

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

/// A consumer's subscription.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Subscription {
    /// A source table (its ledger topic); exactly one of `table`, `tables` and `topic`.
    #[serde(default)]
    pub table: Option<String>,
    /// Several source tables, or `["*"]` for every table of the host's `[[tables]]`: one
    /// ledger subscription per table behind the scenes ([`crate::names::subscription_name`]),
    /// all served by this one plugin. Resolved by [`Subscription::tables_in`].
    #[serde(default)]
    pub tables: Option<Vec<String>>,
    /// Any ledger topic (e.g. one a filter or the replayer publishes to).
    #[serde(default)]
    pub topic: Option<String>,
    /// Host-side filter expressions, ANDed (`amount >= 1000`, `status == 'paid'`), parsed
    /// when the manifest is read.
    #[serde(default)]
    pub filter: Filter,
    /// Most events per call.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Longest wait for a batch to fill.
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
    /// Deliveries of one event before it is dead-lettered.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First retry delay.
    #[serde(default = "default_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    /// Longest retry delay.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// The columns a 0.2 consumer reads: only these are sent, in this order (key columns
    /// too only when named; the event id identifies the row). Absent: every column, in
    /// table order. Checked against the table's schema ([`Subscription::check_columns`]).
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Whether a 0.2 consumer's events carry the raw Avro container.
    #[serde(default)]
    pub avro: bool,
    /// Whether a 0.2 consumer's events carry the ledger attributes.
    #[serde(default)]
    pub attributes: bool,
    /// Instances of the plugin serving this subscription at once (1..=[`MAX_INSTANCES`]).
    /// A batch's events are split among them by ordering key, so a key always goes to the
    /// same instance; each instance has its own `limits` (memory is per instance).
    #[serde(default = "default_instances")]
    pub instances: u32,
}

/// The `subscription.tables` entry that means every captured table.
pub const EVERY_TABLE: &str = "*";

impl Subscription {
    /// The source tables this subscription reads, resolved against the host's captured
    /// tables (`configured`, the config's `[[tables]]` in order): `table` alone, the
    /// `tables` listed, or every configured table for `["*"]`; empty for a `topic`. A table
    /// the host does not capture is refused, naming the key and the configured tables.
    pub fn tables_in<'a>(
        &self,
        configured: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Result<Vec<String>, String> {
        let (key, wanted): (&str, Vec<String>) = match (&self.table, &self.tables) {
            (Some(t), _) => ("table", vec![t.clone()]),
            (None, Some(list)) if list.iter().any(|t| t == EVERY_TABLE) => {
                return Ok(configured.into_iter().map(str::to_string).collect());
            }
            (None, Some(list)) => ("tables", list.clone()),
            (None, None) => return Ok(Vec::new()),
        };
        match wanted
            .iter()
            .find(|w| !configured.clone().into_iter().any(|c| c == w.as_str()))
        {
            None => Ok(wanted),
            Some(unknown) => {
                let known: Vec<&str> = configured.into_iter().collect();
                Err(format!(
                    "`subscription.{key}` names `{unknown}`, which this host does not capture; \
                     its [[tables]] are {} (add it to the host config, or fix the name)",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
            }
        }
    }

    /// Refuses a `subscription.columns` entry that `table` (with `columns`, in table order)
    /// does not have, naming it and the table's columns.
    pub fn check_columns<'a>(
        &self,
        table: &str,
        columns: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Result<(), String> {
        let Some(wanted) = &self.columns else {
            return Ok(());
        };
        match wanted
            .iter()
            .find(|w| !columns.clone().into_iter().any(|c| c == w.as_str()))
        {
            None => Ok(()),
            Some(unknown) => Err(format!(
                "`subscription.columns` names `{unknown}`, which table `{table}` does not have; \
                 its columns are {}",
                columns.into_iter().collect::<Vec<_>>().join(", ")
            )),
        }
    }
}

/// `subscription.tables`: at least one entry, no repeats, `"*"` only alone.
fn check_table_list(tables: &[String]) -> Result<(), String> {
    if tables.is_empty() {
        return Err(
            "`subscription.tables` is empty; name at least one table, or `[\"*\"]` for every \
             captured table"
                .into(),
        );
    }
    if tables.len() > 1 && tables.iter().any(|t| t == EVERY_TABLE) {
        return Err(
            "`subscription.tables` mixes `\"*\"` with table names; `[\"*\"]` alone already means \
             every captured table"
                .into(),
        );
    }
    if let Some(t) = tables.iter().find(|t| t.is_empty()) {
        return Err(format!(
            "`subscription.tables` has an empty name ({t:?}); name a table"
        ));
    }
    if let Some(dup) = tables
        .iter()
        .enumerate()
        .find_map(|(i, t)| tables[..i].contains(t).then_some(t))
    {
        return Err(format!("`subscription.tables` names `{dup}` twice"));
    }
    Ok(())
}

/// The most instances a manifest may ask for (`subscription.instances`). Each costs its own
/// memory (up to `limits.memory-mb`) and a slot of the runtime's instance pool, which a hot
/// swap needs twice (the new version is built beside the old one).
pub const MAX_INSTANCES: u32 = 16;

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
fn default_instances() -> u32 {
    1
}

/// A scheduled plugin's period.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Schedule {
    /// Seconds between ticks.
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

/// What the plugin may reach: grant name (`buckets`, `key-prefixes`, `warehouse-tables`,
/// `topics`, `config`, `http`, ...) to entries. Each name's matching rule is in
/// [`crate::grant::GRANTS`], so a new capability needs no new field here.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Grants(BTreeMap<String, Vec<String>>);

impl Grants {
    /// The entries of a grant; empty when the manifest does not hold it.
    pub fn get(&self, grant: &str) -> &[String] {
        self.0.get(grant).map_or(&[], Vec::as_slice)
    }

    /// True when `grant` lets the plugin reach `value`, under the grant's rule (an unknown
    /// grant allows nothing).
    pub fn allows(&self, grant: &str, value: &str) -> bool {
        rule_for(grant).is_some_and(|r| r.matches(self.get(grant), value))
    }

    /// Every grant and its entries, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Sets the entries of a grant (replacing any).
    pub fn insert(&mut self, grant: &str, entries: Vec<String>) {
        self.0.insert(grant.to_string(), entries);
    }

    /// Every grant and its entries as an owned map (what a capability keeps per plugin).
    pub fn to_map(&self) -> BTreeMap<String, Vec<String>> {
        self.0.clone()
    }

    /// Removes a grant; returns its entries.
    pub fn remove(&mut self, grant: &str) -> Option<Vec<String>> {
        self.0.remove(grant)
    }

    /// `grants.buckets`.
    pub fn buckets(&self) -> &[String] {
        self.get("buckets")
    }

    /// `grants.key-prefixes`.
    pub fn key_prefixes(&self) -> &[String] {
        self.get("key-prefixes")
    }

    /// `grants.warehouse-tables`.
    pub fn warehouse_tables(&self) -> &[String] {
        self.get("warehouse-tables")
    }

    /// `grants.topics`.
    pub fn topics(&self) -> &[String] {
        self.get("topics")
    }

    /// `grants.config`: the `wasi:config` keys the plugin may read.
    pub fn config(&self) -> &[String] {
        self.get("config")
    }
}

impl<S: Into<String>> FromIterator<(S, Vec<String>)> for Grants {
    fn from_iter<I: IntoIterator<Item = (S, Vec<String>)>>(iter: I) -> Self {
        Grants(iter.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
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
        let s = m.subscription.clone().unwrap();
        assert_eq!((s.batch_size, s.max_wait_ms, s.max_attempts), (64, 100, 5));
        assert_eq!(s.instances, 1);
        assert_eq!(m.limits, Limits::default());
        assert!(m.grants.allows("buckets", "archive-orders"));
        assert!(!m.grants.allows("buckets", "other"));
        assert!(m.grants.get("topics").is_empty());
        assert_eq!(m.path(), Path::new("plugins/echo.toml"));
        assert_eq!((s.columns, s.avro, s.attributes), (None, false, false));
    }

    #[test]
    fn subscription_columns_are_checked_against_the_table() {
        let with = |columns: &str| {
            parse(&format!(
                "name = \"echo\"\nworld = \"consumer\"\n[subscription]\ntable = \"orders\"\n\
                 columns = [{columns}]\navro = true\n"
            ))
        };
        let s = with("\"amount\", \"id\"").unwrap().subscription.unwrap();
        assert_eq!(
            s.columns,
            Some(vec!["amount".to_string(), "id".to_string()])
        );
        assert!(s.avro && !s.attributes);
        let table = ["id", "amount", "status"];
        assert_eq!(s.check_columns("orders", table), Ok(()));
        let s = with("\"amount\", \"nope\"").unwrap().subscription.unwrap();
        assert_eq!(
            s.check_columns("orders", table),
            Err(
                "`subscription.columns` names `nope`, which table `orders` does not have; its \
                 columns are id, amount, status"
                    .to_string()
            )
        );
        let e = with("").unwrap_err();
        assert!(e.contains("must name at least one column"), "{e}");
        let e = with("\"id\", \"id\"").unwrap_err();
        assert!(e.contains("names `id` twice"), "{e}");
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
        let e = parse("name = \"echo\"\nworld = \"scheduled\"\n[grants]\nbucket = [\"a\"]\n")
            .unwrap_err();
        assert!(
            e.contains("echo.toml")
                && e.contains("`grants.bucket`")
                && e.contains("buckets, key-prefixes"),
            "{e}"
        );
        let e = parse(
            "name = \"echo\"\nworld = \"scheduled\"\n[grants]\nhttp = [\"https://h.example/x\"]\n",
        )
        .unwrap_err();
        assert!(e.contains("grants.http") && e.contains("path"), "{e}");
        let e = parse("name = \"echo\"\nworld = \"consumer\"\n[subscription]\ntable = \"t\"\nfilter = [\"amount >\"]\n")
            .unwrap_err();
        assert!(e.contains("echo.toml") && e.contains("amount >"), "{e}");
        let e = Manifest::parse(
            "name = \"9lives\"\nworld = \"scheduled\"\n",
            Path::new("9lives.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("starting with a letter"), "{e}");
    }

    #[test]
    fn table_tables_and_topic_are_exclusive_and_checked() {
        let with = |source: &str| {
            parse(&format!(
                "name = \"echo\"\nworld = \"consumer\"\n[subscription]\n{source}\n"
            ))
        };
        let exactly_one = "exactly one of `table = \"orders\"`";
        // (the [subscription]'s source keys, a part of the error; "" when it parses)
        let cases: &[(&str, &str)] = &[
            ("table = \"orders\"", ""),
            ("tables = [\"orders\", \"payments\"]", ""),
            ("tables = [\"*\"]", ""),
            ("topic = \"replay-x\"", ""),
            ("", exactly_one),
            ("table = \"orders\"\ntables = [\"payments\"]", exactly_one),
            ("tables = [\"orders\"]\ntopic = \"t\"", exactly_one),
            ("table = \"orders\"\ntopic = \"t\"", exactly_one),
            ("tables = []", "`subscription.tables` is empty"),
            (
                "tables = [\"*\", \"orders\"]",
                "mixes `\"*\"` with table names",
            ),
            ("tables = [\"orders\", \"orders\"]", "names `orders` twice"),
            ("tables = [\"\"]", "empty name"),
            ("tables = \"orders\"", "invalid type"),
        ];
        for (source, error) in cases {
            match (with(source), *error) {
                (Ok(_), "") => {}
                (Ok(_), e) => panic!("`{source}` parsed; expected an error with `{e}`"),
                (Err(got), "") => panic!("`{source}` refused: {got}"),
                (Err(got), e) => assert!(
                    got.contains(e) && got.contains("echo.toml"),
                    "`{source}`: {got}"
                ),
            }
        }
    }

    #[test]
    fn tables_resolve_against_the_captured_tables() {
        let sub = |source: &str| {
            parse(&format!(
                "name = \"echo\"\nworld = \"consumer\"\n[subscription]\n{source}\n"
            ))
            .unwrap()
            .subscription
            .unwrap()
        };
        let configured = ["orders", "payments", "refunds"];
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases: &[(&str, Result<Vec<String>, &str>)] = &[
            ("table = \"orders\"", Ok(names(&["orders"]))),
            (
                "tables = [\"refunds\", \"orders\"]",
                Ok(names(&["refunds", "orders"])),
            ),
            ("tables = [\"*\"]", Ok(names(&configured))),
            ("topic = \"replay-x\"", Ok(vec![])),
            (
                "tables = [\"orders\", \"ordres\"]",
                Err(
                    "`subscription.tables` names `ordres`, which this host does not capture; \
                     its [[tables]] are orders, payments, refunds",
                ),
            ),
            (
                "table = \"nope\"",
                Err("`subscription.table` names `nope`, which this host does not capture"),
            ),
        ];
        for (source, want) in cases {
            let got = sub(source).tables_in(configured);
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{source}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{source}: {got}"),
                (got, want) => panic!("{source}: got {got:?}, want {want:?}"),
            }
        }
        let e = sub("tables = [\"orders\"]").tables_in([]).unwrap_err();
        assert!(e.contains("its [[tables]] are none"), "{e}");
    }

    #[test]
    fn instances_are_bounded_with_a_message_naming_the_key_and_the_range() {
        let with = |k: &str| {
            parse(&format!(
                "name = \"echo\"\nworld = \"consumer\"\n[subscription]\ntable = \"t\"\n\
                 instances = {k}\n"
            ))
        };
        assert_eq!(with("3").unwrap().instances(), 3);
        let scheduled = parse("name = \"echo\"\nworld = \"scheduled\"\n").unwrap();
        assert_eq!(scheduled.instances(), 1);
        assert_eq!(
            with(&MAX_INSTANCES.to_string())
                .unwrap()
                .subscription
                .unwrap()
                .instances,
            MAX_INSTANCES
        );
        for bad in ["0", &(MAX_INSTANCES + 1).to_string()] {
            let e = with(bad).unwrap_err();
            assert!(
                e.contains("echo.toml")
                    && e.contains("`subscription.instances` is ")
                    && e.contains(&format!("between 1 and {MAX_INSTANCES}")),
                "{e}"
            );
        }
        let e = with("-1").unwrap_err();
        assert!(e.contains("instances"), "{e}");
    }

    #[test]
    fn a_host_may_know_fewer_grants() {
        let m = parse(
            "name = \"echo\"\nworld = \"scheduled\"\n[grants]\nhttp = [\"https://h.example\"]\n",
        )
        .unwrap();
        let e = m.check_grant_names(&["buckets"]).unwrap_err().to_string();
        assert!(
            e.contains("echo.toml") && e.contains("grants.http") && e.contains("buckets"),
            "{e}"
        );
    }
}
