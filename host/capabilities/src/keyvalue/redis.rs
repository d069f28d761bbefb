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
//!
//! `rediss://` URLs connect over TLS (rustls, the `ring` provider), as Memorystore's in-transit
//! encryption requires: the server's certificate is checked against [`RedisTls::ca_file`]
//! (Memorystore's downloadable server CA) or, without one, the system's roots; a client
//! certificate and key can be presented for servers that ask for one. A handshake failure says
//! which endpoint refused and what to check.

use std::path::{Path, PathBuf};
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

/// TLS settings of a `rediss://` connection. All files are PEM.
#[derive(Debug, Clone, Default)]
pub struct RedisTls {
    /// CA certificate(s) the server's certificate must chain to (Memorystore: the instance's
    /// server CA). Without it, the system's trusted roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain, for servers that require client certificates.
    pub client_cert_file: Option<PathBuf>,
    /// The client certificate's private key (with `client_cert_file`).
    pub client_key_file: Option<PathBuf>,
}

impl RedisTls {
    /// True when any TLS file is set.
    pub fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.client_cert_file.is_some() || self.client_key_file.is_some()
    }
}

/// Connection settings of [`RedisKeyValue`].
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Server URL, e.g. `redis://127.0.0.1:6379`, or `rediss://10.0.0.3:6378` for TLS.
    pub url: String,
    /// Prefix of every stored key, so several deployments can share one Redis.
    pub namespace: String,
    /// How long one command may wait for its reply before it fails as unavailable.
    pub response_timeout: Duration,
    /// How long one connection attempt may take.
    pub connection_timeout: Duration,
    /// Certificates of a `rediss://` connection.
    pub tls: RedisTls,
}

impl RedisConfig {
    /// Defaults for `url`: namespace `ledgerhost:`, 5 s replies, 2 s connects.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            namespace: "ledgerhost:".to_string(),
            response_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(2),
            tls: RedisTls::default(),
        }
    }
}

/// A key-value store in Redis; cheap to clone (one shared, self-reconnecting connection).
#[derive(Clone)]
pub struct RedisKeyValue {
    conn: ConnectionManager,
    namespace: String,
    url: String,
    /// What to check when a TLS handshake fails (`None` for plaintext connections).
    tls_hint: Option<String>,
    write: Script,
}

/// True when `e` (or an error it wraps) comes from the TLS layer: a certificate the client
/// refused, an alert from the server, or bytes that are not TLS.
fn is_tls_error(e: &redis::RedisError) -> bool {
    error_texts(e).iter().any(|t| {
        [
            "certificate",
            "tls",
            "handshake",
            "received corrupt message",
            "peer is incompatible",
            "peer misbehaved",
            "alert",
        ]
        .iter()
        .any(|needle| t.contains(needle))
    })
}

/// The lower-cased texts of `e` and of the errors it wraps.
fn error_texts(e: &redis::RedisError) -> Vec<String> {
    let mut texts = vec![e.to_string().to_ascii_lowercase()];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        texts.push(s.to_string().to_ascii_lowercase());
        source = s.source();
    }
    texts
}

/// What a TLS failure most likely means, when its text says.
fn tls_cause(e: &redis::RedisError) -> Option<&'static str> {
    let texts = error_texts(e);
    let has = |needle: &str| texts.iter().any(|t| t.contains(needle));
    if has("certificaterequired") || has("certificate required") {
        Some(
            "The server requires a client certificate: set keyvalue.tls-cert-file and \
             keyvalue.tls-key-file",
        )
    } else if has("unknownissuer") || has("badsignature") || has("unknown issuer") {
        Some("The server's certificate is not signed by a CA this client trusts")
    } else if has("notvalidforname") || has("not valid for name") {
        Some("The server's certificate does not list the host of the URL")
    } else if has("expired") || has("notvalidyet") {
        Some("A certificate is expired or not yet valid")
    } else if has("corrupt message") || has("invalidcontenttype") {
        Some("The server did not answer in TLS: is this its TLS port?")
    } else {
        None
    }
}

