//! Fixtures shared by the archive plugins' native tests (feature `testing`): the small
//! `orders` table they archive, and the instants they archive it at.

use ledgerhost_avro::Encoder;
use ledgerhost_core::{Column, ColumnType, TableSchema};

/// One hour in microseconds.
pub const HOUR: i64 = 3_600_000_000;
/// 2026-11-22T12:00:00Z in microseconds.
pub const T0: i64 = 1_795_348_800_000_000;

/// The Avro encoder of `orders (id INT64, amount INT64, commit_ts)`, keyed by `id`.
pub fn orders_encoder() -> Encoder {
    let col = |name: &str, ty| Column {
        name: name.into(),
        ty,
        nullable: false,
    };
    Encoder::new(&TableSchema {
        name: "orders".into(),
        columns: vec![
            col("id", ColumnType::Int64),
            col("amount", ColumnType::Int64),
            col("commit_ts", ColumnType::Int64),
        ],
        primary_key: vec!["id".into()],
        commit_ts_column: "commit_ts".into(),
        deleted_column: None,
    })
    .expect("a valid schema")
}
