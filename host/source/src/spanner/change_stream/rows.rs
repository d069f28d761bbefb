//! A data change record's mods as the rows the poller would have read: values in the
//! captured schema's column order, the record's commit timestamp in the commit-timestamp
//! column, and a `DELETE` as a tombstone (the deleted column true, the key, and the old
//! values when the stream sends them, NULL otherwise).
//!
//! A mod's values are Spanner's JSON (GoogleSQL dialect): INT64, NUMERIC, DATE, TIMESTAMP
//! and BYTES (base64) as strings, FLOAT64 as a number or `"NaN"`/`"Infinity"`, JSON as its
//! text. Each is read by the one rule for Spanner values ([`from_spanner`]) as if a query
//! had returned it.

use google_cloud_spanner::value::Value as SpValue;
use ledgerhost_core::source::Row;
use ledgerhost_core::{ColumnType, TableSchema, Value};
use serde_json::Value as Json;

use super::record::{DataChange, ModType};
use crate::spanner::values::from_spanner;

/// Why a record's mods cannot become rows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowsError {
    /// The table has a column the captured schema lacks: it was added since the schema was
    /// read, and reading the schema again (and the stream from the stored progress) follows
    /// it.
    #[error(
        "table `{table}` has a column `{column}` the captured schema lacks (added since the \
         schema was read): reading the schema again"
    )]
    SchemaChanged {
        /// The table.
        table: String,
        /// The new column.
        column: String,
    },
    /// The record cannot be read as rows of the table.
    #[error("{0}")]
    Invalid(String),
}

/// The rows of `change`, a record of `schema`'s table, in the order the transaction wrote
/// them.
pub fn rows(schema: &TableSchema, change: &DataChange) -> Result<Vec<Row>, RowsError> {
    let commit_ts = schema
        .column_index(&schema.commit_ts_column)
        .ok_or_else(|| RowsError::Invalid(format!("no column `{}`", schema.commit_ts_column)))?;
    let deleted = schema
        .deleted_column
        .as_deref()
        .and_then(|d| schema.column_index(d));
    change
        .mods
        .iter()
        .map(|m| {
            let keys = object(&m.keys, "keys").map_err(RowsError::Invalid)?;
            // A delete's tombstone carries the row's last values when the stream sends them
            // (NEW_ROW_AND_OLD_VALUES), else the key alone.
            let new_values = match change.mod_type {
                ModType::Delete => object(&m.old_values, "old_values"),
                _ => object(&m.new_values, "new_values"),
            }
            .map_err(RowsError::Invalid)?;
            let mut values = vec![Value::Null; schema.columns.len()];
            for (name, v) in keys.iter().chain(new_values.iter()) {
                let index = schema
                    .column_index(name)
                    .ok_or_else(|| RowsError::SchemaChanged {
                        table: schema.name.clone(),
                        column: name.clone(),
                    })?;
                let column = &schema.columns[index];
                values[index] = value(v, &column.ty).map_err(|e| {
                    RowsError::Invalid(format!("column `{}` = {v}: {e}", column.name))
                })?;
            }
            for key in &schema.primary_key {
                if !keys.contains_key(key) {
                    return Err(RowsError::Invalid(format!(
                        "the change of `{}` lacks key column `{key}`",
                        schema.name
                    )));
                }
            }
            if change.mod_type != ModType::Delete {
                // Every column but the host's own roles must be there: a stream capturing
                // only what changed cannot give the rows the poller publishes.
                if let Some(c) = schema.columns.iter().enumerate().find(|(i, c)| {
                    *i != commit_ts
                        && Some(*i) != deleted
                        && !keys.contains_key(&c.name)
                        && !new_values.contains_key(&c.name)
                }) {
                    return Err(RowsError::Invalid(format!(
                        "the change stream's {} record of `{}` lacks column `{}`: capture \
                         needs whole rows (value_capture_type NEW_ROW or \
                         NEW_ROW_AND_OLD_VALUES, every column watched)",
                        change.value_capture_type, schema.name, c.1.name
                    )));
                }
            }
            values[commit_ts] = Value::Timestamp(change.key.commit_ts);
            match (change.mod_type, deleted) {
                (ModType::Delete, Some(d)) => values[d] = Value::Bool(true),
                (ModType::Delete, None) => {
                    return Err(RowsError::Invalid(format!(
                        "a DELETE of `{}` has no deleted column to mark",
                        schema.name
                    )));
                }
                (_, Some(d)) if values[d] == Value::Null => values[d] = Value::Bool(false),
                _ => {}
            }
            Ok(Row {
                values,
                commit_ts: change.key.commit_ts,
            })
        })
        .collect()
}

