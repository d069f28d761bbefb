//! Where a Google service is for a backend (the configured endpoint, the emulator variable,
//! or Google's URL) and how its requests authenticate.

use std::fmt;

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

/// Cloud Pub/Sub (admin over REST and publishing over gRPC by the client crate, consuming
/// over REST).
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
