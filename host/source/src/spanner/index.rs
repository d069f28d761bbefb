//! Which index a table's (or shard's) poll reads through, found in
//! `INFORMATION_SCHEMA.INDEXES` once per table; a table without one is refused with the
//! `CREATE INDEX` to run, or warned about.

use google_cloud_spanner::client::DatabaseClient;
use google_cloud_spanner::statement::Statement;
use google_cloud_spanner::value::Value as SpValue;
use ledgerhost_core::source::{TransactionCounters, TransactionKind, TransactionPurpose};
use ledgerhost_core::{PortError, PortResult, TableSchema};

use super::config::MissingCommitIndex;
use super::error::BACKEND;
use super::schema::query_rows;
use super::shard;
use super::sql::{PollIndex, commit_index_ddl};

/// Per table, how its poll reads.
pub(super) type PollIndexes =
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, PollIndex>>>;
/// Keyed by (table, shard column).
pub(super) type ShardIndexes =
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<(String, String), PollIndex>>>;

/// How the poll of `table` reads ([`PollIndex`]), from the cache or, once per table, from
/// `INFORMATION_SCHEMA` (a table without a usable index is refused or warned about, as
/// `policy` says).
pub(super) async fn resolve_poll_index(
    client: &DatabaseClient,
    counters: &TransactionCounters,
    cache: &PollIndexes,
    policy: MissingCommitIndex,
    table: &TableSchema,
) -> PortResult<PollIndex> {
    if let Some(found) = cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&table.name)
    {
        return Ok(found.clone());
    }
    let indexes = read_indexes(client, counters, table).await?;
    let found = match choose_poll_index(table, &indexes) {
        Ok(found) => found,
        Err(why) => missing_index(
            policy,
            &table.name,
            &missing_index_message(table, &indexes, &why),
        )?,
    };
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(table.name.clone(), found.clone());
    Ok(found)
}

/// How a poll of a shard of `table` sharded by `shard_column` reads ([`PollIndex`]), from
/// the cache or, once per (table, column), from `INFORMATION_SCHEMA`: through an index
/// keyed (shard column, commit timestamp, ...). A table without one is refused or warned
/// about as `policy` says (the same setting as the commit-timestamp index: both keep a poll
/// from scanning the table).
pub(super) async fn resolve_shard_index(
    client: &DatabaseClient,
    counters: &TransactionCounters,
    cache: &ShardIndexes,
    policy: MissingCommitIndex,
    table: &TableSchema,
    shard_column: &str,
) -> PortResult<PollIndex> {
    let cache_key = (table.name.clone(), shard_column.to_string());
    if let Some(found) = cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&cache_key)
    {
        return Ok(found.clone());
    }
    let indexes = read_indexes(client, counters, table).await?;
    let found = match choose_index(table, &indexes, &[shard_column, &table.commit_ts_column]) {
        Ok(found) => found,
        Err(why) => missing_index(
            policy,
            &table.name,
            &missing_shard_index_message(table, shard_column, &indexes, &why),
        )?,
    };
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(cache_key, found.clone());
    Ok(found)
}

/// What a missing index means under `policy`: the table refused with `message`, or polled
/// by full scans after a warning.
pub(super) fn missing_index(
    policy: MissingCommitIndex,
    table: &str,
    message: &str,
) -> PortResult<PollIndex> {
    match policy {
        MissingCommitIndex::Refuse => Err(PortError::invalid(
            BACKEND,
            format!(
                "{message}; or set [source] missing-commit-index = \"warn\" to poll by \
                 full scans"
            ),
        )),
        MissingCommitIndex::Warn => {
            tracing::warn!(table = %table, "{message}; polling by full scans (missing-commit-index = \"warn\")");
            Ok(PollIndex::FullScan)
        }
    }
}

/// The indexes of `table` (the primary key among them) with their key columns, from
/// `INFORMATION_SCHEMA` (a strong single-use read).
pub(super) async fn read_indexes(
    client: &DatabaseClient,
    counters: &TransactionCounters,
    table: &TableSchema,
) -> PortResult<Vec<IndexInfo>> {
    counters.record(TransactionKind::ReadOnly, TransactionPurpose::Schema);
    let client = client.clone();
    let (_, rows) = query_rows("reading INFORMATION_SCHEMA.INDEXES", || {
        let stmt = Statement::builder(
            "SELECT i.INDEX_NAME, i.INDEX_TYPE, i.INDEX_STATE, i.SPANNER_IS_MANAGED, \
             c.COLUMN_NAME, c.COLUMN_ORDERING \
             FROM INFORMATION_SCHEMA.INDEXES AS i JOIN INFORMATION_SCHEMA.INDEX_COLUMNS AS c \
             ON c.TABLE_SCHEMA = i.TABLE_SCHEMA AND c.TABLE_NAME = i.TABLE_NAME \
             AND c.INDEX_NAME = i.INDEX_NAME \
             WHERE i.TABLE_SCHEMA = '' AND i.TABLE_NAME = @t AND c.ORDINAL_POSITION IS NOT NULL \
             ORDER BY i.INDEX_NAME, c.ORDINAL_POSITION",
        )
        .add_param("t", table.name.clone())
        .build();
        async move { client.single_use().build().execute_query(stmt).await }
    })
    .await?;
    let mut indexes: Vec<IndexInfo> = Vec::new();
    for row in &rows {
        let [name, kind, state, managed, column, ordering] = row.as_slice() else {
            return Err(PortError::corrupt(
                BACKEND,
                "INFORMATION_SCHEMA.INDEXES returned an unexpected shape",
            ));
        };
        let text = |v: &SpValue| v.as_str().unwrap_or_default().to_string();
        let name = text(name);
        if indexes.last().is_none_or(|i| i.name != name) {
            indexes.push(IndexInfo {
                name: name.clone(),
                kind: text(kind),
                state: text(state),
                managed: managed.as_bool().unwrap_or(false),
                columns: Vec::new(),
            });
        }
        if let Some(last) = indexes.last_mut() {
            last.columns.push((text(column), text(ordering)));
        }
    }
    Ok(indexes)
}

