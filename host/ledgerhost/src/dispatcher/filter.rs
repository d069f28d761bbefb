//! The host-side filter of a subscription: the rules are `ledgerhost_manifest::filter`
//! (parsed when the manifest is loaded); this is the thin view of a decoded
//! [`ledgerhost_core::Event`] it evaluates.

use std::collections::BTreeMap;

use ledgerhost_core::{Event, Value};
use ledgerhost_manifest::filter::{self as rules, Record, Scalar};

pub use ledgerhost_manifest::filter::FilterError;

/// A subscription's filter (all conditions ANDed; empty matches everything).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter(rules::Filter);

impl EventFilter {
    /// Parses filter expressions (as the manifest did when it was loaded).
    pub fn parse(exprs: &(impl AsRef<[String]> + ?Sized)) -> Result<EventFilter, FilterError> {
        rules::Filter::parse(exprs.as_ref()).map(EventFilter)
    }

    /// True when every condition holds for `event`.
    pub fn matches(&self, event: &Event) -> bool {
        self.0.matches(&EventView(event))
    }

    /// The attribute equalities a ledger may apply server-side.
    pub fn attribute_equalities(&self) -> BTreeMap<String, String> {
        self.0.attribute_equalities()
    }
}

impl From<rules::Filter> for EventFilter {
    fn from(f: rules::Filter) -> Self {
        EventFilter(f)
    }
}

/// An event as the filter reads it.
struct EventView<'a>(&'a Event);

impl Record for EventView<'_> {
    fn field(&self, name: &str) -> Scalar<'_> {
        match self.0.get(name) {
            None | Some(Value::Null) => Scalar::Null,
            Some(Value::Bool(b)) => Scalar::Bool(*b),
            Some(Value::Int64(i)) => Scalar::Int(*i),
            Some(Value::Float32(x)) => Scalar::Float(f64::from(*x)),
            Some(Value::Float64(x)) => Scalar::Float(*x),
            Some(Value::Numeric(s)) => Scalar::Decimal(s),
            Some(Value::String(s)) => Scalar::Text(s),
            Some(Value::Json(s)) => Scalar::Json(s),
            Some(Value::Bytes(b)) => Scalar::Bytes(b),
            Some(Value::Date(d)) => Scalar::Date(*d),
            Some(Value::Timestamp(t)) => Scalar::Timestamp(*t),
            Some(Value::Array(..)) => Scalar::Other,
        }
    }

    fn attribute(&self, name: &str) -> Option<&str> {
        self.0
            .attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn table(&self) -> &str {
        &self.0.table
    }

    fn deleted(&self) -> bool {
        self.0.deleted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerhost_core::{EventId, Field};

    fn event(fields: Vec<(&str, Value)>) -> Event {
        Event {
            id: EventId("orders/1/1".into()),
            table: "orders".into(),
            commit_ts: 1,
            key: vec![],
            fields: fields
                .into_iter()
                .map(|(n, v)| Field {
                    name: n.into(),
                    value: v,
                })
                .collect(),
            deleted: false,
            schema_fingerprint: String::new(),
            avro: vec![],
            attributes: vec![("region".into(), "eu".into())],
        }
    }

    fn f(exprs: &[&str]) -> EventFilter {
        EventFilter::parse(&exprs.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn an_event_is_read_through_the_shared_rules() {
        let f = f(&[
            "amount >= 1000",
            "status == 'paid'",
            "attributes.region = 'eu'",
            "deleted == false",
            "table == 'orders'",
        ]);
        let paid = |amount| {
            event(vec![
                ("amount", amount),
                ("status", Value::String("paid".into())),
            ])
        };
        assert!(f.matches(&paid(Value::Int64(1000))));
        assert!(!f.matches(&paid(Value::Int64(999))));
        assert!(f.matches(&paid(Value::Numeric("1000.000000001".into()))));
        assert!(!f.matches(&paid(Value::Numeric("999.999999999".into()))));
        assert!(f.matches(&paid(Value::Float32(1000.0))));
        assert!(!f.matches(&paid(Value::Float64(999.99))));
        assert!(!f.matches(&paid(Value::Array(
            ledgerhost_core::ColumnType::Int64,
            vec![]
        ))));
        assert_eq!(
            f.attribute_equalities(),
            BTreeMap::from([("region".to_string(), "eu".to_string())])
        );
        let mut gone = paid(Value::Int64(5000));
        gone.deleted = true;
        assert!(!f.matches(&gone));
    }

    #[test]
    fn null_and_missing_fields_only_match_not_equal() {
        assert!(!f(&["amount > 5"]).matches(&event(vec![("amount", Value::Null)])));
        assert!(f(&["client_id != 'c1'"]).matches(&event(vec![])));
    }

    #[test]
    fn bad_expressions_say_what_is_expected() {
        let e = EventFilter::parse(&["amount".to_string()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no comparison operator") && e.contains("Expected"),
            "{e}"
        );
        let e = EventFilter::parse(&["amount > 'x".to_string()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unreadable literal"), "{e}");
    }
}
