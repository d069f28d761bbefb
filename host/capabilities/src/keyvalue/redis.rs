//! Key-value store in Redis (Memorystore in production).
//!
//! Each key is a hash `{v: version, d: data, x: deleted flag}` under a configurable
//! namespace. Versioned writes are Lua scripts (sent as `EVALSHA`, reloaded after a restart
//! emptied the script cache), so the version check and the write are one atomic step on the
//! server whatever the number of hosts writing. Versions are compared as exact 64-bit
//! decimals inside the script (Lua numbers are doubles and would round above 2^53).
//!
//! A failure while Redis is unreachable is [`PortError::Unavailable`]: the dispatcher retries
//! the event, and because every versioned write is idempotent (re-applying the same version is
//! refused as not newer), a write whose reply was lost is safe to send again.

use std::time::Duration;

use async_trait::async_trait;
use ledgerhost_core::capabilities::KeyValue;
use ledgerhost_core::{PortError, PortResult};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use tracing::{debug, warn};

const BACKEND: &str = "redis keyvalue";

/// Compares two canonical i64 decimals exactly, then applies a versioned write.
/// KEYS[1] = key; ARGV[1] = version; ARGV[2] = "set" | "del"; ARGV[3] = data (for set).
const VERSIONED_WRITE: &str = r#"
local function cmp(a, b)
  local na, nb = string.sub(a, 1, 1) == '-', string.sub(b, 1, 1) == '-'
  if na ~= nb then if na then return -1 else return 1 end end
  local da, db = a, b
  if na then da, db = string.sub(a, 2), string.sub(b, 2) end
  local c
  if #da ~= #db then
    if #da < #db then c = -1 else c = 1 end
  elseif da == db then c = 0
  elseif da < db then c = -1 else c = 1 end
  if na then c = -c end
  return c
end
local cur = redis.call('HGET', KEYS[1], 'v')
if cur and cmp(cur, ARGV[1]) >= 0 then return 0 end
if ARGV[2] == 'set' then
  redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[3], 'x', '0')
else
  redis.call('HSET', KEYS[1], 'v', ARGV[1], 'x', '1')
  redis.call('HDEL', KEYS[1], 'd')
end
return 1
"#;

/// Connection settings of [`RedisKeyValue`].
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Server URL, e.g. `redis://127.0.0.1:6379` (`rediss://` for TLS is not built in).
    pub url: String,
    /// Prefix of every stored key, so several deployments can share one Redis.
    pub namespace: String,
    /// How long one command may wait for its reply before it fails as unavailable.
    pub response_timeout: Duration,
    /// How long one connection attempt may take.
    pub connection_timeout: Duration,
}

impl RedisConfig {
    /// Defaults for `url`: namespace `ledgerhost:`, 5 s replies, 2 s connects.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            namespace: "ledgerhost:".to_string(),
            response_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(2),
        }
    }
}

/// A key-value store in Redis; cheap to clone (one shared, self-reconnecting connection).
#[derive(Clone)]
pub struct RedisKeyValue {
    conn: ConnectionManager,
    namespace: String,
    url: String,
    write: Script,
}

/// Maps a Redis error to a port error naming the operation and key.
fn map_err(url: &str, op: &str, key: &str, e: redis::RedisError) -> PortError {
    use redis::ErrorKind;
    let kind = e.kind();
    if matches!(kind, ErrorKind::Parse | ErrorKind::UnexpectedReturnType) {
        return PortError::Corrupt {
            backend: BACKEND,
            message: format!(
                "{op} `{key}`: unexpected reply ({e}); is another program writing this key \
                 with a different layout? Use a separate namespace"
            ),
        };
    }
    if e.code() == Some("WRONGTYPE") {
        return PortError::Invalid {
            backend: BACKEND,
            message: format!(
                "{op} `{key}`: the Redis key holds a value that is not a ledgerhost hash ({e}); \
                 use a separate namespace or remove the foreign key"
            ),
        };
    }
    if matches!(
        kind,
        ErrorKind::AuthenticationFailed | ErrorKind::InvalidClientConfig
    ) {
        warn!(url, op, key, error = %e, "redis refused the client configuration");
    }
    PortError::Unavailable {
        backend: BACKEND,
        message: format!(
            "{op} `{key}` at {url}: {e}; the write is safe to retry once Redis answers again"
        ),
    }
}

/// Escapes glob metacharacters so a prefix matches literally in `SCAN MATCH`.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The URL without a password, for messages and logs.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

