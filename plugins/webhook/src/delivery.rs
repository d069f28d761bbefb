//! What one delivery is: the target and settings from the plugin's config, the request for
//! an event, and how its POST ended.

use ledgerhost_sdk::prelude::*;

/// A webhook target: `http(s)://authority/path?query`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `true` for https.
    pub https: bool,
    /// `host[:port]`.
    pub authority: String,
    /// Path and query, starting with `/`.
    pub path_with_query: String,
}

impl Target {
    /// Parses the `url` config value.
    pub fn parse(url: &str) -> Result<Target, String> {
        let bad = |why: &str| format!("config `url` = {url:?} is not an http(s) URL: {why}");
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            _ => return Err(bad("the scheme must be http or https")),
        };
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("it needs a host (and no user info)"));
        }
        let path_with_query = match path {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        Ok(Target {
            https,
            authority: authority.to_string(),
            path_with_query,
        })
    }

    /// The origin to list in `grants.http` for this target.
    pub fn origin(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.authority.to_ascii_lowercase())
    }
}

/// How one POST ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered with this status.
    Status(u16),
    /// The host refused the request: the origin is not granted.
    Denied,
    /// Timeout, connection or protocol error (the text says which).
    Failed(String),
}

/// What the plugin needs from its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Where to POST.
    pub target: Target,
    /// HMAC key.
    pub secret: String,
    /// Timeout asked of the host per request (the host's own deadline caps it).
    pub timeout_ms: u64,
}

impl Settings {
    /// Reads `url`, `secret` and `timeout-ms`; the error names the key to fix.
    pub fn from_config() -> Result<Settings, String> {
        let url = config::get("url").ok_or("config `url` is not set")?;
        let secret = config::get("secret").filter(|s| !s.is_empty()).ok_or(
            "config `secret` is not set: set it per deployment in [plugins.<name>.config]",
        )?;
        Ok(Settings {
            target: Target::parse(&url)?,
            secret,
            timeout_ms: config::parse_or("timeout-ms", 5_000u64)?,
        })
    }
}

/// One POST: the body and its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Header name and value pairs.
    pub headers: Vec<(String, String)>,
    /// The JSON body.
    pub body: Vec<u8>,
}
