//! The native stand-in for the host's capabilities, behind [`MockHost`]. It keeps the
//! host's rules that plugin code can trip over: grants (when built from a manifest), name
//! checks, publishing only to created topics, loading only into ensured tables, versioned
//! keyvalue writes with tombstones. The manifest, grant and name rules are the host's own
//! (`ledgerhost_manifest`), not a copy.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::marker::PhantomData;

use crate::log::Level;
use crate::warehouse::Row;
use crate::{Error, Field, ledger::Message};

/// One capability, for [`MockHost::fail`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Capability {
    /// `blobstore::*`.
    Blobstore,
    /// `kv::*`.
    Keyvalue,
    /// `warehouse::*`.
    Warehouse,
    /// `ledger::*`.
    Ledger,
}

use ledgerhost_manifest::filter::{Filter, Record, Scalar};
use ledgerhost_manifest::{EVERY_TABLE, Grants, Manifest, names};

use crate::{Event, EventExt, Schema, Value};

/// An SDK event as the host-side filter reads it.
struct View<'a>(&'a Event);

impl Record for View<'_> {
    fn field(&self, name: &str) -> Scalar<'_> {
        match self.0.get(name) {
            None | Some(Value::Null) => Scalar::Null,
            Some(Value::Bool(b)) => Scalar::Bool(*b),
            Some(Value::Int64(i)) => Scalar::Int(*i),
            Some(Value::Float32(x)) => Scalar::Float(f64::from(*x)),
            Some(Value::Float64(x)) => Scalar::Float(*x),
            Some(Value::Numeric(s)) => Scalar::Decimal(s),
            Some(Value::String(s)) => Scalar::Text(s),
            Some(Value::Json(s)) => Scalar::Json(s),
            Some(Value::Bytes(b)) => Scalar::Bytes(b),
            Some(Value::Date(d)) => Scalar::Date(*d),
            Some(Value::Timestamp(t)) => Scalar::Timestamp(*t),
            Some(_) => Scalar::Other,
        }
    }
    fn attribute(&self, name: &str) -> Option<&str> {
        // The filter runs before the selection, on the event with all its attributes (as
        // the host's runs on the decoded event).
        self.0
            .attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn table(&self) -> &str {
        &self.0.table
    }
    fn deleted(&self) -> bool {
        self.0.deleted
    }
}

/// `subscription.columns`, `.avro` and `.attributes` of a manifest.
#[derive(Debug, Clone)]
struct Selection {
    columns: Option<Vec<String>>,
    avro: bool,
    attributes: bool,
}

impl Selection {
    /// The event as a 0.2 host sends it: only the named columns, in that order, and the Avro
    /// and attributes only when asked for.
    fn apply(&self, e: Event) -> Event {
        let e = match &self.columns {
            None => e,
            Some(names) => {
                let picked: Vec<usize> = names
                    .iter()
                    .filter_map(|n| e.schema().position(n))
                    .collect();
                let schema = std::sync::Arc::new(Schema {
                    table: e.table.clone(),
                    fingerprint: e.schema_fingerprint().to_string(),
                    columns: picked
                        .iter()
                        .map(|&i| e.schema().columns[i].clone())
                        .collect(),
                });
                let values = picked.iter().map(|&i| e.values()[i].clone()).collect();
                let (avro, attributes) = (e.avro.clone(), e.attributes.clone());
                Event::new(schema, e.id.clone(), e.commit_ts, e.deleted, values)
                    .with_raw(avro, attributes)
            }
        };
        e.delivered(self.avro, self.attributes)
    }
}

#[derive(Debug, Clone)]
struct KvEntry {
    /// `None` is a tombstone.
    value: Option<Vec<u8>>,
    /// `None` for unconditional writes, which any versioned write supersedes.
    version: Option<i64>,
}

#[derive(Debug, Default)]
struct Table {
    schema: String,
    rows: BTreeMap<String, Vec<Field>>,
}

