//! The poller's local watermark: the read point up to which every row of a table is on the
//! ledger. One small file per table, replaced atomically and fsynced, so a SIGKILL leaves
//! either the old or the new value.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Errors reading or writing a watermark file.
#[derive(Debug, thiserror::Error)]
pub enum WatermarkError {
    /// The watermark file could not be written.
    #[error("cannot write watermark {path}: {source}")]
    Write {
        /// Path of the watermark file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The watermark file exists but could not be read.
    #[error("cannot read watermark {path}: {source}")]
    Read {
        /// Path of the watermark file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The watermark file does not hold a valid watermark.
    #[error(
        "watermark file {path} is corrupt ({content:?}); delete it to recover from the ledger \
         or the table's `start` setting"
    )]
    Corrupt {
        /// Path of the watermark file.
        path: PathBuf,
        /// What the file holds.
        content: String,
    },
}

/// Watermark files under one directory.
#[derive(Debug, Clone)]
pub struct WatermarkStore {
    dir: PathBuf,
}

impl WatermarkStore {
    /// Uses (and creates) `dir`.
    pub fn open(dir: &Path) -> Result<Self, WatermarkError> {
        std::fs::create_dir_all(dir).map_err(|source| WatermarkError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(WatermarkStore {
            dir: dir.to_path_buf(),
        })
    }

    /// The file holding a table's watermark.
    pub fn path(&self, table: &str) -> PathBuf {
        self.dir.join(format!("{table}.watermark"))
    }

    /// The stored watermark (microseconds), if any.
    pub fn load(&self, table: &str) -> Result<Option<i64>, WatermarkError> {
        let path = self.path(table);
        match std::fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| WatermarkError::Corrupt {
                    path,
                    content: text,
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(WatermarkError::Read { path, source }),
        }
    }

    /// Durably replaces the watermark.
    pub fn store(&self, table: &str, watermark: i64) -> Result<(), WatermarkError> {
        let path = self.path(table);
        let tmp = self.dir.join(format!(".{table}.watermark.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{watermark}")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            // The rename itself must reach the disk too.
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|source| WatermarkError::Write {
            path: path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_load_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let s = WatermarkStore::open(dir.path()).unwrap();
        assert_eq!(s.load("orders").unwrap(), None);
        s.store("orders", 42).unwrap();
        assert_eq!(s.load("orders").unwrap(), Some(42));
        std::fs::write(s.path("orders"), "garbage").unwrap();
        let err = s.load("orders").unwrap_err().to_string();
        assert!(
            err.contains("corrupt") && err.contains("delete it"),
            "{err}"
        );
    }
}
