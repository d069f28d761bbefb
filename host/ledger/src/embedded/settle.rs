//! Settling durably, on the writing half: acked ids (queued by `Sides::queue_acks`) and
//! nacked attempt counts recorded, and each subscription's cursor moved up to its first
//! unsettled message.

use ledgerhost_core::{PortError, PortResult};
use rusqlite::params;

use super::state::{AckRecord, BACKEND, Writer};

impl Writer {
    /// Records queued acks and moves each subscription's cursor to the one it came with
    /// (never back: acks may be recorded out of order), forgetting the acks and nacks below
    /// it; one transaction.
    pub(super) fn record_acks(&mut self, records: &[AckRecord]) -> PortResult<()> {
        let err = |e: rusqlite::Error| PortError::unavailable(BACKEND, e);
        let tx = self.conn.transaction().map_err(err)?;
        for AckRecord {
            subscription: name,
            ids,
            cursor,
        } in records
        {
            {
                let mut ack = tx
                    .prepare_cached("INSERT OR IGNORE INTO acks (sub, id) VALUES (?1, ?2)")
                    .map_err(err)?;
                for id in ids {
                    ack.execute(params![name, id]).map_err(err)?;
                }
            }
            let moved = tx
                .prepare_cached(
                    "UPDATE subscriptions SET cursor = ?2 WHERE name = ?1 AND cursor < ?2",
                )
                .and_then(|mut stmt| stmt.execute(params![name, cursor]))
                .map_err(err)?;
            if moved > 0 {
                for table in [
                    "DELETE FROM acks WHERE sub = ?1 AND id < ?2",
                    "DELETE FROM nacks WHERE sub = ?1 AND id < ?2",
                ] {
                    tx.prepare_cached(table)
                        .and_then(|mut stmt| stmt.execute(params![name, cursor]))
                        .map_err(err)?;
                }
            }
        }
        tx.commit().map_err(err)
    }

    /// Records the attempt counts of nacked messages of subscription `name`.
    pub(super) fn record_nacks(&mut self, name: &str, attempts: &[(i64, u32)]) -> PortResult<()> {
        if attempts.is_empty() {
            return Ok(());
        }
        let err = |e: rusqlite::Error| PortError::unavailable(BACKEND, e);
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut nack = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO nacks (sub, id, attempt) VALUES (?1, ?2, ?3)",
                )
                .map_err(err)?;
            for (id, attempt) in attempts {
                nack.execute(params![name, id, attempt]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }
}
