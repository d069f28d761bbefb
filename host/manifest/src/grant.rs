//! How a grant entry matches what a plugin asks for, written once. Each grant name of a
//! manifest's `[grants]` maps to one [`Rule`] in [`GRANTS`]; the runtime's checks and the
//! SDK's `MockHost` both call [`Rule::matches`].

/// How the entries of one grant match a requested name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Equal to an entry, or starting with it when the entry ends in `*` (`archive-*`).
    Name,
    /// Starting with an entry (`view/` grants every key under `view/`).
    Prefix,
    /// An outbound HTTP URL whose origin (scheme, host, port) equals an entry's
    /// (`https://hooks.example.com`, `http://127.0.0.1:*` for any port); the path is not
    /// part of the match. Entries name an origin only: a path, query or user is refused.
    Origin,
}

/// Every grant a manifest may hold, with its rule: adding a capability is one line here.
pub const GRANTS: &[(&str, Rule)] = &[
    ("buckets", Rule::Name),
    ("key-prefixes", Rule::Prefix),
    ("warehouse-tables", Rule::Name),
    ("topics", Rule::Name),
    ("config", Rule::Name),
    ("http", Rule::Origin),
];

/// The names of [`GRANTS`], in order.
pub fn grant_names() -> Vec<&'static str> {
    GRANTS.iter().map(|(n, _)| *n).collect()
}

/// The rule of a grant name; `None` for a name no capability defines.
pub fn rule_for(grant: &str) -> Option<Rule> {
    GRANTS.iter().find(|(n, _)| *n == grant).map(|(_, r)| *r)
}

/// True when `name` matches an entry under [`Rule::Name`] (exact, or prefix for entries
/// ending in `*`).
pub fn grant_matches(entries: &[String], name: &str) -> bool {
    Rule::Name.matches(entries, name)
}

impl Rule {
    /// True when `value` is granted by one of `entries`.
    pub fn matches(self, entries: &[String], value: &str) -> bool {
        match self {
            Rule::Name => entries.iter().any(|g| match g.strip_suffix('*') {
                Some(prefix) => value.starts_with(prefix),
                None => g == value,
            }),
            Rule::Prefix => entries.iter().any(|p| value.starts_with(p.as_str())),
            Rule::Origin => {
                let Ok(want) = Origin::parse(value, false) else {
                    return false;
                };
                entries.iter().any(|e| {
                    Origin::parse(e, true).is_ok_and(|g| {
                        g.scheme == want.scheme
                            && g.host == want.host
                            && (g.port.is_none() || g.port == want.port)
                    })
                })
            }
        }
    }

    /// Checks one manifest entry of a grant with this rule; the error says what is wrong.
    pub fn check_entry(self, entry: &str) -> Result<(), String> {
        match self {
            Rule::Name | Rule::Prefix if entry.is_empty() => {
                Err("an empty entry grants nothing (or everything); name it".into())
            }
            Rule::Name | Rule::Prefix => Ok(()),
            Rule::Origin => Origin::parse(entry, true).map(|_| ()),
        }
    }
}

/// Scheme, host and port of a URL; `port: None` is the entry's `*`.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    /// Reads an origin entry (`entry`: `*` port allowed, nothing after the authority but
    /// one `/`) or a URL to match (any path, query and fragment).
    fn parse(text: &str, entry: bool) -> Result<Origin, String> {
        let expected = "expected an origin like `https://hooks.example.com` or \
                        `http://127.0.0.1:*` (scheme, host, optional port or `*`)";
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("`{text}` has no scheme; {expected}"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(format!("`{text}`: only http and https; {expected}")),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if entry && !(tail.is_empty() || tail == "/") {
            return Err(format!(
                "`{text}` has a path, query or fragment; a grant names an origin only \
                 (the path is not checked); {expected}"
            ));
        }
        if authority.contains('@') {
            if entry {
                return Err(format!("`{text}` holds a user name; {expected}"));
            }
            return Err(format!("`{text}` holds a user name"));
        }
        // `[v6]:port`, `host:port`, `host`.
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') => (h, Some(p)),
            _ => (authority, None),
        };
        if host.is_empty() || host == "[]" {
            return Err(format!("`{text}` has no host; {expected}"));
        }
        let port = match port {
            None => Some(default_port),
            Some("*") if entry => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| format!("`{text}`: `{p}` is not a port; {expected}"))?,
            ),
        };
        Ok(Origin {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_and_prefixes() {
        let g = v(&["archive-*", "exact"]);
        assert!(Rule::Name.matches(&g, "archive-orders"));
        assert!(Rule::Name.matches(&g, "exact"));
        assert!(!Rule::Name.matches(&g, "exactly"));
        assert!(!Rule::Name.matches(&g, "other"));
        assert!(Rule::Prefix.matches(&v(&["view/"]), "view/1"));
        assert!(!Rule::Prefix.matches(&v(&["view/"]), "other/1"));
        assert_eq!(rule_for("key-prefixes"), Some(Rule::Prefix));
        assert_eq!(rule_for("bucket"), None);
    }

    #[test]
    fn origins() {
        let g = v(&[
            "https://hooks.example.com",
            "http://127.0.0.1:*",
            "http://[::1]:8080",
        ]);
        assert!(Rule::Origin.matches(&g, "https://hooks.example.com/a/b?c"));
        assert!(Rule::Origin.matches(&g, "https://HOOKS.example.com:443"));
        assert!(!Rule::Origin.matches(&g, "http://hooks.example.com/"));
        assert!(!Rule::Origin.matches(&g, "https://hooks.example.com:8443/"));
        assert!(Rule::Origin.matches(&g, "http://127.0.0.1:8080/x"));
        assert!(Rule::Origin.matches(&g, "http://127.0.0.1/x"));
        assert!(!Rule::Origin.matches(&g, "http://127.0.0.2:8080/x"));
        assert!(Rule::Origin.matches(&g, "http://[::1]:8080/"));
        assert!(!Rule::Origin.matches(&g, "http://[::1]/"));
        assert!(!Rule::Origin.matches(&g, "https://u@hooks.example.com/"));
        for bad in [
            "https://hooks.example.com/path",
            "https://hooks.example.com?q",
            "https://user@hooks.example.com",
            "hooks.example.com",
            "ftp://x",
            "http://x:port",
            "http://",
        ] {
            assert!(Rule::Origin.check_entry(bad).is_err(), "{bad}");
        }
        assert!(
            Rule::Origin
                .check_entry("https://hooks.example.com/")
                .is_ok()
        );
    }
}
