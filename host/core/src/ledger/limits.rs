//! Pub/Sub's documented production limits, the one place they live.
//!
//! The emulators accept requests the production service refuses, so the rules are carried
//! here and enforced by every ledger (embedded and Pub/Sub alike, so a plugin tested on a
//! laptop does not fail in production) and by the strict front the Google tests run through.
//! Sources:
//! - Quotas and limits, resource limits: <https://cloud.google.com/pubsub/quotas#resource_limits>
//! - `PubsubMessage`: <https://cloud.google.com/pubsub/docs/reference/rest/v1/PubsubMessage>
//! - `Subscription`: <https://cloud.google.com/pubsub/docs/reference/rest/v1/projects.subscriptions>
//! - Resource names: <https://cloud.google.com/pubsub/docs/pubsub-basics#resource_names>

use std::ops::RangeInclusive;

use super::message::Message;

/// "Messages per publish request: 1,000" (quotas, resource limits).
pub const MAX_MESSAGES_PER_PUBLISH: usize = 1000;
/// "Publish request size: 10 MB (total size)" (quotas, resource limits). Counted as
/// [`message_size`] summed over the request, i.e. before base64.
pub const MAX_PUBLISH_BYTES: usize = 10_000_000;
/// "Message size (the data field): 10 MB" (quotas, resource limits).
pub const MAX_MESSAGE_DATA_BYTES: usize = 10_000_000;
/// "Attributes per message: 100" (quotas, resource limits).
pub const MAX_ATTRIBUTES: usize = 100;
/// "Attribute key size: 256 bytes" (quotas, resource limits).
pub const MAX_ATTRIBUTE_KEY_BYTES: usize = 256;
/// "Attribute value size: 1,024 bytes" (quotas, resource limits).
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 1024;
/// "Ordering key size: 1 KB" (quotas, resource limits).
pub const MAX_ORDERING_KEY_BYTES: usize = 1024;
/// `Subscription.ackDeadlineSeconds`: "The minimum custom deadline you can specify is 10
/// seconds. The maximum custom deadline you can specify is 600 seconds (10 minutes)."
pub const ACK_DEADLINE_SECS: RangeInclusive<i64> = 10..=600;
/// `subscriptions.modifyAckDeadline`: "The minimum deadline you can specify is 0 seconds.
/// The maximum deadline you can specify in a single request is 600 seconds (10 minutes)."
pub const MODIFY_ACK_DEADLINE_SECS: RangeInclusive<i64> = 0..=600;
/// `DeadLetterPolicy.maxDeliveryAttempts`: "The value must be between 5 and 100."
pub const DEAD_LETTER_ATTEMPTS: RangeInclusive<i64> = 5..=100;
/// Resource names: "between 3 and 255 characters in length".
pub const RESOURCE_ID_LEN: RangeInclusive<usize> = 3..=255;

