//! Capture by Spanner change stream against the official emulator: the source port's
//! reader (partitions, order, resume, retention) and its refusals.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ledgerhost_core::change::{ChangeCapture, StreamStart, virtual_columns};
use ledgerhost_core::source::Source as _;
use ledgerhost_core::source::{Row, TableSpec};
use ledgerhost_core::{ColumnType, TableSchema, Value};
use ledgerhost_source::spanner::{SpannerConfig, SpannerSource};
use ledgerhost_tests::harness::google::{GoogleEmulators, SpannerEmulator, spanner_write};
use ledgerhost_tests::harness::host::{HostProcess, Workspace, recorder_manifest};
use ledgerhost_tests::harness::{eventually, free_port};

pub(super) const ACCOUNTS: &str = "CREATE TABLE accounts (
    id INT64 NOT NULL, owner STRING(MAX), balance INT64 NOT NULL, tags ARRAY<INT64>
) PRIMARY KEY (id)";
pub(super) const STREAM: &str =
    "CREATE CHANGE STREAM accounts_changes FOR accounts OPTIONS (value_capture_type = 'NEW_ROW')";
/// A stream with Spanner's default value capture type (changed columns only).
const PARTIAL: &str = "CREATE CHANGE STREAM partial_changes FOR accounts";

fn spec(name: &str) -> TableSpec {
    TableSpec {
        name: name.into(),
        ..TableSpec::default()
    }
}

/// One committed version of a key: `None` for a hard delete.
type Version = (i64, i64, Option<i64>);

/// The (commit ts, id, balance or `None` for a tombstone) of a released row.
fn version(row: &Row) -> Version {
    let Value::Int64(id) = row.values[0] else {
        panic!("id is not an INT64: {row:?}")
    };
    let deleted = row.values[5] == Value::Bool(true);
    let balance = match &row.values[2] {
        Value::Int64(b) if !deleted => Some(*b),
        Value::Null if deleted => None,
        other => panic!("balance {other:?} on a row deleted={deleted}"),
    };
    assert_eq!(
        row.values[4],
        Value::Timestamp(row.commit_ts),
        "the commit timestamp travels in the host's column"
    );
    (row.commit_ts, id, balance)
}

