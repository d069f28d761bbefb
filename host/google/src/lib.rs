//! How a ledgerhost backend finds and authenticates to a Google Cloud service: one rule for
//! Cloud Storage, BigQuery, Pub/Sub and Spanner.
//!
//! - Endpoint ([`Service::endpoint`]): the configured value, else the service's
//!   `*_EMULATOR_HOST` variable (as Google's own clients read it), else Google's URL. A
//!   `host:port` gets `http://`, the emulators' plaintext scheme ([`url`]).
//! - Emulator: an endpoint from the emulator variable, or a plaintext `http://` one. Google
//!   serves only TLS, so a plaintext endpoint can only be an emulator.
//! - Credentials (`Auth`, feature `auth`): none against an emulator, Google application default credentials
//!   otherwise, with one error message when they cannot be loaded.
//! - Project ([`project`]): the configured one, else [`PROJECT_ENV`].
//!
//! Built only when a Google backend is (the `gcs`, `bigquery`, `pubsub` and `spanner`
//! features); it holds no runtime and sends nothing but token requests.

use std::fmt;

#[cfg(feature = "auth")]
mod auth;
#[cfg(feature = "grpc")]
pub mod grpc;
#[cfg(feature = "auth")]
pub use auth::{Auth, Error};

/// The environment variable naming the Google Cloud project of every Google backend whose
/// config names none, as Google's client libraries and Cloud Run use it.
pub const PROJECT_ENV: &str = "GOOGLE_CLOUD_PROJECT";

/// A Google service as a backend reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    /// The service's name in messages, e.g. `"Cloud Storage"`.
    pub name: &'static str,
    /// The variable its emulator is announced in, e.g. `STORAGE_EMULATOR_HOST`.
    pub emulator_var: &'static str,
    /// Google's endpoint, e.g. `https://storage.googleapis.com`.
    pub google_url: &'static str,
    /// The OAuth scope its tokens are asked for.
    pub scope: &'static str,
}

/// Cloud Storage (JSON API; fake-gcs-server as the emulator).
pub const STORAGE: Service = Service {
    name: "Cloud Storage",
    emulator_var: "STORAGE_EMULATOR_HOST",
    google_url: "https://storage.googleapis.com",
    scope: "https://www.googleapis.com/auth/devstorage.read_write",
};

/// BigQuery (REST API; bigquery-emulator as the emulator).
pub const BIGQUERY: Service = Service {
    name: "BigQuery",
    emulator_var: "BIGQUERY_EMULATOR_HOST",
    google_url: "https://bigquery.googleapis.com",
    scope: "https://www.googleapis.com/auth/bigquery",
};

/// Cloud Pub/Sub (gRPC admin plane, REST data plane).
pub const PUBSUB: Service = Service {
    name: "Pub/Sub",
    emulator_var: "PUBSUB_EMULATOR_HOST",
    google_url: "https://pubsub.googleapis.com",
    scope: "https://www.googleapis.com/auth/pubsub",
};

/// Cloud Spanner (gRPC data plane, REST admin plane).
pub const SPANNER: Service = Service {
    name: "Spanner",
    emulator_var: "SPANNER_EMULATOR_HOST",
    google_url: "https://spanner.googleapis.com",
    scope: "https://www.googleapis.com/auth/spanner.data",
};

/// Where an [`Endpoint`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The backend's config set it.
    Configured,
    /// The service's emulator variable set it.
    EmulatorVar(&'static str),
    /// Neither did: Google's endpoint.
    Google,
}

/// A resolved endpoint of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Base URL without a trailing slash.
    pub url: String,
    /// Where it came from.
    pub origin: Origin,
}

impl Endpoint {
    /// True for an emulator: set by the emulator variable, or plaintext `http://`.
    pub fn is_emulator(&self) -> bool {
        matches!(self.origin, Origin::EmulatorVar(_)) || self.url.starts_with("http://")
    }

    /// The URL to hand a client library, `None` for Google's endpoint (the library's default).
    pub fn override_url(&self) -> Option<&str> {
        match self.origin {
            Origin::Google => None,
            _ => Some(&self.url),
        }
    }
}

/// For messages: the URL, and why it is the one used.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.origin {
            Origin::Configured => write!(f, "{}", self.url),
            Origin::EmulatorVar(var) => write!(f, "{} ({var})", self.url),
            Origin::Google => write!(f, "{} (application default credentials)", self.url),
        }
    }
}

impl Service {
    /// The endpoint: `configured`, else the emulator variable in this process's
    /// environment, else Google's.
    pub fn endpoint(&self, configured: Option<&str>) -> Endpoint {
        self.endpoint_with(configured, std::env::var(self.emulator_var).ok().as_deref())
    }

    /// [`Self::endpoint`] with the emulator variable's value given (blank counts as unset).
    pub fn endpoint_with(&self, configured: Option<&str>, emulator: Option<&str>) -> Endpoint {
        let configured = configured.filter(|s| !s.trim().is_empty());
        match (configured, emulator.filter(|s| !s.trim().is_empty())) {
            (Some(c), _) => Endpoint {
                url: url(c),
                origin: Origin::Configured,
            },
            (None, Some(e)) => Endpoint {
                url: url(e),
                origin: Origin::EmulatorVar(self.emulator_var),
            },
            (None, None) => Endpoint {
                url: self.google_url.to_string(),
                origin: Origin::Google,
            },
        }
    }
}

