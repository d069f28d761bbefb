//! Plugins over several tables (`subscription.tables`): the shipped archiver and bqloader,
//! each deployed once with its unchanged manifest (`tables = ["*"]`), serve three SQLite
//! source tables of different shapes through the real host, one subscription per table;
//! each table's archive and warehouse table end up equal to its source.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ledgerhost::status::HostStatus;
use ledgerhost::{Config, Host};
use ledgerhost_core::Value;
use ledgerhost_core::capabilities::{BlobStore, WarehouseRow};
use ledgerhost_tests::harness::host::Workspace;
use ledgerhost_tests::harness::{eventually, plugin_manifest};

/// Three tables, three shapes (the commit timestamp column is the host's).
const TABLES: [(&str, &str); 3] = [
    (
        "orders",
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, client_id TEXT NOT NULL, \
         amount INTEGER NOT NULL, commit_ts INTEGER);",
    ),
    (
        "payments",
        "CREATE TABLE payments (id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL, \
         method TEXT, cents INTEGER NOT NULL, commit_ts INTEGER);",
    ),
    (
        "refunds",
        "CREATE TABLE refunds (id INTEGER PRIMARY KEY, reason TEXT, commit_ts INTEGER);",
    ),
];

/// Rows inserted per table, and how many of them are then updated (each in its own
/// transaction, so every update is an event of its own).
const ROWS: i64 = 40;
const UPDATED: i64 = 10;

/// A row, by column in table order, as the source holds it (the commit timestamp as a
/// timestamp, as the sources type it).
fn source_rows(db: &Path, table: &str) -> BTreeMap<i64, Vec<Value>> {
    let conn = rusqlite::Connection::open(db).expect("open app.db");
    let mut stmt = conn
        .prepare(&format!("SELECT * FROM {table}"))
        .expect("prepare");
    let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
    stmt.query_map([], |r| {
        let mut values = Vec::new();
        for (i, name) in names.iter().enumerate() {
            use rusqlite::types::ValueRef;
            values.push(match (name.as_str(), r.get_ref(i)?) {
                ("commit_ts", ValueRef::Integer(ts)) => Value::Timestamp(ts),
                (_, ValueRef::Integer(n)) => Value::Int64(n),
                (_, ValueRef::Text(t)) => Value::String(String::from_utf8_lossy(t).into()),
                (_, ValueRef::Null) => Value::Null,
                (c, other) => panic!("unexpected {c} {other:?}"),
            });
        }
        Ok(values)
    })
    .expect("query")
    .map(|row| {
        let row = row.expect("row");
        let Value::Int64(id) = row[0] else {
            panic!("id first: {row:?}")
        };
        (id, row)
    })
    .collect()
}

/// Each key's newest version (by its commit timestamp, the last column) among `versions`.
fn newest(versions: impl IntoIterator<Item = Vec<Value>>) -> BTreeMap<i64, Vec<Value>> {
    let mut out: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for v in versions {
        let (Value::Int64(id), Some(Value::Timestamp(ts))) = (&v[0], v.last()) else {
            panic!("unexpected version {v:?}");
        };
        let newer = out
            .get(id)
            .is_none_or(|old| matches!(old.last(), Some(Value::Timestamp(t)) if t < ts));
        if newer {
            out.insert(*id, v);
        }
    }
    out
}

/// Every archived event of `table` (its bucket `archive-<table>`), as column values.
async fn archived(blobs: &Arc<dyn BlobStore>, table: &str) -> Vec<Vec<Value>> {
    let decoder = ledgerhost_avro::Decoder::new();
    let bucket = format!("archive-{table}");
    let mut out = Vec::new();
    for name in blobs.list(&bucket, "").await.unwrap_or_default() {
        let Ok(Some(bytes)) = blobs.get(&bucket, &name).await else {
            continue;
        };
        let e = decoder
            .decode(&bytes, &[])
            .unwrap_or_else(|err| panic!("{bucket}/{name} is not an event's Avro: {err}"));
        assert_eq!(
            e.table, table,
            "{bucket}/{name} holds its own table's event"
        );
        out.push(e.fields.into_iter().map(|f| f.value).collect());
    }
    out
}

