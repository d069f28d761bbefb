//! The embedded warehouse: one SQLite file, one table per source table, created from the
//! events' Avro schema, plus an `_event_id` primary key that makes loads idempotent (a
//! redelivered row replaces itself).
//!
//! Column mapping: INT64/BOOL/TIMESTAMP (µs) → INTEGER, FLOAT → REAL, STRING/JSON/NUMERIC
//! (exact text)/DATE (`YYYY-MM-DD`) → TEXT, BYTES → BLOB, arrays → JSON text.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ledgerhost_core::capabilities::{Warehouse, WarehouseRow};
use ledgerhost_core::{ColumnType, Field, PortError, PortResult, Value};
use ledgerhost_manifest::calendar::{self, date_text};
use rusqlite::types::{Value as Sql, ValueRef};
use rusqlite::{Connection, params};

use super::stored::{check_table_name, json_of, value_of_json};
use crate::blocking;

const BACKEND: &str = "sqlite warehouse";

fn err(e: rusqlite::Error) -> PortError {
    PortError::unavailable(BACKEND, e)
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// A warehouse in one SQLite file.
pub struct SqliteWarehouse {
    conn: Arc<Mutex<Connection>>,
}

fn sql_type(ty: &ColumnType) -> &'static str {
    match ty {
        ColumnType::Bool | ColumnType::Int64 | ColumnType::Timestamp => "INTEGER",
        ColumnType::Float32 | ColumnType::Float64 => "REAL",
        ColumnType::Bytes => "BLOB",
        _ => "TEXT",
    }
}

fn to_sql(v: &Value) -> Sql {
    match v {
        Value::Null => Sql::Null,
        Value::Bool(b) => Sql::Integer(i64::from(*b)),
        Value::Int64(i) | Value::Timestamp(i) => Sql::Integer(*i),
        Value::Float32(f) => Sql::Real(f64::from(*f)),
        Value::Float64(f) => Sql::Real(*f),
        // Stored as `YYYY-MM-DD` text (the column has TEXT affinity, which would turn a day
        // number into digits that read back as a string), so SQL date functions work on it.
        Value::Date(d) => Sql::Text(date_text(*d)),
        Value::Numeric(s) | Value::String(s) | Value::Json(s) => Sql::Text(s.clone()),
        Value::Bytes(b) => Sql::Blob(b.clone()),
        Value::Array(..) => Sql::Text(json_of(v).to_string()),
    }
}

fn from_sql(v: ValueRef<'_>, ty: &ColumnType) -> Value {
    match (ty, v) {
        (_, ValueRef::Null) => Value::Null,
        (ColumnType::Bool, ValueRef::Integer(i)) => Value::Bool(i != 0),
        (ColumnType::Int64, ValueRef::Integer(i)) => Value::Int64(i),
        (ColumnType::Timestamp, ValueRef::Integer(i)) => Value::Timestamp(i),
        (ColumnType::Date, ValueRef::Integer(i)) => Value::Date(i as i32),
        (ColumnType::Date, ValueRef::Text(t)) => {
            let text = String::from_utf8_lossy(t);
            // Digits only: a day number stored as text by an earlier version.
            match parse_date(&text).or_else(|_| text.parse::<i32>().map_err(|e| e.to_string())) {
                Ok(days) => Value::Date(days),
                Err(_) => Value::String(text.into()),
            }
        }
        (ColumnType::Float32, ValueRef::Real(f)) => Value::Float32(f as f32),
        (ColumnType::Float64, ValueRef::Real(f)) => Value::Float64(f),
        (ColumnType::Bytes, ValueRef::Blob(b)) => Value::Bytes(b.to_vec()),
        (ColumnType::Array(elem), ValueRef::Text(t)) => {
            let items = serde_json::from_slice::<serde_json::Value>(t)
                .ok()
                .and_then(|j| j.as_array().cloned())
                .unwrap_or_default();
            Value::Array(
                (**elem).clone(),
                items.iter().map(|j| value_of_json(j, elem)).collect(),
            )
        }
        (ColumnType::Numeric, ValueRef::Text(t)) => {
            Value::Numeric(String::from_utf8_lossy(t).into())
        }
        (ColumnType::Json, ValueRef::Text(t)) => Value::Json(String::from_utf8_lossy(t).into()),
        (_, ValueRef::Text(t)) => Value::String(String::from_utf8_lossy(t).into()),
        (_, other) => Value::String(format!("{other:?}")),
    }
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date.
fn parse_date(s: &str) -> Result<i32, String> {
    calendar::parse_date(s).ok_or_else(|| format!("`{s}` is not a YYYY-MM-DD date"))
}

/// The stored column types of a table, in order.
fn columns(c: &Connection, table: &str) -> rusqlite::Result<Vec<(String, ColumnType)>> {
    let mut stmt = c.prepare_cached(
        "SELECT column, type FROM _ledgerhost_columns WHERE tbl = ?1 ORDER BY position",
    )?;
    let rows = stmt
        .query_map([table], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows
        .into_iter()
        .filter_map(|(n, t)| ColumnType::from_name(&t).map(|t| (n, t)))
        .collect())
}

impl SqliteWarehouse {
    /// Opens (or creates) the warehouse file.
    pub fn open(path: &Path) -> PortResult<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| PortError::Unavailable {
                backend: BACKEND,
                message: format!("{}: {e}", dir.display()),
            })?;
        }
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS _ledgerhost_columns (
                 tbl TEXT NOT NULL, column TEXT NOT NULL, type TEXT NOT NULL,
                 position INTEGER NOT NULL, PRIMARY KEY (tbl, column))",
        )
        .map_err(err)?;
        Ok(SqliteWarehouse {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Health probe: the file answers a query.
    pub async fn check(&self) -> PortResult<()> {
        self.run(|c| {
            c.query_row("SELECT count(*) FROM _ledgerhost_columns", [], |_| Ok(()))
                .map_err(err)
        })
        .await
    }

    async fn run<T, F>(&self, f: F) -> PortResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> PortResult<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        blocking(BACKEND, move || {
            let mut guard = conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut guard)
        })
        .await
    }
}

