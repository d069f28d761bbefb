//! Source-side throughput on one core: SQLite pages read into rows, then those rows encoded
//! as Avro containers (what the poller does before publishing), in rows per second.
//!
//! `cargo bench -p ledgerhost-source --bench sqlite_read`.

use std::hint::black_box;
use std::time::Instant;

use ledgerhost_core::Value;
use ledgerhost_core::source::{Position, Row, Source, TableSpec};
use ledgerhost_source::sqlite::SqliteSource;

const ROWS: i64 = 200_000;
const PAGE: usize = 1000;

fn report(what: &str, n: usize, start: Instant) {
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{what:<48} {n:>8} rows  {secs:>8.3} s  {:>12.0} rows/s",
        n as f64 / secs
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("bench.db");
    let mut app = rusqlite::Connection::open(&db).expect("open bench db");
    app.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE orders (id INTEGER PRIMARY KEY, client TEXT NOT NULL,
             amount DECIMAL TEXT, status TEXT, created_at TIMESTAMP, note TEXT,
             tags TEXT ARRAY, deleted BOOLEAN, commit_ts INTEGER)",
    )
    .expect("create table");
    let src = SqliteSource::open(&db).expect("open source");
    let spec = TableSpec {
        name: "orders".into(),
        commit_ts_column: None,
        deleted_column: Some("deleted".into()),
        sharding: Default::default(),
    };
    let schema = src.prepare_table(&spec).await.expect("prepare");

    // 200 transactions of 1000 rows and no poll in between: they share one commit epoch,
    // so this also measures paging deep inside one timestamp.
    let start = Instant::now();
    for chunk in 0..ROWS / 1000 {
        let tx = app.transaction().expect("begin");
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO orders (id, client, amount, status, created_at, note, tags, \
                     deleted) VALUES (?1, ?2, ?3, 'paid', ?4, ?5, '[\"eu\", null]', 0)",
                )
                .expect("prepare insert");
            for id in chunk * 1000..(chunk + 1) * 1000 {
                stmt.execute(rusqlite::params![
                    id,
                    format!("client-{}", id % 997),
                    format!("{}.{:02}", id % 10_000, id % 100),
                    1_763_900_000_000_000i64 + id,
                    (id % 3 != 0).then_some("deliver after 5pm"),
                ])
                .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    report(
        "write (application inserts, triggers stamping)",
        ROWS as usize,
        start,
    );

    let start = Instant::now();
    let mut snap = src.snapshot().await.expect("snapshot");
    let mut after = Position::after_ts(i64::MIN);
    let mut pages: Vec<Vec<Row>> = Vec::new();
    loop {
        let rows = snap.page(&schema, &after, PAGE).await.expect("page");
        let Some(last) = rows.last() else { break };
        after = Position {
            commit_ts: last.commit_ts,
            key: vec![last.values[0].clone()],
        };
        let n = rows.len();
        pages.push(rows);
        if n < PAGE {
            break;
        }
    }
    drop(snap);
    let read: usize = pages.iter().map(Vec::len).sum();
    assert_eq!(read, ROWS as usize, "every row read");
    report("read (snapshot + keyset pages of 1000)", read, start);

    let encoder = ledgerhost_avro::Encoder::new(&schema).expect("encoder");
    let start = Instant::now();
    for page in &pages {
        let messages: Vec<_> = page
            .iter()
            .map(|r| encoder.encode(r).expect("encode"))
            .collect();
        black_box(messages);
    }
    report("encode (rows -> Avro messages)", read, start);

    // Both together, as one poll does them, on this one thread.
    let start = Instant::now();
    let mut snap = src.snapshot().await.expect("snapshot");
    let mut after = Position::after_ts(i64::MIN);
    let mut total = 0;
    loop {
        let rows = snap.page(&schema, &after, PAGE).await.expect("page");
        let Some(last) = rows.last() else { break };
        after = Position {
            commit_ts: last.commit_ts,
            key: vec![last.values[0].clone()],
        };
        let messages: Vec<_> = rows
            .iter()
            .map(|r| encoder.encode(r).expect("encode"))
            .collect();
        total += messages.len();
        black_box(messages);
        if rows.len() < PAGE {
            break;
        }
    }
    assert_eq!(total, ROWS as usize);
    report("source -> Avro (read + encode, one thread)", total, start);
    assert!(matches!(pages[0][0].values[0], Value::Int64(0)));
}