#[tokio::test]
async fn spanner_change_stream_releases_every_version_and_hard_delete_in_commit_order() {
    // Partition tokens live 2–4 s here: the writes below cross several generations.
    let emu = SpannerEmulator::start_churning(2).await;
    let db = emu.create_database(&[ACCOUNTS, STREAM, PARTIAL]).await;
    let source = SpannerSource::connect(db.clone()).await.unwrap();
    let capture: &dyn ChangeCapture = &source;

    let e = capture
        .prepare_stream(&spec("accounts"), "partial_changes")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "ALTER CHANGE STREAM partial_changes SET OPTIONS (value_capture_type = 'NEW_ROW')"
        ),
        "{e}"
    );
    let e = capture
        .prepare_stream(&spec("accounts"), "nope")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("CREATE CHANGE STREAM nope FOR accounts"), "{e}");

    let schema = capture
        .prepare_stream(&spec("accounts"), "accounts_changes")
        .await
        .unwrap();
    let names: Vec<&str> = schema.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "id",
            "owner",
            "balance",
            "tags",
            virtual_columns::COMMIT_TS,
            virtual_columns::DELETED
        ]
    );

    // Writes: each round inserts three keys, updates key 1 twice (two versions within one
    // poll interval of the seed's poller) and hard-deletes one key of the round before.
    let mut expected: Vec<Version> = Vec::new();
    let first = spanner_write(
        &db,
        &[
            "INSERT INTO accounts (id, owner, balance, tags) VALUES (1, 'one', 0, [1, NULL])"
                .into(),
        ],
    )
    .await;
    expected.push((first, 1, Some(0)));
    let began = Instant::now();
    let mut round = 1;
    while began.elapsed() < Duration::from_secs(9) {
        let ids = [round * 10, round * 10 + 1, round * 10 + 2];
        let ts = spanner_write(
            &db,
            &[format!(
                "INSERT INTO accounts (id, owner, balance) VALUES ({}, 'a', {round}), ({}, NULL, \
                 {round}), ({}, 'c', {round})",
                ids[0], ids[1], ids[2]
            )],
        )
        .await;
        expected.extend(ids.iter().map(|id| (ts, *id, Some(round))));
        for step in 0..2 {
            let balance = round * 100 + step;
            let ts = spanner_write(
                &db,
                &[format!(
                    "UPDATE accounts SET balance = {balance} WHERE id = 1"
                )],
            )
            .await;
            expected.push((ts, 1, Some(balance)));
        }
        if round > 1 {
            let gone = (round - 1) * 10 + 1;
            let ts = spanner_write(&db, &[format!("DELETE FROM accounts WHERE id = {gone}")]).await;
            expected.push((ts, gone, None));
        }
        round += 1;
    }

    // Read it all, resuming once halfway from the progress of the last page taken.
    let mut reader = capture
        .read_stream(&schema, "accounts_changes", StreamStart::At(first))
        .await
        .unwrap();
    let mut got: Vec<Version> = Vec::new();
    let mut tokens = BTreeSet::new();
    let mut resumed = false;
    let deadline = Instant::now() + Duration::from_secs(90);
    while got.len() < expected.len() && Instant::now() < deadline {
        let page = reader
            .next_page(7, Duration::from_millis(500))
            .await
            .unwrap();
        tokens.extend(reader.partitions().into_iter().map(|(t, _)| t));
        got.extend(page.rows.iter().map(version));
        if !resumed && got.len() >= expected.len() / 2 {
            resumed = true;
            drop(reader);
            reader = capture
                .read_stream(
                    &schema,
                    "accounts_changes",
                    StreamStart::Progress(page.progress.clone()),
                )
                .await
                .unwrap();
        }
    }
    // A few more pages: nothing may come twice.
    for _ in 0..3 {
        let page = reader
            .next_page(100, Duration::from_millis(500))
            .await
            .unwrap();
        got.extend(page.rows.iter().map(version));
    }
    let generations = tokens.len();
    println!(
        "{} versions over {round} rounds, read across {generations} partitions",
        expected.len()
    );
    assert!(
        generations >= 4,
        "the read crossed only {generations} partitions (root children and their descendants)"
    );

    // The emulator misses a commit that lands exactly on the end of one of its 100 ms read
    // slices (about 1 in 100 000 transactions): a missing version is told apart from a loss
    // by the message below (a product loss would also show in the order checks).
    assert!(
        got.windows(2).all(|w| w[0].0 <= w[1].0),
        "released out of commit order: {got:?}"
    );
    let by_key = |versions: &[Version]| {
        let mut m: BTreeMap<i64, Vec<Version>> = BTreeMap::new();
        for v in versions {
            m.entry(v.1).or_default().push(*v);
        }
        m
    };
    assert_eq!(
        by_key(&got),
        by_key(&expected),
        "every key's versions, hard deletes included, once and in commit order (a single \
         missing version at a 100 ms slice end would be the emulator's known miss)"
    );

    // A start the stream no longer holds is refused, naming the repair.
    let mut old = capture
        .read_stream(
            &schema,
            "accounts_changes",
            StreamStart::At(first - 3_600_000_000),
        )
        .await
        .unwrap();
    let e = old
        .next_page(10, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(e.to_string().contains("ledgerhost backfill"), "{e}");
}

pub(super) const HOST_BIN: &str = env!("CARGO_BIN_EXE_ledgerhost-under-test");

const ORDERS: &str = "CREATE TABLE orders (
    id INT64 NOT NULL, amount INT64,
    commit_ts TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp=true)
) PRIMARY KEY (id)";
const ORDERS_INDEX: &str = "CREATE INDEX orders_by_commit_ts ON orders (commit_ts)";

/// The materializer keeping each owner's accounts.
const MATERIALIZER: &str = "name = \"materializer\"\nworld = \"consumer\"\n\
    [subscription]\ntable = \"accounts\"\nbatch-size = 256\nmax-wait-ms = 20\n\
    [limits]\nmemory-mb = 32\ndeadline-ms = 10000\n[grants]\nkey-prefixes = [\"views/\"]\n\
    config = [\"prefix\", \"client-field\", \"clients\"]\n[config]\nprefix = \"views/\"\n\
    client-field = \"owner\"\n";

/// Rows of the 6 000-row transaction (one change stream record of 6 000 mods).
const BIG_TX_ROWS: i64 = 6_000;

