//! The plugin author's loop without a running host: `plugin new` scaffolds a crate,
//! `plugin check` validates a component and its manifest as the host would at load, and
//! `plugin test` runs a component against recorded events on embedded capabilities in a
//! scratch directory and reports every disposition and everything the plugin wrote.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use ledgerhost_avro::{Decoder, Encoder};
use ledgerhost_core::source::Row;
use ledgerhost_core::{Column, ColumnType, Disposition, Event, TableSchema, Value};
use ledgerhost_runtime::manifest::{Manifest, World};
use ledgerhost_runtime::{Plugin, Runtime, RuntimeConfig};

use crate::backends::Backends;
use crate::config::Config;
use crate::dispatcher::Filter;

// ---------------------------------------------------------------------------------------
// plugin new

/// What `plugin new` creates.
#[derive(Debug, Clone)]
pub struct NewPlugin {
    /// Plugin name (`[a-z0-9-]+`): crate, manifest and component name.
    pub name: String,
    /// Directory the crate directory `<name>/` is created in.
    pub parent: PathBuf,
    /// The SDK crate (`plugins/sdk` of a ledgerhost checkout); found automatically if `None`.
    pub sdk: Option<PathBuf>,
    /// Source table the plugin subscribes to.
    pub table: String,
}

/// True for a valid plugin name (the host's rule for manifest names).
pub fn is_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// Looks for `plugins/sdk` above the running binary, then above the current directory.
fn find_sdk() -> Option<PathBuf> {
    let mut starts = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    for start in starts {
        for dir in start.ancestors() {
            let candidate = dir.join("plugins/sdk");
            if candidate.join("Cargo.toml").is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// Creates the crate; returns its directory.
pub fn new_plugin(opts: &NewPlugin) -> anyhow::Result<PathBuf> {
    ledgerhost_manifest::names::check_plugin_name(&opts.name)?;
    if !crate::config::is_identifier(&opts.table) {
        bail!(
            "--table `{}` is not a table name (letters, digits and `_`)",
            opts.table
        );
    }
    let sdk = match &opts.sdk {
        Some(p) => p.clone(),
        None => find_sdk().context(
            "cannot find the ledgerhost SDK: pass --sdk PATH (the `plugins/sdk` directory of \
             a ledgerhost checkout)",
        )?,
    };
    let sdk = sdk
        .canonicalize()
        .with_context(|| format!("--sdk {}: no such directory", sdk.display()))?;
    let sdk_manifest = sdk.join("Cargo.toml");
    let sdk_toml = std::fs::read_to_string(&sdk_manifest).with_context(|| {
        format!(
            "--sdk {}: no Cargo.toml there (point it at `plugins/sdk`)",
            sdk.display()
        )
    })?;
    if !sdk_toml.contains("name = \"ledgerhost-sdk\"") {
        bail!(
            "--sdk {}: that crate is not ledgerhost-sdk (point it at `plugins/sdk`)",
            sdk.display()
        );
    }
    let dir = opts.parent.join(&opts.name);
    if dir.exists() {
        bail!(
            "{} already exists; choose another name or remove it",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir.join("src"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let name = &opts.name;
    let table = &opts.table;
    let files: [(&str, String); 5] = [
        ("Cargo.toml", cargo_toml(name, &sdk)),
        ("plugin.toml", manifest_toml(name, table)),
        ("src/lib.rs", lib_rs(name, table)),
        ("README.md", readme(name)),
        (".gitignore", "/target\n".into()),
    ];
    for (file, text) in files {
        let path = dir.join(file);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    // The versions the SDK was tested with: a new crate builds offline and reproducibly.
    if let Some(lock) = sdk
        .ancestors()
        .map(|d| d.join("Cargo.lock"))
        .find(|p| p.is_file())
    {
        std::fs::copy(&lock, dir.join("Cargo.lock"))
            .with_context(|| format!("cannot copy {}", lock.display()))?;
    }
    Ok(dir)
}

fn cargo_toml(name: &str, sdk: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the WebAssembly component; rlib: the native unit tests.
crate-type = ["cdylib", "rlib"]

[dependencies]
ledgerhost-sdk = {{ path = "{sdk}" }}

# A workspace of its own, wherever the crate lives.
[workspace]

[profile.release]
lto = true
codegen-units = 1
opt-level = "s"
strip = true
"#,
        sdk = sdk.display().to_string().replace('\\', "/")
    )
}

fn manifest_toml(name: &str, table: &str) -> String {
    format!(
        r#"# The host loads `{name}.wasm` beside this file renamed `{name}.toml`.
name = "{name}"
world = "consumer"

[subscription]
table = "{table}"
batch-size = 64
max-wait-ms = 100
max-attempts = 5

[limits]
memory-mb = 32
deadline-ms = 1000

[grants]
key-prefixes = ["{name}/"]
"#
    )
}

fn lib_rs(name: &str, table: &str) -> String {
    format!(
        r#"//! `{name}`: keeps the newest version of every `{table}` row in the key-value store
//! under `{name}/<primary key>` (a materialized view) and removes it when the row is deleted.
//! Replace `handle_one` with your own logic; `cargo test` runs the tests below natively.

use ledgerhost_sdk::prelude::*;

/// Key prefix the manifest grants (`grants.key-prefixes`).
const PREFIX: &str = "{name}/";

struct Plugin;

impl Consumer for Plugin {{
    fn handle(events: Vec<Event>) -> Vec<Disposition> {{
        // One disposition per event, in order.
        events.iter().map(handle_one).collect()
    }}
}}

fn handle_one(e: &Event) -> Disposition {{
    let key = format!("{{PREFIX}}{{}}", e.ordering_key());
    // Versioned by commit timestamp: a redelivered or late older version never wins.
    let result = if e.deleted {{
        kv::delete_if_newer(&key, e.commit_ts).map(|_| ())
    }} else {{
        kv::set_if_newer(&key, &e.avro, e.commit_ts).map(|_| ())
    }};
    match result {{
        Ok(()) => Disposition::Ack,
        // A missing grant will not heal by retrying.
        Err(Error::Denied(why)) => Disposition::Reject(format!("{{}}: {{why}}", e.id)),
        Err(err) => Disposition::Retry(format!("cannot store {{}}: {{err}}", e.id)),
    }}
}}

export_consumer!(Plugin);

#[cfg(test)]
mod tests {{
    use super::*;
    use ledgerhost_sdk::testing::{{Capability, EventBuilder, MockHost}};

    #[test]
    fn keeps_the_newest_version_of_each_row() {{
        let host = MockHost::from_manifest(include_str!("../plugin.toml")).unwrap();
        let v1 = EventBuilder::new("{table}").key("id", 1i64).field("amount", 10i64).commit_ts(100).build();
        let v2 = EventBuilder::new("{table}").key("id", 1i64).field("amount", 20i64).commit_ts(200).build();
        // Newest first, then the older one redelivered: the newest stays.
        assert_eq!(Plugin::handle(vec![v2.clone(), v1]), vec![Disposition::Ack; 2]);
        assert_eq!(host.kv_keys(), vec!["{name}/1"]);
        assert_eq!(host.kv("{name}/1"), Some(v2.avro.clone()));
    }}

    #[test]
    fn a_deleted_row_leaves_the_view() {{
        let host = MockHost::from_manifest(include_str!("../plugin.toml")).unwrap();
        let row = EventBuilder::new("{table}").key("id", 7i64).commit_ts(100).build();
        let gone = EventBuilder::new("{table}").key("id", 7i64).commit_ts(200).deleted().build();
        assert_eq!(Plugin::handle(vec![row, gone]), vec![Disposition::Ack; 2]);
        assert!(host.kv_keys().is_empty());
    }}

    #[test]
    fn a_store_outage_is_retried() {{
        let host = MockHost::from_manifest(include_str!("../plugin.toml")).unwrap();
        host.fail(Capability::Keyvalue, Error::Backend("store down".into()));
        let e = EventBuilder::new("{table}").key("id", 2i64).build();
        assert!(matches!(Plugin::handle(vec![e])[0], Disposition::Retry(_)));
    }}
}}
"#
    )
}

fn readme(name: &str) -> String {
    let file = name.replace('-', "_");
    format!(
        r#"# {name}

A ledgerhost consumer plugin.

```sh
cargo test                                   # the logic, natively, against the SDK's MockHost
cargo build --release --target wasm32-wasip2 # the component
W=target/wasm32-wasip2/release/{file}.wasm
ledgerhost plugin check $W --manifest plugin.toml
ledgerhost plugin test  $W --manifest plugin.toml --events events.json
# deploy: copy the pair into the host's plugin directory
cp plugin.toml /path/to/plugins/{name}.toml && cp $W /path/to/plugins/{name}.wasm
```

Events for `plugin test` are JSON (one object per line, or an array):
`{{"table": "orders", "key": ["id"], "commit_ts": 1700000000000000, "row": {{"id": 1, "amount": 5}}}}`
or recorded Avro (`.avro` files, or a directory of them).
"#
    )
}

// ---------------------------------------------------------------------------------------
// plugin check

/// The manifest path of a component: `--manifest`, else `<stem>.toml` beside it, else
/// `plugin.toml` beside it.
fn manifest_path(wasm: &Path, manifest: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(m) = manifest {
        return Ok(m.to_path_buf());
    }
    let sibling = wasm.with_extension("toml");
    if sibling.is_file() {
        return Ok(sibling);
    }
    let plugin_toml = wasm.parent().unwrap_or(Path::new(".")).join("plugin.toml");
    if plugin_toml.is_file() {
        return Ok(plugin_toml);
    }
    bail!(
        "no manifest for {}: expected {} (or pass --manifest FILE)",
        wasm.display(),
        sibling.display()
    )
}

/// A runtime on embedded capabilities under `dir`, as the host would build it.
async fn scratch_runtime(dir: &Path) -> anyhow::Result<(Arc<Runtime>, Backends, Config)> {
    let config = Config::parse("", Path::new("(plugin tool)"), dir)?;
    std::fs::create_dir_all(&config.host.data_dir)
        .with_context(|| format!("cannot create {}", config.host.data_dir.display()))?;
    let backends = Backends::connect(&config).await?;
    let runtime = Runtime::new(RuntimeConfig::default(), backends.capabilities())
        .context("cannot start the WebAssembly runtime")?;
    Ok((runtime, backends, config))
}

/// Loads the pair exactly as the host's registry does (manifest rules, component, world,
/// imports against grants, one instantiation). A crate's `plugin.toml` is staged under the
/// plugin's name first, as deploying it does.
async fn load(
    runtime: &Arc<Runtime>,
    wasm: &Path,
    manifest: Option<&Path>,
    config: &BTreeMap<String, String>,
    scratch: &Path,
) -> anyhow::Result<Arc<Plugin>> {
    let manifest_path = manifest_path(wasm, manifest)?;
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("cannot read manifest {}", manifest_path.display()))?;
    let stem = manifest_path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("");
    if stem != "plugin" {
        // Deployed form `<name>.toml`: the host's own stem check applies as is.
        Manifest::parse(&text, &manifest_path)?;
    }
    let name = toml::from_str::<toml::Table>(&text)
        .ok()
        .and_then(|t| t.get("name").and_then(|n| n.as_str().map(String::from)))
        .unwrap_or_else(|| stem.to_string());
    let staged = scratch.join(format!("{}.toml", name.replace(['/', '\\'], "_")));
    std::fs::write(&staged, &text)
        .with_context(|| format!("cannot stage the manifest in {}", scratch.display()))?;
    runtime.load(wasm, &staged, config).await.map_err(|e| {
        anyhow::anyhow!(
            "{}",
            e.to_string().replace(
                &staged.display().to_string(),
                &manifest_path.display().to_string()
            )
        )
    })
}

/// Validates a component and its manifest; prints what the host would see.
pub async fn check(wasm: &Path, manifest: Option<&Path>) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir().context("cannot create a scratch directory")?;
    let (runtime, _backends, _config) = scratch_runtime(scratch.path()).await?;
    let plugin = load(&runtime, wasm, manifest, &BTreeMap::new(), scratch.path()).await?;
    let m = plugin.manifest();
    println!("ok: {} is a valid ledgerhost plugin", wasm.display());
    println!("  name      {}", m.name);
    println!("  world     {}", world_name(m.world));
    println!("  version   {}", plugin.version());
    if let Some(s) = &m.subscription {
        let source = match (&s.table, &s.topic) {
            (Some(t), _) => format!("table {t}"),
            (None, Some(t)) => format!("topic {t}"),
            _ => "-".into(),
        };
        let filter = if s.filter.is_empty() {
            String::new()
        } else {
            format!(", filter {}", s.filter.exprs().join(" AND "))
        };
        println!(
            "  consumes  {source}, batches of {}{filter}, {} attempts",
            s.batch_size, s.max_attempts
        );
    }
    if let Some(s) = &m.schedule {
        println!("  schedule  every {} s", s.every_secs);
    }
    println!(
        "  limits    {} MiB memory, {} ms per call",
        m.limits.memory_mb, m.limits.deadline_ms
    );
    let g = &m.grants;
    for (what, list) in [
        ("buckets", g.buckets()),
        ("key-prefixes", g.key_prefixes()),
        ("warehouse-tables", g.warehouse_tables()),
        ("topics", g.topics()),
        ("config", g.config()),
    ] {
        if !list.is_empty() {
            println!("  grants    {what}: {}", list.join(", "));
        }
    }
    Ok(())
}

fn world_name(w: World) -> &'static str {
    match w {
        World::Consumer => "consumer",
        World::Scheduled => "scheduled",
        World::HttpTrigger => "http-trigger",
    }
}

// ---------------------------------------------------------------------------------------
// plugin test: reading events

/// One recorded event in the JSON form `plugin test` reads.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonEvent {
    table: String,
    /// Primary-key columns (default `["id"]`).
    #[serde(default)]
    key: Option<Vec<String>>,
    /// Microseconds since the epoch (default: the event's position, 1, 2, ...).
    #[serde(default)]
    commit_ts: Option<i64>,
    #[serde(default)]
    deleted: bool,
    row: serde_json::Map<String, serde_json::Value>,
    /// Column types where JSON cannot tell: `NUMERIC` (text), `TIMESTAMP` (µs), `DATE`
    /// (days), `JSON`, `BYTES` (hex).
    #[serde(default)]
    types: BTreeMap<String, String>,
}

/// Reads events from `path`: a `.avro` container, a directory of them (in file-name order),
/// or JSON (an array, one object, or one object per line).
pub fn read_events(path: &Path) -> anyhow::Result<Vec<Event>> {
    let decoder = Decoder::new();
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot list {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        let mut out = Vec::new();
        for f in files {
            let data = std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?;
            out.push(
                decoder
                    .decode(&data, &[])
                    .with_context(|| format!("{} is not a ledgerhost Avro event", f.display()))?,
            );
        }
        return Ok(out);
    }
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if data.starts_with(b"Obj\x01") {
        let event = decoder
            .decode(&data, &[])
            .with_context(|| format!("{} is not a ledgerhost Avro event", path.display()))?;
        return Ok(vec![event]);
    }
    let text = std::str::from_utf8(&data)
        .with_context(|| format!("{} is neither Avro nor UTF-8 JSON", path.display()))?;
    let items: Vec<(String, serde_json::Value)> = match serde_json::from_str(text) {
        Ok(serde_json::Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("{}[{i}]", path.display()), v))
            .collect(),
        Ok(v) => vec![(path.display().to_string(), v)],
        Err(_) => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .map(|v| (format!("{}:{}", path.display(), i + 1), v))
                    .with_context(|| format!("{}:{}: not a JSON object", path.display(), i + 1))
            })
            .collect::<anyhow::Result<_>>()?,
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, (place, v))| {
            let e: JsonEvent = serde_json::from_value(v).with_context(|| {
                format!(
                    "{place}: expected {{\"table\": ..., \"key\": [...], \"commit_ts\": µs, \
                     \"row\": {{...}}}}"
                )
            })?;
            json_event(e, i as i64 + 1, &decoder).with_context(|| place.clone())
        })
        .collect()
}

