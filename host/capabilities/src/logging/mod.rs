//! The `wasi:logging/logging` capability: a plugin's log lines go to the host's log, tagged
//! with the plugin's name. Every plugin may log.

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use crate::capability::{
    Capability, CapabilityHost, Grant, InstanceState, PluginInfo, PluginState,
};
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
#[derive(Default)]
pub struct LoggingCapability;

/// The plugin an instance's log lines are tagged with.
struct Logger(Arc<str>);

impl<T: CapabilityHost> Capability<T> for LoggingCapability {
    fn name(&self) -> &'static str {
        "logging"
    }

    fn interfaces(&self) -> &'static [&'static str] {
        &["wasi:logging/logging"]
    }

    fn grant(&self) -> Option<Grant> {
        None
    }

    fn add_to_linker(&self, linker: &mut Linker<T>) -> wasmtime::Result<()> {
        logging::add_to_linker::<T, HasSelf<Logger>>(linker, |t| {
            t.capability_state().expect::<Logger>()
        })
    }

    fn configure(&self, plugin: &PluginInfo<'_>) -> Result<PluginState, String> {
        Ok(Box::new(Arc::<str>::from(plugin.name)))
    }

    fn prepare(&self, plugin: &PluginState) -> InstanceState {
        let name = plugin
            .downcast_ref::<Arc<str>>()
            .expect("logging: state from configure");
        Box::new(Logger(name.clone()))
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

impl<T: CapabilityHost> Setup<T> for LoggingCapability {
    const NAME: &'static str = "logging";
    type Config = NoSettings;

    fn build(_: NoSettings, _: &HostContext<'_>) -> anyhow::Result<Self> {
        Ok(LoggingCapability)
    }
}
