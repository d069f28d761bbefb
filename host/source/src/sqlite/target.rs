//! SQLite as a restore target ([`TableWriter`]): tables created with declared types this
//! module's source side reads back as the same column types, rows upserted by primary key.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ledgerhost_core::source::TableSpec;
use ledgerhost_core::target::{
    PreparedTable, TableWriter, WriteBatch, check_table_matches, own_commit_ts_column,
};
use ledgerhost_core::{ColumnType, PortError, PortResult, TableSchema, Value};
use ledgerhost_manifest::calendar::date_text;
use rusqlite::{Connection, params_from_iter};

use super::connection::open_connection;
use super::names::{BACKEND, quote};
use super::schema::{read_schema, read_table};
use super::values::{base64_encode, to_sql};

/// An SQLite file rows are restored into (created when missing).
pub struct SqliteTarget {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

impl SqliteTarget {
    /// Opens (and creates if missing) the database file in WAL mode. Unlike the source, it
    /// adds no table of the host's own.
    pub fn open(path: &Path) -> PortResult<Self> {
        let conn = open_connection(path).map_err(|e| {
            PortError::unavailable(BACKEND, format!("cannot open {}: {e}", path.display()))
        })?;
        Ok(SqliteTarget {
            path: path.to_path_buf(),
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with_conn<T, F>(&self, f: F) -> PortResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> PortResult<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| PortError::unavailable(BACKEND, format!("SQLite task failed: {e}")))?
    }
}

/// The declared type that [`super::schema::column_type`] reads back as `ty`.
fn declared_type(ty: &ColumnType) -> String {
    match ty {
        ColumnType::Bool => "BOOLEAN".into(),
        ColumnType::Int64 => "INTEGER".into(),
        ColumnType::Float32 => "FLOAT32".into(),
        ColumnType::Float64 => "REAL".into(),
        // Text affinity keeps every digit (see the module docs of `sqlite`).
        ColumnType::Numeric => "DECIMAL TEXT".into(),
        ColumnType::String => "TEXT".into(),
        ColumnType::Bytes => "BLOB".into(),
        ColumnType::Date => "DATE".into(),
        ColumnType::Timestamp => "TIMESTAMP".into(),
        ColumnType::Json => "JSON".into(),
        ColumnType::Array(elem) => format!("\"ARRAY<{}>\"", declared_type(elem)),
    }
}

/// `CREATE TABLE` for `schema`; the commit-timestamp column is `INTEGER` (µs), as the
/// source's capture DDL declares it, so the restored file can be captured again.
pub fn create_table_sql(schema: &TableSchema) -> String {
    let mut parts: Vec<String> = schema
        .columns
        .iter()
        .map(|c| {
            let ty = if c.name == schema.commit_ts_column {
                "INTEGER".to_string()
            } else {
                declared_type(&c.ty)
            };
            let not_null = if c.nullable { "" } else { " NOT NULL" };
            format!("{} {ty}{not_null}", quote(&c.name))
        })
        .collect();
    let keys: Vec<String> = schema.primary_key.iter().map(|k| quote(k)).collect();
    parts.push(format!("PRIMARY KEY ({})", keys.join(", ")));
    format!(
        "CREATE TABLE {} ({})",
        quote(&schema.name),
        parts.join(", ")
    )
}

/// A value as SQLite stores it in a column of the source's conventions (arrays as JSON).
fn stored(v: &Value) -> Result<rusqlite::types::Value, String> {
    match v {
        Value::Array(_, items) => {
            let json = items
                .iter()
                .map(array_element)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rusqlite::types::Value::Text(
                serde_json::Value::Array(json).to_string(),
            ))
        }
        other => Ok(to_sql(other)),
    }
}

/// One array element as JSON, the inverse of the source's `from_json`.
fn array_element(v: &Value) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    let number = |x: f64| {
        serde_json::Number::from_f64(x)
            .map(J::Number)
            .ok_or_else(|| format!("array element {x} has no JSON form"))
    };
    Ok(match v {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int64(n) | Value::Timestamp(n) => J::from(*n),
        Value::Float32(x) => number(f64::from(*x))?,
        Value::Float64(x) => number(*x)?,
        Value::Numeric(s) | Value::String(s) => J::String(s.clone()),
        Value::Json(s) => {
            serde_json::from_str(s).map_err(|e| format!("array element `{s}` is not JSON: {e}"))?
        }
        Value::Bytes(b) => J::String(base64_encode(b)),
        Value::Date(d) => J::String(date_text(*d)),
        Value::Array(..) => return Err("arrays of arrays are not supported".into()),
    })
}

