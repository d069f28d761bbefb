//! Cloud Spanner as a restore target ([`TableWriter`]): tables created with the
//! commit-timestamp column (`allow_commit_timestamp=true`) and its poll index, so the
//! restored database can be captured again; rows written as blind `INSERT_OR_UPDATE` and
//! `DELETE` mutations, one commit per batch, within Spanner's mutation limit.

use async_trait::async_trait;
use google_cloud_spanner::key::{Key, KeySet};
use google_cloud_spanner::mutation::Mutation;
use google_cloud_spanner::statement::Statement;
use ledgerhost_core::source::{TableSpec, TransactionKind, TransactionPurpose};
use ledgerhost_core::target::{
    PreparedTable, TableWriter, WriteBatch, check_table_matches, own_commit_ts_column,
};
use ledgerhost_core::{ColumnType, PortError, PortResult, TableSchema};
use tracing::info;

use super::SpannerSource;
use super::config::SpannerConfig;
use super::error::{BACKEND, map_err};
use super::names::ident;
use super::schema::{query_rows, read_schema, read_table};
use super::sql::commit_index_ddl;
use super::values::to_param;

/// Mutations one Spanner commit may carry, secondary-index entries included: "Mutations per
/// commit (including indexes): 80,000" (<https://cloud.google.com/spanner/quotas>). An insert
/// or update counts once per column it writes, a delete once per row, and each secondary
/// index adds the columns it keeps.
pub const MAX_MUTATIONS_PER_COMMIT: usize = 80_000;

/// How many rows of a table fit one commit: each row costs its columns plus, per secondary
/// index, that index's columns and the primary key (which every index entry carries).
pub fn rows_per_commit(
    columns: usize,
    key_columns: usize,
    indexes: usize,
    index_columns: usize,
) -> usize {
    let per_row = columns + index_columns + indexes * key_columns;
    (MAX_MUTATIONS_PER_COMMIT / per_row.max(1)).max(1)
}

/// A Spanner database rows are restored into.
pub struct SpannerTarget {
    db: SpannerSource,
}

impl SpannerTarget {
    /// Connects to the database (which must exist; no table is touched yet).
    pub async fn connect(config: SpannerConfig) -> PortResult<Self> {
        let db = SpannerSource::connect(config).await?;
        db.check().await?;
        Ok(SpannerTarget { db })
    }

    /// The secondary indexes of `table`: how many, and how many columns they list.
    async fn index_shape(&self, table: &str) -> PortResult<(usize, usize)> {
        self.db
            .counters
            .record(TransactionKind::ReadOnly, TransactionPurpose::Schema);
        let client = self.db.client.clone();
        let (_, rows) = query_rows("reading INFORMATION_SCHEMA.INDEX_COLUMNS", || async move {
            client
                .single_use()
                .build()
                .execute_query(
                    Statement::builder(
                        "SELECT INDEX_NAME FROM INFORMATION_SCHEMA.INDEX_COLUMNS \
                         WHERE TABLE_SCHEMA = '' AND TABLE_NAME = @t AND INDEX_TYPE = 'INDEX'",
                    )
                    .add_param("t", table.to_string())
                    .build(),
                )
                .await
        })
        .await?;
        let names: std::collections::BTreeSet<String> = rows
            .iter()
            .filter_map(|r| r.first().and_then(|v| v.as_str()).map(str::to_string))
            .collect();
        Ok((names.len(), rows.len()))
    }
}

/// The GoogleSQL type of a column.
fn ddl_type(ty: &ColumnType) -> String {
    match ty {
        ColumnType::Bool => "BOOL".into(),
        ColumnType::Int64 => "INT64".into(),
        ColumnType::Float32 => "FLOAT32".into(),
        ColumnType::Float64 => "FLOAT64".into(),
        ColumnType::Numeric => "NUMERIC".into(),
        ColumnType::String => "STRING(MAX)".into(),
        ColumnType::Bytes => "BYTES(MAX)".into(),
        ColumnType::Date => "DATE".into(),
        ColumnType::Timestamp => "TIMESTAMP".into(),
        ColumnType::Json => "JSON".into(),
        ColumnType::Array(e) => format!("ARRAY<{}>", ddl_type(e)),
    }
}

