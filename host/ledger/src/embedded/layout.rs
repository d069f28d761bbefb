//! How the embedded ledger stores a message compactly: what the messages of a schema share
//! (the Avro object-container header: magic, metadata with the schema JSON, sync marker) is
//! stored once in `headers`, each message row holds the rest; attributes are one binary
//! blob of length-prefixed pairs instead of JSON ([`ledgerhost_core::ledger::wire`]).
//! Reading gives back the same bytes.
//!
//! Why: the write cost of a page follows its bytes (WAL frames, checkpoint copies, fsync),
//! and the header is most of a small row's message (profile in BENCHMARKS.md, issue 11).

use std::collections::BTreeMap;

use ledgerhost_core::ledger::wire;
use rusqlite::types::ValueRef;

const MAGIC: &[u8; 4] = b"Obj\x01";

/// The length of the Avro object-container header `data` starts with (magic, metadata map,
/// 16-byte sync marker), or `None` when `data` is not a container (the ledger carries any
/// bytes: derived topics, dead letters): such a message is stored whole.
pub fn header_len(data: &[u8]) -> Option<usize> {
    if !data.starts_with(MAGIC) {
        return None;
    }
    let mut at = MAGIC.len();
    loop {
        let count = read_long(data, &mut at)?;
        if count == 0 {
            break;
        }
        // A negative count is followed by the block's size in bytes (Avro spec, "Maps").
        if count < 0 {
            read_long(data, &mut at)?;
        }
        for _ in 0..count.unsigned_abs() {
            for _ in 0..2 {
                let len = usize::try_from(read_long(data, &mut at)?).ok()?;
                at = at.checked_add(len).filter(|&end| end <= data.len())?;
            }
        }
    }
    let end = at.checked_add(16)?;
    (end <= data.len()).then_some(end)
}

/// A zig-zag varint at `*at`, advancing it.
fn read_long(data: &[u8], at: &mut usize) -> Option<i64> {
    let mut z: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*at)?;
        *at += 1;
        z |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    None
}

/// Attributes as a layout-0 row stored them: the binary form, or the JSON text of a file
/// older still (read once, by the migration to layout 1).
pub fn decode_layout0_attributes(stored: ValueRef<'_>) -> Result<BTreeMap<String, String>, String> {
    match stored {
        ValueRef::Text(json) => serde_json::from_slice(json).map_err(|e| e.to_string()),
        ValueRef::Blob(bytes) => wire::decode_attributes(bytes),
        other => Err(format!(
            "attributes stored as {:?}, not text or blob",
            other.data_type()
        )),
    }
}

/// A message's data from its stored header (if it had one) and the rest.
pub fn join(header: Option<&[u8]>, body: &[u8]) -> Vec<u8> {
    match header {
        None => body.to_vec(),
        Some(h) => {
            let mut data = Vec::with_capacity(h.len() + body.len());
            data.extend_from_slice(h);
            data.extend_from_slice(body);
            data
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout0_attributes_read_from_binary_or_json() {
        let attrs = BTreeMap::from([("ünï".to_string(), "💡".repeat(100))]);
        assert_eq!(
            decode_layout0_attributes(ValueRef::Blob(&wire::encode_attributes(&attrs))).unwrap(),
            attrs
        );
        let json = r#"{"a":"1"}"#;
        assert_eq!(
            decode_layout0_attributes(ValueRef::Text(json.as_bytes())).unwrap(),
            BTreeMap::from([("a".to_string(), "1".to_string())])
        );
    }

    #[test]
    fn the_header_of_a_container_is_found_and_other_bytes_are_whole() {
        let mut data = MAGIC.to_vec();
        data.push(4); // two entries
        for s in [
            &b"avro.schema"[..],
            b"{\"type\":\"int\"}",
            b"avro.codec",
            b"null",
        ] {
            data.push((s.len() * 2) as u8);
            data.extend_from_slice(s);
        }
        data.push(0);
        data.extend_from_slice(&[7u8; 16]);
        let header = data.len();
        data.extend_from_slice(&[2, 2, 9]);
        assert_eq!(header_len(&data), Some(header));
        assert_eq!(header_len(&data[..header - 1]), None);
        assert_eq!(header_len(b"plain bytes"), None);
        assert_eq!(header_len(b"Obj\x01\x7f"), None);
        assert_eq!(join(Some(&data[..header]), &data[header..]), data);
    }
}
