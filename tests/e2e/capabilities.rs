//! The cloud capability backends against real servers: Redis (`redis-server`, plaintext and
//! TLS), Cloud Storage (fake-gcs-server) and BigQuery (bqemulator), each started on a free
//! loopback port. Every Redis test runs over both transports (`redis_tls_*` over TLS).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ledgerhost_capabilities::blobstore::gcs::{GcsBlobStore, GcsConfig};
use ledgerhost_capabilities::keyvalue::redis::RedisKeyValue;
use ledgerhost_core::PortError;
use ledgerhost_core::capabilities::{BlobStore, KeyValue};
use ledgerhost_google::AuthMode;
use ledgerhost_tests::harness::eventually;
use ledgerhost_tests::harness::gcs::GcsEmulator;
use ledgerhost_tests::harness::redis::{RedisOptions, RedisServer, TlsFiles, Transport};

fn redis_kv(server: &RedisServer, namespace: &str) -> RedisKeyValue {
    let mut config = server.client_config();
    config.namespace = namespace.to_string();
    RedisKeyValue::connect(config).expect("redis client")
}

#[tokio::test]
async fn redis_versioned_writes_match_the_embedded_semantics() {
    versioned_writes_match_the_embedded_semantics(Transport::Plain).await;
}

#[tokio::test]
async fn redis_tls_versioned_writes_match_the_embedded_semantics() {
    versioned_writes_match_the_embedded_semantics(Transport::Tls).await;
}

async fn versioned_writes_match_the_embedded_semantics(transport: Transport) {
    let server = RedisServer::start_on(transport);
    let kv = redis_kv(&server, "t1:");
    kv.check().await.expect("redis answers PING");

    assert!(kv.set_if_newer("v/a", b"2".to_vec(), 2).await.unwrap());
    assert!(
        !kv.set_if_newer("v/a", b"1".to_vec(), 1).await.unwrap(),
        "older ignored"
    );
    assert!(
        !kv.set_if_newer("v/a", b"2b".to_vec(), 2).await.unwrap(),
        "same version ignored"
    );
    assert_eq!(kv.get("v/a").await.unwrap(), Some(b"2".to_vec()));
    assert!(kv.delete_if_newer("v/a", 3).await.unwrap());
    assert_eq!(kv.get("v/a").await.unwrap(), None);
    assert!(
        !kv.set_if_newer("v/a", b"old".to_vec(), 2).await.unwrap(),
        "no resurrection"
    );
    assert!(
        !kv.delete_if_newer("v/a", 3).await.unwrap(),
        "same-version delete ignored"
    );
    assert!(kv.set_if_newer("v/a", b"4".to_vec(), 4).await.unwrap());
    assert_eq!(kv.get("v/a").await.unwrap(), Some(b"4".to_vec()));

    // Exact 64-bit comparison: 2^53 + 1 and 2^53 are the same double in Lua.
    let big = 1_i64 << 53;
    assert!(
        kv.set_if_newer("big", b"a".to_vec(), big + 1)
            .await
            .unwrap()
    );
    assert!(!kv.set_if_newer("big", b"b".to_vec(), big).await.unwrap());
    assert!(
        kv.set_if_newer("big", b"c".to_vec(), i64::MAX)
            .await
            .unwrap()
    );
    assert!(
        !kv.set_if_newer("big", b"d".to_vec(), i64::MAX - 1)
            .await
            .unwrap()
    );
    assert!(kv.set_if_newer("neg", b"a".to_vec(), -10).await.unwrap());
    assert!(!kv.set_if_newer("neg", b"b".to_vec(), -11).await.unwrap());
    assert!(kv.set_if_newer("neg", b"c".to_vec(), -9).await.unwrap());
    assert!(kv.set_if_newer("neg", b"d".to_vec(), 0).await.unwrap());
    assert_eq!(kv.get("big").await.unwrap(), Some(b"c".to_vec()));
    assert_eq!(kv.get("neg").await.unwrap(), Some(b"d".to_vec()));

    // Binary values round-trip; unversioned writes keep working beside versioned ones.
    let binary: Vec<u8> = (0..=255).collect();
    kv.set("v/b", binary.clone()).await.unwrap();
    assert_eq!(kv.get("v/b").await.unwrap(), Some(binary));
    kv.set("w/c", b"y".to_vec()).await.unwrap();
    kv.set("v*[x]", b"glob".to_vec()).await.unwrap();
    assert_eq!(kv.list_keys("v/").await.unwrap(), vec!["v/a", "v/b"]);
    assert_eq!(
        kv.list_keys("v*").await.unwrap(),
        vec!["v*[x]"],
        "prefix matched literally"
    );
    assert!(kv.delete_if_newer("v/a", 10).await.unwrap());
    assert_eq!(
        kv.list_keys("v/").await.unwrap(),
        vec!["v/b"],
        "tombstones are not listed"
    );
    kv.delete("v/b").await.unwrap();
    kv.delete("v/b").await.unwrap();
    assert!(kv.list_keys("v/").await.unwrap().is_empty());

    // Namespaces do not see each other.
    let other = redis_kv(&server, "t2:");
    assert!(other.list_keys("").await.unwrap().is_empty());
    assert_eq!(other.get("w/c").await.unwrap(), None);
    assert_eq!(
        kv.list_keys("").await.unwrap(),
        vec!["big", "neg", "v*[x]", "w/c"]
    );
}

