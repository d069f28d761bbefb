//! The operator's view of a running host, through the real binary: the live status page at
//! `/` loaded in headless Chromium under load, and the dead-letter tools (`dead-letter list`,
//! hot-swap fix, `dead-letter redrive`) on the embedded ledger.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ledgerhost::status::{HostStatus, PluginStatus};
use ledgerhost_tests::harness::host::{HostProcess, Workspace};
use ledgerhost_tests::harness::{eventually, free_port, plugin_dir, workspace_root};

const HOST_BIN: &str = env!("CARGO_BIN_EXE_ledgerhost-under-test");

const ORDERS: &str = "CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    client_id TEXT NOT NULL,
    amount INTEGER NOT NULL,
    poison INTEGER NOT NULL DEFAULT 0,
    commit_ts INTEGER
);
CREATE TABLE payments (
    id INTEGER PRIMARY KEY,
    amount INTEGER NOT NULL,
    commit_ts INTEGER
);";

const TABLES: &str = "[[tables]]\nname = \"orders\"\ninterval-ms = 50\n\n\
                      [[tables]]\nname = \"payments\"\ninterval-ms = 50\n";

/// A consumer manifest for `name` on `table`, with the counter's grant (so the counter's
/// component can later be swapped in under the same manifest) and a small attempt budget.
fn manifest(name: &str, table: &str) -> String {
    format!(
        "name = \"{name}\"\nworld = \"consumer\"\n[subscription]\ntable = \"{table}\"\n\
         batch-size = 20\nmax-wait-ms = 20\nmax-attempts = 2\nbackoff-initial-ms = 50\n\
         backoff-max-ms = 100\n[limits]\nmemory-mb = 32\ndeadline-ms = 2000\n\
         [grants]\nkey-prefixes = [\"count/\", \"seen/\"]\n"
    )
}

/// The host as a child process on a free admin port.
struct Running {
    process: HostProcess,
    admin: String,
}

impl Running {
    fn start(ws: &Workspace, config: &Path) -> Running {
        let admin = format!("127.0.0.1:{}", free_port());
        let process = HostProcess::start_with_env(
            Path::new(HOST_BIN),
            config,
            &ws.path().join("host.log"),
            &[("LEDGERHOST__ADMIN__LISTEN".into(), admin.clone())],
        );
        Running { process, admin }
    }

    fn status(&self) -> Option<HostStatus> {
        let (code, body) = ledgerhost::admin_client::get_blocking(&self.admin, "/status").ok()?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    }

    fn plugin(&self, name: &str) -> Option<PluginStatus> {
        self.status()?.plugins.into_iter().find(|p| p.name == name)
    }

    async fn until(&self, what: &str, check: impl Fn(&HostStatus) -> bool) {
        let ok = eventually(Duration::from_secs(120), || async {
            self.status().is_some_and(|s| check(&s))
        })
        .await;
        assert!(
            ok,
            "{what}; last status: {:?}\n{}",
            self.status(),
            self.process.log_text()
        );
    }
}

fn insert_orders(ws: &Workspace, from: i64, to: i64, poison: Option<i64>) {
    let rows: Vec<String> = (from..=to)
        .map(|i| {
            let p = i64::from(Some(i) == poison);
            format!("({i}, 'c{}', {}, {p})", i % 7, i * 10)
        })
        .collect();
    ws.sql(&format!(
        "INSERT INTO orders (id, client_id, amount, poison) VALUES {};",
        rows.join(", ")
    ));
}

