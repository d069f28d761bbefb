//! The smallest useful plugin: routes high-value orders to a derived topic.
//!
//! Every order whose `amount` is at least the `threshold` config value (default 1000) is
//! republished unchanged (its Avro, ordering key and attributes) onto the `topic` config
//! value (default `orders-high-value`), so other plugins can subscribe to just those.
//! Tombstones are routed by their last amount, so a view fed by the derived topic sees the
//! delete. Everything else is acknowledged; an `amount` that is not a number is rejected
//! (dead-lettered with the reason) rather than silently skipped. Amounts compare exactly
//! (INT64, NUMERIC, and FLOAT64 by its exact value), through the SDK's decimals.

use ledgerhost_sdk::prelude::*;

/// Default destination topic.
pub const DEFAULT_TOPIC: &str = "orders-high-value";
/// Default threshold.
pub const DEFAULT_THRESHOLD: &str = "1000";

/// True when the event's amount is at least `threshold`; `Err` names the event and why its
/// amount is not a number. No amount (absent or NULL) is not high-value.
pub fn is_high_value(event: &Event, threshold: &BigDecimal) -> Result<bool, String> {
    match event.cmp_decimal("amount", threshold) {
        None => Ok(false),
        Some(Ok(order)) => Ok(order.is_ge()),
        Some(Err(e)) => Err(format!("{}: {e}", event.id)),
    }
}

struct Filter;

impl Consumer for Filter {
    fn handle(events: Vec<Event>) -> Vec<Disposition> {
        let threshold = config::try_get("threshold").and_then(|t| {
            let text = t.as_deref().unwrap_or(DEFAULT_THRESHOLD);
            decimal::parse_decimal(text).map_err(|e| e.to_string())
        });
        let threshold = match threshold {
            Ok(t) => t,
            Err(e) => return retry_all(&events, &format!("config `threshold`: {e}")),
        };
        let topic = config::get("topic").unwrap_or_else(|| DEFAULT_TOPIC.to_string());
        filter_to_topic(&events, &topic, |e| is_high_value(e, &threshold))
    }
}

