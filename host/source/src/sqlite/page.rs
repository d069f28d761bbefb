//! A page of rows: the keyset queries over the (commit-ts column, primary key) index, with
//! a shard's condition, and the rows read back as values.

use ledgerhost_core::source::{Position, Row, Shard};
use ledgerhost_core::{PortError, PortResult, TableSchema, Value};
use rusqlite::{Connection, params_from_iter};

use super::capture::index_name;
use super::names::{BACKEND, quote};
use super::shard::shard_condition;
use super::values::{from_sql, to_sql};

/// The two page queries, each one index range scan in index order over
/// (commit-ts column, primary key):
/// - the rest of timestamp W after the last key read (`ts = ?1 AND key > (?3..)`, limit ?2),
///   only when a key is given;
/// - then the later timestamps up to R (`ts > ?1 AND ts <= ?3`, limit ?2).
///
/// One combined row-value condition `(ts, key) > (W, last key)` is not enough: SQLite then
/// seeks on `ts` alone, so paging through one big transaction (one timestamp) rescans it
/// from its start for every page.
///
/// A shard's condition (see [`shard_condition`]) is one more filter on the same range scan.
pub(super) fn page_sql(
    table: &TableSchema,
    shard: &Shard,
    after: &Position,
) -> PortResult<(Option<String>, String)> {
    let ts = quote(&table.commit_ts_column);
    let in_shard = shard_condition(table, shard)
        .map(|c| format!(" AND {c}"))
        .unwrap_or_default();
    let cols = table
        .columns
        .iter()
        .map(|c| quote(&c.name))
        .collect::<Vec<_>>()
        .join(", ");
    // INDEXED BY: without statistics the planner may prefer the rowid for `key > ?` and
    // filter the timestamp, which scans the rest of the table.
    let t = format!(
        "{} INDEXED BY {}",
        quote(&table.name),
        quote(&index_name(&table.name))
    );
    let keys: Vec<String> = table.primary_key.iter().map(|k| quote(k)).collect();
    let order = keys.join(", ");
    let rest_of_w = if after.key.is_empty() {
        None
    } else {
        if after.key.len() != keys.len() {
            return Err(PortError::invalid(
                BACKEND,
                format!(
                    "table `{}`: keyset position has {} key values for a {}-column primary key",
                    table.name,
                    after.key.len(),
                    keys.len()
                ),
            ));
        }
        let placeholders = (0..keys.len())
            .map(|i| format!("?{}", i + 3))
            .collect::<Vec<_>>()
            .join(", ");
        Some(format!(
            "SELECT {cols} FROM {t} WHERE {ts} = ?1 AND ({order}) > ({placeholders}){in_shard} \
             ORDER BY {order} LIMIT ?2"
        ))
    };
    let later = format!(
        "SELECT {cols} FROM {t} WHERE {ts} > ?1 AND {ts} <= ?3{in_shard} \
         ORDER BY {ts}, {order} LIMIT ?2"
    );
    Ok((rest_of_w, later))
}

/// Parameters of the first [`page_sql`] query.
pub(super) fn rest_of_w_params(after: &Position, limit: usize) -> Vec<rusqlite::types::Value> {
    let mut params = vec![
        rusqlite::types::Value::Integer(after.commit_ts),
        rusqlite::types::Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)),
    ];
    params.extend(after.key.iter().map(to_sql));
    params
}

/// Parameters of the second [`page_sql`] query.
pub(super) fn later_params(
    after: &Position,
    limit: usize,
    read_ts: i64,
) -> Vec<rusqlite::types::Value> {
    vec![
        rusqlite::types::Value::Integer(after.commit_ts),
        rusqlite::types::Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)),
        rusqlite::types::Value::Integer(read_ts),
    ]
}

pub(super) fn read_page(
    conn: &Connection,
    table: &TableSchema,
    shard: &Shard,
    after: &Position,
    limit: usize,
    read_ts: i64,
) -> PortResult<Vec<Row>> {
    let (rest_of_w, later) = page_sql(table, shard, after)?;
    let mut out = Vec::with_capacity(limit.min(10_000));
    // W itself is a timestamp already read in full up to the last key, so W <= R holds.
    if let Some(sql) = rest_of_w
        && after.commit_ts <= read_ts
    {
        read_rows(conn, table, &sql, rest_of_w_params(after, limit), &mut out)?;
    }
    if out.len() < limit {
        let params = later_params(after, limit - out.len(), read_ts);
        read_rows(conn, table, &later, params, &mut out)?;
    }
    Ok(out)
}

/// Runs one page query and appends its rows.
pub(super) fn read_rows(
    conn: &Connection,
    table: &TableSchema,
    sql: &str,
    params: Vec<rusqlite::types::Value>,
    out: &mut Vec<Row>,
) -> PortResult<()> {
    let read_failed = |e: rusqlite::Error| {
        let hint = if e.to_string().contains("no such index") {
            " (the capture index and triggers are installed when the host prepares the table \
             at start; restart the host after dropping and re-creating a captured table)"
        } else {
            ""
        };
        PortError::unavailable(
            BACKEND,
            format!("cannot read table `{}`: {e}{hint}", table.name),
        )
    };
    let mut stmt = conn.prepare_cached(sql).map_err(read_failed)?;
    let ts_index = table
        .column_index(&table.commit_ts_column)
        .ok_or_else(|| PortError::invalid(BACKEND, "commit-timestamp column missing"))?;
    let mut rows = stmt.query(params_from_iter(params)).map_err(read_failed)?;
    while let Some(r) = rows.next().map_err(read_failed)? {
        let mut values = Vec::with_capacity(table.columns.len());
        for (i, c) in table.columns.iter().enumerate() {
            let v = r.get_ref(i).map_err(read_failed)?;
            values.push(from_sql(v, &c.ty).map_err(|m| {
                let key: Vec<String> = table
                    .key_indexes()
                    .iter()
                    .map(|k| format!("{:?}", r.get_ref(*k).map(|v| format!("{v:?}"))))
                    .collect();
                PortError::Corrupt {
                    backend: BACKEND,
                    message: format!(
                        "table `{}`, row with key ({}), column `{}`: {m}",
                        table.name,
                        key.join(", "),
                        c.name
                    ),
                }
            })?);
        }
        let commit_ts = match values[ts_index] {
            Value::Timestamp(t) => t,
            _ => {
                return Err(PortError::Corrupt {
                    backend: BACKEND,
                    message: format!("table `{}`: a row without commit timestamp", table.name),
                });
            }
        };
        out.push(Row { values, commit_ts });
    }
    Ok(())
}
