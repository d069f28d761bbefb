//! The official Google emulators (Cloud Spanner, Pub/Sub), started on free loopback ports
//! for one test and killed with their process groups when dropped. Pub/Sub is reached
//! through a strict front (`pubsub_front`) that refuses what production refuses; a test
//! whose requests it refused fails.
//!
//! ```text
//! let emu = GoogleEmulators::start();
//! let db = emu.create_database(&["CREATE TABLE t (...) PRIMARY KEY (id)", &commit_ts_index("t")]).await;
//! let source = SpannerSource::connect(db.clone()).await?;
//! let ledger = PubSubLedger::connect(emu.pubsub_config()).await?;
//! emu.stop_pubsub(); emu.start_pubsub(); // same port, empty state
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use google_cloud_lro::Poller;
use ledgerhost_ledger::pubsub::PubSubConfig;
use ledgerhost_source::spanner::{SpannerConfig, SpannerSource};

use super::pubsub_front::PubSubFront;
use super::{ProcessGroup, free_port, wait_for_port};

/// Project id used on the emulators.
pub const PROJECT: &str = "ledgerhost-test";
/// Spanner instance id created on the emulator.
pub const INSTANCE: &str = "test-instance";

/// The Cloud SDK root (`gcloud info --format='value(installation.sdk_root)'`), or
/// `CLOUDSDK_ROOT` when set.
pub fn sdk_root() -> PathBuf {
    if let Some(root) = std::env::var_os("CLOUDSDK_ROOT") {
        return PathBuf::from(root);
    }
    let out = Command::new("gcloud")
        .args(["info", "--format=value(installation.sdk_root)"])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `gcloud` ({e}): the Google Cloud SDK is missing. It comes with the machine \
                 image (packages google-cloud-cli, google-cloud-cli-spanner-emulator, \
                 google-cloud-cli-pubsub-emulator); or set CLOUDSDK_ROOT to its root"
            )
        });
    let root = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && !root.is_empty(),
        "`gcloud info` did not report the SDK root: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(root)
}

fn require(path: PathBuf, package: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: it comes with the machine image's `{package}` package (Google's apt \
         source is not reachable from here, so it cannot be reinstalled)",
        path.display()
    );
    path
}

/// A running Spanner emulator (gateway + emulator in one process group).
pub struct SpannerEmulator {
    _group: ProcessGroup,
    /// gRPC port (data plane).
    pub grpc_port: u16,
    /// REST port (admin).
    pub http_port: u16,
}

impl SpannerEmulator {
    /// Starts the emulator on free ports and creates [`INSTANCE`]. A free port can be taken
    /// by another process (another test's emulator) before the gateway binds it; the
    /// instance creation then fails, and the emulator is started again on other ports.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts the emulator with its change-stream partition tokens living `seconds` to twice
    /// that (the default is 20–40 s), so a test crosses several generations of partitions.
    pub async fn start_churning(seconds: u32) -> Self {
        Self::start_with(&[format!(
            "--override_change_stream_partition_token_alive_seconds={seconds}"
        )])
        .await
    }

    async fn start_with(gateway_args: &[String]) -> Self {
        let mut last = String::new();
        for _ in 0..3 {
            let emu = Self::spawn(gateway_args);
            match emu.create_instance().await {
                Ok(()) => return emu,
                Err(e) => last = e,
            }
        }
        panic!("cannot create the Spanner emulator instance (3 tries on fresh ports): {last}");
    }

