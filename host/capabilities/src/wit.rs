//! The contract's shared types (`ledgerhost:plugin/types`), generated once: every
//! capability's private bindgen and the runtime's world bindgens reuse them through `with:`.
//! Also the helpers every capability's host side shares: grant denials, backend errors,
//! value conversions.

#![allow(missing_docs)]

mod generated {
    wasmtime::component::bindgen!({
        path: "../../wit",
        inline: "package ledgerhost:host; world types { import ledgerhost:plugin/types@0.1.0; }",
    });
}

use ledgerhost_core::{ColumnType, Field, PortError, Value};

pub use generated::ledgerhost::plugin0_1_0::types;

/// The import names of the function-less interfaces of both contract versions: the shared
/// types (0.1, used by 0.2 too) and 0.2's `events` (the batch a consumer receives).
pub const TYPES_INTERFACES: [&str; 2] = [
    "ledgerhost:plugin/types@0.1.",
    "ledgerhost:plugin/events@0.2.",
];

/// Links the function-less interfaces ([`TYPES_INTERFACES`]), so components that import
/// them instantiate.
pub fn add_types_to_linker<T: 'static>(
    linker: &mut wasmtime::component::Linker<T>,
) -> wasmtime::Result<()> {
    linker.instance("ledgerhost:plugin/types@0.1.0")?;
    linker.instance("ledgerhost:plugin/events@0.2.0")?;
    Ok(())
}

/// The error a plugin gets for a name its manifest does not grant; names the grant to add.
pub fn denied(plugin: &str, what: &str, name: &str, grant: &str) -> types::Error {
    types::Error::Denied(format!(
        "plugin `{plugin}` is not granted {what} `{name}`; add \"{name}\" to grants.{grant} in \
         {plugin}.toml"
    ))
}

/// A backend failure as the plugin sees it: `invalid` for a wrong request, else `backend`.
pub fn backend(e: PortError) -> types::Error {
    match e {
        PortError::Invalid { .. } => types::Error::Invalid(e.to_string()),
        _ => types::Error::Backend(e.to_string()),
    }
}

/// True when `entries` of `grant` let the plugin reach `value`, by the grant's one rule in
/// [`ledgerhost_manifest::grant::GRANTS`] (the rule `MockHost` uses too).
pub fn granted(grant: &str, entries: &[String], value: &str) -> bool {
    ledgerhost_manifest::grant::rule_for(grant).is_some_and(|r| r.matches(entries, value))
}

/// A name refused by the one name rule, as the plugin sees it.
pub fn invalid_name(e: ledgerhost_manifest::names::NameError) -> types::Error {
    types::Error::Invalid(e.to_string())
}

fn array<T>(elem: ColumnType, items: Vec<Option<T>>, f: impl Fn(T) -> Value) -> Value {
    Value::Array(
        elem,
        items
            .into_iter()
            .map(|i| i.map_or(Value::Null, &f))
            .collect(),
    )
}

/// A WIT value as a host value.
pub fn value_from_wit(v: types::Value) -> Value {
    use types::Value as W;
    match v {
        W::Null => Value::Null,
        W::Bool(b) => Value::Bool(b),
        W::Int64(i) => Value::Int64(i),
        W::Float32(f) => Value::Float32(f),
        W::Float64(f) => Value::Float64(f),
        W::Numeric(s) => Value::Numeric(s),
        W::String(s) => Value::String(s),
        W::Bytes(b) => Value::Bytes(b),
        W::Date(d) => Value::Date(d),
        W::Timestamp(t) => Value::Timestamp(t),
        W::Json(s) => Value::Json(s),
        W::BoolArray(a) => array(ColumnType::Bool, a, Value::Bool),
        W::Int64Array(a) => array(ColumnType::Int64, a, Value::Int64),
        W::Float32Array(a) => array(ColumnType::Float32, a, Value::Float32),
        W::Float64Array(a) => array(ColumnType::Float64, a, Value::Float64),
        W::NumericArray(a) => array(ColumnType::Numeric, a, Value::Numeric),
        W::StringArray(a) => array(ColumnType::String, a, Value::String),
        W::BytesArray(a) => array(ColumnType::Bytes, a, Value::Bytes),
        W::DateArray(a) => array(ColumnType::Date, a, Value::Date),
        W::TimestampArray(a) => array(ColumnType::Timestamp, a, Value::Timestamp),
        W::JsonArray(a) => array(ColumnType::Json, a, Value::Json),
    }
}

/// A WIT field as a host field.
pub fn field_from_wit(f: types::Field) -> Field {
    Field {
        name: f.name.into(),
        value: value_from_wit(f.value),
    }
}
