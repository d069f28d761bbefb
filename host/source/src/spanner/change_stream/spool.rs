//! The hand-over of a shared change-stream read ([`ChangeCapture::read_stream_shared`]).
//!
//! The replica merging a stream offers each partition its tracker wants read in
//! `ledgerhost_change_offers` (one row per partition: token, the merging read's epoch, the
//! time to query from). The replica holding a partition's lease queries it and appends what
//! it returns to `ledgerhost_change_spool`, a row per batch keyed by the row's own commit
//! timestamp. The merging replica reads the rows after the last one it read — a strong read
//! sees every row committed before it, and a row committed later has a later timestamp, so
//! nothing is passed over ("A strong read is a read at a current timestamp and is guaranteed
//! to see all data that has been committed up until the start of this read":
//! <https://cloud.google.com/spanner/docs/reads#read_types>; external consistency gives a
//! transaction that commits after another has committed the larger commit timestamp:
//! <https://cloud.google.com/spanner/docs/true-time-external-consistency>) — feeds them to
//! its tracker in that order and deletes them. Both
//! tables are created on first use, as the lease table is.
//!
//! The spool is a transport, not a store: a merging read starts by withdrawing every offer
//! and spooled row of its unit and offers its partitions again from its own stored progress,
//! so nothing in the spool has to outlive the read that offered it.
//!
//! [`ChangeCapture::read_stream_shared`]: ledgerhost_core::change::ChangeCapture::read_stream_shared

use google_cloud_spanner::statement::Statement;
use google_cloud_spanner::transaction::Timestamp;
use google_cloud_spanner::types;
use ledgerhost_core::change::PartitionOffer;
use ledgerhost_core::source::{TransactionKind, TransactionPurpose};
use ledgerhost_core::{PortError, PortResult};
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use super::record::ChangeRecord;
use super::tracker::ROOT;
use crate::spanner::SpannerSource;
use crate::spanner::error::BACKEND;
use crate::spanner::lease::RW_TRANSACTION_TIMEOUT;
use crate::spanner::values::{micros_timestamp, timestamp_micros};

/// The partitions shared reads offer.
pub const OFFER_TABLE: &str = "ledgerhost_change_offers";
/// What partition reads hand over to the merging read.
pub const SPOOL_TABLE: &str = "ledgerhost_change_spool";

/// The most bytes one spool row's payload (`BYTES(MAX)`, JSON) carries: Spanner holds 10 MiB
/// in a column value ("Maximum size of a column value", and a `BYTES(MAX)` up to 10 MiB:
/// <https://cloud.google.com/spanner/quotas#tables>), less room for the row's other columns;
/// a batch above it goes in several rows.
pub const MAX_ROW_BYTES: usize = 9 << 20;

/// What one spool row carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Handed {
    /// Records the partition returned, in its order.
    Records(Vec<ChangeRecord>),
    /// The partition's query returned its last record.
    Ended,
    /// The partition's query failed for good, with this reason.
    Failed(String),
}

/// One spool row as the merging read takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Spooled {
    /// The row's commit timestamp, µs.
    pub written_at: i64,
    /// The partition's token.
    pub token: String,
    /// The epoch of the offer it was read under.
    pub epoch: i64,
    /// What it carries.
    pub handed: Handed,
}

/// A partition's short, stable name (its lease's and its offer's): `root`, or 16 hex digits
/// of the token's 64-bit FNV-1a hash (tokens are a few hundred characters).
pub fn partition_id(token: &str) -> String {
    if token == ROOT {
        return "root".into();
    }
    format!("{:016x}", ledgerhost_core::hash::fnv1a(token.as_bytes()))
}

