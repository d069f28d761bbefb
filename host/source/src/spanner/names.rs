//! Identifiers in SQL text: validated by Spanner's rule and backquoted, never a value.

use ledgerhost_core::{PortError, PortResult};

use super::error::BACKEND;

/// Validates an identifier (Spanner's rule: letter or `_` first, then letters, digits, `_`)
/// and backquotes it.
pub(super) fn ident(name: &str) -> PortResult<String> {
    let mut chars = name.chars();
    let ok_first = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !ok_first || name.len() > 128 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(PortError::invalid(
            BACKEND,
            format!(
                "`{name}` is not a valid Spanner identifier (letters, digits and `_`, starting \
             with a letter or `_`, at most 128 characters)"
            ),
        ));
    }
    Ok(quote(name))
}

/// `name` backquoted (after [`ident`] checked it, or for a name the host chose).
pub(super) fn quote(name: &str) -> String {
    format!("`{name}`")
}