#[async_trait]
impl Warehouse for SqliteWarehouse {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn ensure_table(&self, table: &str, avro_schema: &str) -> PortResult<()> {
        check_table_name(BACKEND, table)?;
        let schema = ledgerhost_avro::table_schema_from_json(avro_schema)
            .map_err(|e| PortError::invalid(BACKEND, format!("table `{table}`: {e}")))?;
        let table = table.to_string();
        self.run(move |c| {
            let tx = c.transaction().map_err(err)?;
            tx.execute(
                &format!(
                    "CREATE TABLE IF NOT EXISTS {} (\"_event_id\" TEXT PRIMARY KEY)",
                    quote(&table)
                ),
                [],
            )
            .map_err(err)?;
            let existing = columns(&tx, &table).map_err(err)?;
            let mut position = existing.len() as i64;
            for col in &schema.columns {
                match existing.iter().find(|(n, _)| *n == col.name) {
                    Some((_, ty)) if *ty != col.ty => {
                        return Err(PortError::invalid(
                            BACKEND,
                            format!(
                                "table `{table}` column `{}` is {} in the warehouse but {} in the \
                             event schema",
                                col.name,
                                ty.name(),
                                col.ty.name()
                            ),
                        ));
                    }
                    Some(_) => {}
                    None => {
                        tx.execute(
                            &format!(
                                "ALTER TABLE {} ADD COLUMN {} {}",
                                quote(&table),
                                quote(&col.name),
                                sql_type(&col.ty)
                            ),
                            [],
                        )
                        .map_err(err)?;
                        tx.execute(
                            "INSERT INTO _ledgerhost_columns (tbl, column, type, position)
                             VALUES (?1, ?2, ?3, ?4)",
                            params![table, col.name, col.ty.name(), position],
                        )
                        .map_err(err)?;
                        position += 1;
                    }
                }
            }
            tx.commit().map_err(err)
        })
        .await
    }

    async fn load(&self, table: &str, rows: Vec<WarehouseRow>) -> PortResult<()> {
        check_table_name(BACKEND, table)?;
        let table = table.to_string();
        self.run(move |c| {
            let known = columns(c, &table).map_err(err)?;
            if known.is_empty() {
                return Err(PortError::NotFound {
                    backend: BACKEND,
                    what: format!("table `{table}` (call ensure-table first)"),
                });
            }
            let tx = c.transaction().map_err(err)?;
            for row in &rows {
                for f in &row.fields {
                    if !known.iter().any(|(n, _)| **n == *f.name) {
                        return Err(PortError::invalid(BACKEND, format!(
                            "table `{table}` has no column `{}` (call ensure-table with the new schema)",
                            f.name
                        )));
                    }
                }
                let names: Vec<String> = std::iter::once("\"_event_id\"".to_string())
                    .chain(row.fields.iter().map(|f| quote(&f.name)))
                    .collect();
                let placeholders: Vec<String> =
                    (1..=names.len()).map(|i| format!("?{i}")).collect();
                let updates: Vec<String> = row
                    .fields
                    .iter()
                    .map(|f| format!("{0} = excluded.{0}", quote(&f.name)))
                    .collect();
                let sql = format!(
                    "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT(\"_event_id\") DO {}",
                    quote(&table),
                    names.join(", "),
                    placeholders.join(", "),
                    if updates.is_empty() {
                        "NOTHING".to_string()
                    } else {
                        format!("UPDATE SET {}", updates.join(", "))
                    }
                );
                let values: Vec<Sql> = std::iter::once(Sql::Text(row.event_id.clone()))
                    .chain(row.fields.iter().map(|f| to_sql(&f.value)))
                    .collect();
                tx.prepare_cached(&sql)
                    .and_then(|mut s| s.execute(rusqlite::params_from_iter(values)))
                    .map_err(err)?;
            }
            tx.commit().map_err(err)
        })
        .await
    }

