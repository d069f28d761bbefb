//! A table's schema from SQLite's catalog and the declared types (see the module docs,
//! "Column types").

use ledgerhost_core::source::TableSpec;
use ledgerhost_core::{Column, ColumnType, PortError, PortResult, TableSchema};
use rusqlite::Connection;

use super::capture::{DEFAULT_COMMIT_TS_COLUMN, capture_ddl};
use super::names::BACKEND;

/// Reads a table's schema and checks it can be captured.
pub(super) fn read_schema(conn: &Connection, spec: &TableSpec) -> PortResult<TableSchema> {
    let ts_col = spec
        .commit_ts_column
        .clone()
        .unwrap_or_else(|| DEFAULT_COMMIT_TS_COLUMN.to_string());
    let mut table = read_table(conn, spec)?;
    let Some(ts) = table.schema.columns.iter_mut().find(|c| c.name == ts_col) else {
        return Err(PortError::invalid(
            BACKEND,
            format!(
                "table `{}` has no commit-timestamp column `{ts_col}`. Add it with:\n  {}\n\
             (the host installs the triggers that fill it; `ledgerhost sqlite-ddl {}` prints this)",
                spec.name,
                capture_ddl(&spec.name, &ts_col),
                spec.name
            ),
        ));
    };
    if !matches!(ts.ty, ColumnType::Int64 | ColumnType::Timestamp) {
        return Err(PortError::invalid(
            BACKEND,
            format!(
                "table `{}`: commit-timestamp column `{ts_col}` is declared `{}`, but \
                 the host stores integer microseconds in it. SQLite cannot change a \
                 column's type: add a new column with\n  {}\nand name it in the table's \
                 commit-ts-column setting",
                spec.name,
                table.declared[&ts_col],
                capture_ddl(&spec.name, "commit_ts_micros")
            ),
        ));
    }
    ts.ty = ColumnType::Timestamp;
    table.schema.commit_ts_column = ts_col;
    Ok(table.schema)
}

/// A table as SQLite's catalog declares it, before a commit-timestamp column is picked.
pub(super) struct DeclaredTable {
    /// Columns, key and soft-delete column; `commit_ts_column` is empty.
    pub schema: TableSchema,
    /// Each column's declared type, as written.
    pub declared: std::collections::HashMap<String, String>,
}

/// Reads a table's columns, primary key and soft-delete column (checked), whatever its
/// commit-timestamp column.
pub(super) fn read_table(conn: &Connection, spec: &TableSpec) -> PortResult<DeclaredTable> {
    let mut stmt = conn
        .prepare("SELECT name, type, \"notnull\", pk, hidden FROM pragma_table_xinfo(?1)")
        .map_err(|e| PortError::unavailable(BACKEND, e))?;
    let rows = stmt
        .query_map([&spec.name], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| PortError::unavailable(BACKEND, e))?;
    if rows.is_empty() {
        return Err(PortError::NotFound {
            backend: BACKEND,
            what: format!("table `{}`", spec.name),
        });
    }
    let mut columns = Vec::new();
    let mut declared = std::collections::HashMap::new();
    let mut pk: Vec<(i64, String)> = Vec::new();
    for (name, decl, notnull, pk_pos, hidden) in rows {
        // 1 = hidden column of a virtual table; 2 and 3 are generated columns, which are real.
        if hidden == 1 {
            continue;
        }
        let ty = column_type(&decl).map_err(|m| {
            PortError::invalid(
                BACKEND,
                format!("table `{}`, column `{name}`: {m}", spec.name),
            )
        })?;
        if pk_pos > 0 {
            pk.push((pk_pos, name.clone()));
        }
        declared.insert(name.clone(), decl);
        columns.push(Column {
            name,
            ty,
            nullable: notnull == 0 && pk_pos == 0,
        });
    }
    if pk.is_empty() {
        return Err(PortError::invalid(
            BACKEND,
            format!(
                "table `{}` has no PRIMARY KEY; events are identified and ordered by it, so declare one",
                spec.name
            ),
        ));
    }
    pk.sort();
    if let Some(d) = &spec.deleted_column {
        match columns.iter().find(|c| &c.name == d) {
            None => {
                return Err(PortError::invalid(
                    BACKEND,
                    format!(
                        "table `{}` has no soft-delete column `{d}` (tables.deleted-column)",
                        spec.name
                    ),
                ));
            }
            Some(c) if !matches!(c.ty, ColumnType::Bool | ColumnType::Int64) => {
                return Err(PortError::invalid(
                    BACKEND,
                    format!(
                        "table `{}`: soft-delete column `{d}` is {:?}; declare it BOOLEAN \
                     (1 = deleted)",
                        spec.name, c.ty
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(DeclaredTable {
        schema: TableSchema {
            name: spec.name.clone(),
            columns,
            primary_key: pk.into_iter().map(|(_, n)| n).collect(),
            commit_ts_column: String::new(),
            deleted_column: spec.deleted_column.clone(),
        },
        declared,
    })
}

/// Maps a declared SQLite column type to a column type.
pub(super) fn column_type(decl: &str) -> Result<ColumnType, String> {
    // SQLite's grammar needs `ARRAY<T>` quoted; the declared type may keep the quotes.
    let d = decl.trim().to_ascii_uppercase();
    let d = d.trim_matches(|c| matches!(c, '"' | '`' | '[' | ']'));
    let array_of = d
        .strip_suffix(" ARRAY")
        .or_else(|| d.strip_prefix("ARRAY<").and_then(|r| r.strip_suffix('>')));
    if let Some(inner) = array_of {
        let elem = column_type(inner)?;
        if matches!(elem, ColumnType::Array(_)) {
            return Err("arrays of arrays are not supported".into());
        }
        return Ok(ColumnType::Array(Box::new(elem)));
    }
    Ok(if d.contains("BOOL") {
        ColumnType::Bool
    } else if d.contains("INT") {
        ColumnType::Int64
    } else if d.contains("FLOAT32") {
        ColumnType::Float32
    } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
        ColumnType::Float64
    } else if d.contains("NUMERIC") || d.contains("DECIMAL") {
        ColumnType::Numeric
    } else if d.contains("TIMESTAMP") || d.contains("DATETIME") {
        ColumnType::Timestamp
    } else if d.contains("DATE") {
        ColumnType::Date
    } else if d.contains("JSON") {
        ColumnType::Json
    } else if d.contains("BLOB") || d.contains("BYTES") {
        ColumnType::Bytes
    } else if d.is_empty()
        || d.contains("TEXT")
        || d.contains("CHAR")
        || d.contains("CLOB")
        || d.contains("STRING")
    {
        ColumnType::String
    } else {
        return Err(format!(
            "declared type `{decl}` is not understood; use INTEGER, REAL, FLOAT32, TEXT, BLOB, \
             BOOLEAN, DECIMAL TEXT, DATE, TIMESTAMP, JSON or ARRAY<T>"
        ));
    })
}