/// Turns a JSON event into a real Avro event (encoded and decoded as the host does).
fn json_event(e: JsonEvent, position: i64, decoder: &Decoder) -> anyhow::Result<Event> {
    let key = e.key.unwrap_or_else(|| vec!["id".into()]);
    for k in &key {
        if !e.row.contains_key(k) {
            bail!("key column `{k}` is not in `row` (set \"key\": [...] to the primary key)");
        }
    }
    let commit_ts = e.commit_ts.unwrap_or(position);
    let mut columns = Vec::new();
    let mut values = Vec::new();
    for (name, v) in &e.row {
        let (ty, value) = json_value(name, v, e.types.get(name).map(String::as_str))?;
        columns.push(Column {
            name: name.clone(),
            ty,
            nullable: !key.contains(name),
        });
        values.push(value);
    }
    let commit_col = if e.row.contains_key("commit_ts") {
        "_commit_ts".to_string()
    } else {
        "commit_ts".to_string()
    };
    columns.push(Column {
        name: commit_col.clone(),
        ty: ColumnType::Timestamp,
        nullable: false,
    });
    values.push(Value::Timestamp(commit_ts));
    let mut deleted_column = None;
    if e.deleted {
        columns.push(Column {
            name: "_deleted".into(),
            ty: ColumnType::Bool,
            nullable: false,
        });
        values.push(Value::Bool(true));
        deleted_column = Some("_deleted".to_string());
    }
    let schema = TableSchema {
        name: e.table.clone(),
        columns,
        primary_key: key,
        commit_ts_column: commit_col,
        deleted_column,
    };
    let message = Encoder::new(&schema)?.encode(&Row { values, commit_ts })?;
    let attrs: Vec<(String, String)> = message.attributes.into_iter().collect();
    Ok(decoder.decode(&message.data, &attrs)?)
}