    async fn count(&self, table: &str) -> PortResult<u64> {
        check_table_name(BACKEND, table)?;
        let table = table.to_string();
        self.run(move |c| {
            if columns(c, &table).map_err(err)?.is_empty() {
                return Ok(0);
            }
            c.query_row(
                &format!("SELECT COUNT(*) FROM {}", quote(&table)),
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(err)
        })
        .await
    }

    async fn scan(&self, table: &str) -> PortResult<Vec<WarehouseRow>> {
        check_table_name(BACKEND, table)?;
        let table = table.to_string();
        self.run(move |c| {
            let cols = columns(c, &table).map_err(err)?;
            if cols.is_empty() {
                return Ok(Vec::new());
            }
            let names: Vec<String> = cols.iter().map(|(n, _)| quote(n)).collect();
            let mut stmt = c
                .prepare(&format!(
                    "SELECT \"_event_id\", {} FROM {} ORDER BY \"_event_id\"",
                    names.join(", "),
                    quote(&table)
                ))
                .map_err(err)?;
            let mut rows = stmt.query([]).map_err(err)?;
            let mut out = Vec::new();
            while let Some(r) = rows.next().map_err(err)? {
                let event_id: String = r.get(0).map_err(err)?;
                let mut fields = Vec::with_capacity(cols.len());
                for (i, (name, ty)) in cols.iter().enumerate() {
                    let v = r.get_ref(i + 1).map_err(err)?;
                    fields.push(Field {
                        name: name.as_str().into(),
                        value: from_sql(v, ty),
                    });
                }
                out.push(WarehouseRow { event_id, fields });
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerhost_core::{Column, TableSchema};

    fn schema(extra: bool) -> String {
        let mut columns = vec![
            Column {
                name: "id".into(),
                ty: ColumnType::Int64,
                nullable: false,
            },
            Column {
                name: "amount".into(),
                ty: ColumnType::Numeric,
                nullable: true,
            },
            Column {
                name: "tags".into(),
                ty: ColumnType::Array(Box::new(ColumnType::String)),
                nullable: true,
            },
            Column {
                name: "commit_ts".into(),
                ty: ColumnType::Timestamp,
                nullable: true,
            },
        ];
        if extra {
            columns.push(Column {
                name: "note".into(),
                ty: ColumnType::String,
                nullable: true,
            });
        }
        let t = TableSchema {
            name: "orders".into(),
            columns,
            primary_key: vec!["id".into()],
            commit_ts_column: "commit_ts".into(),
            deleted_column: None,
        };
        ledgerhost_avro::schema_for(&t).unwrap().json
    }

    fn row(id: i64, amount: &str) -> WarehouseRow {
        WarehouseRow {
            event_id: format!("orders/{id}/1"),
            fields: vec![
                Field {
                    name: "id".into(),
                    value: Value::Int64(id),
                },
                Field {
                    name: "amount".into(),
                    value: Value::Numeric(amount.into()),
                },
                Field {
                    name: "tags".into(),
                    value: Value::Array(
                        ColumnType::String,
                        vec![Value::String("a".into()), Value::Null],
                    ),
                },
                Field {
                    name: "commit_ts".into(),
                    value: Value::Timestamp(1),
                },
            ],
        }
    }

    #[test]
    fn dates_are_text_and_round_trip() {
        for (days, text) in [
            (0, "1970-01-01"),
            (-1, "1969-12-31"),
            (20_415, "2025-11-23"),
        ] {
            assert_eq!(date_text(days), text);
            assert_eq!(parse_date(text), Ok(days));
            assert_eq!(to_sql(&Value::Date(days)), Sql::Text(text.into()));
            let back = from_sql(ValueRef::Text(text.as_bytes()), &ColumnType::Date);
            assert_eq!(back, Value::Date(days));
        }
        assert!(parse_date("2023-02-29").is_err());
        assert!(parse_date("x").is_err());
        // A day number an earlier version stored in the TEXT column still reads as a date.
        assert_eq!(
            from_sql(ValueRef::Text(b"20000"), &ColumnType::Date),
            Value::Date(20_000)
        );
    }

    #[tokio::test]
    async fn loads_are_idempotent_and_scan_is_typed() {
        let dir = tempfile::tempdir().unwrap();
        let w = SqliteWarehouse::open(&dir.path().join("w.db")).unwrap();
        w.ensure_table("orders", &schema(false)).await.unwrap();
        w.load("orders", vec![row(1, "1.5"), row(2, "2")])
            .await
            .unwrap();
        w.load("orders", vec![row(1, "1.5"), row(2, "2")])
            .await
            .unwrap();
        assert_eq!(w.count("orders").await.unwrap(), 2);
        let rows = w.scan("orders").await.unwrap();
        assert_eq!(rows, vec![row(1, "1.5"), row(2, "2")]);
        // A new nullable column is added; old rows read it as NULL.
        w.ensure_table("orders", &schema(true)).await.unwrap();
        let rows = w.scan("orders").await.unwrap();
        assert_eq!(rows[0].fields.last().unwrap().value, Value::Null);
        let e = w
            .load("nope", vec![row(1, "1")])
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("ensure-table"), "{e}");
        assert!(
            w.ensure_table("_ledgerhost_columns", &schema(false))
                .await
                .is_err()
        );
    }
}
