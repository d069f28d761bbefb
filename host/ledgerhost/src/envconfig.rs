//! Environment overrides of the config file: `LEDGERHOST__<SECTION>__<KEY>=<value>`.
//!
//! A deployment keeps one config file and changes a few keys per environment (a port, a
//! project id, a Redis URL) without templating it. The variable name is the key path, its
//! parts separated by `__`, upper-cased, `-` written as `_`; a numeric part indexes an array
//! (`LEDGERHOST__TABLES__0__INTERVAL_MS=100`). The value is read as a TOML value when it
//! parses as one (`100`, `true`, `"quoted text"`, `["a", "b"]`), else taken as a string.

/// Prefix of override variables.
pub const PREFIX: &str = "LEDGERHOST__";

/// The override variables of this process, sorted by name (so the outcome is deterministic).
pub fn from_process_env() -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with(PREFIX))
        .collect();
    vars.sort();
    vars
}

/// The dotted config key a variable names (`LEDGERHOST__HOST__DATA_DIR` → `host.data-dir`).
pub fn key_of(var: &str) -> Result<Vec<String>, String> {
    let rest = var
        .strip_prefix(PREFIX)
        .ok_or_else(|| format!("does not start with {PREFIX}"))?;
    let parts: Vec<String> = rest
        .split("__")
        .map(|p| p.to_ascii_lowercase().replace('_', "-"))
        .collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!(
            "is not of the form {PREFIX}SECTION__KEY (parts separated by a double underscore)"
        ));
    }
    Ok(parts)
}

/// Printable form of a key path: `tables[0].interval-ms`.
pub fn dotted(parts: &[String]) -> String {
    let mut out = String::new();
    for p in parts {
        if p.parse::<usize>().is_ok() {
            out.push_str(&format!("[{p}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(p);
        }
    }
    out
}

/// Reads an override value: a TOML value when it is one, else the text itself.
fn value_of(text: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {text}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(text.into())),
        Err(_) => toml::Value::String(text.into()),
    }
}

/// Applies one override to the parsed file. Returns the dotted key it set.
pub fn apply(root: &mut toml::Value, var: &str, text: &str) -> Result<String, String> {
    let parts = key_of(var)?;
    let key = dotted(&parts);
    let mut value = value_of(text);
    let mut node: &mut toml::Value = root;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if let Ok(index) = part.parse::<usize>() {
            let toml::Value::Array(items) = node else {
                return Err(format!(
                    "sets `{key}`, but `{}` is not a list",
                    dotted(&parts[..i])
                ));
            };
            if index > items.len() {
                return Err(format!(
                    "sets `{key}`, but `{}` has {} entries: use index {} at most (a new entry \
                     is appended at index {})",
                    dotted(&parts[..i]),
                    items.len(),
                    items.len(),
                    items.len()
                ));
            }
            if index == items.len() {
                items.push(toml::Value::Table(toml::Table::new()));
            }
            node = &mut items[index];
        } else {
            let toml::Value::Table(table) = node else {
                return Err(format!(
                    "sets `{key}`, but `{}` is not a section",
                    dotted(&parts[..i])
                ));
            };
            if last {
                // A key the file already holds as text stays text (`start = "1700000000"`).
                if let (Some(toml::Value::String(_)), false) = (
                    table.get(part.as_str()),
                    matches!(value, toml::Value::String(_)),
                ) {
                    value = toml::Value::String(text.into());
                }
                table.insert(part.clone(), value);
                return Ok(key);
            }
            let next_is_index = parts[i + 1].parse::<usize>().is_ok();
            node = table.entry(part.clone()).or_insert_with(|| {
                if next_is_index {
                    toml::Value::Array(Vec::new())
                } else {
                    toml::Value::Table(toml::Table::new())
                }
            });
        }
        if last {
            *node = value;
            return Ok(key);
        }
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply_to(text: &str, var: &str, value: &str) -> Result<toml::Value, String> {
        let mut t = toml::Value::Table(toml::from_str(text).unwrap());
        apply(&mut t, var, value)?;
        Ok(t)
    }

    #[test]
    fn values_are_typed_and_text_stays_text() {
        let t = apply_to("[host]\n", "LEDGERHOST__HOST__DRAIN_TIMEOUT_MS", "500").unwrap();
        assert_eq!(t["host"]["drain-timeout-ms"].as_integer(), Some(500));
        let t = apply_to("", "LEDGERHOST__ADMIN__LISTEN", "0.0.0.0:9000").unwrap();
        assert_eq!(t["admin"]["listen"].as_str(), Some("0.0.0.0:9000"));
        let t = apply_to(
            "[[tables]]\nname = \"orders\"\nstart = \"now\"\n",
            "LEDGERHOST__TABLES__0__START",
            "1700000000000000",
        )
        .unwrap();
        assert_eq!(t["tables"][0]["start"].as_str(), Some("1700000000000000"));
        let t = apply_to("", "LEDGERHOST__TABLES__0__NAME", "orders").unwrap();
        assert_eq!(t["tables"][0]["name"].as_str(), Some("orders"));
    }

    #[test]
    fn a_bad_index_or_shape_is_named() {
        let err = apply_to("", "LEDGERHOST__TABLES__3__NAME", "x").unwrap_err();
        assert!(
            err.contains("tables[3].name") && err.contains("0 entries"),
            "{err}"
        );
        let err = apply_to(
            "[admin]\nlisten = \"x\"\n",
            "LEDGERHOST__ADMIN__LISTEN__PORT",
            "1",
        )
        .unwrap_err();
        assert!(err.contains("`admin.listen` is not a section"), "{err}");
    }

    #[test]
    fn names_map_to_kebab_case_keys() {
        assert_eq!(
            dotted(&key_of("LEDGERHOST__HOST__DRAIN_TIMEOUT_MS").unwrap()),
            "host.drain-timeout-ms"
        );
        assert_eq!(
            dotted(&key_of("LEDGERHOST__TABLES__0__INTERVAL_MS").unwrap()),
            "tables[0].interval-ms"
        );
        assert!(key_of("LEDGERHOST__HOST____X").is_err());
    }
}
