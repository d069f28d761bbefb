//! Why a call into a plugin failed.

use std::time::Duration;

use ledgerhost_manifest::World;

/// Why a call into a plugin failed. The instance is rebuilt before the next call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The plugin trapped (panic, unreachable, bad memory access).
    #[error("plugin `{plugin}` trapped: {message}")]
    Trap {
        /// Name of the plugin.
        plugin: String,
        /// What went wrong, as reported by wasmtime or the plugin.
        message: String,
    },
    /// The call ran past the plugin's deadline and was interrupted.
    #[error("plugin `{plugin}` ran past its deadline of {deadline:?} (limits.deadline-ms)")]
    Deadline {
        /// Name of the plugin.
        plugin: String,
        /// The deadline that was exceeded (limits.deadline-ms).
        deadline: Duration,
    },
    /// The plugin tried to grow its memory past its limit.
    #[error("plugin `{plugin}` exceeded its memory limit of {limit_mb} MiB (limits.memory-mb)")]
    OutOfMemory {
        /// Name of the plugin.
        plugin: String,
        /// The memory limit, in MiB (limits.memory-mb).
        limit_mb: u64,
    },
    /// The plugin answered a batch with the wrong number of dispositions.
    #[error("plugin `{plugin}` returned {got} dispositions for {expected} events")]
    WrongDispositionCount {
        /// Name of the plugin.
        plugin: String,
        /// Number of events in the batch.
        expected: usize,
        /// Number of dispositions the plugin returned.
        got: usize,
    },
    /// The plugin returned an error for the whole call.
    #[error("plugin `{plugin}` reported a failure: {message}")]
    Failed {
        /// Name of the plugin.
        plugin: String,
        /// The error text the plugin returned.
        message: String,
    },
    /// The plugin was called through a world it does not implement.
    #[error("plugin `{plugin}` is not a {world:?} plugin")]
    WrongWorld {
        /// Name of the plugin.
        plugin: String,
        /// The world the plugin actually implements.
        world: World,
    },
    /// A fresh instance of the plugin could not be built.
    #[error("plugin `{plugin}` could not be instantiated: {message}")]
    Instantiate {
        /// Name of the plugin.
        plugin: String,
        /// What went wrong, as reported by wasmtime or the plugin.
        message: String,
    },
}
