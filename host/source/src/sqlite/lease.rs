//! Leases in `_ledgerhost_leases` (same file): taken or renewed in one `BEGIN IMMEDIATE`
//! transaction when the holder matches or the lease expired, read with a plain `SELECT`.

use std::time::Duration;

use ledgerhost_core::source::{Lease, LeaseInfo, TransactionKind, TransactionPurpose};
use ledgerhost_core::{PortError, PortResult};
use rusqlite::OptionalExtension;

use super::SqliteSource;
use super::names::BACKEND;
use ledgerhost_core::clock::now_micros;

impl SqliteSource {
    /// [`Source::try_lease`]: takes or renews the lease in one `BEGIN IMMEDIATE` transaction.
    pub(super) async fn lease_take(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        progress: Option<i64>,
    ) -> PortResult<Lease> {
        self.counters.record(
            TransactionKind::ReadWrite,
            self.held.purpose_of_try(name, holder),
        );
        let (lease_name, lease_holder) = (name, holder);
        let (name, holder) = (name.to_string(), holder.to_string());
        let ttl_micros = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX);
        let result = self.with_conn(move |conn| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(|e| PortError::unavailable(BACKEND, e))?;
            let now = now_micros();
            let current: Option<(String, i64, Option<i64>)> = tx
                .query_row(
                    "SELECT holder, expires_at_micros, progress FROM _ledgerhost_leases
                     WHERE name = ?1",
                    [&name],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(|e| PortError::unavailable(BACKEND, e))?;
            let free = match &current {
                None => true,
                Some((h, expires, _)) => *h == holder || *expires <= now,
            };
            let remaining = if free {
                ttl_micros
            } else {
                current.as_ref().map_or(0, |c| c.1.saturating_sub(now).max(0))
            };
            let stored = current.as_ref().and_then(|c| c.2);
            let progress = if free { progress.or(stored) } else { stored };
            if free {
                tx.execute(
                    "INSERT INTO _ledgerhost_leases (name, holder, expires_at_micros, progress)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(name) DO UPDATE SET holder = excluded.holder,
                                            expires_at_micros = excluded.expires_at_micros,
                                            progress = excluded.progress",
                    rusqlite::params![
                        name,
                        holder,
                        now.saturating_add(ttl_micros),
                        progress
                    ],
                )
                .map_err(|e| PortError::unavailable(BACKEND, e))?;
            }
            tx.commit().map_err(|e| PortError::unavailable(BACKEND, e))?;
            if !free {
                tracing::debug!(lease = %name, holder = %holder, "lease held by another holder");
            }
            Ok(Lease {
                held: free,
                progress,
                remaining: Duration::from_micros(u64::try_from(remaining).unwrap_or(0)),
            })
        })
        .await;
        self.held.record(
            lease_name,
            lease_holder,
            matches!(&result, Ok(lease) if lease.held),
        );
        result
    }

    /// [`Source::leases`]: the leases under a prefix, one plain read.
    pub(super) async fn lease_list(&self, prefix: &str) -> PortResult<Vec<LeaseInfo>> {
        self.counters
            .record(TransactionKind::ReadOnly, TransactionPurpose::LeaseRead);
        let prefix = prefix.to_string();
        self.with_conn(move |conn| {
            let now = now_micros();
            let mut stmt = conn
                .prepare_cached(
                    "SELECT name, holder, expires_at_micros, progress FROM _ledgerhost_leases
                     WHERE substr(name, 1, length(?1)) = ?1 ORDER BY name",
                )
                .map_err(|e| PortError::unavailable(BACKEND, e))?;
            let rows = stmt
                .query_map([&prefix], |r| {
                    let expires: i64 = r.get(2)?;
                    let remaining = expires.saturating_sub(now).max(0);
                    Ok(LeaseInfo {
                        name: r.get(0)?,
                        holder: r.get(1)?,
                        remaining: Duration::from_micros(u64::try_from(remaining).unwrap_or(0)),
                        progress: r.get(3)?,
                    })
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(|e| PortError::unavailable(BACKEND, e))?;
            Ok(rows)
        })
        .await
    }

    /// [`Source::read_lease`]: one plain read, no write lock.
    pub(super) async fn lease_read(&self, name: &str, holder: &str) -> PortResult<Lease> {
        self.counters
            .record(TransactionKind::ReadOnly, TransactionPurpose::LeaseRead);
        let (name, holder) = (name.to_string(), holder.to_string());
        // A plain read on the host's connection: no write lock, so it never waits for (or
        // holds up) the application's writers.
        self.with_conn(move |conn| {
            let current: Option<(String, i64, Option<i64>)> = conn
                .query_row(
                    "SELECT holder, expires_at_micros, progress FROM _ledgerhost_leases
                     WHERE name = ?1",
                    [&name],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(|e| PortError::unavailable(BACKEND, e))?;
            Ok(lease_as_read(current, &holder, now_micros()))
        })
        .await
    }

    /// [`Source::release_lease`]: expires the lease, keeping its progress.
    pub(super) async fn lease_release(
        &self,
        name: &str,
        holder: &str,
        progress: Option<i64>,
    ) -> PortResult<()> {
        self.counters
            .record(TransactionKind::ReadWrite, TransactionPurpose::Release);
        let (name, holder) = (name.to_string(), holder.to_string());
        self.held.record(&name, &holder, false);
        self.with_conn(move |conn| {
            // Expired rather than deleted: the progress stays for the next holder.
            conn.execute(
                "UPDATE _ledgerhost_leases SET expires_at_micros = 0,
                        progress = coalesce(?3, progress)
                 WHERE name = ?1 AND holder = ?2",
                rusqlite::params![name, holder, progress],
            )
            .map_err(|e| PortError::unavailable(BACKEND, e))?;
            Ok(())
        })
        .await
    }
}

/// The lease `holder` sees in the row `(holder, expires_at_micros, progress)` at `now`.
pub(super) fn lease_as_read(
    row: Option<(String, i64, Option<i64>)>,
    holder: &str,
    now: i64,
) -> Lease {
    let Some((h, expires, progress)) = row else {
        return Lease {
            held: false,
            progress: None,
            remaining: Duration::ZERO,
        };
    };
    let remaining = expires.saturating_sub(now).max(0);
    Lease {
        held: h == holder && remaining > 0,
        progress,
        remaining: Duration::from_micros(u64::try_from(remaining).unwrap_or(0)),
    }
}
