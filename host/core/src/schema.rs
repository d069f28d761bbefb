//! Table schemas as read from a source, the input to Avro schema derivation.

use serde::{Deserialize, Serialize};

/// Type of a source column. Mirrors Spanner's types; arrays are one level deep, as in Spanner.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ColumnType {
    /// Boolean.
    Bool,
    /// Signed 64-bit integer.
    Int64,
    /// Single-precision float.
    Float32,
    /// Double-precision float.
    Float64,
    /// Exact decimal; Spanner's NUMERIC is precision 38, scale 9.
    Numeric,
    /// UTF-8 text.
    String,
    /// Raw bytes.
    Bytes,
    /// Calendar date (days since 1970-01-01).
    Date,
    /// Microseconds since the Unix epoch, UTC.
    Timestamp,
    /// JSON document.
    Json,
    /// Array of a scalar type; elements may be NULL.
    Array(Box<ColumnType>),
}

/// One column of a source table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// Column name as in the source table.
    pub name: String,
    /// Type of the column's values.
    pub ty: ColumnType,
    /// Whether the column may hold NULL.
    pub nullable: bool,
}

impl Column {
    /// A column named `name` of type `ty`, nullable or not.
    pub fn new(name: &str, ty: ColumnType, nullable: bool) -> Column {
        Column {
            name: name.into(),
            ty,
            nullable,
        }
    }
}

/// What the poller needs to know about a source table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    /// Table name as in the source.
    pub name: String,
    /// Every column in table order, the commit-timestamp column included.
    pub columns: Vec<Column>,
    /// Primary-key column names, in key order.
    pub primary_key: Vec<String>,
    /// Column holding the commit timestamp (Spanner `allow_commit_timestamp`, SQLite trigger).
    pub commit_ts_column: String,
    /// Optional soft-delete column: a row whose value is true is published as a tombstone.
    pub deleted_column: Option<String>,
}

impl TableSchema {
    /// Index of a column by name.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// Indexes of the primary-key columns, in key order.
    pub fn key_indexes(&self) -> Vec<usize> {
        self.primary_key
            .iter()
            .filter_map(|k| self.column_index(k))
            .collect()
    }
}
