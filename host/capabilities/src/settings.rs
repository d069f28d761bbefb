//! What the `[blobstore]`, `[keyvalue]` and `[warehouse]` settings of each capability folder
//! share.

use std::path::{Path, PathBuf};

/// A refused setting: its key (e.g. `keyvalue.url`) and the problem.
pub type Problem = (String, String);

/// Makes `path` absolute against `base` (the config file's directory).
pub(crate) fn absolute(path: &mut PathBuf, base: &Path) {
    if path.is_relative() {
        *path = base.join(&*path);
    }
}