fn json_value(
    name: &str,
    v: &serde_json::Value,
    ty: Option<&str>,
) -> anyhow::Result<(ColumnType, Value)> {
    use serde_json::Value as J;
    let bad = |want: &str| anyhow::anyhow!("column `{name}`: {want}, got {v}");
    Ok(match (ty.map(str::to_ascii_uppercase).as_deref(), v) {
        (Some("NUMERIC"), J::Null) => (ColumnType::Numeric, Value::Null),
        (Some("NUMERIC"), J::String(s)) => (ColumnType::Numeric, Value::Numeric(s.clone())),
        (Some("NUMERIC"), J::Number(n)) => (ColumnType::Numeric, Value::Numeric(n.to_string())),
        (Some("NUMERIC"), _) => return Err(bad("NUMERIC wants decimal text")),
        (Some("TIMESTAMP"), J::Null) => (ColumnType::Timestamp, Value::Null),
        (Some("TIMESTAMP"), J::Number(n)) => (
            ColumnType::Timestamp,
            Value::Timestamp(
                n.as_i64()
                    .ok_or_else(|| bad("TIMESTAMP wants integer µs"))?,
            ),
        ),
        (Some("TIMESTAMP"), _) => return Err(bad("TIMESTAMP wants integer µs")),
        (Some("DATE"), J::Null) => (ColumnType::Date, Value::Null),
        (Some("DATE"), J::Number(n)) => (
            ColumnType::Date,
            Value::Date(
                n.as_i64()
                    .and_then(|d| i32::try_from(d).ok())
                    .ok_or_else(|| bad("DATE wants days since 1970-01-01"))?,
            ),
        ),
        (Some("DATE"), _) => return Err(bad("DATE wants days since 1970-01-01")),
        (Some("JSON"), J::Null) => (ColumnType::Json, Value::Null),
        (Some("JSON"), other) => (ColumnType::Json, Value::Json(other.to_string())),
        (Some("BYTES"), J::Null) => (ColumnType::Bytes, Value::Null),
        (Some("BYTES"), J::String(hex)) => (
            ColumnType::Bytes,
            Value::Bytes(
                (0..hex.len())
                    .step_by(2)
                    .map(|i| {
                        hex.get(i..i + 2)
                            .and_then(|b| u8::from_str_radix(b, 16).ok())
                    })
                    .collect::<Option<Vec<u8>>>()
                    .ok_or_else(|| bad("BYTES wants hex text"))?,
            ),
        ),
        (Some("BYTES"), _) => return Err(bad("BYTES wants hex text")),
        (Some(other), _) => bail!(
            "column `{name}`: type `{other}` is not one of NUMERIC, TIMESTAMP, DATE, JSON, BYTES \
             (other types are inferred from the JSON value)"
        ),
        (None, J::Null) => (ColumnType::String, Value::Null),
        (None, J::Bool(b)) => (ColumnType::Bool, Value::Bool(*b)),
        (None, J::Number(n)) => match n.as_i64() {
            Some(i) => (ColumnType::Int64, Value::Int64(i)),
            None => (
                ColumnType::Float64,
                Value::Float64(n.as_f64().ok_or_else(|| bad("a number"))?),
            ),
        },
        (None, J::String(s)) => (ColumnType::String, Value::String(s.clone())),
        (None, other) => (ColumnType::Json, Value::Json(other.to_string())),
    })
}

