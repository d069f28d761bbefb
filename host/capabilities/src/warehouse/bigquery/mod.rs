//! The BigQuery warehouse: one table per source table in a configured dataset, created from
//! the events' Avro schema, plus an `_event_id` column.
//!
//! **Idempotent loads.** A batch is written by one `MERGE` statement keyed on `_event_id`,
//! whose source is the batch itself passed as one query parameter (an array of structs):
//! a matched id is updated in place, a new one inserted. One DML statement is atomic, so a
//! redelivered batch, or a batch retried after a lost reply, converges to the same rows, with
//! no duplicates and no window where a reader sees a partial batch. Streaming inserts
//! (`insertAll`) would duplicate on redelivery (their `insertId` dedup is best-effort for a
//! minute), and a shared staging table would race between host replicas, so neither is used.
//!
//! **Types.** Each column's ledgerhost type is kept in the field's description
//! (`ledgerhost:FLOAT32`, `ledgerhost:ARRAY<STRING>`), so `scan` returns the exact [`Value`]
//! variants that were loaded. BOOL, INT64, FLOAT64 (FLOAT32 too), NUMERIC, STRING, BYTES,
//! DATE, TIMESTAMP and JSON map to their BigQuery types; arrays are stored as JSON text in a
//! STRING column, because BigQuery's REPEATED fields cannot hold the NULL elements Spanner
//! arrays may have.
//!
//! The parts: this file (the client, table creation, loads and scans), `error`, `schema`
//! (names, field types, the type tag) and `values` (parameters and cells).

use std::sync::Arc;

use async_trait::async_trait;
use gcp_bigquery_client::Client;
use gcp_bigquery_client::auth::Authenticator;
use gcp_bigquery_client::client_builder::ClientBuilder;
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::model::dataset::Dataset;
use gcp_bigquery_client::model::get_query_results_parameters::GetQueryResultsParameters;
use gcp_bigquery_client::model::query_parameter::QueryParameter;
use gcp_bigquery_client::model::query_parameter_type::QueryParameterType;
use gcp_bigquery_client::model::query_parameter_type_struct_types::QueryParameterTypeStructTypes;
use gcp_bigquery_client::model::query_parameter_value::QueryParameterValue;
use gcp_bigquery_client::model::query_request::QueryRequest;
use gcp_bigquery_client::model::query_response::QueryResponse;
use gcp_bigquery_client::model::table::Table;
use gcp_bigquery_client::model::table_field_schema::TableFieldSchema;
use gcp_bigquery_client::model::table_row::TableRow;
use gcp_bigquery_client::model::table_schema::TableSchema as BqSchema;
use ledgerhost_core::capabilities::{Warehouse, WarehouseRow};
use ledgerhost_core::{ColumnType, Field, PortError, PortResult, Value};
use ledgerhost_google::{Auth, AuthMode, BIGQUERY};
use tokio::sync::OnceCell;
use tracing::{debug, info};

mod error;
mod schema;
mod values;

use crate::warehouse::stored::check_table_name;
use error::{BACKEND, check_job, map_err, status};
use schema::{TAG, check_column_name, tagged_field};
use values::{from_param, param_type, param_value, parse_cell, sql_type, to_text};

/// Rows per MERGE statement: keeps one request well under BigQuery's request size limit.
const ROWS_PER_STATEMENT: usize = 500;

/// Settings of [`BigQueryWarehouse`].
#[derive(Debug, Clone)]
pub struct BigQueryConfig {
    /// Project holding the dataset (and running the query jobs).
    pub project: String,
    /// Dataset of the warehouse tables; created if missing.
    pub dataset: String,
    /// Base URL, e.g. `http://127.0.0.1:9050` (`/bigquery/v2` is appended); `None` reads
    /// `BIGQUERY_EMULATOR_HOST`, then uses Google's endpoint ([`ledgerhost_google`]'s rule).
    pub endpoint: Option<String>,
    /// Location of a dataset this backend creates (e.g. `EU`); `None` = BigQuery's default.
    pub location: Option<String>,
    /// How requests are authenticated.
    pub auth: AuthMode,
}

impl BigQueryConfig {
    /// Settings for `project` and `dataset`, endpoint and auth resolved automatically.
    pub fn new(project: impl Into<String>, dataset: impl Into<String>) -> Self {
        BigQueryConfig {
            project: project.into(),
            dataset: dataset.into(),
            endpoint: None,
            location: None,
            auth: AuthMode::Auto,
        }
    }
}