/// An endpoint setting (or emulator variable) as a base URL: trimmed, no trailing slash,
/// `host:port` given `http://`.
pub fn url(endpoint: &str) -> String {
    let e = endpoint.trim().trim_end_matches('/');
    if e.starts_with("http://") || e.starts_with("https://") {
        e.to_string()
    } else {
        format!("http://{e}")
    }
}

/// Checks an endpoint setting: `http(s)://host:port[/...]` or `host:port`; the error is the
/// problem, for the caller to name its key.
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .unwrap_or(endpoint);
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() || rest.contains("://") || endpoint.contains(char::is_whitespace) {
        return Err(format!(
            "must be an endpoint like `http://127.0.0.1:8085` or `127.0.0.1:8085`, not \
             `{endpoint}`"
        ));
    }
    Ok(())
}

/// The problem of a missing project setting, `when` e.g. `ledger.kind = "pubsub"`: where
/// a project may come from.
pub fn missing_project(when: &str) -> String {
    format!(
        "is required when {when}: set it to the Google Cloud project id, or set the \
         environment variable {PROJECT_ENV}"
    )
}

/// The project: `configured` when it names one, else [`PROJECT_ENV`] of this process.
pub fn project(configured: Option<&str>) -> Option<String> {
    configured
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .or_else(project_from_env)
}

/// The project from [`PROJECT_ENV`] in this process's environment (unset or blank: `None`).
pub fn project_from_env() -> Option<String> {
    std::env::var(PROJECT_ENV)
        .ok()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
}

/// How a backend's requests are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Anonymous against an emulator ([`Endpoint::is_emulator`]), application default
    /// credentials against Google.
    #[default]
    Auto,
    /// No `Authorization` header.
    Anonymous,
    /// Google application default credentials (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's ADC
    /// file, or the metadata server).
    ApplicationDefault,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (configured, emulator variable, URL, origin, emulator?)
    type Case<'a> = (Option<&'a str>, Option<&'a str>, &'a str, Origin, bool);

    /// One table over the four services: (configured, emulator variable) → (URL, origin,
    /// emulator?).
    #[test]
    fn endpoint_resolution_honours_the_emulator_variable() {
        for s in [STORAGE, BIGQUERY, PUBSUB, SPANNER] {
            let google = Endpoint {
                url: s.google_url.to_string(),
                origin: Origin::Google,
            };
            let cases: [Case; 8] = [
                (None, None, s.google_url, Origin::Google, false),
                (None, Some(" "), s.google_url, Origin::Google, false),
                (Some(""), None, s.google_url, Origin::Google, false),
                (
                    None,
                    Some("localhost:4443"),
                    "http://localhost:4443",
                    Origin::EmulatorVar(s.emulator_var),
                    true,
                ),
                (
                    None,
                    Some("https://emulator.internal/"),
                    "https://emulator.internal",
                    Origin::EmulatorVar(s.emulator_var),
                    true,
                ),
                (
                    Some("http://127.0.0.1:1/"),
                    Some("localhost:4443"),
                    "http://127.0.0.1:1",
                    Origin::Configured,
                    true,
                ),
                (
                    Some(" 127.0.0.1:9010 "),
                    None,
                    "http://127.0.0.1:9010",
                    Origin::Configured,
                    true,
                ),
                (
                    Some(s.google_url),
                    None,
                    s.google_url,
                    Origin::Configured,
                    false,
                ),
            ];
            for (configured, var, url, origin, emulator) in cases {
                let e = s.endpoint_with(configured, var);
                assert_eq!(
                    (e.url.as_str(), e.origin, e.is_emulator()),
                    (url, origin, emulator),
                    "{}: configured {configured:?}, {} {var:?}",
                    s.name,
                    s.emulator_var
                );
                assert_eq!(e.override_url().is_none(), e == google);
                assert_eq!(e.client_credentials().is_some(), emulator);
            }
        }
    }

    #[test]
    fn messages_say_where_the_endpoint_came_from() {
        assert_eq!(
            PUBSUB.endpoint_with(None, Some("h:1")).to_string(),
            "http://h:1 (PUBSUB_EMULATOR_HOST)"
        );
        assert_eq!(
            PUBSUB.endpoint_with(Some("h:1"), None).to_string(),
            "http://h:1"
        );
        assert_eq!(
            PUBSUB.endpoint_with(None, None).to_string(),
            "https://pubsub.googleapis.com (application default credentials)"
        );
    }

    #[cfg(feature = "auth")]
    #[tokio::test]
    async fn an_emulator_goes_anonymous_unless_told_otherwise() {
        let emulator = STORAGE.endpoint_with(Some("http://127.0.0.1:9"), None);
        for mode in [AuthMode::Auto, AuthMode::Anonymous] {
            let auth = Auth::new(&STORAGE, &emulator, mode).unwrap();
            assert!(auth.is_anonymous(), "{mode:?}");
            assert_eq!(auth.bearer().await.unwrap(), None);
        }
        let google = STORAGE.endpoint_with(None, None);
        let auth = Auth::new(&STORAGE, &google, AuthMode::Anonymous).unwrap();
        assert!(auth.is_anonymous());
    }

    #[test]
    fn endpoint_settings_are_checked() {
        for ok in ["http://127.0.0.1:8085", "127.0.0.1:8085", "https://h/x"] {
            assert_eq!(check_endpoint(ok), Ok(()), "{ok}");
        }
        for bad in ["", "http://", "http://a://b", "h :1"] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_configured_project_wins() {
        assert_eq!(project(Some(" p1 ")).as_deref(), Some("p1"));
    }
}
