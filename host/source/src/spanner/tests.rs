use ledgerhost_core::source::{Position, Shard};
use ledgerhost_core::{Column, ColumnType, TableSchema, Value};

use super::index::*;
use super::names::*;
use super::sql::*;
use super::values::*;

#[test]
fn identifiers_are_validated() {
    assert_eq!(ident("orders_2").unwrap(), "`orders_2`");
    assert!(ident("a`; DROP TABLE x").is_err());
    assert!(ident("1abc").is_err());
    assert!(ident("").is_err());
}

#[test]
fn spanner_types_parse() {
    assert_eq!(parse_spanner_type("STRING(MAX)"), Some(ColumnType::String));
    assert_eq!(
        parse_spanner_type("ARRAY<BYTES(16)>"),
        Some(ColumnType::Array(Box::new(ColumnType::Bytes)))
    );
    assert_eq!(parse_spanner_type("PROTO<x.Y>"), None);
}

#[test]
fn page_sql_uses_parameters_only() {
    let table = TableSchema {
        name: "orders".into(),
        columns: vec![
            Column {
                name: "id".into(),
                ty: ColumnType::String,
                nullable: false,
            },
            Column {
                name: "n".into(),
                ty: ColumnType::Int64,
                nullable: false,
            },
            Column {
                name: "commit_ts".into(),
                ty: ColumnType::Timestamp,
                nullable: false,
            },
        ],
        primary_key: vec!["id".into(), "n".into()],
        commit_ts_column: "commit_ts".into(),
        deleted_column: None,
    };
    let after = Position {
        commit_ts: 5,
        key: vec![Value::String("x'; --".into()), Value::Null],
    };
    let r = micros_timestamp(10).unwrap();
    let stmt = page_statement(&table, &after, &r, 7, &PollIndex::FullScan).unwrap();
    let sql = stmt.sql();
    assert!(sql.contains("FROM `orders` WHERE"), "{sql}");
    assert!(!sql.contains("x'"), "{sql}");
    assert!(
        sql.contains("(`id` > @k0) OR (`id` = @k0 AND `n` IS NOT NULL)"),
        "{sql}"
    );
    assert!(
        sql.ends_with("ORDER BY `commit_ts`, `id`, `n` LIMIT @n"),
        "{sql}"
    );
}

#[test]
fn key_page_sql_reads_the_table_s_own_columns_in_key_order_with_parameters_only() {
    let mut table = orders();
    table.primary_key = vec!["id".into(), "client".into()];
    let stmt = key_page_statement(
        &table,
        &["id", "client"],
        &[Value::String("x'; --".into()), Value::Null],
        7,
    )
    .unwrap();
    let sql = stmt.sql();
    assert!(!sql.contains("x'"), "{sql}");
    assert_eq!(
        sql,
        "SELECT `id`, `client` FROM `orders` WHERE ((`id` > @k0) OR (`id` = @k0 AND \
         `client` IS NOT NULL)) ORDER BY `id`, `client` LIMIT @n"
    );
    let first = key_page_statement(&table, &["id"], &[], 7).unwrap();
    assert_eq!(
        first.sql(),
        "SELECT `id` FROM `orders` ORDER BY `id`, `client` LIMIT @n"
    );
}

fn orders() -> TableSchema {
    TableSchema {
        name: "orders".into(),
        columns: ["id", "client", "commit_ts"]
            .iter()
            .map(|n| Column {
                name: (*n).into(),
                ty: if *n == "commit_ts" {
                    ColumnType::Timestamp
                } else {
                    ColumnType::String
                },
                nullable: false,
            })
            .collect(),
        primary_key: vec!["id".into()],
        commit_ts_column: "commit_ts".into(),
        deleted_column: None,
    }
}

fn index(name: &str, kind: &str, state: &str, columns: &[(&str, &str)]) -> IndexInfo {
    IndexInfo {
        name: name.into(),
        kind: kind.into(),
        state: state.into(),
        managed: false,
        columns: columns
            .iter()
            .map(|(c, o)| ((*c).into(), (*o).into()))
            .collect(),
    }
}

