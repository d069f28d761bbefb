//! Guest SDK for ledgerhost plugins: a consumer is a few lines.
//!
//! ```
//! use ledgerhost_sdk::prelude::*;
//!
//! struct LastAmount;
//!
//! impl Consumer for LastAmount {
//!     fn handle(events: Vec<Event>) -> Vec<Disposition> {
//!         events
//!             .iter()
//!             .map(|e| {
//!                 let Some(amount) = e.i64("amount") else {
//!                     return Disposition::Reject(format!("{}: no INT64 amount", e.id));
//!                 };
//!                 let key = format!("amount/{}", e.ordering_key());
//!                 match kv::set_if_newer(&key, amount.to_string().as_bytes(), e.commit_ts) {
//!                     Ok(_) => Disposition::Ack,
//!                     Err(err) => Disposition::Retry(format!("{}: {err}", e.id)),
//!                 }
//!             })
//!             .collect()
//!     }
//! }
//!
//! export_consumer!(LastAmount);
//!
//! // Natively, the same code runs against a fake host:
//! use ledgerhost_sdk::testing::{EventBuilder, MockHost};
//! let host = MockHost::new();
//! let e = EventBuilder::new("orders").key("id", 1).field("amount", 1200).commit_ts(5).build();
//! assert_eq!(LastAmount::handle(vec![e]), vec![Disposition::Ack]);
//! assert_eq!(host.kv("amount/1"), Some(b"1200".to_vec()));
//! ```
//!
//! Capabilities are plain functions ([`blobstore`], [`kv`], [`warehouse`], [`ledger`],
//! [`config`], [`log`]); a call the manifest does not grant returns
//! [`Error::Denied`] naming the grant to add. A component imports only the capabilities it
//! calls, and the host refuses to load one that imports a capability its manifest does not
//! grant. [`testing`] builds events and fakes the host ([`testing::MockHost`]) so a plugin's
//! handler is unit-tested natively with `cargo test`.

pub mod bindings;
mod caps;
mod event;
pub mod testing;
pub mod time;

pub use caps::{blobstore, config, kv, ledger, log, warehouse};

/// Exact decimals, read by the host's rule: [`decimal::parse_decimal`] for text (a config
/// value, a NUMERIC), [`EventExt::decimal`] and [`EventExt::cmp_decimal`] for fields.
pub mod decimal {
    pub use ledgerhost_manifest::decimal::{
        BigDecimal, NotADecimal, cmp_f64, cmp_i64, decimal_of_f64, parse_decimal,
    };
}
pub use decimal::BigDecimal;

use std::cmp::Ordering;

pub use bindings::consumer::ledgerhost::plugin0_1_0::types::{
    Disposition, Error, Field, HttpRequest, HttpResponse, Value,
};
pub use event::{Column, Event, ScalarType, Schema};

/// An event consumer (contract `ledgerhost:plugin@0.2.0`): handles a batch's events, one
/// disposition each, in order. Export it with [`export_consumer!`].
pub trait Consumer {
    /// Handles a batch. Must return exactly one disposition per event, in the same order.
    fn handle(events: Vec<Event>) -> Vec<Disposition>;
}
pub use bindings::http::Guest as HttpHandler;
pub use bindings::http::export_http;
pub use bindings::scheduled::Guest as Scheduled;
pub use bindings::scheduled::export_scheduled;

/// Everything a plugin usually needs.
pub mod prelude {
    pub use crate::{
        BigDecimal, Consumer, Disposition, Error, Event, EventExt, Field, HttpHandler, HttpRequest,
        HttpResponse, NotANumber, Scheduled, Value, ack_all, blobstore, config, decimal,
        export_consumer, export_http, export_scheduled, filter_to_topic, kv, ledger, log,
        log_debug, log_error, log_info, log_warn, per_event, retry_all, warehouse,
    };
}

