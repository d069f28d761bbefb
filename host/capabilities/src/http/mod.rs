//! Outbound HTTP: the standard `wasi:http/outgoing-handler` (wasmtime-wasi-http), granted per
//! origin in the manifest's `grants.http` (`"https://hooks.example.com"`,
//! `"http://127.0.0.1:*"`).
//!
//! - WIT binding: `wasi:http@0.2` as wasmtime-wasi-http ships it; guests use the standard
//!   bindings (the `wasip2` crate, wit-bindgen, componentize-*).
//! - Host side: [`HttpState`] per plugin instance; its hooks check every request's origin
//!   against the grant (a miss is `error-code.http-request-denied`, logged with the origin to
//!   add), bound the whole exchange by the deadline and the response body by the size cap.
//! - Config: [`HttpConfig`], the `[capabilities.http]` section (deadline, size cap).
//! - Probe: none; there is no backend of its own to reach (each request names its origin).
//! - Registration: [`HttpCapability`], one line in [`crate::registry`].
//!
//! A plugin keeps no sockets and no clock of its own: HTTP goes only through the host.

mod capability;
mod origin;
mod send;

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use wasmtime::component::ResourceTable;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView};

pub use capability::HttpCapability;
pub use origin::{check_entry, origin_allowed, origin_of};
pub use send::{GrantHooks, denial};

/// The interface this capability provides (any 0.2.x); importing it needs `grants.http`.
/// (`wasi:http/types` comes with it and is harmless alone: it cannot send anything.)
pub const INTERFACE: &str = "wasi:http/outgoing-handler@0.2.";

/// The manifest grant (`grants.<GRANT>`) naming the origins a plugin may reach.
pub const GRANT: &str = "http";

/// Default per-request deadline: connect, headers and the whole body.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// Default cap on a response body.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 1 << 20;

/// The capability's config section (`[capabilities.http]`), every key with a default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct HttpConfig {
    /// Deadline of one request, from sending it to the last byte of the response body.
    pub timeout_ms: u64,
    /// Largest response body a plugin may receive; a longer one fails the read.
    pub max_response_bytes: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            timeout_ms: DEFAULT_TIMEOUT_MS,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

impl HttpConfig {
    /// Refuses values that would make every request fail: `(key, problem)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if !(1..=600_000).contains(&self.timeout_ms) {
            return Err(("timeout-ms".into(), "must be between 1 and 600000".into()));
        }
        if self.max_response_bytes == 0 {
            return Err(("max-response-bytes".into(), "must be at least 1".into()));
        }
        Ok(())
    }

    /// The limits one plugin's requests run under.
    pub fn limits(&self) -> HttpLimits {
        HttpLimits {
            timeout: Duration::from_millis(self.timeout_ms),
            max_response_bytes: self.max_response_bytes,
        }
    }
}

/// The deadline and size cap applied to each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Whole-request deadline.
    pub timeout: Duration,
    /// Response body cap in bytes.
    pub max_response_bytes: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpConfig::default().limits()
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_section_has_sane_defaults_and_refuses_unknown_keys() {
        let c: HttpConfig = toml::from_str("").unwrap();
        assert_eq!(c, HttpConfig::default());
        assert_eq!(c.limits().timeout, Duration::from_secs(10));
        assert_eq!(c.limits().max_response_bytes, 1 << 20);
        let c: HttpConfig = toml::from_str("timeout-ms = 250").unwrap();
        assert_eq!(c.limits().timeout, Duration::from_millis(250));
        let e = toml::from_str::<HttpConfig>("timeout = 1").unwrap_err();
        assert!(e.to_string().contains("timeout"), "{e}");
        assert!(
            HttpConfig {
                timeout_ms: 0,
                ..HttpConfig::default()
            }
            .validate()
            .is_err()
        );
    }
}
