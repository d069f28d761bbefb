//! `[grants]`: what the plugin may reach, by grant name.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::grant::rule_for;

/// What the plugin may reach: grant name (`buckets`, `key-prefixes`, `warehouse-tables`,
/// `topics`, `config`, `http`, ...) to entries. Each name's matching rule is in
/// [`crate::grant::GRANTS`], so a new capability needs no new field here.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Grants(BTreeMap<String, Vec<String>>);

impl Grants {
    /// The entries of a grant; empty when the manifest does not hold it.
    pub fn get(&self, grant: &str) -> &[String] {
        self.0.get(grant).map_or(&[], Vec::as_slice)
    }

    /// True when `grant` lets the plugin reach `value`, under the grant's rule (an unknown
    /// grant allows nothing).
    pub fn allows(&self, grant: &str, value: &str) -> bool {
        rule_for(grant).is_some_and(|r| r.matches(self.get(grant), value))
    }

    /// Every grant and its entries, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Sets the entries of a grant (replacing any).
    pub fn insert(&mut self, grant: &str, entries: Vec<String>) {
        self.0.insert(grant.to_string(), entries);
    }

    /// Every grant and its entries as an owned map (what a capability keeps per plugin).
    pub fn to_map(&self) -> BTreeMap<String, Vec<String>> {
        self.0.clone()
    }

    /// Removes a grant; returns its entries.
    pub fn remove(&mut self, grant: &str) -> Option<Vec<String>> {
        self.0.remove(grant)
    }

    /// `grants.buckets`.
    pub fn buckets(&self) -> &[String] {
        self.get("buckets")
    }

    /// `grants.key-prefixes`.
    pub fn key_prefixes(&self) -> &[String] {
        self.get("key-prefixes")
    }

    /// `grants.warehouse-tables`.
    pub fn warehouse_tables(&self) -> &[String] {
        self.get("warehouse-tables")
    }

    /// `grants.topics`.
    pub fn topics(&self) -> &[String] {
        self.get("topics")
    }

    /// `grants.config`: the `wasi:config` keys the plugin may read.
    pub fn config(&self) -> &[String] {
        self.get("config")
    }
}

impl<S: Into<String>> FromIterator<(S, Vec<String>)> for Grants {
    fn from_iter<I: IntoIterator<Item = (S, Vec<String>)>>(iter: I) -> Self {
        Grants(iter.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}
