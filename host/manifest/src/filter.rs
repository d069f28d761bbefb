//! Host-side filters from a manifest's `subscription.filter`: expressions such as
//! `amount >= 1000`, `status == 'paid'`, `deleted == false` or `attributes.region == 'eu'`,
//! ANDed. Parsed when the manifest is loaded (a bad expression refuses the manifest) and
//! evaluated on the decoded event before the plugin is called, so filtered events cost no
//! WASM call. Attribute equalities can also be pushed to the ledger (Pub/Sub subscription
//! filters).
//!
//! Numbers compare exactly: a literal is a decimal ([`crate::decimal::parse_decimal`]),
//! INT64, NUMERIC, DATE (days) and TIMESTAMP (microseconds) columns compare with it as
//! decimals, a FLOAT64 column by its exact binary value. The crate does not know the host's
//! event type: the caller implements [`Record`] over its own.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use bigdecimal::BigDecimal;

use crate::decimal::{cmp_f64, parse_decimal};

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `==` (or `=`).
    Eq,
    /// `!=`.
    Ne,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
}

/// A literal on the right-hand side.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A decimal number (`1000`, `-12.5`), exact; `int` is set when it is a whole `i64`.
    Number {
        /// The exact value.
        value: BigDecimal,
        /// The same value when it is a whole number that fits an `i64` (the fast path).
        int: Option<i64>,
    },
    /// `'text'` or `"text"`.
    Str(String),
}

/// What the left-hand side names.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A column of the row.
    Field(String),
    /// A ledger attribute.
    Attribute(String),
    /// The tombstone flag.
    Deleted,
    /// The source table.
    Table,
}

/// One `target op literal` condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// The left-hand side.
    pub target: Target,
    /// The operator.
    pub op: Op,
    /// The right-hand side.
    pub literal: Literal,
}

/// All conditions of a subscription, ANDed. Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    exprs: Vec<String>,
    conditions: Vec<Condition>,
}

/// A filter expression that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "filter expression `{expr}`: {problem}. Expected `<field> <op> <literal>` with op one of \
     == != < <= > >= and a literal like 1000, 12.5, 'text', true, false or null; the field may \
     be a column, `attributes.<name>`, `deleted` or `table`"
)]
pub struct FilterError {
    /// The expression as written.
    pub expr: String,
    /// What is wrong with it.
    pub problem: String,
}

/// A column value as the filter sees it: the caller maps its own value type onto this.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar<'a> {
    /// NULL, or a column the row does not have.
    Null,
    /// BOOL.
    Bool(bool),
    /// INT64.
    Int(i64),
    /// FLOAT64 (or FLOAT32, widened exactly).
    Float(f64),
    /// NUMERIC as its decimal text.
    Decimal(&'a str),
    /// STRING.
    Text(&'a str),
    /// JSON as its document text (compares as text).
    Json(&'a str),
    /// BYTES (comparable with nothing).
    Bytes(&'a [u8]),
    /// DATE, days since 1970-01-01.
    Date(i32),
    /// TIMESTAMP, microseconds since the epoch.
    Timestamp(i64),
    /// Anything else (arrays): comparable with nothing.
    Other,
}

/// What a filter reads of an event; implemented by the host over its event type.
pub trait Record {
    /// A column's value ([`Scalar::Null`] when the row has no such column).
    fn field(&self, name: &str) -> Scalar<'_>;
    /// A ledger attribute.
    fn attribute(&self, name: &str) -> Option<&str>;
    /// The source table.
    fn table(&self) -> &str;
    /// True for a tombstone.
    fn deleted(&self) -> bool;
}

impl Filter {
    /// Parses the manifest's expressions.
    pub fn parse(exprs: &[String]) -> Result<Filter, FilterError> {
        let conditions = exprs
            .iter()
            .map(|e| parse_condition(e))
            .collect::<Result<_, _>>()?;
        Ok(Filter {
            exprs: exprs.to_vec(),
            conditions,
        })
    }

    /// The expressions as written in the manifest.
    pub fn exprs(&self) -> &[String] {
        &self.exprs
    }

    /// The parsed conditions, in order.
    pub fn conditions(&self) -> &[Condition] {
        &self.conditions
    }

    /// True when there is no condition (everything matches).
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }

    /// True when every condition holds.
    pub fn matches(&self, record: &impl Record) -> bool {
        self.conditions.iter().all(|c| c.matches(record))
    }

    /// The attribute equalities a ledger may apply server-side.
    pub fn attribute_equalities(&self) -> BTreeMap<String, String> {
        self.conditions
            .iter()
            .filter_map(|c| match (&c.target, c.op, &c.literal) {
                (Target::Attribute(name), Op::Eq, Literal::Str(v)) => {
                    Some((name.clone(), v.clone()))
                }
                _ => None,
            })
            .collect()
    }
}

impl AsRef<[String]> for Filter {
    fn as_ref(&self) -> &[String] {
        &self.exprs
    }
}

#[cfg(feature = "manifest")]
impl<'de> serde::Deserialize<'de> for Filter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let exprs = Vec::<String>::deserialize(d)?;
        Filter::parse(&exprs).map_err(serde::de::Error::custom)
    }
}