/// The client crate's view of [`Auth`]: it always sends a token, so an anonymous one is a
/// placeholder the emulator ignores.
#[derive(Clone)]
struct Token(Auth);

#[async_trait]
impl Authenticator for Token {
    async fn access_token(&self) -> Result<String, BQError> {
        match self.0.bearer().await {
            Ok(token) => Ok(token.unwrap_or_else(|| "emulator".to_string())),
            Err(e) => Err(BQError::InvalidApplicationDefaultCredentialsAuthenticator(
                std::io::Error::other(e),
            )),
        }
    }
}

/// A BigQuery warehouse; cheap to share behind an `Arc`.
pub struct BigQueryWarehouse {
    client: Client,
    project: String,
    dataset: String,
    location: Option<String>,
    dataset_ready: OnceCell<()>,
}

impl BigQueryWarehouse {
    /// Builds a client from `config` (no request is sent; [`Self::check`] probes).
    pub async fn connect(config: BigQueryConfig) -> PortResult<Self> {
        if config.project.is_empty() || config.dataset.is_empty() {
            return Err(PortError::invalid(
                BACKEND,
                "warehouse.project and warehouse.dataset must both be set".to_string(),
            ));
        }
        let endpoint = BIGQUERY.endpoint(config.endpoint.as_deref());
        let auth = Auth::new(&BIGQUERY, &endpoint, config.auth)
            .map_err(|e| PortError::unavailable(BACKEND, e))?;
        let anonymous = auth.is_anonymous();
        let client = ClientBuilder::new()
            .with_v2_base_url(format!("{}/bigquery/v2", endpoint.url))
            .build_from_authenticator(Arc::new(Token(auth)))
            .await
            .map_err(|e| {
                PortError::unavailable(BACKEND, format!("cannot build the BigQuery client: {e}"))
            })?;
        debug!(endpoint = %endpoint, anonymous, project = %config.project, dataset = %config.dataset, "bigquery warehouse configured");
        Ok(BigQueryWarehouse {
            client,
            project: config.project,
            dataset: config.dataset,
            location: config.location,
            dataset_ready: OnceCell::new(),
        })
    }

