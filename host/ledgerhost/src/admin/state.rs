//! What the admin handlers (and the plugins' HTTP routes, `crate::trigger`) read.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use ledgerhost_runtime::registry::Registry;

use crate::metrics::Metrics;

/// What the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    /// Counters of tables and plugins.
    pub metrics: Arc<Metrics>,
    /// The loaded plugins.
    pub registry: Arc<Registry>,
    /// Set once the host finished starting (tables prepared, plugins loaded); cleared when
    /// the drain starts, so a load balancer stops sending work.
    pub ready: Arc<AtomicBool>,
    /// Plugin files the registry refused, by plugin name: (file, reason).
    pub refused: Arc<std::sync::Mutex<std::collections::BTreeMap<String, (String, String)>>>,
    /// Reachability checks of the remote backends: ready also means all of them answer.
    pub probes: Arc<Vec<crate::backends::Probe>>,
    /// The source, for its transaction counters.
    pub source: Arc<dyn ledgerhost_core::source::Source>,
    /// Samples of the last minutes, for the page's plots.
    pub history: Arc<crate::history::History>,
}
