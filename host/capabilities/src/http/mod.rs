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
//! - Registration: [`HttpCapability`], one line in [`crate::set`].
//!
//! A plugin keeps no sockets and no clock of its own: HTTP goes only through the host.

mod capability;
mod config;
mod origin;
mod send;
mod state;

pub use capability::HttpCapability;
pub use config::{
    DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_TIMEOUT_MS, GRANT, HttpConfig, HttpLimits, INTERFACE,
};
pub use origin::{check_entry, origin_allowed, origin_of};
pub use send::{GrantHooks, denial};
pub use state::HttpState;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
