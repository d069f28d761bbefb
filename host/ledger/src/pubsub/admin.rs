//! Topics and subscriptions on the server: created when missing, re-created when lost, and
//! an existing subscription checked against its manifest ([`crate::drift`]).

use std::time::Duration;

use google_cloud_gax::error::rpc::Code;
use google_cloud_pubsub::model::{DeadLetterPolicy, RetryPolicy, Subscription, Topic};
use ledgerhost_core::ledger::{SubscriptionSpec, dead_letter_subscription, limits};
use ledgerhost_core::{PortError, PortResult};
use tracing::{info, warn};

use super::client::Inner;
use super::error::{BACKEND, code_of, map_err};
use super::names::{attribute_filter, resource_id};
use crate::drift;

/// Server-side dead-letter budget (Pub/Sub allows 5 to 100); the dispatcher's own, smaller
/// budget normally dead-letters first, with a reason.
pub const MAX_DELIVERY_ATTEMPTS: i32 = 100;
/// Ack deadline of a dead-letter subscription: how long `dead-letter list` or `redrive`
/// holds what it pulled before handing it back (or, if it died, Pub/Sub redelivers it).
const DEAD_LETTER_ACK_DEADLINE_SECS: u64 = 60;

impl Inner {
    /// Creates the topic if missing; true when it was created now.
    pub(super) async fn create_topic(&self, topic: &str) -> PortResult<bool> {
        let path = self.topic_path(topic);
        match self
            .topic_admin
            .create_topic()
            .with_request(Topic::new().set_name(path.clone()))
            .send()
            .await
        {
            Ok(_) => {
                info!(topic = %path, "created pubsub topic");
                Ok(true)
            }
            Err(e) if code_of(&e) == Some(Code::AlreadyExists) => Ok(false),
            Err(e) => Err(map_err(&format!("creating topic {path}"), &e)),
        }
    }

    /// Makes sure the topic exists. If this process had seen it before and it had to be
    /// created again, its messages are lost: the subscriptions this process ensured on it
    /// are re-created first, then the topic's generation grows (so a poller re-publishing
    /// because of it publishes into subscriptions that exist).
    pub(super) async fn ensure_topic(&self, topic: &str) -> PortResult<()> {
        let created = self.create_topic(topic).await?;
        let known = self
            .generations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(topic);
        if created && known {
            warn!(
                topic,
                "pubsub topic was lost (with its messages); re-created it"
            );
            let specs: Vec<SubscriptionSpec> = self
                .subs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .filter(|s| s.spec.topic == topic)
                .map(|s| s.spec.clone())
                .collect();
            for spec in specs {
                self.create_subscription(&spec).await?;
            }
        }
        let mut gens = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        let g = gens.entry(topic.to_string()).or_insert(0);
        if created && known {
            *g += 1;
        }
        Ok(())
    }

    pub(super) async fn create_subscription(&self, spec: &SubscriptionSpec) -> PortResult<()> {
        // Plain creates: a lost topic is handled by `ensure_topic` (which calls this).
        self.create_topic(&spec.topic).await?;
        self.create_topic(&spec.dead_letter_topic).await?;
        // Before the subscription: a dead-letter topic without a subscription drops what
        // reaches it (https://cloud.google.com/pubsub/docs/handling-failures).
        self.create_dead_letter_subscription(spec).await?;
        let path = self.subscription_path(&spec.name);
        let ack_secs = ack_deadline_secs(spec) as i32;
        let sub = Subscription::new()
            .set_name(path.clone())
            .set_topic(self.topic_path(&spec.topic))
            .set_ack_deadline_seconds(ack_secs)
            .set_enable_message_ordering(true)
            .set_filter(attribute_filter(&spec.attribute_filter)?)
            .set_dead_letter_policy(
                DeadLetterPolicy::new()
                    .set_dead_letter_topic(self.topic_path(&spec.dead_letter_topic))
                    .set_max_delivery_attempts(MAX_DELIVERY_ATTEMPTS),
            )
            .set_retry_policy(
                RetryPolicy::new()
                    .set_minimum_backoff(std_to_wkt(Duration::from_secs(1)))
                    .set_maximum_backoff(std_to_wkt(Duration::from_secs(60))),
            );
        match self
            .sub_admin
            .create_subscription()
            .with_request(sub.clone())
            .send()
            .await
        {
            Ok(_) => {
                info!(subscription = %path, topic = %spec.topic, "created pubsub subscription");
                Ok(())
            }
            // It exists: it must match the manifest (never keep old settings silently).
            Err(e) if code_of(&e) == Some(Code::AlreadyExists) => {
                self.reconcile_subscription(spec, sub).await
            }
            Err(e) => Err(map_err(&format!("creating subscription {path}"), &e)),
        }
    }