fn warehouse_versions(rows: &[WarehouseRow]) -> Vec<Vec<Value>> {
    rows.iter()
        .map(|r| r.fields.iter().map(|f| f.value.clone()).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_archiver_and_one_bqloader_serve_three_tables() {
    let ws = Workspace::new();
    let mut config = String::new();
    for (name, ddl) in TABLES {
        ws.sql(ddl);
        config.push_str(&format!(
            "[[tables]]\nname = \"{name}\"\ninterval-ms = 50\n\n"
        ));
    }
    // Deployed once each, with the manifests as shipped.
    for plugin in ["archiver", "bqloader"] {
        let manifest = std::fs::read_to_string(plugin_manifest(plugin)).expect("manifest");
        assert!(
            manifest.contains("tables = [\"*\"]"),
            "{plugin}: {manifest}"
        );
        ws.install_plugin(plugin, plugin, &manifest);
    }
    let config_path = ws.write_config(&config);
    let host = Host::start(Config::load(&config_path).unwrap())
        .await
        .expect("host starts");

    for (table, _) in TABLES {
        let mut sql = String::from("BEGIN;");
        for id in 1..=ROWS {
            sql.push_str(&match table {
                "orders" => format!(
                    "INSERT INTO orders (id, client_id, amount) VALUES ({id}, 'c{}', {});",
                    id % 3,
                    id * 10
                ),
                "payments" => format!(
                    "INSERT INTO payments (id, order_id, method, cents) VALUES \
                     ({id}, {id}, {}, {});",
                    if id % 4 == 0 { "NULL" } else { "'card'" },
                    id * 100
                ),
                _ => format!("INSERT INTO refunds (id, reason) VALUES ({id}, 'r{id}');"),
            });
        }
        sql.push_str("COMMIT;");
        ws.sql(&sql);
    }
    // Updates in transactions of their own: each is a later event of an existing key.
    for id in 1..=UPDATED {
        ws.sql(&format!(
            "UPDATE orders SET amount = amount + 1 WHERE id = {id};\
             UPDATE payments SET method = 'wire' WHERE id = {id};\
             UPDATE refunds SET reason = NULL WHERE id = {id};"
        ));
    }
    // How many events a table makes depends on the polls: an insert updated before the
    // next poll is one event, not two. Every event polled must be archived and loaded once.
    let polled = |table: &str| {
        host.metrics
            .table(table)
            .rows_polled
            .load(std::sync::atomic::Ordering::Relaxed) as usize
    };
    let mut events = BTreeMap::new();

    let (blobs, wh) = (
        host.backends.blobstore.clone(),
        host.backends.warehouse.clone(),
    );
    for (table, _) in TABLES {
        let want = source_rows(&ws.db(), table);
        assert_eq!(want.len() as i64, ROWS, "{table}");
        let converged = eventually(Duration::from_secs(120), || {
            let (blobs, wh, want) = (blobs.clone(), wh.clone(), &want);
            async move {
                let archive = archived(&blobs, table).await;
                let Ok(rows) = wh.scan(table).await else {
                    return false;
                };
                archive.len() == polled(table)
                    && rows.len() == polled(table)
                    && newest(archive) == *want
                    && newest(warehouse_versions(&rows)) == *want
            }
        })
        .await;
        let archive = archived(&blobs, table).await;
        let rows = wh.scan(table).await.unwrap_or_default();
        assert_eq!(
            newest(archive.clone()),
            want,
            "table {table}: each key's newest archived event equals the source row"
        );
        let n = polled(table);
        assert!(
            (ROWS as usize..=(ROWS + UPDATED) as usize).contains(&n),
            "{table}: {n} events polled"
        );
        assert_eq!(archive.len(), n, "{table}: one object per event");
        assert_eq!(
            newest(warehouse_versions(&rows)),
            want,
            "table {table}: each key's newest warehouse row equals the source row"
        );
        assert_eq!(rows.len(), n, "{table}: one warehouse row per event");
        assert!(converged);
        events.insert(table, n as u64);
    }

    // `/status` shows each plugin's subscriptions, one per table, with that table's counts
    // (a delivery is acked just after the plugin wrote it: wait for the last acks).
    let addr = host.admin_addr.to_string();
    let total: u64 = events.values().sum();
    eventually(Duration::from_secs(30), || async {
        let (_, body) = ledgerhost::admin_client::get(&addr, "/status")
            .await
            .expect("GET /status");
        let status: HostStatus = serde_json::from_str(&body).expect("status JSON");
        status.plugins.iter().filter(|p| p.acked == total).count() == 2
    })
    .await;
    let (code, body) = ledgerhost::admin_client::get(&addr, "/status")
        .await
        .expect("GET /status");
    assert_eq!(code, 200, "{body}");
    let status: HostStatus = serde_json::from_str(&body).expect("status JSON");
    for plugin in ["archiver", "bqloader"] {
        let p = status
            .plugins
            .iter()
            .find(|p| p.name == plugin)
            .unwrap_or_else(|| panic!("{plugin} in {body}"));
        let tables: Vec<(&str, &str, u64)> = p
            .tables
            .iter()
            .map(|t| (t.table.as_str(), t.subscription.as_str(), t.acked))
            .collect();
        let want: Vec<(&str, String, u64)> = TABLES
            .iter()
            .map(|(t, _)| (*t, format!("plugin-{plugin}.{t}"), events[t]))
            .collect();
        assert_eq!(
            tables,
            want.iter()
                .map(|(t, s, n)| (*t, s.as_str(), *n))
                .collect::<Vec<_>>(),
            "{plugin}: {body}"
        );
        assert_eq!(p.acked, total, "{plugin}: the totals");
        assert_eq!(p.dead_lettered, 0, "{plugin}: {body}");
    }
    let (_, metrics) = ledgerhost::admin_client::get(&addr, "/metrics")
        .await
        .expect("GET /metrics");
    assert!(
        metrics.contains(&format!(
            "ledgerhost_plugin_table_acked_total{{plugin=\"bqloader\",table=\"refunds\"}} \
             {}",
            events["refunds"]
        )),
        "{metrics}"
    );
    assert!(host.shutdown().await, "drained");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_the_host_does_not_capture_is_refused_naming_the_configured_ones() {
    let ws = Workspace::new();
    ws.sql(TABLES[0].1);
    let manifest = std::fs::read_to_string(plugin_manifest("archiver"))
        .expect("manifest")
        .replace("tables = [\"*\"]", "tables = [\"orders\", \"ordres\"]");
    ws.install_plugin("archiver", "archiver", &manifest);
    let config_path = ws.write_config("[[tables]]\nname = \"orders\"\ninterval-ms = 50\n");
    let host = Host::start(Config::load(&config_path).unwrap())
        .await
        .expect("host starts");
    // The registry's refusals reach `/status` through its event stream, just after start.
    let addr = host.admin_addr.to_string();
    let status = || async {
        let (_, body) = ledgerhost::admin_client::get(&addr, "/status")
            .await
            .expect("GET /status");
        let status: HostStatus = serde_json::from_str(&body).expect("status JSON");
        (status, body)
    };
    eventually(Duration::from_secs(30), || async {
        status()
            .await
            .0
            .plugins
            .iter()
            .any(|p| p.name == "archiver")
    })
    .await;
    let (status, body) = status().await;
    let p = status
        .plugins
        .iter()
        .find(|p| p.name == "archiver")
        .unwrap_or_else(|| panic!("archiver in {body}"));
    assert_eq!(p.state.label(), "refused", "{body}");
    let error = p.last_error.as_deref().unwrap_or_default();
    assert!(
        error.contains("archiver.toml")
            && error.contains("`subscription.tables` names `ordres`")
            && error.contains("its [[tables]] are orders"),
        "{error}"
    );
    assert!(host.shutdown().await);
}
