//! Outbound HTTP as a [`Capability`]: links `wasi:http/outgoing-handler` and
//! `wasi:http/types`, refuses a plugin importing them without `grants.http`, and gives each
//! instance an [`HttpState`] that checks every request against the grant.

use std::sync::Arc;

use wasmtime::component::Linker;
use wasmtime_wasi_http::WasiHttp;
use wasmtime_wasi_http::p2::bindings::{LinkOptions, http as wasi_http};

use super::config::{GRANT, HttpConfig, HttpLimits, INTERFACE};
use super::origin::check_entry;
use super::state::HttpState;
use crate::capability::{Capability, Grant, PluginInfo, StateOf};
use crate::setup::{HostContext, Setup};

/// The outbound HTTP capability, with the host's `[capabilities.http]` settings.
#[derive(Debug, Clone, Default)]
pub struct HttpCapability {
    config: HttpConfig,
}

impl HttpCapability {
    /// The capability under `config` (deadline and size cap of every request).
    pub fn new(config: HttpConfig) -> HttpCapability {
        HttpCapability { config }
    }
}

/// What one plugin version's instances share: its name, its origins and the limits.
pub struct HttpPlugin {
    name: Arc<str>,
    origins: Arc<[String]>,
    limits: HttpLimits,
}

impl Capability for HttpCapability {
    const NAME: &'static str = "http";
    const INTERFACES: &'static [&'static str] = &[INTERFACE];
    const GRANT: Option<Grant> = Some(Grant {
        key: GRANT,
        what: "origins",
    });

    type Configured = HttpPlugin;
    type Instance = HttpState;

    fn add_to_linker<T: StateOf<Self>>(&self, linker: &mut Linker<T>) -> wasmtime::Result<()> {
        fn view<T: StateOf<HttpCapability>>(t: &mut T) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
            let (state, table) = t.state_and_table();
            state.view(table)
        }
        wasi_http::outgoing_handler::add_to_linker::<T, WasiHttp>(linker, view::<T>)?;
        let options = LinkOptions::default();
        wasi_http::types::add_to_linker::<T, WasiHttp>(linker, &options.into(), view::<T>)
    }

    fn configure(&self, plugin: &PluginInfo<'_>) -> Result<HttpPlugin, String> {
        let origins = plugin.grant(GRANT);
        for entry in origins {
            check_entry(entry).map_err(|why| {
                format!(
                    "grants.http entry {entry:?} in {}.toml is not an origin: {why}",
                    plugin.name
                )
            })?;
        }
        Ok(HttpPlugin {
            name: Arc::from(plugin.name),
            origins: Arc::from(origins),
            limits: self.config.limits(),
        })
    }

    fn prepare(&self, p: &HttpPlugin) -> HttpState {
        HttpState::with_shared(p.name.clone(), p.origins.clone(), p.limits)
    }
}

impl Setup for HttpCapability {
    type Config = HttpConfig;

    fn validate(config: &HttpConfig) -> Result<(), (String, String)> {
        config.validate()
    }

    fn build(config: HttpConfig, _: &HostContext<'_>) -> anyhow::Result<Self> {
        Ok(HttpCapability::new(config))
    }
}