fn write_batch_in(
    conn: &mut Connection,
    schema: &TableSchema,
    batch: &WriteBatch,
) -> PortResult<()> {
    let t = quote(&schema.name);
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        PortError::unavailable(BACKEND, format!("{what} table `{}`: {e}", schema.name))
    };
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| failed("cannot begin a write to", &e))?;
    let keys: Vec<String> = schema.primary_key.iter().map(|k| quote(k)).collect();
    for row in &batch.upserts {
        let names: Vec<String> = row.iter().map(|f| quote(&f.name)).collect();
        let updates: Vec<String> = row
            .iter()
            .filter(|f| !schema.primary_key.iter().any(|k| **k == *f.name))
            .map(|f| format!("{0} = excluded.{0}", quote(&f.name)))
            .collect();
        let on_conflict = if updates.is_empty() {
            "DO NOTHING".to_string()
        } else {
            format!("DO UPDATE SET {}", updates.join(", "))
        };
        let sql = format!(
            "INSERT INTO {t} ({}) VALUES ({}) ON CONFLICT ({}) {on_conflict}",
            names.join(", "),
            vec!["?"; names.len()].join(", "),
            keys.join(", ")
        );
        let values = row
            .iter()
            .map(|f| {
                stored(&f.value).map_err(|m| {
                    PortError::invalid(
                        BACKEND,
                        format!("table `{}`, column `{}`: {m}", schema.name, f.name),
                    )
                })
            })
            .collect::<PortResult<Vec<_>>>()?;
        tx.prepare_cached(&sql)
            .and_then(|mut s| s.execute(params_from_iter(values)))
            .map_err(|e| failed("cannot upsert into", &e))?;
    }
    if !batch.deletes.is_empty() {
        let sql = format!(
            "DELETE FROM {t} WHERE {}",
            keys.iter()
                .map(|k| format!("{k} = ?"))
                .collect::<Vec<_>>()
                .join(" AND ")
        );
        let mut stmt = tx
            .prepare_cached(&sql)
            .map_err(|e| failed("cannot delete from", &e))?;
        for key in &batch.deletes {
            stmt.execute(params_from_iter(key.iter().map(to_sql)))
                .map_err(|e| failed("cannot delete from", &e))?;
        }
    }
    tx.commit().map_err(|e| failed("cannot commit to", &e))
}

