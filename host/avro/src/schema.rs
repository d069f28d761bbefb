//! Table schema ⇄ Avro record schema.
//!
//! The record carries custom properties so an Avro container alone (e.g. an archived one)
//! decodes into a full event: `ledgerhost.table`, `ledgerhost.primary-key`,
//! `ledgerhost.commit-ts-column` and `ledgerhost.deleted-column`.

use serde_json::{Value as Json, json};

use ledgerhost_core::{Column, ColumnType, TableSchema};

use crate::codec::NUMERIC_SCALE;
use crate::error::AvroError;

/// An Avro record schema derived from a table.
#[derive(Debug, Clone)]
pub struct AvroSchema {
    /// The schema as JSON text (what travels in every container).
    pub json: String,
    /// Hex Rabin (CRC-64-AVRO) fingerprint of the Parsing Canonical Form: its 8 bytes
    /// little-endian, as in Avro single-object encoding (apache-avro's `Rabin` digest).
    pub fingerprint: String,
    /// The schema parsed by apache-avro, for callers that use its reader or writer.
    pub schema: apache_avro::Schema,
}

fn is_avro_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn type_json(ty: &ColumnType) -> Json {
    match ty {
        ColumnType::Bool => json!("boolean"),
        ColumnType::Int64 => json!("long"),
        ColumnType::Float32 => json!("float"),
        ColumnType::Float64 => json!("double"),
        ColumnType::Numeric => json!({
            "type": "bytes", "logicalType": "decimal", "precision": 38, "scale": NUMERIC_SCALE
        }),
        ColumnType::String => json!("string"),
        ColumnType::Bytes => json!("bytes"),
        ColumnType::Date => json!({"type": "int", "logicalType": "date"}),
        ColumnType::Timestamp => json!({"type": "long", "logicalType": "timestamp-micros"}),
        ColumnType::Json => json!({"type": "string", "sqlType": "JSON"}),
        ColumnType::Array(elem) => json!({"type": "array", "items": ["null", type_json(elem)]}),
    }
}

/// Derives the Avro record schema of a table.
pub fn schema_for(table: &TableSchema) -> Result<AvroSchema, AvroError> {
    let err = |message: String| AvroError::Schema {
        table: table.name.clone(),
        message,
    };
    let record_name: String = table
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let record_name = if record_name.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{record_name}")
    } else {
        record_name
    };
    check_roles(table).map_err(err)?;
    let mut fields = Vec::with_capacity(table.columns.len());
    for c in &table.columns {
        if !is_avro_name(&c.name) {
            return Err(err(format!(
                "column `{}` is not a valid Avro field name (letters, digits, `_`, not starting \
                 with a digit); rename it or leave it out of the capture",
                c.name
            )));
        }
        if let ColumnType::Array(elem) = &c.ty
            && matches!(**elem, ColumnType::Array(_))
        {
            return Err(err(format!(
                "column `{}`: arrays of arrays are not supported",
                c.name
            )));
        }
        let ty = type_json(&c.ty);
        fields.push(if c.nullable {
            json!({"name": c.name, "type": ["null", ty], "default": null})
        } else {
            json!({"name": c.name, "type": ty})
        });
    }
    let schema = json!({
        "type": "record",
        "name": record_name,
        "namespace": "ledgerhost",
        "ledgerhost.table": table.name,
        "ledgerhost.primary-key": table.primary_key,
        "ledgerhost.commit-ts-column": table.commit_ts_column,
        "ledgerhost.deleted-column": table.deleted_column,
        "fields": fields,
    });
    let json = schema.to_string();
    let (schema, fingerprint) = parse_with_fingerprint(&json).map_err(|e| err(e.to_string()))?;
    Ok(AvroSchema {
        json,
        fingerprint,
        schema,
    })
}

/// Validates a schema with apache-avro and returns it with its hex Rabin fingerprint.
pub(crate) fn parse_with_fingerprint(json: &str) -> Result<(apache_avro::Schema, String), String> {
    let parsed =
        apache_avro::Schema::parse_str(json).map_err(|e| format!("invalid Avro schema: {e}"))?;
    let fingerprint = parsed
        .fingerprint::<apache_avro::rabin::Rabin>()
        .to_string();
    Ok((parsed, fingerprint))
}

