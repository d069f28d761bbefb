//! A page of the log as stored (layout 1): the messages one publish wrote, as one blob in
//! one row, addressed by the id of its first message plus an offset.
//!
//! Why: a row per message cost SQLite a record, a B-tree entry and an index entry each
//! (about 3 µs per message, most of a page's write: BENCHMARKS.md, issue 25). A page is one
//! record however many messages it holds, and a reader still finds message `i` without
//! parsing those before it.
//!
//! The blob: a little-endian `u32` holding the count `n` (its top bit set when a shared
//! block follows), then `n` `u32` ends (where each record stops, counted from the first
//! record), then the shared block if any: the attributes every message of the page has
//! with the same value (the table, the schema fingerprint), as a varint length and their
//! bytes ([`ledgerhost_core::ledger::wire::encode_attributes_into`]), stored once; then the records. A
//! record: the id of its Avro header in `headers` as a varint (0: none, the data is whole),
//! the ordering key and its own attributes (those not shared) each as a varint length and
//! their bytes, then the rest of the data up to the record's end. Pages written before the
//! shared block existed have the top bit clear and read the same way.

use std::collections::BTreeMap;

use ledgerhost_core::ledger::wire::{
    encode_attributes_into, encode_pairs_into, encoded_attributes_len, encoded_pairs_len, read_len,
    write_len,
};

/// The most bytes one page's blob holds; a publish past it is stored as several pages in
/// the same transaction (SQLite's blob limit is 1 GB, and a `u32` addresses the records).
pub(super) const MAX_PAGE_BYTES: usize = 64 << 20;

/// One message as a page stores it, read in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Record<'a> {
    /// The id of its stored Avro header, if its data had one.
    pub(super) header: Option<i64>,
    pub(super) ordering_key: &'a str,
    /// The attributes its page shares, in the binary form of
    /// [`ledgerhost_core::ledger::wire::encode_attributes_into`] (empty when the page shares none).
    pub(super) shared: &'a [u8],
    /// Its own attributes, in the same form.
    pub(super) attributes: &'a [u8],
    /// The data after the header (all of it when `header` is `None`).
    pub(super) body: &'a [u8],
}

/// At most the bytes a record takes in a page, its end offset included (to cut a publish
/// into pages before writing them).
pub(super) fn record_len_bound(ordering_key: &str, attributes_len: usize, body: &[u8]) -> usize {
    4 + 10 + 10 + ordering_key.len() + 10 + attributes_len + body.len()
}

/// At most the bytes a batch's record ([`ledgerhost_core::ledger::Batch::raw_records`]) takes
/// in a page, its header id and end offset included.
pub(super) fn raw_record_len_bound(raw: &[u8]) -> usize {
    4 + 10 + raw.len()
}

/// The flag in a page's first word that says a shared block follows the ends.
const SHARED: u32 = 1 << 31;

/// Builds a page's blob in a buffer that keeps its capacity from page to page (a fresh
/// megabyte per page cost the kernel's page faults).
pub(super) struct PageWriter<'b, 's> {
    out: &'b mut Vec<u8>,
    shared: &'s BTreeMap<String, String>,
    count: usize,
    written: usize,
    start: usize,
}

impl<'b, 's> PageWriter<'b, 's> {
    /// A page of `count` records in `out` (cleared), storing `shared` once: attributes every
    /// record pushed has with these values.
    pub(super) fn new(
        out: &'b mut Vec<u8>,
        count: usize,
        shared: &'s BTreeMap<String, String>,
    ) -> Self {
        assert!(
            count < SHARED as usize,
            "a page holds fewer than 2^31 records"
        );
        out.clear();
        let flag = if shared.is_empty() { 0 } else { SHARED };
        out.extend_from_slice(&(count as u32 | flag).to_le_bytes());
        out.resize(4 + 4 * count, 0);
        if !shared.is_empty() {
            write_len(out, encoded_attributes_len(shared));
            encode_attributes_into(out, shared);
        }
        let start = out.len();
        PageWriter {
            out,
            shared,
            count,
            written: 0,
            start,
        }
    }

