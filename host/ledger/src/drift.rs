//! Whether an existing subscription still matches what a plugin's manifest asks for.
//!
//! `ensure_subscription` finds the subscription already there after a restart, on another
//! replica, or after the manifest changed. Taking "already exists" as success would keep the
//! old settings silently, so both ledgers compare: what the backend can change in place is
//! updated (ack deadline, retry policy, dead-letter policy; `UpdateSubscription` with an
//! update mask on Pub/Sub), and what it cannot (topic, filter, message ordering) is refused
//! with what differs and what to do. Pub/Sub: "After creating the subscription, you can't
//! modify the filter" (<https://cloud.google.com/pubsub/docs/subscription-message-filter>);
//! "certain properties of a subscription, such as its topic, are not modifiable"
//! (`projects.subscriptions.patch`); message ordering is chosen at creation
//! (<https://cloud.google.com/pubsub/docs/ordering>).

use std::time::Duration;

/// A subscription's settings, as far as the host sets them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The topic (as the backend names it: a full path on Pub/Sub).
    pub topic: String,
    /// The filter as the backend stores it (empty: none).
    pub filter: String,
    /// Whether messages of one ordering key are delivered in publish order.
    pub message_ordering: bool,
    /// How long a delivery stays leased before it is redelivered.
    pub ack_deadline: Duration,
    /// Dead-letter policy; `None` if the subscription has none.
    pub dead_letter: Option<DeadLetter>,
    /// Redelivery backoff policy; `None` for the backend's default (immediate redelivery).
    pub retry: Option<Retry>,
}

/// Where messages go after too many attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Topic receiving the dead-lettered messages (a full path on Pub/Sub).
    pub topic: String,
    /// Deliveries of one message before it is dead-lettered.
    pub max_delivery_attempts: i32,
}

/// Redelivery backoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Shortest delay before a nacked message is redelivered.
    pub minimum_backoff: Duration,
    /// Longest delay before a nacked message is redelivered.
    pub maximum_backoff: Duration,
}

/// A setting the backend changes in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// The ack deadline differs.
    AckDeadline,
    /// The retry (backoff) policy differs.
    RetryPolicy,
    /// The dead-letter policy differs.
    DeadLetterPolicy,
}

impl Update {
    /// The `Subscription` field path for an update mask.
    pub fn mask_path(self) -> &'static str {
        match self {
            Update::AckDeadline => "ack_deadline_seconds",
            Update::RetryPolicy => "retry_policy",
            Update::DeadLetterPolicy => "dead_letter_policy",
        }
    }
}

/// A setting that differs and cannot be changed in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixed {
    /// `topic`, `filter`, `message ordering`.
    pub setting: &'static str,
    /// The value the existing subscription has.
    pub existing: String,
    /// The value the host wants.
    pub wanted: String,
}

/// What to do about an existing subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It matches.
    Same,
    /// Change these in place.
    Update(Vec<Update>),
    /// It differs in what cannot change: refuse (with [`refusal`]).
    Refuse(Vec<Fixed>),
}

fn shown(s: &str) -> String {
    if s.is_empty() {
        "none".into()
    } else {
        format!("`{s}`")
    }
}

/// Compares the `existing` subscription with the `wanted` one.
pub fn compare(wanted: &Settings, existing: &Settings) -> Verdict {
    let mut fixed = Vec::new();
    if wanted.topic != existing.topic {
        fixed.push(Fixed {
            setting: "topic",
            existing: shown(&existing.topic),
            wanted: shown(&wanted.topic),
        });
    }
    if wanted.filter != existing.filter {
        fixed.push(Fixed {
            setting: "filter",
            existing: shown(&existing.filter),
            wanted: shown(&wanted.filter),
        });
    }
    if wanted.message_ordering != existing.message_ordering {
        let on = |b: bool| if b { "on" } else { "off" }.to_string();
        fixed.push(Fixed {
            setting: "message ordering",
            existing: on(existing.message_ordering),
            wanted: on(wanted.message_ordering),
        });
    }
    if !fixed.is_empty() {
        return Verdict::Refuse(fixed);
    }
    let mut updates = Vec::new();
    if wanted.ack_deadline != existing.ack_deadline {
        updates.push(Update::AckDeadline);
    }
    if wanted.retry != existing.retry {
        updates.push(Update::RetryPolicy);
    }
    if wanted.dead_letter != existing.dead_letter {
        updates.push(Update::DeadLetterPolicy);
    }
    if updates.is_empty() {
        Verdict::Same
    } else {
        Verdict::Update(updates)
    }
}

