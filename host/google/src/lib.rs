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

#[cfg(feature = "auth")]
mod auth;
#[cfg(feature = "grpc")]
pub mod grpc;
#[cfg(feature = "auth")]
pub use auth::{Auth, Error};

mod endpoint;

pub use endpoint::{
    AuthMode, BIGQUERY, Endpoint, Origin, PUBSUB, SPANNER, STORAGE, Service, check_endpoint, url,
};

/// The environment variable naming the Google Cloud project of every Google backend whose
/// config names none, as Google's client libraries and Cloud Run use it.
pub const PROJECT_ENV: &str = "GOOGLE_CLOUD_PROJECT";

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