/// The primary key's columns when one of them is descending (an index must then list them
/// explicitly, ascending, to be in page order), else none.
pub(super) fn descending_key(indexes: &[IndexInfo]) -> Vec<String> {
    indexes
        .iter()
        .find(|i| i.kind == "PRIMARY_KEY")
        .filter(|pk| pk.columns.iter().any(|(_, o)| o == "DESC"))
        .map(|pk| pk.columns.iter().map(|(c, _)| c.clone()).collect())
        .unwrap_or_default()
}

/// Why the shards of `table` by `shard_column` cannot be polled cheaply, with the DDL that
/// fixes it.
pub(super) fn missing_shard_index_message(
    table: &TableSchema,
    shard_column: &str,
    indexes: &[IndexInfo],
    why: &str,
) -> String {
    let ddl = shard::shard_index_ddl(
        &table.name,
        shard_column,
        &table.commit_ts_column,
        &descending_key(indexes),
    );
    format!(
        "table `{}` (sharded by `{shard_column}`): {why}, so every poll of a shard \
         (`{shard_column} = @shard AND {ts} > @w AND {ts} <= @r ORDER BY {ts}, primary key`) \
         would scan the whole table. Create the index with:\n  {ddl}\n(Spanner appends the \
         primary key to the index, so each shard's rows are in the poll's page order)",
        table.name,
        ts = table.commit_ts_column
    )
}

/// Why `table` cannot be polled cheaply, with the DDL that fixes it.
pub(super) fn missing_index_message(
    table: &TableSchema,
    indexes: &[IndexInfo],
    why: &str,
) -> String {
    let ddl = commit_index_ddl(
        &table.name,
        &table.commit_ts_column,
        &descending_key(indexes),
    );
    format!(
        "table `{}`: {why}, so every poll (`{ts} > @w AND {ts} <= @r ORDER BY {ts}, primary \
         key`) would scan the whole table. Create the index with:\n  {ddl}\n(Spanner appends \
         the primary key to the index, so it is in the poll's page order; STORING (...) spares \
         the lookup of each row's other columns at the cost of writing them twice)",
        table.name,
        ts = table.commit_ts_column
    )
}

/// One index of a table as `INFORMATION_SCHEMA` describes it.
#[derive(Debug, Clone)]
pub(super) struct IndexInfo {
    pub(super) name: String,
    /// `PRIMARY_KEY`, `INDEX` (or another kind, not usable here).
    pub(super) kind: String,
    /// `READ_WRITE` once built (empty for the primary key).
    pub(super) state: String,
    pub(super) managed: bool,
    /// Key columns in order, with `ASC` / `DESC`.
    pub(super) columns: Vec<(String, String)>,
}

/// The best index for the poll of `table` among `indexes`, or why there is none: one whose
/// first key column is the commit-timestamp column, ascending, built, not managed by
/// Spanner. The primary key is best (no hint needed), then an index whose next columns
/// are the primary key (or none: Spanner appends it), then any other, by name.
pub(super) fn choose_poll_index(
    table: &TableSchema,
    indexes: &[IndexInfo],
) -> Result<PollIndex, String> {
    choose_index(table, indexes, &[&table.commit_ts_column])
}

/// The best index among `indexes` whose key starts with the columns `leading`, ascending
/// (the commit-timestamp column; or the shard column then it), built, not managed by
/// Spanner, ranked as [`choose_poll_index`] says; or why there is none.
pub(super) fn choose_index(
    table: &TableSchema,
    indexes: &[IndexInfo],
    leading: &[&str],
) -> Result<PollIndex, String> {
    let leads = |i: &IndexInfo| {
        i.columns.len() >= leading.len()
            && i.columns
                .iter()
                .zip(leading)
                .all(|((c, o), want)| c == want && o != "DESC")
    };
    let what = match leading {
        [ts] => format!("its commit-timestamp column `{ts}`"),
        _ => format!(
            "its columns ({})",
            leading
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let key: Vec<&str> = table.primary_key.iter().map(String::as_str).collect();
    let mut best: Option<(u8, &IndexInfo)> = None;
    let mut building = None;
    for i in indexes.iter().filter(|i| leads(i)) {
        let rank = match i.kind.as_str() {
            "PRIMARY_KEY" => 0,
            "INDEX" if i.managed => continue,
            "INDEX" if i.state != "READ_WRITE" => {
                building = Some(format!(
                    "index `{}` on {what} is not built yet (state {}); wait until it is",
                    i.name, i.state
                ));
                continue;
            }
            "INDEX" => {
                let rest: Vec<&str> = i.columns[leading.len()..]
                    .iter()
                    .map(|(c, _)| c.as_str())
                    .collect();
                if rest.is_empty() || rest == key { 1 } else { 2 }
            }
            _ => continue,
        };
        if best.is_none_or(|(r, b)| (rank, &i.name) < (r, &b.name)) {
            best = Some((rank, i));
        }
    }
    match best {
        Some((0, _)) => Ok(PollIndex::PrimaryKey),
        Some((_, i)) => Ok(PollIndex::Index(i.name.clone())),
        None => Err(building.unwrap_or_else(|| format!("no index leads with {what}"))),
    }
}
