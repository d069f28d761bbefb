//! Capture by change stream with several hosts on one configuration, against the official
//! emulators (partitions churning every 3–6 s): the table's lease moving after a SIGKILL,
//! and the stream's partitions shared among the replicas (`share-partitions`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ledgerhost_source::spanner::SpannerConfig;
use ledgerhost_tests::harness::google::{GoogleEmulators, spanner_write};
use ledgerhost_tests::harness::host::{HostProcess, Workspace, recorder_manifest};
use ledgerhost_tests::harness::{eventually, free_port};

use super::change_streams::{ACCOUNTS, HOST_BIN, STREAM, recorded};

/// Hosts on one configuration capturing `accounts` by change stream, each with a recorder.
struct Replicas {
    hosts: Vec<Host>,
}

struct Host {
    ws: Workspace,
    admin: String,
    process: Option<HostProcess>,
}

impl Replicas {
    /// Starts `n` hosts; `table_lines` are added to the `accounts` table's settings.
    fn start(
        emu: &GoogleEmulators,
        db: &SpannerConfig,
        n: usize,
        table_lines: &str,
        topic_prefix: &str,
    ) -> Replicas {
        // From before the first write (the default, `now`, is the host's first read).
        let start = ledgerhost_core::clock::now_micros();
        let env = emu.spanner_env();
        let hosts = (0..n)
            .map(|_| {
                let ws = Workspace::new();
                let admin = format!("127.0.0.1:{}", free_port());
                let text = format!(
                    "{}[[tables]]\nname = \"accounts\"\ncapture = \"change-stream\"\n\
                     change-stream = \"accounts_changes\"\ninterval-ms = 100\n\
                     start = \"{start}\"\n{table_lines}",
                    emu.host_config(
                        db,
                        &[
                            "lease-ttl-ms = 2000".into(),
                            "drain-timeout-ms = 10000".into()
                        ],
                        topic_prefix,
                        &admin
                    )
                );
                let config: std::path::PathBuf = ws.path().join("ledgerhost.toml");
                std::fs::write(&config, text).expect("write config");
                ws.install_plugin(
                    "recorder",
                    "rec-accounts",
                    &recorder_manifest("rec-accounts", "accounts"),
                );
                let process = Some(HostProcess::start_with_env(
                    HOST_BIN.as_ref(),
                    &config,
                    &ws.path().join("host.log"),
                    &env,
                ));
                Host { ws, admin, process }
            })
            .collect();
        Replicas { hosts }
    }

    fn log_text(&self, i: usize) -> String {
        std::fs::read_to_string(self.hosts[i].ws.path().join("host.log")).unwrap_or_default()
    }

    fn count(&self, i: usize, needle: &str) -> usize {
        self.log_text(i).matches(needle).count()
    }

    fn logs(&self) -> String {
        (0..self.hosts.len())
            .map(|i| format!("--- host {i}:\n{}", self.log_text(i)))
            .collect()
    }

    /// Waits until one host holds the table's lease and returns it.
    async fn leader(&self) -> usize {
        let found = eventually(Duration::from_secs(180), || {
            let n: usize = (0..self.hosts.len())
                .map(|i| self.count(i, "took the poller lease"))
                .sum();
            async move { n >= 1 }
        })
        .await;
        assert!(found, "no host took the lease:\n{}", self.logs());
        (0..self.hosts.len())
            .find(|i| self.count(*i, "took the poller lease") >= 1)
            .expect("found above")
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.hosts[i].process.take() {
            p.kill();
        }
    }

    /// Every key's recorded versions, over every host's recorder.
    async fn recorded(&self) -> BTreeMap<i64, BTreeSet<i64>> {
        let mut all: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
        for h in &self.hosts {
            for (k, versions) in recorded(&h.ws, "accounts").await {
                all.entry(k).or_default().extend(versions);
            }
        }
        all
    }

    /// Waits until every version of `written` reached some host's recorder.
    async fn assert_all_recorded(&self, written: &BTreeMap<i64, Vec<i64>>) {
        let want: BTreeMap<i64, BTreeSet<i64>> = written
            .iter()
            .map(|(k, v)| (*k, v.iter().copied().collect()))
            .collect();
        let complete = eventually(Duration::from_secs(120), || {
            let want = &want;
            async move { self.recorded().await == *want }
        })
        .await;
        let got = self.recorded().await;
        let missing: Vec<_> = want
            .iter()
            .filter(|(k, v)| got.get(k) != Some(v))
            .take(5)
            .collect();
        assert!(
            complete,
            "every version of every key reached a host (first keys that differ: {missing:?}; \
             the emulator's known miss at a 100 ms slice end would be a single version)\n{}",
            self.logs()
        );
    }

    /// `ledgerhost_change_stream_partitions_queried` of `accounts` on host `i` (0 when it
    /// does not answer).
    async fn queried(&self, i: usize) -> u64 {
        let Ok((200, text)) = ledgerhost::admin_client::get(&self.hosts[i].admin, "/metrics").await
        else {
            return 0;
        };
        text.lines()
            .find_map(|l| {
                l.strip_prefix("ledgerhost_change_stream_partitions_queried{table=\"accounts\"} ")
            })
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }
}