/// `CREATE TABLE` for `schema` and the index its poll reads through.
pub fn create_table_ddl(schema: &TableSchema) -> PortResult<Vec<String>> {
    let mut columns = Vec::with_capacity(schema.columns.len());
    for c in &schema.columns {
        let name = ident(&c.name)?;
        let not_null = if c.nullable { "" } else { " NOT NULL" };
        if c.name == schema.commit_ts_column {
            if c.ty != ColumnType::Timestamp {
                return Err(PortError::invalid(
                    BACKEND,
                    format!(
                        "table `{}`: commit-timestamp column `{}` is {:?} in the archive; \
                         Spanner's commit timestamps are TIMESTAMP. Restore into SQLite, or \
                         create the table yourself",
                        schema.name, c.name, c.ty
                    ),
                ));
            }
            columns.push(format!(
                "{name} TIMESTAMP{not_null} OPTIONS (allow_commit_timestamp=true)"
            ));
        } else {
            columns.push(format!("{name} {}{not_null}", ddl_type(&c.ty)));
        }
    }
    let keys = schema
        .primary_key
        .iter()
        .map(|k| ident(k))
        .collect::<PortResult<Vec<_>>>()?;
    let mut ddl = vec![format!(
        "CREATE TABLE {} ({}) PRIMARY KEY ({})",
        ident(&schema.name)?,
        columns.join(", "),
        keys.join(", ")
    )];
    // A table captured by change stream had no commit-timestamp column to poll by.
    if let Some(commit_ts) = own_commit_ts_column(schema) {
        ddl.push(commit_index_ddl(&schema.name, commit_ts, &[]));
    }
    Ok(ddl)
}

fn mutations(schema: &TableSchema, batch: WriteBatch) -> PortResult<Vec<Mutation>> {
    let bad = |column: &str, m: String| {
        PortError::invalid(
            BACKEND,
            format!("table `{}`, column `{column}`: {m}", schema.name),
        )
    };
    let column_type = |name: &str| -> PortResult<&ColumnType> {
        schema
            .columns
            .iter()
            .find(|c| c.name == name)
            .map(|c| &c.ty)
            .ok_or_else(|| bad(name, "not a column of the table".into()))
    };
    let mut out = Vec::with_capacity(batch.upserts.len() + 1);
    for row in batch.upserts {
        let mut m = Mutation::new_insert_or_update_builder(schema.name.clone());
        for f in row {
            let (value, _) =
                to_param(&f.value, column_type(&f.name)?).map_err(|e| bad(&f.name, e))?;
            m = m.set(&*f.name).to(value);
        }
        out.push(m.build());
    }
    if !batch.deletes.is_empty() {
        let mut keys = KeySet::builder();
        for key in batch.deletes {
            let values = key
                .iter()
                .zip(&schema.primary_key)
                .map(|(v, k)| {
                    to_param(v, column_type(k)?)
                        .map(|(v, _)| v)
                        .map_err(|e| bad(k, e))
                })
                .collect::<PortResult<Vec<_>>>()?;
            keys = keys.add_key(Key::new(values));
        }
        out.push(Mutation::delete(schema.name.clone(), keys.build()));
    }
    Ok(out)
}

