//! A poll's snapshot: a read transaction on a pooled connection, begun after the commit
//! epoch was closed at read point R.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ledgerhost_core::source::{Position, Row, Shard, Snapshot, TableSpec};
use ledgerhost_core::{PortError, PortResult, TableSchema};
use rusqlite::Connection;

use super::names::BACKEND;
use super::page::read_page;
use super::schema::read_schema;

/// Idle read connections kept for reuse; more only occur with concurrent snapshots.
pub(super) const MAX_IDLE_READERS: usize = 4;

/// A read transaction at the closed epoch R.
pub(super) struct SqliteSnapshot {
    /// Taken while a blocking task uses it.
    pub(super) conn: Option<Connection>,
    pub(super) read_ts: i64,
    /// Where the connection goes back when the snapshot ends.
    pub(super) pool: Arc<Mutex<Vec<Connection>>>,
}

impl Drop for SqliteSnapshot {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        // Ending a read transaction writes nothing, so doing it here does not block for long.
        if let Err(e) = conn.execute_batch("COMMIT") {
            tracing::debug!(error = %e, "read connection dropped instead of reused");
            return;
        }
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < MAX_IDLE_READERS {
            pool.push(conn);
        }
    }
}

impl SqliteSnapshot {
    async fn run<T, F>(&mut self, f: F) -> PortResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> PortResult<T> + Send + 'static,
    {
        let conn = self
            .conn
            .take()
            .ok_or_else(|| PortError::unavailable(BACKEND, "snapshot used after a failed read"))?;
        let (conn, out) = tokio::task::spawn_blocking(move || {
            let out = f(&conn);
            (conn, out)
        })
        .await
        .map_err(|e| PortError::unavailable(BACKEND, format!("SQLite task failed: {e}")))?;
        self.conn = Some(conn);
        out
    }
}

#[async_trait]
impl Snapshot for SqliteSnapshot {
    fn read_ts(&self) -> i64 {
        self.read_ts
    }

    async fn schema(&mut self, spec: &TableSpec) -> PortResult<TableSchema> {
        let spec = spec.clone();
        self.run(move |conn| read_schema(conn, &spec)).await
    }

    async fn shard_page(
        &mut self,
        table: &TableSchema,
        shard: &Shard,
        after: &Position,
        limit: usize,
    ) -> PortResult<Vec<Row>> {
        let table = table.clone();
        let after = after.clone();
        let read_ts = self.read_ts;
        let shard = shard.clone();
        self.run(move |conn| read_page(conn, &table, &shard, &after, limit, read_ts))
            .await
    }
}
