//! `ledgerhost restore` end to end through the real host: rows written (inserts, updates,
//! soft deletes) in separate transactions, archived by the shipped archiver and partly
//! compacted by the janitor, then restored with the real binary into fresh SQLite files and
//! into databases on the Spanner emulator: equal row for row to the source's live rows, as
//! of now and (`--at`) as of each transaction kept as a snapshot; a second run changes
//! nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use ledgerhost_core::Value;
use ledgerhost_core::source::{Position, Source, TableSpec};
use ledgerhost_source::spanner::{SpannerConfig, SpannerSource};
use ledgerhost_source::sqlite::SqliteSource;
use ledgerhost_tests::harness::google::SpannerEmulator;

use super::seed::Chain;

const HOST_BIN: &str = env!("CARGO_BIN_EXE_ledgerhost-under-test");
const HOUR: i64 = 3_600_000_000;

/// Columns beyond the seed's orders table, one of each kind the restore maps.
const MORE_COLUMNS: &[&str] = &[
    "ALTER TABLE orders ADD COLUMN deleted BOOLEAN NOT NULL DEFAULT 0",
    "ALTER TABLE orders ADD COLUMN price DECIMAL TEXT",
    "ALTER TABLE orders ADD COLUMN day DATE",
    "ALTER TABLE orders ADD COLUMN tags \"ARRAY<STRING>\"",
    "ALTER TABLE orders ADD COLUMN doc JSON",
    "ALTER TABLE orders ADD COLUMN data BLOB",
    "ALTER TABLE orders ADD COLUMN ratio REAL",
];

type RawRows = BTreeMap<i64, Vec<rusqlite::types::Value>>;

/// The live (not soft-deleted) rows of `orders` in an SQLite file, as stored, by id.
fn raw_rows(path: &Path, live_only: bool) -> RawRows {
    let conn = rusqlite::Connection::open(path).expect("open the SQLite file");
    let filter = if live_only { " WHERE deleted = 0" } else { "" };
    let mut stmt = conn
        .prepare(&format!(
            "SELECT id, client_id, amount, commit_ts, deleted, price, day, tags, doc, data, \
             ratio FROM orders{filter} ORDER BY id"
        ))
        .expect("prepare");
    stmt.query_map([], |r| {
        (0..11)
            .map(|i| r.get::<_, rusqlite::types::Value>(i))
            .collect::<Result<Vec<_>, _>>()
    })
    .expect("query")
    .map(|r| {
        let r = r.expect("row");
        let rusqlite::types::Value::Integer(id) = r[0] else {
            panic!("id is an integer")
        };
        (id, r)
    })
    .collect()
}

/// Every row of `orders` read through a source port, by id (the first column).
async fn port_rows(source: &dyn Source) -> BTreeMap<i64, Vec<Value>> {
    let mut snap = source.snapshot().await.expect("snapshot");
    let schema = snap
        .schema(&TableSpec {
            name: "orders".into(),
            commit_ts_column: None,
            deleted_column: None,
            sharding: Default::default(),
        })
        .await
        .expect("schema");
    let mut out = BTreeMap::new();
    let mut after = Position::after_ts(i64::MIN);
    loop {
        let page = snap.page(&schema, &after, 500).await.expect("page");
        let Some(last) = page.last() else { break };
        after = Position {
            commit_ts: last.commit_ts,
            key: vec![last.values[0].clone()],
        };
        for row in page {
            let Value::Int64(id) = row.values[0] else {
                panic!("id is INT64")
            };
            out.insert(id, row.values);
        }
    }
    out
}

/// Runs `ledgerhost restore` and returns its stdout; fails the test with its stderr.
fn restore(config: &Path, into: &str, at: Option<i64>, extra: &[&str]) -> String {
    let mut cmd = Command::new(HOST_BIN);
    cmd.args(["restore", "--config"])
        .arg(config)
        .args(["--table", "orders", "--into", into])
        .args(extra);
    if let Some(at) = at {
        cmd.args(["--at", &at.to_string()]);
    }
    let out = cmd.output().expect("run ledgerhost restore");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "restore into {into} failed:\n{stdout}\n{stderr}"
    );
    // Not a terminal: the progress bar prints plain lines with the rate.
    assert!(
        stderr.contains("rows, ") && stderr.contains("/s"),
        "{stderr}"
    );
    stdout
}

/// A source state kept after one transaction: its commit time and the live rows.
struct Kept {
    at: i64,
    rows: RawRows,
}

