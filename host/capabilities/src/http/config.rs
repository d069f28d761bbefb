//! The capability's names (interface, grant) and its settings: the `[capabilities.http]`
//! section and the limits each request runs under.

use std::time::Duration;

use serde::Deserialize;

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
