//! The smallest useful plugin: routes high-value orders to a derived topic.
//!
//! Every order whose `amount` is at least the `threshold` config value (default 1000) is
//! republished unchanged (its Avro, ordering key and attributes) onto the `topic` config
//! value (default `orders-high-value`), so other plugins can subscribe to just those.
//! Tombstones are routed by their last amount, so a view fed by the derived topic sees the
//! delete. Everything else is acknowledged; an `amount` that is not a number is rejected
//! (dead-lettered with the reason) rather than silently skipped.

use std::cell::RefCell;
use std::cmp::Ordering;

use ledgerhost_sdk::prelude::*;

/// Default destination topic.
pub const DEFAULT_TOPIC: &str = "orders-high-value";
/// Default threshold.
pub const DEFAULT_THRESHOLD: &str = "1000";

/// An exact decimal number, so NUMERIC amounts compare without float rounding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal {
    negative: bool,
    /// Integer digits without leading zeros.
    int: String,
    /// Fraction digits without trailing zeros.
    frac: String,
}

impl std::str::FromStr for Decimal {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let (negative, digits) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t.strip_prefix('+').unwrap_or(t)),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
            return Err(format!("`{text}` is not a decimal number"));
        }
        let int = int.trim_start_matches('0').to_string();
        let frac = frac.trim_end_matches('0').to_string();
        // Zero has no sign, so -0 == 0.
        let negative = negative && !(int.is_empty() && frac.is_empty());
        Ok(Decimal {
            negative,
            int,
            frac,
        })
    }
}

impl std::fmt::Display for Decimal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.negative { "-" } else { "" };
        let int = if self.int.is_empty() { "0" } else { &self.int };
        match self.frac.is_empty() {
            true => write!(f, "{sign}{int}"),
            false => write!(f, "{sign}{int}.{}", self.frac),
        }
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        let magnitude = self
            .int
            .len()
            .cmp(&other.int.len())
            .then_with(|| self.int.cmp(&other.int))
            // Fraction digits compare lexicographically once integer parts are equal.
            .then_with(|| self.frac.cmp(&other.frac));
        match (self.negative, other.negative) {
            (false, false) => magnitude,
            (true, true) => magnitude.reverse(),
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// What the filter does with one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// High-value: republish onto the derived topic.
    Forward,
    /// Not high-value (or no amount): acknowledge.
    Skip,
    /// The amount is not a number: reject with this reason.
    Invalid(String),
}

/// Decides an event's route against `threshold` (inclusive).
pub fn route(event: &Event, threshold: &Decimal) -> Route {
    let is_high = match event.get("amount") {
        None | Some(Value::Null) => return Route::Skip,
        Some(Value::Int64(v)) => match v.to_string().parse::<Decimal>() {
            Ok(d) => d >= *threshold,
            Err(e) => return Route::Invalid(e),
        },
        Some(Value::Numeric(s)) => match s.parse::<Decimal>() {
            Ok(d) => d >= *threshold,
            Err(e) => return Route::Invalid(format!("{}: amount {e}", event.id)),
        },
        Some(Value::Float64(_) | Value::Float32(_)) => {
            let x = event.f64("amount").unwrap_or(f64::NAN);
            // The threshold is decimal text of modest size; its float value is exact enough
            // for a column that is itself a float.
            let t: f64 = threshold.to_string().parse().unwrap_or(f64::INFINITY);
            if x.is_nan() {
                return Route::Invalid(format!("{}: amount is NaN", event.id));
            }
            x >= t
        }
        Some(other) => {
            return Route::Invalid(format!(
                "{}: amount must be INT64, FLOAT64 or NUMERIC, got {other:?}",
                event.id
            ));
        }
    };
    if is_high { Route::Forward } else { Route::Skip }
}