/// Runs `sql` as one transaction touching `rows` rows, waits until each version is
/// archived, and keeps the source as it then stood.
async fn write(chain: &Chain, db: &Path, sql: String, rows: usize, kept: &mut Vec<Kept>) {
    let singles = chain.single_objects().len();
    chain.write(&sql, singles + rows).await;
    let conn = rusqlite::Connection::open(db).expect("open the source");
    let at: i64 = conn
        .query_row("SELECT max(commit_ts) FROM orders", [], |r| r.get(0))
        .expect("the transaction's commit time");
    kept.push(Kept {
        at,
        rows: raw_rows(db, true),
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_equals_the_source_now_and_at_each_kept_instant() {
    let mut chain = Chain::new(
        "deleted-column = \"deleted\"\n\n[plugins.janitor.config]\nmin-age-secs = \"0\"\n",
    );
    for sql in MORE_COLUMNS {
        chain.ws.sql(&format!("{sql};"));
    }
    chain.start().await;
    let config = chain.ws.path().join("ledgerhost.toml");
    let db = chain.ws.db();
    let mut kept: Vec<Kept> = Vec::new();

    // 1: 30 inserts, every kind of value (NULLs on odd ids).
    let mut sql = String::new();
    for id in 1..=30 {
        let extra = if id % 2 == 0 {
            format!(
                "'{}.25', '2026-11-{:02}', '[\"a{id}\",\"b\"]', '{{\"n\":{id}}}', x'00ff{:02x}', {}.5",
                id,
                id % 28 + 1,
                id,
                id
            )
        } else {
            "NULL, NULL, NULL, NULL, NULL, NULL".into()
        };
        sql.push_str(&format!(
            "INSERT INTO orders (id, client_id, amount, price, day, tags, doc, data, ratio) \
             VALUES ({id}, 'c{}', {id}, {extra});",
            id % 5
        ));
    }
    write(&chain, &db, sql, 30, &mut kept).await;
    // 2: updates of 1..=10.
    let sql: String = (1..=10)
        .map(|id| {
            format!(
                "UPDATE orders SET amount = amount + 100, tags = '[\"u\",null]' WHERE id = {id};"
            )
        })
        .collect();
    write(&chain, &db, sql, 10, &mut kept).await;
    // 3: soft deletes of 5..=8.
    let sql: String = (5..=8)
        .map(|id| format!("UPDATE orders SET deleted = 1 WHERE id = {id};"))
        .collect();
    write(&chain, &db, sql, 4, &mut kept).await;

    // The janitor compacts everything archived so far (its span as closed), so the rest
    // of the history stays loose: the archive is partly compacted.
    let answer = chain.run_janitor(kept[2].at + 2 * HOUR).await;
    assert_eq!(answer.status, 200, "{}\n{}", answer.body, chain.log_text());
    assert!(
        chain.single_objects().is_empty(),
        "the janitor compacted every loose object"
    );

    // 4: inserts of 31..=40 and updates of 11..=15, loose.
    let mut sql: String = (31..=40)
        .map(|id| {
            format!(
                "INSERT INTO orders (id, client_id, amount, price) VALUES ({id}, 'c{}', {id}, '-0.5');",
                id % 5
            )
        })
        .collect();
    sql.extend((11..=15).map(|id| format!("UPDATE orders SET amount = -{id} WHERE id = {id};")));
    write(&chain, &db, sql, 15, &mut kept).await;
    // 5: 31 and 32 soft-deleted, 5 alive again, 20 updated.
    let sql = "UPDATE orders SET deleted = 1 WHERE id IN (31, 32);\
               UPDATE orders SET deleted = 0, amount = 555 WHERE id = 5;\
               UPDATE orders SET doc = '{\"n\":0}' WHERE id = 20;"
        .to_string();
    write(&chain, &db, sql, 4, &mut kept).await;
    let objects = chain.archived_objects();
    assert_eq!(
        objects.len() - chain.single_objects().len(),
        1,
        "one compacted file beside the loose objects: {:?}",
        objects.keys().collect::<Vec<_>>()
    );
    assert_eq!(chain.single_objects().len(), 19);

    let now = raw_rows(&db, true);
    assert_eq!(now.len(), 35, "40 rows, 6, 7, 8, 31 and 32 soft-deleted");
    assert_eq!(kept.last().unwrap().rows, now);

    // Into a fresh SQLite file: equal row for row, as stored; a second run changes nothing.
    let out_dir = chain.ws.path().join("restored");
    std::fs::create_dir_all(&out_dir).unwrap();
    let file = out_dir.join("now.db");
    let into = format!("sqlite:{}", file.display());
    let first = restore(&config, &into, None, &[]);
    assert!(first.contains("(table created)"), "{first}");
    assert!(
        first.contains(&format!("{} rows written, 5 keys deleted", now.len())),
        "{first}"
    );
    assert_eq!(
        raw_rows(&file, false),
        now,
        "restored = the source's live rows"
    );
    let second = restore(&config, &into, None, &[]);
    assert!(!second.contains("(table created)"), "{second}");
    assert_eq!(raw_rows(&file, false), now, "a second run changes nothing");

    // As of each kept instant, into a fresh file each.
    for (i, k) in kept.iter().enumerate() {
        let file = out_dir.join(format!("at-{i}.db"));
        restore(
            &config,
            &format!("sqlite:{}", file.display()),
            Some(k.at),
            &[],
        );
        assert_eq!(
            raw_rows(&file, false),
            k.rows,
            "restore --at {} (after transaction {}) = the source then",
            k.at,
            i + 1
        );
    }
    // The file restored as of now, taken back to the second instant: the rows created
    // later are deleted, the others rewound.
    restore(&config, &into, Some(kept[1].at), &["--batch-rows", "7"]);
    assert_eq!(raw_rows(&file, false), kept[1].rows);

    // The same archive feeds `plugin diff` (issue 26's offline diff).
    super::rollout::assert_diff_over_archive(&config, &chain.ws.path().join("diff"));

    // Into databases on the Spanner emulator: the table is created (with its commit
    // timestamp column), the rows equal the source's through the ports.
    let source = SqliteSource::open(&db).expect("open the source");
    let want: BTreeMap<i64, Vec<Value>> = port_rows(&source)
        .await
        .into_iter()
        .filter(|(_, r)| r[4] == Value::Bool(false))
        .collect();
    assert_eq!(want.len(), now.len());
    let emu = SpannerEmulator::start().await;
    let spanner_args = |db: &SpannerConfig| {
        (
            format!(
                "spanner:projects/{}/instances/{}/databases/{}",
                db.project, db.instance, db.database
            ),
            vec![
                "--spanner-endpoint".to_string(),
                db.endpoint.clone().unwrap(),
                "--spanner-admin-endpoint".to_string(),
                db.admin_endpoint.clone().unwrap(),
            ],
        )
    };
    let sdb = emu.create_database(&[]).await;
    let (into, args) = spanner_args(&sdb);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = restore(&config, &into, None, &args);
    assert!(first.contains("(table created)"), "{first}");
    let target = SpannerSource::connect(sdb.clone()).await.expect("connect");
    let spec = TableSpec {
        name: "orders".into(),
        commit_ts_column: None,
        deleted_column: Some("deleted".into()),
        sharding: Default::default(),
    };
    target
        .prepare_table(&spec)
        .await
        .expect("the restored Spanner table can be captured again");
    assert_eq!(port_rows(&target).await, want, "Spanner restore = source");
    restore(&config, &into, None, &args);
    assert_eq!(
        port_rows(&target).await,
        want,
        "a second run changes nothing"
    );

    // A second Spanner database as of the third instant.
    let sdb2 = emu.create_database(&[]).await;
    let (into2, args2) = spanner_args(&sdb2);
    let args2: Vec<&str> = args2.iter().map(String::as_str).collect();
    restore(&config, &into2, Some(kept[2].at), &args2);
    let then: Vec<i64> = kept[2].rows.keys().copied().collect();
    let got = port_rows(&SpannerSource::connect(sdb2).await.expect("connect")).await;
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), then);
    let file_then = SqliteSource::open(&out_dir.join("at-2.db")).expect("open");
    file_then
        .prepare_table(&spec)
        .await
        .expect("the restored SQLite table can be captured again");
    // Its commit clock starts with a captured write (one that leaves no row behind).
    rusqlite::Connection::open(out_dir.join("at-2.db"))
        .unwrap()
        .execute_batch(
            "BEGIN; INSERT INTO orders (id, client_id, amount, deleted) VALUES (-1, 'x', 0, 0); \
             DELETE FROM orders WHERE id = -1; COMMIT;",
        )
        .unwrap();
    assert_eq!(
        port_rows(&file_then).await,
        got,
        "Spanner and SQLite restores of one instant hold the same values"
    );

    // A table that does not match is refused, naming the column.
    let clash = out_dir.join("clash.db");
    rusqlite::Connection::open(&clash)
        .unwrap()
        .execute_batch(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, client_id TEXT NOT NULL, \
             amount TEXT, commit_ts INTEGER)",
        )
        .unwrap();
    let out = Command::new(HOST_BIN)
        .args(["restore", "--config"])
        .arg(&config)
        .args(["--table", "orders", "--into"])
        .arg(format!("sqlite:{}", clash.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("column `amount`"), "{stderr}");
}
