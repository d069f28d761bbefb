use super::*;

fn parse(text: &str) -> Result<Manifest, String> {
    Manifest::parse(text, Path::new("plugins/echo.toml")).map_err(|e| e.to_string())
}

#[test]
fn a_full_manifest_parses_with_defaults() {
    let m = parse(
        "name = \"echo\"\nworld = \"consumer\"\n[subscription]\ntable = \"orders\"\n\
         [grants]\nbuckets = [\"archive-*\"]\nconfig = [\"k\"]\n[config]\nk = \"v\"\n",
    )
    .unwrap();
    let s = m.subscription.clone().unwrap();
    assert_eq!((s.batch_size, s.max_wait_ms, s.max_attempts), (64, 100, 5));
    assert_eq!(s.instances, 1);
    assert_eq!(m.limits, Limits::default());
    assert!(m.grants.allows("buckets", "archive-orders"));
    assert!(!m.grants.allows("buckets", "other"));
    assert!(m.grants.get("topics").is_empty());
    assert_eq!(m.path(), Path::new("plugins/echo.toml"));
    assert_eq!((s.columns, s.avro, s.attributes), (None, false, false));
}

#[test]
fn subscription_columns_are_checked_against_the_table() {
    let with = |columns: &str| {
        parse(&format!(
            "name = \"echo\"\nworld = \"consumer\"\n[subscription]\ntable = \"orders\"\n\
             columns = [{columns}]\navro = true\n"
        ))
    };
    let s = with("\"amount\", \"id\"").unwrap().subscription.unwrap();
    assert_eq!(
        s.columns,
        Some(vec!["amount".to_string(), "id".to_string()])
    );
    assert!(s.avro && !s.attributes);
    let table = ["id", "amount", "status"];
    assert_eq!(s.check_columns("orders", table), Ok(()));
    let s = with("\"amount\", \"nope\"").unwrap().subscription.unwrap();
    assert_eq!(
        s.check_columns("orders", table),
        Err(
            "`subscription.columns` names `nope`, which table `orders` does not have; its \
             columns are id, amount, status"
                .to_string()
        )
    );
    let e = with("").unwrap_err();
    assert!(e.contains("must name at least one column"), "{e}");
    let e = with("\"id\", \"id\"").unwrap_err();
    assert!(e.contains("names `id` twice"), "{e}");
}

