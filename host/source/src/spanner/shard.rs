//! Sharded polls on Spanner: the predicate that keeps one shard's rows of a page, and the
//! index a shard-column poll reads through.
//!
//! - **Shard column** ([`Shard::column`] set): shard `i > 0` reads `column = @shard`; shard 0
//!   reads every row no other shard reads (`column IS NULL OR column < 1 OR column >=
//!   @count`), so a row whose value the application got wrong is still polled. A page reads
//!   the index keyed `(shard column, commit timestamp)`, so a shard `i > 0` is one range
//!   scan of it in page order; a table without one is refused at start with the DDL
//!   ([`shard_index_ddl`]).
//! - **Primary-key hash** (no column): `MOD(MOD(FARM_FINGERPRINT(key text), @count) +
//!   @count, @count) = @shard`, computed on the rows of the commit-timestamp index (every
//!   secondary index carries the primary key), so only the shard's rows are looked up in the
//!   table. FARM_FINGERPRINT never changes for an input, so a key stays in its shard.

use google_cloud_spanner::types;
use google_cloud_spanner::value::{Type, Value as SpValue};
use ledgerhost_core::source::Shard;
use ledgerhost_core::{ColumnType, PortError, PortResult, TableSchema};

use super::error::BACKEND;
use super::names::{ident, quote};

/// A query parameter: name, value, type.
pub(super) type Param = (String, SpValue, Type);

/// The index a poll of a table sharded by `shard_column` reads through:
/// `CREATE INDEX <table>ByShard ON <table> (<shard column>, <commit-ts column>)`. Spanner appends the
/// primary key to every secondary index's key, so the rows of one shard are in (commit
/// timestamp, primary key) order, the order of the poll's keyset pages. A primary key with
/// a descending column is listed explicitly, ascending, so that order still holds.
pub fn shard_index_ddl(
    table: &str,
    shard_column: &str,
    commit_ts_column: &str,
    descending_key: &[String],
) -> String {
    let mut columns = vec![quote(shard_column), quote(commit_ts_column)];
    columns.extend(descending_key.iter().map(|k| quote(k)));
    format!(
        "CREATE INDEX {} ON {} ({})",
        quote(&format!("{table}ByShard")),
        quote(table),
        columns.join(", ")
    )
}

/// The condition that keeps `shard`'s rows of `table` (see [`Shard`]) with its parameters
/// (`@shard`, `@count`), `None` for the whole table. Identifiers are validated; values are
/// parameters only.
pub(super) fn shard_condition(
    table: &TableSchema,
    shard: &Shard,
) -> PortResult<Option<(String, Vec<Param>)>> {
    if shard.is_whole() {
        return Ok(None);
    }
    if shard.index >= shard.count {
        return Err(PortError::invalid(
            BACKEND,
            format!(
                "table `{}`: shard {} of {} does not exist",
                table.name, shard.index, shard.count
            ),
        ));
    }
    let count = (
        "count".to_string(),
        SpValue::from(i64::from(shard.count)),
        types::int64(),
    );
    let index = (
        "shard".to_string(),
        SpValue::from(i64::from(shard.index)),
        types::int64(),
    );
    Ok(Some(match &shard.column {
        // Shard 0 also takes every value no other shard reads (NULL, negative, too big):
        // nothing goes unpolled.
        Some(column) if shard.index == 0 => {
            let c = ident(column)?;
            (
                format!("({c} IS NULL OR {c} < 1 OR {c} >= @count)"),
                vec![count],
            )
        }
        Some(column) => (format!("{} = @shard", ident(column)?), vec![index]),
        None => {
            // MOD takes the sign of its dividend and FARM_FINGERPRINT is negative for half
            // the keys, so the remainder is made non-negative before it is compared.
            // FARM_FINGERPRINT: "The output of this function for a particular input never
            // changes" (https://cloud.google.com/spanner/docs/reference/standard-sql/hash_functions#farm_fingerprint);
            // MOD: https://cloud.google.com/spanner/docs/reference/standard-sql/mathematical_functions#mod
            (
                format!(
                    "MOD(MOD(FARM_FINGERPRINT({}), @count) + @count, @count) = @shard",
                    key_text(table)?
                ),
                vec![count, index],
            )
        }
    }))
}

/// Separates the key's parts in the hashed text (a unit separator, unlikely in keys; two
/// keys whose texts collide only land in the same shard, which is harmless).
const SEPARATOR: &str = "'\\x1f'";

