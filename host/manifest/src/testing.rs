//! The shared table of rule cases (feature `testing`): names, grants and filters with the
//! expected answer. This crate's tests run it against the rules directly, the SDK's
//! `tests/rules.rs` through `MockHost`, so both sides provably answer alike.

use crate::filter::{self, Record, Scalar};
use crate::{grant, names};

/// What one case checks.
#[derive(Debug, Clone, Copy)]
pub enum Case {
    /// A plugin name.
    PluginName(&'static str),
    /// A bucket name.
    BucketName(&'static str),
    /// An object name.
    ObjectName(&'static str),
    /// A key-value key.
    Key(&'static str),
    /// A manifest entry of a grant, valid or not at load.
    GrantEntry {
        /// The grant name.
        grant: &'static str,
        /// The entry.
        entry: &'static str,
    },
    /// Whether a grant with one entry lets the plugin reach `value`.
    Grant {
        /// The grant name.
        grant: &'static str,
        /// The one entry.
        entry: &'static str,
        /// What the plugin asks for.
        value: &'static str,
    },
    /// Whether an event with one column passes a one-expression filter.
    Filter {
        /// The expression.
        expr: &'static str,
        /// The column's name.
        column: &'static str,
        /// The column's value.
        value: Scalar<'static>,
    },
}

/// One case and its answer: allowed (valid, granted, matching) or not.
#[derive(Debug, Clone, Copy)]
pub struct RuleCase {
    /// What is checked.
    pub case: Case,
    /// The expected answer.
    pub allowed: bool,
}

const fn c(case: Case, allowed: bool) -> RuleCase {
    RuleCase { case, allowed }
}

use Case::*;

/// The table.
pub const CASES: &[RuleCase] = &[
    c(PluginName("filter"), true),
    c(PluginName("python-filter"), true),
    c(PluginName("9lives"), false),
    c(PluginName("-x"), false),
    c(PluginName("Filter"), false),
    c(PluginName("a_b"), false),
    c(BucketName("archive-orders"), true),
    c(BucketName("a/b"), false),
    c(BucketName(".."), false),
    c(ObjectName("orders/2026/1.avro"), true),
    c(ObjectName("a/../b"), false),
    c(ObjectName("/etc/passwd"), false),
    c(ObjectName("a\\b"), false),
    c(ObjectName(""), false),
    c(Key("view/1"), true),
    c(Key(""), false),
    c(Key("a\0b"), false),
    c(
        Grant {
            grant: "buckets",
            entry: "archive-*",
            value: "archive-orders",
        },
        true,
    ),
    c(
        Grant {
            grant: "buckets",
            entry: "archive-*",
            value: "other",
        },
        false,
    ),
    c(
        Grant {
            grant: "buckets",
            entry: "exact",
            value: "exactly",
        },
        false,
    ),
    c(
        Grant {
            grant: "key-prefixes",
            entry: "view/",
            value: "view/1",
        },
        true,
    ),
    c(
        Grant {
            grant: "key-prefixes",
            entry: "view/",
            value: "other/1",
        },
        false,
    ),
    c(
        Grant {
            grant: "warehouse-tables",
            entry: "orders_*",
            value: "orders_2026",
        },
        true,
    ),
    c(
        Grant {
            grant: "topics",
            entry: "orders-high-value",
            value: "elsewhere",
        },
        false,
    ),
    c(
        Grant {
            grant: "topics",
            entry: "replay-*",
            value: "replay-1",
        },
        true,
    ),
    c(
        Grant {
            grant: "config",
            entry: "threshold",
            value: "threshold",
        },
        true,
    ),
    c(
        Grant {
            grant: "config",
            entry: "threshold",
            value: "secret",
        },
        false,
    ),
    c(
        Grant {
            grant: "http",
            entry: "http://127.0.0.1:*",
            value: "http://127.0.0.1:8080/x",
        },
        true,
    ),
    c(
        Grant {
            grant: "http",
            entry: "https://hooks.example.com",
            value: "https://hooks.example.com/a?b",
        },
        true,
    ),
    c(
        Grant {
            grant: "http",
            entry: "https://hooks.example.com",
            value: "http://hooks.example.com/",
        },
        false,
    ),
    c(
        Grant {
            grant: "http",
            entry: "https://hooks.example.com",
            value: "https://hooks.example.com:8443/",
        },
        false,
    ),
    c(
        GrantEntry {
            grant: "http",
            entry: "https://hooks.example.com/path",
        },
        false,
    ),
    c(
        GrantEntry {
            grant: "http",
            entry: "https://user@hooks.example.com",
        },
        false,
    ),
    c(
        GrantEntry {
            grant: "http",
            entry: "http://127.0.0.1:*",
        },
        true,
    ),
    c(
        GrantEntry {
            grant: "bucket",
            entry: "a",
        },
        false,
    ),
    c(
        Filter {
            expr: "amount >= 1000",
            column: "amount",
            value: Scalar::Decimal("999.999999999"),
        },
        false,
    ),
    c(
        Filter {
            expr: "amount >= 1000",
            column: "amount",
            value: Scalar::Decimal("1000.000000001"),
        },
        true,
    ),
    c(
        Filter {
            expr: "amount > 1000",
            column: "amount",
            value: Scalar::Int(1000),
        },
        false,
    ),
    c(
        Filter {
            expr: "amount > 999.5",
            column: "amount",
            value: Scalar::Int(1000),
        },
        true,
    ),
    c(
        Filter {
            expr: "n > 9007199254740992",
            column: "n",
            value: Scalar::Int(9_007_199_254_740_993),
        },
        true,
    ),
    c(
        Filter {
            expr: "x > 0.1",
            column: "x",
            value: Scalar::Float(0.1),
        },
        true,
    ),
    c(
        Filter {
            expr: "amount >= 0",
            column: "amount",
            value: Scalar::Null,
        },
        false,
    ),
    c(
        Filter {
            expr: "amount != 0",
            column: "amount",
            value: Scalar::Null,
        },
        true,
    ),
    c(
        Filter {
            expr: "status == 'paid'",
            column: "status",
            value: Scalar::Text("paid"),
        },
        true,
    ),
    c(
        Filter {
            expr: "amount >= 1000",
            column: "amount",
            value: Scalar::Text("lots"),
        },
        false,
    ),
];

/// A one-column row for filter cases.
pub struct OneColumn {
    /// The column's name.
    pub column: &'static str,
    /// Its value.
    pub value: Scalar<'static>,
}

impl Record for OneColumn {
    fn field(&self, name: &str) -> Scalar<'_> {
        if name == self.column {
            self.value
        } else {
            Scalar::Null
        }
    }
    fn attribute(&self, _: &str) -> Option<&str> {
        None
    }
    fn table(&self) -> &str {
        "orders"
    }
    fn deleted(&self) -> bool {
        false
    }
}

/// The answer of the rules themselves.
pub fn answer(case: &Case) -> bool {
    match *case {
        PluginName(n) => names::check_plugin_name(n).is_ok(),
        BucketName(n) => names::check_bucket_name(n).is_ok(),
        ObjectName(n) => names::check_object_name(n).is_ok(),
        Key(k) => names::check_key(k).is_ok(),
        GrantEntry { grant, entry } => {
            grant::rule_for(grant).is_some_and(|r| r.check_entry(entry).is_ok())
        }
        Grant {
            grant,
            entry,
            value,
        } => grant::rule_for(grant).is_some_and(|r| r.matches(&[entry.to_string()], value)),
        Filter {
            expr,
            column,
            value,
        } => filter::Filter::parse(&[expr.to_string()])
            .expect("the table's filters parse")
            .matches(&OneColumn { column, value }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_of_the_table_gets_its_answer() {
        for case in CASES {
            assert_eq!(answer(&case.case), case.allowed, "{case:?}");
        }
    }
}
