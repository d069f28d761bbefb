//! `[keyvalue]`: which store backs the capability, and building it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ledgerhost_core::capabilities::KeyValue;
use serde::Deserialize;

use crate::probe::Probe;
use crate::settings::{Problem, absolute};

/// What a build without the `redis` feature says of `keyvalue.kind = "redis"`.
const REDIS_LEFT_OUT: crate::settings::LeftOut = crate::settings::LeftOut {
    section: "keyvalue",
    kind: "redis",
    feature: "redis",
    instead: "embedded",
};

/// The embedded store's file under the data directory, when `path` is not set.
const DEFAULT_FILE: &str = "keyvalue.db";

/// The store behind the `keyvalue` capability (`[keyvalue]`, chosen by `kind`).
#[derive(Debug, Clone, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    deny_unknown_fields
)]
pub enum Settings {
    /// An SQLite file (default `<data-dir>/keyvalue.db`).
    Embedded {
        /// SQLite file path; relative to the config file.
        #[serde(default)]
        path: Option<PathBuf>,
    },
    /// Redis / Memorystore, e.g. `redis://127.0.0.1:6379`, or `rediss://10.0.0.3:6378` over
    /// TLS (Memorystore's in-transit encryption).
    Redis {
        /// Redis URL (`redis://` or `rediss://`).
        url: String,
        /// Prefix of every stored key (default `ledgerhost:`), so deployments can share one
        /// Redis.
        #[serde(default)]
        namespace: Option<String>,
        /// `rediss://`: PEM file of the CA the server's certificate must chain to
        /// (Memorystore: the instance's server CA); default: the system's roots. Relative to
        /// the config file.
        #[serde(default)]
        tls_ca_file: Option<PathBuf>,
        /// `rediss://`: PEM client certificate, for servers that require one (with
        /// `tls-key-file`). Relative to the config file.
        #[serde(default)]
        tls_cert_file: Option<PathBuf>,
        /// `rediss://`: PEM private key of `tls-cert-file`. Relative to the config file.
        #[serde(default)]
        tls_key_file: Option<PathBuf>,
    },
}

impl Default for Settings {
    fn default() -> Self {
        Settings::Embedded { path: None }
    }
}

impl Settings {
    /// Checks the settings; a problem names its key (`keyvalue.<key>`).
    pub fn check(&self) -> Result<(), Problem> {
        let Settings::Redis {
            url,
            tls_ca_file,
            tls_cert_file,
            tls_key_file,
            ..
        } = self
        else {
            return Ok(());
        };
        if cfg!(not(feature = "redis")) {
            return Err(REDIS_LEFT_OUT.problem());
        }
        let tls = url.starts_with("rediss://");
        if !(tls || url.starts_with("redis://") || url.starts_with("redis+unix://")) {
            return Err((
                "keyvalue.url".into(),
                "must be a URL like `redis://127.0.0.1:6379` (or \
                 `redis://:password@host:port/db`, or `rediss://host:port` for TLS)"
                    .into(),
            ));
        }
        for (key, file) in [
            ("tls-ca-file", tls_ca_file),
            ("tls-cert-file", tls_cert_file),
            ("tls-key-file", tls_key_file),
        ] {
            if file.is_some() && !tls {
                return Err((
                    format!("keyvalue.{key}"),
                    "is a TLS setting: the url must start with `rediss://` (e.g. \
                     `rediss://10.0.0.3:6378` for Memorystore with in-transit encryption)"
                        .into(),
                ));
            }
        }
        if tls_cert_file.is_some() != tls_key_file.is_some() {
            return Err((
                "keyvalue.tls-cert-file".into(),
                "and keyvalue.tls-key-file must be set together (a client certificate and \
                 its private key)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Makes paths absolute against `base` (the config file's directory), defaulting the
    /// embedded file into `data_dir`.
    pub fn resolve_paths(&mut self, base: &Path, data_dir: &Path) {
        match self {
            Settings::Embedded { path } => {
                absolute(
                    path.get_or_insert_with(|| data_dir.join(DEFAULT_FILE)),
                    base,
                );
            }
            Settings::Redis {
                tls_ca_file,
                tls_cert_file,
                tls_key_file,
                ..
            } => {
                for p in [tls_ca_file, tls_cert_file, tls_key_file]
                    .into_iter()
                    .flatten()
                {
                    absolute(p, base);
                }
            }
        }
    }

    /// Opens or connects the store; a remote one is probed first (the host refuses to start
    /// without it) and comes with its readiness probe.
    pub async fn build(
        &self,
        data_dir: &Path,
    ) -> anyhow::Result<(Arc<dyn KeyValue>, Option<Probe>)> {
        use anyhow::Context;
        match self {
            Settings::Embedded { path } => {
                let path = path.clone().unwrap_or_else(|| data_dir.join(DEFAULT_FILE));
                let kv = super::embedded::EmbeddedKeyValue::open(&path)
                    .with_context(|| format!("cannot open key-value file {}", path.display()))?;
                Ok((Arc::new(kv), None))
            }
            #[cfg(feature = "redis")]
            Settings::Redis {
                url,
                namespace,
                tls_ca_file,
                tls_cert_file,
                tls_key_file,
            } => {
                use super::redis::{RedisConfig, RedisKeyValue, RedisTls};
                let mut cfg = RedisConfig::new(url.clone());
                if let Some(ns) = namespace {
                    cfg.namespace = ns.clone();
                }
                cfg.tls = RedisTls {
                    ca_file: tls_ca_file.clone(),
                    client_cert_file: tls_cert_file.clone(),
                    client_key_file: tls_key_file.clone(),
                };
                let where_ = redact(url);
                let kv = RedisKeyValue::connect(cfg)
                    .with_context(|| format!("cannot set up the Redis client for {where_}"))?;
                let (kv, probe) =
                    crate::settings::remote(
                        "Redis",
                        where_,
                        kv,
                        |kv| async move { kv.check().await },
                    )
                    .await?;
                Ok((kv, probe))
            }
            #[cfg(not(feature = "redis"))]
            Settings::Redis { .. } => Err(REDIS_LEFT_OUT.error()),
        }
    }
}

/// A Redis URL without its password, for messages.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(redact("redis://:secret@h:6379/0"), "redis://***@h:6379/0");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
    }
}