#[async_trait]
impl TableWriter for SqliteTarget {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn ensure_table(&self, schema: &TableSchema) -> PortResult<PreparedTable> {
        let schema = schema.clone();
        let path = self.path.clone();
        self.with_conn(move |conn| {
            let exists: bool = conn
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                    [&schema.name],
                    |r| r.get(0),
                )
                .map_err(|e| PortError::unavailable(BACKEND, e))?;
            if !exists {
                conn.execute_batch(&create_table_sql(&schema))
                    .map_err(|e| {
                        PortError::invalid(
                            BACKEND,
                            format!(
                                "cannot create table `{}` in {}: {e}",
                                schema.name,
                                path.display()
                            ),
                        )
                    })?;
                return Ok(PreparedTable {
                    created: true,
                    max_batch_rows: None,
                });
            }
            let spec = TableSpec {
                name: schema.name.clone(),
                commit_ts_column: Some(schema.commit_ts_column.clone()),
                // Checked as a column below, so a missing one is named like any other.
                deleted_column: None,
                sharding: Default::default(),
            };
            let existing = match own_commit_ts_column(&schema) {
                Some(_) => read_schema(conn, &spec)?,
                // Captured by change stream: the table has no commit-timestamp column.
                None => read_table(conn, &spec)?.schema,
            };
            check_table_matches(&existing, &schema)
                .map_err(|m| PortError::invalid(BACKEND, format!("{}: {m}", path.display())))?;
            Ok(PreparedTable {
                created: false,
                max_batch_rows: None,
            })
        })
        .await
    }

    async fn write_batch(&self, schema: &TableSchema, batch: WriteBatch) -> PortResult<()> {
        let schema = schema.clone();
        self.with_conn(move |conn| write_batch_in(conn, &schema, &batch))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerhost_core::source::{Position, Source};
    use ledgerhost_core::{Column, Field};

    fn schema() -> TableSchema {
        let col = Column::new;
        TableSchema {
            name: "orders".into(),
            columns: vec![
                col("id", ColumnType::Int64, false),
                col("ok", ColumnType::Bool, true),
                col("f32", ColumnType::Float32, true),
                col("f64", ColumnType::Float64, true),
                col("price", ColumnType::Numeric, true),
                col("note", ColumnType::String, true),
                col("data", ColumnType::Bytes, true),
                col("day", ColumnType::Date, true),
                col("at", ColumnType::Timestamp, true),
                col("doc", ColumnType::Json, true),
                col(
                    "blobs",
                    ColumnType::Array(Box::new(ColumnType::Bytes)),
                    true,
                ),
                col("days", ColumnType::Array(Box::new(ColumnType::Date)), true),
                col("commit_ts", ColumnType::Timestamp, true),
            ],
            primary_key: vec!["id".into()],
            commit_ts_column: "commit_ts".into(),
            deleted_column: None,
        }
    }

    fn row(id: i64, note: &str, commit_ts: i64) -> Vec<Value> {
        vec![
            Value::Int64(id),
            Value::Bool(true),
            Value::Float32(1.5),
            Value::Float64(-2.25),
            Value::Numeric("12.5".into()),
            Value::String(note.into()),
            Value::Bytes(vec![0, 255, 7]),
            Value::Date(20_000),
            Value::Timestamp(1_795_348_800_000_001),
            Value::Json(r#"{"a":[1,2]}"#.into()),
            Value::Array(
                ColumnType::Bytes,
                vec![Value::Bytes(vec![1, 2, 3, 4]), Value::Null],
            ),
            Value::Array(ColumnType::Date, vec![Value::Date(-1)]),
            Value::Timestamp(commit_ts),
        ]
    }

    fn fields(s: &TableSchema, values: Vec<Value>) -> Vec<Field> {
        s.columns
            .iter()
            .zip(values)
            .map(|(c, value)| Field {
                name: c.name.as_str().into(),
                value,
            })
            .collect()
    }

    /// Every column type written here reads back through the SQLite source as written, a
    /// batch written twice leaves the table as once, and a deleted key is gone.
    #[tokio::test]
    async fn rows_round_trip_through_the_source_and_rewrites_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("restored.db");
        let s = schema();
        let target = SqliteTarget::open(&path).unwrap();
        let prepared = target.ensure_table(&s).await.unwrap();
        assert!(prepared.created);
        let batch = WriteBatch {
            upserts: vec![fields(&s, row(1, "one", 10)), fields(&s, row(2, "two", 11))],
            deletes: vec![vec![Value::Int64(3)]],
        };
        target.write_batch(&s, batch.clone()).await.unwrap();
        target.write_batch(&s, batch).await.unwrap();
        target
            .write_batch(
                &s,
                WriteBatch {
                    upserts: vec![fields(&s, row(1, "one again", 12))],
                    deletes: vec![vec![Value::Int64(2)]],
                },
            )
            .await
            .unwrap();
        assert!(!target.ensure_table(&s).await.unwrap().created);

        let source = super::super::SqliteSource::open(&path).unwrap();
        let spec = TableSpec {
            name: "orders".into(),
            commit_ts_column: None,
            deleted_column: None,
            sharding: Default::default(),
        };
        let prepared = source.prepare_table(&spec).await.unwrap();
        // Restored rows keep their archived commit times; the file's commit clock starts
        // with its first captured write, which makes them visible to a poll.
        Connection::open(&path)
            .unwrap()
            .execute_batch("INSERT INTO orders (id) VALUES (99)")
            .unwrap();
        let mut snap = source.snapshot().await.unwrap();
        let read = snap.schema(&spec).await.unwrap();
        assert_eq!(prepared, read);
        assert_eq!(
            read, s,
            "the created table reads back as the archived schema"
        );
        let rows = snap
            .page(&read, &Position::after_ts(i64::MIN), 10)
            .await
            .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].values, row(1, "one again", 12));
    }

    #[tokio::test]
    async fn an_existing_table_that_differs_is_refused_naming_the_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("restored.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE orders (id INTEGER PRIMARY KEY, ok TEXT, commit_ts INTEGER)",
            )
            .unwrap();
        let target = SqliteTarget::open(&path).unwrap();
        let e = target
            .ensure_table(&schema())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("column `ok`") && e.contains("restored.db"),
            "{e}"
        );
    }
}
