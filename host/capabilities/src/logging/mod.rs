//! The `wasi:logging/logging` capability: a plugin's log lines go to the host's log, tagged
//! with the plugin's name. Every plugin may log.

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use crate::capability::{Capability, Grant, PluginInfo, StateOf};
use crate::setup::{HostContext, NoSettings, Setup};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        inline: "package ledgerhost:host; world logging { import wasi:logging/logging; }",
        imports: { default: async },
    });
}
use bindings::wasi::logging::logging;

/// Plugin logs into the host's `tracing` output.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoggingCapability;

/// The plugin an instance's log lines are tagged with.
pub struct Logger(Arc<str>);

impl Capability for LoggingCapability {
    const NAME: &'static str = "logging";
    const INTERFACES: &'static [&'static str] = &["wasi:logging/logging"];
    const GRANT: Option<Grant> = None;

    type Configured = Arc<str>;
    type Instance = Logger;

    fn add_to_linker<T: StateOf<Self>>(&self, linker: &mut Linker<T>) -> wasmtime::Result<()> {
        logging::add_to_linker::<T, HasSelf<Logger>>(linker, |t| t.state())
    }

    fn configure(&self, plugin: &PluginInfo<'_>) -> Result<Arc<str>, String> {
        Ok(Arc::from(plugin.name))
    }

    fn prepare(&self, plugin: &Arc<str>) -> Logger {
        Logger(plugin.clone())
    }
}

impl logging::Host for Logger {
    async fn log(&mut self, level: logging::Level, context: String, message: String) {
        use logging::Level;
        let plugin = &*self.0;
        match level {
            Level::Trace => tracing::trace!(plugin, context, "{message}"),
            Level::Debug => tracing::debug!(plugin, context, "{message}"),
            Level::Info => tracing::info!(plugin, context, "{message}"),
            Level::Warn => tracing::warn!(plugin, context, "{message}"),
            Level::Error | Level::Critical => tracing::error!(plugin, context, "{message}"),
        }
    }
}

impl Setup for LoggingCapability {
    type Config = NoSettings;

    fn build(_: NoSettings, _: &HostContext<'_>) -> anyhow::Result<Self> {
        Ok(LoggingCapability)
    }
}
