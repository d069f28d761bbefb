//! Operating the sidecar and the plugin author's loop, through the real binary: Prometheus
//! metrics that count what went through, SIGTERM draining under load, precise refusal of a
//! bad config, and `plugin new` → build → `plugin check` → `plugin test` → served.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ledgerhost_tests::harness::host::Workspace;
use ledgerhost_tests::harness::{ProcessGroup, eventually, free_port, workspace_root};

const HOST_BIN: &str = env!("CARGO_BIN_EXE_ledgerhost-under-test");

const ORDERS: &str = "CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    client_id TEXT NOT NULL,
    amount INTEGER NOT NULL,
    commit_ts INTEGER
);";

const TABLES: &str = "[[tables]]\nname = \"orders\"\ninterval-ms = 50\n";

/// The counter test plugin: records `count/<event id>` for each event it handles, then acks.
fn counter_manifest(batch: usize) -> String {
    format!(
        "name = \"counter\"\nworld = \"consumer\"\n[subscription]\ntable = \"orders\"\n\
         batch-size = {batch}\nmax-wait-ms = 20\n[grants]\nkey-prefixes = [\"count/\"]\n"
    )
}

/// The host binary as a child process, its admin port set through the environment (the
/// documented `LEDGERHOST__SECTION__KEY` override of the config file).
struct Running {
    group: ProcessGroup,
    admin: String,
    log: PathBuf,
}

impl Running {
    fn start(config: &Path, log: &Path) -> Running {
        Running::start_with(config, log, &[])
    }

    fn start_with(config: &Path, log: &Path, env: &[(&str, &str)]) -> Running {
        let port = free_port();
        let admin = format!("127.0.0.1:{port}");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open host log");
        let mut cmd = Command::new(HOST_BIN);
        cmd.args(["run", "--config"])
            .arg(config)
            .env("LEDGERHOST__ADMIN__LISTEN", &admin)
            .env("LEDGERHOST_LOG", "info,wasmtime=warn,cranelift=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let group = ProcessGroup::spawn("ledgerhost", cmd).expect("start ledgerhost");
        Running {
            group,
            admin,
            log: log.to_path_buf(),
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        ledgerhost::admin_client::get_blocking(&self.admin, path).ok()
    }

    async fn wait_ready(&self) {
        let ok = eventually(Duration::from_secs(120), || async {
            matches!(self.get("/readyz"), Some((200, _)))
        })
        .await;
        assert!(
            ok,
            "host not ready on {} (LEDGERHOST__ADMIN__LISTEN):\n{}",
            self.admin,
            self.log_text()
        );
    }

    fn metrics(&self) -> Vec<Sample> {
        let (code, text) = self.get("/metrics").expect("GET /metrics");
        assert_eq!(code, 200, "{text}");
        parse_prometheus(&text).unwrap_or_else(|e| panic!("invalid Prometheus text: {e}\n{text}"))
    }
}

// ---------------------------------------------------------------------------------------
// A strict parser of the Prometheus text format (0.0.4).

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse::<f64>().map_err(|_| format!("bad value `{s}`")),
    }
}

