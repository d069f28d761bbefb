//! Schema changes the host makes (the lease table), applied through the admin API and
//! retried while the emulator refuses them for a concurrent transaction.

use std::time::Duration;

use google_cloud_lro::Poller;
use google_cloud_spanner::client::DatabaseAdmin;
use google_cloud_spanner::statement::Statement;
use ledgerhost_core::source::{TransactionKind, TransactionPurpose};
use ledgerhost_core::{PortError, PortResult};
use ledgerhost_google::SPANNER;
use tracing::debug;

use super::SpannerSource;
use super::error::{BACKEND, map_err};

impl SpannerSource {
    /// Applies DDL statements to the database and waits until they are done.
    pub async fn update_ddl(&self, statements: Vec<String>) -> PortResult<()> {
        let mut builder = self.spanner.database_admin_builder();
        // Only a configured admin endpoint: the emulator variable names the gRPC port, from
        // which the client derives the admin one.
        let admin = SPANNER.endpoint_with(self.config.admin_endpoint.as_deref(), None);
        if let Some(url) = admin.override_url() {
            builder = builder.with_endpoint(url.to_string());
        }
        if let Some(c) = admin.client_credentials() {
            builder = builder.with_credentials(c);
        }
        let admin: DatabaseAdmin = builder.build().await.map_err(|e| {
            PortError::unavailable(
                BACKEND,
                format!("cannot build the Spanner admin client: {e}"),
            )
        })?;
        debug!(database = %self.config.database_path(), ?statements, "applying DDL");
        let mut attempt = 0u64;
        loop {
            let result = admin
                .update_database_ddl()
                .set_database(self.config.database_path())
                .set_statements(statements.clone())
                .poller()
                .until_done()
                .await;
            match result {
                Ok(_) => return Ok(()),
                // The emulator refuses a schema change while any read-write transaction
                // runs (the application's, another replica's lease renewal).
                Err(e) if attempt < 30 && e.to_string().contains("concurrent schema change") => {
                    attempt += 1;
                    debug!(attempt, error = %e, "schema change refused for a concurrent transaction; retrying");
                    tokio::time::sleep(Duration::from_millis(50 * attempt.min(10))).await;
                }
                Err(e) => return Err(map_err(&format!("applying DDL {statements:?}"), e)),
            }
        }
    }

    pub(super) async fn table_exists(&self, table: &str) -> PortResult<bool> {
        let stmt = Statement::builder(
            "SELECT COUNT(*) FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_SCHEMA = '' AND TABLE_NAME = @t",
        )
        .add_param("t", table.to_string())
        .build();
        self.counters
            .record(TransactionKind::ReadOnly, TransactionPurpose::Schema);
        let rows = self
            .strong_rows("reading INFORMATION_SCHEMA.TABLES".into(), stmt)
            .await?;
        let n: i64 = match rows.iter().next() {
            Some(row) => row.get(0)?,
            None => 0,
        };
        Ok(n > 0)
    }
}
