//! Which origins a plugin may reach: `grants.http` entries are `scheme://host[:port]`, the
//! port `*` meaning any port, a missing port the scheme's default (80, 443). The rule itself
//! is `ledgerhost_manifest::grant::Rule::Origin`, the one `MockHost` and the manifest check use.

use http::Uri;
use ledgerhost_manifest::grant::Rule;

/// True when `uri`'s scheme, host and port match one of the `grants.http` entries.
pub fn origin_allowed(entries: &[String], uri: &Uri) -> bool {
    Rule::Origin.matches(entries, &uri.to_string())
}

/// Ok when `entry` is `scheme://host[:port|:*]` with scheme http or https; else why not.
pub fn check_entry(entry: &str) -> Result<(), String> {
    Rule::Origin.check_entry(entry)
}

/// The origin of `uri` as it would be written in `grants.http` (`http://127.0.0.1:8080`;
/// the port only when the URI names one), or `None` without a scheme and host.
pub fn origin_of(uri: &Uri) -> Option<String> {
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let host = uri.host()?.to_ascii_lowercase();
    Some(match uri.port_u16() {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(entries: &[&str], uri: &str) -> bool {
        let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        origin_allowed(&entries, &uri.parse().unwrap())
    }

    #[test]
    fn scheme_host_and_default_port_must_match() {
        let g = ["https://hooks.example.com"];
        assert!(allowed(&g, "https://hooks.example.com/a/b?c=d"));
        assert!(allowed(&g, "https://HOOKS.example.com:443/"));
        assert!(!allowed(&g, "http://hooks.example.com/"), "other scheme");
        assert!(
            !allowed(&g, "https://hooks.example.com:8443/"),
            "other port"
        );
        assert!(!allowed(&g, "https://evil.example.com/"), "other host");
        assert!(
            !allowed(&g, "https://hooks.example.com.evil.com/"),
            "suffix host"
        );
        assert!(
            !allowed(&g, "https://user@evil.com/"),
            "userinfo is not the host"
        );
    }

    #[test]
    fn a_star_port_is_any_port_of_that_host() {
        let g = ["http://127.0.0.1:*"];
        assert!(allowed(&g, "http://127.0.0.1:5555/hook"));
        assert!(allowed(&g, "http://127.0.0.1/hook"));
        assert!(!allowed(&g, "https://127.0.0.1:5555/"));
        assert!(!allowed(&g, "http://localhost:5555/"));
    }

    #[test]
    fn an_explicit_port_is_that_port_only() {
        let g = ["http://127.0.0.1:8080/", "http://[::1]:9000"];
        assert!(allowed(&g, "http://127.0.0.1:8080/x"));
        assert!(!allowed(&g, "http://127.0.0.1:8081/x"));
        assert!(allowed(&g, "http://[::1]:9000/"));
        assert!(!allowed(&g, "http://[::1]:9001/"));
    }

    #[test]
    fn malformed_entries_and_uris_match_nothing() {
        for bad in [
            "hooks.example.com",
            "https://",
            "https://h/path",
            "https://h?q",
            "https://u@h",
            "https://h:port",
            "ftp://h",
        ] {
            assert!(!allowed(&[bad], "https://h/"), "{bad}");
        }
        assert!(!allowed(&["https://h"], "/relative"));
        assert!(check_entry("http://127.0.0.1:*").is_ok());
        let why = check_entry("https://h/path").unwrap_err();
        assert!(
            why.contains("https://h/path") && why.contains("origin"),
            "{why}"
        );
        assert!(!allowed(&[], "https://h/"), "no grant, nothing allowed");
    }

    #[test]
    fn the_origin_to_grant_is_named_as_written_in_the_manifest() {
        let uri: Uri = "http://127.0.0.1:5555/hook?x=1".parse().unwrap();
        assert_eq!(origin_of(&uri).unwrap(), "http://127.0.0.1:5555");
        let uri: Uri = "https://Hooks.Example.com/x".parse().unwrap();
        assert_eq!(origin_of(&uri).unwrap(), "https://hooks.example.com");
    }
}