fn cli(config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(HOST_BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run ledgerhost");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Replaces a plugin's component in the watched directory atomically (a hot swap).
fn swap_component(ws: &Workspace, name: &str, component: &str) {
    let dir = ws.path().join("plugins");
    let tmp = dir.join(format!("{name}.wasm.tmp"));
    std::fs::copy(plugin_dir().join(format!("{component}.wasm")), &tmp).expect("copy");
    std::fs::rename(&tmp, dir.join(format!("{name}.wasm"))).expect("rename");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_listed_then_redriven_to_the_fixed_plugin_which_acks_it() {
    let ws = Workspace::new();
    ws.sql(ORDERS);
    // `fixme` starts as the trapper (traps on the poison event), the tagger looks on.
    ws.install_plugin("trapper", "fixme", &manifest("fixme", "orders"));
    ws.install_plugin("tagger", "tagger", &manifest("tagger", "orders"));
    let config = ws.write_config(TABLES);
    let host = Running::start(&ws, &config);
    insert_orders(&ws, 1, 10, Some(5));
    let poison_prefix = "orders/5/";
    host.until("the poison event dead-lettered, the rest acked", |s| {
        let p = s.plugins.iter().find(|p| p.name == "fixme");
        p.is_some_and(|p| p.dead_lettered == 1 && p.acked == 10)
            && s.dead_letters
                .iter()
                .any(|d| d.event_id.starts_with(poison_prefix))
    })
    .await;
    let status = host.status().unwrap();
    let recent = &status.dead_letters[0];
    assert_eq!((recent.plugin.as_str(), recent.attempts), ("fixme", 2));
    assert!(recent.reason.contains("poison event"), "{recent:?}");

    // `dead-letter list`: the event, its reason, the attempts, when.
    let (ok, out, err) = cli(&config, &["dead-letter", "list", "fixme"]);
    assert!(ok, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "one dead letter: {out}");
    let event_id = lines[0].split_whitespace().next().unwrap().to_string();
    assert!(event_id.starts_with(poison_prefix), "{out}");
    assert!(
        lines[0].contains("attempts 2")
            && lines[0].contains("gave up after 2 attempts")
            && lines[0].contains("poison event"),
        "{out}"
    );
    let year =
        &ledgerhost_runtime::manifest::calendar::timestamp_text(ledgerhost::metrics::now_micros())
            [..4];
    assert!(lines[0].contains(year), "when: {out}");
    let (ok, out, _) = cli(&config, &["dead-letter", "list", "fixme", "--json"]);
    assert!(ok);
    let json: serde_json::Value = serde_json::from_str(out.trim()).expect("a JSON line");
    assert_eq!(json["attempts"], 2);
    assert!(json["dead_lettered_at_micros"].as_i64().unwrap() >= recent.at_micros - 5_000_000);
    let (ok, _, err) = cli(&config, &["dead-letter", "list", "nope"]);
    assert!(
        !ok && err.contains("nope") && err.contains("plugin name"),
        "{err}"
    );

    // Redriving before the fix dead-letters it again (the plugin still traps).
    let (ok, _, err) = cli(
        &config,
        &["dead-letter", "redrive", "fixme", "--event", "x/1/1"],
    );
    assert!(
        !ok && err.contains("no dead letter of event x/1/1"),
        "{err}"
    );

    // The fix: a hot swap to a component that acks everything (the counter).
    let old = host.plugin("fixme").unwrap().version;
    swap_component(&ws, "fixme", "counter");
    host.until("the fixed version serving", |s| {
        s.plugins
            .iter()
            .any(|p| p.name == "fixme" && p.version.is_some() && p.version != old)
    })
    .await;
    let tagger_in = host.plugin("tagger").unwrap().events_in;

    let (ok, out, err) = cli(
        &config,
        &["dead-letter", "redrive", "fixme", "--event", &event_id],
    );
    assert!(ok, "{out}{err}");
    assert_eq!(out.trim(), format!("redriven {event_id}"));
    assert!(
        err.contains("redrove 1 dead letters to plugin fixme"),
        "{err}"
    );
    host.until("the redriven event acked by the fixed plugin", |s| {
        s.plugins
            .iter()
            .any(|p| p.name == "fixme" && p.acked == 11 && p.dead_lettered == 1)
    })
    .await;
    assert_eq!(
        ws.kv_keys("count/").await,
        BTreeSet::from([format!("count/{event_id}")]),
        "the fixed plugin handled exactly the redriven event"
    );
    // The tagger saw the copy on the topic and settled it without handling it.
    assert_eq!(host.plugin("tagger").unwrap().events_in, tagger_in);
    let (ok, out, err) = cli(&config, &["dead-letter", "list", "fixme"]);
    assert!(
        ok && out.is_empty() && err.contains("0 dead letters"),
        "{out}{err}"
    );
}

/// Debian's headless Chromium, or a failure that says how to install it.
fn chromium() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "`chromium` is not on PATH: the status page test loads the page in headless \
             Chromium. Install it with `apt-get install -y chromium` (scripts/install-test-deps \
             does)."
        )
    })
}

