//! The ledger's clients (admin and publishing over the official client, consuming over
//! REST) and the state they share: what this process ensured, its subscriptions, its
//! background readers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use google_cloud_gax::retry_policy::RetryPolicyExt as _;
use google_cloud_pubsub::client::{BasePublisher, Publisher, SubscriptionAdmin, TopicAdmin};
use google_cloud_pubsub::retry_policy::RetryableErrors;
use ledgerhost_core::{PortError, PortResult};
use tracing::{info, warn};

use super::buffer::SubState;
use super::config::PubSubConfig;
use super::error::BACKEND;
use super::names::resource_id;
use super::rest::RestClient;

/// The clients and the per-subscription state every part of the ledger works with.
pub(super) struct Inner {
    pub(super) config: PubSubConfig,
    pub(super) topic_admin: TopicAdmin,
    pub(super) sub_admin: SubscriptionAdmin,
    /// The gRPC connection every topic's [`Publisher`] shares.
    pub(super) base_publisher: BasePublisher,
    /// A publisher per topic, built on first publish (`publish.rs`).
    pub(super) publishers: Mutex<HashMap<String, Publisher>>,
    /// Pull, Acknowledge, ModifyAckDeadline.
    pub(super) rest: RestClient,
    pub(super) subs: Mutex<HashMap<String, Arc<SubState>>>,
    pub(super) readers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Set by `release`: readers finish their Pull in flight and stop.
    pub(super) stopping: tokio::sync::watch::Sender<bool>,
    /// Topics seen existing, and how many times each was found lost and re-created.
    pub(super) generations: Mutex<HashMap<String, u64>>,
}

/// Points an admin client builder at `$endpoint`, anonymous against an emulator.
macro_rules! configure {
    ($builder:expr, $endpoint:expr) => {{
        let mut b = $builder;
        if let Some(c) = $endpoint.client_credentials() {
            b = b.with_credentials(c);
        }
        if let Some(url) = $endpoint.override_url() {
            b = b.with_endpoint(url.to_string());
        }
        b
    }};
}

impl Inner {
    /// Builds the clients (nothing is created on the server yet).
    pub(super) async fn connect(config: PubSubConfig) -> PortResult<Self> {
        let endpoint = config.resolved_endpoint();
        let ctx = |what: &str, e: &dyn std::fmt::Display| {
            PortError::unavailable(
                BACKEND,
                format!("cannot build the Pub/Sub {what} client (endpoint {endpoint}): {e}"),
            )
        };
        let topic_admin = configure!(TopicAdmin::builder(), &endpoint)
            .build()
            .await
            .map_err(|e| ctx("topic admin", &e))?;
        let sub_admin = configure!(SubscriptionAdmin::builder(), &endpoint)
            .build()
            .await
            .map_err(|e| ctx("subscription admin", &e))?;
        // The publisher retries what is transient (unreachable, UNAVAILABLE, ...) for as long
        // as a publish may take; past it, `publish.rs` reports the error.
        let base_publisher = configure!(BasePublisher::builder(), &endpoint)
            .with_retry_policy(RetryableErrors.with_time_limit(config.publish_retry_for))
            .build()
            .await
            .map_err(|e| ctx("publisher", &e))?;
        let rest = RestClient::new(&endpoint).map_err(|e| ctx("REST", &e))?;
        info!(project = %config.project, endpoint = %endpoint, "pubsub ledger connected");
        Ok(Inner {
            config,
            topic_admin,
            sub_admin,
            base_publisher,
            publishers: Mutex::default(),
            rest,
            subs: Mutex::default(),
            readers: Mutex::default(),
            stopping: tokio::sync::watch::Sender::new(false),
            generations: Mutex::default(),
        })
    }

    /// The Pub/Sub path of a ledger topic.
    pub(super) fn topic_path(&self, topic: &str) -> String {
        format!(
            "projects/{}/topics/{}",
            self.config.project,
            resource_id(topic)
        )
    }

    /// The Pub/Sub path of a ledger subscription.
    pub(super) fn subscription_path(&self, sub: &str) -> String {
        format!(
            "projects/{}/subscriptions/{}",
            self.config.project,
            resource_id(sub)
        )
    }

    /// Hands deliveries back to Pub/Sub for redelivery now (deadline 0). A failure only
    /// delays them until their deadline passes.
    pub(super) async fn hand_back(&self, state: &SubState, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        if let Err(e) = self.rest.modify_ack_deadline(&state.path, ids, 0).await {
            warn!(subscription = %state.spec.name, error = %e, n = ids.len(), "cannot hand deliveries back; they return when their deadline passes");
        }
    }

    /// The state of subscription `name`, ensured before by this process.
    pub(super) fn state(&self, subscription: &str) -> PortResult<Arc<SubState>> {
        self.subs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(subscription)
            .cloned()
            .ok_or_else(|| PortError::NotFound {
                backend: BACKEND,
                what: format!(
                    "subscription `{subscription}` (call ensure_subscription first in this process)"
                ),
            })
    }
}
