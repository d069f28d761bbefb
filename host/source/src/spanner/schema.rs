//! A table's schema from `INFORMATION_SCHEMA`: columns and types, primary key, the
//! commit-timestamp column.

use google_cloud_spanner::statement::Statement;
use google_cloud_spanner::value::{Type, Value as SpValue};
use ledgerhost_core::source::TableSpec;
use ledgerhost_core::{Column, PortError, PortResult, TableSchema};

use super::error::{BACKEND, map_err};
use super::names::ident;
use super::sql::capture_ddl;
use super::values::parse_spanner_type;

/// Runs a query and collects its rows as raw values with their column types.
pub(super) async fn query_rows<F, Fut>(
    context: &str,
    run: F,
) -> PortResult<(Vec<Type>, Vec<Vec<SpValue>>)>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<
            Output = google_cloud_spanner::Result<google_cloud_spanner::result::ResultSet>,
        >,
{
    let mut rs = run().await.map_err(|e| map_err(context, e))?;
    let mut rows = Vec::new();
    while let Some(row) = rs.next().await {
        let row = row.map_err(|e| map_err(context, e))?;
        rows.push(row.into_values());
    }
    let types = rs.metadata().column_types().to_vec();
    Ok((types, rows))
}

/// A table's columns as `INFORMATION_SCHEMA` lists them, before the host picks the columns
/// of its roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableColumns {
    /// The table's name.
    pub name: String,
    /// Every column, in table order.
    pub columns: Vec<Column>,
    /// Primary-key columns, in key order (never empty).
    pub primary_key: Vec<String>,
    /// The columns declared `allow_commit_timestamp=true`.
    pub commit_columns: Vec<String>,
}

/// Reads the schema of `spec.name` with `run_query` (a strong single-use read or a snapshot):
/// its columns, and the commit-timestamp column it is polled by.
pub(super) async fn read_schema<Q, Fut>(spec: &TableSpec, run_query: Q) -> PortResult<TableSchema>
where
    Q: Fn(Statement) -> Fut,
    Fut: std::future::Future<
            Output = google_cloud_spanner::Result<google_cloud_spanner::result::ResultSet>,
        >,
{
    let table = read_table(spec, run_query).await?;
    let commit_ts_column = commit_ts_column(spec, &table.commit_columns)?;
    Ok(TableSchema {
        name: table.name,
        columns: table.columns,
        primary_key: table.primary_key,
        commit_ts_column,
        deleted_column: spec.deleted_column.clone(),
    })
}