fn parse_condition(expr: &str) -> Result<Condition, FilterError> {
    let err = |problem: &str| FilterError {
        expr: expr.to_string(),
        problem: problem.to_string(),
    };
    let trimmed = expr.trim();
    // Two-character operators first so `>=` is not read as `>`.
    let ops = [
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("<", Op::Lt),
        (">", Op::Gt),
        ("=", Op::Eq),
    ];
    let (pos, sym, op) = ops
        .iter()
        .filter_map(|(s, op)| trimmed.find(s).map(|p| (p, *s, *op)))
        .min_by_key(|(p, s, _)| (*p, std::cmp::Reverse(s.len())))
        .ok_or_else(|| err("no comparison operator"))?;
    let lhs = trimmed[..pos].trim();
    let rhs = trimmed[pos + sym.len()..].trim();
    if lhs.is_empty() {
        return Err(err("missing field name"));
    }
    let target = if let Some(a) = lhs.strip_prefix("attributes.") {
        Target::Attribute(a.to_string())
    } else if lhs == "deleted" {
        Target::Deleted
    } else if lhs == "table" {
        Target::Table
    } else if lhs
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Target::Field(lhs.to_string())
    } else {
        return Err(err(
            "the field name may hold letters, digits, `_` and `-` only",
        ));
    };
    let literal = parse_literal(rhs).ok_or_else(|| {
        err("unreadable literal (numbers are plain decimals: no exponent, inf or NaN)")
    })?;
    Ok(Condition {
        target,
        op,
        literal,
    })
}

fn parse_literal(s: &str) -> Option<Literal> {
    match s {
        "null" => return Some(Literal::Null),
        "true" => return Some(Literal::Bool(true)),
        "false" => return Some(Literal::Bool(false)),
        _ => {}
    }
    if s.len() >= 2
        && ((s.starts_with('\'') && s.ends_with('\'')) || (s.starts_with('"') && s.ends_with('"')))
    {
        return Some(Literal::Str(s[1..s.len() - 1].to_string()));
    }
    let value = parse_decimal(s).ok()?;
    let int = if value.is_integer() {
        bigdecimal::ToPrimitive::to_i64(&value)
    } else {
        None
    };
    Some(Literal::Number { value, int })
}

impl Condition {
    /// True when the condition holds for `record`.
    pub fn matches(&self, record: &impl Record) -> bool {
        let value = match &self.target {
            Target::Field(name) => record.field(name),
            Target::Deleted => Scalar::Bool(record.deleted()),
            Target::Table => Scalar::Text(record.table()),
            Target::Attribute(name) => record.attribute(name).map_or(Scalar::Null, Scalar::Text),
        };
        match compare(value, &self.literal) {
            Some(ord) => match self.op {
                Op::Eq => ord.is_eq(),
                Op::Ne => ord.is_ne(),
                Op::Lt => ord.is_lt(),
                Op::Le => ord.is_le(),
                Op::Gt => ord.is_gt(),
                Op::Ge => ord.is_ge(),
            },
            // Incomparable (NULL against a number, text against a number): only `!=` holds.
            None => self.op == Op::Ne,
        }
    }
}

/// How a whole number compares with a decimal literal, without allocating when it can.
fn cmp_int(a: i64, value: &BigDecimal, int: Option<i64>) -> Ordering {
    match int {
        Some(b) => a.cmp(&b),
        None => BigDecimal::from(a).cmp(value),
    }
}

