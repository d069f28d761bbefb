//! Sharded polling on the emulators: three host processes share one table of six shards
//! (by primary-key hash). Each host settles on two shard leases; one host is SIGKILLed
//! during a load of updates and the two others take its shards over once its leases
//! expire. Every row version is delivered, no key arrives out of order, and no shard is
//! polled by two replicas at once — counted from the `poll` line every poll logs (shard,
//! replica, start and end).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ledgerhost_core::ledger::{Ledger, SubscriptionSpec, attr};
use ledgerhost_ledger::pubsub::PubSubLedger;
use ledgerhost_source::spanner::SpannerConfig;
use ledgerhost_tests::harness::google::{
    GoogleEmulators, commit_times, commit_ts_index, spanner_write,
};
use ledgerhost_tests::harness::host::{HostProcess, Workspace};
use ledgerhost_tests::harness::metrics::{self, Samples};
use ledgerhost_tests::harness::{event_key, eventually, free_port};

const HOST_BIN: &str = env!("CARGO_BIN_EXE_ledgerhost-under-test");
const TABLE: &str = "sharded";
const SHARDS: u32 = 6;
const KEYS: i64 = 60;
const TTL: Duration = Duration::from_millis(2000);
const TOPIC_PREFIX: &str = "shards-";

/// One host process with its own workspace, admin port and replica id.
struct Replica {
    _ws: Workspace,
    id: String,
    config: PathBuf,
    log: PathBuf,
    admin: String,
    process: Option<HostProcess>,
}

impl Replica {
    fn new(emu: &GoogleEmulators, db: &SpannerConfig, id: &str) -> Self {
        let ws = Workspace::new();
        let admin = format!("127.0.0.1:{}", free_port());
        let host = [
            format!("lease-ttl-ms = {}", TTL.as_millis()),
            format!("replica-id = \"{id}\""),
            "drain-timeout-ms = 10000".to_string(),
        ];
        let text = emu.host_config(db, &host, TOPIC_PREFIX, &admin)
            + &format!(
                "[[tables]]\nname = \"{TABLE}\"\ninterval-ms = 100\npage-size = 50\n\
                 shards = {SHARDS}\n"
            );
        let config = ws.path().join("ledgerhost.toml");
        std::fs::write(&config, text).expect("write config");
        let log = ws.path().join("host.log");
        Replica {
            _ws: ws,
            id: id.to_string(),
            config,
            log,
            admin,
            process: None,
        }
    }

    fn start(&mut self) {
        // The poller's `poll` lines are at debug level.
        let env = [(
            "LEDGERHOST_LOG".to_string(),
            "info,ledgerhost::poller=debug,wasmtime=warn,cranelift=warn".to_string(),
        )];
        self.process = Some(HostProcess::start_with_env(
            HOST_BIN.as_ref(),
            &self.config,
            &self.log,
            &env,
        ));
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn metrics(&self) -> Samples {
        match ledgerhost::admin_client::get_blocking(&self.admin, "/metrics") {
            Ok((200, text)) => metrics::parse(&text),
            _ => Samples::new(),
        }
    }

    /// The shards this host polls now, by its `/metrics`.
    fn held(&self) -> BTreeSet<u32> {
        self.metrics()
            .iter()
            .filter(|((name, labels), v)| {
                name == "ledgerhost_poller_leader"
                    && labels.get("table").map(String::as_str) == Some(TABLE)
                    && **v == 1.0
            })
            .filter_map(|((_, labels), _)| labels.get("shard")?.parse().ok())
            .collect()
    }
}

/// One poll of one shard by one replica, from its `poll` log line.
#[derive(Debug, Clone)]
struct PollSpan {
    shard: String,
    replica: String,
    started: i64,
    ended: i64,
}

/// Every `poll` line of a host log.
fn poll_spans(log: &str) -> Vec<PollSpan> {
    log.lines()
        .filter(|l| l.contains(" poll ") && l.contains("started_micros="))
        .filter_map(|l| {
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|t| t.strip_prefix(&format!("{k}=")))
                    .map(|v| v.trim_matches('"').to_string())
            };
            Some(PollSpan {
                shard: field("shard")?,
                replica: field("replica")?,
                started: field("started_micros")?.parse().ok()?,
                ended: field("ended_micros")?.parse().ok()?,
            })
        })
        .collect()
}