/// Parses every line; checks names, labels, escapes, values, one TYPE per family declared
/// before its samples, histogram shape (cumulative buckets ending in +Inf = _count).
fn parse_prometheus(text: &str) -> Result<Vec<Sample>, String> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = |m: String| format!("line {}: {m}: `{line}`", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap_or("");
            let name = parts
                .next()
                .ok_or_else(|| at("comment without a name".into()))?;
            match kind {
                "HELP" if !is_metric_name(name) => {
                    return Err(at("bad metric name".into()));
                }
                "TYPE" => {
                    let ty = parts
                        .next()
                        .ok_or_else(|| at("TYPE without a type".into()))?;
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty) {
                        return Err(at(format!("unknown type {ty}")));
                    }
                    if types.insert(name.to_string(), ty.to_string()).is_some() {
                        return Err(at("second TYPE line for the family".into()));
                    }
                }
                _ => {}
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name_end, has_labels) = match line.find(['{', ' ']) {
            Some(i) => (i, line.as_bytes()[i] == b'{'),
            None => return Err(at("sample without a value".into())),
        };
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(at("bad metric name".into()));
        }
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if has_labels {
            rest = &rest[1..];
            loop {
                if let Some(r) = rest.strip_prefix('}') {
                    rest = r;
                    break;
                }
                let eq = rest
                    .find('=')
                    .ok_or_else(|| at("label without `=`".into()))?;
                let lname = &rest[..eq];
                if !is_label_name(lname) {
                    return Err(at(format!("bad label name `{lname}`")));
                }
                rest = rest[eq + 1..]
                    .strip_prefix('"')
                    .ok_or_else(|| at("label value not quoted".into()))?;
                let mut value = String::new();
                let mut chars = rest.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((i, '"')) => break i,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            _ => return Err(at("bad escape in a label value".into())),
                        },
                        Some((_, c)) => value.push(c),
                        None => return Err(at("unterminated label value".into())),
                    }
                };
                if labels.insert(lname.to_string(), value).is_some() {
                    return Err(at(format!("label `{lname}` twice")));
                }
                rest = &rest[end + 1..];
                if let Some(r) = rest.strip_prefix(',') {
                    rest = r;
                }
            }
        }
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value".into()))?;
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().unwrap_or(""))?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().map_err(|_| at("bad timestamp".into()))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing text".into()));
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        let ty = types
            .get(family)
            .ok_or_else(|| at("sample before its TYPE line".into()))?;
        if ty == "counter" && (value < 0.0 || !name.ends_with("_total")) {
            return Err(at("counters are non-negative and named *_total".into()));
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    // Histograms: cumulative buckets, +Inf last and equal to _count.
    for (family, _) in types.iter().filter(|(_, t)| *t == "histogram") {
        let series: BTreeSet<BTreeMap<String, String>> = samples
            .iter()
            .filter(|s| s.name == format!("{family}_count"))
            .map(|s| s.labels.clone())
            .collect();
        for labels in series {
            let buckets: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.name == format!("{family}_bucket"))
                .filter(|s| {
                    let mut l = s.labels.clone();
                    l.remove("le");
                    l == labels
                })
                .collect();
            let mut last = 0.0;
            for b in &buckets {
                if b.value < last {
                    return Err(format!("{family} {labels:?}: buckets are not cumulative"));
                }
                last = b.value;
            }
            let inf = buckets
                .last()
                .filter(|b| b.labels.get("le").map(String::as_str) == Some("+Inf"))
                .ok_or_else(|| format!("{family} {labels:?}: no +Inf bucket last"))?;
            let count = samples
                .iter()
                .find(|s| s.name == format!("{family}_count") && s.labels == labels)
                .map(|s| s.value);
            if Some(inf.value) != count {
                return Err(format!("{family} {labels:?}: +Inf bucket != _count"));
            }
        }
    }
    Ok(samples)
}

fn value(samples: &[Sample], name: &str, label: (&str, &str)) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && s.labels.get(label.0).map(String::as_str) == Some(label.1))
        .map(|s| s.value)
}

#[test]
fn the_metrics_parser_is_strict() {
    assert!(parse_prometheus("# TYPE a_total counter\na_total{x=\"1\"} 3\n").is_ok());
    for bad in [
        "a_total 1\n",                              // no TYPE
        "# TYPE a_total counter\na_total{x=1} 3\n", // unquoted label
        "# TYPE a_total counter\na_total -1\n",     // negative counter
        "# TYPE a gauge\na{x=\"1\"} abc\n",         // bad value
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
        "# TYPE a gauge\n# TYPE a gauge\n",
    ] {
        assert!(parse_prometheus(bad).is_err(), "accepted: {bad}");
    }
}

// ---------------------------------------------------------------------------------------

