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

impl ColumnType {
    /// The GoogleSQL name of the type (`INT64`, `ARRAY<STRING>`): Spanner's
    /// `INFORMATION_SCHEMA` spelling, and how the warehouses store a column's type.
    pub fn name(&self) -> String {
        let scalar = match self {
            ColumnType::Bool => "BOOL",
            ColumnType::Int64 => "INT64",
            ColumnType::Float32 => "FLOAT32",
            ColumnType::Float64 => "FLOAT64",
            ColumnType::Numeric => "NUMERIC",
            ColumnType::String => "STRING",
            ColumnType::Bytes => "BYTES",
            ColumnType::Date => "DATE",
            ColumnType::Timestamp => "TIMESTAMP",
            ColumnType::Json => "JSON",
            ColumnType::Array(e) => return format!("ARRAY<{}>", e.name()),
        };
        scalar.to_string()
    }

    /// The type a GoogleSQL name denotes, the inverse of [`ColumnType::name`]; a length
    /// (`STRING(MAX)`, `BYTES(16)`) is allowed and ignored. `None` for any other name.
    pub fn from_name(name: &str) -> Option<ColumnType> {
        let name = name.trim();
        if let Some(inner) = name
            .strip_prefix("ARRAY<")
            .and_then(|s| s.strip_suffix('>'))
        {
            return ColumnType::from_name(inner).map(|t| ColumnType::Array(Box::new(t)));
        }
        let base = name.split('(').next().unwrap_or(name).trim();
        Some(match base {
            "BOOL" => ColumnType::Bool,
            "INT64" => ColumnType::Int64,
            "FLOAT32" => ColumnType::Float32,
            "FLOAT64" => ColumnType::Float64,
            "NUMERIC" => ColumnType::Numeric,
            "STRING" => ColumnType::String,
            "BYTES" => ColumnType::Bytes,
            "DATE" => ColumnType::Date,
            "TIMESTAMP" => ColumnType::Timestamp,
            "JSON" => ColumnType::Json,
            _ => return None,
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_round_trip_and_lengths_are_ignored() {
        let all = [
            ColumnType::Bool,
            ColumnType::Int64,
            ColumnType::Float32,
            ColumnType::Float64,
            ColumnType::Numeric,
            ColumnType::String,
            ColumnType::Bytes,
            ColumnType::Date,
            ColumnType::Timestamp,
            ColumnType::Json,
        ];
        for ty in all {
            let array = ColumnType::Array(Box::new(ty.clone()));
            assert_eq!(ColumnType::from_name(&ty.name()), Some(ty));
            assert_eq!(ColumnType::from_name(&array.name()), Some(array));
        }
        assert_eq!(
            ColumnType::Array(Box::new(ColumnType::Int64)).name(),
            "ARRAY<INT64>"
        );
        assert_eq!(
            ColumnType::from_name("STRING(MAX)"),
            Some(ColumnType::String)
        );
        assert_eq!(
            ColumnType::from_name(" ARRAY<BYTES(16)> "),
            Some(ColumnType::Array(Box::new(ColumnType::Bytes)))
        );
        assert_eq!(ColumnType::from_name("PROTO<x.Y>"), None);
        assert_eq!(ColumnType::from_name("int64"), None);
    }
}