thread_local! {
    /// The topic this instance already created, so `create-topic` is called once, not per batch.
    static CREATED: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn ensure_topic(topic: &str) -> Result<(), Error> {
    if CREATED.with(|c| c.borrow().as_deref() == Some(topic)) {
        return Ok(());
    }
    ledger::create_topic(topic)?;
    CREATED.with(|c| *c.borrow_mut() = Some(topic.to_string()));
    Ok(())
}

fn forward(topic: &str, events: &[&Event]) -> Result<(), String> {
    if events.is_empty() {
        return Ok(());
    }
    let publish =
        ensure_topic(topic).and_then(|()| ledger::republish(topic, events.iter().copied()));
    publish.map_err(|e| {
        // A failed publish may mean the topic vanished; re-create it on the next attempt.
        CREATED.with(|c| c.borrow_mut().take());
        format!("cannot publish to `{topic}`: {e}")
    })
}

struct Filter;

impl Consumer for Filter {
    fn handle(events: Vec<Event>) -> Vec<Disposition> {
        let threshold = match config::try_get("threshold")
            .and_then(|t| t.as_deref().unwrap_or(DEFAULT_THRESHOLD).parse::<Decimal>())
        {
            Ok(t) => t,
            Err(e) => return retry_all(&events, &format!("config `threshold`: {e}")),
        };
        let topic = config::get("topic").unwrap_or_else(|| DEFAULT_TOPIC.to_string());
        let routes: Vec<Route> = events.iter().map(|e| route(e, &threshold)).collect();
        let high: Vec<&Event> = events
            .iter()
            .zip(&routes)
            .filter(|(_, r)| **r == Route::Forward)
            .map(|(e, _)| e)
            .collect();
        let published = forward(&topic, &high);
        routes
            .into_iter()
            .map(|r| match (r, &published) {
                (Route::Forward, Err(reason)) => Disposition::Retry(reason.clone()),
                (Route::Invalid(reason), _) => Disposition::Reject(reason),
                _ => Disposition::Ack,
            })
            .collect()
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

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn decimals_compare_exactly() {
        assert!(dec("1000.000000001") > dec("1000"));
        assert!(dec("999.999999999") < dec("1000"));
        assert_eq!(dec("0100.50"), dec("100.5"));
        assert!(dec("-5") < dec("3"));
        assert!(dec("-5") < dec("-4.9"));
        assert_eq!(dec("-0.0"), dec("0"));
        assert!(dec(".5") > dec("0.49"));
        assert_eq!(dec("12.50").to_string(), "12.5");
        for bad in ["", "-", "1e3", "1.2.3", "abc", "."] {
            assert!(bad.parse::<Decimal>().is_err(), "{bad:?} must not parse");
        }
    }

    #[test]
    fn threshold_is_inclusive_and_types_are_understood() {
        let t = dec("1000");
        assert_eq!(route(&order(1, 1000), &t), Route::Forward);
        assert_eq!(route(&order(1, 999), &t), Route::Skip);
        assert_eq!(route(&order(1, -5000), &t), Route::Skip);
        assert_eq!(route(&order(1, 1500.5), &t), Route::Forward);
        assert_eq!(route(&order(1, 999.99), &t), Route::Skip);
        assert_eq!(
            route(&order(1, Value::Numeric("1000.000000001".into())), &t),
            Route::Forward
        );
        assert_eq!(
            route(&order(1, Value::Numeric("999.999999999".into())), &t),
            Route::Skip
        );
        assert_eq!(route(&order(1, Value::Null), &t), Route::Skip);
        let no_amount = EventBuilder::new("orders").key("id", 1).build();
        assert_eq!(route(&no_amount, &t), Route::Skip);
    }

    #[test]
    fn a_non_numeric_amount_is_invalid_with_the_event_named() {
        let t = dec("1000");
        let Route::Invalid(reason) = route(&order(4, "lots"), &t) else {
            panic!("a string amount is invalid")
        };
        assert!(
            reason.contains("orders/4/1") && reason.contains("amount"),
            "{reason}"
        );
        assert!(matches!(
            route(&order(4, Value::Numeric("n/a".into())), &t),
            Route::Invalid(_)
        ));
        assert!(matches!(route(&order(4, f64::NAN), &t), Route::Invalid(_)));
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
        assert!(matches!(d[3], Disposition::Reject(_)));
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
        let d = Filter::handle(vec![order(1, 5000), order(2, 1)]);
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