#[tokio::test]
async fn redis_errors_while_down_are_retryable() {
    errors_while_down_are_retryable(Transport::Plain).await;
}

#[tokio::test]
async fn redis_tls_errors_while_down_are_retryable() {
    errors_while_down_are_retryable(Transport::Tls).await;
}

async fn errors_while_down_are_retryable(transport: Transport) {
    let mut server = RedisServer::start_on(transport);
    let kv = redis_kv(&server, "t:");
    kv.set("k", b"v".to_vec()).await.unwrap();
    server.stop();
    for e in [
        kv.get("k").await.unwrap_err(),
        kv.set_if_newer("k", b"x".to_vec(), 1).await.unwrap_err(),
        kv.check().await.unwrap_err(),
    ] {
        assert!(matches!(e, PortError::Unavailable { .. }), "{e}");
        let text = e.to_string();
        assert!(text.contains(&server.url()), "names the server: {text}");
    }
    server.restart();
    // Not persistent: the restarted server is empty, and the client reconnects by itself.
    assert!(
        eventually(Duration::from_secs(20), || async {
            kv.check().await.is_ok()
        })
        .await
    );
    assert!(kv.set_if_newer("k", b"x".to_vec(), 1).await.unwrap());
}

/// Writes one key's versions in order, each retried until it succeeds, as the dispatcher
/// redelivers a failed event. Even keys end with a delete, odd keys with a set.
async fn write_versions(
    kv: RedisKeyValue,
    key: String,
    last: i64,
    done: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
) {
    for version in 1..=last {
        let delete =
            version % 7 == 0 || (version == last && key.ends_with(['0', '2', '4', '6', '8']));
        loop {
            let result = if delete {
                kv.delete_if_newer(&key, version).await
            } else {
                kv.set_if_newer(&key, format!("{key}@{version}").into_bytes(), version)
                    .await
            };
            match result {
                Ok(_) => break,
                Err(e) => {
                    assert!(
                        e.is_transient(),
                        "only transient failures while Redis restarts: {e}"
                    );
                    failures.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test]
async fn redis_restart_during_a_versioned_load_loses_and_reorders_nothing() {
    restart_during_a_versioned_load_loses_and_reorders_nothing(Transport::Plain).await;
}

#[tokio::test]
async fn redis_tls_restart_during_a_versioned_load_loses_and_reorders_nothing() {
    restart_during_a_versioned_load_loses_and_reorders_nothing(Transport::Tls).await;
}

async fn restart_during_a_versioned_load_loses_and_reorders_nothing(transport: Transport) {
    // Append-only file fsync'd on every write: an acknowledged write survives the crash,
    // as on Memorystore. (Without persistence a restart empties Redis, and no client can
    // keep what the server forgot; the view would be rebuilt by replay.)
    let mut server = RedisServer::start_persistent_on(transport);
    let kv = redis_kv(&server, "load:");
    const KEYS: usize = 16;
    const LAST: i64 = 400;
    let done = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..KEYS)
        .map(|i| {
            tokio::spawn(write_versions(
                kv.clone(),
                format!("key{i}"),
                LAST,
                done.clone(),
                failures.clone(),
            ))
        })
        .collect();

    // Crash Redis once the load is well under way, keep it down until writers have seen it
    // fail, and for a few seconds more, then bring it back on the same port.
    let total = (KEYS as u64) * (LAST as u64);
    assert!(
        eventually(Duration::from_secs(120), || async {
            done.load(Ordering::Relaxed) >= total / 4
        })
        .await,
        "the load did not progress"
    );
    server.stop();
    let done_at_stop = done.load(Ordering::Relaxed);
    assert!(
        eventually(Duration::from_secs(30), || async {
            failures.load(Ordering::Relaxed) >= KEYS as u64
        })
        .await,
        "writers never saw Redis down"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.restart();
    for w in writers {
        w.await.expect("writer task");
    }
    let failed = failures.load(Ordering::Relaxed);
    eprintln!(
        "versioned load: {total} writes, {done_at_stop} done before the crash, {failed} failed \
         attempts retried"
    );
    assert!(done_at_stop < total, "the crash happened during the load");

    // Final state per key = its highest version's write, and the stored version is exactly
    // the highest (an older one would accept LAST; a newer one cannot exist).
    for i in 0..KEYS {
        let key = format!("key{i}");
        let expected = (i % 2 == 1).then(|| format!("{key}@{LAST}").into_bytes());
        assert_eq!(kv.get(&key).await.unwrap(), expected, "{key}");
        assert!(
            !kv.set_if_newer(&key, b"stale".to_vec(), LAST)
                .await
                .unwrap(),
            "{key}"
        );
        assert!(
            kv.set_if_newer(&key, b"next".to_vec(), LAST + 1)
                .await
                .unwrap(),
            "{key}"
        );
    }
    let mut live = kv.list_keys("key").await.unwrap();
    live.sort();
    assert_eq!(live.len(), KEYS);
}

#[tokio::test]
async fn redis_tls_refuses_a_server_certificate_from_another_ca_naming_what_to_check() {
    let server = RedisServer::start_on(Transport::Tls);
    let other = tempfile::tempdir().unwrap();
    let wrong_ca = TlsFiles::generate(other.path()).ca;
    let mut config = server.client_config();
    config.tls.ca_file = Some(wrong_ca.clone());
    let kv = RedisKeyValue::connect(config).expect("the client is built; the handshake fails");
    let e = kv.check().await.unwrap_err();
    let text = e.to_string();
    eprintln!("wrong CA: {text}");
    for part in [
        "TLS handshake with",
        server.url().as_str(),
        "keyvalue.tls-ca-file",
        wrong_ca.to_str().unwrap(),
        "CA that signed the server's certificate",
        "not signed by a CA this client trusts",
    ] {
        assert!(text.contains(part), "`{part}` missing: {text}");
    }
    // Writes fail the same way, and stay retryable (fixing the config must lose no event).
    let e = kv.set_if_newer("k", b"v".to_vec(), 1).await.unwrap_err();
    assert!(
        e.is_transient() && e.to_string().contains("TLS handshake"),
        "{e}"
    );

    // The host refuses to start with it, naming the backend, the endpoint and the fix.
    let config = ledgerhost::Config::parse(
        &format!(
            "[host]\ndata-dir = \"state\"\n[source]\nkind = \"sqlite\"\npath = \"app.db\"\n\
             [keyvalue]\nkind = \"redis\"\nurl = \"{}\"\ntls-ca-file = {:?}\n",
            server.url(),
            wrong_ca.display().to_string()
        ),
        std::path::Path::new("ledgerhost.toml"),
        other.path(),
    )
    .unwrap();
    let e = match ledgerhost::backends::Backends::connect(&config).await {
        Ok(_) => panic!("the host started with a CA that did not sign the server's certificate"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        e.contains(&format!("Redis at {}", server.url()))
            && e.contains("TLS handshake")
            && e.contains("keyvalue.tls-ca-file"),
        "{e}"
    );

    // The right CA on a plaintext URL is a config error before any connection.
    let mut config = server.client_config();
    config.url = config.url.replace("rediss://", "redis://");
    let e = RedisKeyValue::connect(config).err().expect("refused");
    assert!(e.to_string().contains("rediss://"), "{e}");
}

#[tokio::test]
async fn redis_tls_presents_a_client_certificate_when_the_server_requires_one() {
    let server = RedisServer::start_with(RedisOptions {
        transport: Transport::Tls,
        require_client_certs: true,
        ..RedisOptions::default()
    });
    let kv = redis_kv(&server, "mtls:");
    kv.check().await.expect("PING with a client certificate");
    assert!(kv.set_if_newer("k", b"v".to_vec(), 1).await.unwrap());
    assert_eq!(kv.get("k").await.unwrap(), Some(b"v".to_vec()));

    let mut config = server.client_config();
    config.tls.client_cert_file = None;
    config.tls.client_key_file = None;
    let anonymous = RedisKeyValue::connect(config).unwrap();
    let e = anonymous.check().await.unwrap_err();
    eprintln!("no client certificate: {e}");
    assert!(e.is_transient(), "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&server.url()) && text.contains("keyvalue.tls-cert-file"),
        "says to set the client certificate: {text}"
    );
}

fn gcs_store(emu: &GcsEmulator, page: u32) -> GcsBlobStore {
    GcsBlobStore::connect(GcsConfig {
        endpoint: Some(emu.endpoint()),
        project: Some("ledgerhost-test".into()),
        auth: AuthMode::Auto,
        list_page_size: page,
        ..GcsConfig::default()
    })
    .expect("gcs client")
}

#[tokio::test]
async fn gcs_put_get_overwrite_list_delete() {
    let emu = GcsEmulator::start();
    let s = gcs_store(&emu, 3);
    s.check().await.expect("emulator reachable");
    s.ensure_bucket("orders").await.unwrap();
    s.ensure_bucket("orders").await.unwrap();

    s.put("orders", "2026/11/22/x y+z.avro", b"1".to_vec())
        .await
        .unwrap();
    s.put("orders", "2026/11/22/x y+z.avro", b"2".to_vec())
        .await
        .unwrap();
    assert_eq!(
        s.get("orders", "2026/11/22/x y+z.avro").await.unwrap(),
        Some(b"2".to_vec()),
        "overwrite"
    );
    assert_eq!(s.get("orders", "missing").await.unwrap(), None);
    assert_eq!(s.get("nobucket", "x").await.unwrap(), None);

    // Enough names for several pages of 3.
    let mut expected = Vec::new();
    for i in 0..10 {
        let name = format!("2026/11/23/{i:02}.avro");
        s.put("orders", &name, vec![i]).await.unwrap();
        expected.push(name);
    }
    s.put("orders", "other", b"o".to_vec()).await.unwrap();
    assert_eq!(s.list("orders", "2026/11/23/").await.unwrap(), expected);
    assert_eq!(s.list("orders", "").await.unwrap().len(), 12);
    assert!(s.list("nobucket", "").await.unwrap().is_empty());

    s.delete("orders", "other").await.unwrap();
    s.delete("orders", "other").await.unwrap();
    assert_eq!(s.get("orders", "other").await.unwrap(), None);
    assert_eq!(s.list("orders", "").await.unwrap().len(), 11);

    // A 5 MiB object round-trips byte for byte.
    let big: Vec<u8> = (0..5 * 1024 * 1024)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    s.put("orders", "big/object.bin", big.clone())
        .await
        .unwrap();
    let back = s
        .get("orders", "big/object.bin")
        .await
        .unwrap()
        .expect("big object");
    assert_eq!(back.len(), big.len());
    assert!(back == big, "5 MiB object differs after the round trip");

    let e = s.put("orders", "../escape", vec![]).await.unwrap_err();
    assert!(matches!(e, PortError::Invalid { .. }), "{e}");
    let e = s.put("nobucket", "x", vec![]).await.unwrap_err();
    assert!(matches!(e, PortError::NotFound { .. }), "{e}");
    assert!(e.to_string().contains("ensure-bucket"), "{e}");
}

fn orders_schema(extra: bool) -> String {
    use ledgerhost_core::{Column, ColumnType, TableSchema};
    let col = Column::new;
    let mut columns = vec![
        col("id", ColumnType::Int64, false),
        col("client", ColumnType::String, true),
        col("amount", ColumnType::Numeric, true),
        col("ratio", ColumnType::Float64, true),
        col("weight", ColumnType::Float32, true),
        col("paid", ColumnType::Bool, true),
        col("blob", ColumnType::Bytes, true),
        col("day", ColumnType::Date, true),
        col("doc", ColumnType::Json, true),
        col(
            "tags",
            ColumnType::Array(Box::new(ColumnType::String)),
            true,
        ),
        col("commit_ts", ColumnType::Timestamp, false),
    ];
    if extra {
        columns.push(col("note", ColumnType::String, true));
    }
    let t = TableSchema {
        name: "orders".into(),
        columns,
        primary_key: vec!["id".into()],
        commit_ts_column: "commit_ts".into(),
        deleted_column: None,
    };
    ledgerhost_avro::schema_for(&t).expect("avro schema").json
}

fn order_row(id: i64) -> ledgerhost_core::capabilities::WarehouseRow {
    use ledgerhost_core::{ColumnType, Field, Value};
    let f = |name: &str, value: Value| Field {
        name: name.into(),
        value,
    };
    let commit_ts = 1_763_800_000_123_456 + id;
    ledgerhost_core::capabilities::WarehouseRow {
        event_id: format!("orders/{id}/{commit_ts}"),
        fields: vec![
            f("id", Value::Int64(id)),
            f(
                "client",
                if id % 3 == 0 {
                    Value::Null
                } else {
                    Value::String(format!("c'{id}\"é"))
                },
            ),
            f("amount", Value::Numeric(format!("{id}.5"))),
            f("ratio", Value::Float64(id as f64 / 7.0)),
            f("weight", Value::Float32(1.25)),
            f("paid", Value::Bool(id % 2 == 0)),
            f("blob", Value::Bytes(vec![0, id as u8, 255])),
            f("day", Value::Date(20_000 + id as i32)),
            f("doc", Value::Json(format!("{{\"n\":{id}}}"))),
            f(
                "tags",
                Value::Array(
                    ColumnType::String,
                    vec![Value::String("a".into()), Value::Null],
                ),
            ),
            f("commit_ts", Value::Timestamp(commit_ts)),
        ],
    }
}

#[tokio::test]
async fn bigquery_loads_are_idempotent_and_scan_returns_what_was_loaded() {
    use ledgerhost_capabilities::warehouse::bigquery::{BigQueryConfig, BigQueryWarehouse};
    use ledgerhost_core::Value;
    use ledgerhost_core::capabilities::Warehouse;
    use ledgerhost_tests::harness::bigquery::{BigQueryEmulator, PROJECT};

    let emu = BigQueryEmulator::start();
    let mut config = BigQueryConfig::new(PROJECT, "analytics");
    config.endpoint = Some(emu.endpoint());
    config.auth = AuthMode::Auto;
    let w = BigQueryWarehouse::connect(config)
        .await
        .expect("bigquery client");
    w.check().await.expect("emulator reachable");

    assert_eq!(
        w.count("orders").await.unwrap(),
        0,
        "missing table counts 0"
    );
    w.ensure_table("orders", &orders_schema(false))
        .await
        .unwrap();
    w.ensure_table("orders", &orders_schema(false))
        .await
        .unwrap();

    let rows: Vec<_> = (1..=7).map(order_row).collect();
    w.load("orders", rows.clone()).await.unwrap();
    // A redelivery of part of the batch, with a duplicate inside the batch itself.
    let mut again = rows[2..].to_vec();
    again.push(rows[3].clone());
    w.load("orders", again).await.unwrap();
    assert_eq!(w.count("orders").await.unwrap(), 7, "no duplicates");
    let mut expected = rows.clone();
    expected.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    assert_eq!(w.scan("orders").await.unwrap(), expected);

    // A new event version of an existing id replaces the row.
    let mut changed = order_row(2);
    changed.fields[2].value = Value::Numeric("99.25".into());
    w.load("orders", vec![changed.clone()]).await.unwrap();
    let scanned = w.scan("orders").await.unwrap();
    assert_eq!(scanned.len(), 7);
    let row2 = scanned
        .iter()
        .find(|r| r.event_id == changed.event_id)
        .unwrap();
    assert_eq!(row2.fields[2].value, Value::Numeric("99.25".into()));

    // Schema evolution adds a nullable column; old rows read it as NULL.
    w.ensure_table("orders", &orders_schema(true))
        .await
        .unwrap();
    let scanned = w.scan("orders").await.unwrap();
    for r in &scanned {
        let note = r.fields.iter().find(|f| &*f.name == "note");
        assert_eq!(note.map(|f| &f.value), Some(&Value::Null), "{r:?}");
    }

    let e = w
        .load("nope", vec![order_row(1)])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("ensure-table"), "{e}");
}
