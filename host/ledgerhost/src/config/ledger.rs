//! `[ledger]`: the topic backend, topic names, ordering, ack deadline and retention.

use ledgerhost_core::ledger::ordering::Ordering;
use ledgerhost_google::{check_endpoint, missing_project};
use serde::Deserialize;

/// The ledger backend and its topic settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LedgerConfig {
    /// `embedded` (a durable log under `host.data-dir`) or `pubsub`.
    #[serde(default)]
    pub kind: LedgerKind,
    /// Embedded: how long messages are kept.
    #[serde(default = "default_retention_hours")]
    pub retention_hours: u64,
    /// Pub/Sub: the Google Cloud project (default: the environment variable
    /// `GOOGLE_CLOUD_PROJECT`).
    #[serde(default)]
    pub project: Option<String>,
    /// Pub/Sub: endpoint override (else `PUBSUB_EMULATOR_HOST`, else Google's).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Prefix of the per-table topic names.
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// Lease on a delivery before it is redelivered (extended while a batch runs).
    #[serde(default = "default_ack_deadline_ms")]
    pub ack_deadline_ms: u64,
    /// How an event's ordering key is derived from its primary key: `shards` (the default:
    /// hashed into `ordering-shards` keys per table), `key` (the primary key itself) or `none`.
    #[serde(default)]
    pub ordering: OrderingMode,
    /// With `ordering = "shards"`: ordering keys per table (1 to 1024).
    #[serde(default = "default_ordering_shards")]
    pub ordering_shards: u32,
}

/// `[ledger] ordering`: see [`ledgerhost_core::ledger::ordering::Ordering`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OrderingMode {
    /// Events are spread over `ordering-shards` ordering keys by primary-key hash.
    #[default]
    Shards,
    /// The ordering key is the row's primary key.
    Key,
    /// No ordering key: Pub/Sub may deliver in any order.
    None,
}

impl LedgerConfig {
    /// The ordering every publisher of events on this ledger uses.
    pub fn ordering(&self) -> Ordering {
        match self.ordering {
            OrderingMode::Shards => Ordering::Shards(self.ordering_shards),
            OrderingMode::Key => Ordering::Key,
            OrderingMode::None => Ordering::None,
        }
    }
}

fn default_ordering_shards() -> u32 {
    ledgerhost_core::ledger::ordering::DEFAULT_SHARDS
}

/// Which ledger backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LedgerKind {
    /// The embedded SQLite-backed ledger under the data directory.
    #[default]
    Embedded,
    /// Google Cloud Pub/Sub (or its emulator).
    Pubsub,
}

fn default_topic_prefix() -> String {
    "ledger-".into()
}
fn default_ack_deadline_ms() -> u64 {
    30_000
}
fn default_retention_hours() -> u64 {
    168
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            kind: LedgerKind::default(),
            retention_hours: default_retention_hours(),
            project: None,
            endpoint: None,
            topic_prefix: default_topic_prefix(),
            ack_deadline_ms: default_ack_deadline_ms(),
            ordering: OrderingMode::default(),
            ordering_shards: default_ordering_shards(),
        }
    }
}

impl LedgerConfig {
    /// Checks what serde cannot: `Err((key, problem))`.
    pub fn check(&self) -> Result<(), (String, String)> {
        if !(1..=1024).contains(&self.ordering_shards) {
            return Err((
                "ledger.ordering-shards".into(),
                format!("must be between 1 and 1024, not {}", self.ordering_shards),
            ));
        }
        if self.ack_deadline_ms < 1000 {
            return Err((
                "ledger.ack-deadline-ms".into(),
                "must be at least 1000 milliseconds".into(),
            ));
        }
        if self.kind == LedgerKind::Pubsub {
            if self.project.as_deref().is_none_or(|p| p.trim().is_empty()) {
                return Err((
                    "ledger.project".into(),
                    missing_project("ledger.kind = \"pubsub\""),
                ));
            }
            if let Some(ep) = &self.endpoint {
                check_endpoint(ep).map_err(|p| ("ledger.endpoint".to_string(), p))?;
            }
        }
        Ok(())
    }
}
