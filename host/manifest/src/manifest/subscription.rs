//! `[subscription]`: what a consumer consumes (a table, tables or a topic), the events and
//! columns it selects, its batching, retries and instances.

use serde::Deserialize;

use crate::filter::Filter;

/// A consumer's subscription.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Subscription {
    /// A source table (its ledger topic); exactly one of `table`, `tables` and `topic`.
    #[serde(default)]
    pub table: Option<String>,
    /// Several source tables, or `["*"]` for every table of the host's `[[tables]]`: one
    /// ledger subscription per table behind the scenes ([`crate::names::subscription_name`]),
    /// all served by this one plugin. Resolved by [`Subscription::tables_in`].
    #[serde(default)]
    pub tables: Option<Vec<String>>,
    /// Any ledger topic (e.g. one a filter or the replayer publishes to).
    #[serde(default)]
    pub topic: Option<String>,
    /// Host-side filter expressions, ANDed (`amount >= 1000`, `status == 'paid'`), parsed
    /// when the manifest is read.
    #[serde(default)]
    pub filter: Filter,
    /// Most events per call.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Longest wait for a batch to fill.
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
    /// Deliveries of one event before it is dead-lettered.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First retry delay.
    #[serde(default = "default_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    /// Longest retry delay.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// The columns a 0.2 consumer reads: only these are sent, in this order (key columns
    /// too only when named; the event id identifies the row). Absent: every column, in
    /// table order. Checked against the table's schema ([`Subscription::check_columns`]).
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Whether a 0.2 consumer's events carry the raw Avro container.
    #[serde(default)]
    pub avro: bool,
    /// Whether a 0.2 consumer's events carry the ledger attributes.
    #[serde(default)]
    pub attributes: bool,
    /// Instances of the plugin serving this subscription at once (1..=[`MAX_INSTANCES`]).
    /// A batch's events are split among them by ordering key, so a key always goes to the
    /// same instance; each instance has its own `limits` (memory is per instance).
    #[serde(default = "default_instances")]
    pub instances: u32,
}

/// The `subscription.tables` entry that means every captured table.
pub const EVERY_TABLE: &str = "*";

impl Subscription {
    /// The source tables this subscription reads, resolved against the host's captured
    /// tables (`configured`, the config's `[[tables]]` in order): `table` alone, the
    /// `tables` listed, or every configured table for `["*"]`; empty for a `topic`. A table
    /// the host does not capture is refused, naming the key and the configured tables.
    pub fn tables_in<'a>(
        &self,
        configured: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Result<Vec<String>, String> {
        let (key, wanted): (&str, Vec<String>) = match (&self.table, &self.tables) {
            (Some(t), _) => ("table", vec![t.clone()]),
            (None, Some(list)) if list.iter().any(|t| t == EVERY_TABLE) => {
                return Ok(configured.into_iter().map(str::to_string).collect());
            }
            (None, Some(list)) => ("tables", list.clone()),
            (None, None) => return Ok(Vec::new()),
        };
        match wanted
            .iter()
            .find(|w| !configured.clone().into_iter().any(|c| c == w.as_str()))
        {
            None => Ok(wanted),
            Some(unknown) => {
                let known: Vec<&str> = configured.into_iter().collect();
                Err(format!(
                    "`subscription.{key}` names `{unknown}`, which this host does not capture; \
                     its [[tables]] are {} (add it to the host config, or fix the name)",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
            }
        }
    }

    /// Refuses a `subscription.columns` entry that `table` (with `columns`, in table order)
    /// does not have, naming it and the table's columns.
    pub fn check_columns<'a>(
        &self,
        table: &str,
        columns: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Result<(), String> {
        let Some(wanted) = &self.columns else {
            return Ok(());
        };
        match wanted
            .iter()
            .find(|w| !columns.clone().into_iter().any(|c| c == w.as_str()))
        {
            None => Ok(()),
            Some(unknown) => Err(format!(
                "`subscription.columns` names `{unknown}`, which table `{table}` does not have; \
                 its columns are {}",
                columns.into_iter().collect::<Vec<_>>().join(", ")
            )),
        }
    }
}

/// `subscription.tables`: at least one entry, no repeats, `"*"` only alone.
pub(super) fn check_table_list(tables: &[String]) -> Result<(), String> {
    if tables.is_empty() {
        return Err(
            "`subscription.tables` is empty; name at least one table, or `[\"*\"]` for every \
             captured table"
                .into(),
        );
    }
    if tables.len() > 1 && tables.iter().any(|t| t == EVERY_TABLE) {
        return Err(
            "`subscription.tables` mixes `\"*\"` with table names; `[\"*\"]` alone already means \
             every captured table"
                .into(),
        );
    }
    if let Some(t) = tables.iter().find(|t| t.is_empty()) {
        return Err(format!(
            "`subscription.tables` has an empty name ({t:?}); name a table"
        ));
    }
    if let Some(dup) = tables
        .iter()
        .enumerate()
        .find_map(|(i, t)| tables[..i].contains(t).then_some(t))
    {
        return Err(format!("`subscription.tables` names `{dup}` twice"));
    }
    Ok(())
}

/// The most instances a manifest may ask for (`subscription.instances`). Each costs its own
/// memory (up to `limits.memory-mb`) and a slot of the runtime's instance pool, which a hot
/// swap needs twice (the new version is built beside the old one).
pub const MAX_INSTANCES: u32 = 16;

fn default_batch_size() -> usize {
    64
}
fn default_max_wait_ms() -> u64 {
    100
}
fn default_max_attempts() -> u32 {
    5
}
fn default_backoff_initial_ms() -> u64 {
    100
}
fn default_backoff_max_ms() -> u64 {
    10_000
}
fn default_instances() -> u32 {
    1
}