// ---------------------------------------------------------------------------------------
// plugin test: running and reporting

/// Options of `plugin test`.
#[derive(Debug, Clone)]
pub struct TestRun {
    pub wasm: PathBuf,
    pub manifest: Option<PathBuf>,
    pub events: PathBuf,
    /// `wasi:config` values overriding the manifest's.
    pub config: BTreeMap<String, String>,
    /// Keep the embedded stores here instead of a temporary directory.
    pub state_dir: Option<PathBuf>,
    /// Print the report as JSON instead of text.
    pub json: bool,
}

/// Runs a consumer plugin over the events, in the manifest's batch size and host-side
/// filter, and reports dispositions and writes.
pub async fn test(run: &TestRun) -> anyhow::Result<serde_json::Value> {
    let events = read_events(&run.events)?;
    let scratch = tempfile::tempdir().context("cannot create a scratch directory")?;
    let dir = match &run.state_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            d.canonicalize()?
        }
        None => scratch.path().to_path_buf(),
    };
    let (runtime, backends, config) = scratch_runtime(&dir).await?;
    let plugin = load(
        &runtime,
        &run.wasm,
        run.manifest.as_deref(),
        &run.config,
        scratch.path(),
    )
    .await?;
    let m = plugin.manifest().clone();
    if m.world != World::Consumer {
        bail!(
            "`plugin test` runs consumer plugins; `{}` is a {} plugin",
            m.name,
            world_name(m.world)
        );
    }
    let sub = m
        .subscription
        .clone()
        .context("consumer manifest without [subscription]")?;
    let filter = Filter::parse(&sub.filter).context("subscription.filter")?;
    // Granted topics exist, as the host creates them before a plugin runs.
    for topic in m.grants.topics().iter().filter(|t| !t.ends_with('*')) {
        backends.ledger.ensure_topic(topic).await?;
    }
    let mut results = Vec::new();
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    let selected: Vec<&Event> = events
        .iter()
        .filter(|e| {
            let keep = filter.matches(e);
            if !keep {
                results.push(serde_json::json!({"event": e.id.0, "disposition": "filtered"}));
                *counts.entry("filtered").or_default() += 1;
            }
            keep
        })
        .collect();
    for batch in selected.chunks(sub.batch_size.max(1)) {
        let owned: Vec<Event> = batch.iter().map(|e| (*e).clone()).collect();
        match plugin.handle(owned).await {
            Ok(dispositions) => {
                for (e, d) in batch.iter().zip(dispositions) {
                    let (kind, reason) = match d {
                        Disposition::Ack => ("ack", None),
                        Disposition::Retry(r) => ("retry", Some(r)),
                        Disposition::Reject(r) => ("reject", Some(r)),
                    };
                    *counts.entry(kind).or_default() += 1;
                    results.push(serde_json::json!({
                        "event": e.id.0, "disposition": kind, "reason": reason
                    }));
                }
            }
            Err(err) => {
                // The host would retry these one by one and rebuild the instance.
                for e in batch {
                    *counts.entry("failed").or_default() += 1;
                    results.push(serde_json::json!({
                        "event": e.id.0, "disposition": "failed", "reason": err.to_string()
                    }));
                }
            }
        }
    }
    let wrote = written(&config, &backends, &m).await?;
    let stats = plugin.stats();
    let report = serde_json::json!({
        "plugin": m.name,
        "version": plugin.version(),
        "events": events.len(),
        "counts": counts,
        "dispositions": results,
        "wrote": wrote,
        "runtime": {
            "calls": stats.calls, "traps": stats.traps, "deadline_hits": stats.deadline_hits,
            "rebuilds": stats.rebuilds, "memory_high_water_bytes": stats.memory_high_water,
        },
        "state_dir": run.state_dir.as_ref().map(|_| dir.display().to_string()),
    });
    if run.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(report)
}