fn run_chromium(profile: &Path, args: &[&str], url: &str) -> (String, String) {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=8000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("run chromium");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "chromium failed: {stderr}");
    (stdout, stderr)
}

/// The opening tags `<tag …>` in `dom`.
fn tags<'a>(dom: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag} ");
    dom.match_indices(&open)
        .filter_map(|(i, _)| dom[i..].find('>').map(|end| &dom[i..i + end]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_every_table_and_plugin_with_a_plot_in_headless_chromium() {
    let browser = chromium();
    let ws = Workspace::new();
    ws.sql(ORDERS);
    let plugins = ["counter", "tagger", "fixme"];
    ws.install_plugin("counter", "counter", &manifest("counter", "orders"));
    ws.install_plugin("tagger", "tagger", &manifest("tagger", "payments"));
    ws.install_plugin("trapper", "fixme", &manifest("fixme", "orders"));
    let config = ws.write_config(TABLES);
    let host = Running::start(&ws, &config);
    insert_orders(&ws, 1, 20, Some(3));
    host.until("a dead letter to show", |s| !s.dead_letters.is_empty())
        .await;
    // Load: a writer keeps inserting while the page is read.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, db) = (stop.clone(), ws.db());
        std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(db).unwrap();
            conn.busy_timeout(Duration::from_secs(10)).unwrap();
            let mut i = 1000;
            while !stop.load(Ordering::Relaxed) {
                conn.execute_batch(&format!(
                    "INSERT INTO orders (id, client_id, amount) VALUES ({i}, 'w', 1);
                     INSERT INTO payments (id, amount) VALUES ({i}, 2);"
                ))
                .unwrap();
                i += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            i - 1000
        })
    };
    host.until("both tables polled under load", |s| {
        s.tables.len() == 2 && s.tables.iter().all(|t| t.rows_polled > 0)
    })
    .await;
    let url = format!("http://{}/", host.admin);
    let profile = tempfile::tempdir().unwrap();
    let (dom, stderr) = run_chromium(profile.path(), &["--dump-dom"], &url);
    let shot = workspace_root().join("target/test-artifacts/status-page.png");
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&shot);
    run_chromium(
        profile.path(),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,1800",
        ],
        &url,
    );
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(written > 0);

    assert!(
        dom.contains("id=\"banner\" class=\"ready\""),
        "page rendered: {dom}\n{stderr}"
    );
    let rows = tags(&dom, "tr");
    let svgs = tags(&dom, "svg");
    for table in ["orders", "payments"] {
        let attr = format!("data-table=\"{table}\"");
        assert!(
            rows.iter().any(|r| r.contains(&attr)),
            "row of table {table}: {dom}"
        );
        assert!(
            svgs.iter()
                .any(|s| s.contains("class=\"plot\"") && s.contains(&attr)),
            "plot of table {table}: {dom}"
        );
    }
    for plugin in plugins {
        let attr = format!("data-plugin=\"{plugin}\"");
        assert!(
            rows.iter().any(|r| r.contains(&attr)),
            "row of plugin {plugin}: {dom}"
        );
        assert!(
            svgs.iter()
                .any(|s| s.contains("class=\"plot\"") && s.contains(&attr)),
            "plot of plugin {plugin}: {dom}"
        );
    }
    let plots = svgs.iter().filter(|s| s.contains("class=\"plot\"")).count();
    assert_eq!(plots, 2 + plugins.len(), "one plot per table and plugin");
    assert!(
        dom.contains("<polyline class=\"rate\""),
        "plot lines: {dom}"
    );
    assert!(
        rows.iter().any(|r| r.contains("data-event=\"orders/3/")),
        "the dead letter listed: {dom}"
    );
    assert!(dom.contains("poison event orders/3/"), "its reason: {dom}");

    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width, height), (1280, 1800));
    // A blank page of that size compresses to a few kilobytes; text, tables and plots
    // make it far larger.
    assert!(png.len() > 30_000, "screenshot of {} bytes", png.len());
    drop(browser);
}
