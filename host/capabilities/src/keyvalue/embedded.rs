//! The embedded key-value store: one SQLite table. Versioned writes are single conditional
//! upserts, so "newer wins" holds whatever the order writes arrive in; deletes keep a
//! tombstone with their version so an older write cannot bring a key back.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ledgerhost_core::capabilities::KeyValue;
use ledgerhost_core::{PortError, PortResult};
use rusqlite::{Connection, OptionalExtension, params};

use crate::blocking;

const BACKEND: &str = "embedded keyvalue";

fn err(e: rusqlite::Error) -> PortError {
    PortError::unavailable(BACKEND, e)
}

/// Adds the operation, key and file to an error so the log says where to look.
fn context(what: &str, path: &Path, e: PortError) -> PortError {
    match e {
        PortError::Unavailable { backend, message } => PortError::Unavailable {
            backend,
            message: format!(
                "{what} in {}: {message}; check the file is writable and its disk not full",
                path.display()
            ),
        },
        other => other,
    }
}

/// A key-value store in one SQLite file.
pub struct EmbeddedKeyValue {
    conn: Arc<Mutex<Connection>>,
    path: std::path::PathBuf,
}

impl EmbeddedKeyValue {
    /// Opens (or creates) the store.
    pub fn open(path: &Path) -> PortResult<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| PortError::Unavailable {
                backend: BACKEND,
                message: format!("{}: {e}", dir.display()),
            })?;
        }
        let conn = Connection::open(path).map_err(|e| context("open", path, err(e)))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS kv (
                 key TEXT PRIMARY KEY,
                 value BLOB,
                 version INTEGER,
                 deleted INTEGER NOT NULL DEFAULT 0)",
        )
        .map_err(err)?;
        Ok(EmbeddedKeyValue {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_path_buf(),
        })
    }

    /// Health probe: the file answers a query.
    pub async fn check(&self) -> PortResult<()> {
        self.run("health probe".into(), |c| {
            c.query_row("SELECT count(*) FROM kv WHERE 0", [], |_| Ok(()))
        })
        .await
    }

    async fn run<T, F>(&self, what: String, f: F) -> PortResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        blocking(BACKEND, move || {
            let guard = conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&guard).map_err(err)
        })
        .await
        .map_err(|e| context(&what, &self.path, e))
    }
}

#[async_trait]
impl KeyValue for EmbeddedKeyValue {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn get(&self, key: &str) -> PortResult<Option<Vec<u8>>> {
        let key = key.to_string();
        self.run(format!("get `{key}`"), move |c| {
            c.query_row(
                "SELECT value FROM kv WHERE key = ?1 AND deleted = 0",
                [&key],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .optional()
        })
        .await
    }

    async fn set(&self, key: &str, value: Vec<u8>) -> PortResult<()> {
        let key = key.to_string();
        self.run(format!("set `{key}`"), move |c| {
            c.execute(
                "INSERT INTO kv (key, value, version, deleted) VALUES (?1, ?2, NULL, 0)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value, deleted = 0",
                params![key, value],
            )
            .map(|_| ())
        })
        .await
    }

    async fn delete(&self, key: &str) -> PortResult<()> {
        let key = key.to_string();
        self.run(format!("delete `{key}`"), move |c| {
            c.execute("DELETE FROM kv WHERE key = ?1", [&key])
                .map(|_| ())
        })
        .await
    }

    async fn set_if_newer(&self, key: &str, value: Vec<u8>, version: i64) -> PortResult<bool> {
        let key = key.to_string();
        self.run(format!("set-if-newer `{key}`"), move |c| {
            c.execute(
                "INSERT INTO kv (key, value, version, deleted) VALUES (?1, ?2, ?3, 0)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value,
                     version = excluded.version, deleted = 0
                 WHERE kv.version IS NULL OR kv.version < excluded.version",
                params![key, value, version],
            )
            .map(|n| n > 0)
        })
        .await
    }

    async fn delete_if_newer(&self, key: &str, version: i64) -> PortResult<bool> {
        let key = key.to_string();
        self.run(format!("delete-if-newer `{key}`"), move |c| {
            c.execute(
                "INSERT INTO kv (key, value, version, deleted) VALUES (?1, NULL, ?2, 1)
                 ON CONFLICT(key) DO UPDATE SET value = NULL, version = excluded.version,
                     deleted = 1
                 WHERE kv.version IS NULL OR kv.version < excluded.version",
                params![key, version],
            )
            .map(|n| n > 0)
        })
        .await
    }

    async fn list_keys(&self, prefix: &str) -> PortResult<Vec<String>> {
        let prefix = prefix.to_string();
        self.run(format!("list `{prefix}*`"), move |c| {
            // Range scan on the primary key: [prefix, prefix + U+FFFF).
            let upper = format!("{prefix}\u{ffff}");
            let mut stmt = c.prepare_cached(
                "SELECT key FROM kv WHERE key >= ?1 AND key < ?2 AND deleted = 0 ORDER BY key",
            )?;
            let keys = stmt
                .query_map(params![prefix, upper], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(keys
                .into_iter()
                .filter(|k| k.starts_with(&prefix))
                .collect())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn newer_versions_win_and_tombstones_hold() {
        let dir = tempfile::tempdir().unwrap();
        let kv = EmbeddedKeyValue::open(&dir.path().join("kv.db")).unwrap();
        assert!(kv.set_if_newer("v/a", b"2".to_vec(), 2).await.unwrap());
        assert!(
            !kv.set_if_newer("v/a", b"1".to_vec(), 1).await.unwrap(),
            "older ignored"
        );
        assert!(
            !kv.set_if_newer("v/a", b"2b".to_vec(), 2).await.unwrap(),
            "same version ignored"
        );
        assert_eq!(kv.get("v/a").await.unwrap(), Some(b"2".to_vec()));
        assert!(kv.delete_if_newer("v/a", 3).await.unwrap());
        assert_eq!(kv.get("v/a").await.unwrap(), None);
        assert!(
            !kv.set_if_newer("v/a", b"old".to_vec(), 2).await.unwrap(),
            "no resurrection"
        );
        assert!(kv.set_if_newer("v/a", b"4".to_vec(), 4).await.unwrap());
        kv.set("v/b", b"x".to_vec()).await.unwrap();
        kv.set("w/c", b"y".to_vec()).await.unwrap();
        assert_eq!(kv.list_keys("v/").await.unwrap(), vec!["v/a", "v/b"]);
        kv.delete("v/b").await.unwrap();
        assert_eq!(kv.list_keys("v/").await.unwrap(), vec!["v/a"]);
    }
}