/// Everything the fake host holds for one test thread.
#[derive(Debug, Default)]
pub(crate) struct State {
    name: String,
    /// `None` grants everything (a host built with [`MockHost::new`]).
    grants: Option<Grants>,
    /// The manifest's host-side filter (empty: everything passes).
    filter: Filter,
    /// What the manifest asks to receive (`subscription.columns`, `.avro`, `.attributes`);
    /// `None` (a host built with [`MockHost::new`]): everything.
    selection: Option<Selection>,
    /// The tables the manifest subscribes to (`subscription.table` or `.tables`); `None`
    /// for every table (`tables = ["*"]`, a `topic`, or [`MockHost::new`]).
    subscribed: Option<Vec<String>>,
    config: BTreeMap<String, String>,
    blobs: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    kv: BTreeMap<String, KvEntry>,
    tables: BTreeMap<String, Table>,
    topics: BTreeMap<String, Vec<Message>>,
    logs: Vec<(Level, String, String)>,
    failures: BTreeMap<Capability, Error>,
}

thread_local! {
    static HOST: RefCell<Option<State>> = const { RefCell::new(None) };
}

/// Runs `f` on this thread's fake host; panics (failing the test) with the fix if there is none.
pub(crate) fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    HOST.with(|h| {
        let mut h = h.borrow_mut();
        let state = h.as_mut().expect(
            "a capability was called natively without a fake host: create one first with \
             `let host = ledgerhost_sdk::testing::MockHost::new();` (or `from_manifest`)",
        );
        f(state)
    })
}

/// Records a log line on the fake host, or prints it when the test installed none (so pure
/// logic that logs needs no fake).
pub(crate) fn with_or_stderr(level: Level, context: &str, message: &str) {
    HOST.with(|h| match h.borrow_mut().as_mut() {
        Some(state) => state
            .logs
            .push((level, context.to_string(), message.to_string())),
        None => eprintln!("[{level:?}] {context} {message}"),
    })
}

fn invalid(e: names::NameError) -> Error {
    Error::Invalid(e.to_string())
}

impl State {
    fn denied(&self, what: &str, name: &str, grant: &str) -> Error {
        let plugin = &self.name;
        Error::Denied(format!(
            "plugin `{plugin}` is not granted {what} `{name}`; add \"{name}\" to grants.{grant} \
             in {plugin}.toml"
        ))
    }

