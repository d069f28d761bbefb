//! A poll's consistent view: one read-only transaction at read timestamp R, on a client
//! (session) of its own, reading pages through the table's poll index.

use async_trait::async_trait;
use google_cloud_spanner::client::DatabaseClient;
use google_cloud_spanner::transaction::{MultiUseReadOnlyTransaction, Timestamp};
use ledgerhost_core::source::{
    Position, Row, Shard, Snapshot, TableSpec, TransactionCounters, TransactionKind,
    TransactionPurpose,
};
use ledgerhost_core::{PortError, PortResult, TableSchema, Value};
use tracing::debug;

use super::config::MissingCommitIndex;
use super::error::BACKEND;
use super::index::{PollIndexes, ShardIndexes, resolve_poll_index, resolve_shard_index};
use super::schema::{query_rows, read_schema};
use super::sql::{PollIndex, key_page_statement, shard_page_statement};
use super::values::from_spanner;

/// Idle snapshot clients kept; more exist only while more snapshots are open at once.
pub(super) const MAX_IDLE_SNAPSHOT_CLIENTS: usize = 8;

/// A poll's consistent view: one read-only transaction at read timestamp R.
pub struct SpannerSnapshot {
    /// The snapshot's own client (session), back to `pool` when the snapshot ends.
    pub(super) client: DatabaseClient,
    pub(super) pool: std::sync::Arc<std::sync::Mutex<Vec<DatabaseClient>>>,
    /// The source's client, for single-use reads beside the transaction (on the emulator a
    /// single-use read on the snapshot's session would end its transaction).
    pub(super) single_use: DatabaseClient,
    pub(super) counters: std::sync::Arc<TransactionCounters>,
    /// The source's per-table [`PollIndex`] cache.
    pub(super) poll_index: PollIndexes,
    /// The source's per-(table, shard column) [`PollIndex`] cache.
    pub(super) shard_index: ShardIndexes,
    pub(super) missing_commit_index: MissingCommitIndex,
    pub(super) tx: MultiUseReadOnlyTransaction,
    pub(super) read_ts: Timestamp,
    pub(super) read_ts_micros: i64,
}

impl Drop for SpannerSnapshot {
    fn drop(&mut self) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < MAX_IDLE_SNAPSHOT_CLIENTS {
            pool.push(self.client.clone());
        }
    }
}

#[async_trait]
impl Snapshot for SpannerSnapshot {
    fn read_ts(&self) -> i64 {
        self.read_ts_micros
    }

    async fn schema(&mut self, spec: &TableSpec) -> PortResult<TableSchema> {
        let tx = &self.tx;
        match read_schema(spec, |stmt| tx.execute_query(stmt)).await {
            Ok(s) => Ok(s),
            // Some deployments refuse INFORMATION_SCHEMA in multi-use transactions; a strong
            // read is then the closest view (the transaction was begun explicitly, so it
            // stays usable after a failed statement).
            Err(PortError::Unavailable { .. } | PortError::Invalid { .. }) => {
                let client = self.single_use.clone();
                let counters = self.counters.clone();
                read_schema(spec, |stmt| {
                    let client = client.clone();
                    counters.record(TransactionKind::ReadOnly, TransactionPurpose::Schema);
                    async move { client.single_use().build().execute_query(stmt).await }
                })
                .await
            }
            Err(e) => Err(e),
        }
    }

