//! The records a change-stream partition query returns, as typed values (what Spanner's
//! "Change stream partitions, records, and queries" page documents for the GoogleSQL
//! dialect: `data_change_record`, `heartbeat_record`, `child_partitions_record`).
//!
//! Times are microseconds since the Unix epoch, as everywhere in the host: Spanner's
//! commit timestamps have microsecond granularity.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// One record of a partition query, in the order the partition returned it. Its serde form
/// is what a partition read on another replica hands over (see `spool`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeRecord {
    /// Changes of one transaction in this partition.
    Data(DataChange),
    /// Every record of the partition up to `at` (inclusive) has been returned.
    Heartbeat {
        /// The heartbeat's time.
        at: i64,
    },
    /// The partition ends; its key range continues in these partitions from `start`.
    Children(ChildPartitions),
}

/// How a data change record's rows were changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModType {
    /// `INSERT` (or the insert half of an `INSERT OR UPDATE`).
    Insert,
    /// `UPDATE`.
    Update,
    /// `DELETE`: the row is gone, `new_values` is empty.
    Delete,
}

impl ModType {
    /// The type Spanner names `name`.
    pub fn parse(name: &str) -> Option<ModType> {
        match name {
            "INSERT" => Some(ModType::Insert),
            "UPDATE" => Some(ModType::Update),
            "DELETE" => Some(ModType::Delete),
            _ => None,
        }
    }
}

/// One changed row: its key and values as Spanner's JSON text (GoogleSQL dialect:
/// `{"column": value, …}`, INT64 as a string, BYTES as base64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mod {
    /// The primary-key columns.
    pub keys: String,
    /// The row's values after the change (with `NEW_ROW`: every non-key column the stream
    /// watches; empty for a delete).
    pub new_values: String,
    /// The row's values before the change (with `NEW_ROW_AND_OLD_VALUES`; empty with
    /// `NEW_ROW`).
    pub old_values: String,
}

/// The changes of one transaction to one table, in one partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataChange {
    /// Where the record sits in the stream's total order.
    pub key: RecordKey,
    /// True on the transaction's last record in this partition.
    pub last_in_partition: bool,
    /// The changed table.
    pub table: String,
    /// How the rows were changed.
    pub mod_type: ModType,
    /// The stream's value capture type (`NEW_ROW`, `OLD_AND_NEW_VALUES`, …).
    pub value_capture_type: String,
    /// The changed rows, in the order the transaction wrote them.
    pub mods: Vec<Mod>,
}

/// The children a partition ends in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildPartitions {
    /// The children's records have commit timestamps at or after this.
    pub start: i64,
    /// The children: on a split several with this partition as their parent, on a merge one
    /// announced by each of its parents.
    pub children: Vec<Child>,
}

/// One child partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Child {
    /// The token to query it with.
    pub token: String,
    /// The partitions it continues (empty for the partitions the root query announces).
    pub parents: Vec<String>,
}

/// A data change record's place in the stream's total order: commit timestamp, then
/// server transaction id (transactions may share a commit timestamp), then the record
/// sequence within the transaction (unique and increasing across its partitions).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RecordKey {
    /// Commit timestamp, µs.
    pub commit_ts: i64,
    /// Spanner's transaction id (unique per transaction).
    pub transaction: String,
    /// The record's sequence number within the transaction, as Spanner sends it (decimal
    /// text, zero-padded on the emulator): compared as a number.
    pub sequence: String,
}

impl RecordKey {
    /// The key of a record at `commit_ts` of `transaction` with sequence `sequence`.
    pub fn new(commit_ts: i64, transaction: &str, sequence: &str) -> RecordKey {
        RecordKey {
            commit_ts,
            transaction: transaction.to_string(),
            sequence: sequence.to_string(),
        }
    }
}

/// Decimal text compared as the number it spells: leading zeros dropped, then the longer is
/// larger, then digit by digit.
fn cmp_decimal(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

impl Ord for RecordKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.commit_ts
            .cmp(&other.commit_ts)
            .then_with(|| self.transaction.cmp(&other.transaction))
            .then_with(|| cmp_decimal(&self.sequence, &other.sequence))
            // Two spellings of one number are one record; the text breaks the tie only so
            // the order agrees with `Eq`.
            .then_with(|| self.sequence.cmp(&other.sequence))
    }
}

impl PartialOrd for RecordKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_order_by_time_then_transaction_then_sequence_as_a_number() {
        let k = RecordKey::new;
        let mut keys = vec![
            k(2, "a", "0"),
            k(1, "b", "10"),
            k(1, "b", "9"),
            k(1, "a", "00000002"),
            k(1, "a", "00000011"),
        ];
        keys.sort();
        assert_eq!(
            keys,
            vec![
                k(1, "a", "00000002"),
                k(1, "a", "00000011"),
                k(1, "b", "9"),
                k(1, "b", "10"),
                k(2, "a", "0"),
            ]
        );
        assert_eq!(ModType::parse("DELETE"), Some(ModType::Delete));
        assert_eq!(ModType::parse("delete"), None);
    }
}
