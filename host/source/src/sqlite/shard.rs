//! Shards of a table in SQL: a shard column's value, or the primary-key hash computed by a
//! function registered on every connection.

use ledgerhost_core::TableSchema;
use ledgerhost_core::source::Shard;
use rusqlite::Connection;
use rusqlite::types::ValueRef;

use super::names::quote;

/// The SQL function name of the primary-key hash a shard page filters on.
pub(super) const SHARD_FUNCTION: &str = "ledgerhost_shard";

/// Registers `ledgerhost_shard(count, k1, .., kn)`: the shard of a key by
/// [`Shard::of_key_text`] over each value's text (integers in decimal, text and blobs as
/// their bytes, NULL as nothing), so a key always lands in the same shard.
pub(super) fn register_shard_function(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        SHARD_FUNCTION,
        -1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let count: i64 = ctx.get(0)?;
            let mut parts: Vec<Vec<u8>> = Vec::with_capacity(ctx.len().saturating_sub(1));
            for i in 1..ctx.len() {
                parts.push(match ctx.get_raw(i) {
                    ValueRef::Null => Vec::new(),
                    ValueRef::Integer(n) => n.to_string().into_bytes(),
                    ValueRef::Real(f) => f.to_string().into_bytes(),
                    ValueRef::Text(b) | ValueRef::Blob(b) => b.to_vec(),
                });
            }
            let count = u32::try_from(count.max(1)).unwrap_or(u32::MAX);
            Ok(i64::from(Shard::of_key_text(
                parts.iter().map(Vec::as_slice),
                count,
            )))
        },
    )
}

/// The SQL condition selecting `shard`'s rows of `table` (see [`Shard`]), `None` for the
/// whole table.
pub(super) fn shard_condition(table: &TableSchema, shard: &Shard) -> Option<String> {
    if shard.is_whole() {
        return None;
    }
    Some(match &shard.column {
        Some(column) if shard.index == 0 => {
            // Shard 0 also takes every value no other shard reads: nothing goes unpolled.
            let others = (1..shard.count)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            format!("NOT coalesce({} IN ({others}), 0)", quote(column))
        }
        Some(column) => format!("{} = {}", quote(column), shard.index),
        None => {
            let keys = table
                .primary_key
                .iter()
                .map(|k| quote(k))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "{SHARD_FUNCTION}({}, {keys}) = {}",
                shard.count, shard.index
            )
        }
    })
}