    fn spawn(gateway_args: &[String]) -> Self {
        let dir = sdk_root().join("bin/cloud_spanner_emulator");
        let gateway = require(
            dir.join("gateway_main"),
            "google-cloud-cli-spanner-emulator",
        );
        let emulator = require(
            dir.join("emulator_main"),
            "google-cloud-cli-spanner-emulator",
        );
        let (grpc_port, http_port) = (free_port(), free_port());
        let mut cmd = Command::new(gateway);
        cmd.arg("--hostname=127.0.0.1")
            .arg(format!("--grpc_port={grpc_port}"))
            .arg(format!("--http_port={http_port}"))
            .arg(format!("--grpc_binary={}", emulator.display()))
            .args(gateway_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let group =
            ProcessGroup::spawn("spanner emulator", cmd).expect("spawn the Spanner emulator");
        assert!(
            wait_for_port(grpc_port, Duration::from_secs(60))
                && wait_for_port(http_port, Duration::from_secs(60)),
            "the Spanner emulator did not open ports {grpc_port}/{http_port}"
        );
        SpannerEmulator {
            _group: group,
            grpc_port,
            http_port,
        }
    }

    fn admin_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    async fn create_instance(&self) -> Result<(), String> {
        use google_cloud_spanner_admin_instance_v1::client::InstanceAdmin;
        use google_cloud_spanner_admin_instance_v1::model::Instance;
        let admin = InstanceAdmin::builder()
            .with_endpoint(self.admin_endpoint())
            .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build())
            .build()
            .await
            .map_err(|e| format!("build the Spanner instance admin client: {e}"))?;
        // The REST gateway may accept connections a while before it serves requests (long
        // on a loaded machine).
        let mut last = None;
        for _ in 0..150 {
            match admin
                .create_instance()
                .set_parent(format!("projects/{PROJECT}"))
                .set_instance_id(INSTANCE)
                .set_instance(
                    Instance::new()
                        .set_config(format!(
                            "projects/{PROJECT}/instanceConfigs/emulator-config"
                        ))
                        .set_display_name("ledgerhost tests")
                        .set_node_count(1),
                )
                .poller()
                .until_done()
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!("{last:?}"))
    }

    /// Creates a fresh database with `ddl` and returns its config (explicit endpoints, no
    /// environment variables, so tests can run side by side).
    pub async fn create_database(&self, ddl: &[&str]) -> SpannerConfig {
        use google_cloud_spanner_admin_database_v1::client::DatabaseAdmin;
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("db{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let admin = DatabaseAdmin::builder()
            .with_endpoint(self.admin_endpoint())
            .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build())
            .build()
            .await
            .expect("build the Spanner database admin client");
        admin
            .create_database()
            .set_parent(format!("projects/{PROJECT}/instances/{INSTANCE}"))
            .set_create_statement(format!("CREATE DATABASE `{name}`"))
            .set_extra_statements(ddl.iter().map(|s| s.to_string()))
            .poller()
            .until_done()
            .await
            .unwrap_or_else(|e| panic!("cannot create database {name} with {ddl:?}: {e}"));
        self.config(&name)
    }

    /// Config of database `name` on this emulator.
    pub fn config(&self, name: &str) -> SpannerConfig {
        SpannerConfig {
            project: PROJECT.into(),
            instance: INSTANCE.into(),
            database: name.into(),
            endpoint: Some(format!("http://127.0.0.1:{}", self.grpc_port)),
            admin_endpoint: Some(self.admin_endpoint()),
            missing_commit_index: Default::default(),
            change_stream_heartbeat: None,
        }
    }

    /// `SPANNER_EMULATOR_HOST` value for a child process (the host binary).
    pub fn emulator_host(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }
}

/// The index a captured table needs (production refuses to poll without one): on
/// `table`'s `commit_ts` column, as the host's refusal message prints it.
pub fn commit_ts_index(table: &str) -> String {
    format!("CREATE INDEX {table}_by_commit_ts ON {table} (commit_ts)")
}

/// How long one attempt of [`spanner_write`] may take, its ABORTED retries included.
const WRITE_ATTEMPT: Duration = Duration::from_secs(20);

/// Runs `statements` (DML) in one read-write transaction and returns its commit timestamp
/// in microseconds. Write commit-timestamp columns as `PENDING_COMMIT_TIMESTAMP()`.
pub async fn spanner_write(db: &SpannerConfig, statements: &[String]) -> i64 {
    use google_cloud_spanner::statement::Statement;
    let source = SpannerSource::connect(db.clone())
        .await
        .expect("connect to the Spanner emulator");
    // The emulator runs one read-write transaction at a time and fails a concurrent one
    // (the host's lease renewal, say) with these, or keeps aborting it past its attempt's
    // deadline; an application would retry too.
    let conflict = |e: &str| {
        e.contains("Transaction not found")
            || e.contains("Invalid transaction ID")
            || e.contains("ABORTED")
            || e.to_ascii_lowercase().contains("deadline")
    };
    let mut attempt = 0;
    let result = loop {
        let r = source
            .client()
            .read_write_transaction()
            // The runner retries ABORTED without limit by default: under the hosts' lease
            // transactions that can go on for minutes, so one attempt is bounded and the
            // next starts afresh (its backoff too).
            .with_transaction_timeout(WRITE_ATTEMPT)
            .build()
            .run(async |tx| {
                for s in statements {
                    tx.execute_update(Statement::builder(s.clone()).build())
                        .await?;
                }
                Ok(())
            })
            .await;
        match r {
            Ok(r) => break r,
            Err(e) if attempt < 20 && conflict(&e.to_string()) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
            }
            Err(e) => panic!(
                "Spanner write failed after {attempt} retries of at most {WRITE_ATTEMPT:?} \
                 each ({statements:?}): {e}"
            ),
        }
    };
    let ts = result
        .commit_timestamp()
        .expect("Spanner reports the commit timestamp");
    ts.seconds() * 1_000_000 + i64::from(ts.nanos()) / 1_000
}

