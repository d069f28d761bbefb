//! The binary forms a batch of messages and the embedded ledger's pages share: unsigned
//! varints for lengths, and attributes as length-prefixed pairs (the keys the host sets on
//! every event as a one-byte code). One place, because a batch's records are copied into a
//! page as they are.

use std::collections::BTreeMap;

use super::attr;

/// `n` as an unsigned varint (7 bits a byte, low first).
pub fn write_len(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// An unsigned varint at `*at`, advancing it; `None` when truncated or too long.
pub fn read_len(data: &[u8], at: &mut usize) -> Option<usize> {
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

/// How many bytes [`write_len`] writes for `n`.
pub fn len_len(n: usize) -> usize {
    (usize::BITS - (n | 1).leading_zeros()).div_ceil(7) as usize
}

/// The keys the host sets on every event message, stored as a one-byte code. Append
/// only: a code's meaning is on disk.
const KNOWN_KEYS: [&str; 4] = [
    attr::TABLE,
    attr::COMMIT_TS,
    attr::EVENT_ID,
    attr::SCHEMA_FINGERPRINT,
];

/// [`encode_attributes_into`] into a buffer of its own.
pub fn encode_attributes(attributes: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_attributes_len(attributes));
    encode_attributes_into(&mut out, attributes);
    out
}

/// Appends attributes in their binary form to `out`: a count, then each pair. A key is a
/// varint `v`: odd, it is `KNOWN_KEYS[v / 2]`; even, `v / 2` bytes of UTF-8 follow. A value
/// is a varint length and its UTF-8.
pub fn encode_attributes_into(out: &mut Vec<u8>, attributes: &BTreeMap<String, String>) {
    encode_pairs_into(out, attributes.len(), attributes);
}

/// [`encode_attributes_into`] for the `count` pairs `pairs` yields (a map's, some of them,
/// or borrowed ones).
pub fn encode_pairs_into<K: AsRef<str>, V: AsRef<str>>(
    out: &mut Vec<u8>,
    count: usize,
    pairs: impl IntoIterator<Item = (K, V)>,
) {
    write_len(out, count);
    for (k, v) in pairs {
        let (k, v) = (k.as_ref(), v.as_ref());
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
pub fn encoded_pairs_len<K: AsRef<str>, V: AsRef<str>>(
    count: usize,
    pairs: impl IntoIterator<Item = (K, V)>,
) -> usize {
    len_len(count)
        + pairs
            .into_iter()
            .map(|(k, v)| {
                let (k, v) = (k.as_ref(), v.as_ref());
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

/// Reads attributes written by [`encode_attributes_into`].
pub fn decode_attributes(bytes: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    decode_attributes_into(&mut out, bytes)?;
    Ok(out)
}

/// [`decode_attributes`], adding to `out` (what a batch or page shares, then a record's own).
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
        }
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
            let mut at = 0;
            assert_eq!(read_len(&out, &mut at), Some(n));
            assert_eq!(at, out.len());
        }
        assert_eq!(read_len(&[0x80], &mut 0), None);
    }
}
