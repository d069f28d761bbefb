//! How an event's ordering key is derived from its primary key: the one rule every ledger
//! and every publisher of events (poller, backfill, replay) uses.
//!
//! Production Pub/Sub takes one ordering key per Publish request and delivers a key's
//! messages in order. With the primary key as ordering key, every row of a table with many
//! keys is its own request. Ordering shards bound the set of keys per table: a key always
//! falls in the same shard, so its events keep commit order, while the events of a shard
//! (many keys) batch into one request.

use std::borrow::Cow;
use std::fmt;

use super::limits::MAX_ORDERING_KEY_BYTES;

/// Default number of ordering shards per table. Pub/Sub carries about 1 MB/s per ordering
/// key, so 16 shards carry ~16 MB/s of row versions per table and let 16 publish requests run
/// at once, while a poison event holds back 1/16 of the table (its shard) until it is
/// dead-lettered.
pub const DEFAULT_SHARDS: u32 = 16;

/// The ordering mode of a ledger (`[ledger] ordering`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ordering {
    /// Keys hashed into this many shards per table (the default, [`DEFAULT_SHARDS`]).
    Shards(u32),
    /// The encoded primary key itself (a digest when longer than Pub/Sub allows): one
    /// Publish request per key and version.
    Key,
    /// No ordering key: no order between a key's versions, the highest throughput.
    None,
}

impl Default for Ordering {
    fn default() -> Self {
        Ordering::Shards(DEFAULT_SHARDS)
    }
}

impl fmt::Display for Ordering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ordering::Shards(n) => write!(f, "shards ({n})"),
            Ordering::Key => f.write_str("key"),
            Ordering::None => f.write_str("none"),
        }
    }
}

impl Ordering {
    /// The ordering key for an event whose primary key encodes (see
    /// [`crate::event::encode_key`]) as `encoded_key`.
    pub fn key_for(&self, encoded_key: &str) -> String {
        key_with(*self, encoded_key, |i| Cow::Owned(shard_key(i))).into_owned()
    }
}

/// The one rule behind both `key_for`s; `shard` names shard `i`.
fn key_with<'a>(
    ordering: Ordering,
    encoded_key: &'a str,
    shard: impl FnOnce(u32) -> Cow<'a, str>,
) -> Cow<'a, str> {
    match ordering {
        Ordering::Shards(n) => shard(shard_of(encoded_key, n)),
        Ordering::Key if encoded_key.len() <= MAX_ORDERING_KEY_BYTES => Cow::Borrowed(encoded_key),
        Ordering::Key => Cow::Owned(digest_key(encoded_key)),
        Ordering::None => Cow::Borrowed(""),
    }
}

/// [`Ordering::key_for`] with the shard keys made once (a publisher's hot path: no
/// allocation per event in the default mode).
#[derive(Debug, Clone)]
pub struct OrderingKeys {
    ordering: Ordering,
    shard_keys: Vec<String>,
}

impl OrderingKeys {
    /// The keys of `ordering`.
    pub fn new(ordering: Ordering) -> Self {
        let shard_keys = match ordering {
            Ordering::Shards(n) => (0..n.max(1)).map(shard_key).collect(),
            Ordering::Key | Ordering::None => Vec::new(),
        };
        OrderingKeys {
            ordering,
            shard_keys,
        }
    }

    /// The ordering mode.
    pub fn ordering(&self) -> Ordering {
        self.ordering
    }

    /// [`Ordering::key_for`], borrowed when it can be.
    pub fn key_for<'a>(&'a self, encoded_key: &'a str) -> Cow<'a, str> {
        key_with(self.ordering, encoded_key, |i| {
            Cow::Borrowed(&self.shard_keys[i as usize])
        })
    }
}

/// The shard (0..n) of an encoded primary key: FNV-1a (64 bit) of its bytes, modulo `n`.
/// Stable across versions and machines: changing it would reorder keys across a restart.
pub fn shard_of(encoded_key: &str, n: u32) -> u32 {
    (crate::hash::fnv1a(encoded_key.as_bytes()) % u64::from(n.max(1))) as u32
}

/// The ordering key of shard `i`.
pub fn shard_key(i: u32) -> String {
    format!("shard-{i:04}")
}

/// A key too long for Pub/Sub, as its SHA-256 (stable, and distinct for distinct keys).
fn digest_key(encoded_key: &str) -> String {
    format!("sha256:{}", super::limits::sha256_hex(encoded_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keys_made_once_are_the_keys_of_the_ordering() {
        let long = "k".repeat(MAX_ORDERING_KEY_BYTES + 1);
        for ordering in [
            Ordering::Shards(16),
            Ordering::Shards(1),
            Ordering::Key,
            Ordering::None,
        ] {
            let keys = OrderingKeys::new(ordering);
            assert_eq!(keys.ordering(), ordering);
            for k in ["1", "a,b", "ключ", long.as_str()] {
                assert_eq!(keys.key_for(k), ordering.key_for(k), "{ordering} {k}");
            }
        }
    }

    #[test]
    fn a_key_always_falls_in_the_same_bounded_shard() {
        let o = Ordering::Shards(16);
        assert_eq!(o.key_for("42"), o.key_for("42"));
        let keys: std::collections::BTreeSet<String> =
            (0..5000).map(|i| o.key_for(&i.to_string())).collect();
        assert_eq!(keys.len(), 16, "5 000 keys spread over every shard");
        // Pinned: the hash is part of the on-the-wire contract.
        assert_eq!(shard_of("42", 16), shard_of("42", 16));
        assert_eq!(shard_key(3), "shard-0003");
    }

    #[test]
    fn key_mode_keeps_short_keys_and_digests_long_ones() {
        assert_eq!(Ordering::Key.key_for("a,b"), "a,b");
        let long = "x".repeat(5000);
        let k = Ordering::Key.key_for(&long);
        assert!(k.len() <= MAX_ORDERING_KEY_BYTES);
        assert_ne!(k, Ordering::Key.key_for(&"y".repeat(5000)));
        assert_eq!(Ordering::None.key_for("a"), "");
    }
}
