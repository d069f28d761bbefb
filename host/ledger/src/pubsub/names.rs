//! Ledger names as Pub/Sub resource ids and back, and attribute filters as Pub/Sub filter
//! text.

use std::collections::BTreeMap;

use ledgerhost_core::{PortError, PortResult};

use super::error::BACKEND;

/// The Pub/Sub id used for a ledger topic or subscription name.
pub fn resource_id(name: &str) -> String {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.~+%".contains(c);
    let valid = name.len() >= 3
        && name.len() <= 255
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && !name.starts_with("goog")
        && name.chars().all(allowed);
    if valid {
        return name.to_string();
    }
    let mut out = String::from("lh-");
    for c in name.chars() {
        if allowed(c) && c != '%' {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// The Pub/Sub filter for an attribute-equality filter (`attributes.k = "v" AND ...`).
pub fn attribute_filter(filter: &BTreeMap<String, String>) -> PortResult<String> {
    let mut parts = Vec::new();
    for (k, v) in filter {
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(PortError::invalid(
                BACKEND,
                format!(
                    "attribute filter key `{k}` cannot be expressed as a Pub/Sub filter \
                 (use letters, digits and `_`)"
                ),
            ));
        }
        let escaped = v.replace('\\', "\\\\").replace('"', "\\\"");
        parts.push(format!("attributes.{k} = \"{escaped}\""));
    }
    Ok(parts.join(" AND "))
}

/// The ledger name of a Pub/Sub topic or subscription id: the inverse of [`resource_id`]
/// (an id that does not decode to a name mapping back to it is a name as is).
pub fn ledger_name(id: &str) -> String {
    if let Some(rest) = id.strip_prefix("lh-") {
        let bytes = rest.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = (bytes[i] == b'%')
                .then(|| rest.get(i + 1..i + 3))
                .flatten()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) => {
                    out.push(b);
                    i += 3;
                }
                None => {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
        }
        if let Ok(name) = String::from_utf8(out)
            && resource_id(&name) == id
        {
            return name;
        }
    }
    id.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_ids_are_valid_and_distinct() {
        assert_eq!(resource_id("orders"), "orders");
        assert_eq!(resource_id("t"), "lh-t");
        assert_eq!(resource_id("a b/c"), "lh-a%20b%2Fc");
        assert_eq!(resource_id("9lives"), "lh-9lives");
        assert_ne!(resource_id("a%b"), resource_id("a%25b"));
    }

    #[test]
    fn ledger_names_invert_resource_ids() {
        for name in [
            "orders", "t", "a b/c", "9lives", "a%b", "a%25b", "lh-abc", "día", "goog-x",
        ] {
            assert_eq!(ledger_name(&resource_id(name)), name, "{name}");
        }
    }

    #[test]
    fn filters_are_quoted() {
        let mut f = BTreeMap::new();
        f.insert("table".to_string(), "or\"ders".to_string());
        f.insert("client".to_string(), "7".to_string());
        assert_eq!(
            attribute_filter(&f).unwrap(),
            "attributes.client = \"7\" AND attributes.table = \"or\\\"ders\""
        );
        f.insert("bad key".into(), "x".into());
        assert!(attribute_filter(&f).is_err());
    }
}
