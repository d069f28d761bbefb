//! Checking a change stream can give a table's rows whole, and the schema its events carry.
//!
//! From `INFORMATION_SCHEMA` (`CHANGE_STREAMS`, `CHANGE_STREAM_TABLES`,
//! `CHANGE_STREAM_COLUMNS`, `CHANGE_STREAM_OPTIONS`): the stream must watch the table and
//! every column of it, with a value capture type that returns the whole new row (`NEW_ROW`
//! or `NEW_ROW_AND_OLD_VALUES`), no change type excluded, in the default partition mode
//! (the one whose records `parse` reads). Anything else is refused with the DDL that fixes
//! it.

use std::collections::BTreeMap;

use google_cloud_spanner::statement::Statement;
use google_cloud_spanner::value::Value as SpValue;
use ledgerhost_core::change::virtual_columns;
use ledgerhost_core::{Column, ColumnType, PortResult, TableSchema};

use crate::spanner::schema::{TableColumns, query_rows};

/// How the stream returns values, as far as capture cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    /// `NEW_ROW`: the whole new row; a delete carries only its key.
    NewRow,
    /// `NEW_ROW_AND_OLD_VALUES`: the whole new row; a delete also carries the old values.
    NewRowAndOldValues,
}

/// What `INFORMATION_SCHEMA` says of a stream, for one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamFacts {
    /// The stream exists.
    pub exists: bool,
    /// It watches every table (`FOR ALL`).
    pub all_tables: bool,
    /// It watches the table: `Some(true)` with every column, `Some(false)` with a list.
    pub table_all_columns: Option<bool>,
    /// The columns it watches when it names them.
    pub columns: Vec<String>,
    /// Its options, by name.
    pub options: BTreeMap<String, String>,
}

/// Reads the facts of `stream` for `table` with `run_query`.
pub(crate) async fn stream_facts<Q, Fut>(
    stream: &str,
    table: &str,
    run_query: Q,
) -> PortResult<StreamFacts>
where
    Q: Fn(Statement) -> Fut,
    Fut: std::future::Future<
            Output = google_cloud_spanner::Result<google_cloud_spanner::result::ResultSet>,
        >,
{
    // Each statement names the parameters it uses, no others.
    let by_stream = |sql: &str| {
        let stmt = Statement::builder(sql).add_param("s", stream.to_string());
        if sql.contains("@t") {
            stmt.add_param("t", table.to_string()).build()
        } else {
            stmt.build()
        }
    };
    let (_, streams) = query_rows("reading INFORMATION_SCHEMA.CHANGE_STREAMS", || {
        run_query(by_stream(
            "SELECT `ALL` FROM INFORMATION_SCHEMA.CHANGE_STREAMS \
             WHERE CHANGE_STREAM_SCHEMA = '' AND CHANGE_STREAM_NAME = @s",
        ))
    })
    .await?;
    let Some(first) = streams.first() else {
        return Ok(StreamFacts::default());
    };
    let flag = |v: Option<&SpValue>| v.and_then(SpValue::as_bool).unwrap_or(false);
    let text = |v: Option<&SpValue>| v.and_then(SpValue::as_str).unwrap_or("").to_string();
    let mut facts = StreamFacts {
        exists: true,
        all_tables: flag(first.first()),
        ..StreamFacts::default()
    };
    let (_, tables) = query_rows("reading INFORMATION_SCHEMA.CHANGE_STREAM_TABLES", || {
        run_query(by_stream(
            "SELECT ALL_COLUMNS FROM INFORMATION_SCHEMA.CHANGE_STREAM_TABLES \
             WHERE CHANGE_STREAM_SCHEMA = '' AND CHANGE_STREAM_NAME = @s AND TABLE_NAME = @t",
        ))
    })
    .await?;
    facts.table_all_columns = tables.first().map(|r| flag(r.first()));
    if facts.table_all_columns == Some(false) {
        let (_, columns) = query_rows("reading INFORMATION_SCHEMA.CHANGE_STREAM_COLUMNS", || {
            run_query(by_stream(
                "SELECT COLUMN_NAME FROM INFORMATION_SCHEMA.CHANGE_STREAM_COLUMNS \
                 WHERE CHANGE_STREAM_SCHEMA = '' AND CHANGE_STREAM_NAME = @s AND TABLE_NAME = @t",
            ))
        })
        .await?;
        facts.columns = columns.iter().map(|r| text(r.first())).collect();
    }
    let (_, options) = query_rows("reading INFORMATION_SCHEMA.CHANGE_STREAM_OPTIONS", || {
        run_query(by_stream(
            "SELECT OPTION_NAME, OPTION_VALUE FROM INFORMATION_SCHEMA.CHANGE_STREAM_OPTIONS \
             WHERE CHANGE_STREAM_SCHEMA = '' AND CHANGE_STREAM_NAME = @s",
        ))
    })
    .await?;
    facts.options = options
        .iter()
        .map(|r| (text(r.first()), text(r.get(1))))
        .collect();
    Ok(facts)
}

