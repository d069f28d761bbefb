//! `[schedule]` and `[limits]`: when a scheduled plugin runs, and the memory and time one
//! instance may use.

use serde::Deserialize;

/// A scheduled plugin's period.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Schedule {
    /// Seconds between ticks.
    #[serde(default = "default_every_secs")]
    pub every_secs: u64,
}

fn default_every_secs() -> u64 {
    3600
}

/// Resource limits of one instance.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Limits {
    /// Linear memory cap.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    /// Wall-clock budget of one call (a batch, a tick, a request).
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
}

/// The largest memory a manifest may ask for.
pub const MAX_MEMORY_MB: u64 = 512;

fn default_memory_mb() -> u64 {
    64
}
fn default_deadline_ms() -> u64 {
    1000
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: default_memory_mb(),
            deadline_ms: default_deadline_ms(),
        }
    }
}
