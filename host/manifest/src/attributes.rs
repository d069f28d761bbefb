//! The standard ledger attributes a contract 0.2 event leaves out, and how a plugin restores
//! them: the one rule the host's lowering (`host/runtime`) and the SDK share.
//!
//! Every event the host delivers carries four standard attributes (the decoder restores any
//! a message lacks): `table`, `commit_ts`, `event_id`, `schema_fingerprint`. Each one's value
//! is normally what the batch and the event already say, so sending it again costs the plugin
//! a list and two strings per attribute and event for nothing. The host therefore leaves out
//! a standard attribute whose value is the one [`Standard`] derives, and sends every other
//! attribute (a standard one with another value too: an event id too long for an attribute
//! travels as its digest). A plugin that republishes an event adds back each standard one the
//! list lacks ([`Standard::restore`]), so the message carries exactly the attributes it
//! arrived with.

/// Source table (re-exported as `ledgerhost_core::ledger::attr::TABLE`).
pub const TABLE: &str = "table";
/// Commit timestamp, decimal microseconds (`attr::COMMIT_TS`).
pub const COMMIT_TS: &str = "commit_ts";
/// Deterministic event id (`attr::EVENT_ID`).
pub const EVENT_ID: &str = "event_id";
/// Hex fingerprint of the Avro writer schema (`attr::SCHEMA_FINGERPRINT`).
pub const SCHEMA_FINGERPRINT: &str = "schema_fingerprint";

/// The standard attributes' names, in the order [`Standard::restore`] appends them.
pub const STANDARD: [&str; 4] = [TABLE, COMMIT_TS, EVENT_ID, SCHEMA_FINGERPRINT];

/// What the batch and one event say, from which the standard attributes derive.
#[derive(Debug, Clone, Copy)]
pub struct Standard<'a> {
    /// The batch's table.
    pub table: &'a str,
    /// The event's commit timestamp.
    pub commit_ts: i64,
    /// The event's id.
    pub event_id: &'a str,
    /// The batch's writer-schema fingerprint.
    pub schema_fingerprint: &'a str,
}

impl Standard<'_> {
    /// True when `(name, value)` is a standard attribute with exactly its derived value, so
    /// the host may leave it out. Allocates nothing (it runs for every event of every batch).
    pub fn derives(&self, name: &str, value: &str) -> bool {
        match name {
            TABLE => value == self.table,
            COMMIT_TS => is_decimal_text_of(value, self.commit_ts),
            EVENT_ID => value == self.event_id,
            SCHEMA_FINGERPRINT => value == self.schema_fingerprint,
            _ => false,
        }
    }

    /// The derived value of the standard attribute `name`; `None` for another name.
    pub fn value(&self, name: &str) -> Option<String> {
        Some(match name {
            TABLE => self.table.to_string(),
            COMMIT_TS => self.commit_ts.to_string(),
            EVENT_ID => self.event_id.to_string(),
            SCHEMA_FINGERPRINT => self.schema_fingerprint.to_string(),
            _ => return None,
        })
    }

    /// The attributes as the ledger had them, from `sent` (what the host delivered): the
    /// four standard ones first (in [`STANDARD`] order; the sent value where the host sent
    /// one, else the derived value), then the others in the order sent. The ledger keeps
    /// attributes as a map, so the order only makes the result predictable.
    pub fn restore(&self, sent: &[(String, String)]) -> Vec<(String, String)> {
        let mut all = Vec::with_capacity(sent.len() + STANDARD.len());
        for name in STANDARD {
            let value = match sent.iter().find(|(k, _)| k == name) {
                Some((_, v)) => v.clone(),
                None => self.value(name).unwrap_or_default(),
            };
            all.push((name.to_string(), value));
        }
        all.extend(
            sent.iter()
                .filter(|(k, _)| !STANDARD.contains(&k.as_str()))
                .cloned(),
        );
        all
    }
}

/// True when `text` is `n` as `i64::to_string` writes it. The canonical text is the shortest
/// that parses to `n` (no `+`, no leading zeros), so equal value and equal length suffice.
fn is_decimal_text_of(text: &str, n: i64) -> bool {
    let digits = n
        .unsigned_abs()
        .checked_ilog10()
        .map_or(1, |d| d as usize + 1);
    text.len() == digits + usize::from(n < 0) && text.parse::<i64>() == Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Standard<'static> = Standard {
        table: "orders",
        commit_ts: -1_700,
        event_id: "orders/7/-1700",
        schema_fingerprint: "ab12",
    };

    #[test]
    fn only_a_standard_attribute_with_its_derived_value_is_left_out() {
        assert!(S.derives("table", "orders"));
        assert!(S.derives("commit_ts", "-1700"));
        assert!(S.derives("event_id", "orders/7/-1700"));
        assert!(S.derives("schema_fingerprint", "ab12"));
        for (k, v) in [
            ("table", "other"),
            ("commit_ts", "-01700"),
            ("commit_ts", "1700"),
            ("commit_ts", "+1700"),
            ("event_id", "digest:0f"),
            ("schema_fingerprint", "AB12"),
            ("source", "orders"),
        ] {
            assert!(!S.derives(k, v), "{k}={v}");
        }
        for n in [0, 9, 10, -1, -10, i64::MAX, i64::MIN] {
            assert!(is_decimal_text_of(&n.to_string(), n), "{n}");
            assert!(!is_decimal_text_of(&format!("0{n}"), n), "{n}");
        }
    }

    #[test]
    fn restore_gives_back_what_the_host_left_out_and_keeps_what_it_sent() {
        let ledger: Vec<(String, String)> = [
            ("table", "orders"),
            ("commit_ts", "-1700"),
            ("event_id", "digest:0f"),
            ("schema_fingerprint", "ab12"),
            ("source", "test"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let sent: Vec<(String, String)> = ledger
            .iter()
            .filter(|(k, v)| !S.derives(k, v))
            .cloned()
            .collect();
        assert_eq!(sent.len(), 2, "the digest id and the extra one travel");
        assert_eq!(
            S.restore(&sent),
            ledger,
            "the standard four first, then the others"
        );
    }
}