/// Each key's recorded commit timestamps, first deliveries only (a redelivery repeats one).
pub(super) async fn recorded(ws: &Workspace, table: &str) -> BTreeMap<i64, Vec<i64>> {
    use ledgerhost_core::capabilities::KeyValue as _;
    let kv = ws.keyvalue();
    let prefix = format!("order/{table}/");
    let mut out = BTreeMap::new();
    for key in kv.list_keys(&prefix).await.unwrap_or_default() {
        let Some(text) = kv.get(&key).await.ok().flatten() else {
            continue;
        };
        let id: i64 = key[prefix.len()..].parse().expect("integer keys");
        let mut seen = Vec::new();
        for ts in String::from_utf8_lossy(&text)
            .split(',')
            .filter(|s| !s.is_empty())
        {
            let ts: i64 = ts.parse().expect("recorder writes integers");
            if !seen.contains(&ts) {
                seen.push(ts);
            }
        }
        out.insert(id, seen);
    }
    out
}

/// The rows of `table` in `db` by id (an INT64 first key column), read by key through the
/// source port: the table's own columns, without the host's.
async fn table_rows(db: &SpannerConfig, table: &TableSchema) -> BTreeMap<i64, Vec<Value>> {
    let source = SpannerSource::connect(db.clone()).await.expect("connect");
    let mut snap = source.snapshot().await.expect("snapshot");
    let mut out = BTreeMap::new();
    let mut after = Vec::new();
    loop {
        let page = snap.key_page(table, &after, 1000).await.expect("key page");
        let Some(last) = page.last() else { break };
        after = vec![last.values[0].clone()];
        for row in page {
            let Value::Int64(id) = row.values[0] else {
                panic!("id is INT64")
            };
            let own = row
                .values
                .into_iter()
                .zip(&table.columns)
                .filter(|(_, c)| !virtual_columns::is_virtual(&c.name))
                .map(|(v, _)| v)
                .collect();
            out.insert(id, own);
        }
    }
    out
}

/// The restored database's column names of `accounts`.
async fn column_names(db: &SpannerConfig) -> Vec<String> {
    use google_cloud_spanner::statement::Statement;
    let source = SpannerSource::connect(db.clone()).await.expect("connect");
    let mut rs = source
        .client()
        .single_use()
        .build()
        .execute_query(
            Statement::builder(
                "SELECT COLUMN_NAME FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_NAME = \
                 'accounts' ORDER BY ORDINAL_POSITION",
            )
            .build(),
        )
        .await
        .expect("query");
    let mut out = Vec::new();
    while let Some(row) = rs.next().await {
        out.push(row.expect("row").get(0).expect("name"));
    }
    out
}

