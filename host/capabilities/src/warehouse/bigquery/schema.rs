//! Tables and columns as BigQuery has them: names checked, each column's BigQuery type,
//! and the ledgerhost type kept in the field's description (`ledgerhost:FLOAT32`).

use gcp_bigquery_client::model::field_type::FieldType;
use gcp_bigquery_client::model::table_field_schema::TableFieldSchema;
use ledgerhost_core::{ColumnType, PortError, PortResult};

use super::error::BACKEND;

/// The description prefix that carries a column's ledgerhost type.
pub(super) const TAG: &str = "ledgerhost:";

pub(super) fn check_column_name(table: &str, name: &str) -> PortResult<()> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name != "_event_id";
    if !ok {
        return Err(PortError::invalid(
            BACKEND,
            format!(
                "table `{table}`: column `{name}` is not a valid BigQuery column name (letters, \
             digits, `_`, not starting with a digit, not `_event_id`)"
            ),
        ));
    }
    Ok(())
}

/// BigQuery type of a column.
pub(super) fn field_type(ty: &ColumnType) -> FieldType {
    match ty {
        ColumnType::Bool => FieldType::Bool,
        ColumnType::Int64 => FieldType::Int64,
        ColumnType::Float32 | ColumnType::Float64 => FieldType::Float64,
        ColumnType::Numeric => FieldType::Numeric,
        ColumnType::String | ColumnType::Array(_) => FieldType::String,
        ColumnType::Bytes => FieldType::Bytes,
        ColumnType::Date => FieldType::Date,
        ColumnType::Timestamp => FieldType::Timestamp,
        ColumnType::Json => FieldType::Json,
    }
}

/// A nullable field of type `ty`, its ledgerhost type in the description.
pub(super) fn tagged_field(name: &str, ty: &ColumnType) -> TableFieldSchema {
    let mut f = TableFieldSchema::new(name, field_type(ty));
    f.mode = Some("NULLABLE".to_string());
    f.description = Some(format!("{TAG}{}", ty.name()));
    f
}
