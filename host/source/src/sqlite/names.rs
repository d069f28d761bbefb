//! The backend's name in errors and identifiers quoted for SQL text.

/// The backend's name in errors.
pub(super) const BACKEND: &str = "sqlite";

/// `ident` double-quoted, inner quotes doubled: an identifier in SQL text, never a value.
pub(super) fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}
