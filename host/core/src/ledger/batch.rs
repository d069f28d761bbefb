//! The messages of one publish as one buffer (Redpanda's batch layout): what they all share
//! stored once, each message's own part at a position.
//!
//! Why: the poller's pages are thousands of messages that differ only in their datum, event
//! id and commit timestamp; a `Message` each cost ~11 allocations to build, hand over and
//! free, more than the write of their bytes (BENCHMARKS.md, issue 25). The encoder writes a
//! page's rows straight into a batch and the embedded ledger copies its records into a
//! stored page as they are ([`super::wire`] is the form both use).
//!
//! A record: its ordering key (a varint length and its bytes), its own attributes (a varint
//! length and their [`super::wire`] form), then its data after the batch's prefix. Every
//! record is within Pub/Sub's per-message limits ([`super::limits`]): checked as it is added,
//! so a batch never holds a message a ledger would refuse.

use std::collections::BTreeMap;

use super::limits::{self, LimitError};
use super::message::Message;
use super::wire;

/// Messages of one publish as one buffer: a data prefix and attributes they share, and
/// their records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    prefix: Vec<u8>,
    shared: BTreeMap<String, String>,
    records: Vec<u8>,
    /// Where each record ends in `records`.
    ends: Vec<usize>,
}

/// One message of a batch, read in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Its ordering key.
    pub ordering_key: &'a str,
    /// Its own attributes (beside the batch's shared ones), in the [`super::wire`] form.
    pub attributes: &'a [u8],
    /// Its data after the batch's prefix.
    pub data: &'a [u8],
}

impl Batch {
    /// An empty batch whose messages' data all start with `prefix` and which all carry
    /// `shared`, or the Pub/Sub limit `shared` breaks.
    pub fn new(prefix: Vec<u8>, shared: BTreeMap<String, String>) -> Result<Self, LimitError> {
        limits::check_attributes(shared.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        Ok(Batch {
            prefix,
            shared,
            records: Vec::new(),
            ends: Vec::new(),
        })
    }

    /// `messages` as a batch that shares nothing, or the first Pub/Sub limit one breaks.
    pub fn from_messages(messages: &[Message]) -> Result<Self, LimitError> {
        let mut batch = Batch::default();
        for m in messages {
            let own: Vec<(&str, &str)> = m
                .attributes
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            batch.push(&m.ordering_key, &own, &m.data)?;
        }
        Ok(batch)
    }

    /// Reserves room for `records` more records of about `bytes` bytes in all.
    pub fn reserve(&mut self, records: usize, bytes: usize) {
        self.ends.reserve(records);
        self.records.reserve(bytes);
    }

    /// Adds a message: `data` follows the prefix.
    pub fn push(
        &mut self,
        ordering_key: &str,
        own: &[(&str, &str)],
        data: &[u8],
    ) -> Result<(), LimitError> {
        let mut record = self.begin(ordering_key, own)?;
        record.buf().extend_from_slice(data);
        record.finish()
    }

    /// Starts a message whose data (after the prefix) the caller appends to
    /// [`RecordWriter::buf`]; it is added by [`RecordWriter::finish`], and dropped unfinished
    /// it leaves the batch as it was.
    pub fn begin(
        &mut self,
        ordering_key: &str,
        own: &[(&str, &str)],
    ) -> Result<RecordWriter<'_>, LimitError> {
        limits::check_ordering_key(ordering_key)?;
        limits::check_attribute_count(self.shared.len() + own.len())?;
        for (k, v) in own {
            limits::check_attribute(k, v)?;
        }
        let start = self.records.len();
        let out = &mut self.records;
        wire::write_len(out, ordering_key.len());
        out.extend_from_slice(ordering_key.as_bytes());
        wire::write_len(out, wire::encoded_pairs_len(own.len(), own.iter().copied()));
        wire::encode_pairs_into(out, own.len(), own.iter().copied());
        let data_start = out.len();
        Ok(RecordWriter {
            batch: self,
            start,
            data_start,
            attributes: own.len(),
            finished: false,
        })
    }

    /// How many messages the batch holds.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the batch holds no message.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The bytes every message's data starts with.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The attributes every message carries (a record's own one of the same key wins).
    pub fn shared(&self) -> &BTreeMap<String, String> {
        &self.shared
    }

    /// Each record's bytes, in the form the module's documentation gives.
    pub fn raw_records(&self) -> impl ExactSizeIterator<Item = &[u8]> + Clone + '_ {
        (0..self.ends.len()).map(move |i| {
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            &self.records[start..self.ends[i]]
        })
    }

    /// Each record, read in place.
    pub fn records(&self) -> impl ExactSizeIterator<Item = RecordRef<'_>> + '_ {
        self.raw_records().map(parse)
    }

    /// The messages, whole.
    pub fn to_messages(&self) -> Vec<Message> {
        self.records()
            .map(|r| {
                let mut data = Vec::with_capacity(self.prefix.len() + r.data.len());
                data.extend_from_slice(&self.prefix);
                data.extend_from_slice(r.data);
                let mut attributes = self.shared.clone();
                wire::decode_attributes_into(&mut attributes, r.attributes)
                    .expect("a batch writes its records' attributes itself");
                Message {
                    data,
                    ordering_key: r.ordering_key.to_string(),
                    attributes,
                }
            })
            .collect()
    }
}

