//! Credentials (feature `auth`): what a backend that sends requests to Google needs, and the
//! only part of this crate that pulls in Google's auth library.

use std::fmt;

use google_cloud_auth::credentials::{AccessTokenCredentials, Credentials};

use crate::endpoint::{AuthMode, Endpoint, Service};

/// What to do when application default credentials cannot be loaded; part of
/// [`Error::Credentials`].
const ADC_HINT: &str = "set GOOGLE_APPLICATION_CREDENTIALS or run `gcloud auth \
                        application-default login`";

impl Endpoint {
    /// Anonymous credentials for a client library against an emulator; `None` leaves the
    /// library's default (application default credentials).
    pub fn client_credentials(&self) -> Option<Credentials> {
        self.is_emulator()
            .then(|| google_cloud_auth::credentials::anonymous::Builder::new().build())
    }
}

/// Why credentials or a token could not be had.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Application default credentials could not be loaded.
    #[error("cannot load Google application default credentials: {source}; {ADC_HINT}")]
    Credentials {
        /// What the auth library reported.
        #[source]
        source: google_cloud_auth::build_errors::Error,
    },
    /// The credentials gave no access token.
    #[error("cannot get an access token for {service}: {source}")]
    Token {
        /// The service the token was for.
        service: &'static str,
        /// What the auth library reported.
        #[source]
        source: google_cloud_auth::errors::CredentialsError,
    },
}

/// The credentials of one backend: none (an emulator), or a token source; cheap to clone.
#[derive(Clone)]
pub struct Auth {
    service: &'static str,
    credentials: Option<AccessTokenCredentials>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("service", &self.service)
            .field("anonymous", &self.is_anonymous())
            .finish()
    }
}

impl Auth {
    /// The credentials `mode` asks for against `endpoint` of `service`; loads application
    /// default credentials (no request is sent) unless anonymous.
    pub fn new(service: &Service, endpoint: &Endpoint, mode: AuthMode) -> Result<Auth, Error> {
        let anonymous = match mode {
            AuthMode::Anonymous => true,
            AuthMode::ApplicationDefault => false,
            AuthMode::Auto => endpoint.is_emulator(),
        };
        let credentials = if anonymous {
            None
        } else {
            Some(
                google_cloud_auth::credentials::Builder::default()
                    .with_scopes([service.scope])
                    .build_access_token_credentials()
                    .map_err(|source| Error::Credentials { source })?,
            )
        };
        Ok(Auth {
            service: service.name,
            credentials,
        })
    }

    /// True when requests go without an `Authorization` header.
    pub fn is_anonymous(&self) -> bool {
        self.credentials.is_none()
    }

    /// The bearer token for the next request (`None` when anonymous); the auth library
    /// caches and refreshes it.
    pub async fn bearer(&self) -> Result<Option<String>, Error> {
        match &self.credentials {
            None => Ok(None),
            Some(c) => c
                .access_token()
                .await
                .map(|t| Some(t.token))
                .map_err(|source| Error::Token {
                    service: self.service,
                    source,
                }),
        }
    }
}