    /// Appends the next record, its own attributes (those not shared) encoded in place.
    pub(super) fn push(
        &mut self,
        header: Option<i64>,
        ordering_key: &str,
        attributes: &BTreeMap<String, String>,
        body: &[u8],
    ) {
        assert!(
            self.written < self.count,
            "more records than the page was made for"
        );
        let shared = self.shared;
        debug_assert!(shared.iter().all(|(k, v)| attributes.get(k) == Some(v)));
        let own = || attributes.iter().filter(|(k, _)| !shared.contains_key(*k));
        let own_count = attributes.len() - shared.len();
        let out = &mut *self.out;
        write_len(out, header.map_or(0, |h| h as usize));
        write_len(out, ordering_key.len());
        out.extend_from_slice(ordering_key.as_bytes());
        write_len(out, encoded_pairs_len(own_count, own()));
        encode_pairs_into(out, own_count, own());
        out.extend_from_slice(body);
        self.end_record();
    }

    /// Appends the next record from a batch's record, whose form is a stored record's after
    /// the header id (ordering key, own attributes, data: the batch's shared attributes are
    /// the page's), copied as it is.
    pub(super) fn push_raw(&mut self, header: Option<i64>, raw: &[u8]) {
        assert!(
            self.written < self.count,
            "more records than the page was made for"
        );
        write_len(self.out, header.map_or(0, |h| h as usize));
        self.out.extend_from_slice(raw);
        self.end_record();
    }

    /// Notes where the record just written ends.
    fn end_record(&mut self) {
        let end = (self.out.len() - self.start) as u32;
        let at = 4 + 4 * self.written;
        self.out[at..at + 4].copy_from_slice(&end.to_le_bytes());
        self.written += 1;
    }

    /// The page's blob.
    pub(super) fn finish(self) -> &'b [u8] {
        assert_eq!(
            self.written, self.count,
            "fewer records than the page was made for"
        );
        self.out
    }
}

/// The attributes every one of `attributes` has with the same value (none for fewer than
/// two: a lone message gains nothing by sharing).
pub(super) fn shared_attributes<'m>(
    mut attributes: impl Iterator<Item = &'m BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let (Some(first), Some(second)) = (attributes.next(), attributes.next()) else {
        return BTreeMap::new();
    };
    let mut shared = first.clone();
    for other in std::iter::once(second).chain(attributes) {
        shared.retain(|k, v| other.get(k) == Some(v));
        if shared.is_empty() {
            break;
        }
    }
    shared
}

/// A stored page, read in place.
pub(super) struct Page<'a> {
    ends: &'a [u8],
    shared: &'a [u8],
    records: &'a [u8],
}

impl<'a> Page<'a> {
    /// The page in `blob`, or what is wrong with it.
    pub(super) fn parse(blob: &'a [u8]) -> Result<Self, String> {
        let first = blob
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or("shorter than its count")?;
        let count = (first & !SHARED) as usize;
        let ends_end = count
            .checked_mul(4)
            .and_then(|n| n.checked_add(4))
            .filter(|&n| n <= blob.len())
            .ok_or("shorter than its record ends")?;
        let (shared, records_start) = if first & SHARED == 0 {
            (&blob[..0], ends_end)
        } else {
            let mut at = ends_end;
            let len = read_len(blob, &mut at).ok_or("its shared block is truncated")?;
            let end = at
                .checked_add(len)
                .filter(|&e| e <= blob.len())
                .ok_or("its shared block is truncated")?;
            (&blob[at..end], end)
        };
        Ok(Page {
            ends: &blob[4..ends_end],
            shared,
            records: &blob[records_start..],
        })
    }

    /// How many records the page holds.
    pub(super) fn len(&self) -> usize {
        self.ends.len() / 4
    }