    fn fail(&self, cap: Capability) -> Result<(), Error> {
        match self.failures.get(&cap) {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn bucket(&self, bucket: &str) -> Result<(), Error> {
        self.fail(Capability::Blobstore)?;
        names::check_bucket_name(bucket).map_err(invalid)?;
        match &self.grants {
            Some(g) if !g.allows("buckets", bucket) => {
                Err(self.denied("bucket", bucket, "buckets"))
            }
            _ => Ok(()),
        }
    }

    fn key(&self, key: &str, what: &str) -> Result<(), Error> {
        self.fail(Capability::Keyvalue)?;
        if what == "key" {
            names::check_key(key).map_err(invalid)?;
        }
        match &self.grants {
            Some(g) if !g.allows("key-prefixes", key) => {
                Err(self.denied(what, key, "key-prefixes"))
            }
            _ => Ok(()),
        }
    }

    fn wh_table(&self, table: &str) -> Result<(), Error> {
        self.fail(Capability::Warehouse)?;
        match &self.grants {
            Some(g) if !g.allows("warehouse-tables", table) => {
                Err(self.denied("warehouse table", table, "warehouse-tables"))
            }
            _ => Ok(()),
        }
    }

    fn topic(&self, topic: &str) -> Result<(), Error> {
        self.fail(Capability::Ledger)?;
        match &self.grants {
            Some(g) if !g.allows("topics", topic) => Err(self.denied("topic", topic, "topics")),
            _ => Ok(()),
        }
    }

    pub(crate) fn blob_put(&mut self, bucket: &str, name: &str, data: &[u8]) -> Result<(), Error> {
        self.bucket(bucket)?;
        names::check_object_name(name).map_err(invalid)?;
        self.blobs
            .entry(bucket.to_string())
            .or_default()
            .insert(name.to_string(), data.to_vec());
        Ok(())
    }

    pub(crate) fn blob_get(&mut self, bucket: &str, name: &str) -> Result<Option<Vec<u8>>, Error> {
        self.bucket(bucket)?;
        names::check_object_name(name).map_err(invalid)?;
        Ok(self.blobs.get(bucket).and_then(|b| b.get(name)).cloned())
    }

    pub(crate) fn blob_delete(&mut self, bucket: &str, name: &str) -> Result<(), Error> {
        self.bucket(bucket)?;
        names::check_object_name(name).map_err(invalid)?;
        if let Some(b) = self.blobs.get_mut(bucket) {
            b.remove(name);
        }
        Ok(())
    }

    pub(crate) fn blob_list(&mut self, bucket: &str, prefix: &str) -> Result<Vec<String>, Error> {
        self.bucket(bucket)?;
        Ok(self
            .blobs
            .get(bucket)
            .map(|b| {
                b.keys()
                    .filter(|k| k.starts_with(prefix))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    pub(crate) fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.key(key, "key")?;
        Ok(self.kv.get(key).and_then(|e| e.value.clone()))
    }

    pub(crate) fn kv_set(&mut self, key: &str, value: &[u8]) -> Result<(), Error> {
        self.key(key, "key")?;
        self.kv.insert(
            key.to_string(),
            KvEntry {
                value: Some(value.to_vec()),
                version: None,
            },
        );
        Ok(())
    }

    pub(crate) fn kv_delete(&mut self, key: &str) -> Result<(), Error> {
        self.key(key, "key")?;
        self.kv.remove(key);
        Ok(())
    }

    fn kv_versioned(&mut self, key: &str, value: Option<&[u8]>, version: i64) -> bool {
        let newer = self
            .kv
            .get(key)
            .and_then(|e| e.version)
            .is_none_or(|stored| version > stored);
        if newer {
            self.kv.insert(
                key.to_string(),
                KvEntry {
                    value: value.map(<[u8]>::to_vec),
                    version: Some(version),
                },
            );
        }
        newer
    }

    pub(crate) fn kv_set_if_newer(
        &mut self,
        key: &str,
        value: &[u8],
        version: i64,
    ) -> Result<bool, Error> {
        self.key(key, "key")?;
        Ok(self.kv_versioned(key, Some(value), version))
    }

    pub(crate) fn kv_delete_if_newer(&mut self, key: &str, version: i64) -> Result<bool, Error> {
        self.key(key, "key")?;
        Ok(self.kv_versioned(key, None, version))
    }

    pub(crate) fn kv_list(&mut self, prefix: &str) -> Result<Vec<String>, Error> {
        self.key(prefix, "key prefix")?;
        Ok(self
            .kv
            .iter()
            .filter(|(k, e)| k.starts_with(prefix) && e.value.is_some())
            .map(|(k, _)| k.clone())
            .collect())
    }

    pub(crate) fn wh_ensure(&mut self, table: &str, schema: &str) -> Result<(), Error> {
        self.wh_table(table)?;
        if !schema.trim_start().starts_with('{') {
            return Err(Error::Invalid(format!(
                "warehouse table `{table}`: the schema must be an Avro record schema (JSON object)"
            )));
        }
        self.tables.entry(table.to_string()).or_default().schema = schema.to_string();
        Ok(())
    }

    pub(crate) fn wh_load(&mut self, table: &str, rows: &[Row]) -> Result<(), Error> {
        self.wh_table(table)?;
        let t = self.tables.get_mut(table).ok_or_else(|| {
            Error::Invalid(format!(
                "warehouse table `{table}` does not exist; call warehouse::ensure_table first"
            ))
        })?;
        for r in rows {
            t.rows.insert(r.event_id.clone(), r.fields.clone());
        }
        Ok(())
    }

    pub(crate) fn wh_count(&mut self, table: &str) -> Result<u64, Error> {
        self.wh_table(table)?;
        let t = self
            .tables
            .get(table)
            .ok_or_else(|| Error::Invalid(format!("warehouse table `{table}` does not exist")))?;
        Ok(t.rows.len() as u64)
    }

    pub(crate) fn topic_create(&mut self, topic: &str) -> Result<(), Error> {
        self.topic(topic)?;
        self.topics.entry(topic.to_string()).or_default();
        Ok(())
    }

    pub(crate) fn topic_publish(&mut self, topic: &str, messages: &[Message]) -> Result<(), Error> {
        self.topic(topic)?;
        let log = self.topics.get_mut(topic).ok_or_else(|| {
            Error::Backend(format!(
                "ledger: topic `{topic}` not found (create it first with ledger::create_topic)"
            ))
        })?;
        log.extend_from_slice(messages);
        Ok(())
    }

    pub(crate) fn config_get(&self, key: &str) -> Option<String> {
        if let Some(g) = &self.grants
            && !g.allows("config", key)
        {
            return None;
        }
        self.config.get(key).cloned()
    }
}

/// A fake host for native unit tests: every capability wrapper of the SDK ([`crate::kv`],
/// [`crate::blobstore`], [`crate::ledger`], ...) talks to it instead of a real host.
///
/// It lives in a thread-local, so each `#[test]` (its own thread) gets its own; creating a
/// new one replaces the previous, dropping it removes it. `new()` grants everything;
/// [`MockHost::from_manifest`] enforces the manifest's grants and serves its `[config]`,
/// as the host would.
///
/// ```
/// use ledgerhost_sdk::testing::MockHost;
/// let host = MockHost::new().with_config("threshold", "5");
/// ledgerhost_sdk::kv::set("seen/1", b"1").unwrap();
/// assert_eq!(host.kv("seen/1"), Some(b"1".to_vec()));
/// assert_eq!(ledgerhost_sdk::config::get("threshold").as_deref(), Some("5"));
/// ```
#[derive(Debug)]
pub struct MockHost {
    /// The state is per thread, so the handle must stay on its thread.
    _not_send: PhantomData<*const ()>,
}

impl Default for MockHost {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for MockHost {
    fn drop(&mut self) {
        HOST.with(|h| h.borrow_mut().take());
    }
}

impl MockHost {
    fn install(state: State) -> Self {
        HOST.with(|h| *h.borrow_mut() = Some(state));
        MockHost {
            _not_send: PhantomData,
        }
    }

    fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        with(|s| f(s))
    }

    /// A fake host that grants every bucket, key, table, topic and config key.
    pub fn new() -> Self {
        Self::install(State {
            name: "test".into(),
            ..State::default()
        })
    }

    /// A fake host with the grants and `[config]` of a manifest (e.g.
    /// `include_str!("../plugin.toml")`), read by the host's own parser
    /// ([`Manifest::parse_source`]: every rule of a deployed manifest but the file name), so a
    /// test also checks that the manifest is valid and grants what the code calls. The
    /// topics it grants by name exist, as the host creates them before a plugin runs.
    pub fn from_manifest(toml_text: &str) -> Result<Self, String> {
        let m = Manifest::parse_source(toml_text, std::path::Path::new("plugin.toml"))
            .map_err(|e| e.to_string())?;
        let topics = m
            .grants
            .topics()
            .iter()
            .filter(|t| !t.ends_with('*'))
            .map(|t| (t.clone(), Vec::new()))
            .collect();
        Ok(Self::install(State {
            name: m.name,
            grants: Some(m.grants),
            selection: m.subscription.as_ref().map(|s| Selection {
                columns: s.columns.clone(),
                avro: s.avro,
                attributes: s.attributes,
            }),
            subscribed: m
                .subscription
                .as_ref()
                .and_then(|s| match (&s.table, &s.tables) {
                    (Some(t), _) => Some(vec![t.clone()]),
                    (None, Some(list)) if !list.iter().any(|t| t == EVERY_TABLE) => {
                        Some(list.clone())
                    }
                    _ => None,
                }),
            filter: m.subscription.map(|s| s.filter).unwrap_or_default(),
            config: m.config,
            topics,
            ..State::default()
        }))
    }

    /// The events the manifest's host-side filter (`subscription.filter`) lets through, of
    /// the tables it subscribes to (`subscription.table`, `.tables`; every table for
    /// `["*"]` or a topic), as the host would deliver them: with only the columns `subscription.columns` names, and
    /// the Avro and attributes only with `subscription.avro` / `.attributes`. All of them,
    /// whole, from a host built with [`MockHost::new`].
    pub fn delivered(&self, events: Vec<Event>) -> Vec<Event> {
        self.read(|s| {
            events
                .into_iter()
                .filter(|e| {
                    s.subscribed
                        .as_ref()
                        .is_none_or(|tables| tables.iter().any(|t| t.as_str() == &*e.table))
                })
                .filter(|e| s.filter.matches(&View(e)))
                .map(|e| match &s.selection {
                    Some(sel) => sel.apply(e),
                    None => e,
                })
                .collect()
        })
    }

    /// Sets a config value (as the host's per-deployment overrides would).
    pub fn with_config(self, key: &str, value: &str) -> Self {
        with(|s| s.config.insert(key.to_string(), value.to_string()));
        self
    }

    /// Makes every call to `cap` fail with `error` until [`MockHost::heal`].
    pub fn fail(&self, cap: Capability, error: Error) {
        with(|s| s.failures.insert(cap, error));
    }

    /// Ends a failure set by [`MockHost::fail`].
    pub fn heal(&self, cap: Capability) {
        with(|s| s.failures.remove(&cap));
    }

    /// Creates a topic, as if another component had.
    pub fn create_topic(&self, topic: &str) {
        with(|s| {
            s.topics.entry(topic.to_string()).or_default();
        });
    }

    /// Stores an object, bypassing grants (test setup).
    pub fn put_blob(&self, bucket: &str, name: &str, data: &[u8]) {
        with(|s| {
            s.blobs
                .entry(bucket.to_string())
                .or_default()
                .insert(name.to_string(), data.to_vec())
        });
    }

    /// A stored value (`None` if absent or a tombstone).
    pub fn kv(&self, key: &str) -> Option<Vec<u8>> {
        self.read(|s| s.kv.get(key).and_then(|e| e.value.clone()))
    }

    /// Every live key, sorted.
    pub fn kv_keys(&self) -> Vec<String> {
        self.read(|s| {
            s.kv.iter()
                .filter(|(_, e)| e.value.is_some())
                .map(|(k, _)| k.clone())
                .collect()
        })
    }

    /// A stored object.
    pub fn blob(&self, bucket: &str, name: &str) -> Option<Vec<u8>> {
        self.read(|s| s.blobs.get(bucket).and_then(|b| b.get(name)).cloned())
    }

    /// Object names of a bucket, sorted.
    pub fn blob_names(&self, bucket: &str) -> Vec<String> {
        self.read(|s| {
            s.blobs
                .get(bucket)
                .map(|b| b.keys().cloned().collect())
                .unwrap_or_default()
        })
    }

    /// Topics that exist.
    pub fn topics(&self) -> Vec<String> {
        self.read(|s| s.topics.keys().cloned().collect())
    }

    /// Messages published to `topic`, in publish order (empty if none or no such topic).
    pub fn published(&self, topic: &str) -> Vec<Message> {
        self.read(|s| s.topics.get(topic).cloned().unwrap_or_default())
    }

    /// Rows of a warehouse table as (event id, fields), by event id.
    pub fn rows(&self, table: &str) -> Vec<(String, Vec<Field>)> {
        self.read(|s| {
            s.tables
                .get(table)
                .map(|t| t.rows.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default()
        })
    }

    /// The Avro schema a warehouse table was last ensured with.
    pub fn table_schema(&self, table: &str) -> Option<String> {
        self.read(|s| s.tables.get(table).map(|t| t.schema.clone()))
    }

    /// Log lines so far as (level, context, message).
    pub fn logs(&self) -> Vec<(Level, String, String)> {
        self.read(|s| s.logs.clone())
    }
}