#[test]
fn the_poll_index_leads_with_the_commit_timestamp() {
    let t = orders();
    let pk = index("PRIMARY_KEY", "PRIMARY_KEY", "", &[("id", "ASC")]);
    let by_ts = index(
        "orders_by_commit_ts",
        "INDEX",
        "READ_WRITE",
        &[("commit_ts", "ASC")],
    );
    let by_ts_client = index(
        "a_by_ts_client",
        "INDEX",
        "READ_WRITE",
        &[("commit_ts", "ASC"), ("client", "ASC")],
    );
    let sharded = index(
        "orders_by_shard",
        "INDEX",
        "READ_WRITE",
        &[("shard", "ASC"), ("commit_ts", "ASC")],
    );
    let desc = index(
        "orders_desc",
        "INDEX",
        "READ_WRITE",
        &[("commit_ts", "DESC")],
    );
    let building = index("orders_new", "INDEX", "WRITE_ONLY", &[("commit_ts", "ASC")]);

    assert_eq!(
        choose_poll_index(&t, &[pk.clone(), by_ts_client.clone(), by_ts.clone()]),
        Ok(PollIndex::Index("orders_by_commit_ts".into())),
        "an index in page order wins over another leading with the timestamp"
    );
    assert_eq!(
        choose_poll_index(&t, &[pk.clone(), by_ts_client.clone()]),
        Ok(PollIndex::Index("a_by_ts_client".into()))
    );
    let refused = choose_poll_index(&t, &[pk.clone(), sharded, desc]).unwrap_err();
    assert!(refused.contains("no index leads"), "{refused}");
    let not_yet = choose_poll_index(&t, &[pk.clone(), building]).unwrap_err();
    assert!(
        not_yet.contains("`orders_new`") && not_yet.contains("WRITE_ONLY"),
        "{not_yet}"
    );
    let mut managed = by_ts.clone();
    managed.managed = true;
    assert!(choose_poll_index(&t, &[pk, managed]).is_err());
    let ts_key = index(
        "PRIMARY_KEY",
        "PRIMARY_KEY",
        "",
        &[("commit_ts", "ASC"), ("id", "ASC")],
    );
    assert_eq!(choose_poll_index(&t, &[ts_key]), Ok(PollIndex::PrimaryKey));
}

#[test]
fn the_missing_index_message_names_the_ddl() {
    let t = orders();
    let pk = index("PRIMARY_KEY", "PRIMARY_KEY", "", &[("id", "ASC")]);
    let msg = missing_index_message(&t, &[pk], "no index");
    assert!(
        msg.contains("CREATE INDEX `orders_by_commit_ts` ON `orders` (`commit_ts`)"),
        "{msg}"
    );
    // A descending key column is listed, ascending, so the index is in page order.
    let desc = index("PRIMARY_KEY", "PRIMARY_KEY", "", &[("id", "DESC")]);
    let msg = missing_index_message(&t, &[desc], "no index");
    assert!(
        msg.contains("CREATE INDEX `orders_by_commit_ts` ON `orders` (`commit_ts`, `id`)"),
        "{msg}"
    );
}

#[test]
fn the_page_query_forces_the_commit_timestamp_index() {
    let r = micros_timestamp(10).unwrap();
    let stmt = page_statement(
        &orders(),
        &Position::after_ts(5),
        &r,
        7,
        &PollIndex::Index("orders_by_commit_ts".into()),
    )
    .unwrap();
    assert!(
        stmt.sql()
            .contains("FROM `orders`@{FORCE_INDEX=`orders_by_commit_ts`} WHERE"),
        "{}",
        stmt.sql()
    );
    let stmt = page_statement(
        &orders(),
        &Position::after_ts(5),
        &r,
        7,
        &PollIndex::PrimaryKey,
    )
    .unwrap();
    assert!(!stmt.sql().contains("FORCE_INDEX"), "{}", stmt.sql());
}

fn sharded_orders() -> TableSchema {
    let mut t = orders();
    t.columns
        .push(Column::new("shard", ColumnType::Int64, true));
    t
}

#[test]
fn a_whole_shard_page_is_exactly_the_unsharded_page() {
    let r = micros_timestamp(10).unwrap();
    let after = Position {
        commit_ts: 5,
        key: vec![Value::String("a".into())],
    };
    for index in [
        PollIndex::FullScan,
        PollIndex::PrimaryKey,
        PollIndex::Index("orders_by_commit_ts".into()),
    ] {
        let plain = page_statement(&sharded_orders(), &after, &r, 7, &index).unwrap();
        let whole =
            shard_page_statement(&sharded_orders(), &Shard::WHOLE, &after, &r, 7, &index).unwrap();
        assert_eq!(plain.sql(), whole.sql());
        assert!(!whole.sql().contains("@shard") && !whole.sql().contains("@count"));
    }
    // The text every unsharded poll ran before shards existed.
    let stmt = shard_page_statement(
        &orders(),
        &Shard::WHOLE,
        &Position::after_ts(5),
        &r,
        7,
        &PollIndex::Index("orders_by_commit_ts".into()),
    )
    .unwrap();
    assert_eq!(
        stmt.sql(),
        "SELECT `id`, `client`, `commit_ts` FROM `orders`@{FORCE_INDEX=`orders_by_commit_ts`} \
         WHERE `commit_ts` <= @r AND (`commit_ts` > @w) ORDER BY `commit_ts`, `id` LIMIT @n"
    );
}