#[test]
fn errors_name_the_problem() {
    let e = parse("name = \"echo\"\nworld = \"consumr\"\n").unwrap_err();
    assert!(e.contains("http-trigger") && e.contains("echo.toml"), "{e}");
    let e = parse("name = \"echo\"\nworld = \"consumer\"\nbatch = 1\n").unwrap_err();
    assert!(e.contains("batch"), "{e}");
    let e = parse("name = \"other\"\nworld = \"scheduled\"\n").unwrap_err();
    assert!(e.contains("must match"), "{e}");
    let e = parse("name = \"echo\"\nworld = \"consumer\"\n").unwrap_err();
    assert!(e.contains("[subscription]"), "{e}");
    let e =
        parse("name = \"echo\"\nworld = \"scheduled\"\n[config]\nsecret = \"x\"\n").unwrap_err();
    assert!(e.contains("grants.config"), "{e}");
    let e =
        parse("name = \"echo\"\nworld = \"scheduled\"\n[grants]\nbucket = [\"a\"]\n").unwrap_err();
    assert!(
        e.contains("echo.toml")
            && e.contains("`grants.bucket`")
            && e.contains("buckets, key-prefixes"),
        "{e}"
    );
    let e = parse(
        "name = \"echo\"\nworld = \"scheduled\"\n[grants]\nhttp = [\"https://h.example/x\"]\n",
    )
    .unwrap_err();
    assert!(e.contains("grants.http") && e.contains("path"), "{e}");
    let e = parse("name = \"echo\"\nworld = \"consumer\"\n[subscription]\ntable = \"t\"\nfilter = [\"amount >\"]\n")
        .unwrap_err();
    assert!(e.contains("echo.toml") && e.contains("amount >"), "{e}");
    let e = Manifest::parse(
        "name = \"9lives\"\nworld = \"scheduled\"\n",
        Path::new("9lives.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("starting with a letter"), "{e}");
}

#[test]
fn table_tables_and_topic_are_exclusive_and_checked() {
    let with = |source: &str| {
        parse(&format!(
            "name = \"echo\"\nworld = \"consumer\"\n[subscription]\n{source}\n"
        ))
    };
    let exactly_one = "exactly one of `table = \"orders\"`";
    // (the [subscription]'s source keys, a part of the error; "" when it parses)
    let cases: &[(&str, &str)] = &[
        ("table = \"orders\"", ""),
        ("tables = [\"orders\", \"payments\"]", ""),
        ("tables = [\"*\"]", ""),
        ("topic = \"replay-x\"", ""),
        ("", exactly_one),
        ("table = \"orders\"\ntables = [\"payments\"]", exactly_one),
        ("tables = [\"orders\"]\ntopic = \"t\"", exactly_one),
        ("table = \"orders\"\ntopic = \"t\"", exactly_one),
        ("tables = []", "`subscription.tables` is empty"),
        (
            "tables = [\"*\", \"orders\"]",
            "mixes `\"*\"` with table names",
        ),
        ("tables = [\"orders\", \"orders\"]", "names `orders` twice"),
        ("tables = [\"\"]", "empty name"),
        ("tables = \"orders\"", "invalid type"),
    ];
    for (source, error) in cases {
        match (with(source), *error) {
            (Ok(_), "") => {}
            (Ok(_), e) => panic!("`{source}` parsed; expected an error with `{e}`"),
            (Err(got), "") => panic!("`{source}` refused: {got}"),
            (Err(got), e) => assert!(
                got.contains(e) && got.contains("echo.toml"),
                "`{source}`: {got}"
            ),
        }
    }
}

#[test]
fn tables_resolve_against_the_captured_tables() {
    let sub = |source: &str| {
        parse(&format!(
            "name = \"echo\"\nworld = \"consumer\"\n[subscription]\n{source}\n"
        ))
        .unwrap()
        .subscription
        .unwrap()
    };
    let configured = ["orders", "payments", "refunds"];
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let cases: &[(&str, Result<Vec<String>, &str>)] = &[
        ("table = \"orders\"", Ok(names(&["orders"]))),
        (
            "tables = [\"refunds\", \"orders\"]",
            Ok(names(&["refunds", "orders"])),
        ),
        ("tables = [\"*\"]", Ok(names(&configured))),
        ("topic = \"replay-x\"", Ok(vec![])),
        (
            "tables = [\"orders\", \"ordres\"]",
            Err(
                "`subscription.tables` names `ordres`, which this host does not capture; \
                 its [[tables]] are orders, payments, refunds",
            ),
        ),
        (
            "table = \"nope\"",
            Err("`subscription.table` names `nope`, which this host does not capture"),
        ),
    ];
    for (source, want) in cases {
        let got = sub(source).tables_in(configured);
        match (got, want) {
            (Ok(got), Ok(want)) => assert_eq!(&got, want, "{source}"),
            (Err(got), Err(want)) => assert!(got.contains(want), "{source}: {got}"),
            (got, want) => panic!("{source}: got {got:?}, want {want:?}"),
        }
    }
    let e = sub("tables = [\"orders\"]").tables_in([]).unwrap_err();
    assert!(e.contains("its [[tables]] are none"), "{e}");
}

#[test]
fn instances_are_bounded_with_a_message_naming_the_key_and_the_range() {
    let with = |k: &str| {
        parse(&format!(
            "name = \"echo\"\nworld = \"consumer\"\n[subscription]\ntable = \"t\"\n\
             instances = {k}\n"
        ))
    };
    assert_eq!(with("3").unwrap().instances(), 3);
    let scheduled = parse("name = \"echo\"\nworld = \"scheduled\"\n").unwrap();
    assert_eq!(scheduled.instances(), 1);
    assert_eq!(
        with(&MAX_INSTANCES.to_string())
            .unwrap()
            .subscription
            .unwrap()
            .instances,
        MAX_INSTANCES
    );
    for bad in ["0", &(MAX_INSTANCES + 1).to_string()] {
        let e = with(bad).unwrap_err();
        assert!(
            e.contains("echo.toml")
                && e.contains("`subscription.instances` is ")
                && e.contains(&format!("between 1 and {MAX_INSTANCES}")),
            "{e}"
        );
    }
    let e = with("-1").unwrap_err();
    assert!(e.contains("instances"), "{e}");
}

#[test]
fn a_host_may_know_fewer_grants() {
    let m =
        parse("name = \"echo\"\nworld = \"scheduled\"\n[grants]\nhttp = [\"https://h.example\"]\n")
            .unwrap();
    let e = m.check_grant_names(&["buckets"]).unwrap_err().to_string();
    assert!(
        e.contains("echo.toml") && e.contains("grants.http") && e.contains("buckets"),
        "{e}"
    );
}
