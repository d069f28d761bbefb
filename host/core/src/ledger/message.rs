//! A message on a topic, whole.

use std::collections::BTreeMap;

/// A message on a topic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// Payload; for events an Avro object container with the schema inside.
    pub data: Vec<u8>,
    /// Messages with one ordering key are delivered in publish order (the primary key).
    pub ordering_key: String,
    /// Key-value attributes (see [`super::attr`] for the keys the host sets).
    pub attributes: BTreeMap<String, String>,
}

#[cfg(test)]
impl Message {
    /// A message from borrowed parts (the tests' shorthand).
    pub(crate) fn of(ordering_key: &str, attributes: &[(&str, &str)], data: &[u8]) -> Self {
        Message {
            data: data.to_vec(),
            ordering_key: ordering_key.into(),
            attributes: attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}
