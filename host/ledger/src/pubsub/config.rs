//! Where Pub/Sub is and how hard publishing tries.

use std::time::Duration;

use ledgerhost_google::{Endpoint, PUBSUB};

/// Where Pub/Sub is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PubSubConfig {
    /// Google Cloud project id.
    pub project: String,
    /// Endpoint override, e.g. `http://127.0.0.1:8085`. When `None`, `PUBSUB_EMULATOR_HOST`
    /// is honoured, else Google's endpoint; an emulator goes anonymous, Google with
    /// application default credentials ([`ledgerhost_google`]'s rule).
    pub endpoint: Option<String>,
    /// How long `publish` keeps retrying while Pub/Sub is unreachable or a topic is being
    /// recreated, before it reports the error.
    pub publish_retry_for: Duration,
}

impl PubSubConfig {
    /// A config for `project` with the endpoint from `PUBSUB_EMULATOR_HOST` when set.
    pub fn new(project: impl Into<String>) -> Self {
        PubSubConfig {
            project: project.into(),
            endpoint: None,
            publish_retry_for: Duration::from_secs(60),
        }
    }

    /// The endpoint to use: the explicit one, else `PUBSUB_EMULATOR_HOST`, else Google's.
    pub fn resolved_endpoint(&self) -> Endpoint {
        PUBSUB.endpoint(self.endpoint.as_deref())
    }
}