/// Printable form of stored bytes: UTF-8 text when it is, else its size.
fn show(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(|c| c.is_control() && c != '\n') => {
            let s: String = s.chars().take(120).collect();
            format!("{s:?}")
        }
        _ => format!("<{} bytes>", bytes.len()),
    }
}

/// Everything the plugin left in the embedded stores.
async fn written(
    config: &Config,
    backends: &Backends,
    m: &Manifest,
) -> anyhow::Result<serde_json::Value> {
    let mut kv = serde_json::Map::new();
    for key in backends.keyvalue.list_keys("").await? {
        if let Some(v) = backends.keyvalue.get(&key).await? {
            kv.insert(key, show(&v).into());
        }
    }
    // The local blobstore keeps one directory per bucket.
    let mut blobs = serde_json::Map::new();
    let blob_dir = match &config.blobstore {
        crate::config::BlobStoreConfig::Local { path } => path.clone(),
        _ => None,
    };
    if let Some(dir) = blob_dir
        && let Ok(entries) = std::fs::read_dir(&dir)
    {
        let mut buckets: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        buckets.sort();
        for b in buckets {
            let names = backends.blobstore.list(&b, "").await.unwrap_or_default();
            if !names.is_empty() {
                blobs.insert(b, names.into());
            }
        }
    }
    let mut warehouse = serde_json::Map::new();
    for t in m
        .grants
        .warehouse_tables()
        .iter()
        .filter(|t| !t.ends_with('*'))
    {
        if let Ok(rows) = backends.warehouse.scan(t).await {
            let ids: Vec<String> = rows.iter().map(|r| r.event_id.clone()).collect();
            warehouse.insert(t.clone(), ids.into());
        }
    }
    // Published messages: read back from the embedded ledger's own file.
    let mut topics = serde_json::Map::new();
    let ledger_db = config.host.data_dir.join("ledger").join("ledger.db");
    if ledger_db.is_file() {
        let conn = rusqlite::Connection::open(&ledger_db)?;
        let mut stmt =
            conn.prepare("SELECT topic, ordering_key, attributes FROM messages ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (topic, key, attrs) = row?;
            let attrs: BTreeMap<String, String> = serde_json::from_str(&attrs).unwrap_or_default();
            let entry = topics
                .entry(topic)
                .or_insert_with(|| serde_json::Value::Array(Vec::new()));
            if let serde_json::Value::Array(list) = entry {
                list.push(serde_json::json!({
                    "ordering_key": key,
                    "event_id": attrs.get(ledgerhost_core::ledger::attr::EVENT_ID),
                }));
            }
        }
    }
    Ok(serde_json::json!({
        "keyvalue": kv, "blobs": blobs, "warehouse": warehouse, "topics": topics,
    }))
}

