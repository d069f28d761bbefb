//! The one rule for bucket and object names, shared by every blobstore backend.

use ledgerhost_core::{PortError, PortResult};

/// Prefix of the local store's temporary files; refused in names so none can collide.
pub(crate) const TMP_PREFIX: &str = ".ledgerhost-tmp-";

/// Checks a bucket or object name: non-empty, no NUL/CR/LF or `\`, not absolute, no empty,
/// `.` or `..` segment (so a local path never escapes its bucket), `/` only in object names.
pub(crate) fn checked_name(
    backend: &'static str,
    name: &str,
    what: &str,
    allow_slash: bool,
) -> PortResult<()> {
    let bad_char = name.chars().any(|c| matches!(c, '\0' | '\r' | '\n' | '\\'));
    let bad_segment = name
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == ".." || s.starts_with(TMP_PREFIX));
    if name.is_empty() || bad_char || bad_segment || (!allow_slash && name.contains('/')) {
        return Err(PortError::Invalid {
            backend,
            message: format!(
                "{what} `{}` is not allowed: use a non-empty name without NUL, CR, LF or `\\`, \
                 and without empty, `.`, `..` or leading `/` segments{}",
                name.escape_debug(),
                if allow_slash { "" } else { " (and no `/`)" }
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_are_refused() {
        for bad in [
            "",
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a//b",
            "a/./b",
            "a/",
            ".",
            "..",
            "a\0b",
            "a\\..\\b",
            "x\ny",
            ".ledgerhost-tmp-1",
        ] {
            assert!(checked_name("t", bad, "object", true).is_err(), "{bad:?}");
        }
        for good in ["a", "orders/2026/x.avro", "..a", "a..", ".hidden", "é/ü"] {
            assert!(checked_name("t", good, "object", true).is_ok(), "{good:?}");
        }
        assert!(checked_name("t", "a/b", "bucket", false).is_err());
    }
}
