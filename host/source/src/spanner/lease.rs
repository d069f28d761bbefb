//! Poller leases in `ledgerhost_leases` (created on first use): taken and renewed in
//! read-write transactions, watched with single-use reads, judged by Spanner's own clock
//! (`CURRENT_TIMESTAMP()`) so replicas with skewed clocks agree.

use std::time::Duration;

use google_cloud_spanner::mutation::Mutation;
use google_cloud_spanner::statement::Statement;
use google_cloud_spanner::transaction::Timestamp;
use google_cloud_spanner::types;
use google_cloud_spanner::value::Value as SpValue;
use ledgerhost_core::PortResult;
use ledgerhost_core::source::{Lease, LeaseInfo, TransactionKind, TransactionPurpose};
use tracing::{debug, info};

use super::SpannerSource;
use super::config::LEASE_TABLE;
use super::error::{is_transaction_conflict, map_err, run_detached};
use super::values::micros_duration;

impl SpannerSource {
    pub(super) async fn ensure_lease_table(&self) -> PortResult<()> {
        self.lease_table_ready
            .get_or_try_init(|| async {
                if self.table_exists(LEASE_TABLE).await? {
                    return self.ensure_lease_progress_column().await;
                }
                let ddl = format!(
                    "CREATE TABLE {LEASE_TABLE} (name STRING(MAX) NOT NULL, holder STRING(MAX) NOT NULL, \
                     expires_at TIMESTAMP NOT NULL, progress INT64) PRIMARY KEY (name)"
                );
                match self.update_ddl(vec![ddl]).await {
                    Ok(()) => {
                        info!(table = LEASE_TABLE, "created the lease table");
                        Ok(())
                    }
                    // Another replica may have created it at the same moment.
                    Err(e) if self.table_exists(LEASE_TABLE).await.unwrap_or(false) => {
                        debug!(error = %e, "lease table created concurrently");
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            })
            .await
            .map(|_| ())
    }

    /// Lease tables created by the first host version have no `progress` column.
    pub(super) async fn ensure_lease_progress_column(&self) -> PortResult<()> {
        let stmt = Statement::builder(
            "SELECT COUNT(*) FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = '' \
             AND TABLE_NAME = @t AND COLUMN_NAME = 'progress'",
        )
        .add_param("t", LEASE_TABLE.to_string())
        .build();
        let context = "reading INFORMATION_SCHEMA.COLUMNS";
        self.counters
            .record(TransactionKind::ReadOnly, TransactionPurpose::Schema);
        let mut rs = self
            .client
            .single_use()
            .build()
            .execute_query(stmt)
            .await
            .map_err(|e| map_err(context, e))?;
        let n: i64 = match rs.next().await {
            Some(Ok(row)) => row.get(0).map_err(|e| map_err(context, e))?,
            Some(Err(e)) => return Err(map_err(context, e)),
            None => 0,
        };
        if n > 0 {
            return Ok(());
        }
        info!(
            table = LEASE_TABLE,
            "adding the progress column to the lease table"
        );
        match self
            .update_ddl(vec![format!(
                "ALTER TABLE {LEASE_TABLE} ADD COLUMN progress INT64"
            )])
            .await
        {
            Ok(()) => Ok(()),
            // Another replica may have added it at the same moment.
            Err(e) => {
                debug!(error = %e, "progress column added concurrently?");
                Ok(())
            }
        }
    }

    /// [`Source::try_lease`]: takes or renews the lease in one read-write transaction.
    pub(super) async fn lease_take(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        progress: Option<i64>,
    ) -> PortResult<Lease> {
        self.ensure_lease_table().await?;
        self.counters.record(
            TransactionKind::ReadWrite,
            self.held.purpose_of_try(name, holder),
        );
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let client = self.client.clone();
        let (n, h) = (name.to_string(), holder.to_string());
        let what = format!("taking lease `{name}`");
        let lease = self.read_write(&what, move || {
            let (client, n, h) = (client.clone(), n.clone(), h.clone());
            async move {
            let runner = client
                .read_write_transaction()
                .with_transaction_timeout(RW_TRANSACTION_TIMEOUT)
                .build();
            runner
                .run(async |tx| {
                    // Scalar subqueries give NULLs when the lease row does not exist yet;
                    // Spanner's clock judges expiry so replicas with skewed clocks agree.
                    let stmt = Statement::builder(format!(
                        "SELECT (SELECT holder FROM {LEASE_TABLE} WHERE name = @n), \
                         (SELECT expires_at > CURRENT_TIMESTAMP() FROM {LEASE_TABLE} WHERE name = @n), \
                         TIMESTAMP_ADD(CURRENT_TIMESTAMP(), INTERVAL @ms MILLISECOND), \
                         (SELECT progress FROM {LEASE_TABLE} WHERE name = @n), \
                         (SELECT TIMESTAMP_DIFF(expires_at, CURRENT_TIMESTAMP(), MICROSECOND) \
                          FROM {LEASE_TABLE} WHERE name = @n)"
                    ))
                    .add_param("n", n.clone())
                    .add_param("ms", ttl_ms)
                    .build();
                    let mut rs = tx.execute_query(stmt).await?;
                    let Some(row) = rs.next().await.transpose()? else {
                        return Ok(Lease {
                            held: false,
                            progress: None,
                            remaining: Duration::ZERO,
                        });
                    };
                    let current: Option<String> = row.get(0)?;
                    let live: Option<bool> = row.get(1)?;
                    let expires: Timestamp = row.get(2)?;
                    let stored: Option<i64> = row.get(3)?;
                    let left: Option<i64> = row.get(4)?;
                    if live == Some(true) && current.as_deref() != Some(h.as_str()) {
                        return Ok(Lease {
                            held: false,
                            progress: stored,
                            remaining: micros_duration(left.unwrap_or(0)),
                        });
                    }
                    let progress = progress.or(stored);
                    tx.buffer([Mutation::new_insert_or_update_builder(LEASE_TABLE)
                        .set("name")
                        .to(n.clone())
                        .set("holder")
                        .to(h.clone())
                        .set("expires_at")
                        .to(expires)
                        .set("progress")
                        .to(progress)
                        .build()])?;
                    Ok(Lease {
                        held: true,
                        progress,
                        remaining: ttl,
                    })
                })
                .await
                .map(|r| r.into_inner())
            }
        })
        .await;
        self.held
            .record(name, holder, matches!(&lease, Ok(l) if l.held));
        let lease = lease?;
        debug!(lease = %name, holder = %holder, held = lease.held, progress = ?lease.progress, "spanner lease");
        Ok(lease)
    }

    /// [`Source::leases`]: one strong single-use read of the leases under a prefix.
    pub(super) async fn lease_list(&self, prefix: &str) -> PortResult<Vec<LeaseInfo>> {
        self.ensure_lease_table().await?;
        self.counters
            .record(TransactionKind::ReadOnly, TransactionPurpose::LeaseRead);
        // One strong single-use read, as `read_lease`: no locks, Spanner's clock judges
        // expiry. STARTS_WITH keeps the prefix a parameter (LIKE would read `_` and `%`).
        let stmt = Statement::builder(format!(
            "SELECT name, holder, TIMESTAMP_DIFF(expires_at, CURRENT_TIMESTAMP(), MICROSECOND), \
             progress FROM {LEASE_TABLE} WHERE STARTS_WITH(name, @p) ORDER BY name"
        ))
        .add_param("p", prefix.to_string())
        .build();
        let rows = self
            .strong_rows(format!("listing the leases starting with `{prefix}`"), stmt)
            .await?;
        let mut leases = Vec::new();
        for row in rows.iter() {
            let left: i64 = row.get(2)?;
            leases.push(LeaseInfo {
                name: row.get(0)?,
                holder: row.get(1)?,
                // Negative once expired; a released lease expired at the epoch.
                remaining: micros_duration(left),
                progress: row.get(3)?,
            });
        }
        Ok(leases)
    }

    /// [`Source::read_lease`]: one strong single-use read of a lease.
    pub(super) async fn lease_read(&self, name: &str, holder: &str) -> PortResult<Lease> {
        self.ensure_lease_table().await?;
        self.counters
            .record(TransactionKind::ReadOnly, TransactionPurpose::LeaseRead);
        // A strong single-use read: no locks, no commit, and Spanner's clock judges expiry.
        let stmt = Statement::builder(format!(
            "SELECT holder, TIMESTAMP_DIFF(expires_at, CURRENT_TIMESTAMP(), MICROSECOND), \
             progress FROM {LEASE_TABLE} WHERE name = @n"
        ))
        .add_param("n", name.to_string())
        .build();
        let rows = self
            .strong_rows(format!("reading lease `{name}`"), stmt)
            .await?;
        let lease = match rows.iter().next() {
            None => Lease {
                held: false,
                progress: None,
                remaining: Duration::ZERO,
            },
            Some(row) => {
                let current: String = row.get(0)?;
                let left: i64 = row.get(1)?;
                let progress: Option<i64> = row.get(2)?;
                Lease {
                    held: current == holder && left > 0,
                    progress,
                    remaining: micros_duration(left),
                }
            }
        };
        Ok(lease)
    }

    /// [`Source::release_lease`]: expires the lease, keeping its progress.
    pub(super) async fn lease_release(
        &self,
        name: &str,
        holder: &str,
        progress: Option<i64>,
    ) -> PortResult<()> {
        self.ensure_lease_table().await?;
        self.counters
            .record(TransactionKind::ReadWrite, TransactionPurpose::Release);
        self.held.record(name, holder, false);
        let client = self.client.clone();
        let (n, h) = (name.to_string(), holder.to_string());
        let what = format!("releasing lease `{name}`");
        self.read_write(&what, move || {
            let (client, n, h) = (client.clone(), n.clone(), h.clone());
            async move {
                let runner = client
                .read_write_transaction()
                .with_transaction_timeout(RW_TRANSACTION_TIMEOUT)
                .build();
                runner
                    .run(async |tx| {
                        // Expired rather than deleted: the progress stays for the next holder.
                        let stmt = Statement::builder(format!(
                            "UPDATE {LEASE_TABLE} SET expires_at = TIMESTAMP '1970-01-01T00:00:00Z', \
                             progress = COALESCE(@p, progress) WHERE name = @n AND holder = @h"
                        ))
                        .add_param("n", n.clone())
                        .add_param("h", h.clone())
                        .add_typed_param(
                            "p",
                            progress.map_or_else(SpValue::null, SpValue::from),
                            types::int64(),
                        )
                        .build();
                        tx.execute_update(stmt).await
                    })
                    .await
            }
        })
        .await?;
        Ok(())
    }

    /// Runs the read-write transaction `make` builds, one at a time per source (the
    /// emulator runs one read-write transaction at a time and fails the others with
    /// "Transaction not found" / "Invalid transaction ID" rather than ABORTED), retrying such
    /// conflicts, which the client's runner does not, a few times.
    pub(super) async fn read_write<T, F, Fut>(&self, what: &str, make: F) -> PortResult<T>
    where
        F: Fn() -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = google_cloud_spanner::Result<T>>,
        T: Send + 'static,
    {
        let _one_at_a_time = self.read_write_turn.lock().await;
        let mut attempt = 0u32;
        loop {
            match run_detached(make.clone()).await? {
                Ok(v) => return Ok(v),
                Err(e) if attempt < RW_CONFLICT_RETRIES && is_transaction_conflict(&e) => {
                    attempt += 1;
                    debug!(what, attempt, error = %e, "read-write transaction conflicted; retrying");
                    tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                }
                Err(e) => return Err(map_err(what, e)),
            }
        }
    }
}

/// How often a conflicting read-write transaction is retried.
const RW_CONFLICT_RETRIES: u32 = 10;

/// How long one lease transaction may take, its ABORTED retries included. The client's
/// runner retries ABORTED with no limit by default; under contention (the emulator runs one
/// read-write transaction at a time) that can last longer than any lease, so past this the
/// call fails with the reason and the poller tries again on its next turn.
pub(super) const RW_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);
