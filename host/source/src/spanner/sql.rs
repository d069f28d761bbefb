//! The SQL text of a poll: the capture and index DDL a user runs, and each page's keyset
//! query (parameters only, identifiers checked), whole-table or for one shard.

use google_cloud_spanner::statement::{Statement, StatementBuilder};
use google_cloud_spanner::transaction::Timestamp;
use google_cloud_spanner::types;
use google_cloud_spanner::value::{Type, Value as SpValue};
use ledgerhost_core::source::{Position, Shard};
use ledgerhost_core::{ColumnType, PortError, PortResult, TableSchema, Value};

use super::error::BACKEND;
use super::names::{ident, quote};
use super::shard;
use super::values::{SPANNER_MIN_MICROS, micros_timestamp, to_param};

/// The SQL that makes a Spanner table capturable, with the note for writers.
pub fn capture_ddl(table: &str, commit_ts_column: &str) -> String {
    format!(
        "ALTER TABLE {} ADD COLUMN {} TIMESTAMP OPTIONS (allow_commit_timestamp=true)",
        quote(table),
        quote(commit_ts_column)
    )
}

/// The index the poll of `table` reads through:
/// `CREATE INDEX <table>_by_<column> ON <table> (<column>)`. Spanner appends the primary key to every secondary index's key, so
/// the index is ordered by (commit timestamp, primary key), the order of the poll's keyset
/// pages, and a page is one range scan of it (plus a lookup of each row's other columns in
/// the table: add `STORING (...)` to save those at the cost of writing the columns twice).
/// A primary key with a descending column is listed explicitly, ascending, so the index
/// order still matches the page order.
pub fn commit_index_ddl(table: &str, commit_ts_column: &str, descending_key: &[String]) -> String {
    let mut columns = vec![quote(commit_ts_column)];
    columns.extend(descending_key.iter().map(|k| quote(k)));
    format!(
        "CREATE INDEX {} ON {} ({})",
        quote(&format!("{table}_by_{commit_ts_column}")),
        quote(table),
        columns.join(", ")
    )
}

/// How the poll of one table reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollIndex {
    /// The primary key leads with the commit-timestamp column: the table itself is in order.
    PrimaryKey,
    /// Through this secondary index (`@{FORCE_INDEX=...}`).
    Index(String),
    /// No usable index (allowed by [`MissingCommitIndex::Warn`](super::config::MissingCommitIndex::Warn)): each poll scans the table.
    FullScan,
}

/// Builds the keyset page query: rows after `after` up to R, ordered by (commit ts, key).
pub(super) fn page_statement(
    table: &TableSchema,
    after: &Position,
    read_ts: &Timestamp,
    limit: usize,
    index: &PollIndex,
) -> PortResult<Statement> {
    shard_page_statement(table, &Shard::WHOLE, after, read_ts, limit, index)
}

/// [`page_statement`] restricted to the rows of `shard` (one more condition, see
/// [`shard::shard_condition`]); for the whole table, exactly [`page_statement`]'s SQL.
pub(super) fn shard_page_statement(
    table: &TableSchema,
    shard: &Shard,
    after: &Position,
    read_ts: &Timestamp,
    limit: usize,
    index: &PollIndex,
) -> PortResult<Statement> {
    let cols = table
        .columns
        .iter()
        .map(|c| ident(&c.name))
        .collect::<PortResult<Vec<_>>>()?
        .join(", ");
    let ts = ident(&table.commit_ts_column)?;
    let keys = quoted_keys(table)?;
    let key_types = key_types(table)?;
    if after.key.len() > keys.len() {
        return Err(PortError::invalid(
            BACKEND,
            format!(
                "table `{}`: position has {} key values, the key has {} columns",
                table.name,
                after.key.len(),
                keys.len()
            ),
        ));
    }
    // A watermark before Spanner's first instant (e.g. `i64::MIN`, "from the beginning")
    // selects the same rows as that instant: no commit timestamp can be earlier.
    let w = micros_timestamp(after.commit_ts.max(SPANNER_MIN_MICROS))?;
    let mut params: Vec<(String, SpValue, Type)> = vec![
        ("r".into(), SpValue::from(*read_ts), types::timestamp()),
        ("w".into(), SpValue::from(w), types::timestamp()),
        (
            "n".into(),
            SpValue::from(i64::try_from(limit).unwrap_or(i64::MAX)),
            types::int64(),
        ),
    ];
    let mut same_ts = String::new();
    if !after.key.is_empty() {
        let condition = key_after(table, &keys, &key_types, &after.key, &mut params)?;
        same_ts = format!(" OR ({ts} = @w AND {condition})");
    }
    let order = std::iter::once(ts.clone())
        .chain(keys.iter().cloned())
        .collect::<Vec<_>>()
        .join(", ");
    // The hint makes the planner read the commit-timestamp (or shard) index (a range scan in
    // page order) rather than choose by statistics it may not have yet; Spanner joins each
    // index row back to the table for the columns the index lacks. Table hints:
    // https://cloud.google.com/spanner/docs/reference/standard-sql/query-syntax#table_hints
    let hint = match index {
        PollIndex::Index(name) => format!("@{{FORCE_INDEX={}}}", ident(name)?),
        PollIndex::PrimaryKey | PollIndex::FullScan => String::new(),
    };
    let in_shard = match shard::shard_condition(table, shard)? {
        Some((condition, shard_params)) => {
            params.extend(shard_params);
            format!(" AND {condition}")
        }
        None => String::new(),
    };
    let sql = format!(
        "SELECT {cols} FROM {}{hint} WHERE {ts} <= @r AND ({ts} > @w{same_ts}){in_shard} ORDER BY {order} LIMIT @n",
        ident(&table.name)?
    );
    Ok(with_params(sql, params))
}