/// The DDL creating a stream capture can read `table` through.
pub fn stream_ddl(stream: &str, table: &str) -> String {
    format!("CREATE CHANGE STREAM {stream} FOR {table} OPTIONS (value_capture_type = 'NEW_ROW')")
}

/// Checks the facts: the stream gives `table.name`'s rows whole. Returns how it captures
/// values.
pub(crate) fn check(
    stream: &str,
    table: &TableColumns,
    facts: &StreamFacts,
) -> Result<Capture, String> {
    let name = &table.name;
    if !facts.exists {
        return Err(format!(
            "change stream `{stream}` does not exist; create it with:\n  {}",
            stream_ddl(stream, name)
        ));
    }
    match facts.table_all_columns {
        _ if facts.all_tables => {}
        None => {
            return Err(format!(
                "change stream `{stream}` does not watch table `{name}`: add `{name}` to its FOR \
                 clause (ALTER CHANGE STREAM {stream} SET FOR <its tables>, {name}), or create \
                 one for it:\n  {}",
                stream_ddl(stream, name)
            ));
        }
        Some(true) => {}
        Some(false) => {
            let missing: Vec<&str> = table
                .columns
                .iter()
                .filter(|c| !table.primary_key.contains(&c.name))
                .filter(|c| !facts.columns.contains(&c.name))
                .map(|c| c.name.as_str())
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "change stream `{stream}` watches only some columns of `{name}` (not {}): \
                     capture needs whole rows; name `{name}` without a column list in its FOR \
                     clause (ALTER CHANGE STREAM {stream} SET FOR <its tables>, {name})",
                    missing.join(", ")
                ));
            }
        }
    }
    let option = |key: &str| facts.options.get(key).map(String::as_str);
    let fix = |option: &str, value: &str| {
        format!("ALTER CHANGE STREAM {stream} SET OPTIONS ({option} = {value})")
    };
    for exclude in [
        "exclude_insert",
        "exclude_update",
        "exclude_delete",
        "exclude_ttl_deletes",
    ] {
        if option(exclude).is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Err(format!(
                "change stream `{stream}` leaves changes out ({exclude} = true): capture must see \
                 every change; run:\n  {}",
                fix(exclude, "false")
            ));
        }
    }
    if let Some(mode) = option("partition_mode")
        && !mode.eq_ignore_ascii_case("IMMUTABLE_KEY_RANGE")
    {
        return Err(format!(
            "change stream `{stream}` has partition_mode = '{mode}', whose records this host \
             cannot read yet (the emulator it is tested on has only the default mode); run:\n  {}",
            fix("partition_mode", "'IMMUTABLE_KEY_RANGE'")
        ));
    }
    // Spanner's default value capture type is OLD_AND_NEW_VALUES: changed columns only
    // (https://cloud.google.com/spanner/docs/change-streams#value-capture-type).
    match option("value_capture_type").unwrap_or("OLD_AND_NEW_VALUES") {
        v if v.eq_ignore_ascii_case("NEW_ROW") => Ok(Capture::NewRow),
        v if v.eq_ignore_ascii_case("NEW_ROW_AND_OLD_VALUES") => Ok(Capture::NewRowAndOldValues),
        other => Err(format!(
            "change stream `{stream}` has value_capture_type = '{other}', which returns only \
             the columns a change touched; capture needs whole rows; run:\n  {}",
            fix("value_capture_type", "'NEW_ROW'")
        )),
    }
}