/// Maps a Redis error to a port error naming the operation and key; on a TLS connection
/// (`tls_hint` set) a handshake failure says what to check.
fn map_err_tls(
    url: &str,
    tls_hint: Option<&str>,
    op: &str,
    key: &str,
    e: redis::RedisError,
) -> PortError {
    use redis::ErrorKind;
    if let Some(hint) = tls_hint
        && is_tls_error(&e)
    {
        warn!(url, op, error = %e, "redis TLS handshake failed");
        // Unavailable, not Invalid: a certificate rotated on the server may be trusted again
        // once the config is fixed, and the events waiting for it must not be dropped.
        let cause = tls_cause(&e).map(|c| format!("{c}. ")).unwrap_or_default();
        return PortError::Unavailable {
            backend: BACKEND,
            message: format!("TLS handshake with {url} failed ({op}): {e}. {cause}{hint}"),
        };
    }
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

/// Reads one PEM file of the TLS settings; `what` names it in messages.
fn read_pem(path: &Path, what: &str) -> PortResult<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| PortError::Invalid {
        backend: BACKEND,
        message: format!(
            "cannot read the {what} {}: {e}; point the setting at a readable PEM file",
            path.display()
        ),
    })?;
    Ok(bytes)
}

/// Reads and checks a PEM file of certificates: at least one, all parseable.
fn read_certificates(path: &Path, what: &str) -> PortResult<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bytes = read_pem(path, what)?;
    let bad = |problem: String| PortError::Invalid {
        backend: BACKEND,
        message: format!(
            "the {what} {} {problem}; it must hold PEM certificates \
             (`-----BEGIN CERTIFICATE-----`), e.g. the server CA Memorystore lets you download",
            path.display()
        ),
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("is not valid PEM ({e})")))?;
    if certs.is_empty() {
        return Err(bad("holds no certificate".into()));
    }
    // A root store refuses certificates it cannot parse; better now than at the handshake.
    let mut roots = rustls::RootCertStore::empty();
    let (_, refused) = roots.add_parsable_certificates(certs);
    if refused > 0 {
        return Err(bad(format!(
            "holds {refused} certificate(s) that cannot be parsed"
        )));
    }
    Ok(bytes)
}

/// Makes sure rustls has a process-wide crypto provider (`ring`): the Redis client builds
/// its TLS configuration from the default, and with more than one provider compiled into
/// the binary rustls will not pick one by itself.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may have installed one meanwhile; either is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// A TLS client for a `rediss://` URL with the configured certificates.
fn tls_client(config: &RedisConfig, url: &str) -> PortResult<redis::Client> {
    use redis::{ClientTlsConfig, TlsCertificates};
    ensure_crypto_provider();
    let tls = &config.tls;
    let root_cert = match &tls.ca_file {
        Some(path) => Some(read_certificates(
            path,
            "Redis CA file (keyvalue.tls-ca-file)",
        )?),
        None => None,
    };
    let client_tls = match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read_certificates(
                cert,
                "Redis client certificate file (keyvalue.tls-cert-file)",
            )?,
            client_key: read_pem(key, "Redis client key file (keyvalue.tls-key-file)")?,
        }),
        (None, None) => None,
        _ => {
            return Err(PortError::Invalid {
                backend: BACKEND,
                message: "a client certificate needs both keyvalue.tls-cert-file and \
                 keyvalue.tls-key-file"
                    .into(),
            });
        }
    };
    redis::Client::build_with_tls(
        config.url.as_str(),
        TlsCertificates {
            client_tls,
            root_cert,
        },
    )
    .map_err(|e| PortError::Invalid {
        backend: BACKEND,
        message: format!(
            "cannot set up TLS for {url}: {e} (check keyvalue.tls-ca-file, tls-cert-file and \
             tls-key-file: PEM certificates, and a PEM private key matching the certificate)"
        ),
    })
}