/// A record of a batch, in the form [`Batch::begin`] wrote it.
fn parse(raw: &[u8]) -> RecordRef<'_> {
    const WRITTEN: &str = "a batch writes its records itself";
    let mut at = 0;
    let field = |at: &mut usize| {
        let len = wire::read_len(raw, at).expect(WRITTEN);
        let field = &raw[*at..*at + len];
        *at += len;
        field
    };
    let key = field(&mut at);
    let attributes = field(&mut at);
    RecordRef {
        ordering_key: std::str::from_utf8(key).expect(WRITTEN),
        attributes,
        data: &raw[at..],
    }
}

/// A message being added to a batch ([`Batch::begin`]).
pub struct RecordWriter<'b> {
    batch: &'b mut Batch,
    start: usize,
    data_start: usize,
    attributes: usize,
    finished: bool,
}

impl RecordWriter<'_> {
    /// The buffer to append the message's data (after the prefix) to. Bytes before its
    /// length on entry belong to earlier records: append only.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.batch.records
    }

    /// Where the message's data starts in [`Self::buf`].
    pub fn data_start(&self) -> usize {
        self.data_start
    }

    /// Adds the message, or says which Pub/Sub limit its data breaks (then the batch is as
    /// it was).
    pub fn finish(mut self) -> Result<(), LimitError> {
        let data_len = self.batch.prefix.len() + self.batch.records.len() - self.data_start;
        limits::check_data(data_len, self.batch.shared.len() + self.attributes)?;
        self.batch.ends.push(self.batch.records.len());
        self.finished = true;
        Ok(())
    }
}

impl Drop for RecordWriter<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.batch.records.truncate(self.start);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::attr;

    fn message(key: &str, attrs: &[(&str, &str)], data: &[u8]) -> Message {
        Message::of(key, attrs, data)
    }

    #[test]
    fn messages_come_back_whole_with_the_prefix_and_shared_attributes() {
        let shared = BTreeMap::from([(attr::TABLE.to_string(), "orders".to_string())]);
        let mut batch = Batch::new(b"HEAD".to_vec(), shared).unwrap();
        batch
            .push("k1", &[(attr::EVENT_ID, "orders/1/5")], b"one")
            .unwrap();
        batch.push("", &[], b"").unwrap();
        batch
            .push("ключ", &[("x", "💡"), (attr::TABLE, "own wins")], b"three")
            .unwrap();
        assert_eq!(batch.len(), 3);
        assert_eq!(
            batch.to_messages(),
            vec![
                message(
                    "k1",
                    &[(attr::TABLE, "orders"), (attr::EVENT_ID, "orders/1/5")],
                    b"HEADone"
                ),
                message("", &[(attr::TABLE, "orders")], b"HEAD"),
                message(
                    "ключ",
                    &[(attr::TABLE, "own wins"), ("x", "💡")],
                    b"HEADthree"
                ),
            ]
        );
        let messages = vec![message("a", &[("k", "v")], b"1"), message("b", &[], b"2")];
        assert_eq!(
            Batch::from_messages(&messages).unwrap().to_messages(),
            messages
        );
        assert!(Batch::default().to_messages().is_empty());
    }

    #[test]
    fn a_message_pubsub_would_refuse_is_not_added_and_the_batch_stays_as_it_was() {
        let mut batch = Batch::default();
        batch.push("k", &[], b"ok").unwrap();
        let before = batch.clone();
        assert_eq!(
            batch.push("k", &[], b""),
            Err(LimitError::EmptyMessage),
            "no data and no attribute"
        );
        assert!(matches!(
            batch.push(&"k".repeat(limits::MAX_ORDERING_KEY_BYTES + 1), &[], b"x"),
            Err(LimitError::OrderingKeyTooLong { .. })
        ));
        assert!(matches!(
            batch.push("k", &[("googx", "v")], b"x"),
            Err(LimitError::ReservedAttributeKey { .. })
        ));
        let big = vec![0u8; limits::MAX_MESSAGE_DATA_BYTES + 1];
        assert!(matches!(
            batch.push("k", &[], &big),
            Err(LimitError::DataTooLarge { .. })
        ));
        {
            let mut unfinished = batch.begin("k", &[]).unwrap();
            unfinished.buf().extend_from_slice(b"dropped");
        }
        assert_eq!(batch, before);
        // The prefix counts toward the data's limit.
        let mut prefixed = Batch::new(vec![1; 10], BTreeMap::new()).unwrap();
        assert!(matches!(
            prefixed.push("k", &[], &big[..limits::MAX_MESSAGE_DATA_BYTES - 9]),
            Err(LimitError::DataTooLarge { .. })
        ));
        let many: BTreeMap<String, String> = (0..=limits::MAX_ATTRIBUTES)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        assert!(matches!(
            Batch::new(Vec::new(), many),
            Err(LimitError::TooManyAttributes { .. })
        ));
        let shared: BTreeMap<String, String> = (0..limits::MAX_ATTRIBUTES)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        let mut full = Batch::new(Vec::new(), shared).unwrap();
        assert!(matches!(
            full.push("k", &[("one", "more")], b"x"),
            Err(LimitError::TooManyAttributes { .. })
        ));
    }
}