/// The error text for a refused subscription: what differs, then `remedy` (the backend's
/// way to start over).
pub fn refusal(name: &str, differences: &[Fixed], remedy: &str) -> String {
    let what: Vec<String> = differences
        .iter()
        .map(|d| {
            format!(
                "{} is {} but the manifest asks for {}",
                d.setting, d.existing, d.wanted
            )
        })
        .collect();
    let settings: Vec<&str> = differences.iter().map(|d| d.setting).collect();
    format!(
        "subscription `{name}` exists with other settings: {}. Its {} cannot be changed in \
         place (Pub/Sub cannot change a subscription's filter, topic or message ordering after \
         creation), and keeping the old settings silently would deliver other events than the \
         manifest says. {remedy}",
        what.join("; "),
        settings.join(" and ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            topic: "projects/p/topics/orders".into(),
            filter: String::new(),
            message_ordering: true,
            ack_deadline: Duration::from_secs(30),
            dead_letter: Some(DeadLetter {
                topic: "projects/p/topics/dead".into(),
                max_delivery_attempts: 100,
            }),
            retry: Some(Retry {
                minimum_backoff: Duration::from_secs(1),
                maximum_backoff: Duration::from_secs(60),
            }),
        }
    }

    #[test]
    fn the_same_subscription_needs_nothing() {
        assert_eq!(compare(&settings(), &settings()), Verdict::Same);
    }

    #[test]
    fn what_can_change_is_updated() {
        let existing = Settings {
            ack_deadline: Duration::from_secs(10),
            dead_letter: None,
            ..settings()
        };
        assert_eq!(
            compare(&settings(), &existing),
            Verdict::Update(vec![Update::AckDeadline, Update::DeadLetterPolicy])
        );
        let existing = Settings {
            retry: None,
            ..settings()
        };
        assert_eq!(
            compare(&settings(), &existing),
            Verdict::Update(vec![Update::RetryPolicy])
        );
        assert_eq!(Update::AckDeadline.mask_path(), "ack_deadline_seconds");
    }

    #[test]
    fn a_changed_filter_topic_or_ordering_is_refused_with_what_differs() {
        let wanted = Settings {
            filter: "attributes.table = \"t2\"".into(),
            // Updatable differences do not hide the refusal.
            ack_deadline: Duration::from_secs(60),
            ..settings()
        };
        let existing = Settings {
            filter: "attributes.table = \"t1\"".into(),
            ..settings()
        };
        let Verdict::Refuse(diff) = compare(&wanted, &existing) else {
            panic!("a changed filter must be refused");
        };
        assert_eq!(diff.len(), 1);
        let msg = refusal("plugin-x", &diff, "Delete it.");
        assert!(
            msg.contains(
                "filter is `attributes.table = \"t1\"` but the manifest asks for \
                 `attributes.table = \"t2\"`"
            ),
            "{msg}"
        );
        assert!(
            msg.contains("cannot change a subscription's filter"),
            "{msg}"
        );
        assert!(msg.ends_with("Delete it."), "{msg}");

        let moved = Settings {
            topic: "projects/p/topics/other".into(),
            message_ordering: false,
            ..settings()
        };
        let Verdict::Refuse(diff) = compare(&settings(), &moved) else {
            panic!("a changed topic must be refused");
        };
        let names: Vec<_> = diff.iter().map(|d| d.setting).collect();
        assert_eq!(names, vec!["topic", "message ordering"]);
        let unfiltered = Settings {
            filter: "attributes.a = \"1\"".into(),
            ..settings()
        };
        let msg = refusal(
            "s",
            match &compare(&settings(), &unfiltered) {
                Verdict::Refuse(d) => d,
                v => panic!("{v:?}"),
            },
            "",
        );
        assert!(msg.contains("but the manifest asks for none"), "{msg}");
    }
}