/// The schema events of `table` carry when captured by change stream: its columns, its
/// commit-timestamp column if it has one (else [`virtual_columns::COMMIT_TS`]), its soft-
/// delete column if configured (else [`virtual_columns::DELETED`]). With [`Capture::NewRow`]
/// a delete carries only the key, so non-key columns are nullable.
pub(crate) fn event_schema(
    table: TableColumns,
    commit_ts_column: Option<&str>,
    deleted_column: Option<&str>,
    capture: Capture,
) -> Result<TableSchema, String> {
    let TableColumns {
        name,
        mut columns,
        primary_key,
        commit_columns,
    } = table;
    if let Some(c) = columns
        .iter()
        .find(|c| virtual_columns::is_virtual(&c.name))
    {
        return Err(format!(
            "table `{name}` has a column `{}`, a name the host gives its own columns in change \
             stream capture",
            c.name
        ));
    }
    let commit_ts_column = match (commit_ts_column, commit_columns.as_slice()) {
        (Some(c), found) if found.iter().any(|f| f == c) => c.to_string(),
        (Some(c), _) => {
            return Err(format!(
                "table `{name}`: column `{c}` (commit-ts-column) is not a commit-timestamp column; \
                 leave the setting out to have the host add `{}`",
                virtual_columns::COMMIT_TS
            ));
        }
        (None, [one]) => one.clone(),
        (None, _) => {
            columns.push(Column::new(
                virtual_columns::COMMIT_TS,
                ColumnType::Timestamp,
                false,
            ));
            virtual_columns::COMMIT_TS.to_string()
        }
    };
    let deleted_column = match deleted_column {
        Some(d)
            if columns
                .iter()
                .any(|c| c.name == d && c.ty == ColumnType::Bool) =>
        {
            d.to_string()
        }
        Some(d) => {
            return Err(format!(
                "table `{name}` has no BOOL soft-delete column `{d}` (tables.deleted-column)"
            ));
        }
        None => {
            columns.push(Column::new(
                virtual_columns::DELETED,
                ColumnType::Bool,
                false,
            ));
            virtual_columns::DELETED.to_string()
        }
    };
    if capture == Capture::NewRow {
        for c in &mut columns {
            if !primary_key.contains(&c.name)
                && c.name != commit_ts_column
                && c.name != deleted_column
            {
                c.nullable = true;
            }
        }
    }
    Ok(TableSchema {
        name,
        columns,
        primary_key,
        commit_ts_column,
        deleted_column: Some(deleted_column),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> TableColumns {
        TableColumns {
            name: "orders".into(),
            columns: vec![
                Column::new("id", ColumnType::Int64, false),
                Column::new("amount", ColumnType::Int64, false),
                Column::new("note", ColumnType::String, true),
            ],
            primary_key: vec!["id".into()],
            commit_columns: Vec::new(),
        }
    }

    fn facts(options: &[(&str, &str)]) -> StreamFacts {
        StreamFacts {
            exists: true,
            all_tables: false,
            table_all_columns: Some(true),
            columns: Vec::new(),
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_stream_that_cannot_give_whole_rows_is_refused_with_the_ddl_that_fixes_it() {
        let t = table();
        let ok = facts(&[("value_capture_type", "NEW_ROW")]);
        assert_eq!(check("s", &t, &ok), Ok(Capture::NewRow));
        let old = facts(&[("value_capture_type", "NEW_ROW_AND_OLD_VALUES")]);
        assert_eq!(check("s", &t, &old), Ok(Capture::NewRowAndOldValues));

        let refused = |f: StreamFacts, wanted: &str| {
            let e = check("s", &t, &f).unwrap_err();
            assert!(e.contains(wanted), "{e}");
        };
        refused(StreamFacts::default(), "CREATE CHANGE STREAM s FOR orders");
        refused(
            facts(&[]),
            "ALTER CHANGE STREAM s SET OPTIONS (value_capture_type = 'NEW_ROW')",
        );
        refused(
            facts(&[("value_capture_type", "NEW_VALUES")]),
            "value_capture_type = 'NEW_ROW'",
        );
        refused(
            facts(&[
                ("value_capture_type", "NEW_ROW"),
                ("exclude_delete", "true"),
            ]),
            "SET OPTIONS (exclude_delete = false)",
        );
        refused(
            facts(&[
                ("value_capture_type", "NEW_ROW"),
                ("partition_mode", "MUTABLE_KEY_RANGE"),
            ]),
            "partition_mode = 'IMMUTABLE_KEY_RANGE'",
        );
        let mut other_table = ok.clone();
        other_table.table_all_columns = None;
        refused(other_table, "does not watch table `orders`");
        let mut some_columns = ok.clone();
        some_columns.table_all_columns = Some(false);
        some_columns.columns = vec!["amount".into()];
        refused(some_columns.clone(), "(not note)");
        some_columns.columns.push("note".into());
        assert_eq!(check("s", &t, &some_columns), Ok(Capture::NewRow));
        let mut all = ok;
        all.all_tables = true;
        all.table_all_columns = None;
        assert_eq!(check("s", &t, &all), Ok(Capture::NewRow));
    }

    #[test]
    fn events_carry_the_host_s_columns_where_the_table_has_none() {
        let s = event_schema(table(), None, None, Capture::NewRow).unwrap();
        let names: Vec<&str> = s.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "id",
                "amount",
                "note",
                virtual_columns::COMMIT_TS,
                virtual_columns::DELETED
            ]
        );
        assert_eq!(s.commit_ts_column, virtual_columns::COMMIT_TS);
        assert_eq!(s.deleted_column.as_deref(), Some(virtual_columns::DELETED));
        let nullable: Vec<bool> = s.columns.iter().map(|c| c.nullable).collect();
        assert_eq!(
            nullable,
            [false, true, true, false, false],
            "a NEW_ROW tombstone carries only the key"
        );
        let kept = event_schema(table(), None, None, Capture::NewRowAndOldValues).unwrap();
        assert!(!kept.columns[1].nullable, "tombstones carry the old values");

        let mut own = table();
        own.columns
            .push(Column::new("ts", ColumnType::Timestamp, false));
        own.columns
            .push(Column::new("gone", ColumnType::Bool, true));
        own.commit_columns = vec!["ts".into()];
        let s = event_schema(own.clone(), None, Some("gone"), Capture::NewRow).unwrap();
        assert_eq!((s.commit_ts_column.as_str(), s.columns.len()), ("ts", 5));
        assert!(event_schema(own.clone(), Some("note"), None, Capture::NewRow).is_err());
        assert!(event_schema(own.clone(), None, Some("note"), Capture::NewRow).is_err());
        own.columns.push(Column::new(
            virtual_columns::DELETED,
            ColumnType::Bool,
            true,
        ));
        let e = event_schema(own, None, None, Capture::NewRow).unwrap_err();
        assert!(e.contains("a name the host gives its own columns"), "{e}");
    }
}
