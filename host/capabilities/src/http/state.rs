//! One plugin instance's `wasi:http` state.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView};

use super::config::HttpLimits;
use super::send::GrantHooks;

/// One plugin instance's `wasi:http` state: the context and the grant-checking hooks.
pub struct HttpState {
    ctx: WasiHttpCtx,
    hooks: GrantHooks,
}

impl HttpState {
    /// State for plugin `plugin` (its manifest is `<plugin>.toml`) with its `grants.http`.
    pub fn new(plugin: &str, grants: &[String], limits: HttpLimits) -> HttpState {
        HttpState::with_shared(Arc::from(plugin), Arc::from(grants), limits)
    }

    /// As [`HttpState::new`], sharing the name and grant list of the plugin version.
    pub fn with_shared(plugin: Arc<str>, grants: Arc<[String]>, limits: HttpLimits) -> HttpState {
        HttpState {
            ctx: WasiHttpCtx::new(),
            hooks: GrantHooks {
                plugin,
                grants,
                limits,
            },
        }
    }

    /// The view wasmtime-wasi-http's host traits run on; `table` is the store's table.
    pub fn view<'a>(&'a mut self, table: &'a mut ResourceTable) -> WasiHttpCtxView<'a> {
        WasiHttpCtxView {
            ctx: &mut self.ctx,
            table,
            hooks: &mut self.hooks,
        }
    }
}
