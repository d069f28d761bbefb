//! What the poller leases cost on Spanner: three host processes share three tables on the
//! emulators. Every replica used to run a read-write transaction per table at every poll
//! tick; now the holder renews at most every third of the TTL and the others watch the
//! lease with single-use reads, taking it only once it expired or was released. The test
//! counts the transactions each host reports in `/metrics`
//! (`ledgerhost_source_transactions_total{kind, purpose}`) against the budget the TTL gives,
//! checks that exactly one host polls each table and that every row written is delivered,
//! then stops the leader cleanly and checks the others take over from its watermark.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ledgerhost_core::ledger::{Ledger, SubscriptionSpec};
use ledgerhost_ledger::pubsub::PubSubLedger;
use ledgerhost_source::spanner::SpannerConfig;
use ledgerhost_tests::harness::google::{GoogleEmulators, commit_ts_index, spanner_write};
use ledgerhost_tests::harness::host::{HostProcess, Workspace};
use ledgerhost_tests::harness::metrics::{self, Samples, sample};
use ledgerhost_tests::harness::{event_key, eventually, free_port};

const HOST_BIN: &str = env!("CARGO_BIN_EXE_ledgerhost-under-test");
const TABLES: [&str; 3] = ["lease_a", "lease_b", "lease_c"];
const TTL: Duration = Duration::from_millis(1500);
const INTERVAL_MS: u64 = 100;
const TOPIC_PREFIX: &str = "lease-";

/// One host process with its own workspace and admin port.
struct Replica {
    _ws: Workspace,
    config: PathBuf,
    log: PathBuf,
    admin: String,
    process: Option<HostProcess>,
}

impl Replica {
    fn new(emu: &GoogleEmulators, db: &SpannerConfig) -> Self {
        let ws = Workspace::new();
        let admin = format!("127.0.0.1:{}", free_port());
        let tables: String = TABLES
            .iter()
            .map(|t| format!("[[tables]]\nname = \"{t}\"\ninterval-ms = {INTERVAL_MS}\n"))
            .collect();
        let host = [
            format!("lease-ttl-ms = {}", TTL.as_millis()),
            "drain-timeout-ms = 10000".to_string(),
        ];
        let text = emu.host_config(db, &host, TOPIC_PREFIX, &admin) + &tables;
        let config = ws.path().join("ledgerhost.toml");
        std::fs::write(&config, text).expect("write config");
        let log = ws.path().join("host.log");
        Replica {
            _ws: ws,
            config,
            log,
            admin,
            process: None,
        }
    }

