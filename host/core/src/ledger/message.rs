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