/// Reads the columns of `spec.name` with `run_query`; checks its key, its soft-delete column
/// and its column names.
pub(crate) async fn read_table<Q, Fut>(spec: &TableSpec, run_query: Q) -> PortResult<TableColumns>
where
    Q: Fn(Statement) -> Fut,
    Fut: std::future::Future<
            Output = google_cloud_spanner::Result<google_cloud_spanner::result::ResultSet>,
        >,
{
    ident(&spec.name)?;
    let table = spec.name.clone();
    let (_, cols) = query_rows("reading INFORMATION_SCHEMA.COLUMNS", || {
        run_query(
            Statement::builder(
                "SELECT COLUMN_NAME, SPANNER_TYPE, IS_NULLABLE FROM INFORMATION_SCHEMA.COLUMNS \
                 WHERE TABLE_SCHEMA = '' AND TABLE_NAME = @t ORDER BY ORDINAL_POSITION",
            )
            .add_param("t", table.clone())
            .build(),
        )
    })
    .await?;
    if cols.is_empty() {
        return Err(PortError::NotFound {
            backend: BACKEND,
            what: format!("table `{}`", spec.name),
        });
    }
    let (_, pk_rows) = query_rows("reading INFORMATION_SCHEMA.INDEX_COLUMNS", || {
        run_query(
            Statement::builder(
                "SELECT COLUMN_NAME FROM INFORMATION_SCHEMA.INDEX_COLUMNS \
                 WHERE TABLE_SCHEMA = '' AND TABLE_NAME = @t AND INDEX_TYPE = 'PRIMARY_KEY' \
                 ORDER BY ORDINAL_POSITION",
            )
            .add_param("t", table.clone())
            .build(),
        )
    })
    .await?;
    let (_, opt_rows) = query_rows("reading INFORMATION_SCHEMA.COLUMN_OPTIONS", || {
        run_query(
            Statement::builder(
                "SELECT COLUMN_NAME, OPTION_VALUE FROM INFORMATION_SCHEMA.COLUMN_OPTIONS \
                 WHERE TABLE_SCHEMA = '' AND TABLE_NAME = @t AND OPTION_NAME = 'allow_commit_timestamp'",
            )
            .add_param("t", table.clone())
            .build(),
        )
    })
    .await?;

    let text = |v: &SpValue, what: &str| -> PortResult<String> {
        v.as_str().map(str::to_string).ok_or_else(|| {
            PortError::corrupt(
                BACKEND,
                format!(
                    "INFORMATION_SCHEMA for table `{}`: {what} is not a string",
                    spec.name
                ),
            )
        })
    };
    let mut columns = Vec::new();
    for row in &cols {
        let [name, ty, nullable] = row.as_slice() else {
            return Err(PortError::corrupt(
                BACKEND,
                "INFORMATION_SCHEMA.COLUMNS returned an unexpected shape",
            ));
        };
        let name = text(name, "COLUMN_NAME")?;
        let spanner_type = text(ty, "SPANNER_TYPE")?;
        let ty = parse_spanner_type(&spanner_type).ok_or_else(|| {
            PortError::invalid(BACKEND, format!(
                "table `{}`, column `{name}`: type {spanner_type} is not supported (supported: BOOL, \
                 INT64, FLOAT32, FLOAT64, NUMERIC, STRING, BYTES, DATE, TIMESTAMP, JSON and ARRAYs of them)",
                spec.name
            ))
        })?;
        columns.push(Column {
            name,
            ty,
            nullable: text(nullable, "IS_NULLABLE")? == "YES",
        });
    }
    let primary_key = pk_rows
        .iter()
        .map(|r| {
            r.first()
                .ok_or_else(|| {
                    PortError::corrupt(
                        BACKEND,
                        "INFORMATION_SCHEMA.INDEX_COLUMNS returned no column",
                    )
                })
                .and_then(|v| text(v, "COLUMN_NAME"))
        })
        .collect::<PortResult<Vec<_>>>()?;
    let mut commit_cols = Vec::new();
    for r in &opt_rows {
        if let [name, value] = r.as_slice()
            && text(value, "OPTION_VALUE")?.eq_ignore_ascii_case("TRUE")
        {
            commit_cols.push(text(name, "COLUMN_NAME")?);
        }
    }
    if primary_key.is_empty() {
        return Err(PortError::invalid(
            BACKEND,
            format!(
                "table `{}` has no primary key columns; events are identified and ordered by it",
                spec.name
            ),
        ));
    }
    if let Some(d) = &spec.deleted_column
        && !columns.iter().any(|c| &c.name == d)
    {
        return Err(PortError::invalid(
            BACKEND,
            format!(
                "table `{}` has no soft-delete column `{d}` (tables.deleted-column)",
                spec.name
            ),
        ));
    }
    for c in &columns {
        ident(&c.name)?;
    }
    Ok(TableColumns {
        name: spec.name.clone(),
        columns,
        primary_key,
        commit_columns: commit_cols,
    })
}

/// The commit-timestamp column a table is polled by: the one `spec` names, or the table's
/// only one; refused, naming the DDL to add one, when there is none.
fn commit_ts_column(spec: &TableSpec, commit_cols: &[String]) -> PortResult<String> {
    let wanted = spec
        .commit_ts_column
        .clone()
        .unwrap_or_else(|| "commit_ts".to_string());
    let hint = format!(
        "Add one with:\n  {}\nand have every writer set it to PENDING_COMMIT_TIMESTAMP() on insert \
         and update (or spanner.commit_timestamp() in mutations).",
        capture_ddl(&spec.name, &wanted)
    );
    Ok(match (&spec.commit_ts_column, commit_cols) {
        (Some(c), found) if found.contains(c) => c.clone(),
        (Some(c), _) => {
            return Err(PortError::invalid(
                BACKEND,
                format!(
                    "table `{}`: column `{c}` is not a commit-timestamp column \
                 (TIMESTAMP with allow_commit_timestamp=true). {hint}",
                    spec.name
                ),
            ));
        }
        (None, [one]) => one.clone(),
        (None, []) => {
            return Err(PortError::invalid(
                BACKEND,
                format!(
                    "table `{}` has no commit-timestamp column (TIMESTAMP with \
                 allow_commit_timestamp=true). {hint}",
                    spec.name
                ),
            ));
        }
        (None, many) => {
            return Err(PortError::invalid(
                BACKEND,
                format!(
                    "table `{}` has several commit-timestamp columns ({}); name the one to poll by \
                 in the table's commit-ts-column setting",
                    spec.name,
                    many.join(", ")
                ),
            ));
        }
    })
}