/// A running Pub/Sub emulator that can be stopped and started again on the same port, behind
/// a strict front ([`PubSubFront`]): [`PubSubEmulator::endpoint`] is the front's, so every
/// request is held to production's rules. The front outlives emulator restarts (same
/// endpoint). A test fails if the front refused anything: at [`PubSubEmulator::assert_clean`]
/// or, at the latest, when the emulator is dropped.
pub struct PubSubEmulator {
    group: Option<ProcessGroup>,
    /// The emulator's port (gRPC and REST), behind the front.
    pub port: u16,
    front: PubSubFront,
}

impl PubSubEmulator {
    /// Starts the emulator on a free port, and its front.
    pub fn start() -> Self {
        let port = free_port();
        let test = std::thread::current()
            .name()
            .unwrap_or("a Google test")
            .to_string();
        let mut emu = PubSubEmulator {
            group: None,
            port,
            front: PubSubFront::start(format!("http://127.0.0.1:{port}"))
                .fail_on_refusals_at_drop(test),
        };
        emu.start_again();
        emu
    }

    /// The strict front (its counters and refusals).
    pub fn front(&self) -> &PubSubFront {
        &self.front
    }

    /// Fails the test if the front refused any request (production would have).
    pub fn assert_clean(&self, context: &str) {
        self.front.assert_no_refusals(context);
    }

    /// The emulator itself, bypassing the front (`http://127.0.0.1:PORT`).
    pub fn emulator_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the emulator (again) on its port; its state starts empty.
    pub fn start_again(&mut self) {
        assert!(
            self.group.is_none(),
            "the Pub/Sub emulator is already running"
        );
        let bin = require(
            sdk_root().join("platform/pubsub-emulator/bin/cloud-pubsub-emulator"),
            "google-cloud-cli-pubsub-emulator",
        );
        let mut cmd = Command::new(bin);
        let log =
            std::env::temp_dir().join(format!("ledgerhost-pubsub-emulator-{}.log", self.port));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("emulator log");
        cmd.arg("--host=127.0.0.1")
            .arg(format!("--port={}", self.port))
            .stdout(out.try_clone().expect("log"))
            .stderr(out);
        self.group =
            Some(ProcessGroup::spawn("pubsub emulator", cmd).expect("spawn the Pub/Sub emulator"));
        assert!(
            wait_for_port(self.port, Duration::from_secs(60)),
            "the Pub/Sub emulator did not open port {} (it needs Java)",
            self.port
        );
    }

    /// Kills the emulator (SIGKILL to its group); everything it held is gone.
    pub fn stop(&mut self) {
        if let Some(mut g) = self.group.take() {
            g.kill();
        }
        // Wait until the port is free so a restart can bind it.
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The front's `http://127.0.0.1:PORT`: what clients use.
    pub fn endpoint(&self) -> String {
        self.front.endpoint()
    }

    /// The front's `127.0.0.1:PORT` (a `PUBSUB_EMULATOR_HOST` value).
    pub fn host(&self) -> String {
        self.front.host()
    }
}

/// Both emulators, for tests of the Google backends.
pub struct GoogleEmulators {
    /// Cloud Spanner emulator.
    pub spanner: SpannerEmulator,
    /// Pub/Sub emulator.
    pub pubsub: PubSubEmulator,
}

impl GoogleEmulators {
    /// Starts both emulators.
    pub async fn start() -> Self {
        let pubsub = PubSubEmulator::start();
        let spanner = SpannerEmulator::start().await;
        GoogleEmulators { spanner, pubsub }
    }

    /// Starts both emulators, Spanner's change-stream partitions living `seconds` to twice
    /// that ([`SpannerEmulator::start_churning`]).
    pub async fn start_churning(seconds: u32) -> Self {
        let pubsub = PubSubEmulator::start();
        let spanner = SpannerEmulator::start_churning(seconds).await;
        GoogleEmulators { spanner, pubsub }
    }