impl RedisKeyValue {
    /// Prepares a client for `config.url`. Connects lazily, and reconnects by itself after
    /// a failure, so the host can start before Redis does; [`Self::check`] probes it.
    pub fn connect(config: RedisConfig) -> PortResult<Self> {
        let url = redacted(&config.url);
        let client = redis::Client::open(config.url.as_str()).map_err(|e| PortError::Invalid {
            backend: BACKEND,
            message: format!("bad Redis URL {url}: {e} (expected redis://host:port[/db])"),
        })?;
        let manager_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(config.response_timeout))
            .set_connection_timeout(Some(config.connection_timeout))
            // Few, short reconnect attempts per failure: the caller's retry (with backoff)
            // owns the long wait, so a request never hangs while Redis is away.
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|e| map_err(&url, "connect", "", e))?;
        Ok(RedisKeyValue {
            conn,
            namespace: config.namespace,
            url,
            write: Script::new(VERSIONED_WRITE),
        })
    }

    /// Health probe: `PING`.
    pub async fn check(&self) -> PortResult<()> {
        let mut c = self.conn.clone();
        let pong: String = redis::cmd("PING")
            .query_async(&mut c)
            .await
            .map_err(|e| map_err(&self.url, "ping", "", e))?;
        debug!(url = %self.url, reply = %pong, "redis ping");
        Ok(())
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.namespace)
    }

    async fn versioned(&self, op: &str, key: &str, version: i64, data: &[u8]) -> PortResult<bool> {
        let mut c = self.conn.clone();
        let applied: i64 = self
            .write
            .key(self.key(key))
            .arg(version.to_string())
            .arg(op)
            .arg(data)
            .invoke_async(&mut c)
            .await
            .map_err(|e| map_err(&self.url, op, key, e))?;
        debug!(
            key,
            version,
            op,
            applied = applied == 1,
            "redis versioned write"
        );
        Ok(applied == 1)
    }
}

#[async_trait]
impl KeyValue for RedisKeyValue {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn get(&self, key: &str) -> PortResult<Option<Vec<u8>>> {
        let mut c = self.conn.clone();
        let (data, deleted): (Option<Vec<u8>>, Option<String>) = redis::cmd("HMGET")
            .arg(self.key(key))
            .arg("d")
            .arg("x")
            .query_async(&mut c)
            .await
            .map_err(|e| map_err(&self.url, "get", key, e))?;
        Ok(match deleted.as_deref() {
            Some("1") => None,
            _ => data,
        })
    }

    async fn set(&self, key: &str, value: Vec<u8>) -> PortResult<()> {
        let mut c = self.conn.clone();
        // Unversioned: keeps any stored version, as the embedded store does.
        let _: i64 = redis::cmd("HSET")
            .arg(self.key(key))
            .arg("d")
            .arg(value)
            .arg("x")
            .arg("0")
            .query_async(&mut c)
            .await
            .map_err(|e| map_err(&self.url, "set", key, e))?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> PortResult<()> {
        let mut c = self.conn.clone();
        let _: i64 = c
            .del(self.key(key))
            .await
            .map_err(|e| map_err(&self.url, "delete", key, e))?;
        Ok(())
    }

    async fn set_if_newer(&self, key: &str, value: Vec<u8>, version: i64) -> PortResult<bool> {
        self.versioned("set", key, version, &value).await
    }

    async fn delete_if_newer(&self, key: &str, version: i64) -> PortResult<bool> {
        self.versioned("del", key, version, &[]).await
    }

    async fn list_keys(&self, prefix: &str) -> PortResult<Vec<String>> {
        let mut c = self.conn.clone();
        let pattern = format!("{}*", glob_escape(&self.key(prefix)));
        let mut cursor: u64 = 0;
        let mut found = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await
                .map_err(|e| map_err(&self.url, "list", prefix, e))?;
            found.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        // SCAN may return a key twice; tombstones (and keys removed since the scan) are
        // filtered with one pipelined read.
        found.sort();
        found.dedup();
        let mut pipe = redis::pipe();
        for k in &found {
            pipe.cmd("HGET").arg(k).arg("x");
        }
        let flags: Vec<Option<String>> = if found.is_empty() {
            Vec::new()
        } else {
            pipe.query_async(&mut c)
                .await
                .map_err(|e| map_err(&self.url, "list", prefix, e))?
        };
        Ok(found
            .into_iter()
            .zip(flags)
            .filter(|(_, x)| x.as_deref() == Some("0"))
            .filter_map(|(k, _)| k.strip_prefix(&self.namespace).map(str::to_string))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_and_url_helpers() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(redacted("redis://:pw@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redacted("redis://h:1"), "redis://h:1");
    }

    #[test]
    fn bad_url_is_invalid() {
        let e = RedisKeyValue::connect(RedisConfig::new("http://x"))
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|m| m.contains("bad Redis URL")));
    }
}
