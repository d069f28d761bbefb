//! Object storage in a local directory: bucket = subdirectory, object = file (names may
//! contain `/`, which become subdirectories). Writes go to a temporary file renamed into
//! place, so a reader sees the old or the new object whole, never a torn one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use ledgerhost_core::capabilities::BlobStore;
use ledgerhost_core::{PortError, PortResult};

use super::name::{TMP_PREFIX, checked_name};
use crate::blocking;

const BACKEND: &str = "local blobstore";

/// A directory of buckets.
pub struct LocalBlobStore {
    root: PathBuf,
}

fn io(what: &Path, e: std::io::Error) -> PortError {
    PortError::unavailable(BACKEND, format!("{}: {e}", what.display()))
}

impl LocalBlobStore {
    /// Health probe: the root directory exists and is writable.
    pub async fn check(&self) -> PortResult<()> {
        let root = self.root.clone();
        blocking(BACKEND, move || {
            let probe = root.join(format!("{TMP_PREFIX}check-{}", std::process::id()));
            write_synced(&probe, b"ok")
                .and_then(|()| std::fs::remove_file(&probe))
                .map_err(|e| io(&root, e))
        })
        .await
    }

    /// Uses (and creates) `root`.
    pub fn open(root: &Path) -> PortResult<Self> {
        std::fs::create_dir_all(root).map_err(|e| io(root, e))?;
        Ok(LocalBlobStore {
            root: root.to_path_buf(),
        })
    }

    fn object(&self, bucket: &str, name: &str) -> PortResult<PathBuf> {
        checked_name(BACKEND, bucket, "bucket", false)?;
        checked_name(BACKEND, name, "object name", true)?;
        Ok(self.root.join(bucket).join(name))
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes and fsyncs a file, so the rename that follows publishes complete data.
fn write_synced(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(&path, base, out)?;
        } else if let Ok(rel) = path.strip_prefix(base) {
            let name = rel.to_string_lossy().replace('\\', "/");
            if !name
                .rsplit('/')
                .next()
                .is_some_and(|f| f.starts_with(TMP_PREFIX))
            {
                out.push(name);
            }
        }
    }
    Ok(())
}

#[async_trait]
impl BlobStore for LocalBlobStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn ensure_bucket(&self, bucket: &str) -> PortResult<()> {
        checked_name(BACKEND, bucket, "bucket", false)?;
        let dir = self.root.join(bucket);
        blocking(BACKEND, move || {
            std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))
        })
        .await
    }

    async fn put(&self, bucket: &str, name: &str, data: Vec<u8>) -> PortResult<()> {
        let path = self.object(bucket, name)?;
        blocking(BACKEND, move || {
            let dir = path.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
            let file = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            // Unique per process and call: two concurrent puts of one name must not share a
            // temporary file.
            let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let tmp = dir.join(format!("{TMP_PREFIX}{}-{n}-{file}", std::process::id()));
            let written = write_synced(&tmp, &data).and_then(|()| std::fs::rename(&tmp, &path));
            if let Err(e) = written {
                let _ = std::fs::remove_file(&tmp);
                return Err(io(&path, e));
            }
            // The rename is durable only once the directory entry is: the caller acks the
            // event after this returns.
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io(dir, e))
        })
        .await
    }

    async fn get(&self, bucket: &str, name: &str) -> PortResult<Option<Vec<u8>>> {
        let path = self.object(bucket, name)?;
        blocking(BACKEND, move || match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path, e)),
        })
        .await
    }

    async fn delete(&self, bucket: &str, name: &str) -> PortResult<()> {
        let path = self.object(bucket, name)?;
        blocking(BACKEND, move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path, e)),
        })
        .await
    }

    async fn list(&self, bucket: &str, prefix: &str) -> PortResult<Vec<String>> {
        checked_name(BACKEND, bucket, "bucket", false)?;
        let base = self.root.join(bucket);
        let prefix = prefix.to_string();
        // Walk only the directory the prefix's complete segments name; a prefix that could
        // leave the bucket (`..`) simply falls back to the whole bucket.
        let start = match prefix.rfind('/') {
            Some(i) if checked_name(BACKEND, &prefix[..i], "prefix", true).is_ok() => {
                base.join(&prefix[..i])
            }
            _ => base.clone(),
        };
        blocking(BACKEND, move || {
            let mut out = Vec::new();
            match walk(&start, &base, &mut out) {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                    ) =>
                {
                    return Ok(out);
                }
                Err(e) => return Err(io(&base, e)),
            }
            out.retain(|n| n.starts_with(&prefix));
            out.sort();
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_list_delete_and_no_escape() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalBlobStore::open(dir.path()).unwrap();
        s.put("b", "orders/2026/x.avro", b"1".to_vec())
            .await
            .unwrap();
        s.put("b", "orders/2026/x.avro", b"2".to_vec())
            .await
            .unwrap();
        s.put("b", "other", b"3".to_vec()).await.unwrap();
        assert_eq!(
            s.get("b", "orders/2026/x.avro").await.unwrap(),
            Some(b"2".to_vec())
        );
        assert_eq!(s.get("b", "missing").await.unwrap(), None);
        assert_eq!(
            s.list("b", "orders/").await.unwrap(),
            vec!["orders/2026/x.avro"]
        );
        assert_eq!(s.list("b", "").await.unwrap().len(), 2);
        assert!(s.list("nobucket", "").await.unwrap().is_empty());
        s.delete("b", "other").await.unwrap();
        s.delete("b", "other").await.unwrap();
        assert_eq!(s.list("b", "").await.unwrap().len(), 1);
        for bad in ["../x", "a/../../x", "/etc/passwd", "a//b", "", "a/./b"] {
            assert!(s.put("b", bad, vec![]).await.is_err(), "{bad}");
        }
        for bad in ["..", "a/b", ""] {
            assert!(s.put(bad, "x", vec![]).await.is_err(), "{bad}");
        }
        assert!(!dir.path().join("x").exists());
    }
}