/// The primary key of `table` as one STRING: each column as text (`IFNULL(.., '')`, so a
/// NULL part never makes the hash NULL and the row unpolled), joined by [`SEPARATOR`].
pub(super) fn key_text(table: &TableSchema) -> PortResult<String> {
    let mut parts = Vec::with_capacity(table.primary_key.len());
    for k in &table.primary_key {
        let column = table.columns.iter().find(|c| &c.name == k).ok_or_else(|| {
            PortError::invalid(
                BACKEND,
                format!(
                    "table `{}`: key column `{k}` is not in the schema",
                    table.name
                ),
            )
        })?;
        let q = ident(k)?;
        let text = match column.ty {
            ColumnType::String => q,
            ColumnType::Bytes => format!("TO_BASE64({q})"),
            ColumnType::Bool
            | ColumnType::Int64
            | ColumnType::Float32
            | ColumnType::Float64
            | ColumnType::Numeric
            | ColumnType::Date
            | ColumnType::Timestamp => format!("CAST({q} AS STRING)"),
            // Spanner allows neither in a primary key.
            ColumnType::Json | ColumnType::Array(_) => {
                return Err(PortError::invalid(
                    BACKEND,
                    format!(
                        "table `{}`: key column `{k}` is {:?}, which cannot be hashed into shards; \
                         set a shard-column instead",
                        table.name, column.ty
                    ),
                ));
            }
        };
        parts.push(format!("IFNULL({text}, '')"));
    }
    if parts.is_empty() {
        return Err(PortError::invalid(
            BACKEND,
            format!("table `{}` has no primary key to shard by", table.name),
        ));
    }
    Ok(format!(
        "CONCAT({})",
        parts.join(&format!(", {SEPARATOR}, "))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerhost_core::Column;

    fn table() -> TableSchema {
        TableSchema {
            name: "orders".into(),
            columns: vec![
                Column::new("region", ColumnType::String, false),
                Column::new("id", ColumnType::Int64, false),
                Column::new("blob", ColumnType::Bytes, true),
                Column::new("shard", ColumnType::Int64, true),
                Column::new("commit_ts", ColumnType::Timestamp, false),
            ],
            primary_key: vec!["region".into(), "id".into(), "blob".into()],
            commit_ts_column: "commit_ts".into(),
            deleted_column: None,
        }
    }

    fn names(params: &[Param]) -> Vec<&str> {
        params.iter().map(|(n, _, _)| n.as_str()).collect()
    }

    #[test]
    fn the_whole_table_has_no_condition() {
        assert!(shard_condition(&table(), &Shard::WHOLE).unwrap().is_none());
    }

    #[test]
    fn shard_zero_of_a_column_takes_every_value_no_other_shard_reads() {
        let sharding = ledgerhost_core::source::Sharding {
            count: 3,
            column: Some("shard".into()),
        };
        let (sql, params) = shard_condition(&table(), &sharding.shard(0))
            .unwrap()
            .unwrap();
        assert_eq!(sql, "(`shard` IS NULL OR `shard` < 1 OR `shard` >= @count)");
        assert_eq!(names(&params), ["count"]);
        let (sql, params) = shard_condition(&table(), &sharding.shard(2))
            .unwrap()
            .unwrap();
        assert_eq!(sql, "`shard` = @shard");
        assert_eq!(names(&params), ["shard"]);
        assert!(shard_condition(&table(), &sharding.shard(3)).is_err());
    }

    #[test]
    fn the_key_hash_reads_every_key_part_as_text_and_never_null() {
        let sharding = ledgerhost_core::source::Sharding {
            count: 4,
            column: None,
        };
        let (sql, params) = shard_condition(&table(), &sharding.shard(1))
            .unwrap()
            .unwrap();
        assert_eq!(
            sql,
            "MOD(MOD(FARM_FINGERPRINT(CONCAT(IFNULL(`region`, ''), '\\x1f', \
             IFNULL(CAST(`id` AS STRING), ''), '\\x1f', IFNULL(TO_BASE64(`blob`), ''))), @count) \
             + @count, @count) = @shard"
        );
        assert_eq!(names(&params), ["count", "shard"]);
    }

    #[test]
    fn a_bad_shard_column_name_is_refused() {
        let sharding = ledgerhost_core::source::Sharding {
            count: 2,
            column: Some("x`; --".into()),
        };
        assert!(shard_condition(&table(), &sharding.shard(1)).is_err());
    }

    #[test]
    fn the_shard_index_ddl_lists_a_descending_key() {
        assert_eq!(
            shard_index_ddl("orders", "shard", "commit_ts", &[]),
            "CREATE INDEX `ordersByShard` ON `orders` (`shard`, `commit_ts`)"
        );
        assert_eq!(
            shard_index_ddl("orders", "shard", "commit_ts", &["id".into()]),
            "CREATE INDEX `ordersByShard` ON `orders` (`shard`, `commit_ts`, `id`)"
        );
    }
}