    /// Creates the subscription on `spec`'s dead-letter topic that keeps its dead letters for
    /// the dead-letter tools ([`dead_letter_subscription`]): no filter, no ordering, no
    /// dead-letter policy of its own. Found existing, it is left as it is (its settings are
    /// the host's own and never change).
    pub(super) async fn create_dead_letter_subscription(
        &self,
        spec: &SubscriptionSpec,
    ) -> PortResult<()> {
        let path = self.subscription_path(&dead_letter_subscription(&spec.name));
        let sub = Subscription::new()
            .set_name(path.clone())
            .set_topic(self.topic_path(&spec.dead_letter_topic))
            .set_ack_deadline_seconds(DEAD_LETTER_ACK_DEADLINE_SECS as i32);
        match self
            .sub_admin
            .create_subscription()
            .with_request(sub)
            .send()
            .await
        {
            Ok(_) => {
                info!(subscription = %path, topic = %spec.dead_letter_topic, "created pubsub dead-letter subscription");
                Ok(())
            }
            Err(e) if code_of(&e) == Some(Code::AlreadyExists) => Ok(()),
            Err(e) => Err(map_err(&format!("creating subscription {path}"), &e)),
        }
    }

    /// Makes an existing subscription match `wanted` (what [`Inner::create_subscription`]
    /// would create): updates ack deadline, retry and dead-letter policy in place, refuses a
    /// changed topic, filter or message ordering (see [`crate::drift`]).
    pub(super) async fn reconcile_subscription(
        &self,
        spec: &SubscriptionSpec,
        wanted: Subscription,
    ) -> PortResult<()> {
        let path = wanted.name.clone();
        let existing = self
            .sub_admin
            .get_subscription()
            .set_subscription(path.clone())
            .send()
            .await
            .map_err(|e| map_err(&format!("reading subscription {path}"), &e))?;
        match drift::compare(&settings_of(&wanted), &settings_of(&existing)) {
            drift::Verdict::Same => Ok(()),
            drift::Verdict::Refuse(differences) => {
                let id = resource_id(&spec.name);
                let remedy = format!(
                    "Delete the subscription (`gcloud pubsub subscriptions delete {id} \
                     --project {}`; its unacknowledged messages go with it, and the host \
                     creates it anew at the topic's end), or give the plugin a new name (a new \
                     subscription `plugin-<name>`).",
                    self.config.project
                );
                Err(PortError::invalid(
                    BACKEND,
                    drift::refusal(&path, &differences, &remedy),
                ))
            }
            drift::Verdict::Update(fields) => {
                let mask: Vec<&str> = fields.iter().map(|f| f.mask_path()).collect();
                let update_mask = google_cloud_wkt::FieldMask::default().set_paths(mask.clone());
                self.sub_admin
                    .update_subscription()
                    .set_subscription(wanted)
                    .set_update_mask(update_mask)
                    .send()
                    .await
                    .map_err(|e| map_err(&format!("updating subscription {path}"), &e))?;
                info!(subscription = %path, updated = ?mask, "updated pubsub subscription to match its manifest");
                Ok(())
            }
        }
    }

    /// Recreates a topic and the subscriptions this process ensured on it.
    pub(super) async fn recreate_topic(&self, topic: &str) -> PortResult<()> {
        self.ensure_topic(topic).await?;
        // The topic may have survived while a subscription was deleted.
        let specs: Vec<SubscriptionSpec> = self
            .subs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|s| s.spec.topic == topic)
            .map(|s| s.spec.clone())
            .collect();
        for spec in specs {
            self.create_subscription(&spec).await?;
        }
        Ok(())
    }
}

/// The settings of a Pub/Sub subscription the host compares ([`drift::compare`]).
pub(super) fn settings_of(sub: &Subscription) -> drift::Settings {
    let std_of = |d: &Option<google_cloud_wkt::Duration>| {
        d.as_ref()
            .and_then(|d| Duration::try_from(*d).ok())
            .unwrap_or_default()
    };
    drift::Settings {
        topic: sub.topic.clone(),
        filter: sub.filter.clone(),
        message_ordering: sub.enable_message_ordering,
        ack_deadline: Duration::from_secs(sub.ack_deadline_seconds.max(0) as u64),
        dead_letter: sub.dead_letter_policy.as_ref().map(|p| drift::DeadLetter {
            topic: p.dead_letter_topic.clone(),
            max_delivery_attempts: p.max_delivery_attempts,
        }),
        retry: sub.retry_policy.as_ref().map(|p| drift::Retry {
            minimum_backoff: std_of(&p.minimum_backoff),
            maximum_backoff: std_of(&p.maximum_backoff),
        }),
    }
}

/// The server-side ack deadline of a subscription, in seconds (Pub/Sub allows 10 to 600).
pub(super) fn ack_deadline_secs(spec: &SubscriptionSpec) -> u32 {
    let allowed = &limits::ACK_DEADLINE_SECS;
    (spec.ack_deadline.as_secs() as i64).clamp(*allowed.start(), *allowed.end()) as u32
}

/// A duration as the protobuf well-known type.
fn std_to_wkt(d: Duration) -> google_cloud_wkt::Duration {
    google_cloud_wkt::Duration::clamp(d.as_secs() as i64, d.subsec_nanos() as i32)
}
