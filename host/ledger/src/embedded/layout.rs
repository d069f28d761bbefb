//! How the embedded ledger stores a message compactly: what the messages of a schema share
//! (the Avro object-container header: magic, metadata with the schema JSON, sync marker) is
//! stored once in `headers`, each message row holds the rest; attributes are one binary
//! blob of length-prefixed pairs instead of JSON. Reading gives back the same bytes.
//!
//! Why: the write cost of a page follows its bytes (WAL frames, checkpoint copies, fsync),
//! and the header is most of a small row's message (profile in BENCHMARKS.md, issue 11).

use std::collections::BTreeMap;

use ledgerhost_core::ledger::attr;
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

/// `n` as an unsigned varint (7 bits a byte, low first).
pub(super) fn write_len(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// An unsigned varint at `*at`, advancing it.
pub(super) fn read_len(data: &[u8], at: &mut usize) -> Option<usize> {
    let mut n: usize = 0;
    for shift in (0..usize::BITS).step_by(7) {
        let b = *data.get(*at)?;
        *at += 1;
        n |= usize::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

/// The keys the host sets on every event message, stored as a one-byte code. Append
/// only: a code's meaning is on disk.
const KNOWN_KEYS: [&str; 4] = [
    attr::TABLE,
    attr::COMMIT_TS,
    attr::EVENT_ID,
    attr::SCHEMA_FINGERPRINT,
];

/// [`encode_attributes_into`] into a buffer of its own (what the tests compare with).
#[cfg(test)]
pub fn encode_attributes(attributes: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_attributes_len(attributes));
    encode_attributes_into(&mut out, attributes);
    out
}

/// Appends attributes as stored to `out`: a count, then each pair. A key is a varint `v`:
/// odd, it is `KNOWN_KEYS[v / 2]`; even, `v / 2` bytes of UTF-8 follow. A value is a varint
/// length and its UTF-8.
pub fn encode_attributes_into(out: &mut Vec<u8>, attributes: &BTreeMap<String, String>) {
    encode_pairs_into(out, attributes.len(), attributes);
}

/// [`encode_attributes_into`] for the `count` pairs `pairs` yields (a map's, or some of
/// them).
pub fn encode_pairs_into<'a>(
    out: &mut Vec<u8>,
    count: usize,
    pairs: impl IntoIterator<Item = (&'a String, &'a String)>,
) {
    write_len(out, count);
    for (k, v) in pairs {
        match known_key(k) {
            Some(code) => write_len(out, code * 2 + 1),
            None => {
                write_len(out, k.len() * 2);
                out.extend_from_slice(k.as_bytes());
            }
        }
        write_len(out, v.len());
        out.extend_from_slice(v.as_bytes());
    }
}

/// How many bytes [`encode_attributes_into`] writes for `attributes`.
pub fn encoded_attributes_len(attributes: &BTreeMap<String, String>) -> usize {
    encoded_pairs_len(attributes.len(), attributes)
}

/// How many bytes [`encode_pairs_into`] writes for `count` pairs.
pub fn encoded_pairs_len<'a>(
    count: usize,
    pairs: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> usize {
    len_len(count)
        + pairs
            .into_iter()
            .map(|(k, v)| {
                let key = match known_key(k) {
                    Some(code) => len_len(code * 2 + 1),
                    None => len_len(k.len() * 2) + k.len(),
                };
                key + len_len(v.len()) + v.len()
            })
            .sum::<usize>()
}

fn known_key(key: &str) -> Option<usize> {
    KNOWN_KEYS.iter().position(|known| *known == key)
}

/// How many bytes [`write_len`] writes for `n`.
pub(super) fn len_len(n: usize) -> usize {
    (usize::BITS - (n | 1).leading_zeros()).div_ceil(7) as usize
}

/// Reads attributes stored by [`encode_attributes_into`].
pub fn decode_attributes(bytes: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    decode_attributes_into(&mut out, bytes)?;
    Ok(out)
}

/// [`decode_attributes`], adding to `out` (a page's shared attributes, then a record's own).
pub fn decode_attributes_into(
    out: &mut BTreeMap<String, String>,
    bytes: &[u8],
) -> Result<(), String> {
    let bad = || "truncated or malformed attribute blob".to_string();
    let mut at = 0;
    let text = |at: &mut usize, len: usize| -> Result<String, String> {
        let end = at.checked_add(len).filter(|&e| e <= bytes.len());
        let end = end.ok_or_else(bad)?;
        let s = std::str::from_utf8(&bytes[*at..end])
            .map_err(|e| format!("attribute is not UTF-8: {e}"))?;
        *at = end;
        Ok(s.to_string())
    };
    let count = read_len(bytes, &mut at).ok_or_else(bad)?;
    for _ in 0..count {
        let key = read_len(bytes, &mut at).ok_or_else(bad)?;
        let key = if key % 2 == 1 {
            KNOWN_KEYS.get(key / 2).ok_or_else(bad)?.to_string()
        } else {
            text(&mut at, key / 2)?
        };
        let len = read_len(bytes, &mut at).ok_or_else(bad)?;
        out.insert(key, text(&mut at, len)?);
    }
    if at != bytes.len() {
        return Err(bad());
    }
    Ok(())
}

/// Attributes as a layout-0 row stored them: the binary form, or the JSON text of a file
/// older still (read once, by the migration to layout 1).
pub fn decode_layout0_attributes(stored: ValueRef<'_>) -> Result<BTreeMap<String, String>, String> {
    match stored {
        ValueRef::Text(json) => serde_json::from_slice(json).map_err(|e| e.to_string()),
        ValueRef::Blob(bytes) => decode_attributes(bytes),
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
    fn attributes_round_trip_exactly() {
        for attrs in [
            BTreeMap::new(),
            BTreeMap::from([("k".to_string(), String::new())]),
            BTreeMap::from([
                ("table".to_string(), "orders".to_string()),
                ("ünï".to_string(), "💡".repeat(100)),
            ]),
            BTreeMap::from([
                (attr::TABLE.to_string(), "orders".to_string()),
                (attr::EVENT_ID.to_string(), "orders/1/2".to_string()),
                ("event".to_string(), "x".repeat(200)),
            ]),
        ] {
            let stored = encode_attributes(&attrs);
            assert_eq!(stored.len(), encoded_attributes_len(&attrs));
            assert_eq!(decode_attributes(&stored).unwrap(), attrs);
            assert_eq!(
                decode_layout0_attributes(ValueRef::Blob(&stored)).unwrap(),
                attrs
            );
        }
        let json = r#"{"a":"1"}"#;
        assert_eq!(
            decode_layout0_attributes(ValueRef::Text(json.as_bytes())).unwrap(),
            BTreeMap::from([("a".to_string(), "1".to_string())])
        );
        let mut stored = encode_attributes(&BTreeMap::from([("a".into(), "bc".into())]));
        stored.pop();
        assert!(decode_attributes(&stored).is_err());
        // A known-key code past the list is refused, not guessed.
        assert!(decode_attributes(&[1, 99, 0]).is_err());
    }

    #[test]
    fn a_varints_length_is_known_before_it_is_written() {
        for n in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            usize::MAX >> 1,
            usize::MAX,
        ] {
            let mut out = Vec::new();
            write_len(&mut out, n);
            assert_eq!(out.len(), len_len(n), "{n}");
        }
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