fn column_type(ty: &Json) -> Result<ColumnType, String> {
    match ty {
        Json::String(s) => match s.as_str() {
            "boolean" => Ok(ColumnType::Bool),
            "long" => Ok(ColumnType::Int64),
            "float" => Ok(ColumnType::Float32),
            "double" => Ok(ColumnType::Float64),
            "string" => Ok(ColumnType::String),
            "bytes" => Ok(ColumnType::Bytes),
            other => Err(format!("unsupported Avro type `{other}`")),
        },
        Json::Object(o) => {
            let base = o.get("type").and_then(Json::as_str).unwrap_or("");
            let logical = o.get("logicalType").and_then(Json::as_str);
            match (base, logical) {
                ("bytes", Some("decimal")) => Ok(ColumnType::Numeric),
                ("int", Some("date")) => Ok(ColumnType::Date),
                ("long", Some("timestamp-micros")) => Ok(ColumnType::Timestamp),
                ("string", _) if o.get("sqlType").and_then(Json::as_str) == Some("JSON") => {
                    Ok(ColumnType::Json)
                }
                ("array", _) => {
                    let items = o.get("items").ok_or("array without items")?;
                    let inner = match items {
                        Json::Array(branches) if branches.len() == 2 && branches[0] == "null" => {
                            &branches[1]
                        }
                        _ => return Err("array items must be [\"null\", T]".into()),
                    };
                    Ok(ColumnType::Array(Box::new(column_type(inner)?)))
                }
                (b, _) => column_type(&Json::String(b.to_string())),
            }
        }
        other => Err(format!("unsupported Avro type {other}")),
    }
}

/// Reconstructs the table schema from a ledgerhost Avro record schema.
pub fn table_schema_from_json(text: &str) -> Result<TableSchema, AvroError> {
    let bad = |m: String| AvroError::malformed("", format!("not a ledgerhost event schema: {m}"));
    let v: Json = serde_json::from_str(text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let prop = |k: &str| v.get(k).ok_or_else(|| bad(format!("missing property {k}")));
    let name = prop("ledgerhost.table")?
        .as_str()
        .ok_or_else(|| bad("ledgerhost.table is not a string".into()))?
        .to_string();
    let primary_key = prop("ledgerhost.primary-key")?
        .as_array()
        .ok_or_else(|| bad("ledgerhost.primary-key is not an array".into()))?
        .iter()
        .map(|k| k.as_str().map(str::to_string))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| bad("ledgerhost.primary-key holds a non-string".into()))?;
    let commit_ts_column = prop("ledgerhost.commit-ts-column")?
        .as_str()
        .ok_or_else(|| bad("ledgerhost.commit-ts-column is not a string".into()))?
        .to_string();
    let deleted_column = v
        .get("ledgerhost.deleted-column")
        .and_then(Json::as_str)
        .map(str::to_string);
    let fields = prop("fields")?
        .as_array()
        .ok_or_else(|| bad("fields is not an array".into()))?;
    let mut columns = Vec::with_capacity(fields.len());
    for f in fields {
        let cname = f
            .get("name")
            .and_then(Json::as_str)
            .ok_or_else(|| bad("field without a name".into()))?;
        let ty = f
            .get("type")
            .ok_or_else(|| bad(format!("field {cname} without a type")))?;
        let (nullable, inner) = match ty {
            Json::Array(b) if b.len() == 2 && b[0] == "null" => (true, &b[1]),
            other => (false, other),
        };
        let ty = column_type(inner).map_err(|m| bad(format!("field {cname}: {m}")))?;
        columns.push(Column {
            name: cname.to_string(),
            ty,
            nullable,
        });
    }
    let table = TableSchema {
        name,
        columns,
        primary_key,
        commit_ts_column,
        deleted_column,
    };
    check_roles(&table).map_err(bad)?;
    Ok(table)
}

/// The key, commit-timestamp and deleted columns named by the properties must be fields of
/// the right type, or events could not be identified.
fn check_roles(t: &TableSchema) -> Result<(), String> {
    if t.primary_key.is_empty() {
        return Err("ledgerhost.primary-key is empty".into());
    }
    let column = |name: &str, role: &str| {
        t.columns
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| format!("{role} `{name}` is not a field"))
    };
    for k in &t.primary_key {
        column(k, "primary-key column")?;
    }
    let ts = column(&t.commit_ts_column, "commit-timestamp column")?;
    if !matches!(ts.ty, ColumnType::Timestamp | ColumnType::Int64) {
        return Err(format!(
            "commit-timestamp column `{}` is {:?}, not a timestamp",
            ts.name, ts.ty
        ));
    }
    if let Some(d) = &t.deleted_column {
        let c = column(d, "deleted column")?;
        if !matches!(c.ty, ColumnType::Bool | ColumnType::Int64) {
            return Err(format!("deleted column `{d}` is {:?}, not a boolean", c.ty));
        }
    }
    Ok(())
}