/// What to check when a handshake with `url` fails.
fn tls_hint(config: &RedisConfig) -> String {
    let trust = match &config.tls.ca_file {
        Some(ca) => format!(
            "that keyvalue.tls-ca-file ({}) is the CA that signed the server's certificate \
             (Memorystore: download the instance's current server CA)",
            ca.display()
        ),
        None => "that the server's certificate chains to a root the system trusts, or set \
         keyvalue.tls-ca-file to its CA (Memorystore: the instance's server CA)"
            .into(),
    };
    format!(
        "Check {trust}, that the URL's host is a name or IP address the certificate lists, \
         and that the port is the server's TLS port (Memorystore: 6378)"
    )
}

impl RedisKeyValue {
    /// Prepares a client for `config.url`. Connects lazily, and reconnects by itself after
    /// a failure, so the host can start before Redis does; [`Self::check`] probes it.
    ///
    /// A `rediss://` URL connects over TLS with `config.tls`; the certificate files are read
    /// (and checked) here, so a bad file fails at once.
    pub fn connect(config: RedisConfig) -> PortResult<Self> {
        let url = redacted(&config.url);
        let is_tls = config.url.starts_with("rediss://");
        if !is_tls && config.tls.is_set() {
            return Err(PortError::Invalid {
                backend: BACKEND,
                message: format!(
                    "TLS certificate files are set but {url} is not a TLS URL; use \
                     rediss://host:port to connect over TLS"
                ),
            });
        }
        let client = if is_tls {
            tls_client(&config, &url)?
        } else {
            redis::Client::open(config.url.as_str()).map_err(|e| PortError::Invalid {
                backend: BACKEND,
                message: format!(
                    "bad Redis URL {url}: {e} (expected redis://host:port[/db], or \
                     rediss://host:port[/db] for TLS)"
                ),
            })?
        };
        let manager_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(config.response_timeout))
            .set_connection_timeout(Some(config.connection_timeout))
            // Few, short reconnect attempts per failure: the caller's retry (with backoff)
            // owns the long wait, so a request never hangs while Redis is away.
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let tls_hint = is_tls.then(|| tls_hint(&config));
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|e| map_err_tls(&url, tls_hint.as_deref(), "connect", "", e))?;
        Ok(RedisKeyValue {
            conn,
            namespace: config.namespace,
            url,
            tls_hint,
            write: Script::new(VERSIONED_WRITE),
        })
    }

    fn err(&self, op: &str, key: &str, e: redis::RedisError) -> PortError {
        map_err_tls(&self.url, self.tls_hint.as_deref(), op, key, e)
    }

    /// Health probe: `PING`.
    pub async fn check(&self) -> PortResult<()> {
        let mut c = self.conn.clone();
        let pong: String = redis::cmd("PING")
            .query_async(&mut c)
            .await
            .map_err(|e| self.err("ping", "", e))?;
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
            .map_err(|e| self.err(op, key, e))?;
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
            .map_err(|e| self.err("get", key, e))?;
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
            .map_err(|e| self.err("set", key, e))?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> PortResult<()> {
        let mut c = self.conn.clone();
        let _: i64 = c
            .del(self.key(key))
            .await
            .map_err(|e| self.err("delete", key, e))?;
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
                .map_err(|e| self.err("list", prefix, e))?;
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
                .map_err(|e| self.err("list", prefix, e))?
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

    /// A self-signed CA certificate (no key kept): parseable, trusted by nothing.
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBmzCCAUGgAwIBAgIUY57syibJm66bRNo7BqSuW2XPncgwCgYIKoZIzj0EAwIw
IjEgMB4GA1UEAwwXbGVkZ2VyaG9zdCB1bml0LXRlc3QgQ0EwIBcNMjYxMjAyMTI1
OTM0WhgPMjEyNjExMDgxMjU5MzRaMCIxIDAeBgNVBAMMF2xlZGdlcmhvc3QgdW5p
dC10ZXN0IENBMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAESlbMHOGZt0vRLCpG
ndoJtiG/ArfQMxOkDadSVDWv66qjtZLiUsC4iWPHM74zCDSzZL4nVs3/YcjBpheh
O5Y0LqNTMFEwHQYDVR0OBBYEFNw7krGV29kc45+DiRZ1WEc8T6xXMB8GA1UdIwQY
MBaAFNw7krGV29kc45+DiRZ1WEc8T6xXMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZI
zj0EAwIDSAAwRQIhAPi3aLJFWKuR1RkWKewzI2Nwefh9IRB7dwtncm2xiVcnAiBP
Aq7juhJCYqw7CwkgLSUs70tspDsC4H69pJd2//O1qg==
-----END CERTIFICATE-----
";

    fn tls_config(url: &str, ca: Option<&Path>) -> RedisConfig {
        let mut c = RedisConfig::new(url);
        c.tls.ca_file = ca.map(Path::to_path_buf);
        c
    }

    fn connect_error(config: RedisConfig) -> String {
        match RedisKeyValue::connect(config) {
            Ok(_) => panic!("connect accepted a bad TLS setting"),
            Err(e) => {
                assert!(matches!(e, PortError::Invalid { .. }), "{e}");
                e.to_string()
            }
        }
    }

    #[tokio::test]
    async fn tls_settings_are_checked_when_the_client_is_built() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("server-ca.pem");
        std::fs::write(&ca, TEST_CA).unwrap();
        // A good CA: the client is built (it connects lazily, so no server is needed).
        RedisKeyValue::connect(tls_config("rediss://127.0.0.1:1", Some(&ca))).unwrap();
        RedisKeyValue::connect(tls_config("rediss://127.0.0.1:1", None)).unwrap();

        let missing = dir.path().join("nope.pem");
        let e = connect_error(tls_config("rediss://127.0.0.1:1", Some(&missing)));
        assert!(
            e.contains("keyvalue.tls-ca-file") && e.contains("nope.pem"),
            "{e}"
        );

        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let e = connect_error(tls_config("rediss://127.0.0.1:1", Some(&junk)));
        assert!(
            e.contains("junk.pem") && e.contains("no certificate") && e.contains("PEM"),
            "{e}"
        );

        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = connect_error(tls_config("rediss://127.0.0.1:1", Some(&broken)));
        assert!(
            e.contains("broken.pem") && e.contains("cannot be parsed"),
            "{e}"
        );

        // TLS files on a plaintext URL: say to use rediss://.
        let e = connect_error(tls_config("redis://127.0.0.1:1", Some(&ca)));
        assert!(e.contains("rediss://"), "{e}");

        // A client certificate needs its key.
        let mut c = tls_config("rediss://127.0.0.1:1", Some(&ca));
        c.tls.client_cert_file = Some(ca.clone());
        let e = connect_error(c);
        assert!(e.contains("tls-key-file"), "{e}");
    }

    #[test]
    fn tls_failures_are_recognised_and_explained() {
        let hint = tls_hint(&tls_config(
            "rediss://127.0.0.1:1",
            Some(Path::new("server-ca.pem")),
        ));
        let tls = redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "invalid peer certificate: UnknownIssuer",
        ));
        let e = map_err_tls("rediss://h:6378", Some(&hint), "ping", "", tls);
        assert!(e.is_transient(), "{e}");
        let text = e.to_string();
        for part in [
            "TLS handshake with rediss://h:6378 failed",
            "UnknownIssuer",
            "not signed by a CA this client trusts",
            "keyvalue.tls-ca-file (server-ca.pem)",
            "TLS port",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        // A server that is simply down is not a TLS problem.
        let down = redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        ));
        let text = map_err_tls("rediss://h:6378", Some(&hint), "ping", "", down).to_string();
        assert!(!text.contains("TLS handshake"), "{text}");
    }
}