fn object(text: &str, what: &str) -> Result<serde_json::Map<String, Json>, String> {
    match serde_json::from_str(text) {
        Ok(Json::Object(map)) => Ok(map),
        Ok(other) => Err(format!("mod `{what}` is not an object: {other}")),
        Err(e) => Err(format!("mod `{what}` is not JSON ({e}): {text}")),
    }
}

/// A mod's JSON value as a value of column type `ty`.
fn value(v: &Json, ty: &ColumnType) -> Result<Value, String> {
    from_spanner(&as_spanner(v, ty), ty)
}

/// The value as a query would have returned it.
fn as_spanner(v: &Json, ty: &ColumnType) -> SpValue {
    match (v, ty) {
        (Json::Null, _) => SpValue::null(),
        // The emulator writes a NULL element of an INT64, NUMERIC or JSON array as the text
        // "NULL" (probed); no value of these types is spelled so (JSON's own null is
        // lowercase), so it is read as NULL. A STRING or BYTES "NULL" is a value.
        (Json::String(s), ColumnType::Int64 | ColumnType::Float32 | ColumnType::Float64)
        | (Json::String(s), ColumnType::Bool | ColumnType::Date | ColumnType::Timestamp)
        | (Json::String(s), ColumnType::Numeric | ColumnType::Json)
            if s == "NULL" =>
        {
            SpValue::null()
        }
        (Json::Array(items), ColumnType::Array(elem)) => SpValue::from(
            items
                .iter()
                .map(|i| as_spanner(i, elem))
                .collect::<Vec<_>>(),
        ),
        (Json::String(s), _) => SpValue::from(s.clone()),
        (Json::Bool(b), _) => SpValue::from(*b),
        (Json::Number(n), ColumnType::Float32 | ColumnType::Float64) => {
            SpValue::from(n.as_f64().unwrap_or(f64::NAN))
        }
        // INT64 and NUMERIC travel as text; a JSON document as its text.
        (Json::Number(n), _) => SpValue::from(n.to_string()),
        (other, _) => SpValue::from(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spanner::change_stream::record::{Mod, RecordKey};
    use ledgerhost_core::Column;

    fn schema() -> TableSchema {
        let c = |n: &str, ty: ColumnType, nullable: bool| Column::new(n, ty, nullable);
        TableSchema {
            name: "t".into(),
            columns: vec![
                c("id", ColumnType::Int64, false),
                c("name", ColumnType::String, true),
                c("amount", ColumnType::Numeric, true),
                c("f", ColumnType::Float64, true),
                c("b", ColumnType::Bytes, true),
                c("d", ColumnType::Date, true),
                c("ts", ColumnType::Timestamp, true),
                c("j", ColumnType::Json, true),
                c("ai", ColumnType::Array(Box::new(ColumnType::Int64)), true),
                c("ok", ColumnType::Bool, true),
                c("commit_ts", ColumnType::Timestamp, false),
                c("deleted", ColumnType::Bool, false),
            ],
            primary_key: vec!["id".into()],
            commit_ts_column: "commit_ts".into(),
            deleted_column: Some("deleted".into()),
        }
    }

    fn change(mod_type: ModType, mods: &[(&str, &str)]) -> DataChange {
        DataChange {
            key: RecordKey::new(1_700_000_000_000_001, "tx", "00000000"),
            last_in_partition: true,
            table: "t".into(),
            mod_type,
            value_capture_type: "NEW_ROW".into(),
            mods: mods
                .iter()
                .map(|(k, v)| Mod {
                    keys: k.to_string(),
                    new_values: v.to_string(),
                    old_values: "{}".into(),
                })
                .collect(),
        }
    }

    #[test]
    fn every_type_is_read_as_a_query_would_read_it_and_a_delete_is_a_tombstone() {
        let s = schema();
        // As the emulator sent them (INT64 as text, a NULL INT64 element as "NULL").
        let full = r#"{"name":"a","amount":"1.5","f":1.5,"b":"AAE=","d":"2024-02-03",
            "ts":"2024-01-02T03:04:05.123456Z","j":"{\"x\":1}","ai":["1","NULL","3"],"ok":true}"#;
        let nulls = r#"{"name":null,"amount":null,"f":"NaN","b":null,"d":null,"ts":null,
            "j":null,"ai":null,"ok":null}"#;
        let inserted = rows(
            &s,
            &change(
                ModType::Insert,
                &[(r#"{"id":"1"}"#, full), (r#"{"id":"2"}"#, nulls)],
            ),
        )
        .unwrap();
        let ts = 1_700_000_000_000_001;
        assert_eq!(inserted[0].commit_ts, ts);
        assert_eq!(
            inserted[0].values,
            vec![
                Value::Int64(1),
                Value::String("a".into()),
                Value::Numeric("1.5".into()),
                Value::Float64(1.5),
                Value::Bytes(vec![0, 1]),
                Value::Date(ledgerhost_manifest::calendar::parse_date("2024-02-03").unwrap()),
                Value::Timestamp(1_704_164_645_123_456),
                Value::Json("{\"x\":1}".into()),
                Value::Array(
                    ColumnType::Int64,
                    vec![Value::Int64(1), Value::Null, Value::Int64(3)]
                ),
                Value::Bool(true),
                Value::Timestamp(ts),
                Value::Bool(false),
            ]
        );
        assert!(matches!(inserted[1].values[3], Value::Float64(x) if x.is_nan()));
        assert_eq!(inserted[1].values[1], Value::Null);

        let gone = rows(&s, &change(ModType::Delete, &[(r#"{"id":"2"}"#, "{}")])).unwrap();
        let mut tombstone = vec![Value::Null; 12];
        tombstone[0] = Value::Int64(2);
        tombstone[10] = Value::Timestamp(ts);
        tombstone[11] = Value::Bool(true);
        assert_eq!(gone[0].values, tombstone);

        let mut with_old = change(ModType::Delete, &[(r#"{"id":"2"}"#, "{}")]);
        with_old.mods[0].old_values = r#"{"name":"last"}"#.into();
        tombstone[1] = Value::String("last".into());
        assert_eq!(rows(&s, &with_old).unwrap()[0].values, tombstone);
    }

    #[test]
    fn partial_rows_new_columns_and_bad_values_are_told_apart_and_named() {
        let s = schema();
        let e = rows(
            &s,
            &change(ModType::Update, &[(r#"{"id":"1"}"#, r#"{"name":"x"}"#)]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("lacks column `amount`") && e.contains("NEW_ROW"),
            "{e}"
        );
        let e = rows(
            &s,
            &change(ModType::Insert, &[(r#"{"id":"1"}"#, r#"{"nope":1}"#)]),
        )
        .unwrap_err();
        assert_eq!(
            e,
            RowsError::SchemaChanged {
                table: "t".into(),
                column: "nope".into()
            },
            "a column added since the schema was read is told apart"
        );
        let e = rows(&s, &change(ModType::Delete, &[(r#"{"id":"x"}"#, "{}")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("column `id`"), "{e}");
        let e = rows(&s, &change(ModType::Delete, &[("{}", "{}")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("lacks key column `id`"), "{e}");
    }
}