fn print_report(r: &serde_json::Value) {
    println!(
        "plugin {} ({}) over {} events",
        r["plugin"].as_str().unwrap_or("?"),
        r["version"].as_str().unwrap_or("?"),
        r["events"]
    );
    if let Some(list) = r["dispositions"].as_array() {
        for d in list {
            let reason = d["reason"]
                .as_str()
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            println!(
                "  {:<9} {}{reason}",
                d["disposition"].as_str().unwrap_or("?"),
                d["event"].as_str().unwrap_or("?")
            );
        }
    }
    if let Some(c) = r["counts"].as_object() {
        let parts: Vec<String> = c.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("totals: {}", parts.join(", "));
    }
    let w = &r["wrote"];
    let mut nothing = true;
    if let Some(kv) = w["keyvalue"].as_object() {
        for (k, v) in kv {
            nothing = false;
            println!("keyvalue  {k} = {}", v.as_str().unwrap_or(""));
        }
    }
    for (section, label) in [("blobs", "blob"), ("warehouse", "warehouse")] {
        if let Some(map) = w[section].as_object() {
            for (k, v) in map {
                for item in v.as_array().into_iter().flatten() {
                    nothing = false;
                    println!("{label:<9} {k}/{}", item.as_str().unwrap_or(""));
                }
            }
        }
    }
    if let Some(map) = w["topics"].as_object() {
        for (topic, msgs) in map {
            for m in msgs.as_array().into_iter().flatten() {
                nothing = false;
                println!(
                    "published {topic} key={} event={}",
                    m["ordering_key"].as_str().unwrap_or(""),
                    m["event_id"].as_str().unwrap_or("-")
                );
            }
        }
    }
    if nothing {
        println!("wrote nothing");
    }
    if let Some(dir) = r["state_dir"].as_str() {
        println!("stores kept in {dir}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_events_become_real_avro_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.json");
        std::fs::write(
            &path,
            r#"[{"table": "orders", "commit_ts": 5, "row": {"id": 1, "total": "12.50", "note": null},
                 "types": {"total": "NUMERIC"}},
                {"table": "orders", "deleted": true, "row": {"id": 2, "total": "1", "note": "x"},
                 "types": {"total": "NUMERIC"}}]"#,
        )
        .unwrap();
        let events = read_events(&path).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].id.0, "orders/1/5");
        assert_eq!(events[0].get("total"), Some(&Value::Numeric("12.5".into())));
        assert_eq!(events[0].get("note"), Some(&Value::Null));
        assert!(!events[0].deleted);
        // Position as the default commit time; the tombstone flag survives the Avro trip.
        assert_eq!(events[1].commit_ts, 2);
        assert!(events[1].deleted);
        // The avro bytes are a container the host's decoder reads back to the same event.
        let again = Decoder::new().decode(&events[0].avro, &[]).unwrap();
        assert_eq!(again.id, events[0].id);
    }

    #[test]
    fn avro_files_and_directories_are_read_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.json");
        std::fs::write(
            &path,
            "{\"table\":\"t\",\"commit_ts\":1,\"row\":{\"id\":7}}\n\
             {\"table\":\"t\",\"commit_ts\":2,\"row\":{\"id\":8}}\n",
        )
        .unwrap();
        let events = read_events(&path).unwrap();
        let avro_dir = dir.path().join("archive");
        std::fs::create_dir(&avro_dir).unwrap();
        // Written in reverse: the name order (commit time in archive names) wins.
        std::fs::write(avro_dir.join("b.avro"), &events[1].avro).unwrap();
        std::fs::write(avro_dir.join("a.avro"), &events[0].avro).unwrap();
        let read: Vec<String> = read_events(&avro_dir)
            .unwrap()
            .into_iter()
            .map(|e| e.id.0)
            .collect();
        assert_eq!(read, ["t/7/1", "t/8/2"]);
        let one = read_events(&avro_dir.join("b.avro")).unwrap();
        assert_eq!(one[0].id.0, "t/8/2");
    }

    #[test]
    fn bad_events_are_named_by_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.json");
        std::fs::write(
            &path,
            "{\"table\":\"t\",\"row\":{\"id\":1}}\n{\"table\":\"t\",\"row\":{\"no_id\":1}}\n",
        )
        .unwrap();
        let err = format!("{:#}", read_events(&path).unwrap_err());
        assert!(err.contains("events.json:2"), "{err}");
        assert!(err.contains("key column `id`"), "{err}");
    }

    #[test]
    fn plugin_names_follow_the_host_rule() {
        assert!(is_plugin_name("order-view"));
        assert!(!is_plugin_name("Order"));
        assert!(!is_plugin_name("9lives"));
        assert!(!is_plugin_name("a_b"));
    }
}