export_consumer!(Filter);

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerhost_sdk::testing::{Capability, EventBuilder, MockHost};

    const MANIFEST: &str = include_str!("../plugin.toml");

    fn order(id: i64, amount: impl Into<Value>) -> Event {
        EventBuilder::new("orders")
            .key("id", id)
            .field("amount", amount)
            .avro(vec![0xA0, id as u8])
            .attribute("source", "test")
            .build()
    }

    fn dec(s: &str) -> BigDecimal {
        decimal::parse_decimal(s).unwrap()
    }

    /// Forward, skip, or the reject reason.
    fn route(event: &Event, threshold: &BigDecimal) -> Result<bool, String> {
        is_high_value(event, threshold)
    }

    #[test]
    fn threshold_is_inclusive_and_types_are_understood() {
        let t = dec("1000");
        assert_eq!(route(&order(1, 1000), &t), Ok(true));
        assert_eq!(route(&order(1, 999), &t), Ok(false));
        assert_eq!(route(&order(1, -5000), &t), Ok(false));
        assert_eq!(route(&order(1, 1500.5), &t), Ok(true));
        assert_eq!(route(&order(1, 999.99), &t), Ok(false));
        assert_eq!(route(&order(1, f64::INFINITY), &t), Ok(true));
        assert_eq!(route(&order(1, f64::NEG_INFINITY), &t), Ok(false));
        // Exact, not through a float: 1000.000000001 > 1000.
        assert_eq!(
            route(&order(1, Value::Numeric("1000.000000001".into())), &t),
            Ok(true)
        );
        assert_eq!(
            route(&order(1, Value::Numeric("999.999999999".into())), &t),
            Ok(false)
        );
        assert_eq!(
            route(
                &order(1, Value::Numeric("1000.000000001".into())),
                &dec("1000.000000001")
            ),
            Ok(true)
        );
        assert_eq!(route(&order(1, Value::Null), &t), Ok(false));
        let no_amount = EventBuilder::new("orders").key("id", 1).build();
        assert_eq!(route(&no_amount, &t), Ok(false));
    }

    #[test]
    fn a_non_numeric_amount_is_invalid_with_the_event_named() {
        let t = dec("1000");
        let Err(reason) = route(&order(4, "lots"), &t) else {
            panic!("a string amount is invalid")
        };
        assert!(
            reason.contains("orders/4/1") && reason.contains("amount"),
            "{reason}"
        );
        assert_eq!(
            route(&order(4, Value::Numeric("n/a".into())), &t),
            Err("orders/4/1: amount `n/a` is not a decimal number".into())
        );
        assert_eq!(
            route(&order(4, f64::NAN), &t),
            Err("orders/4/1: amount is NaN".into())
        );
    }

    #[test]
    fn high_value_orders_are_republished_unchanged_and_all_are_acked() {
        let host = MockHost::from_manifest(MANIFEST).unwrap();
        let batch = vec![
            order(1, 50),
            order(2, 1000),
            order(3, 7000),
            order(4, "lots"),
        ];
        let expected: Vec<_> = [&batch[1], &batch[2]]
            .iter()
            .map(|e| ledger::message_of(e))
            .collect();
        let d = Filter::handle(batch);
        assert_eq!(
            d[..3],
            [Disposition::Ack, Disposition::Ack, Disposition::Ack]
        );
        assert!(matches!(&d[3], Disposition::Reject(r) if r.starts_with("orders/4/1: amount")));
        let published = host.published(DEFAULT_TOPIC);
        assert_eq!(published, expected);
        assert_eq!(published[0].data, vec![0xA0, 2]);
        assert_eq!(published[0].ordering_key, "2");
        assert!(
            published[0]
                .attributes
                .contains(&("source".into(), "test".into()))
        );
    }

    #[test]
    fn the_threshold_comes_from_config() {
        let host = MockHost::from_manifest(MANIFEST)
            .unwrap()
            .with_config("threshold", "40.5");
        let d = Filter::handle(vec![order(1, 40), order(2, 41)]);
        assert_eq!(d, vec![Disposition::Ack; 2]);
        let published = host.published(DEFAULT_TOPIC);
        assert_eq!(published.len(), 1);
        assert_eq!(published[0].ordering_key, "2");
    }

    #[test]
    fn a_bad_threshold_retries_the_batch_with_the_reason() {
        let host = MockHost::from_manifest(MANIFEST)
            .unwrap()
            .with_config("threshold", "a lot");
        let d = Filter::handle(vec![order(1, 5000), order(2, 1)]);
        for x in &d {
            let Disposition::Retry(reason) = x else {
                panic!("expected retry, got {x:?}")
            };
            assert!(
                reason.contains("threshold") && reason.contains("a lot"),
                "{reason}"
            );
        }
        assert!(host.published(DEFAULT_TOPIC).is_empty());
    }

    #[test]
    fn a_failed_publish_retries_only_the_high_value_orders() {
        let host = MockHost::from_manifest(MANIFEST).unwrap();
        host.fail(Capability::Ledger, Error::Backend("pubsub down".into()));
        let d = Filter::handle(vec![order(1, 5000), order(2, 1), order(3, "lots")]);
        assert!(
            matches!(&d[2], Disposition::Reject(_)),
            "a bad amount is still rejected"
        );
        let Disposition::Retry(reason) = &d[0] else {
            panic!("expected retry, got {:?}", d[0])
        };
        assert!(
            reason.contains("pubsub down") && reason.contains(DEFAULT_TOPIC),
            "{reason}"
        );
        assert_eq!(d[1], Disposition::Ack);
        // Once the ledger is back, the redelivered order goes through.
        host.heal(Capability::Ledger);
        assert_eq!(Filter::handle(vec![order(1, 5000)]), vec![Disposition::Ack]);
        assert_eq!(host.published(DEFAULT_TOPIC).len(), 1);
    }

    #[test]
    fn tombstones_of_high_value_orders_are_forwarded() {
        let host = MockHost::from_manifest(MANIFEST).unwrap();
        let gone = EventBuilder::new("orders")
            .key("id", 9)
            .field("amount", 5000)
            .deleted()
            .build();
        assert_eq!(Filter::handle(vec![gone]), vec![Disposition::Ack]);
        assert_eq!(host.published(DEFAULT_TOPIC).len(), 1);
    }

    #[test]
    fn an_empty_or_low_value_batch_makes_no_ledger_call() {
        let host = MockHost::from_manifest(MANIFEST).unwrap();
        host.fail(
            Capability::Ledger,
            Error::Backend("must not be called".into()),
        );
        assert!(Filter::handle(vec![]).is_empty());
        assert_eq!(Filter::handle(vec![order(1, 1)]), vec![Disposition::Ack]);
    }
}