/// A request the production Pub/Sub service refuses (`INVALID_ARGUMENT`). The message names
/// the rule, so the fix is obvious.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// The messages of one publish request carry different ordering keys.
    #[error(
        "messages of one publish request carry different ordering keys (`{first}` and \
         `{other}`); Pub/Sub requires one ordering key per PublishRequest"
    )]
    MixedOrderingKeys {
        /// Ordering key of the first message.
        first: String,
        /// The differing ordering key of a later message.
        other: String,
    },
    /// More messages in one publish request than Pub/Sub accepts.
    #[error(
        "{count} messages in one publish request; Pub/Sub takes at most {MAX_MESSAGES_PER_PUBLISH}"
    )]
    TooManyMessages {
        /// Number of messages in the request.
        count: usize,
    },
    /// The whole publish request exceeds Pub/Sub's request size limit.
    #[error("publish request of {bytes} bytes; Pub/Sub takes at most {MAX_PUBLISH_BYTES}")]
    RequestTooLarge {
        /// Size of the request, in bytes.
        bytes: usize,
    },
    /// One message's data exceeds Pub/Sub's per-message limit.
    #[error("message data of {bytes} bytes; Pub/Sub takes at most {MAX_MESSAGE_DATA_BYTES}")]
    DataTooLarge {
        /// Size of the message data, in bytes.
        bytes: usize,
    },
    /// A message has neither data nor attributes.
    #[error("a message needs non-empty data or at least one attribute")]
    EmptyMessage,
    /// A message carries more attributes than Pub/Sub accepts.
    #[error("{count} attributes on one message; Pub/Sub takes at most {MAX_ATTRIBUTES}")]
    TooManyAttributes {
        /// Number of attributes on the message.
        count: usize,
    },
    /// An attribute key is longer than Pub/Sub accepts.
    #[error(
        "attribute key `{key}` is {bytes} bytes; Pub/Sub takes at most {MAX_ATTRIBUTE_KEY_BYTES}"
    )]
    AttributeKeyTooLong {
        /// The offending attribute key.
        key: String,
        /// Length of the key, in bytes.
        bytes: usize,
    },
    /// An attribute key starts with the reserved `goog` prefix.
    #[error("attribute key `{key}` is reserved: keys may not start with `goog`")]
    ReservedAttributeKey {
        /// The offending attribute key.
        key: String,
    },
    /// An attribute key is the empty string.
    #[error("attribute key is empty")]
    EmptyAttributeKey,
    /// An attribute value is longer than Pub/Sub accepts.
    #[error(
        "attribute `{key}` has a value of {bytes} bytes; Pub/Sub takes at most \
         {MAX_ATTRIBUTE_VALUE_BYTES}"
    )]
    AttributeValueTooLong {
        /// Key of the attribute whose value is too long.
        key: String,
        /// Length of the value, in bytes.
        bytes: usize,
    },
    /// The ordering key is longer than Pub/Sub accepts.
    #[error("ordering key of {bytes} bytes; Pub/Sub takes at most {MAX_ORDERING_KEY_BYTES}")]
    OrderingKeyTooLong {
        /// Length of the ordering key, in bytes.
        bytes: usize,
    },
    /// A subscription's ack deadline is outside 10..=600 seconds.
    #[error("ack deadline of {secs} s; Pub/Sub takes 10 to 600 s")]
    AckDeadline {
        /// The requested deadline, in seconds.
        secs: i64,
    },
    /// A ModifyAckDeadline value is outside 0..=600 seconds.
    #[error("ModifyAckDeadline of {secs} s; Pub/Sub takes 0 to 600 s")]
    ModifyAckDeadline {
        /// The requested deadline, in seconds.
        secs: i64,
    },
    /// A dead-letter policy's max delivery attempts is outside 5..=100.
    #[error("dead-letter max delivery attempts {attempts}; Pub/Sub takes 5 to 100")]
    DeadLetterAttempts {
        /// The requested maximum number of delivery attempts.
        attempts: i64,
    },
    /// A topic or subscription id breaks Pub/Sub's resource naming rule.
    #[error(
        "{kind} id `{id}` breaks Pub/Sub's naming rule: 3 to 255 characters, starting with a \
         letter, of letters, digits and `-_.~+%`, not starting with `goog`"
    )]
    ResourceName {
        /// Kind of resource named (`"topic"` or `"subscription"`).
        kind: &'static str,
        /// The offending id.
        id: String,
    },
}

/// The size Pub/Sub counts for a message: data, attribute keys and values, ordering key.
pub fn message_size(m: &Message) -> usize {
    m.data.len()
        + m.ordering_key.len()
        + m.attributes
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
}

