//! Which names are valid: plugins, buckets, objects, keys. One rule each, with an error
//! that says what is wrong and how to fix it.
//!
//! **Plugin names** start with a lower-case letter and hold lower-case letters, digits and
//! `-`, at most [`MAX_PLUGIN_NAME_LEN`] characters. A plugin name becomes the manifest and
//! component file names, the crate name of `ledgerhost plugin new` (Cargo refuses a package
//! name that starts with a digit), and the Pub/Sub resources of the plugin
//! ([`subscription_name`], [`dead_letter_topic`]), whose ids must start with a letter and
//! hold at most 255 characters (`ledgerhost_core::ledger::limits::check_resource_id`).
//! Requiring the letter of the name itself keeps the name usable bare as such an id; 63
//! characters is a DNS label, short enough for every derived name.
//!
//! **Subscription names** (the one rule, used by the host): `plugin-<name>` for a plugin
//! reading one `table` or a `topic` (unchanged since the first release, so an upgraded host
//! keeps every existing cursor), `plugin-<name>.<table>` for each table of `tables`. A table
//! name holds letters, digits and `_` (the host config's rule) and a plugin name no `.`, so
//! the `.` cannot make two pairs meet in one name; at most 7 + 63 + 1 + 128 characters.
//! **Dead-letter topics** follow the subscription: `dead-letter-<name>`, and
//! `dead-letter-<name>.<table>` per table of `tables`. Each subscription's dead letters are
//! read back through a subscription of their own on that topic
//! (`ledgerhost_core::ledger::dead_letter_subscription`); one topic per plugin would put
//! every table's dead letters on each table's dead-letter subscription, and a redrive would
//! send them to the wrong table's topic.

/// The ledger subscription feeding plugin `plugin`: `plugin-<plugin>` when it reads one
/// `table` or a `topic` (`per_table: None`), `plugin-<plugin>.<table>` for each table of a
/// `subscription.tables` list.
pub fn subscription_name(plugin: &str, per_table: Option<&str>) -> String {
    match per_table {
        None => format!("plugin-{plugin}"),
        Some(table) => format!("plugin-{plugin}.{table}"),
    }
}

/// The dead-letter topic of the subscription [`subscription_name`] gives for the same
/// arguments: `dead-letter-<plugin>`, or `dead-letter-<plugin>.<table>` per table of a
/// `subscription.tables` list.
pub fn dead_letter_topic(plugin: &str, per_table: Option<&str>) -> String {
    match per_table {
        None => format!("dead-letter-{plugin}"),
        Some(table) => format!("dead-letter-{plugin}.{table}"),
    }
}

/// The longest plugin name.
pub const MAX_PLUGIN_NAME_LEN: usize = 63;

/// A name that breaks its rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// A plugin name.
    #[error(
        "plugin name `{name}` is not valid ({problem}): use 1 to {MAX_PLUGIN_NAME_LEN} \
         lower-case letters, digits and `-`, starting with a letter (it names the manifest, \
         the .wasm file, the crate and the plugin's Pub/Sub subscription)"
    )]
    Plugin {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A bucket or object name.
    #[error(
        "{what} `{name}` is not allowed ({problem}): use a non-empty relative name without \
         NUL, `\\` or `.`/`..` segments"
    )]
    Path {
        /// `bucket` or `object name`.
        what: &'static str,
        /// The name as given.
        name: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A bucket name with a `/`.
    #[error("bucket `{name}` may not contain `/`: a bucket is one path segment")]
    BucketSlash {
        /// The name as given.
        name: String,
    },
    /// A key-value key.
    #[error("key {key:?} is not allowed: keys must be non-empty and NUL-free")]
    Key {
        /// The key as given.
        key: String,
    },
}

/// Checks a plugin name (see the module documentation for the rule and why).
pub fn check_plugin_name(name: &str) -> Result<(), NameError> {
    let problem = if name.is_empty() {
        Some("empty")
    } else if name.len() > MAX_PLUGIN_NAME_LEN {
        Some("too long")
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        Some("it must start with a lower-case letter")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        Some("only lower-case letters, digits and `-`")
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(NameError::Plugin {
            name: name.to_string(),
            problem,
        }),
    }
}

/// Checks an object name: non-empty, relative, no NUL or `\`, no `.` or `..` segment, so it
/// cannot climb out of its bucket on any backend.
pub fn check_object_name(name: &str) -> Result<(), NameError> {
    check_path("object name", name)
}

/// Checks a bucket name: an object name's rule, and one segment (no `/`).
pub fn check_bucket_name(name: &str) -> Result<(), NameError> {
    check_path("bucket", name)?;
    if name.contains('/') {
        return Err(NameError::BucketSlash {
            name: name.to_string(),
        });
    }
    Ok(())
}

fn check_path(what: &'static str, name: &str) -> Result<(), NameError> {
    let problem = if name.is_empty() {
        Some("empty")
    } else if name.starts_with('/') {
        Some("absolute")
    } else if name.contains('\0') {
        Some("contains NUL")
    } else if name.contains('\\') {
        Some("contains `\\`")
    } else if name.split('/').any(|seg| seg == ".." || seg == ".") {
        Some("has a `.` or `..` segment")
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(NameError::Path {
            what,
            name: name.to_string(),
            problem,
        }),
    }
}

/// Checks a key-value key: non-empty and NUL-free.
pub fn check_key(key: &str) -> Result<(), NameError> {
    if key.is_empty() || key.contains('\0') {
        return Err(NameError::Key {
            key: key.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_names() {
        for good in ["filter", "python-filter", "a", "v2", &"a".repeat(63)] {
            assert!(check_plugin_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "9lives",
            "-x",
            "Filter",
            "a_b",
            "a.b",
            "é",
            &"a".repeat(64),
        ] {
            let e = check_plugin_name(bad).unwrap_err().to_string();
            assert!(e.contains("starting with a letter"), "{e}");
        }
    }

    #[test]
    fn subscription_and_dead_letter_names() {
        assert_eq!(subscription_name("archiver", None), "plugin-archiver");
        assert_eq!(
            subscription_name("archiver", Some("orders")),
            "plugin-archiver.orders"
        );
        // `a` on `b_c` and `a-b` on `c` stay apart.
        assert_ne!(
            subscription_name("a", Some("b_c")),
            subscription_name("a-b", Some("c"))
        );
        assert_eq!(dead_letter_topic("archiver", None), "dead-letter-archiver");
        assert_eq!(
            dead_letter_topic("archiver", Some("orders")),
            "dead-letter-archiver.orders"
        );
    }

    #[test]
    fn object_and_bucket_names() {
        assert!(check_object_name("a/b.avro").is_ok());
        for bad in ["", "/etc", "a/../b", "./a", "..", "a\\b", "a\0"] {
            let e = check_object_name(bad).unwrap_err().to_string();
            assert!(e.contains("object name") && e.contains(".."), "{e}");
        }
        assert!(check_bucket_name("archive-orders").is_ok());
        assert!(
            check_bucket_name("a/b")
                .unwrap_err()
                .to_string()
                .contains("`/`")
        );
        assert!(check_key("k").is_ok());
        assert!(check_key("").unwrap_err().to_string().contains("NUL-free"));
    }
}