#[async_trait]
impl TableWriter for SpannerTarget {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn ensure_table(&self, schema: &TableSchema) -> PortResult<PreparedTable> {
        let created = if self.db.table_exists(&schema.name).await? {
            let client = self.db.client.clone();
            let counters = self.db.counters.clone();
            let spec = TableSpec {
                name: schema.name.clone(),
                commit_ts_column: Some(schema.commit_ts_column.clone()),
                // Checked as a column below, so a missing one is named like any other.
                deleted_column: None,
                sharding: Default::default(),
            };
            let query = |stmt| {
                let client = client.clone();
                counters.record(TransactionKind::ReadOnly, TransactionPurpose::Schema);
                async move { client.single_use().build().execute_query(stmt).await }
            };
            let existing = match own_commit_ts_column(schema) {
                Some(_) => read_schema(&spec, query).await?,
                // Captured by change stream: the table has no commit-timestamp column.
                None => {
                    let table = read_table(&spec, query).await?;
                    TableSchema {
                        name: table.name,
                        columns: table.columns,
                        primary_key: table.primary_key,
                        commit_ts_column: schema.commit_ts_column.clone(),
                        deleted_column: None,
                    }
                }
            };
            check_table_matches(&existing, schema).map_err(|m| {
                PortError::invalid(BACKEND, format!("{}: {m}", self.db.config.database_path()))
            })?;
            false
        } else {
            let ddl = create_table_ddl(schema)?;
            self.db.update_ddl(ddl).await?;
            info!(table = %schema.name, database = %self.db.config.database_path(),
                  "created the table to restore into");
            true
        };
        let (indexes, index_columns) = self.index_shape(&schema.name).await?;
        Ok(PreparedTable {
            created,
            max_batch_rows: Some(rows_per_commit(
                schema.columns.len(),
                schema.primary_key.len(),
                indexes,
                index_columns,
            )),
        })
    }

    async fn write_batch(&self, schema: &TableSchema, batch: WriteBatch) -> PortResult<()> {
        let rows = batch.len();
        let mutations = mutations(schema, batch)?;
        let context = format!("writing {rows} restored rows of `{}`", schema.name);
        self.db
            .client
            .write_only_transaction()
            .build()
            .write(mutations)
            .await
            .map_err(|e| map_err(&context, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerhost_core::Column;

    #[test]
    fn a_commit_holds_as_many_rows_as_the_mutation_limit_allows() {
        // 10 columns and the commit-timestamp index (1 listed column + a 1-column key).
        assert_eq!(rows_per_commit(10, 1, 1, 1), 80_000 / 12);
        assert_eq!(rows_per_commit(3, 1, 0, 0), 80_000 / 3);
        assert_eq!(rows_per_commit(100_000, 1, 0, 0), 1, "never zero");
    }

    #[test]
    fn created_tables_carry_the_commit_timestamp_and_its_index() {
        let col = Column::new;
        let schema = TableSchema {
            name: "orders".into(),
            columns: vec![
                col("id", ColumnType::Int64, false),
                col(
                    "tags",
                    ColumnType::Array(Box::new(ColumnType::String)),
                    true,
                ),
                col("commit_ts", ColumnType::Timestamp, true),
            ],
            primary_key: vec!["id".into()],
            commit_ts_column: "commit_ts".into(),
            deleted_column: None,
        };
        let ddl = create_table_ddl(&schema).unwrap();
        assert_eq!(
            ddl[0],
            "CREATE TABLE `orders` (`id` INT64 NOT NULL, `tags` ARRAY<STRING(MAX)>, \
             `commit_ts` TIMESTAMP OPTIONS (allow_commit_timestamp=true)) PRIMARY KEY (`id`)"
        );
        assert!(
            ddl[1].starts_with("CREATE INDEX `orders_by_commit_ts`"),
            "{}",
            ddl[1]
        );
        let streamed = ledgerhost_core::target::restored_schema(TableSchema {
            columns: vec![
                col("id", ColumnType::Int64, false),
                col(
                    ledgerhost_core::change::virtual_columns::COMMIT_TS,
                    ColumnType::Timestamp,
                    false,
                ),
            ],
            commit_ts_column: ledgerhost_core::change::virtual_columns::COMMIT_TS.into(),
            ..schema.clone()
        });
        assert_eq!(
            create_table_ddl(&streamed).unwrap(),
            ["CREATE TABLE `orders` (`id` INT64 NOT NULL) PRIMARY KEY (`id`)"],
            "a table captured by change stream gets no commit-timestamp column or index"
        );
        let mut bad = schema.clone();
        bad.columns[2].ty = ColumnType::Int64;
        let e = create_table_ddl(&bad).unwrap_err().to_string();
        assert!(e.contains("`commit_ts` is Int64"), "{e}");
    }
}