/// `sql` with its typed parameters.
fn with_params(sql: String, params: Vec<(String, SpValue, Type)>) -> Statement {
    let mut builder: StatementBuilder = Statement::builder(sql);
    for (name, value, ty) in params {
        builder = builder.add_typed_param(name, value, ty);
    }
    builder.build()
}

/// The condition `(k1, .., kn) > (p1, .., pn)` on the quoted key columns `keys` after the
/// key values `after` (a prefix of the key), expanded as ORs, its values added to `params`
/// as `@k<i>`. NULL sorts first in Spanner's ascending order, so `k > NULL` means
/// `k IS NOT NULL` and `k = NULL` means `k IS NULL`.
fn key_after(
    table: &TableSchema,
    keys: &[String],
    key_types: &[ColumnType],
    after: &[Value],
    params: &mut Vec<(String, SpValue, Type)>,
) -> PortResult<String> {
    let mut ors = Vec::new();
    for i in 0..after.len() {
        let mut ands = Vec::new();
        for (j, (v, key)) in after.iter().zip(keys).enumerate().take(i + 1) {
            let null = matches!(v, Value::Null);
            ands.push(match (j < i, null) {
                (true, true) => format!("{key} IS NULL"),
                (true, false) => format!("{key} = @k{j}"),
                (false, true) => format!("{key} IS NOT NULL"),
                (false, false) => format!("{key} > @k{j}"),
            });
        }
        ors.push(format!("({})", ands.join(" AND ")));
    }
    for (j, v) in after.iter().enumerate() {
        if !matches!(v, Value::Null) {
            let (value, ty) = to_param(v, &key_types[j]).map_err(|m| {
                PortError::invalid(
                    BACKEND,
                    format!(
                        "table `{}`, key column `{}`: {m}",
                        table.name, table.primary_key[j]
                    ),
                )
            })?;
            params.push((format!("k{j}"), value, ty));
        }
    }
    Ok(format!("({})", ors.join(" OR ")))
}

/// The page query of a table read by primary key (a table captured by change stream without
/// a commit-timestamp column, for backfill): `columns` (the table's own) of the rows after
/// key `after` (empty: from the first), in key order, at most `limit`.
pub(super) fn key_page_statement(
    table: &TableSchema,
    columns: &[&str],
    after: &[Value],
    limit: usize,
) -> PortResult<Statement> {
    let cols = columns
        .iter()
        .map(|c| ident(c))
        .collect::<PortResult<Vec<_>>>()?
        .join(", ");
    let keys = quoted_keys(table)?;
    let key_types = key_types(table)?;
    let mut params: Vec<(String, SpValue, Type)> = vec![(
        "n".into(),
        SpValue::from(i64::try_from(limit).unwrap_or(i64::MAX)),
        types::int64(),
    )];
    let condition = if after.is_empty() {
        String::new()
    } else {
        format!(
            " WHERE {}",
            key_after(table, &keys, &key_types, after, &mut params)?
        )
    };
    let sql = format!(
        "SELECT {cols} FROM {}{condition} ORDER BY {} LIMIT @n",
        ident(&table.name)?,
        keys.join(", ")
    );
    Ok(with_params(sql, params))
}

/// `table`'s key columns, checked and quoted, in key order.
fn quoted_keys(table: &TableSchema) -> PortResult<Vec<String>> {
    table.primary_key.iter().map(|k| ident(k)).collect()
}

/// The types of `table`'s key columns, in key order.
fn key_types(table: &TableSchema) -> PortResult<Vec<ColumnType>> {
    table
        .primary_key
        .iter()
        .map(|k| {
            table
                .columns
                .iter()
                .find(|c| &c.name == k)
                .map(|c| c.ty.clone())
                .ok_or_else(|| {
                    PortError::invalid(
                        BACKEND,
                        format!(
                            "table `{}`: key column `{k}` is not in the schema",
                            table.name
                        ),
                    )
                })
        })
        .collect()
}