/// Pairs of polls of one shard by two replicas whose spans overlap.
fn overlapping_polls(spans: &[PollSpan]) -> Vec<(PollSpan, PollSpan)> {
    let mut by_shard: BTreeMap<&str, Vec<&PollSpan>> = BTreeMap::new();
    for s in spans {
        by_shard.entry(&s.shard).or_default().push(s);
    }
    let mut out = Vec::new();
    for polls in by_shard.values_mut() {
        polls.sort_by_key(|s| s.started);
        for (i, a) in polls.iter().enumerate() {
            for b in &polls[i + 1..] {
                if b.started > a.ended {
                    break;
                }
                if a.replica != b.replica {
                    out.push(((*a).clone(), (*b).clone()));
                }
            }
        }
    }
    out
}

fn holdings(replicas: &[Replica]) -> String {
    replicas
        .iter()
        .map(|r| format!("{}: {:?}", r.id, r.held()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_share_six_shards_and_take_over_a_killed_hosts_shards() {
    let emu = GoogleEmulators::start().await;
    let ddl = [
        format!(
            "CREATE TABLE {TABLE} (id INT64 NOT NULL, v INT64, \
             commit_ts TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp=true)) PRIMARY KEY (id)"
        ),
        commit_ts_index(TABLE),
    ];
    let db = emu
        .create_database(&ddl.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let ledger = PubSubLedger::connect(emu.pubsub_config())
        .await
        .expect("pubsub");
    let subscription = "check-sharded";
    ledger
        .ensure_subscription(&SubscriptionSpec {
            name: subscription.into(),
            topic: format!("{TOPIC_PREFIX}{TABLE}"),
            attribute_filter: BTreeMap::new(),
            ack_deadline: Duration::from_secs(60),
            dead_letter_topic: "check-sharded-dead".into(),
        })
        .await
        .expect("subscription");

    let mut replicas: Vec<Replica> = (0..3)
        .map(|i| Replica::new(&emu, &db, &format!("r{i}")))
        .collect();
    for r in &mut replicas {
        r.start();
    }
    // The fair share: two shards each, every shard held once.
    let settled = eventually(Duration::from_secs(120), || {
        let held: Vec<BTreeSet<u32>> = replicas.iter().map(Replica::held).collect();
        async move {
            held.iter().all(|h| h.len() == 2)
                && held.iter().flatten().collect::<BTreeSet<_>>().len() == SHARDS as usize
        }
    })
    .await;
    assert!(
        settled,
        "each host should hold two shards: {}\n{}",
        holdings(&replicas),
        replicas[0].log_text()
    );

    // A load of updates: every key inserted, then updated once per round.
    // One statement, so the transaction is short beside the hosts' lease transactions.
    let rows: Vec<String> = (1..=KEYS)
        .map(|id| format!("({id}, 0, PENDING_COMMIT_TIMESTAMP())"))
        .collect();
    spanner_write(
        &db,
        &[format!(
            "INSERT INTO {TABLE} (id, v, commit_ts) VALUES {}",
            rows.join(", ")
        )],
    )
    .await;
    let victim = 2;
    let victim_shards = replicas[victim].held();
    let mut killed_at = None;
    let survivors = [0, 1];
    // When the survivors were first seen holding all six shards, during the load.
    let mut moved_after = None;
    let all_held = |replicas: &[Replica]| {
        let held: Vec<BTreeSet<u32>> = survivors.iter().map(|i| replicas[*i].held()).collect();
        held.iter().all(|h| h.len() == 3)
            && held.iter().flatten().collect::<BTreeSet<_>>().len() == SHARDS as usize
    };
    for round in 1..=40 {
        spanner_write(
            &db,
            &[format!(
                "UPDATE {TABLE} SET v = {round}, commit_ts = PENDING_COMMIT_TIMESTAMP() WHERE true"
            )],
        )
        .await;
        if round == 12 {
            replicas[victim].process.as_mut().expect("running").kill();
            killed_at = Some(Instant::now());
        }
        if let Some(at) = killed_at
            && moved_after.is_none()
            && all_held(&replicas)
        {
            moved_after = Some(at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let killed_at = killed_at.expect("killed");

    // The survivors take the dead host's shards: three each.
    let moved = eventually(Duration::from_secs(60), || {
        let done = all_held(&replicas);
        async move { done }
    })
    .await;
    assert!(
        moved,
        "the survivors did not take shards {victim_shards:?} over: {}",
        holdings(&replicas)
    );
    // `/status` shows each shard: who polls it, here or on the other survivor.
    let holders_shown = eventually(Duration::from_secs(10), || {
        let status = ledgerhost::admin_client::get_blocking(&replicas[0].admin, "/status");
        let other = replicas[1].id.clone();
        async move {
            let Ok((200, body)) = status else {
                return false;
            };
            let status: ledgerhost::status::HostStatus =
                serde_json::from_str(&body).expect("status JSON");
            let shards: Vec<_> = status
                .tables
                .iter()
                .filter(|t| t.table.starts_with("sharded.shard-"))
                .collect();
            shards.len() == SHARDS as usize
                && shards.iter().all(|t| {
                    t.shard.is_some() && (t.leader || t.holder.as_deref() == Some(other.as_str()))
                })
        }
    })
    .await;
    assert!(
        holders_shown,
        "/status lists the six shards with their holders: {:?}",
        ledgerhost::admin_client::get_blocking(&replicas[0].admin, "/status")
    );
    let moved_after = moved_after.unwrap_or_else(|| killed_at.elapsed());
    eprintln!(
        "shards {victim_shards:?} of the killed host moved {moved_after:?} after the kill \
         (lease TTL {TTL:?}; renewed every {:?}, so its leases expired {:?} to {TTL:?} after it)",
        TTL / 3,
        TTL * 2 / 3
    );

    // Every key's newest version arrives, and each key's versions arrive in commit order.
    let want = commit_times(&db, TABLE).await;
    assert_eq!(want.len(), KEYS as usize);
    let mut delivered: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let complete = |d: &BTreeMap<i64, Vec<i64>>| {
        want.iter()
            .all(|(id, ts)| d.get(id).and_then(|v| v.iter().max()) == Some(ts))
    };
    while !complete(&delivered) && Instant::now() < deadline {
        let batch = ledger
            .pull(subscription, 500, Duration::from_secs(1))
            .await
            .unwrap_or_default();
        let ids: Vec<String> = batch.iter().map(|d| d.ack_id.clone()).collect();
        for d in &batch {
            let id: i64 = event_key(&d.message).parse().expect("integer key");
            let ts: i64 = d.message.attributes[attr::COMMIT_TS]
                .parse()
                .expect("commit_ts attribute");
            delivered.entry(id).or_default().push(ts);
        }
        if !ids.is_empty() {
            ledger.ack(subscription, &ids).await.expect("ack");
        }
    }
    assert!(
        complete(&delivered),
        "every key's last version was delivered (missing: {:?})",
        want.iter()
            .filter(|(id, ts)| delivered.get(id).and_then(|v| v.iter().max()) != Some(ts))
            .map(|(id, _)| id)
            .collect::<Vec<_>>()
    );
    for (id, versions) in &delivered {
        assert!(
            versions.windows(2).all(|w| w[0] <= w[1]),
            "key {id} arrived out of commit order: {versions:?}"
        );
    }
    let versions: usize = delivered
        .values()
        .map(|v| v.iter().collect::<BTreeSet<_>>().len())
        .sum();
    assert!(versions > KEYS as usize * 2, "the load spanned many polls");

    // No shard was polled by two replicas at once, over the whole run.
    let spans: Vec<PollSpan> = replicas
        .iter()
        .flat_map(|r| poll_spans(&r.log_text()))
        .collect();
    let pollers: BTreeMap<&str, BTreeSet<&str>> = spans.iter().fold(BTreeMap::new(), |mut m, s| {
        m.entry(s.shard.as_str())
            .or_default()
            .insert(s.replica.as_str());
        m
    });
    assert_eq!(
        pollers.len(),
        SHARDS as usize,
        "every shard was polled: {pollers:?}"
    );
    let victim_id = replicas[victim].id.clone();
    for shard in &victim_shards {
        let unit = format!("{TABLE}.shard-{shard}-of-{SHARDS}");
        let by = &pollers[unit.as_str()];
        assert!(
            by.contains(victim_id.as_str()) && by.len() >= 2,
            "{unit} was polled by the killed host, then by a survivor: {by:?}"
        );
    }
    let overlaps = overlapping_polls(&spans);
    eprintln!(
        "{} polls logged over {} shards; {} pairs of polls of one shard by two replicas at once",
        spans.len(),
        pollers.len(),
        overlaps.len()
    );
    assert!(
        overlaps.is_empty(),
        "a shard polled by two replicas at once: {overlaps:?}"
    );
}
