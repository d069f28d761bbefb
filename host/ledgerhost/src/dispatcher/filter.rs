//! Host-side filters from a manifest's `subscription.filter`: expressions such as
//! `amount >= 1000`, `status == 'paid'`, `deleted == false` or `attributes.region == 'eu'`,
//! ANDed. Evaluated on the decoded event before the plugin is called, so filtered events
//! cost no WASM call. Attribute equalities can also be pushed to the ledger (Pub/Sub
//! subscription filters).

use std::collections::BTreeMap;

use ledgerhost_core::{Event, Value};

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A literal on the right-hand side.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
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
    pub target: Target,
    pub op: Op,
    pub literal: Literal,
}

/// All conditions of a subscription, ANDed. Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub conditions: Vec<Condition>,
}

/// A filter expression that could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error(
    "filter expression `{expr}`: {problem}. Expected `<field> <op> <literal>` with op one of \
     == != < <= > >= and a literal like 1000, 12.5, 'text', true, false or null; the field may \
     be a column, `attributes.<name>`, `deleted` or `table`"
)]
pub struct FilterError {
    pub expr: String,
    pub problem: String,
}

impl Filter {
    /// Parses the manifest's expressions.
    pub fn parse(exprs: &[String]) -> Result<Filter, FilterError> {
        let conditions = exprs
            .iter()
            .map(|e| parse_condition(e))
            .collect::<Result<_, _>>()?;
        Ok(Filter { conditions })
    }

    /// True when every condition holds.
    pub fn matches(&self, event: &Event) -> bool {
        self.conditions.iter().all(|c| c.matches(event))
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
    let literal = parse_literal(rhs).ok_or_else(|| err("unreadable literal"))?;
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
    if let Ok(i) = s.parse::<i64>() {
        return Some(Literal::Int(i));
    }
    s.parse::<f64>().ok().map(Literal::Float)
}

impl Condition {
    fn matches(&self, event: &Event) -> bool {
        let owned;
        let value: &Value = match &self.target {
            Target::Field(name) => event.get(name).unwrap_or(&Value::Null),
            Target::Deleted => {
                owned = Value::Bool(event.deleted);
                &owned
            }
            Target::Table => {
                owned = Value::String(event.table.clone());
                &owned
            }
            Target::Attribute(name) => {
                owned = event
                    .attributes
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| Value::String(v.clone()))
                    .unwrap_or(Value::Null);
                &owned
            }
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

fn compare(v: &Value, lit: &Literal) -> Option<std::cmp::Ordering> {
    use std::cmp::Ordering;
    match (v, lit) {
        (Value::Null, Literal::Null) => Some(Ordering::Equal),
        (Value::Bool(a), Literal::Bool(b)) => Some(a.cmp(b)),
        (Value::Int64(a), Literal::Int(b)) => Some(a.cmp(b)),
        (Value::Int64(a), Literal::Float(b)) => (*a as f64).partial_cmp(b),
        (Value::Float64(a), Literal::Int(b)) => a.partial_cmp(&(*b as f64)),
        (Value::Float64(a), Literal::Float(b)) => a.partial_cmp(b),
        (Value::Float32(a), Literal::Int(b)) => (*a as f64).partial_cmp(&(*b as f64)),
        (Value::Float32(a), Literal::Float(b)) => (*a as f64).partial_cmp(b),
        (Value::Numeric(a), Literal::Int(b)) => a.parse::<f64>().ok()?.partial_cmp(&(*b as f64)),
        (Value::Numeric(a), Literal::Float(b)) => a.parse::<f64>().ok()?.partial_cmp(b),
        (Value::Timestamp(a), Literal::Int(b)) => Some(a.cmp(b)),
        (Value::Date(a), Literal::Int(b)) => Some((*a as i64).cmp(b)),
        (Value::String(a) | Value::Json(a) | Value::Numeric(a), Literal::Str(b)) => {
            Some(a.as_str().cmp(b.as_str()))
        }
        _ => None,
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

    #[test]
    fn numeric_string_and_attribute_conditions() {
        let f = Filter::parse(&[
            "amount >= 1000".into(),
            "status == 'paid'".into(),
            "attributes.region = 'eu'".into(),
            "deleted == false".into(),
        ])
        .unwrap();
        let yes = event(vec![
            ("amount", Value::Int64(1000)),
            ("status", Value::String("paid".into())),
        ]);
        let low = event(vec![
            ("amount", Value::Int64(999)),
            ("status", Value::String("paid".into())),
        ]);
        assert!(f.matches(&yes));
        assert!(!f.matches(&low));
        assert_eq!(
            f.attribute_equalities(),
            BTreeMap::from([("region".to_string(), "eu".to_string())])
        );
    }

    #[test]
    fn null_and_missing_fields_only_match_not_equal() {
        let f = Filter::parse(&["amount > 5".into()]).unwrap();
        assert!(!f.matches(&event(vec![("amount", Value::Null)])));
        let g = Filter::parse(&["client_id != 'c1'".into()]).unwrap();
        assert!(g.matches(&event(vec![])));
    }

    #[test]
    fn bad_expressions_say_what_is_expected() {
        let e = Filter::parse(&["amount".into()]).unwrap_err().to_string();
        assert!(
            e.contains("no comparison operator") && e.contains("Expected"),
            "{e}"
        );
        let e = Filter::parse(&["amount > 'x".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unreadable literal"), "{e}");
    }
}