#[test]
fn a_column_shard_page_reads_the_shard_index_with_one_more_condition() {
    let r = micros_timestamp(10).unwrap();
    let sharding = ledgerhost_core::source::Sharding {
        count: 3,
        column: Some("shard".into()),
    };
    let index = PollIndex::Index("ordersByShard".into());
    let stmt = shard_page_statement(
        &sharded_orders(),
        &sharding.shard(2),
        &Position::after_ts(5),
        &r,
        7,
        &index,
    )
    .unwrap();
    assert_eq!(
        stmt.sql(),
        "SELECT `id`, `client`, `commit_ts`, `shard` FROM `orders`@{FORCE_INDEX=`ordersByShard`} \
         WHERE `commit_ts` <= @r AND (`commit_ts` > @w) AND `shard` = @shard \
         ORDER BY `commit_ts`, `id` LIMIT @n"
    );
    let after = Position {
        commit_ts: 5,
        key: vec![Value::String("a".into())],
    };
    let stmt =
        shard_page_statement(&sharded_orders(), &sharding.shard(0), &after, &r, 7, &index).unwrap();
    assert!(
        stmt.sql().contains(
            "AND (`commit_ts` > @w OR (`commit_ts` = @w AND ((`id` > @k0)))) \
             AND (`shard` IS NULL OR `shard` < 1 OR `shard` >= @count) ORDER BY"
        ),
        "{}",
        stmt.sql()
    );
}

#[test]
fn a_key_hash_shard_page_reads_the_commit_timestamp_index() {
    let r = micros_timestamp(10).unwrap();
    let sharding = ledgerhost_core::source::Sharding {
        count: 4,
        column: None,
    };
    let stmt = shard_page_statement(
        &orders(),
        &sharding.shard(3),
        &Position::after_ts(5),
        &r,
        7,
        &PollIndex::Index("orders_by_commit_ts".into()),
    )
    .unwrap();
    assert!(
        stmt.sql().contains(
            "FROM `orders`@{FORCE_INDEX=`orders_by_commit_ts`} WHERE `commit_ts` <= @r AND \
             (`commit_ts` > @w) AND MOD(MOD(FARM_FINGERPRINT(CONCAT(IFNULL(`id`, ''))), \
             @count) + @count, @count) = @shard ORDER BY"
        ),
        "{}",
        stmt.sql()
    );
}

#[test]
fn the_shard_index_leads_with_the_shard_column_then_the_commit_timestamp() {
    let t = sharded_orders();
    let pk = index("PRIMARY_KEY", "PRIMARY_KEY", "", &[("id", "ASC")]);
    let by_ts = index(
        "orders_by_commit_ts",
        "INDEX",
        "READ_WRITE",
        &[("commit_ts", "ASC")],
    );
    let by_shard = index(
        "ordersByShard",
        "INDEX",
        "READ_WRITE",
        &[("shard", "ASC"), ("commit_ts", "ASC")],
    );
    let shard_only = index("orders_shard", "INDEX", "READ_WRITE", &[("shard", "ASC")]);
    let leading = ["shard", "commit_ts"];
    assert_eq!(
        choose_index(&t, &[pk.clone(), by_ts.clone(), by_shard.clone()], &leading),
        Ok(PollIndex::Index("ordersByShard".into()))
    );
    let refused = choose_index(&t, &[pk.clone(), by_ts, shard_only], &leading).unwrap_err();
    assert!(
        refused.contains("no index leads with its columns (`shard`, `commit_ts`)"),
        "{refused}"
    );
    let mut building = by_shard;
    building.state = "WRITE_ONLY".into();
    let not_yet = choose_index(&t, &[pk.clone(), building], &leading).unwrap_err();
    assert!(not_yet.contains("WRITE_ONLY"), "{not_yet}");
    let msg = missing_shard_index_message(&t, "shard", &[pk], &refused);
    assert!(
        msg.contains("CREATE INDEX `ordersByShard` ON `orders` (`shard`, `commit_ts`)"),
        "{msg}"
    );
}
