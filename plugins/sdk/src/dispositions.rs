//! The usual answers of a consumer, one disposition per event: all acked, all retried, per
//! event from a fallible step, and the smallest useful consumer, [`filter_to_topic`].

use crate::bindings::consumer::ledgerhost::plugin0_1_0::types::{Disposition, Error};
use crate::caps::ledger;
use crate::event::Event;

/// One `Ack` per event: the usual answer of a consumer whose side effects all succeeded.
pub fn ack_all(events: &[Event]) -> Vec<Disposition> {
    events.iter().map(|_| Disposition::Ack).collect()
}

/// The same `Retry(reason)` for every event: the answer when a batch-wide step failed.
pub fn retry_all(events: &[Event], reason: &str) -> Vec<Disposition> {
    events
        .iter()
        .map(|_| Disposition::Retry(reason.to_string()))
        .collect()
}

/// One disposition per event from a per-event step: `Ok` acks; a capability error retries
/// when it may pass ([`Error::Backend`]) and rejects when it will not ([`Error::Denied`],
/// [`Error::Invalid`]), the reason led by the event id.
pub fn per_event(
    events: &[Event],
    mut step: impl FnMut(&Event) -> Result<(), Error>,
) -> Vec<Disposition> {
    events
        .iter()
        .map(|e| match step(e) {
            Ok(()) => Disposition::Ack,
            Err(err @ Error::Backend(_)) => Disposition::Retry(format!("{}: {err}", e.id)),
            Err(err) => Disposition::Reject(format!("{}: {err}", e.id)),
        })
        .collect()
}

thread_local! {
    /// Topics [`filter_to_topic`] created in this instance: `create-topic` once, not per batch.
    static CREATED_TOPICS: std::cell::RefCell<std::collections::BTreeSet<String>> =
        const { std::cell::RefCell::new(std::collections::BTreeSet::new()) };
}

/// The smallest useful consumer: republishes unchanged (Avro, ordering key, attributes;
/// [`ledger::republish`]) onto `topic` the events `keep` says `Ok(true)` to, in one publish,
/// and acks the rest. `Err(reason)` rejects that event with the reason; a failed publish
/// retries the forwarded events only. The topic is created once per instance (the host
/// creates the topics a manifest grants by name; this covers `*` grants), and again after a
/// failed publish. Nothing to forward makes no ledger call.
pub fn filter_to_topic(
    events: &[Event],
    topic: &str,
    mut keep: impl FnMut(&Event) -> Result<bool, String>,
) -> Vec<Disposition> {
    let verdicts: Vec<Result<bool, String>> = events.iter().map(&mut keep).collect();
    let forward: Vec<&Event> = events
        .iter()
        .zip(&verdicts)
        .filter(|(_, v)| matches!(v, Ok(true)))
        .map(|(e, _)| e)
        .collect();
    let published = if forward.is_empty() {
        Ok(())
    } else {
        let created = CREATED_TOPICS.with(|c| c.borrow().contains(topic));
        let result = (if created {
            Ok(())
        } else {
            ledger::create_topic(topic)
        })
        .and_then(|()| ledger::republish(topic, forward.iter().copied()));
        CREATED_TOPICS.with(|c| {
            let mut c = c.borrow_mut();
            match &result {
                Ok(()) => c.insert(topic.to_string()),
                Err(_) => c.remove(topic),
            }
        });
        result.map_err(|e| format!("cannot publish to `{topic}`: {e}"))
    };
    verdicts
        .into_iter()
        .map(|v| match (v, &published) {
            (Ok(true), Err(reason)) => Disposition::Retry(reason.clone()),
            (Err(reason), _) => Disposition::Reject(reason),
            _ => Disposition::Ack,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::EventBuilder;

    #[test]
    fn per_event_retries_what_may_pass_and_rejects_what_will_not() {
        let events: Vec<Event> = (0..3)
            .map(|i| EventBuilder::new("t").key("id", i).build())
            .collect();
        let mut n = 0;
        let d = per_event(&events, |_| {
            n += 1;
            match n {
                1 => Ok(()),
                2 => Err(Error::Backend("down".into())),
                _ => Err(Error::Denied("no".into())),
            }
        });
        assert_eq!(d[0], Disposition::Ack);
        assert!(
            matches!(&d[1], Disposition::Retry(r) if r.starts_with(&events[1].id) && r.contains("down"))
        );
        assert!(matches!(&d[2], Disposition::Reject(r) if r.contains("no")));
    }

    #[test]
    fn batch_answers_have_one_disposition_per_event() {
        let events: Vec<Event> = (0..3)
            .map(|i| EventBuilder::new("t").key("id", i).build())
            .collect();
        assert_eq!(ack_all(&events), vec![Disposition::Ack; 3]);
        assert_eq!(
            retry_all(&events, "down"),
            vec![Disposition::Retry("down".into()); 3]
        );
        assert!(ack_all(&[]).is_empty());
    }
}