    async fn shard_page(
        &mut self,
        table: &TableSchema,
        shard: &Shard,
        after: &Position,
        limit: usize,
    ) -> PortResult<Vec<Row>> {
        // A shard-column shard reads the (shard column, commit timestamp) index; the whole
        // table and key-hash shards the commit-timestamp index.
        let shard_column = shard.column.as_ref().filter(|_| !shard.is_whole());
        let index = match shard_column {
            Some(column) => {
                resolve_shard_index(
                    &self.single_use,
                    &self.counters,
                    &self.shard_index,
                    self.missing_commit_index,
                    table,
                    column,
                )
                .await?
            }
            None => {
                resolve_poll_index(
                    &self.single_use,
                    &self.counters,
                    &self.poll_index,
                    self.missing_commit_index,
                    table,
                )
                .await?
            }
        };
        let stmt = shard_page_statement(table, shard, after, &self.read_ts, limit, &index)?;
        let context = if shard.is_whole() {
            format!("reading table `{}`", table.name)
        } else {
            format!("reading {}", shard.unit_name(&table.name))
        };
        let raw = match query_rows(&context, || self.tx.execute_query(stmt)).await {
            Ok((_, raw)) => raw,
            Err(PortError::Invalid { message, .. })
                if matches!(index, PollIndex::Index(_)) && message.contains("index") =>
            {
                // Dropped since the table was prepared: look again at the next poll (which
                // refuses the table, or polls by scans with missing-commit-index = "warn").
                let which = match shard_column {
                    Some(column) => {
                        self.shard_index
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&(table.name.clone(), column.clone()));
                        "shard"
                    }
                    None => {
                        self.poll_index
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&table.name);
                        "commit-timestamp"
                    }
                };
                return Err(PortError::unavailable(
                    BACKEND,
                    format!(
                        "{context} through {index:?} failed ({message}); looking for the table's \
                     {which} index again at the next poll"
                    ),
                ));
            }
            Err(e) => return Err(e),
        };
        let ts_index = table.column_index(&table.commit_ts_column).ok_or_else(|| {
            PortError::invalid(
                BACKEND,
                format!(
                    "table `{}`: schema has no column `{}`",
                    table.name, table.commit_ts_column
                ),
            )
        })?;
        let mut rows = Vec::with_capacity(raw.len());
        for values in raw {
            if values.len() != table.columns.len() {
                return Err(PortError::corrupt(
                    BACKEND,
                    format!(
                        "table `{}`: {} values for {} columns",
                        table.name,
                        values.len(),
                        table.columns.len()
                    ),
                ));
            }
            let mut out = Vec::with_capacity(values.len());
            for (v, col) in values.iter().zip(&table.columns) {
                out.push(from_spanner(v, &col.ty).map_err(|m| {
                    PortError::corrupt(
                        BACKEND,
                        format!("table `{}`, column `{}`: {m}", table.name, col.name),
                    )
                })?);
            }
            let commit_ts = match &out[ts_index] {
                Value::Timestamp(t) => *t,
                other => {
                    return Err(PortError::corrupt(
                        BACKEND,
                        format!(
                            "table `{}`: commit-timestamp column `{}` holds {other:?} \
                         (writers must set it to PENDING_COMMIT_TIMESTAMP())",
                            table.name, table.commit_ts_column
                        ),
                    ));
                }
            };
            rows.push(Row {
                values: out,
                commit_ts,
            });
        }
        debug!(table = %table.name, shard = shard.index, shards = shard.count, rows = rows.len(),
               read_ts = self.read_ts_micros, "spanner page");
        Ok(rows)
    }

    async fn key_page(
        &mut self,
        table: &TableSchema,
        after: &[Value],
        limit: usize,
    ) -> PortResult<Vec<Row>> {
        use ledgerhost_core::change::virtual_columns::{COMMIT_TS, DELETED};
        let own: Vec<&str> = table
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .filter(|c| *c != COMMIT_TS && *c != DELETED)
            .collect();
        if table.commit_ts_column != COMMIT_TS {
            return Err(PortError::invalid(
                BACKEND,
                format!(
                    "table `{}` has its own commit-timestamp column `{}`: read it by commit \
                     timestamp",
                    table.name, table.commit_ts_column
                ),
            ));
        }
        let stmt = key_page_statement(table, &own, after, limit)?;
        let context = format!("reading table `{}` by primary key", table.name);
        let (_, raw) = query_rows(&context, || self.tx.execute_query(stmt)).await?;
        let mut rows = Vec::with_capacity(raw.len());
        for values in raw {
            let mut read = values.iter();
            let mut out = Vec::with_capacity(table.columns.len());
            for col in &table.columns {
                out.push(match col.name.as_str() {
                    COMMIT_TS => Value::Timestamp(self.read_ts_micros),
                    DELETED => Value::Bool(false),
                    _ => {
                        let v = read.next().ok_or_else(|| {
                            PortError::corrupt(BACKEND, format!("{context}: too few values"))
                        })?;
                        from_spanner(v, &col.ty).map_err(|m| {
                            PortError::corrupt(
                                BACKEND,
                                format!("table `{}`, column `{}`: {m}", table.name, col.name),
                            )
                        })?
                    }
                });
            }
            rows.push(Row {
                values: out,
                commit_ts: self.read_ts_micros,
            });
        }
        Ok(rows)
    }
}