    fn start(&mut self) {
        self.process = Some(HostProcess::start(
            HOST_BIN.as_ref(),
            &self.config,
            &self.log,
        ));
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn count(&self, needle: &str) -> usize {
        self.log_text().matches(needle).count()
    }

    /// `/metrics` as (name, labels) → value; empty when the host does not answer.
    fn metrics(&self) -> Samples {
        let Ok((200, text)) = ledgerhost::admin_client::get_blocking(&self.admin, "/metrics")
        else {
            return BTreeMap::new();
        };
        metrics::parse(&text)
    }
}

/// The lease lines of every host's log, for failure messages.
fn lease_lines(replicas: &[Replica]) -> String {
    replicas
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let lines: Vec<String> = r
                .log_text()
                .lines()
                .filter(|l| l.contains("lease") || l.contains("replica"))
                .map(str::to_string)
                .collect();
            format!("host {i}:\n{}", lines.join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn transactions(metrics: &Samples, kind: &str, purpose: &str) -> u64 {
    sample(
        metrics,
        "ledgerhost_source_transactions_total",
        &[("kind", kind), ("purpose", purpose)],
    )
}

/// Pulls and acks what `subscription` holds, adding the event keys to `seen`, until
/// `want` keys were seen or nothing came for a while.
async fn collect(
    ledger: &PubSubLedger,
    subscription: &str,
    want: usize,
    seen: &mut BTreeSet<String>,
) {
    let mut idle = 0;
    while seen.len() < want && idle < 60 {
        let batch = ledger
            .pull(subscription, 200, Duration::from_secs(1))
            .await
            .unwrap_or_default();
        if batch.is_empty() {
            idle += 1;
            continue;
        }
        idle = 0;
        let ids: Vec<String> = batch.iter().map(|d| d.ack_id.clone()).collect();
        seen.extend(batch.iter().map(|d| event_key(&d.message)));
        ledger.ack(subscription, &ids).await.expect("ack");
    }
}

/// Inserts `rounds` rows in each table, one transaction per round, `pause` apart; returns
/// the keys written per table.
async fn write_rows(db: &SpannerConfig, from: i64, rounds: i64, pause: Duration) -> Vec<i64> {
    let mut ids = Vec::new();
    for id in from..from + rounds {
        let statements: Vec<String> = TABLES
            .iter()
            .map(|t| {
                format!(
                    "INSERT INTO {t} (id, v, commit_ts) VALUES ({id}, 'v{id}', \
                     PENDING_COMMIT_TIMESTAMP())"
                )
            })
            .collect();
        spanner_write(db, &statements).await;
        ids.push(id);
        tokio::time::sleep(pause).await;
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_share_three_tables_within_the_lease_transaction_budget() {
    let emu = GoogleEmulators::start().await;
    let mut ddl: Vec<String> = Vec::new();
    for t in TABLES {
        ddl.push(format!(
            "CREATE TABLE {t} (id INT64 NOT NULL, v STRING(MAX), \
             commit_ts TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp=true)) PRIMARY KEY (id)"
        ));
        ddl.push(commit_ts_index(t));
    }
    let db = emu
        .create_database(&ddl.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    // Subscriptions first, so they hold everything published.
    let ledger = PubSubLedger::connect(emu.pubsub_config())
        .await
        .expect("pubsub");
    for t in TABLES {
        ledger
            .ensure_subscription(&SubscriptionSpec {
                name: format!("check-{t}"),
                topic: format!("{TOPIC_PREFIX}{t}"),
                attribute_filter: BTreeMap::new(),
                ack_deadline: Duration::from_secs(60),
                dead_letter_topic: format!("check-dead-{t}"),
            })
            .await
            .expect("subscription");
    }

    // Three hosts at once: they race for the three leases.
    let mut replicas: Vec<Replica> = (0..3).map(|_| Replica::new(&emu, &db)).collect();
    let started = Instant::now();
    for r in &mut replicas {
        r.start();
    }
    for r in &replicas {
        let ready = eventually(Duration::from_secs(180), || {
            let n = r.count("ledgerhost ready");
            async move { n >= 1 }
        })
        .await;
        assert!(ready, "host did not start:\n{}", r.log_text());
    }

    // Some seconds of application writes while the hosts poll.
    let written = write_rows(&db, 1, 24, Duration::from_millis(250)).await;
    let mut seen: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for t in TABLES {
        let got = seen.entry(t).or_default();
        collect(&ledger, &format!("check-{t}"), written.len(), got).await;
    }
    let metrics: Vec<_> = replicas.iter().map(Replica::metrics).collect();
    let elapsed = started.elapsed();
    for t in TABLES {
        let want: BTreeSet<String> = written.iter().map(|id| id.to_string()).collect();
        assert_eq!(seen[t], want, "every row of {t} was delivered");
    }

    // Exactly one host polls each table.
    let mut led = vec![0u64; replicas.len()];
    for t in TABLES {
        let leaders: Vec<usize> = (0..replicas.len())
            .filter(|i| sample(&metrics[*i], "ledgerhost_poller_leader", &[("table", t)]) == 1)
            .collect();
        assert_eq!(
            leaders.len(),
            1,
            "one leader of {t}: {leaders:?}\n{}",
            lease_lines(&replicas)
        );
        led[leaders[0]] += 1;
        for (i, m) in metrics.iter().enumerate() {
            let rows = sample(m, "ledgerhost_rows_polled_total", &[("table", t)]);
            if i == leaders[0] {
                assert_eq!(rows, written.len() as u64, "the leader published {t}");
            } else {
                assert_eq!(rows, 0, "host {i} does not poll {t}");
            }
        }
    }
    let took: usize = replicas
        .iter()
        .map(|r| r.count("took the poller lease"))
        .sum();
    assert_eq!(
        took,
        TABLES.len(),
        "no lease changed hands while every host ran:\n{}",
        lease_lines(&replicas)
    );

    // The budget, counted: a held lease is renewed at most every third of the TTL.
    let per_table = (elapsed.as_secs_f64() / (TTL.as_secs_f64() / 3.0)).ceil() as u64 + 2;
    let tables = TABLES.len() as u64;
    let mut report = Vec::new();
    let mut total_read_write = 0;
    for (i, m) in metrics.iter().enumerate() {
        let renew = transactions(m, "read_write", "lease_renew");
        let take = transactions(m, "read_write", "lease_take");
        let release = transactions(m, "read_write", "release");
        let read = transactions(m, "read_only", "lease_read");
        let snapshots = transactions(m, "read_only", "poll_snapshot");
        let read_write: u64 = m
            .iter()
            .filter(|((n, l), _)| {
                n == "ledgerhost_source_transactions_total"
                    && l.get("kind").map(String::as_str) == Some("read_write")
            })
            .map(|(_, v)| *v as u64)
            .sum();
        total_read_write += read_write;
        report.push(format!(
            "host {i}: leads {} tables; read-write: {renew} renewals, {take} takes, \
             {release} releases ({read_write} in all); read-only: {read} lease reads, \
             {snapshots} poll snapshots",
            led[i]
        ));
        assert_eq!(
            read_write,
            renew + take + release,
            "leases are the only read-write transactions"
        );
        assert!(
            renew <= led[i] * per_table,
            "host {i}: {renew} renewals for {} tables in {elapsed:?} (budget {per_table} each)",
            led[i]
        );
        assert!(
            take <= tables,
            "host {i}: {take} takes (each table at most once, at start)"
        );
        assert_eq!(release, 0, "nobody released yet");
        // A read of each lease before taking it, and per table bootstrapped here one listing
        // of the table's leases (where an earlier shard layout got to, if any).
        assert!(
            read <= 2 * tables + (tables - led[i]) * per_table,
            "host {i}: {read} lease reads while watching {} tables",
            tables - led[i]
        );
        if led[i] == 0 {
            assert_eq!(snapshots, 0, "host {i} leads nothing and must not poll");
        }
    }
    let old_design = replicas.len() as u64 * tables * (elapsed.as_millis() as u64 / INTERVAL_MS);
    eprintln!(
        "lease transactions over {elapsed:.1?} (ttl {TTL:?}, interval {INTERVAL_MS} ms, 3 hosts × \
         3 tables; budget {per_table} renewals per table): {total_read_write} read-write in all, \
         against ~{old_design} with a read-write lease transaction per table per tick on every \
         host\n  {}",
        report.join("\n  ")
    );

    // A clean stop of the busiest leader releases its leases with its watermark: the others
    // take over (reading the lease every third of the TTL) and resume from it.
    let busiest = (0..replicas.len()).max_by_key(|i| led[*i]).expect("hosts");
    let bootstraps = |replicas: &[Replica]| -> usize {
        replicas
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != busiest)
            .map(|(_, r)| r.count("no watermark yet: bootstrapping"))
            .sum()
    };
    let bootstrapped_before = bootstraps(&replicas);
    let stopped_at = Instant::now();
    let status = replicas[busiest]
        .process
        .as_mut()
        .expect("running")
        .group
        .signal_and_wait("TERM", Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "clean stop: {status:?}\n{}",
        replicas[busiest].log_text()
    );
    let others: Vec<usize> = (0..replicas.len()).filter(|i| *i != busiest).collect();
    let taken = eventually(Duration::from_secs(60), || {
        let took: usize = others
            .iter()
            .map(|i| replicas[*i].count("took the poller lease"))
            .sum();
        async move { took == TABLES.len() }
    })
    .await;
    assert!(taken, "the others did not take every table over");
    eprintln!(
        "after a clean stop of host {busiest}, its {} tables were taken over within {:?} (ttl {TTL:?})",
        led[busiest],
        stopped_at.elapsed()
    );
    let resumed = || -> usize {
        others
            .iter()
            .map(|i| replicas[*i].count("resuming from the watermark stored with the lease"))
            .sum()
    };
    let handed_over = led[busiest] as usize;
    let all_resumed = eventually(Duration::from_secs(30), || {
        let n = resumed();
        async move { n >= handed_over }
    })
    .await;
    assert!(
        all_resumed && resumed() == handed_over,
        "each table resumed from the watermark released with its lease ({} of {}):\n{}",
        resumed(),
        led[busiest],
        lease_lines(&replicas)
    );
    assert_eq!(
        bootstraps(&replicas),
        bootstrapped_before,
        "nobody started a handed-over table over"
    );
    let more = write_rows(&db, 1000, 6, Duration::from_millis(100)).await;
    for t in TABLES {
        let got = seen.get_mut(t).expect("table");
        collect(
            &ledger,
            &format!("check-{t}"),
            written.len() + more.len(),
            got,
        )
        .await;
        let want: BTreeSet<String> = written
            .iter()
            .chain(&more)
            .map(|id| id.to_string())
            .collect();
        assert_eq!(
            *got, want,
            "every row of {t} was delivered across the handover"
        );
    }
    for i in others {
        let m = replicas[i].metrics();
        assert_eq!(
            transactions(&m, "read_write", "release"),
            0,
            "host {i} still runs"
        );
    }
}