    /// Health probe: reads the dataset's metadata (a missing dataset is fine: it is created
    /// with the first table).
    pub async fn check(&self) -> PortResult<()> {
        match self
            .client
            .dataset()
            .get(&self.project, &self.dataset)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status(&e) == Some(404) => Ok(()),
            Err(e) => Err(map_err(
                &format!("health probe of dataset `{}`", self.dataset),
                e,
            )),
        }
    }

    async fn ensure_dataset(&self) -> PortResult<()> {
        self.dataset_ready
            .get_or_try_init(|| async {
                let what = format!("dataset `{}.{}`", self.project, self.dataset);
                match self.client.dataset().get(&self.project, &self.dataset).await {
                    Ok(_) => return Ok(()),
                    Err(e) if status(&e) == Some(404) => {}
                    Err(e) => return Err(map_err(&what, e)),
                }
                let mut ds = Dataset::new(&self.project, &self.dataset);
                if let Some(l) = &self.location {
                    ds = ds.location(l);
                }
                match self.client.dataset().create(ds).await {
                    Ok(_) => {
                        info!(project = %self.project, dataset = %self.dataset, "created bigquery dataset");
                        Ok(())
                    }
                    Err(e) if status(&e) == Some(409) => Ok(()),
                    Err(e) => Err(map_err(&format!("create {what}"), e)),
                }
            })
            .await
            .map(|_| ())
    }

    fn full_name(&self, table: &str) -> String {
        format!("`{}.{}.{}`", self.project, self.dataset, table)
    }

    /// The table's columns with their ledgerhost types; `None` if the table is missing.
    async fn columns(&self, table: &str) -> PortResult<Option<Vec<(String, ColumnType)>>> {
        let t = match self
            .client
            .table()
            .get(&self.project, &self.dataset, table, None)
            .await
        {
            Ok(t) => t,
            Err(e) if status(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(map_err(&format!("read table `{table}`"), e)),
        };
        let mut out = Vec::new();
        for f in t.schema.fields.unwrap_or_default() {
            if f.name == "_event_id" {
                continue;
            }
            let ty = f
                .description
                .as_deref()
                .and_then(|d| d.strip_prefix(TAG))
                .and_then(ColumnType::from_name)
                .ok_or_else(|| PortError::Corrupt {
                    backend: BACKEND,
                    message: format!(
                        "table `{table}` column `{}` has no ledgerhost type in its description; \
                         the table was not created by ledgerhost: drop it or use another dataset",
                        f.name
                    ),
                })?;
            out.push((f.name, ty));
        }
        Ok(Some(out))
    }

    /// Runs a statement and waits for it; returns the first page and the job id.
    async fn query(&self, what: &str, request: QueryRequest) -> PortResult<QueryResponse> {
        let mut resp = self
            .client
            .job()
            .query(&self.project, request)
            .await
            .map_err(|e| map_err(what, e))?;
        check_job(what, resp.errors.as_ref())?;
        while !resp.job_complete.unwrap_or(false) {
            let job_id = resp
                .job_reference
                .as_ref()
                .and_then(|j| j.job_id.clone())
                .ok_or_else(|| {
                    PortError::unavailable(BACKEND, format!("{what}: incomplete job without an id"))
                })?;
            resp = self
                .client
                .job()
                .get_query_results(
                    &self.project,
                    &job_id,
                    GetQueryResultsParameters {
                        timeout_ms: Some(10_000),
                        location: self.location.clone(),
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| map_err(what, e))?
                .into();
            check_job(what, resp.errors.as_ref())?;
        }
        Ok(resp)
    }

    /// Every row of a query's result, following page tokens.
    async fn all_rows(&self, what: &str, request: QueryRequest) -> PortResult<Vec<TableRow>> {
        let first = self.query(what, request).await?;
        let mut rows = first.rows.unwrap_or_default();
        let job_id = first.job_reference.and_then(|j| j.job_id);
        let mut token = first.page_token;
        while let (Some(t), Some(job)) = (token.take(), job_id.as_deref()) {
            let page = self
                .client
                .job()
                .get_query_results(
                    &self.project,
                    job,
                    GetQueryResultsParameters {
                        page_token: Some(t),
                        location: self.location.clone(),
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| map_err(what, e))?;
            check_job(what, page.errors.as_ref())?;
            rows.extend(page.rows.unwrap_or_default());
            token = page.page_token;
        }
        Ok(rows)
    }

    async fn merge(
        &self,
        table: &str,
        columns: &[(String, ColumnType)],
        rows: &[WarehouseRow],
    ) -> PortResult<()> {
        let what = format!("load into table `{table}`");
        let struct_types: Vec<QueryParameterTypeStructTypes> =
            std::iter::once(("_event_id", "STRING"))
                .chain(columns.iter().map(|(n, t)| (n.as_str(), param_type(t))))
                .map(|(n, t)| QueryParameterTypeStructTypes {
                    description: None,
                    name: Some(n.to_string()),
                    r#type: Some(QueryParameterType {
                        r#type: t.to_string(),
                        array_type: None,
                        struct_types: None,
                    }),
                })
                .collect();
        let mut values = Vec::with_capacity(rows.len());
        for row in rows {
            let mut fields = std::collections::HashMap::new();
            fields.insert(
                "_event_id".to_string(),
                QueryParameterValue {
                    value: Some(row.event_id.clone()),
                    ..Default::default()
                },
            );
            for (name, ty) in columns {
                let v = row
                    .fields
                    .iter()
                    .find(|f| *f.name == **name)
                    .map_or(&Value::Null, |f| &f.value);
                fields.insert(
                    name.clone(),
                    QueryParameterValue {
                        value: param_value(table, name, ty, v)?,
                        ..Default::default()
                    },
                );
            }
            values.push(QueryParameterValue {
                struct_values: Some(fields),
                ..Default::default()
            });
        }
        let select: Vec<String> = std::iter::once("r._event_id AS _event_id".to_string())
            .chain(
                columns
                    .iter()
                    .map(|(n, t)| format!("{} AS `{n}`", from_param(n, t))),
            )
            .collect();
        let names: Vec<String> = std::iter::once("_event_id".to_string())
            .chain(columns.iter().map(|(n, _)| format!("`{n}`")))
            .collect();
        let sources: Vec<String> = std::iter::once("S._event_id".to_string())
            .chain(columns.iter().map(|(n, _)| format!("S.`{n}`")))
            .collect();
        let updates: Vec<String> = columns
            .iter()
            .map(|(n, _)| format!("`{n}` = S.`{n}`"))
            .collect();
        let sql = format!(
            "MERGE {target} T USING (SELECT {select} FROM UNNEST(@rows) AS r) S \
             ON T._event_id = S._event_id {matched} \
             WHEN NOT MATCHED THEN INSERT ({names}) VALUES ({sources})",
            target = self.full_name(table),
            select = select.join(", "),
            matched = if updates.is_empty() {
                String::new()
            } else {
                format!("WHEN MATCHED THEN UPDATE SET {}", updates.join(", "))
            },
            names = names.join(", "),
            sources = sources.join(", "),
        );
        let mut request = QueryRequest::new(sql);
        request.parameter_mode = Some("NAMED".to_string());
        request.location = self.location.clone();
        request.query_parameters = Some(vec![QueryParameter {
            name: Some("rows".to_string()),
            parameter_type: Some(QueryParameterType {
                r#type: "ARRAY".to_string(),
                array_type: Some(Box::new(QueryParameterType {
                    r#type: "STRUCT".to_string(),
                    array_type: None,
                    struct_types: Some(struct_types),
                })),
                struct_types: None,
            }),
            parameter_value: Some(QueryParameterValue {
                array_values: Some(values),
                ..Default::default()
            }),
        }]);
        let resp = self.query(&what, request).await?;
        debug!(table, rows = rows.len(), affected = ?resp.num_dml_affected_rows, "bigquery merge");
        Ok(())
    }
}