/// How a column value compares with a literal; `None` when they are incomparable.
pub fn compare(v: Scalar<'_>, lit: &Literal) -> Option<Ordering> {
    match (v, lit) {
        (Scalar::Null, Literal::Null) => Some(Ordering::Equal),
        (Scalar::Bool(a), Literal::Bool(b)) => Some(a.cmp(b)),
        (Scalar::Int(a) | Scalar::Timestamp(a), Literal::Number { value, int }) => {
            Some(cmp_int(a, value, *int))
        }
        (Scalar::Date(a), Literal::Number { value, int }) => Some(cmp_int(a.into(), value, *int)),
        (Scalar::Float(a), Literal::Number { value, .. }) => cmp_f64(a, value),
        (Scalar::Decimal(a), Literal::Number { value, .. }) => {
            Some(parse_decimal(a).ok()?.cmp(value))
        }
        (Scalar::Text(a) | Scalar::Json(a) | Scalar::Decimal(a), Literal::Str(b)) => {
            Some(a.cmp(b.as_str()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row of (name, value) columns with the attribute region=eu.
    pub(crate) struct Row<'a>(pub Vec<(&'a str, Scalar<'a>)>);

    impl Record for Row<'_> {
        fn field(&self, name: &str) -> Scalar<'_> {
            self.0
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(Scalar::Null, |(_, v)| *v)
        }
        fn attribute(&self, name: &str) -> Option<&str> {
            (name == "region").then_some("eu")
        }
        fn table(&self) -> &str {
            "orders"
        }
        fn deleted(&self) -> bool {
            false
        }
    }

    fn f(exprs: &[&str]) -> Filter {
        Filter::parse(&exprs.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn numeric_string_and_attribute_conditions() {
        let f = f(&[
            "amount >= 1000",
            "status == 'paid'",
            "attributes.region = 'eu'",
            "deleted == false",
        ]);
        let yes = Row(vec![
            ("amount", Scalar::Int(1000)),
            ("status", Scalar::Text("paid")),
        ]);
        let low = Row(vec![
            ("amount", Scalar::Int(999)),
            ("status", Scalar::Text("paid")),
        ]);
        assert!(f.matches(&yes));
        assert!(!f.matches(&low));
        assert_eq!(
            f.attribute_equalities(),
            BTreeMap::from([("region".to_string(), "eu".to_string())])
        );
        assert!(self::f(&["table == 'orders'"]).matches(&yes));
    }

    #[test]
    fn null_and_missing_fields_only_match_not_equal() {
        assert!(!f(&["amount > 5"]).matches(&Row(vec![("amount", Scalar::Null)])));
        assert!(f(&["client_id != 'c1'"]).matches(&Row(vec![])));
    }

    #[test]
    fn numbers_compare_exactly() {
        let ge = f(&["amount >= 1000"]);
        let row = |v| Row(vec![("amount", v)]);
        assert!(!ge.matches(&row(Scalar::Decimal("999.999999999"))));
        assert!(ge.matches(&row(Scalar::Decimal("1000.000000001"))));
        assert!(ge.matches(&row(Scalar::Decimal("1000"))));
        assert!(!ge.matches(&row(Scalar::Decimal("n/a"))));
        // Through f64, 9007199254740993 reads as ...992 and equals the literal.
        let big = f(&["n > 9007199254740992"]);
        assert!(big.matches(&Row(vec![("n", Scalar::Int(9_007_199_254_740_993))])));
        assert!(big.matches(&Row(vec![("n", Scalar::Decimal("9007199254740992.5"))])));
        let frac = f(&["n > 999.5"]);
        assert!(frac.matches(&Row(vec![("n", Scalar::Int(1000))])));
        assert!(!frac.matches(&Row(vec![("n", Scalar::Int(999))])));
        // 0.1 as a float lies above one tenth.
        assert!(f(&["x > 0.1"]).matches(&Row(vec![("x", Scalar::Float(0.1))])));
        assert!(f(&["x == 0.5"]).matches(&Row(vec![("x", Scalar::Float(0.5))])));
        assert!(!f(&["x >= 0"]).matches(&Row(vec![("x", Scalar::Float(f64::NAN))])));
        assert!(f(&["d >= 19000"]).matches(&Row(vec![("d", Scalar::Date(19_000))])));
        assert!(f(&["t < 0"]).matches(&Row(vec![("t", Scalar::Timestamp(-5))])));
    }

    #[test]
    fn bad_expressions_say_what_is_expected() {
        let err = |e: &str| Filter::parse(&[e.to_string()]).unwrap_err().to_string();
        let e = err("amount");
        assert!(
            e.contains("no comparison operator") && e.contains("Expected"),
            "{e}"
        );
        assert!(err("amount > 'x").contains("unreadable literal"));
        assert!(err("amount > 1e3").contains("no exponent"));
        assert!(err("a b > 1").contains("field name"));
    }
}