fn insert_orders(db: &Path, from: i64, to: i64) {
    let mut conn = rusqlite::Connection::open(db).expect("open app.db");
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    let tx = conn.transaction().unwrap();
    for id in from..=to {
        tx.execute(
            "INSERT INTO orders (id, client_id, amount) VALUES (?1, 'c', ?2)",
            [id, id * 10],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

/// Event ids of every row version now in the source.
fn source_event_ids(db: &Path) -> BTreeSet<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT id, commit_ts FROM orders").unwrap();
    stmt.query_map([], |r| {
        Ok(format!(
            "orders/{}/{}",
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_and_count_what_went_through() {
    const ROWS: i64 = 300;
    let ws = Workspace::new();
    ws.sql(ORDERS);
    ws.install_plugin("counter", "counter", &counter_manifest(64));
    let config = ws.write_config(TABLES);
    let host = Running::start(&config, &ws.path().join("host.log"));
    host.wait_ready().await;
    assert_eq!(host.get("/livez").map(|r| r.0), Some(200));

    insert_orders(&ws.db(), 1, ROWS);
    let done = eventually(Duration::from_secs(120), || async {
        value(
            &host.metrics(),
            "ledgerhost_plugin_acked_total",
            ("plugin", "counter"),
        ) == Some(ROWS as f64)
    })
    .await;
    assert!(
        done,
        "counter did not ack {ROWS} events:\n{}",
        host.log_text()
    );

    let m = host.metrics();
    let table = ("table", "orders");
    let plugin = ("plugin", "counter");
    assert_eq!(
        value(&m, "ledgerhost_rows_polled_total", table),
        Some(ROWS as f64)
    );
    assert_eq!(value(&m, "ledgerhost_poll_errors_total", table), Some(0.0));
    assert!(value(&m, "ledgerhost_watermark_age_seconds", table).is_some_and(|a| a >= 0.0));
    assert_eq!(
        value(&m, "ledgerhost_plugin_events_in_total", plugin),
        Some(ROWS as f64)
    );
    assert_eq!(
        value(&m, "ledgerhost_plugin_retried_total", plugin),
        Some(0.0)
    );
    assert_eq!(
        value(&m, "ledgerhost_plugin_dead_lettered_total", plugin),
        Some(0.0)
    );
    assert_eq!(
        value(&m, "ledgerhost_plugin_rebuilds_total", plugin),
        Some(0.0)
    );
    assert_eq!(
        value(&m, "ledgerhost_plugin_deadline_hits_total", plugin),
        Some(0.0)
    );
    assert!(value(&m, "ledgerhost_plugin_memory_high_water_bytes", plugin).unwrap() > 0.0);
    assert!(value(&m, "ledgerhost_plugin_lag_seconds", plugin).is_some());
    // At most 64 per batch: at least ROWS / 64 batches were timed.
    let batches = value(&m, "ledgerhost_plugin_batch_seconds_count", plugin).unwrap();
    assert!(batches >= (ROWS as f64 / 64.0).ceil(), "{batches} batches");
    assert!(
        m.iter()
            .any(|s| s.name == "ledgerhost_ready" && s.value == 1.0)
    );

    // The counter's side effects agree with the counters.
    let keys = ws.kv_keys("count/").await;
    assert_eq!(keys.len() as i64, ROWS);

    // JSON status and the `status` command name the serving version.
    let (_, status) = host.get("/status").unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let p = &status["plugins"][0];
    assert_eq!(p["name"], "counter");
    assert_eq!(p["state"], "serving");
    assert_eq!(p["acked"], ROWS);
    let version = p["version"].as_str().unwrap().to_string();
    assert!(
        m.iter().any(
            |s| s.name == "ledgerhost_plugin_info" && s.labels.get("version") == Some(&version)
        )
    );
    // A broken plugin is refused, and status and metrics say so with the reason.
    let plugins = ws.path().join("plugins");
    std::fs::write(plugins.join("broken.toml"), counter_named("broken")).unwrap();
    std::fs::write(plugins.join("broken.wasm"), b"not a component").unwrap();
    let refused = eventually(Duration::from_secs(60), || async {
        let (_, s) = host.get("/status").unwrap_or_default();
        let s: serde_json::Value = serde_json::from_str(&s).unwrap_or_default();
        s["plugins"].as_array().into_iter().flatten().any(|p| {
            p["name"] == "broken"
                && p["state"] == "refused"
                && p["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("magic bytes"))
        })
    })
    .await;
    assert!(refused, "{}", host.log_text());
    assert_eq!(
        value(
            &host.metrics(),
            "ledgerhost_plugin_refused",
            ("plugin", "broken")
        ),
        Some(1.0)
    );
    let out = Command::new(HOST_BIN)
        .args(["status", "--admin", &host.admin])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("host: ready"), "{text}");
    assert!(
        text.contains("counter") && text.contains(&format!("acked {ROWS}")),
        "{text}"
    );
    assert!(
        text.contains("broken") && text.contains("refused"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_exits_zero_and_a_restart_loses_nothing() {
    let ws = Workspace::new();
    ws.sql(ORDERS);
    ws.install_plugin("counter", "counter", &counter_manifest(50));
    let config = ws.write_config(TABLES);
    let log = ws.path().join("host.log");
    // Structured logs: one JSON object per line.
    let json_logs = [("LEDGERHOST_LOG_JSON", "1")];
    let mut host = Running::start_with(&config, &log, &json_logs);
    host.wait_ready().await;

    // A writer keeps committing while the host is told to stop.
    let db = ws.db();
    let writer = std::thread::spawn(move || {
        for chunk in 0..40 {
            insert_orders(&db, chunk * 100 + 1, chunk * 100 + 100);
            std::thread::sleep(Duration::from_millis(25));
        }
    });
    let busy = eventually(Duration::from_secs(60), || async {
        value(
            &host.metrics(),
            "ledgerhost_plugin_acked_total",
            ("plugin", "counter"),
        )
        .is_some_and(|a| a >= 500.0)
    })
    .await;
    assert!(busy, "no progress before SIGTERM:\n{}", host.log_text());
    let status = host
        .group
        .signal_and_wait("TERM", Duration::from_secs(60))
        .expect("the host exits after SIGTERM within the drain timeout");
    assert!(
        status.success(),
        "exit status {status:?} after SIGTERM:\n{}",
        host.log_text()
    );
    let lines: Vec<serde_json::Value> = host
        .log_text()
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"))
        })
        .collect();
    assert!(
        lines.iter().any(|l| l["severity"] == "INFO"
            && l["message"].as_str().is_some_and(|m| m.contains("drained"))),
        "no `drained` line in the JSON log:\n{}",
        host.log_text()
    );

    // Nothing acked that was not handled: every acked delivery's event has its side effect.
    let handled = ws.kv_keys("count/").await;
    let acked: BTreeSet<String> = {
        let ledger_dir = ws.data_dir().join("ledger");
        let conn = rusqlite::Connection::open(ledger_dir.join("ledger.db")).unwrap();
        // Settled: below the subscription's durable cursor, or acked above it.
        let (topic, cursor): (String, i64) = conn
            .query_row(
                "SELECT topic, cursor FROM subscriptions WHERE name = 'plugin-counter'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let acks: BTreeSet<i64> = conn
            .prepare("SELECT id FROM acks WHERE sub = 'plugin-counter'")
            .unwrap()
            .query_map([], |r| r.get::<_, i64>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        // The messages themselves through the ledger (its pages are stored compactly).
        use ledgerhost_core::ledger::Ledger;
        let ledger = ledgerhost_ledger::embedded::EmbeddedLedger::open(
            &ledger_dir,
            ledgerhost_ledger::embedded::EmbeddedOptions::default(),
        )
        .unwrap();
        ledger
            .read_retained(&topic, 0, usize::MAX)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.position < cursor || acks.contains(&r.position))
            .map(|r| format!("count/{}", r.message.attributes["event_id"]))
            .collect()
    };
    assert!(!acked.is_empty());
    let unhandled: Vec<_> = acked.difference(&handled).take(5).collect();
    assert!(
        unhandled.is_empty(),
        "acked but never handled: {unhandled:?}"
    );

    // Restart: everything committed (during and after the stop) reaches the plugin.
    writer.join().unwrap();
    host = Running::start_with(&config, &log, &json_logs);
    host.wait_ready().await;
    let want: BTreeSet<String> = source_event_ids(&ws.db())
        .into_iter()
        .map(|id| format!("count/{id}"))
        .collect();
    assert_eq!(want.len(), 4000);
    let complete = eventually(Duration::from_secs(120), || {
        let ws = &ws;
        let want = &want;
        async move { ws.kv_keys("count/").await.is_superset(want) }
    })
    .await;
    let missing = want.difference(&ws.kv_keys("count/").await).count();
    assert!(complete, "{missing} events lost across the SIGTERM restart");
    let status = host
        .group
        .signal_and_wait("TERM", Duration::from_secs(60))
        .expect("exits");
    assert!(status.success());
}

fn run_host_expecting_failure(config: &Path, env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(HOST_BIN);
    cmd.args(["run", "--config"]).arg(config);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run ledgerhost");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "a bad config was accepted:\n{stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr
}

#[test]
fn a_bad_config_is_refused_naming_the_key_and_the_expected_form() {
    let ws = Workspace::new();
    // An out-of-range value: the key and its range.
    let config = ws.write_config("[[tables]]\nname = \"orders\"\ninterval-ms = 0\n");
    let err = run_host_expecting_failure(&config, &[]);
    assert!(err.contains("tables[0].interval-ms"), "{err}");
    assert!(err.contains("between 1 and 60000"), "{err}");
    assert!(err.contains("ledgerhost.toml"), "{err}");

    // A misspelt key: named, with the file and position.
    let config = ws.write_config("[ledger]\ntopic-prefx = \"x-\"\n");
    let err = run_host_expecting_failure(&config, &[]);
    assert!(err.contains("topic-prefx"), "{err}");
    assert!(err.contains("topic-prefix"), "expected keys listed: {err}");

    // A bad environment override: the variable and the key it sets.
    let config = ws.write_config(TABLES);
    let err = run_host_expecting_failure(&config, &[("LEDGERHOST__ADMIN__LISTEN", "everywhere")]);
    assert!(err.contains("admin.listen"), "{err}");
    assert!(err.contains("LEDGERHOST__ADMIN__LISTEN"), "{err}");
    assert!(err.contains("127.0.0.1:8686"), "the expected form: {err}");

    let err = run_host_expecting_failure(&config, &[("LEDGERHOST__TABLES__0__START", "yesterday")]);
    assert!(
        err.contains("tables[0].start") && err.contains("beginning"),
        "{err}"
    );
    assert!(err.contains("LEDGERHOST__TABLES__0__START"), "{err}");

    // A missing file.
    let err = run_host_expecting_failure(&ws.path().join("nope.toml"), &[]);
    assert!(err.contains("nope.toml"), "{err}");
}

// ---------------------------------------------------------------------------------------

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_new_builds_checks_tests_and_is_served_without_edits() {
    let root = workspace_root();
    let scratch = tempfile::tempdir().unwrap();
    // A target dir that outlives the test, so re-runs only rebuild the new crate.
    let target = root.join("target").join("plugin-new");

    run(
        Command::new(HOST_BIN)
            .args(["plugin", "new", "order-view", "--dir"])
            .arg(scratch.path())
            .arg("--sdk")
            .arg(root.join("plugins/sdk")),
        "ledgerhost plugin new",
    );
    let krate = scratch.path().join("order-view");
    let cargo = |args: &[&str]| {
        let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c.args(args)
            .current_dir(&krate)
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS");
        c
    };
    let tests = run(&mut cargo(&["test"]), "cargo test of the new plugin");
    assert!(tests.contains("3 passed"), "{tests}");
    run(
        &mut cargo(&["build", "--release", "--target", "wasm32-wasip2"]),
        "cargo build --target wasm32-wasip2 of the new plugin",
    );
    let wasm = target.join("wasm32-wasip2/release/order_view.wasm");
    let manifest = krate.join("plugin.toml");

    let check = run(
        Command::new(HOST_BIN)
            .args(["plugin", "check"])
            .arg(&wasm)
            .arg("--manifest")
            .arg(&manifest),
        "ledgerhost plugin check",
    );
    assert!(check.contains("world     consumer"), "{check}");
    assert!(check.contains("key-prefixes: order-view/"), "{check}");

    // A component importing a capability its manifest does not grant: refused, with the fix.
    let sneaky = Command::new(HOST_BIN)
        .args(["plugin", "check"])
        .arg(ledgerhost_tests::harness::plugin_wasm("sneaky"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&sneaky.stderr);
    assert_eq!(sneaky.status.code(), Some(1), "{err}");
    assert!(err.contains("grants.buckets"), "{err}");

    let events = scratch.path().join("events.json");
    std::fs::write(
        &events,
        "{\"table\":\"orders\",\"key\":[\"id\"],\"commit_ts\":100,\"row\":{\"id\":1,\"amount\":5}}\n\
         {\"table\":\"orders\",\"key\":[\"id\"],\"commit_ts\":200,\"row\":{\"id\":2,\"amount\":7}}\n\
         {\"table\":\"orders\",\"key\":[\"id\"],\"commit_ts\":300,\"deleted\":true,\"row\":{\"id\":2,\"amount\":7}}\n",
    )
    .unwrap();
    let report = run(
        Command::new(HOST_BIN)
            .args(["plugin", "test"])
            .arg(&wasm)
            .arg("--manifest")
            .arg(&manifest)
            .arg("--events")
            .arg(&events)
            .arg("--json"),
        "ledgerhost plugin test",
    );
    let report: serde_json::Value = serde_json::from_str(&report).expect("JSON report");
    assert_eq!(report["counts"]["ack"], 3, "{report:#}");
    let d: Vec<&str> = report["dispositions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["event"].as_str().unwrap())
        .collect();
    assert_eq!(d, ["orders/1/100", "orders/2/200", "orders/2/300"]);
    let kv: Vec<&String> = report["wrote"]["keyvalue"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(kv, ["order-view/1"], "row 2 was deleted: {report:#}");

    // Deploy into a running host's watched directory: manifest first, component renamed in.
    let ws = Workspace::new();
    ws.sql(ORDERS);
    let config = ws.write_config(TABLES);
    let host = Running::start(&config, &ws.path().join("host.log"));
    host.wait_ready().await;
    let plugins = ws.path().join("plugins");
    std::fs::copy(&manifest, plugins.join("order-view.toml")).unwrap();
    std::fs::copy(&wasm, plugins.join("order-view.tmp")).unwrap();
    std::fs::rename(
        plugins.join("order-view.tmp"),
        plugins.join("order-view.wasm"),
    )
    .unwrap();
    let served = eventually(Duration::from_secs(60), || async {
        host.get("/status").is_some_and(|(_, s)| {
            let s: serde_json::Value = serde_json::from_str(&s).unwrap_or_default();
            s["plugins"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["name"] == "order-view" && p["state"] == "serving")
        })
    })
    .await;
    assert!(served, "plugin not served:\n{}", host.log_text());
    insert_orders(&ws.db(), 1, 20);
    let viewed = eventually(Duration::from_secs(60), || {
        let ws = &ws;
        async move { ws.kv_keys("order-view/").await.len() == 20 }
    })
    .await;
    assert!(
        viewed,
        "the deployed plugin did not build its view:\n{}",
        host.log_text()
    );
    let m = host.metrics();
    assert_eq!(
        value(
            &m,
            "ledgerhost_plugin_acked_total",
            ("plugin", "order-view")
        ),
        Some(20.0)
    );
}

fn counter_named(name: &str) -> String {
    counter_manifest(64).replace("name = \"counter\"", &format!("name = \"{name}\""))
}

fn plugin_counter(m: &[Sample], metric: &str, plugin: &str) -> f64 {
    value(m, metric, ("plugin", plugin)).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_redelivers_to_one_plugin_or_a_new_topic_and_backfill_republishes() {
    let ws = Workspace::new();
    ws.sql(ORDERS);
    ws.install_plugin("counter", "counter", &counter_named("counter"));
    ws.install_plugin("counter", "bystander", &counter_named("bystander"));
    let config = ws.write_config(TABLES);
    let host = Running::start(&config, &ws.path().join("host.log"));
    host.wait_ready().await;
    let events_in = "ledgerhost_plugin_events_in_total";
    let both_at = |n: f64| {
        let host = &host;
        async move {
            let m = host.metrics();
            plugin_counter(&m, events_in, "counter") == n
                && plugin_counter(&m, events_in, "bystander") == n
        }
    };
    // Two polls apart, so the two transactions get distinct commit times.
    insert_orders(&ws.db(), 1, 50);
    assert!(
        eventually(Duration::from_secs(60), || both_at(50.0)).await,
        "{}",
        host.log_text()
    );
    insert_orders(&ws.db(), 51, 100);
    assert!(
        eventually(Duration::from_secs(60), || both_at(100.0)).await,
        "{}",
        host.log_text()
    );
    let cli = |args: &[&str]| {
        let out = Command::new(HOST_BIN)
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // To one plugin: only it handles the range again; the other acks the copies unseen.
    let (ok, out, err) = cli(&["replay", "--table", "orders", "--plugin", "counter"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("replayed 100 messages"), "{out}");
    assert!(err.contains("100%"), "progress bar: {err}");
    let settled = eventually(Duration::from_secs(60), || async {
        let m = host.metrics();
        plugin_counter(&m, events_in, "counter") == 200.0
            && plugin_counter(&m, "ledgerhost_plugin_filtered_total", "bystander") == 100.0
    })
    .await;
    assert!(settled, "{}", host.log_text());
    assert_eq!(
        plugin_counter(&host.metrics(), events_in, "bystander"),
        100.0
    );

    // A range onto a new topic: the second transaction's rows only, named on stdout.
    let second_ts: i64 = rusqlite::Connection::open(ws.db())
        .unwrap()
        .query_row("SELECT commit_ts FROM orders WHERE id = 51", [], |r| {
            r.get(0)
        })
        .unwrap();
    let from = second_ts.to_string();
    let (ok, out, err) = cli(&[
        "replay",
        "--table",
        "orders",
        "--from",
        &from,
        "--topic",
        "orders-replay-1",
    ]);
    assert!(ok, "{out}{err}");
    assert_eq!(out.trim(), "orders-replay-1");
    let ledger = ledgerhost_ledger::embedded::EmbeddedLedger::open(
        &ws.data_dir().join("ledger"),
        ledgerhost_ledger::embedded::EmbeddedOptions::default(),
    )
    .unwrap();
    use ledgerhost_core::ledger::Ledger as _;
    let copies = ledger
        .read_retained("orders-replay-1", 0, 1000)
        .await
        .unwrap();
    let ids: Vec<i64> = copies
        .iter()
        .map(|r| {
            ledgerhost_tests::harness::event_key(&r.message)
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(
        ids,
        (51..=100).collect::<Vec<_>>(),
        "commit order, range only"
    );
    let (ok, _, err) = cli(&["replay", "--table", "orders", "--topic", "orders-replay-1"]);
    assert!(!ok && err.contains("already holds messages"), "{err}");
    let (ok, _, err) = cli(&["replay", "--table", "orders", "--plugin", "nope"]);
    assert!(!ok && err.contains("nope.toml"), "{err}");

    // Backfill from the source: every plugin sees every row again.
    let (ok, out, err) = cli(&["backfill", "--table", "orders"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("backfilled 100 rows of orders onto ledger-orders"),
        "{out}"
    );
    let seen = eventually(Duration::from_secs(60), || async {
        let m = host.metrics();
        plugin_counter(&m, events_in, "counter") == 300.0
            && plugin_counter(&m, events_in, "bystander") == 200.0
    })
    .await;
    assert!(seen, "{}", host.log_text());
    // Same event ids: the idempotent sink holds one entry per row version.
    assert_eq!(ws.kv_keys("count/").await.len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_remote_backends() {
    let mut redis = ledgerhost_tests::harness::redis::RedisServer::start();
    let ws = Workspace::new();
    ws.sql(ORDERS);
    let config = ws.write_config(&format!(
        "{TABLES}\n[keyvalue]\nkind = \"redis\"\nurl = \"{}\"\n",
        redis.url()
    ));
    let host = Running::start(&config, &ws.path().join("host.log"));
    host.wait_ready().await;

    // Redis goes away: the host is alive but no longer ready, and says which backend.
    redis.stop();
    let unready = eventually(Duration::from_secs(30), || async {
        matches!(host.get("/readyz"), Some((503, body)) if body.contains("Redis"))
    })
    .await;
    assert!(
        unready,
        "readyz did not report Redis down: {:?}",
        host.get("/readyz")
    );
    assert_eq!(host.get("/livez").map(|r| r.0), Some(200));

    // Back again: ready again, without a restart of the host.
    redis.restart();
    host.wait_ready().await;
}

/// Checks one line of `--log-json` output: a JSON object with Cloud Logging's keys.
fn cloud_logging_line(line: &str) -> serde_json::Map<String, serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("not a JSON object: {line}"))
        .clone();
    let severity = obj["severity"].as_str().unwrap_or_default();
    assert!(
        ["DEBUG", "INFO", "WARNING", "ERROR"].contains(&severity),
        "severity: {line}"
    );
    assert!(obj["message"].is_string(), "message: {line}");
    let time = obj["time"].as_str().unwrap_or_default();
    assert!(
        time.len() >= 20 && &time[4..5] == "-" && &time[10..11] == "T" && time.ends_with('Z'),
        "RFC 3339 time: {line}"
    );
    assert!(
        obj["logging.googleapis.com/sourceLocation"]["file"].is_string(),
        "source location: {line}"
    );
    obj
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_structured_lines_cloud_logging_reads() {
    let ws = Workspace::new();
    ws.sql(ORDERS);
    let config = ws.write_config(TABLES);
    let mut host = Running::start_with(
        &config,
        &ws.path().join("host.log"),
        &[("LEDGERHOST_LOG_JSON", "1")],
    );
    host.wait_ready().await;
    let status = host
        .group
        .signal_and_wait("TERM", Duration::from_secs(30))
        .expect("the host exits on SIGTERM");
    assert!(status.success(), "{}", host.log_text());
    let text = host.log_text();
    let lines: Vec<_> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(cloud_logging_line)
        .collect();
    assert!(lines.len() >= 3, "{text}");
    assert!(
        lines
            .iter()
            .any(|l| l["severity"] == "INFO" && l["message"] == "drained; bye"),
        "{text}"
    );
    // Fields are keys of their own (the poller's table, here).
    assert!(
        lines
            .iter()
            .any(|l| l.get("table").is_some_and(|t| t == "orders")),
        "{text}"
    );

    // A refused config is one ERROR line naming the key, not free text.
    let bad = ws.write_config("[[tables]]\nname = \"orders\"\ninterval-ms = 0\n");
    let err = run_host_expecting_failure(&bad, &[("LEDGERHOST_LOG_JSON", "1")]);
    let lines: Vec<_> = err
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(cloud_logging_line)
        .collect();
    assert!(
        lines.iter().any(|l| l["severity"] == "ERROR"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.contains("tables[0].interval-ms"))),
        "{err}"
    );
}

/// `ledgerhost demo` in `dir` at 50 orders a second for `seconds`, its output piped.
fn start_demo(dir: &Path, seconds: u64) -> std::process::Child {
    Command::new(HOST_BIN)
        .arg("demo")
        .arg("--dir")
        .arg(dir.join("demo"))
        .arg("--plugins")
        .arg(ledgerhost_tests::harness::plugin_dir())
        .args(["--rate", "50", "--seconds", &seconds.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the demo")
}

/// `ledgerhost demo` says where its status page is (its admin port is a free one picked at
/// start), and the page and `/status` answer there while it runs; it then stops cleanly.
#[test]
fn the_demo_prints_its_status_page_address_and_serves_the_page_there() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut demo = start_demo(dir.path(), 8);
    // Its output read to the end on a thread of its own (a demo whose stdout closed would
    // fail to print), each line handed over.
    let stdout = std::io::BufReader::new(demo.stdout.take().expect("stdout"));
    let (lines, output) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut seen = Vec::new();
    let mut address = None;
    // Ends at the line, at the demo's exit (the channel closes) or after a minute.
    while let Ok(line) = output.recv_timeout(Duration::from_secs(60)) {
        if let Some(rest) = line.strip_prefix(ledgerhost::demo::STATUS_PAGE_LINE) {
            let url = rest.split_whitespace().next().unwrap_or_default();
            address = url
                .strip_prefix("http://")
                .and_then(|a| a.strip_suffix('/'))
                .map(str::to_string);
            break;
        }
        seen.push(line);
    }
    let address = address.unwrap_or_else(|| {
        let _ = demo.kill();
        panic!("the demo printed no status page address: {seen:#?}")
    });
    let (code, page) =
        ledgerhost::admin_client::get_blocking(&address, "/").expect("the status page answers");
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("<title>ledgerhost status</title>"), "{page}");
    let (code, status) = ledgerhost::admin_client::get_blocking(&address, "/status").unwrap();
    assert_eq!(code, 200, "{status}");
    let status: ledgerhost::status::HostStatus =
        serde_json::from_str(&status).expect("status JSON");
    assert!(
        status.tables.iter().any(|t| t.table == "orders"),
        "{status:?}"
    );
    let exit = demo.wait().expect("the demo ends");
    reader.join().expect("the output reader");
    assert!(exit.success(), "the demo stopped with {exit}");
}

/// `ledgerhost demo | head -2`: once its standard output is closed the demo stops as on
/// Ctrl-C (drains, exits 0), instead of panicking on the next line with its order writer
/// left running and the process never ending.
#[test]
fn the_demo_stops_cleanly_when_its_output_is_closed() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut demo = start_demo(dir.path(), 600);
    let mut stdout = std::io::BufReader::new(demo.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("the demo's first line");
    assert!(first.starts_with("ledgerhost demo in "), "{first}");
    drop(stdout);
    // Not a speed bound: the demo prints a line a second, and the drain takes at most its
    // 5 s timeout; a demo that ignored the closed output would run its 600 s.
    let waited = Instant::now();
    let exit = loop {
        if let Some(exit) = demo.try_wait().expect("the demo's state") {
            break exit;
        }
        if waited.elapsed() > Duration::from_secs(120) {
            let _ = demo.kill();
            panic!("the demo kept running after its standard output was closed");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(exit.success(), "the demo stopped with {exit}");
}