#[async_trait]
impl Warehouse for BigQueryWarehouse {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn ensure_table(&self, table: &str, avro_schema: &str) -> PortResult<()> {
        check_table_name(BACKEND, table)?;
        let schema = ledgerhost_avro::table_schema_from_json(avro_schema)
            .map_err(|e| PortError::invalid(BACKEND, format!("table `{table}`: {e}")))?;
        for c in &schema.columns {
            check_column_name(table, &c.name)?;
        }
        self.ensure_dataset().await?;
        let existing = match self.columns(table).await? {
            Some(cols) => cols,
            None => {
                let mut id = TableFieldSchema::string("_event_id");
                id.mode = Some("REQUIRED".to_string());
                let fields: Vec<TableFieldSchema> = std::iter::once(id)
                    .chain(schema.columns.iter().map(|c| tagged_field(&c.name, &c.ty)))
                    .collect();
                let t = Table::new(&self.project, &self.dataset, table, BqSchema::new(fields));
                match self.client.table().create(t).await {
                    Ok(_) => {
                        info!(
                            table,
                            columns = schema.columns.len(),
                            "created bigquery table"
                        );
                        return Ok(());
                    }
                    // Another replica created it meanwhile: fall through to the column check.
                    Err(e) if status(&e) == Some(409) => {}
                    Err(e) => return Err(map_err(&format!("create table `{table}`"), e)),
                }
                self.columns(table).await?.unwrap_or_default()
            }
        };
        let mut missing = Vec::new();
        for c in &schema.columns {
            match existing.iter().find(|(n, _)| *n == c.name) {
                Some((_, ty)) if *ty != c.ty => {
                    return Err(PortError::invalid(
                        BACKEND,
                        format!(
                            "table `{table}` column `{}` is {} in the warehouse but {} in the event \
                         schema",
                            c.name,
                            ty.name(),
                            c.ty.name()
                        ),
                    ));
                }
                Some(_) => {}
                None => missing.push(c),
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        // Adding NULLABLE columns is the schema change BigQuery allows in place. DDL, then a
        // metadata patch with the same field list: on BigQuery the patch only restates what
        // the DDL did, while the emulator applies DDL to storage and patches to metadata only.
        let adds: Vec<String> = missing
            .iter()
            .map(|c| {
                format!(
                    "ADD COLUMN IF NOT EXISTS `{}` {} OPTIONS(description=\"{TAG}{}\")",
                    c.name,
                    sql_type(&c.ty),
                    c.ty.name()
                )
            })
            .collect();
        let sql = format!("ALTER TABLE {} {}", self.full_name(table), adds.join(", "));
        self.query(
            &format!("add columns to table `{table}`"),
            QueryRequest::new(sql),
        )
        .await?;
        let mut id = TableFieldSchema::string("_event_id");
        id.mode = Some("REQUIRED".to_string());
        let fields: Vec<TableFieldSchema> = std::iter::once(id)
            .chain(existing.iter().map(|(n, t)| tagged_field(n, t)))
            .chain(missing.iter().map(|c| tagged_field(&c.name, &c.ty)))
            .collect();
        let t = Table::new(&self.project, &self.dataset, table, BqSchema::new(fields));
        self.client
            .table()
            .patch(&self.project, &self.dataset, table, t)
            .await
            .map_err(|e| map_err(&format!("describe new columns of table `{table}`"), e))?;
        info!(table, added = missing.len(), "added bigquery columns");
        Ok(())
    }

    async fn load(&self, table: &str, rows: Vec<WarehouseRow>) -> PortResult<()> {
        check_table_name(BACKEND, table)?;
        if rows.is_empty() {
            return Ok(());
        }
        let columns = self
            .columns(table)
            .await?
            .ok_or_else(|| PortError::NotFound {
                backend: BACKEND,
                what: format!("table `{table}` (call ensure-table first)"),
            })?;
        for row in &rows {
            for f in &row.fields {
                if !columns.iter().any(|(n, _)| **n == *f.name) {
                    return Err(PortError::invalid(
                        BACKEND,
                        format!(
                            "table `{table}` has no column `{}` (call ensure-table with the new schema)",
                            f.name
                        ),
                    ));
                }
            }
        }
        // MERGE refuses two source rows for one target row: the last delivery of an id wins,
        // as it would across separate loads.
        let mut latest: std::collections::BTreeMap<&str, &WarehouseRow> = Default::default();
        for row in &rows {
            latest.insert(row.event_id.as_str(), row);
        }
        let unique: Vec<WarehouseRow> = latest.into_values().cloned().collect();
        for chunk in unique.chunks(ROWS_PER_STATEMENT) {
            self.merge(table, &columns, chunk).await?;
        }
        Ok(())
    }

    async fn count(&self, table: &str) -> PortResult<u64> {
        check_table_name(BACKEND, table)?;
        if self.columns(table).await?.is_none() {
            return Ok(0);
        }
        let what = format!("count table `{table}`");
        let rows = self
            .all_rows(
                &what,
                QueryRequest::new(format!("SELECT COUNT(*) FROM {}", self.full_name(table))),
            )
            .await?;
        let cell = rows
            .first()
            .and_then(|r| r.columns.as_ref())
            .and_then(|c| c.first())
            .and_then(|c| c.value.as_ref())
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse::<u64>().ok());
        cell.ok_or_else(|| PortError::Corrupt {
            backend: BACKEND,
            message: format!("{what}: no count in the answer"),
        })
    }