/// Typed access to an event's fields.
pub trait EventExt {
    /// A field's value; `None` when the batch does not carry that column.
    fn get(&self, name: &str) -> Option<&Value>;
    /// An INT64 field (`None` if absent, NULL or another type).
    fn i64(&self, name: &str) -> Option<i64> {
        match self.get(name)? {
            Value::Int64(v) => Some(*v),
            _ => None,
        }
    }
    /// A FLOAT64 or FLOAT32 field.
    fn f64(&self, name: &str) -> Option<f64> {
        match self.get(name)? {
            Value::Float64(v) => Some(*v),
            Value::Float32(v) => Some(f64::from(*v)),
            _ => None,
        }
    }
    /// A STRING field.
    fn str(&self, name: &str) -> Option<&str> {
        match self.get(name)? {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    /// A BOOL field.
    fn bool(&self, name: &str) -> Option<bool> {
        match self.get(name)? {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
    /// A TIMESTAMP field, microseconds since the epoch.
    fn timestamp(&self, name: &str) -> Option<i64> {
        match self.get(name)? {
            Value::Timestamp(t) => Some(*t),
            _ => None,
        }
    }
    /// A NUMERIC field as its exact decimal text.
    fn numeric(&self, name: &str) -> Option<&str> {
        match self.get(name)? {
            Value::Numeric(s) => Some(s),
            _ => None,
        }
    }
    /// A BYTES field.
    fn bytes(&self, name: &str) -> Option<&[u8]> {
        match self.get(name)? {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
    /// A DATE field, days since 1970-01-01.
    fn date(&self, name: &str) -> Option<i32> {
        match self.get(name)? {
            Value::Date(d) => Some(*d),
            _ => None,
        }
    }
    /// A JSON field as its document text.
    fn json(&self, name: &str) -> Option<&str> {
        match self.get(name)? {
            Value::Json(s) => Some(s),
            _ => None,
        }
    }
    /// True when the column exists and is NULL (an absent column is not NULL).
    fn is_null(&self, name: &str) -> bool {
        matches!(self.get(name), Some(Value::Null))
    }
    /// An INT64, NUMERIC, FLOAT64 or FLOAT32 field as an exact decimal (a float by its exact
    /// binary value). `None` when absent or NULL; an error naming the field when it holds
    /// another type, decimal text that does not read, NaN or an infinity.
    fn decimal(&self, name: &str) -> Option<Result<BigDecimal, NotANumber>> {
        let not = |why: String| NotANumber(format!("{name} {why}"));
        Some(match self.get(name)? {
            Value::Null => return None,
            Value::Int64(v) => Ok(BigDecimal::from(*v)),
            Value::Numeric(s) => decimal::parse_decimal(s).map_err(|e| not(e.to_string())),
            Value::Float64(_) | Value::Float32(_) => {
                let x = self.f64(name)?;
                decimal::decimal_of_f64(x).ok_or_else(|| not(format!("is {x:?}")))
            }
            other => Err(not(format!(
                "must be INT64, FLOAT64 or NUMERIC, got {other:?}"
            ))),
        })
    }
    /// How a numeric field compares with `d`, exactly: as [`EventExt::decimal`], except that
    /// a float infinity compares beyond every decimal (only NaN is an error).
    fn cmp_decimal(&self, name: &str, d: &BigDecimal) -> Option<Result<Ordering, NotANumber>> {
        match self.get(name)? {
            // The common case, exactly and without a BigDecimal per value.
            Value::Int64(v) => return Some(Ok(decimal::cmp_i64(*v, d))),
            Value::Float64(_) | Value::Float32(_) => {
                if let Some(x) = self.f64(name).filter(|x| x.is_infinite()) {
                    return Some(Ok(decimal::cmp_f64(x, d).unwrap_or(Ordering::Less)));
                }
            }
            _ => {}
        }
        Some(self.decimal(name)?.map(|v| v.cmp(d)))
    }
    /// A ledger attribute, the standard ones (`table`, `commit_ts`, `event_id`,
    /// `schema_fingerprint`) included though the host does not send them
    /// ([`Event::ledger_attributes`]).
    fn attribute(&self, name: &str) -> Option<std::borrow::Cow<'_, str>>;
    /// The encoded primary key of this event (stable, injective; use it to key views). The
    /// ledger's ordering key derives from it: by default an ordering shard of the table.
    fn ordering_key(&self) -> &str;
}

impl EventExt for Event {
    fn get(&self, name: &str) -> Option<&Value> {
        self.value_at(self.schema().position(name)?)
    }

    fn attribute(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        self.find_attribute(name)
    }

    fn ordering_key(&self) -> &str {
        // The id is `table/key/commit_ts`; the key part escapes `/`, so this split is exact.
        let rest = self.id.split_once('/').map_or("", |(_, r)| r);
        rest.rsplit_once('/').map_or(rest, |(k, _)| k)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int64(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float64(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::String(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::String(v)
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(v)
    }
}

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

/// A field that does not hold a number (from [`EventExt::decimal`]): names the field and
/// what it holds, e.g. "amount `n/a` is not a decimal number".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotANumber(pub String);

impl std::fmt::Display for NotANumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotANumber {}

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
    fn typed_accessors_return_only_their_own_type() {
        let e = EventBuilder::new("t")
            .key("id", 1)
            .field("n", 5)
            .field("x", 2.5)
            .field("s", "hi")
            .field("b", false)
            .field("ts", Value::Timestamp(10))
            .field("num", Value::Numeric("12.50".into()))
            .field("raw", vec![1u8, 2])
            .field("d", Value::Date(3))
            .field("j", Value::Json("{}".into()))
            .field("f32", Value::Float32(1.5))
            .field("nothing", Value::Null)
            .build();
        assert_eq!(e.i64("n"), Some(5));
        assert_eq!(e.i64("x"), None, "a float is not an int");
        assert_eq!(e.f64("x"), Some(2.5));
        assert_eq!(e.f64("f32"), Some(1.5));
        assert_eq!(e.str("s"), Some("hi"));
        assert_eq!(e.str("j"), None, "JSON has its own accessor");
        assert_eq!(e.json("j"), Some("{}"));
        assert_eq!(e.bool("b"), Some(false));
        assert_eq!(e.timestamp("ts"), Some(10));
        assert_eq!(e.timestamp("n"), None);
        assert_eq!(e.numeric("num"), Some("12.50"));
        assert_eq!(e.bytes("raw"), Some(&[1u8, 2][..]));
        assert_eq!(e.date("d"), Some(3));
        assert!(e.is_null("nothing"));
        assert!(!e.is_null("missing"));
        assert_eq!(e.i64("nothing"), None);
        assert_eq!(e.get("missing"), None);
    }

    #[test]
    fn numeric_fields_read_as_exact_decimals() {
        let e = EventBuilder::new("t")
            .key("id", 1)
            .field("i", 1000)
            .field("n", Value::Numeric("1000.000000001".into()))
            .field("bad", Value::Numeric("n/a".into()))
            .field("x", 999.99)
            .field("nan", f64::NAN)
            .field("inf", f64::INFINITY)
            .field("s", "lots")
            .field("null", Value::Null)
            .build();
        let t = decimal::parse_decimal("1000").unwrap();
        assert_eq!(e.decimal("i"), Some(Ok(t.clone())));
        assert!(e.decimal("n").unwrap().unwrap() > t);
        assert!(e.decimal("x").unwrap().unwrap() < t);
        assert_eq!(
            e.decimal("bad").unwrap().unwrap_err().to_string(),
            "bad `n/a` is not a decimal number"
        );
        assert_eq!(
            e.decimal("nan").unwrap().unwrap_err().to_string(),
            "nan is NaN"
        );
        assert!(e.decimal("inf").unwrap().is_err());
        assert_eq!(e.cmp_decimal("inf", &t), Some(Ok(Ordering::Greater)));
        assert!(e.cmp_decimal("nan", &t).unwrap().is_err());
        assert_eq!(
            e.decimal("s").unwrap().unwrap_err().to_string(),
            "s must be INT64, FLOAT64 or NUMERIC, got Value::String(\"lots\")"
        );
        assert_eq!(e.decimal("null"), None);
        assert_eq!(e.decimal("missing"), None);
    }

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
