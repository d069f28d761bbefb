//! Typed access to an event's fields by name ([`EventExt`]), exact decimals included, and
//! the conversions that make a [`Value`] from a Rust value.

use std::cmp::Ordering;

use ledgerhost_manifest::decimal::{self, BigDecimal};

use crate::bindings::consumer::ledgerhost::plugin0_1_0::types::Value;
use crate::event::Event;

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
}