/// Checks one message against the per-message rules.
pub fn check_message(m: &Message) -> Result<(), LimitError> {
    check_data(m.data.len(), m.attributes.len())?;
    check_ordering_key(&m.ordering_key)?;
    check_attributes(m.attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// Checks an ordering key's length.
pub fn check_ordering_key(key: &str) -> Result<(), LimitError> {
    if key.len() > MAX_ORDERING_KEY_BYTES {
        return Err(LimitError::OrderingKeyTooLong { bytes: key.len() });
    }
    Ok(())
}

/// Checks a message's attributes: count, key and value sizes, reserved prefix.
pub fn check_attributes<'a>(
    attributes: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
) -> Result<(), LimitError> {
    check_attribute_count(attributes.len())?;
    for (k, v) in attributes {
        check_attribute(k, v)?;
    }
    Ok(())
}

/// Checks how many attributes one message carries.
pub fn check_attribute_count(count: usize) -> Result<(), LimitError> {
    if count > MAX_ATTRIBUTES {
        return Err(LimitError::TooManyAttributes { count });
    }
    Ok(())
}

/// Checks one attribute: key and value sizes, reserved prefix.
pub fn check_attribute(k: &str, v: &str) -> Result<(), LimitError> {
    if k.is_empty() {
        return Err(LimitError::EmptyAttributeKey);
    }
    if k.len() > MAX_ATTRIBUTE_KEY_BYTES {
        return Err(LimitError::AttributeKeyTooLong {
            key: truncate(k, 64).into_owned(),
            bytes: k.len(),
        });
    }
    if k.starts_with("goog") {
        return Err(LimitError::ReservedAttributeKey { key: k.to_string() });
    }
    if v.len() > MAX_ATTRIBUTE_VALUE_BYTES {
        return Err(LimitError::AttributeValueTooLong {
            key: k.to_string(),
            bytes: v.len(),
        });
    }
    Ok(())
}

/// Checks one message's data size, and that a message with no attributes has data.
pub fn check_data(data_len: usize, attribute_count: usize) -> Result<(), LimitError> {
    if data_len == 0 && attribute_count == 0 {
        return Err(LimitError::EmptyMessage);
    }
    if data_len > MAX_MESSAGE_DATA_BYTES {
        return Err(LimitError::DataTooLarge { bytes: data_len });
    }
    Ok(())
}

/// Checks a whole publish request: count, total size, one ordering key, every message.
pub fn check_publish(messages: &[Message]) -> Result<(), LimitError> {
    if messages.len() > MAX_MESSAGES_PER_PUBLISH {
        return Err(LimitError::TooManyMessages {
            count: messages.len(),
        });
    }
    let bytes: usize = messages.iter().map(message_size).sum();
    if bytes > MAX_PUBLISH_BYTES {
        return Err(LimitError::RequestTooLarge { bytes });
    }
    if let Some(first) = messages.first()
        && let Some(other) = messages
            .iter()
            .find(|m| m.ordering_key != first.ordering_key)
    {
        return Err(LimitError::MixedOrderingKeys {
            first: truncate(&first.ordering_key, 64).into_owned(),
            other: truncate(&other.ordering_key, 64).into_owned(),
        });
    }
    messages.iter().try_for_each(check_message)
}

/// Checks a subscription's ack deadline, in seconds.
pub fn check_ack_deadline(secs: i64) -> Result<(), LimitError> {
    if !ACK_DEADLINE_SECS.contains(&secs) {
        return Err(LimitError::AckDeadline { secs });
    }
    Ok(())
}

/// Checks a ModifyAckDeadline's deadline, in seconds.
pub fn check_modify_ack_deadline(secs: i64) -> Result<(), LimitError> {
    if !MODIFY_ACK_DEADLINE_SECS.contains(&secs) {
        return Err(LimitError::ModifyAckDeadline { secs });
    }
    Ok(())
}

/// Checks a dead-letter policy's max delivery attempts.
pub fn check_dead_letter_attempts(attempts: i64) -> Result<(), LimitError> {
    if !DEAD_LETTER_ATTEMPTS.contains(&attempts) {
        return Err(LimitError::DeadLetterAttempts { attempts });
    }
    Ok(())
}

/// True when `c` may appear in a topic or subscription id.
pub fn is_resource_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_.~+%".contains(c)
}

/// Checks a topic or subscription id (the last part of its path); `kind` names it in the error.
pub fn check_resource_id(kind: &'static str, id: &str) -> Result<(), LimitError> {
    let valid = RESOURCE_ID_LEN.contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_alphabetic())
        && !id.starts_with("goog")
        && id.chars().all(is_resource_id_char);
    if valid {
        Ok(())
    } else {
        Err(LimitError::ResourceName {
            kind,
            id: truncate(id, 300).into_owned(),
        })
    }
}

/// Marker appended to a value cut to fit a limit.
pub const TRUNCATED: &str = "…[truncated]";

/// Cuts `s` to at most `max` bytes on a character boundary (no marker).
pub fn truncate(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string().into()
}

/// `s` as an attribute value: whole when it fits, else cut and ended with [`TRUNCATED`] so
/// the result is at most [`MAX_ATTRIBUTE_VALUE_BYTES`] bytes.
pub fn fit_attribute_value(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= MAX_ATTRIBUTE_VALUE_BYTES {
        return s.into();
    }
    let mut out = truncate(s, MAX_ATTRIBUTE_VALUE_BYTES - TRUNCATED.len()).into_owned();
    out.push_str(TRUNCATED);
    out.into()
}

