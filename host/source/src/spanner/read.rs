//! Strong single-use reads of the host's own tables and the catalog (leases, the change
//! stream hand-over, whether a table exists): one statement, every row, each error naming
//! what was read.

use google_cloud_spanner::result::Row;
use google_cloud_spanner::statement::Statement;
use google_cloud_spanner::value::FromValue;
use ledgerhost_core::PortResult;

use super::SpannerSource;
use super::error::map_err;

/// The rows of one query, with `context` (what was read) for their errors.
pub(super) struct Rows {
    rows: Vec<Row>,
    context: String,
}

impl Rows {
    /// The rows, in the order the query returned them.
    pub(super) fn iter(&self) -> impl Iterator<Item = RowRef<'_>> {
        self.rows.iter().map(|row| RowRef {
            row,
            context: &self.context,
        })
    }
}

/// One row of [`Rows`].
pub(super) struct RowRef<'a> {
    row: &'a Row,
    context: &'a str,
}

impl RowRef<'_> {
    /// Column `i` as `T`.
    pub(super) fn get<T: FromValue>(&self, i: usize) -> PortResult<T> {
        self.row.get(i).map_err(|e| map_err(self.context, e))
    }
}

impl SpannerSource {
    /// Runs `stmt` as a strong single-use read and collects its rows; `context` says what
    /// is read (for errors).
    pub(super) async fn strong_rows(&self, context: String, stmt: Statement) -> PortResult<Rows> {
        let mut rs = self
            .client
            .single_use()
            .build()
            .execute_query(stmt)
            .await
            .map_err(|e| map_err(&context, e))?;
        let mut rows = Vec::new();
        while let Some(row) = rs.next().await {
            rows.push(row.map_err(|e| map_err(&context, e))?);
        }
        Ok(Rows { rows, context })
    }
}