    /// Environment for a child host process: `SPANNER_EMULATOR_HOST`, `PUBSUB_EMULATOR_HOST`.
    pub fn spanner_env(&self) -> Vec<(String, String)> {
        vec![
            ("SPANNER_EMULATOR_HOST".into(), self.spanner.emulator_host()),
            ("PUBSUB_EMULATOR_HOST".into(), self.pubsub.host()),
        ]
    }

    /// The config of a host on these emulators, without its tables: `[host]` with
    /// `host_lines` (one `key = value` each) after the data and plugin directories, the
    /// Spanner source on `db`, the Pub/Sub ledger with `topic_prefix`, admin on `admin`.
    pub fn host_config(
        &self,
        db: &SpannerConfig,
        host_lines: &[String],
        topic_prefix: &str,
        admin: &str,
    ) -> String {
        format!(
            "[host]\ndata-dir = \"state\"\nplugin-dir = \"plugins\"\n{}\n\n\
             [source]\nkind = \"spanner\"\nproject = \"{}\"\ninstance = \"{}\"\n\
             database = \"{}\"\nendpoint = \"{}\"\nadmin-endpoint = \"{}\"\n\n\
             [ledger]\nkind = \"pubsub\"\nproject = \"{PROJECT}\"\nendpoint = \"{}\"\n\
             topic-prefix = \"{topic_prefix}\"\n\n[admin]\nlisten = \"{admin}\"\n\n",
            host_lines.join("\n"),
            db.project,
            db.instance,
            db.database,
            db.endpoint.as_deref().expect("harness sets the endpoint"),
            db.admin_endpoint
                .as_deref()
                .expect("harness sets the admin endpoint"),
            self.pubsub_endpoint(),
        )
    }

    /// The Pub/Sub endpoint (`http://127.0.0.1:PORT` of the strict front).
    pub fn pubsub_endpoint(&self) -> String {
        self.pubsub.endpoint()
    }

    /// What the strict Pub/Sub front saw so far.
    pub fn pubsub_front_stats(&self) -> super::pubsub_front::FrontStats {
        self.pubsub.front().stats()
    }

    /// Fails the test if the strict Pub/Sub front refused any request, or saw no Publish (a
    /// host that bypassed it would prove nothing).
    pub fn assert_pubsub_clean(&self, context: &str) {
        self.pubsub.assert_clean(context);
        let stats = self.pubsub.front().stats();
        assert!(
            stats.count(super::pubsub_front::Rpc::Publish) > 0,
            "{context}: no Publish went through the strict Pub/Sub front: {stats:?}"
        );
    }

    /// A ledger config pointing at the Pub/Sub emulator.
    pub fn pubsub_config(&self) -> PubSubConfig {
        PubSubConfig {
            endpoint: Some(self.pubsub_endpoint()),
            ..PubSubConfig::new(PROJECT)
        }
    }

    /// Creates a fresh Spanner database with `ddl`.
    pub async fn create_database(&self, ddl: &[&str]) -> SpannerConfig {
        self.spanner.create_database(ddl).await
    }

    /// Kills the Pub/Sub emulator.
    pub fn stop_pubsub(&mut self) {
        self.pubsub.stop();
    }

    /// Starts the Pub/Sub emulator again on the same port (empty).
    pub fn start_pubsub(&mut self) {
        self.pubsub.start_again();
    }
}

/// `SELECT id, commit_ts` of `table` (an INT64 `id` key) in microseconds: the final state
/// the consumers must reach.
pub async fn commit_times(db: &SpannerConfig, table: &str) -> BTreeMap<i64, i64> {
    use google_cloud_spanner::statement::Statement;
    let source = SpannerSource::connect(db.clone()).await.expect("connect");
    let mut rs = source
        .client()
        .single_use()
        .build()
        .execute_query(
            Statement::builder(format!(
                "SELECT id, UNIX_MICROS(commit_ts) FROM {table} ORDER BY id"
            ))
            .build(),
        )
        .await
        .expect("query");
    let mut out = BTreeMap::new();
    while let Some(row) = rs.next().await {
        let row = row.expect("row");
        let id: i64 = row.get(0).expect("id");
        let ts: i64 = row.get(1).expect("ts");
        out.insert(id, ts);
    }
    out
}