/// Lowercase hex SHA-256 of `s`.
pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// An event id as an attribute value: whole when it fits, else `sha256:<hex>` of it (the
/// full id stays in the Avro data, from which the decoder rebuilds it).
pub fn fit_event_id(id: &str) -> std::borrow::Cow<'_, str> {
    if id.len() <= MAX_ATTRIBUTE_VALUE_BYTES {
        id.into()
    } else {
        format!("sha256:{}", sha256_hex(id)).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn msg(key: &str, attrs: &[(&str, &str)]) -> Message {
        Message::of(key, attrs, b"x")
    }

    #[test]
    fn every_rule_refuses_its_shape_and_accepts_the_limit() {
        assert!(check_publish(&[msg("a", &[]), msg("a", &[])]).is_ok());
        assert!(matches!(
            check_publish(&[msg("a", &[]), msg("b", &[])]),
            Err(LimitError::MixedOrderingKeys { .. })
        ));
        let many: Vec<Message> = (0..1001).map(|_| msg("k", &[])).collect();
        assert!(matches!(
            check_publish(&many),
            Err(LimitError::TooManyMessages { count: 1001 })
        ));
        assert!(check_publish(&many[..1000]).is_ok());
        let big = Message {
            data: vec![1; 6_000_000],
            ..msg("k", &[])
        };
        assert!(matches!(
            check_publish(&[big.clone(), big]),
            Err(LimitError::RequestTooLarge { .. })
        ));
        let empty = Message {
            data: vec![],
            ordering_key: String::new(),
            attributes: BTreeMap::new(),
        };
        assert_eq!(check_message(&empty), Err(LimitError::EmptyMessage));
        let hundred: Vec<(String, String)> = (0..101)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        let m = Message {
            attributes: hundred.into_iter().collect(),
            ..msg("", &[])
        };
        assert!(matches!(
            check_message(&m),
            Err(LimitError::TooManyAttributes { count: 101 })
        ));
        let long_key = "k".repeat(257);
        assert!(matches!(
            check_message(&msg("", &[(&long_key, "v")])),
            Err(LimitError::AttributeKeyTooLong { bytes: 257, .. })
        ));
        assert!(check_message(&msg("", &[(&long_key[..256], "v")])).is_ok());
        assert!(matches!(
            check_message(&msg("", &[("googx", "v")])),
            Err(LimitError::ReservedAttributeKey { .. })
        ));
        let long_value = "v".repeat(1025);
        assert!(matches!(
            check_message(&msg("", &[("k", &long_value)])),
            Err(LimitError::AttributeValueTooLong { bytes: 1025, .. })
        ));
        assert!(check_message(&msg("", &[("k", &long_value[..1024])])).is_ok());
        assert!(matches!(
            check_message(&msg(&"o".repeat(1025), &[])),
            Err(LimitError::OrderingKeyTooLong { bytes: 1025 })
        ));
        assert!(check_ack_deadline(9).is_err() && check_ack_deadline(601).is_err());
        assert!(check_ack_deadline(10).is_ok() && check_ack_deadline(600).is_ok());
        assert!(check_modify_ack_deadline(-1).is_err() && check_modify_ack_deadline(601).is_err());
        assert!(check_modify_ack_deadline(0).is_ok());
        assert!(check_dead_letter_attempts(4).is_err() && check_dead_letter_attempts(101).is_err());
        assert!(check_dead_letter_attempts(5).is_ok() && check_dead_letter_attempts(100).is_ok());
        for bad in ["ab", "9lives", "goog-x", "a b", &"a".repeat(256)] {
            assert!(check_resource_id("topic", bad).is_err(), "{bad}");
        }
        for good in ["abc", "ledger-orders", "lh-a%20b", &"a".repeat(255)] {
            assert!(check_resource_id("topic", good).is_ok(), "{good}");
        }
    }

    #[test]
    fn a_long_value_is_cut_on_a_char_boundary_with_a_marker() {
        let s = "é".repeat(4 << 20);
        let fitted = fit_attribute_value(&s);
        assert!(fitted.len() <= MAX_ATTRIBUTE_VALUE_BYTES);
        assert!(fitted.ends_with(TRUNCATED));
        assert_eq!(fit_attribute_value("short"), "short");
    }
}