/// Runs `ledgerhost restore` of `accounts` into `db` (a run over an archive still being
/// written may fail; the caller retries).
fn restore_into(config: &std::path::Path, db: &SpannerConfig) {
    let out = std::process::Command::new(HOST_BIN)
        .args(["restore", "--table", "accounts", "--config"])
        .arg(config)
        .arg("--into")
        .arg(format!(
            "spanner:projects/{}/instances/{}/databases/{}",
            db.project, db.instance, db.database
        ))
        .arg("--spanner-endpoint")
        .arg(db.endpoint.as_deref().expect("harness sets the endpoint"))
        .arg("--spanner-admin-endpoint")
        .arg(db.admin_endpoint.as_deref().expect("harness sets it"))
        .output()
        .expect("run ledgerhost restore");
    assert!(
        out.status.success(),
        "restore failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One host captures `accounts` (no commit-timestamp column) by change stream and `orders` by
/// commit timestamp, through Pub/Sub behind the strict front; it is SIGKILLed during the load
/// and restarted. Every committed version of every account (several within one poll
/// interval, hard deletes as tombstones) reaches the plugin once in commit order; every order
/// too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_captures_one_table_by_change_stream_and_another_by_commit_timestamp_across_a_sigkill()
 {
    let emu = GoogleEmulators::start_churning(3).await;
    let db = emu
        .create_database(&[ACCOUNTS, STREAM, ORDERS, ORDERS_INDEX])
        .await;
    let ws = Workspace::new();
    let admin = format!("127.0.0.1:{}", free_port());
    // From before the first write (the default, `now`, is the poller's first read).
    let start = ledgerhost_core::clock::now_micros();
    let config = format!(
        "{}[[tables]]\nname = \"accounts\"\ncapture = \"change-stream\"\n\
         change-stream = \"accounts_changes\"\ninterval-ms = 100\nstart = \"{start}\"\n\n\
         [[tables]]\nname = \"orders\"\ninterval-ms = 100\n",
        emu.host_config(
            &db,
            &[
                "lease-ttl-ms = 2000".into(),
                "drain-timeout-ms = 10000".into()
            ],
            "cs-",
            &admin
        )
    );
    let config_path = ws.path().join("ledgerhost.toml");
    std::fs::write(&config_path, config).expect("write config");
    ws.install_plugin(
        "recorder",
        "rec-accounts",
        &recorder_manifest("rec-accounts", "accounts"),
    );
    ws.install_plugin(
        "recorder",
        "rec-orders",
        &recorder_manifest("rec-orders", "orders"),
    );
    ws.install_plugin("materializer", "materializer", MATERIALIZER);
    ws.install_plugin(
        "archiver",
        "archiver",
        &std::fs::read_to_string(ledgerhost_tests::harness::plugin_manifest("archiver"))
            .expect("the archiver's manifest"),
    );
    let log = ws.path().join("host.log");
    let env = emu.spanner_env();
    let ready = |n: usize| {
        let log = log.clone();
        async move {
            eventually(Duration::from_secs(180), || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                async move { text.matches("ledgerhost ready").count() >= n }
            })
            .await
        }
    };
    let mut host = HostProcess::start_with_env(HOST_BIN.as_ref(), &config_path, &log, &env);
    assert!(ready(1).await, "host did not start:\n{}", host.log_text());

    let mut accounts: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let mut orders: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let mut deleted = BTreeSet::new();
    let began = Instant::now();
    let mut round = 0i64;
    let mut killed = false;
    while began.elapsed() < Duration::from_secs(12) {
        round += 1;
        let ts = spanner_write(
            &db,
            &[
                format!(
                    "INSERT INTO accounts (id, owner, balance, tags) VALUES ({}, 'o', {round}, \
                     [{round}, NULL])",
                    round * 10
                ),
                format!("INSERT INTO orders (id, amount, commit_ts) VALUES ({round}, {round}, PENDING_COMMIT_TIMESTAMP())"),
            ],
        )
        .await;
        accounts.entry(round * 10).or_default().push(ts);
        orders.entry(round).or_default().push(ts);
        // Key 1: three versions well within one poll interval.
        for step in 0..3 {
            let stmt = if round == 1 && step == 0 {
                "INSERT INTO accounts (id, owner, balance) VALUES (1, 'one', 0)".to_string()
            } else {
                format!(
                    "UPDATE accounts SET balance = {} WHERE id = 1",
                    round * 10 + step
                )
            };
            let ts = spanner_write(&db, &[stmt]).await;
            accounts.entry(1).or_default().push(ts);
        }
        if round % 3 == 0 {
            let gone = (round - 1) * 10;
            let ts = spanner_write(&db, &[format!("DELETE FROM accounts WHERE id = {gone}")]).await;
            accounts.entry(gone).or_default().push(ts);
            deleted.insert(gone);
        }
        if !killed && began.elapsed() > Duration::from_secs(5) {
            killed = true;
            host.kill();
            host = HostProcess::start_with_env(HOST_BIN.as_ref(), &config_path, &log, &env);
        }
    }
    assert!(ready(2).await, "host did not restart:\n{}", host.log_text());
    // One transaction of 6 000 rows: one record, released whole.
    let big: Vec<String> = (0..BIG_TX_ROWS)
        .collect::<Vec<_>>()
        .chunks(1_000)
        .map(|ids| {
            let values: Vec<String> = ids
                .iter()
                .map(|i| format!("({}, 'big', {i})", 1_000_000 + i))
                .collect();
            format!(
                "INSERT INTO accounts (id, owner, balance) VALUES {}",
                values.join(", ")
            )
        })
        .collect();
    let ts = spanner_write(&db, &big).await;
    for i in 0..BIG_TX_ROWS {
        accounts.entry(1_000_000 + i).or_default().push(ts);
    }

    // The operator sees the mode, the partitions read here and the watermark's age.
    let shown = eventually(Duration::from_secs(30), || {
        let admin = admin.clone();
        async move {
            let Ok((200, body)) = ledgerhost::admin_client::get(&admin, "/status").await else {
                return false;
            };
            let status: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let tables = status["tables"].as_array().cloned().unwrap_or_default();
            let accounts = tables.iter().find(|t| t["table"] == "accounts");
            let orders = tables.iter().find(|t| t["table"] == "orders");
            accounts.is_some_and(|t| {
                t["change_stream"] == "accounts_changes"
                    && t["partitions"].as_array().is_some_and(|p| !p.is_empty())
                    && t["watermark_micros"].as_i64().unwrap_or(0) > 0
            }) && orders.is_some_and(|t| t.get("change_stream").is_none())
        }
    })
    .await;
    assert!(
        shown,
        "/status does not show the change stream's partitions"
    );
    let (_, metrics) = ledgerhost::admin_client::get(&admin, "/metrics")
        .await
        .expect("GET /metrics");
    assert!(
        metrics.lines().any(|l| l
            .starts_with("ledgerhost_change_stream_partitions{table=\"accounts\"}")
            && !l.ends_with(" 0")),
        "{metrics}"
    );

    let complete = eventually(Duration::from_secs(120), || {
        let (ws, accounts, orders) = (&ws, &accounts, &orders);
        async move {
            recorded(ws, "accounts").await == *accounts && recorded(ws, "orders").await == *orders
        }
    })
    .await;
    let got = recorded(&ws, "accounts").await;
    let missing: Vec<_> = accounts
        .iter()
        .filter(|(k, v)| got.get(k) != Some(v))
        .map(|(k, v)| (k, v, got.get(k)))
        .take(5)
        .collect();
    assert!(
        complete,
        "every account version once, in commit order (first 5 keys that differ, expected then \
         recorded: {missing:?}); orders equal: {}; the emulator misses a commit on the end of a \
         100 ms read slice about once in 100 000 transactions, so one missing version alone \
         would be that\n{}",
        recorded(&ws, "orders").await == orders,
        host.log_text()
    );
    assert!(
        accounts[&1].len() >= 9,
        "key 1 has every version, three per round"
    );
    // A hard delete arrives as a tombstone.
    let rec = ws.kv_keys("rec/accounts/").await;
    for gone in &deleted {
        let ts = accounts[gone].last().expect("a version");
        let key = rec
            .iter()
            .find(|k| {
                k.starts_with(&format!("rec/accounts/{gone}/")) && k.ends_with(&ts.to_string())
            })
            .unwrap_or_else(|| panic!("no event of the delete of {gone} at {ts}"));
        use ledgerhost_core::capabilities::KeyValue as _;
        let kv = ws.keyvalue();
        let text = String::from_utf8(kv.get(key).await.unwrap().unwrap()).unwrap();
        assert!(text.contains("deleted=true"), "{key}: {text}");
    }

    // The materializer's view: every standing account under its owner with its last
    // version, no deleted one.
    let kv = ws.keyvalue();
    let want: BTreeMap<i64, i64> = accounts
        .iter()
        .filter(|(k, _)| !deleted.contains(*k))
        .map(|(k, versions)| (*k, *versions.last().expect("a version")))
        .collect();
    let viewed = |view: &BTreeMap<String, serde_json::Value>| -> BTreeMap<i64, i64> {
        view.values()
            .map(|row| {
                (
                    row["id"].as_i64().expect("id"),
                    row["_commit_ts"].as_i64().expect("_commit_ts"),
                )
            })
            .collect()
    };
    let converged = eventually(Duration::from_secs(60), || {
        let (kv, want) = (&kv, &want);
        async move {
            ledgerhost_tests::harness::views::materialized_rows(kv, "views/")
                .await
                .is_ok_and(|view| viewed(&view) == *want)
        }
    })
    .await;
    let view = ledgerhost_tests::harness::views::materialized_rows(&kv, "views/")
        .await
        .expect("read the view");
    assert!(
        converged,
        "the view holds each standing account's last version and no deleted one ({} rows, \
         {} wanted)",
        view.len(),
        want.len()
    );
    assert!(
        view.keys().any(|k| k.starts_with("views/big/accounts/")),
        "the 6 000-row transaction is viewed under its owner"
    );

    // The archive restored into a new database equals the source: the host's own columns
    // left out, hard-deleted keys absent.
    let accounts_schema = SpannerSource::connect(db.clone())
        .await
        .expect("connect")
        .prepare_stream(&spec("accounts"), "accounts_changes")
        .await
        .expect("the stream's schema");
    let source_rows = table_rows(&db, &accounts_schema).await;
    let restored_db = emu.create_database(&[]).await;
    let restored = eventually(Duration::from_secs(90), || {
        let (config_path, restored_db, source_rows, accounts_schema) =
            (&config_path, &restored_db, &source_rows, &accounts_schema);
        async move {
            restore_into(config_path, restored_db);
            table_rows(restored_db, accounts_schema).await == *source_rows
        }
    })
    .await;
    let got = table_rows(&restored_db, &accounts_schema).await;
    assert!(
        restored,
        "the restored table equals the source ({} rows restored, {} in the source; first \
         differing: {:?})",
        got.len(),
        source_rows.len(),
        source_rows
            .iter()
            .find(|(k, v)| got.get(*k) != Some(*v))
            .map(|(k, v)| (k, v, got.get(k)))
    );
    assert_eq!(
        column_names(&restored_db).await,
        ["id", "owner", "balance", "tags"],
        "the host's columns are not restored"
    );

    // Backfill of a table without commit-timestamp column: every row standing now, as of
    // one read point, after every version the stream delivered; deleted keys have none.
    let out = std::process::Command::new(HOST_BIN)
        .args(["backfill", "--table", "accounts", "--config"])
        .arg(&config_path)
        .envs(env.iter().cloned())
        .output()
        .expect("run ledgerhost backfill");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("rows of accounts onto cs-accounts, as of"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let standing: BTreeSet<i64> = accounts
        .keys()
        .filter(|k| !deleted.contains(*k))
        .copied()
        .collect();
    let backfilled = eventually(Duration::from_secs(60), || {
        let (ws, accounts, standing) = (&ws, &accounts, &standing);
        async move {
            let now = recorded(ws, "accounts").await;
            now.iter().all(|(k, seen)| {
                let versions = &accounts[k];
                match standing.contains(k) {
                    true => {
                        seen.len() == versions.len() + 1
                            && seen[..versions.len()] == versions[..]
                            && seen[versions.len()] > *versions.last().expect("a version")
                    }
                    false => seen == versions,
                }
            })
        }
    })
    .await;
    assert!(
        backfilled,
        "the backfill gave each standing key one event after its versions and none to a \
         deleted key: {:?}",
        recorded(&ws, "accounts")
            .await
            .into_iter()
            .take(3)
            .collect::<Vec<_>>()
    );
    emu.assert_pubsub_clean("change-stream capture");
    drop(host);
}

/// Every Spanner type, without a commit-timestamp column, watched by a `NEW_ROW` stream.
const EVERY_TYPE: &str = "CREATE TABLE every_type (
    id INT64 NOT NULL,
    b BOOL, i INT64, f32 FLOAT32, f64 FLOAT64, num NUMERIC, s STRING(MAX), bys BYTES(MAX),
    d DATE, ts TIMESTAMP, j JSON,
    ab ARRAY<BOOL>, ai ARRAY<INT64>, af32 ARRAY<FLOAT32>, af64 ARRAY<FLOAT64>,
    anum ARRAY<NUMERIC>, astr ARRAY<STRING(MAX)>, abys ARRAY<BYTES(MAX)>, ad ARRAY<DATE>,
    ats ARRAY<TIMESTAMP>, aj ARRAY<JSON>
) PRIMARY KEY (id)";
const EVERY_TYPE_STREAM: &str = "CREATE CHANGE STREAM every_type_changes FOR every_type OPTIONS (value_capture_type = 'NEW_ROW')";

/// Every Spanner type and NULL arrives through a change stream as the poller reads it from
/// the table (`google::spanner_reads_every_type_with_nulls`), and a hard delete as a
/// tombstone carrying the key. Two quirks of the emulator shape the values written (see
/// docs/google.md): a NULL element of an array of BOOL, FLOAT32, FLOAT64, TIMESTAMP, STRING
/// or BYTES in a watched column stops it answering, and a TIMESTAMP in a mod loses its
/// fraction, so those are left out (NULL elements of the other arrays are kept).
#[tokio::test]
async fn spanner_change_stream_reads_every_type_with_nulls_and_hard_deletes() {
    let emu = SpannerEmulator::start().await;
    let db = emu.create_database(&[EVERY_TYPE, EVERY_TYPE_STREAM]).await;
    let source = SpannerSource::connect(db.clone()).await.unwrap();
    let capture: &dyn ChangeCapture = &source;
    let schema = capture
        .prepare_stream(&spec("every_type"), "every_type_changes")
        .await
        .unwrap();
    let start = ledgerhost_core::clock::now_micros();
    let written = spanner_write(
        &db,
        &[
            "INSERT INTO every_type (id, b, i, f32, f64, num, s, bys, d, ts, j, ab, ai, af32, af64, \
             anum, astr, abys, ad, ats, aj) VALUES (1, true, -42, CAST(1.5 AS FLOAT32), \
             2.25, NUMERIC '12.50', 'héllo', b'\\x00\\xff', DATE '2024-02-29', \
             TIMESTAMP '2024-02-29T12:00:00Z', JSON '{\"a\":1}', [true, false], [1, NULL, 3], \
             ARRAY<FLOAT32>[1.5, -0.5], [2.5, 1e300], [NUMERIC '1.25', NULL], ['x', 'y'], \
             [b'\\x01', b''], [DATE '1970-01-02', NULL], [TIMESTAMP '1970-01-01T00:00:01Z'], \
             [JSON '[1]', NULL])"
                .to_string(),
            "INSERT INTO every_type (id) VALUES (2)".to_string(),
        ],
    )
    .await;
    let deleted = spanner_write(&db, &["DELETE FROM every_type WHERE id = 2".to_string()]).await;

    let mut reader = capture
        .read_stream(&schema, "every_type_changes", StreamStart::At(start))
        .await
        .unwrap();
    let mut rows: Vec<Row> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while rows.len() < 3 && Instant::now() < deadline {
        let page = reader
            .next_page(10, Duration::from_millis(500))
            .await
            .unwrap();
        rows.extend(page.rows);
    }
    assert_eq!(rows.len(), 3, "two inserts and a delete: {rows:?}");
    let arr = |t: ColumnType, v: Value| Value::Array(t, vec![v, Value::Null]);
    let expected = vec![
        Value::Int64(1),
        Value::Bool(true),
        Value::Int64(-42),
        Value::Float32(1.5),
        Value::Float64(2.25),
        Value::Numeric("12.5".into()),
        Value::String("héllo".into()),
        Value::Bytes(vec![0, 255]),
        Value::Date(19_782),
        Value::Timestamp(1_709_208_000_000_000),
        Value::Json("{\"a\":1}".into()),
        Value::Array(
            ColumnType::Bool,
            vec![Value::Bool(true), Value::Bool(false)],
        ),
        Value::Array(
            ColumnType::Int64,
            vec![Value::Int64(1), Value::Null, Value::Int64(3)],
        ),
        Value::Array(
            ColumnType::Float32,
            vec![Value::Float32(1.5), Value::Float32(-0.5)],
        ),
        Value::Array(
            ColumnType::Float64,
            vec![Value::Float64(2.5), Value::Float64(1e300)],
        ),
        arr(ColumnType::Numeric, Value::Numeric("1.25".into())),
        Value::Array(
            ColumnType::String,
            vec![Value::String("x".into()), Value::String("y".into())],
        ),
        Value::Array(
            ColumnType::Bytes,
            vec![Value::Bytes(vec![1]), Value::Bytes(vec![])],
        ),
        arr(ColumnType::Date, Value::Date(1)),
        Value::Array(ColumnType::Timestamp, vec![Value::Timestamp(1_000_000)]),
        arr(ColumnType::Json, Value::Json("[1]".into())),
        Value::Timestamp(written),
        Value::Bool(false),
    ];
    assert_eq!(rows[0].values, expected, "every type of row 1");
    assert_eq!(rows[0].commit_ts, written);
    let mut nulls = vec![Value::Int64(2)];
    nulls.extend(std::iter::repeat_n(Value::Null, 20));
    nulls.extend([Value::Timestamp(written), Value::Bool(false)]);
    assert_eq!(rows[1].values, nulls, "row 2, every column NULL");
    let mut tombstone = vec![Value::Int64(2)];
    tombstone.extend(std::iter::repeat_n(Value::Null, 20));
    tombstone.extend([Value::Timestamp(deleted), Value::Bool(true)]);
    assert_eq!(
        rows[2].values, tombstone,
        "the hard delete, a tombstone with the key"
    );
}

/// On the embedded ledger a change stream's progress is stored in the transaction of the page
/// it covers: the real binary aborted at each fault point of a publish (`LEDGERHOST_FAULT`,
/// see `host/ledgerhost/src/fault.rs`) and restarted without it puts every committed version
/// on the topic once — none lost, none published twice — and each key's in commit order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_embedded_ledger_an_aborted_stream_read_resumes_exactly_after_its_last_page() {
    let emu = SpannerEmulator::start_churning(2).await;
    let db = emu.create_database(&[ACCOUNTS, STREAM]).await;
    let start = ledgerhost_core::clock::now_micros();
    let key = |id: i64| ledgerhost_core::event::encode_key(&[Value::Int64(id)]);
    // (encoded key, commit ts) of every version, in commit order.
    let mut versions: Vec<(String, i64)> = Vec::new();
    for round in 1..=12i64 {
        let ts = spanner_write(
            &db,
            &[format!(
                "INSERT INTO accounts (id, owner, balance) VALUES ({}, 'a', 0), ({}, 'b', 0)",
                round * 10,
                round * 10 + 1
            )],
        )
        .await;
        versions.push((key(round * 10), ts));
        versions.push((key(round * 10 + 1), ts));
        let ts = spanner_write(
            &db,
            &[format!(
                "UPDATE accounts SET balance = {round} WHERE id = {}",
                round * 10
            )],
        )
        .await;
        versions.push((key(round * 10), ts));
        let ts = spanner_write(
            &db,
            &[format!(
                "DELETE FROM accounts WHERE id = {}",
                round * 10 + 1
            )],
        )
        .await;
        versions.push((key(round * 10 + 1), ts));
    }
    let endpoint = db.endpoint.clone().expect("harness sets the endpoint");
    let admin = db.admin_endpoint.clone().expect("harness sets it");
    for point in [
        "poll.before-publish@3",
        "poll.after-publish@3",
        "poll.after-watermark@2",
    ] {
        let ws = Workspace::new();
        let config = ws.path().join("ledgerhost.toml");
        std::fs::write(
            &config,
            format!(
                "[host]\ndata-dir = \"state\"\nplugin-dir = \"plugins\"\n\n\
                 [source]\nkind = \"spanner\"\nproject = \"{}\"\ninstance = \"{}\"\n\
                 database = \"{}\"\nendpoint = \"{endpoint}\"\nadmin-endpoint = \"{admin}\"\n\n\
                 [admin]\nlisten = \"127.0.0.1:0\"\n\n\
                 [[tables]]\nname = \"accounts\"\ncapture = \"change-stream\"\n\
                 change-stream = \"accounts_changes\"\ninterval-ms = 100\npage-size = 5\n\
                 start = \"{start}\"\n",
                db.project, db.instance, db.database
            ),
        )
        .expect("write config");
        let log = ws.path().join("host.log");
        let mut host = HostProcess::start_with_env(
            HOST_BIN.as_ref(),
            &config,
            &log,
            &[("LEDGERHOST_FAULT".into(), point.into())],
        );
        let status = host.group.wait(Duration::from_secs(120));
        assert!(
            status.is_some_and(|s| !s.success())
                && host.log_text().contains("fault injection: aborting at"),
            "{point}: the host did not abort: {status:?}\n{}",
            host.log_text()
        );
        let mut host = HostProcess::start(HOST_BIN.as_ref(), &config, &log);
        let ledger_dir = ws.data_dir().join("ledger");
        // The embedded ledger orders by key shard; the event id names the key.
        let on_topic = || async {
            super::pipeline::event_ids(&ledger_dir, "ledger-accounts")
                .await
                .into_iter()
                .map(|id| {
                    let id = ledgerhost_core::event::EventId(id);
                    let key = id.key_part("accounts").expect("an accounts event id");
                    let ts = id.commit_ts_part().expect("commit ts").parse().expect("µs");
                    (key.to_string(), ts)
                })
                .collect::<Vec<(String, i64)>>()
        };
        let complete = eventually(Duration::from_secs(120), || async {
            on_topic().await.len() >= versions.len()
        })
        .await;
        host.kill();
        let got = on_topic().await;
        assert!(
            complete,
            "{point}: {} of {} versions on the topic\n{}",
            got.len(),
            versions.len(),
            host.log_text()
        );
        let distinct: BTreeSet<&(String, i64)> = got.iter().collect();
        assert_eq!(
            got.len(),
            distinct.len(),
            "{point}: a version published twice: {got:?}"
        );
        let per_key = |v: &[(String, i64)]| {
            let mut m: BTreeMap<String, Vec<i64>> = BTreeMap::new();
            for (k, ts) in v {
                m.entry(k.clone()).or_default().push(*ts);
            }
            m
        };
        assert_eq!(
            per_key(&got),
            per_key(&versions),
            "{point}: every version once, each key's in commit order"
        );
    }
}