/// `handed` as spool payloads of at most [`MAX_ROW_BYTES`]: records split between rows at
/// record boundaries; a single record above the limit cannot be handed over.
pub fn payloads(handed: &Handed) -> Result<Vec<String>, String> {
    let text = serde_json::to_string(handed).map_err(|e| e.to_string())?;
    if text.len() <= MAX_ROW_BYTES {
        return Ok(vec![text]);
    }
    let Handed::Records(records) = handed else {
        return Err(format!("a {} byte hand-over row", text.len()));
    };
    if records.len() < 2 {
        return Err(format!(
            "one change record of {} bytes, above the {MAX_ROW_BYTES} bytes a Spanner cell \
             holds; read this stream's partitions on one replica (share-partitions = false)",
            text.len()
        ));
    }
    let (first, second) = records.split_at(records.len() / 2);
    let mut out = payloads(&Handed::Records(first.to_vec()))?;
    out.extend(payloads(&Handed::Records(second.to_vec()))?);
    Ok(out)
}

impl SpannerSource {
    /// Creates the offer and spool tables when missing (once per source).
    async fn ensure_spool_tables(&self) -> PortResult<()> {
        self.spool_tables_ready
            .get_or_try_init(|| async {
                for (table, ddl) in [
                    (
                        OFFER_TABLE,
                        format!(
                            "CREATE TABLE {OFFER_TABLE} (unit STRING(MAX) NOT NULL, \
                             partition_id STRING(MAX) NOT NULL, token STRING(MAX) NOT NULL, \
                             epoch INT64 NOT NULL, start_micros INT64 NOT NULL) \
                             PRIMARY KEY (unit, partition_id)"
                        ),
                    ),
                    (
                        SPOOL_TABLE,
                        format!(
                            "CREATE TABLE {SPOOL_TABLE} (unit STRING(MAX) NOT NULL, \
                             written_at TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp=true), \
                             partition_id STRING(MAX) NOT NULL, writer STRING(MAX) NOT NULL, \
                             part INT64 NOT NULL, token STRING(MAX) NOT NULL, \
                             epoch INT64 NOT NULL, payload BYTES(MAX) NOT NULL) \
                             PRIMARY KEY (unit, written_at, partition_id, writer, part)"
                        ),
                    ),
                ] {
                    if self.table_exists(table).await? {
                        continue;
                    }
                    match self.update_ddl(vec![ddl]).await {
                        Ok(()) => info!(table, "created the change stream hand-over table"),
                        // Another replica may have created it at the same moment.
                        Err(e) if self.table_exists(table).await.unwrap_or(false) => {
                            debug!(table, error = %e, "hand-over table created concurrently");
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Runs `statements` (DML with their parameters) in one read-write transaction.
    async fn hand_over_write(&self, what: &str, statements: Vec<Statement>) -> PortResult<()> {
        if statements.is_empty() {
            return Ok(());
        }
        self.ensure_spool_tables().await?;
        self.counters
            .record(TransactionKind::ReadWrite, TransactionPurpose::HandOver);
        let client = self.client.clone();
        self.read_write(what, move || {
            let (client, statements) = (client.clone(), statements.clone());
            async move {
                client
                    .read_write_transaction()
                    .with_transaction_timeout(RW_TRANSACTION_TIMEOUT)
                    .build()
                    .run(async |tx| {
                        for stmt in statements.iter().cloned() {
                            tx.execute_update(stmt).await?;
                        }
                        Ok(())
                    })
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
    }

    /// Offers the partitions `(token, start)` under `unit` for `epoch` (replacing an offer
    /// of the same partition).
    pub(crate) async fn offer_partitions(
        &self,
        unit: &str,
        epoch: i64,
        partitions: &[(String, i64)],
    ) -> PortResult<()> {
        let statements = partitions
            .iter()
            .map(|(token, start)| {
                Statement::builder(format!(
                    "INSERT OR UPDATE INTO {OFFER_TABLE} (unit, partition_id, token, epoch, \
                     start_micros) VALUES (@u, @p, @t, @e, @s)"
                ))
                .add_param("u", unit.to_string())
                .add_param("p", partition_id(token))
                .add_param("t", token.clone())
                .add_param("e", epoch)
                .add_param("s", *start)
                .build()
            })
            .collect();
        self.hand_over_write(&format!("offering partitions of `{unit}`"), statements)
            .await
    }

    /// Withdraws the offers of the partitions `tokens` of `unit`.
    pub(crate) async fn withdraw_partitions(
        &self,
        unit: &str,
        tokens: &[String],
    ) -> PortResult<()> {
        let statements = tokens
            .iter()
            .map(|token| {
                Statement::builder(format!(
                    "DELETE FROM {OFFER_TABLE} WHERE unit = @u AND partition_id = @p"
                ))
                .add_param("u", unit.to_string())
                .add_param("p", partition_id(token))
                .build()
            })
            .collect();
        self.hand_over_write(&format!("withdrawing partitions of `{unit}`"), statements)
            .await
    }

    /// Withdraws every offer of `unit` and deletes everything spooled for it: a new merging
    /// read starts afresh.
    pub(crate) async fn withdraw_unit(&self, unit: &str) -> PortResult<()> {
        let statements = [OFFER_TABLE, SPOOL_TABLE]
            .iter()
            .map(|table| {
                Statement::builder(format!("DELETE FROM {table} WHERE unit = @u"))
                    .add_param("u", unit.to_string())
                    .build()
            })
            .collect();
        self.hand_over_write(&format!("withdrawing the offers of `{unit}`"), statements)
            .await
    }

    /// The partitions offered under `unit`, by id.
    pub(crate) async fn offers(&self, unit: &str) -> PortResult<Vec<PartitionOffer>> {
        self.ensure_spool_tables().await?;
        self.counters
            .record(TransactionKind::ReadOnly, TransactionPurpose::HandOver);
        let stmt = Statement::builder(format!(
            "SELECT partition_id, token, epoch, start_micros FROM {OFFER_TABLE} WHERE unit = @u \
             ORDER BY partition_id"
        ))
        .add_param("u", unit.to_string())
        .build();
        let rows = self
            .strong_rows(format!("reading the partitions offered for `{unit}`"), stmt)
            .await?;
        let mut out = Vec::new();
        for row in rows.iter() {
            out.push(PartitionOffer {
                id: row.get(0)?,
                token: row.get(1)?,
                epoch: row.get(2)?,
                start: row.get(3)?,
            });
        }
        Ok(out)
    }

    /// Appends what partition `token` returned to the spool of `unit`, as `writer` (the
    /// replica's partition read), under the offer's `epoch`; one transaction.
    pub(crate) async fn spool_append(
        &self,
        unit: &str,
        writer: &str,
        token: &str,
        epoch: i64,
        handed: &Handed,
    ) -> PortResult<()> {
        let payloads = payloads(handed).map_err(|m| {
            PortError::invalid(BACKEND, format!("handing over partition {token:?}: {m}"))
        })?;
        let statements = payloads
            .into_iter()
            .enumerate()
            .map(|(part, payload)| {
                Statement::builder(format!(
                    "INSERT INTO {SPOOL_TABLE} (unit, written_at, partition_id, writer, part, \
                     token, epoch, payload) VALUES (@u, PENDING_COMMIT_TIMESTAMP(), @p, @w, \
                     @n, @t, @e, @payload)"
                ))
                .add_param("u", unit.to_string())
                .add_param("p", partition_id(token))
                .add_param("w", writer.to_string())
                .add_param("n", i64::try_from(part).unwrap_or(i64::MAX))
                .add_param("t", token.to_string())
                .add_param("e", epoch)
                .add_typed_param(
                    "payload",
                    google_cloud_spanner::value::Value::from(payload.into_bytes()),
                    types::bytes(),
                )
                .build()
            })
            .collect();
        self.hand_over_write(&format!("handing over partition of `{unit}`"), statements)
            .await
    }

    /// The spool rows of `unit` written after `after` (µs), in the order they were written.
    pub(crate) async fn spool_read(&self, unit: &str, after: i64) -> PortResult<Vec<Spooled>> {
        self.ensure_spool_tables().await?;
        self.counters
            .record(TransactionKind::ReadOnly, TransactionPurpose::HandOver);
        let stmt = Statement::builder(format!(
            "SELECT written_at, token, epoch, payload FROM {SPOOL_TABLE} \
             WHERE unit = @u AND written_at > @after ORDER BY written_at, partition_id, writer, part"
        ))
        .add_param("u", unit.to_string())
        .add_typed_param("after", micros_timestamp(after)?, types::timestamp())
        .build();
        let context = format!("reading the change stream hand-over of `{unit}`");
        let rows = self.strong_rows(context.clone(), stmt).await?;
        let mut out = Vec::new();
        for row in rows.iter() {
            let written_at: Timestamp = row.get(0)?;
            let payload: Vec<u8> = row.get(3)?;
            let handed = serde_json::from_slice(&payload).map_err(|e| {
                PortError::corrupt(BACKEND, format!("{context}: an unreadable row ({e})"))
            })?;
            out.push(Spooled {
                written_at: timestamp_micros(&written_at),
                token: row.get(1)?,
                epoch: row.get(2)?,
                handed,
            });
        }
        Ok(out)
    }

    /// Deletes the spool rows of `unit` written at or before `through` (µs).
    pub(crate) async fn spool_trim(&self, unit: &str, through: i64) -> PortResult<()> {
        let stmt = Statement::builder(format!(
            "DELETE FROM {SPOOL_TABLE} WHERE unit = @u AND written_at <= @t"
        ))
        .add_param("u", unit.to_string())
        .add_typed_param("t", micros_timestamp(through)?, types::timestamp())
        .build();
        self.hand_over_write(&format!("trimming the hand-over of `{unit}`"), vec![stmt])
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spanner::change_stream::record::{
        Child, ChildPartitions, DataChange, Mod, ModType, RecordKey,
    };

    fn data(ts: i64, mods: usize, width: usize) -> ChangeRecord {
        ChangeRecord::Data(DataChange {
            key: RecordKey::new(ts, "tx", "00000001"),
            last_in_partition: true,
            table: "t".into(),
            mod_type: ModType::Update,
            value_capture_type: "NEW_ROW".into(),
            mods: (0..mods)
                .map(|i| Mod {
                    keys: format!("{{\"id\":\"{i}\"}}"),
                    new_values: "x".repeat(width),
                    old_values: "{}".into(),
                })
                .collect(),
        })
    }

    #[test]
    fn what_a_partition_returned_travels_whole_and_in_order() {
        let handed = Handed::Records(vec![
            data(5, 2, 3),
            ChangeRecord::Heartbeat { at: 6 },
            ChangeRecord::Children(ChildPartitions {
                start: 7,
                children: vec![Child {
                    token: "child".into(),
                    parents: vec!["p".into()],
                }],
            }),
        ]);
        let rows = payloads(&handed).unwrap();
        assert_eq!(rows.len(), 1);
        let back: Handed = serde_json::from_str(&rows[0]).unwrap();
        assert_eq!(back, handed);
        for h in [Handed::Ended, Handed::Failed("gone".into())] {
            let rows = payloads(&h).unwrap();
            assert_eq!(serde_json::from_str::<Handed>(&rows[0]).unwrap(), h);
        }
    }

    #[test]
    fn a_batch_above_a_cell_goes_in_several_rows_and_one_huge_record_is_refused() {
        let big = Handed::Records((0..5).map(|i| data(i, 1, 3 << 20)).collect());
        let rows = payloads(&big).unwrap();
        assert!(rows.len() >= 2, "{} rows", rows.len());
        assert!(rows.iter().all(|r| r.len() <= MAX_ROW_BYTES));
        let back: Vec<ChangeRecord> = rows
            .iter()
            .flat_map(|r| match serde_json::from_str(r).unwrap() {
                Handed::Records(records) => records,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(Handed::Records(back), big, "the records in their order");
        let e = payloads(&Handed::Records(vec![data(1, 1, 10 << 20)])).unwrap_err();
        assert!(e.contains("share-partitions = false"), "{e}");
    }

    #[test]
    fn partition_ids_are_short_stable_and_distinct() {
        assert_eq!(partition_id(ROOT), "root");
        let a = partition_id(&"a".repeat(300));
        assert_eq!(a.len(), 16);
        assert_eq!(a, partition_id(&"a".repeat(300)));
        assert_ne!(a, partition_id(&"b".repeat(300)));
    }
}
