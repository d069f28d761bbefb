//! The restore-target port: a database that rows are written back into (`ledgerhost
//! restore`). SQLite embedded, Spanner in production, beside the source backends.

use async_trait::async_trait;

use crate::change::virtual_columns;
use crate::{Field, PortResult, TableSchema, Value};

/// The table a restore writes, from the schema its archive was written with: without the
/// columns the host adds to a table captured by change stream (`ledgerhost_commit_ts`,
/// `ledgerhost_deleted`), which the source table never had.
pub fn restored_schema(mut archived: TableSchema) -> TableSchema {
    archived
        .columns
        .retain(|c| !virtual_columns::is_virtual(&c.name));
    if archived
        .deleted_column
        .as_deref()
        .is_some_and(virtual_columns::is_virtual)
    {
        archived.deleted_column = None;
    }
    archived
}

/// The target table's own commit-timestamp column: `None` for a table captured by change
/// stream whose commit timestamp travelled in the host's column ([`restored_schema`] left it
/// out), so the target creates and expects none.
pub fn own_commit_ts_column(schema: &TableSchema) -> Option<&str> {
    schema
        .column_index(&schema.commit_ts_column)
        .map(|_| schema.commit_ts_column.as_str())
}

/// What [`TableWriter::ensure_table`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreparedTable {
    /// True when the table was missing and has been created from the schema.
    pub created: bool,
    /// The most rows (upserts plus deletes) one [`TableWriter::write_batch`] may carry, when
    /// the backend bounds a commit (Spanner's mutations per commit); `None` when unbounded.
    pub max_batch_rows: Option<usize>,
}

/// One atomic write: rows to insert or overwrite, keys to delete.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    /// Whole rows by column name; a column the row does not name keeps the target's value
    /// (or its default on insert).
    pub upserts: Vec<Vec<Field>>,
    /// Primary keys (in key order) of rows to delete; deleting a missing row is not an error.
    pub deletes: Vec<Vec<Value>>,
}

impl WriteBatch {
    /// Rows in the batch, upserts plus deletes.
    pub fn len(&self) -> usize {
        self.upserts.len() + self.deletes.len()
    }

    /// True when the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A database restored rows are written into. Writes are idempotent: the same batch written
/// twice leaves the table as written once.
#[async_trait]
pub trait TableWriter: Send + Sync {
    /// Backend name for logs and errors ("sqlite", "spanner").
    fn backend(&self) -> &'static str;

    /// Creates `schema`'s table when missing (columns, types, nullability, primary key, and
    /// whatever the backend needs to capture it again); when it exists, checks every column
    /// of `schema` is there with the same type and key, and refuses naming the first column
    /// that differs.
    async fn ensure_table(&self, schema: &TableSchema) -> PortResult<PreparedTable>;

