//! Where the Spanner database is, and what to do with a table its poll would have to scan.

/// Name of the table holding poller leases, created on first use. (Spanner refuses table
/// names starting with `_`, so it is not `_ledgerhost_leases` as on SQLite.)
pub const LEASE_TABLE: &str = "ledgerhost_leases";

/// Where the Spanner database is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpannerConfig {
    /// Google Cloud project id.
    pub project: String,
    /// Spanner instance id.
    pub instance: String,
    /// Database id.
    pub database: String,
    /// Data-plane (gRPC) endpoint override, e.g. `http://127.0.0.1:9010`. A plaintext
    /// `http://` endpoint implies anonymous credentials. When `None`, `SPANNER_EMULATOR_HOST`
    /// is honoured, else Google's endpoint with application default credentials.
    pub endpoint: Option<String>,
    /// Admin (REST) endpoint override, used for the lease table's DDL. When `None` the client
    /// derives it (for the emulator: gRPC port 9010 maps to REST port 9020).
    pub admin_endpoint: Option<String>,
    /// What to do with a table that has no index leading with its commit-timestamp column.
    pub missing_commit_index: MissingCommitIndex,
    /// How often a change stream's quiet partition reports progress (`heartbeat_milliseconds`
    /// of its queries); `None`: [`HEARTBEAT`](super::change_stream::HEARTBEAT). A change
    /// leaves only once every partition reported past it, so this bounds its wait.
    pub change_stream_heartbeat: Option<std::time::Duration>,
}

/// What [`Source::prepare_table`](ledgerhost_core::source::Source::prepare_table) does with a table whose commit-timestamp column leads no
/// index (so each poll's `commit_ts > @w AND commit_ts <= @r` would scan the whole table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingCommitIndex {
    /// Refuse the table, printing the `CREATE INDEX` to run (the default).
    #[default]
    Refuse,
    /// Log a warning with the `CREATE INDEX` and poll by full scans.
    Warn,
}

impl SpannerConfig {
    /// `projects/P/instances/I/databases/D`.
    pub fn database_path(&self) -> String {
        format!(
            "projects/{}/instances/{}/databases/{}",
            self.project, self.instance, self.database
        )
    }
}