    async fn scan(&self, table: &str) -> PortResult<Vec<WarehouseRow>> {
        check_table_name(BACKEND, table)?;
        let Some(columns) = self.columns(table).await? else {
            return Ok(Vec::new());
        };
        let what = format!("scan table `{table}`");
        let select: Vec<String> = std::iter::once("_event_id".to_string())
            .chain(
                columns
                    .iter()
                    .map(|(n, t)| format!("{} AS `{n}`", to_text(n, t))),
            )
            .collect();
        let sql = format!(
            "SELECT {} FROM {} ORDER BY _event_id",
            select.join(", "),
            self.full_name(table)
        );
        let rows = self.all_rows(&what, QueryRequest::new(sql)).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let cells = r.columns.unwrap_or_default();
            let event_id = cells
                .first()
                .and_then(|c| c.value.as_ref())
                .and_then(|v| v.as_str())
                .ok_or_else(|| PortError::Corrupt {
                    backend: BACKEND,
                    message: format!("{what}: a row without an event id"),
                })?
                .to_string();
            let mut fields = Vec::with_capacity(columns.len());
            for (i, (name, ty)) in columns.iter().enumerate() {
                let cell = cells.get(i + 1).and_then(|c| c.value.as_ref());
                fields.push(Field {
                    name: name.as_str().into(),
                    value: parse_cell(table, name, ty, cell)?,
                });
            }
            out.push(WarehouseRow { event_id, fields });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
