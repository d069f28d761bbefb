//! Attribute names every event message carries.

/// The four standard ones (source table; commit timestamp, decimal microseconds;
/// deterministic event id; hex fingerprint of the Avro writer schema): named once, in
/// `ledgerhost_manifest::attributes`, which the SDK shares.
pub use ledgerhost_manifest::attributes::{COMMIT_TS, EVENT_ID, SCHEMA_FINGERPRINT, TABLE};
/// On dead-lettered messages: why.
pub const DEAD_LETTER_REASON: &str = "dead_letter_reason";
/// On dead-lettered messages: the subscription that gave up.
pub const DEAD_LETTER_SUBSCRIPTION: &str = "dead_letter_subscription";
/// On dead-lettered messages: the delivery attempt that gave up (decimal).
pub const DEAD_LETTER_ATTEMPTS: &str = "dead_letter_attempts";
/// Pub/Sub's own delivery count on a message its dead-letter policy forwarded
/// (<https://cloud.google.com/pubsub/docs/handling-failures>).
pub const PUBSUB_DEAD_LETTER_DELIVERY_COUNT: &str = "CloudPubSubDeadLetterSourceDeliveryCount";
/// Prefix of every attribute Pub/Sub's dead-letter policy adds.
pub const PUBSUB_DEAD_LETTER_PREFIX: &str = "CloudPubSubDeadLetterSource";
/// On replayed copies: the only plugin that handles the message; the dispatchers of the
/// other plugins on the topic ack it without calling their plugin.
pub const REPLAY_FOR: &str = "replay_for";
/// On replayed copies: the topic the message was read from.
pub const REPLAY_OF: &str = "replay_of";
