use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("ledgerhost.toml"), Path::new("/base"))
}

#[test]
fn empty_config_gives_embedded_defaults() {
    let c = parse("").unwrap();
    assert!(matches!(c.source, SourceConfig::Sqlite { .. }));
    assert_eq!(c.ledger.kind, LedgerKind::Embedded);
    assert_eq!(c.host.data_dir, PathBuf::from("/base/.ledgerhost"));
    assert_eq!(c.topic_for("orders"), "ledger-orders");
}

#[test]
fn unknown_key_is_named() {
    let err = parse("[host]\nplugin-dri = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("plugin-dri"), "{err}");
    assert!(err.contains("ledgerhost.toml"), "{err}");
}

#[test]
fn bad_table_setting_names_key_and_form() {
    let err = parse("[[tables]]\nname = \"orders\"\nstart = \"yesterday\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("tables[0].start"), "{err}");
    assert!(err.contains("beginning"), "{err}");
}

#[test]
fn partial_sections_keep_their_defaults() {
    let c = parse("[host]\ndata-dir = \"state\"\n[admin]\n").unwrap();
    assert_eq!(c.host.lease_ttl_ms, 5000);
    assert_eq!(c.admin.listen, "127.0.0.1:8686");
}

#[test]
fn backends_are_chosen_by_kind() {
    let c = parse(
        "[source]\nkind = \"spanner\"\nproject = \"p\"\ninstance = \"i\"\ndatabase = \"d\"\n\
         [ledger]\nkind = \"pubsub\"\nproject = \"p\"\n[keyvalue]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:1\"\n",
    )
    .unwrap();
    assert!(matches!(c.source, SourceConfig::Spanner { .. }));
    assert_eq!(c.ledger.kind, LedgerKind::Pubsub);
    assert!(matches!(c.keyvalue, keyvalue::Settings::Redis { .. }));
}

#[test]
fn a_missing_commit_index_is_refused_unless_set_to_warn() {
    let spanner = "[source]\nkind = \"spanner\"\nproject = \"p\"\ninstance = \"i\"\n\
                   database = \"d\"\n";
    let policy = |c: Config| match c.source {
        SourceConfig::Spanner {
            missing_commit_index,
            ..
        } => missing_commit_index,
        other => panic!("{other:?}"),
    };
    assert_eq!(policy(parse(spanner).unwrap()), MissingCommitIndex::Refuse);
    assert_eq!(
        policy(parse(&format!("{spanner}missing-commit-index = \"warn\"\n")).unwrap()),
        MissingCommitIndex::Warn
    );
    let err = parse(&format!("{spanner}missing-commit-index = \"ignore\"\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("refuse") && err.contains("warn"), "{err}");
}

#[test]
fn cloud_sections_reject_unknown_keys_by_name() {
    let err = parse(
        "[source]\nkind = \"spanner\"\nproject = \"p\"\ninstance = \"i\"\ndatabase = \"d\"\n\
         emulator = \"x\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("emulator"), "{err}");
    let err = parse("[blobstore]\nkind = \"gcs\"\nbucket = \"b\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("bucket"), "{err}");
    let err = parse(
        "[warehouse]\nkind = \"bigquery\"\nproject = \"p\"\ndataset = \"d\"\nregion = \"EU\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("region"), "{err}");
}

#[test]
fn cloud_endpoints_are_checked_and_normalised() {
    let c = parse(
        "[source]\nkind = \"spanner\"\nproject = \"p\"\ninstance = \"i\"\ndatabase = \"d\"\n\
         endpoint = \"127.0.0.1:9010\"\nadmin-endpoint = \"http://127.0.0.1:9020\"\n",
    )
    .unwrap();
    match c.source {
        SourceConfig::Spanner {
            endpoint,
            admin_endpoint,
            ..
        } => {
            assert_eq!(
                ledgerhost_google::url(endpoint.as_deref().unwrap()),
                "http://127.0.0.1:9010"
            );
            assert_eq!(admin_endpoint.as_deref(), Some("http://127.0.0.1:9020"));
        }
        other => panic!("{other:?}"),
    }
    let err = parse("[ledger]\nkind = \"pubsub\"\nproject = \"p\"\nendpoint = \"http://\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("ledger.endpoint"), "{err}");
    let err = parse("[keyvalue]\nkind = \"redis\"\nurl = \"127.0.0.1:6379\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("keyvalue.url") && err.contains("redis://"),
        "{err}"
    );
    let err =
        parse("[source]\nkind = \"spanner\"\nproject = \"p\"\ninstance = \"\"\ndatabase = \"d\"\n")
            .unwrap_err()
            .to_string();
    assert!(err.contains("source.instance"), "{err}");
}

#[test]
fn google_projects_come_from_the_config_else_google_cloud_project() {
    let in_env = |text: &str, overrides: &[(String, String)], project: Option<&str>| {
        Config::parse_in_env(
            text,
            Path::new("ledgerhost.toml"),
            Path::new("/base"),
            overrides,
            project,
        )
    };
    let projects = |c: &Config| {
        let source = match &c.source {
            SourceConfig::Spanner { project, .. } => project.clone(),
            other => panic!("{other:?}"),
        };
        let blob = match &c.blobstore {
            blobstore::Settings::Gcs { project, .. } => project.clone(),
            other => panic!("{other:?}"),
        };
        let warehouse = match &c.warehouse {
            warehouse::Settings::Bigquery { project, .. } => project.clone(),
            other => panic!("{other:?}"),
        };
        (c.ledger.project.clone(), source, blob, warehouse)
    };
    let google = "[source]\nkind = \"spanner\"\ninstance = \"i\"\ndatabase = \"d\"\n\
                  [ledger]\nkind = \"pubsub\"\n[blobstore]\nkind = \"gcs\"\n\
                  [warehouse]\nkind = \"bigquery\"\ndataset = \"ds\"\n";
    let env = Some("env-proj");
    let c = in_env(google, &[], env).unwrap();
    assert_eq!(
        projects(&c),
        (
            Some("env-proj".into()),
            "env-proj".into(),
            Some("env-proj".into()),
            "env-proj".into()
        )
    );

    // A project in the file, or a LEDGERHOST__ override, wins over the variable.
    let text = google
        .replace(
            "kind = \"pubsub\"\n",
            "kind = \"pubsub\"\nproject = \"file-proj\"\n",
        )
        .replace(
            "kind = \"gcs\"\n",
            "kind = \"gcs\"\nproject = \"blob-proj\"\n",
        );
    let overrides = [(
        "LEDGERHOST__WAREHOUSE__PROJECT".to_string(),
        "wh-proj".to_string(),
    )];
    let c = in_env(&text, &overrides, env).unwrap();
    assert_eq!(
        projects(&c),
        (
            Some("file-proj".into()),
            "env-proj".into(),
            Some("blob-proj".into()),
            "wh-proj".into()
        )
    );

    // The embedded defaults take nothing from the variable.
    let c = in_env("", &[], env).unwrap();
    assert_eq!(c.ledger.project, None);

    // Missing everywhere: the key and the variable are named, per backend. A blank
    // variable counts as unset; Cloud Storage alone may go without a project.
    for (text, key) in [
        ("[ledger]\nkind = \"pubsub\"\n", "ledger.project"),
        (
            "[source]\nkind = \"spanner\"\ninstance = \"i\"\ndatabase = \"d\"\n",
            "source.project",
        ),
        (
            "[warehouse]\nkind = \"bigquery\"\ndataset = \"ds\"\n",
            "warehouse.project",
        ),
    ] {
        for project in [None, Some("  ")] {
            let err = in_env(text, &[], project).unwrap_err().to_string();
            assert!(
                err.contains(key) && err.contains("GOOGLE_CLOUD_PROJECT"),
                "{key}: {err}"
            );
        }
    }
    let c = in_env("[blobstore]\nkind = \"gcs\"\n", &[], None).unwrap();
    assert!(matches!(
        c.blobstore,
        blobstore::Settings::Gcs { project: None, .. }
    ));
    // A missing dataset is its own key.
    let err = in_env(
        "[warehouse]\nkind = \"bigquery\"\ndataset = \" \"\n",
        &[],
        env,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("warehouse.dataset"), "{err}");
}

#[test]
fn redis_tls_settings_are_checked_and_resolved() {
    let c = parse(
        "[keyvalue]\nkind = \"redis\"\nurl = \"rediss://10.0.0.3:6378\"\n\
         tls-ca-file = \"server-ca.pem\"\ntls-cert-file = \"/etc/c.pem\"\n\
         tls-key-file = \"k.pem\"\n",
    )
    .unwrap();
    match c.keyvalue {
        keyvalue::Settings::Redis {
            tls_ca_file,
            tls_cert_file,
            tls_key_file,
            ..
        } => {
            assert_eq!(tls_ca_file, Some(PathBuf::from("/base/server-ca.pem")));
            assert_eq!(tls_cert_file, Some(PathBuf::from("/etc/c.pem")));
            assert_eq!(tls_key_file, Some(PathBuf::from("/base/k.pem")));
        }
        other => panic!("{other:?}"),
    }
    let err = parse(
        "[keyvalue]\nkind = \"redis\"\nurl = \"redis://h:6379\"\n\
         tls-ca-file = \"server-ca.pem\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("keyvalue.tls-ca-file") && err.contains("rediss://"),
        "{err}"
    );
    let err = parse(
        "[keyvalue]\nkind = \"redis\"\nurl = \"rediss://h:6378\"\n\
         tls-cert-file = \"c.pem\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("keyvalue.tls-key-file"), "{err}");
    let err = parse("[keyvalue]\nkind = \"redis\"\nurl = \"rediss://h:6378\"\ntls-ca = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("tls-ca"), "unknown key named: {err}");
}

#[test]
fn a_change_stream_table_names_its_stream_starts_from_now_and_has_no_shards() {
    let table = |extra: &str| format!("[[tables]]\nname = \"accounts\"\n{extra}");
    let c = parse(&table(
        "capture = \"change-stream\"\nchange-stream = \"accounts_changes\"\n",
    ))
    .unwrap();
    assert_eq!(c.tables[0].capture, CaptureMode::ChangeStream);
    assert_eq!(c.tables[0].start_from(), Ok(StartFrom::Now));
    assert_eq!(
        parse(&table("")).unwrap().tables[0].start_from(),
        Ok(StartFrom::Beginning)
    );
    let refused = |extra: &str, key: &str, wanted: &str| {
        let err = parse(&table(extra)).unwrap_err().to_string();
        assert!(err.contains(key) && err.contains(wanted), "{err}");
    };
    refused(
        "capture = \"change-stream\"\n",
        "tables[0].change-stream",
        "must name",
    );
    refused(
        "change-stream = \"s\"\n",
        "tables[0].change-stream",
        "capture = \"change-stream\"",
    );
    refused(
        "capture = \"change-stream\"\nchange-stream = \"a-b\"\n",
        "tables[0].change-stream",
        "letters, digits",
    );
    refused(
        "capture = \"change-stream\"\nchange-stream = \"s\"\nstart = \"beginning\"\n",
        "tables[0].start",
        "ledgerhost backfill",
    );
    refused(
        "capture = \"change-stream\"\nchange-stream = \"s\"\nshards = 4\n",
        "tables[0].shards",
        "commit-timestamp",
    );
    refused("capture = \"binlog\"\n", "capture", "binlog");
    refused(
        "share-partitions = true\n",
        "tables[0].share-partitions",
        "capture = \"change-stream\"",
    );
    let shared = parse(&table(
        "capture = \"change-stream\"\nchange-stream = \"s\"\nshare-partitions = true\n",
    ))
    .unwrap();
    assert!(shared.tables[0].share_partitions);
}

#[test]
fn the_change_stream_heartbeat_is_bounded() {
    let spanner = |extra: &str| {
        format!(
            "[source]\nkind = \"spanner\"\nproject = \"p\"\ninstance = \"i\"\n\
             database = \"d\"\n{extra}"
        )
    };
    assert!(parse(&spanner("change-stream-heartbeat-ms = 200\n")).is_ok());
    let err = parse(&spanner("change-stream-heartbeat-ms = 50\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("source.change-stream-heartbeat-ms") && err.contains("100 and 300000"),
        "{err}"
    );
}