/// One round of writes: an insert, an update, and every fourth round a hard delete, each its
/// own transaction; their commit times recorded under the key.
async fn write_round(db: &SpannerConfig, round: i64, written: &mut BTreeMap<i64, Vec<i64>>) {
    let ts = spanner_write(
        db,
        &[format!(
            "INSERT INTO accounts (id, owner, balance) VALUES ({round}, 'o', {round})"
        )],
    )
    .await;
    written.entry(round).or_default().push(ts);
    let ts = spanner_write(
        db,
        &[format!(
            "UPDATE accounts SET balance = 0 WHERE id = {round}"
        )],
    )
    .await;
    written.entry(round).or_default().push(ts);
    if round % 4 == 0 {
        let ts = spanner_write(db, &[format!("DELETE FROM accounts WHERE id = {round}")]).await;
        written.entry(round).or_default().push(ts);
    }
}

/// Two hosts on one configuration capture `accounts` by change stream: the holder of the
/// table's lease reads every partition; SIGKILL it during the load and the other takes the
/// lease over and reads the stream again from the watermark stored with the lease. Every
/// committed version of every key, hard deletes included, reaches the recorder of one host
/// or the other (per-key order across a kill is the single host's test in `change_streams`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_host_takes_a_change_stream_over_after_the_first_is_killed() {
    let emu = GoogleEmulators::start_churning(3).await;
    let db = emu.create_database(&[ACCOUNTS, STREAM]).await;
    let mut replicas = Replicas::start(&emu, &db, 2, "", "two-");
    let leader = replicas.leader().await;
    let survivor = 1 - leader;

    let mut written: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let began = Instant::now();
    let mut round = 0i64;
    let mut killed = None;
    while began.elapsed() < Duration::from_secs(12) {
        round += 1;
        write_round(&db, round, &mut written).await;
        if killed.is_none() && began.elapsed() > Duration::from_secs(4) {
            replicas.kill(leader);
            killed = Some(Instant::now());
        }
    }
    let took_over = eventually(Duration::from_secs(60), || {
        let n = replicas.count(survivor, "took the poller lease");
        async move { n == 1 }
    })
    .await;
    assert!(
        took_over,
        "the survivor never took the lease:\n{}",
        replicas.log_text(survivor)
    );
    assert!(
        replicas
            .log_text(survivor)
            .contains("resuming from the watermark stored with the lease"),
        "the survivor did not resume from the lease's watermark:\n{}",
        replicas.log_text(survivor)
    );
    replicas.assert_all_recorded(&written).await;
    eprintln!(
        "{} versions over {round} rounds; the survivor took over {:?} after the SIGKILL",
        written.values().map(Vec::len).sum::<usize>(),
        killed.map(|k| k.elapsed())
    );
    emu.assert_pubsub_clean("change-stream takeover");
}

/// Two hosts with `share-partitions = true`: the holder of the table's lease merges the
/// stream, and both query its partitions (each its fair share of the partition leases, seen
/// in `ledgerhost_change_stream_partitions_queried` and in the merging host's `/status`).
/// SIGKILL the host that does not merge during the load: its partition leases expire and
/// the merging host queries those partitions too. Every committed version of every key
/// reaches a recorder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_share_a_change_stream_s_partitions_and_one_takes_the_other_s_over() {
    let emu = GoogleEmulators::start_churning(3).await;
    let db = emu.create_database(&[ACCOUNTS, STREAM]).await;
    let mut replicas = Replicas::start(&emu, &db, 2, "share-partitions = true\n", "share-");
    let merger = replicas.leader().await;
    let other = 1 - merger;

    let mut written: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let mut queried = [0u64; 2];
    let mut holders_seen: BTreeSet<String> = BTreeSet::new();
    let began = Instant::now();
    let mut round = 0i64;
    let mut killed = false;
    while began.elapsed() < Duration::from_secs(16) {
        round += 1;
        write_round(&db, round, &mut written).await;
        if !killed {
            for (i, q) in queried.iter_mut().enumerate() {
                *q = (*q).max(replicas.queried(i).await);
            }
            if let Ok((200, body)) =
                ledgerhost::admin_client::get(&replicas.hosts[merger].admin, "/status").await
            {
                let status: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                for t in status["tables"].as_array().into_iter().flatten() {
                    for p in t["partitions"].as_array().into_iter().flatten() {
                        if let Some(h) = p["holder"].as_str() {
                            holders_seen.insert(h.to_string());
                        }
                    }
                }
            }
        }
        if !killed && began.elapsed() > Duration::from_secs(8) {
            assert!(
                queried.iter().all(|q| *q > 0),
                "both hosts query partitions (most seen: {queried:?})\n{}",
                replicas.logs()
            );
            replicas.kill(other);
            killed = true;
        }
    }
    // The merging host queries every partition now.
    let alone = eventually(Duration::from_secs(60), || async {
        replicas.queried(merger).await > 0
            && replicas.count(
                merger,
                "reading a change stream partition for the shared read",
            ) > 0
    })
    .await;
    assert!(alone, "{}", replicas.log_text(merger));
    replicas.assert_all_recorded(&written).await;
    assert_eq!(
        holders_seen.len(),
        2,
        "the merging host's /status named both replicas as partition holders: {holders_seen:?}"
    );
    let took: Vec<usize> = (0..2)
        .map(|i| replicas.count(i, "reading a change stream partition for the shared read"))
        .collect();
    eprintln!(
        "{} versions over {round} rounds; partition reads started per host: {took:?}, most \
         queried at once: {queried:?}",
        written.values().map(Vec::len).sum::<usize>()
    );
    emu.assert_pubsub_clean("shared change-stream partitions");
}
