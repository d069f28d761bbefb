//! Sharded polling on the Google emulators: rows/s reaching the ledger with 1, 2 and 3
//! pollers on the same table, measured in one run, and where each poller's time goes
//! (read a page from the Spanner snapshot, encode it as Avro, publish it to Pub/Sub until
//! confirmed; the next page is read while one is published, so the shares overlap).
//!
//! The table holds ROWS rows committed before the pollers start; with k pollers the table
//! has k shards by primary-key hash and each poller polls one (in this process, as k
//! replicas would, each with its own source and ledger client). The figure is ROWS / the
//! time until every shard's first poll is confirmed. One round per k, alternating, best of
//! ROUNDS.
//!
//! The emulators bound what this can show: the Spanner emulator runs one read-write
//! transaction at a time and serves reads from one process; the Pub/Sub emulator is one
//! JVM; both share the bench's 2 cores. So the ratios are the host's scaling on this
//! machine, not Cloud Spanner's or Cloud Pub/Sub's (docs/operations.md, "Capacity").
//!
//! Run: `cargo bench -p ledgerhost-tests --bench shards`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ledgerhost::config::StartFrom;
use ledgerhost::metrics::{Metrics, PollStep};
use ledgerhost::poller::{Poller, PollerSettings};
use ledgerhost::watermark::WatermarkStore;
use ledgerhost_core::ledger::Ledger;
use ledgerhost_core::source::{Sharding, Source, TableSpec};
use ledgerhost_ledger::pubsub::PubSubLedger;
use ledgerhost_source::spanner::SpannerSource;
use ledgerhost_tests::harness::google::{GoogleEmulators, commit_ts_index, spanner_write};

const ROWS: i64 = 20_000;
const ROUNDS: usize = 2;
const PAGE: usize = 1000;

fn spec(shards: u32) -> TableSpec {
    TableSpec {
        name: "orders".into(),
        commit_ts_column: None,
        deleted_column: None,
        sharding: Sharding {
            count: shards,
            column: None,
        },
    }
}

/// One run: rows/s, each poller's (read, encode, publish) seconds, and the wall time.
type Run = (f64, Vec<[f64; 4]>, Duration);

/// One run of `k` pollers.
async fn run(
    db: &ledgerhost_source::spanner::SpannerConfig,
    emu: &GoogleEmulators,
    k: u32,
    round: usize,
) -> Run {
    let metrics = Metrics::default();
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = format!("shards-bench-{k}-{round}");
    let mut pollers = Vec::new();
    for index in 0..k {
        // A client of its own per poller, as separate replicas have.
        let source = Arc::new(SpannerSource::connect(db.clone()).await.expect("spanner"));
        source.prepare_table(&spec(k)).await.expect("prepare");
        let ledger: Arc<dyn Ledger> = Arc::new(
            PubSubLedger::connect(emu.pubsub_config())
                .await
                .expect("pubsub"),
        );
        ledger.ensure_topic(&topic).await.expect("topic");
        let shard = spec(k).sharding.shard(index);
        let stats = metrics.shard("orders", &shard);
        let settings = PollerSettings {
            spec: spec(k),
            topic: topic.clone(),
            interval: Duration::from_millis(100),
            page_size: PAGE,
            start: StartFrom::Beginning,
            replica: format!("bench-{index}"),
            lease_ttl: Duration::from_secs(10),
            ordering: Default::default(),
            shard,
        };
        pollers.push(Poller::new(
            settings,
            source,
            ledger,
            WatermarkStore::open(&dir.path().join(format!("wm-{index}"))).expect("watermarks"),
            stats,
        ));
    }
    let started = Instant::now();
    let polls = pollers
        .into_iter()
        .map(|mut p| tokio::spawn(async move { p.poll_once().await.expect("poll") }));
    let mut rows = 0;
    for p in polls {
        rows += p.await.expect("poller task");
    }
    let wall = started.elapsed();
    assert_eq!(rows, ROWS as u64, "every row published once");
    let steps = metrics
        .tables()
        .into_iter()
        .map(|(_, t)| PollStep::ALL.map(|s| t.step_seconds(s)))
        .collect();
    (rows as f64 / wall.as_secs_f64(), steps, wall)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let emu = GoogleEmulators::start().await;
    let ddl = [
        "CREATE TABLE orders (id INT64 NOT NULL, client_id STRING(MAX) NOT NULL, \
         amount INT64 NOT NULL, \
         commit_ts TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp=true)) PRIMARY KEY (id)"
            .to_string(),
        commit_ts_index("orders"),
    ];
    let db = emu
        .create_database(&ddl.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    // Spanner allows at most 1 000 function calls per statement: 400 rows per INSERT, five
    // INSERTs per transaction.
    let ids: Vec<i64> = (1..=ROWS).collect();
    for transaction in ids.chunks(2000) {
        let statements: Vec<String> = transaction
            .chunks(400)
            .map(|chunk| {
                let values: Vec<String> = chunk
                    .iter()
                    .map(|id| {
                        format!(
                            "({id}, 'c{}', {}, PENDING_COMMIT_TIMESTAMP())",
                            id % 97,
                            id * 3
                        )
                    })
                    .collect();
                format!(
                    "INSERT INTO orders (id, client_id, amount, commit_ts) VALUES {}",
                    values.join(", ")
                )
            })
            .collect();
        spanner_write(&db, &statements).await;
    }

    let mut best: [Option<Run>; 3] = [None, None, None];
    for round in 0..ROUNDS {
        for k in 1..=3u32 {
            let result = run(&db, &emu, k, round).await;
            eprintln!("round {round}, {k} poller(s): {:.0} rows/s", result.0);
            let slot = &mut best[k as usize - 1];
            if slot.as_ref().is_none_or(|b| result.0 > b.0) {
                *slot = Some(result);
            }
        }
    }
    let base = best[0].as_ref().expect("one poller").0;
    println!(
        "## Sharded polling on the emulators: {ROWS} rows, pages of {PAGE}, best of {ROUNDS} \
         rounds\n"
    );
    println!(
        "| pollers | rows/s reaching Pub/Sub | vs 1 poller | wall | per poller: read / encode / publish / watermark (s; share of wall) |"
    );
    println!("| ---: | ---: | ---: | ---: | --- |");
    for (i, b) in best.iter().enumerate() {
        let (rate, steps, wall) = b.as_ref().expect("measured");
        let w = wall.as_secs_f64();
        let shares: Vec<String> = steps
            .iter()
            .map(|[r, e, p, m]| {
                format!(
                    "{r:.2} / {e:.2} / {p:.2} / {m:.2} ({:.0}% / {:.0}% / {:.0}% / {:.0}%)",
                    r / w * 100.0,
                    e / w * 100.0,
                    p / w * 100.0,
                    m / w * 100.0
                )
            })
            .collect();
        println!(
            "| {} | {rate:.0} | {:.2}x | {w:.2} s | {} |",
            i + 1,
            rate / base,
            shares.join("; ")
        );
    }
}