    fn end(&self, i: usize) -> usize {
        let b = &self.ends[4 * i..4 * i + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize
    }

    /// Record `i`, or what is wrong with it.
    pub(super) fn record(&self, i: usize) -> Result<Record<'a>, String> {
        if i >= self.len() {
            return Err(format!("no record {i} in a page of {}", self.len()));
        }
        let start = if i == 0 { 0 } else { self.end(i - 1) };
        let end = self.end(i);
        let bytes = self
            .records
            .get(start..end)
            .ok_or_else(|| format!("record {i} ends past the page"))?;
        let bad = || format!("record {i} is truncated");
        let mut at = 0;
        let header = read_len(bytes, &mut at).ok_or_else(bad)?;
        let field = |at: &mut usize| -> Result<&'a [u8], String> {
            let len = read_len(bytes, at).ok_or_else(bad)?;
            let end = at.checked_add(len).filter(|&e| e <= bytes.len());
            let field = &bytes[*at..end.ok_or_else(bad)?];
            *at += len;
            Ok(field)
        };
        let key = field(&mut at)?;
        let attributes = field(&mut at)?;
        let ordering_key = std::str::from_utf8(key)
            .map_err(|e| format!("record {i}'s ordering key is not UTF-8: {e}"))?;
        Ok(Record {
            header: (header != 0).then_some(header as i64),
            ordering_key,
            shared: self.shared,
            attributes,
            body: &bytes[at..],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_as_written_and_damage_is_named() {
        let attributes = [
            BTreeMap::from([("table".to_string(), "orders".to_string())]),
            BTreeMap::new(),
            BTreeMap::from([("ключ".to_string(), "💡".repeat(50))]),
        ];
        let written = [
            (Some(3), "shard-1", b"datum".to_vec()),
            (None, "", Vec::new()),
            (Some(300), "ключ", vec![9; 200]),
        ];
        let mut buf = vec![7; 10_000];
        let none = BTreeMap::new();
        let mut page = PageWriter::new(&mut buf, written.len(), &none);
        for ((header, key, body), attrs) in written.iter().zip(&attributes) {
            page.push(*header, key, attrs, body);
        }
        let blob = page.finish().to_vec();
        let page = Page::parse(&blob).unwrap();
        assert_eq!(page.len(), 3);
        for (i, ((header, key, body), attrs)) in written.iter().zip(&attributes).enumerate() {
            let r = page.record(i).unwrap();
            assert_eq!(
                (r.header, r.ordering_key, r.body),
                (*header, *key, body.as_slice())
            );
            assert_eq!(
                r.attributes,
                ledgerhost_core::ledger::wire::encode_attributes(attrs)
            );
        }
        assert!(page.record(3).is_err());
        assert!(Page::parse(&blob[..3]).is_err());
        assert!(Page::parse(&blob[..8]).is_err());
        // Cut inside the last record: the earlier ones still read, the last is refused.
        let cut = Page::parse(&blob[..blob.len() - 1]).unwrap();
        assert_eq!(cut.record(1).unwrap().ordering_key, "");
        assert!(cut.record(2).is_err());
        let mut buf = Vec::new();
        assert_eq!(
            Page::parse(PageWriter::new(&mut buf, 0, &none).finish())
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn what_every_message_of_a_page_has_is_stored_once_and_read_back_with_each() {
        let message = |n: u32, extra: bool| {
            let mut a = BTreeMap::from([
                ("table".to_string(), "orders".to_string()),
                ("schema_fingerprint".to_string(), "ab".repeat(32)),
                ("event_id".to_string(), format!("orders/{n}/1")),
            ]);
            if extra {
                a.insert("x".to_string(), "only some".to_string());
            }
            a
        };
        let all: Vec<_> = (0..4).map(|n| message(n, n % 2 == 0)).collect();
        let shared = shared_attributes(all.iter());
        assert_eq!(
            shared.keys().collect::<Vec<_>>(),
            vec!["schema_fingerprint", "table"]
        );
        assert!(
            shared_attributes(all[..1].iter()).is_empty(),
            "one message shares nothing"
        );
        let page_of = |shared: &BTreeMap<String, String>| {
            let mut buf = Vec::new();
            let mut page = PageWriter::new(&mut buf, all.len(), shared);
            for a in &all {
                page.push(None, "k", a, b"d");
            }
            page.finish().to_vec()
        };
        let blob = page_of(&shared);
        assert!(blob.len() + 3 * 60 < page_of(&BTreeMap::new()).len());
        let page = Page::parse(&blob).unwrap();
        for (i, a) in all.iter().enumerate() {
            let r = page.record(i).unwrap();
            let mut read = BTreeMap::new();
            assert!(!r.shared.is_empty());
            ledgerhost_core::ledger::wire::decode_attributes_into(&mut read, r.shared).unwrap();
            ledgerhost_core::ledger::wire::decode_attributes_into(&mut read, r.attributes).unwrap();
            assert_eq!(&read, a);
            assert_eq!(r.body, b"d");
        }
    }
}