    /// Applies one batch in one transaction (upserts, then deletes).
    async fn write_batch(&self, schema: &TableSchema, batch: WriteBatch) -> PortResult<()>;
}

/// Checks that an existing target table (`existing`, as the backend read it) can hold the
/// rows of `wanted`: the same primary key, every wanted column present with the same type and
/// not stricter about NULL, and no extra NOT NULL column the rows could not fill. The error
/// names the first column that differs and what to do.
pub fn check_table_matches(existing: &TableSchema, wanted: &TableSchema) -> Result<(), String> {
    let t = &wanted.name;
    if existing.primary_key != wanted.primary_key {
        return Err(format!(
            "table `{t}` exists with primary key ({}), but the archive's is ({}); restore into \
             a new table or database",
            existing.primary_key.join(", "),
            wanted.primary_key.join(", ")
        ));
    }
    for c in &wanted.columns {
        let Some(e) = existing.columns.iter().find(|e| e.name == c.name) else {
            return Err(format!(
                "table `{t}` exists without column `{}` ({:?} in the archive); add the column \
                 or restore into a new table",
                c.name, c.ty
            ));
        };
        if e.ty != c.ty {
            return Err(format!(
                "table `{t}`, column `{}`: the existing table has {:?}, the archive {:?}",
                c.name, e.ty, c.ty
            ));
        }
        if c.nullable && !e.nullable && !wanted.primary_key.contains(&c.name) {
            return Err(format!(
                "table `{t}`, column `{}`: NOT NULL in the existing table, but the archive's \
                 rows may hold NULL in it",
                c.name
            ));
        }
    }
    if let Some(extra) = existing.columns.iter().find(|e| {
        !e.nullable
            && !wanted.columns.iter().any(|c| c.name == e.name)
            && !existing.primary_key.contains(&e.name)
    }) {
        return Err(format!(
            "table `{t}`, column `{}`: NOT NULL in the existing table but not in the archive, \
             so restored rows cannot fill it",
            extra.name
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Column, ColumnType};

    fn table(columns: &[(&str, ColumnType, bool)]) -> TableSchema {
        TableSchema {
            name: "orders".into(),
            columns: columns
                .iter()
                .map(|(n, ty, nullable)| Column {
                    name: (*n).into(),
                    ty: ty.clone(),
                    nullable: *nullable,
                })
                .collect(),
            primary_key: vec!["id".into()],
            commit_ts_column: "commit_ts".into(),
            deleted_column: None,
        }
    }

    #[test]
    fn a_restored_table_has_only_the_source_tables_own_columns() {
        let polled = table(&[
            ("id", ColumnType::Int64, false),
            ("commit_ts", ColumnType::Timestamp, true),
        ]);
        assert_eq!(restored_schema(polled.clone()), polled);
        assert_eq!(own_commit_ts_column(&polled), Some("commit_ts"));

        let mut streamed = table(&[
            ("id", ColumnType::Int64, false),
            ("amount", ColumnType::Int64, true),
            (virtual_columns::COMMIT_TS, ColumnType::Timestamp, false),
            (virtual_columns::DELETED, ColumnType::Bool, false),
        ]);
        streamed.commit_ts_column = virtual_columns::COMMIT_TS.into();
        streamed.deleted_column = Some(virtual_columns::DELETED.into());
        let restored = restored_schema(streamed);
        let names: Vec<&str> = restored.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "amount"]);
        assert_eq!(restored.deleted_column, None);
        assert_eq!(own_commit_ts_column(&restored), None);
    }

    #[test]
    fn a_table_that_differs_is_refused_naming_the_column() {
        let wanted = table(&[
            ("id", ColumnType::Int64, false),
            ("amount", ColumnType::Int64, true),
            ("commit_ts", ColumnType::Timestamp, true),
        ]);
        assert_eq!(check_table_matches(&wanted, &wanted), Ok(()));
        let mut wider = wanted.clone();
        wider.columns.push(Column {
            name: "note".into(),
            ty: ColumnType::String,
            nullable: true,
        });
        assert_eq!(check_table_matches(&wider, &wanted), Ok(()));
        let missing = table(&[
            ("id", ColumnType::Int64, false),
            ("commit_ts", ColumnType::Timestamp, true),
        ]);
        let e = check_table_matches(&missing, &wanted).unwrap_err();
        assert!(e.contains("without column `amount`"), "{e}");
        let retyped = table(&[
            ("id", ColumnType::Int64, false),
            ("amount", ColumnType::String, true),
            ("commit_ts", ColumnType::Timestamp, true),
        ]);
        let e = check_table_matches(&retyped, &wanted).unwrap_err();
        assert!(e.contains("column `amount`") && e.contains("String"), "{e}");
        let strict = table(&[
            ("id", ColumnType::Int64, false),
            ("amount", ColumnType::Int64, false),
            ("commit_ts", ColumnType::Timestamp, true),
        ]);
        let e = check_table_matches(&strict, &wanted).unwrap_err();
        assert!(e.contains("column `amount`: NOT NULL"), "{e}");
        let mut extra = wanted.clone();
        extra.columns.push(Column {
            name: "required".into(),
            ty: ColumnType::String,
            nullable: false,
        });
        let e = check_table_matches(&extra, &wanted).unwrap_err();
        assert!(e.contains("column `required`"), "{e}");
        let mut rekeyed = wanted.clone();
        rekeyed.primary_key = vec!["amount".into()];
        let e = check_table_matches(&rekeyed, &wanted).unwrap_err();
        assert!(e.contains("primary key (amount)"), "{e}");
    }
}
