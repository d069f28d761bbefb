//! Capability wrappers. On `wasm32` each function calls the host import directly (so a
//! component imports only what it calls); natively each goes to the thread-local
//! [`crate::testing::MockHost`], so plugin code runs unchanged in `cargo test`.

/// Runs the first block in a component and the second natively.
macro_rules! route {
    ($wasm:expr, $native:expr) => {{
        #[cfg(target_arch = "wasm32")]
        {
            $wasm
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            $native
        }
    }};
}

/// Object storage, in the buckets named by `grants.buckets`.
pub mod blobstore {
    use crate::Error;
    #[cfg(target_arch = "wasm32")]
    use crate::bindings::consumer::ledgerhost::plugin0_1_0::blobstore as raw;
    #[cfg(not(target_arch = "wasm32"))]
    use crate::testing::mock;

    /// Writes (or overwrites) an object.
    #[inline]
    pub fn put(bucket: &str, name: &str, data: &[u8]) -> Result<(), Error> {
        route!(
            raw::put(bucket, name, data),
            mock::with(|h| h.blob_put(bucket, name, data))
        )
    }

    /// Reads an object; `None` if it does not exist.
    #[inline]
    pub fn get(bucket: &str, name: &str) -> Result<Option<Vec<u8>>, Error> {
        route!(
            raw::get(bucket, name),
            mock::with(|h| h.blob_get(bucket, name))
        )
    }

    /// Deletes an object; deleting a missing object is not an error.
    #[inline]
    pub fn delete(bucket: &str, name: &str) -> Result<(), Error> {
        route!(
            raw::delete(bucket, name),
            mock::with(|h| h.blob_delete(bucket, name))
        )
    }

    /// Names of the objects whose name starts with `prefix`, sorted.
    #[inline]
    pub fn list(bucket: &str, prefix: &str) -> Result<Vec<String>, Error> {
        route!(
            raw::list(bucket, prefix),
            mock::with(|h| h.blob_list(bucket, prefix))
        )
    }
}

/// Versioned key-value store, under the prefixes named by `grants.key-prefixes`.
pub mod kv {
    use crate::Error;
    #[cfg(target_arch = "wasm32")]
    use crate::bindings::consumer::ledgerhost::plugin0_1_0::keyvalue as raw;
    #[cfg(not(target_arch = "wasm32"))]
    use crate::testing::mock;

    /// Current value; `None` if absent or deleted.
    #[inline]
    pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
        route!(raw::get(key), mock::with(|h| h.kv_get(key)))
    }

    /// Unconditional write.
    #[inline]
    pub fn set(key: &str, value: &[u8]) -> Result<(), Error> {
        route!(raw::set(key, value), mock::with(|h| h.kv_set(key, value)))
    }

    /// Unconditional delete.
    #[inline]
    pub fn delete(key: &str) -> Result<(), Error> {
        route!(raw::delete(key), mock::with(|h| h.kv_delete(key)))
    }

    /// Writes only if `version` (e.g. the event's commit timestamp) is newer than the stored
    /// one; returns whether it was applied. Keeps a view correct under redelivery.
    #[inline]
    pub fn set_if_newer(key: &str, value: &[u8], version: i64) -> Result<bool, Error> {
        route!(
            raw::set_if_newer(key, value, version),
            mock::with(|h| h.kv_set_if_newer(key, value, version))
        )
    }

    /// Deletes only if `version` is newer, leaving a tombstone that keeps older writes out.
    #[inline]
    pub fn delete_if_newer(key: &str, version: i64) -> Result<bool, Error> {
        route!(
            raw::delete_if_newer(key, version),
            mock::with(|h| h.kv_delete_if_newer(key, version))
        )
    }

    /// Live keys starting with `prefix` (itself under a granted prefix), sorted.
    #[inline]
    pub fn list_keys(prefix: &str) -> Result<Vec<String>, Error> {
        route!(raw::list_keys(prefix), mock::with(|h| h.kv_list(prefix)))
    }
}

/// The analytics warehouse, in the tables named by `grants.warehouse-tables`.
pub mod warehouse {
    use crate::Error;
    #[cfg(target_arch = "wasm32")]
    use crate::bindings::consumer::ledgerhost::plugin0_1_0::warehouse as raw;
    pub use crate::bindings::consumer::ledgerhost::plugin0_1_0::warehouse::Row;
    #[cfg(not(target_arch = "wasm32"))]
    use crate::testing::mock;

    /// Creates the table from an Avro record schema (JSON) if missing; adds new columns.
    #[inline]
    pub fn ensure_table(table: &str, avro_schema: &str) -> Result<(), Error> {
        route!(
            raw::ensure_table(table, avro_schema),
            mock::with(|h| h.wh_ensure(table, avro_schema))
        )
    }

    /// Inserts rows; a row whose event id is already present replaces it.
    #[inline]
    pub fn load(table: &str, rows: &[Row]) -> Result<(), Error> {
        route!(
            raw::load(table, rows),
            mock::with(|h| h.wh_load(table, rows))
        )
    }

    /// Number of rows in the table.
    #[inline]
    pub fn count(table: &str) -> Result<u64, Error> {
        route!(raw::count(table), mock::with(|h| h.wh_count(table)))
    }
}

/// Publishing to the ledger topics named by `grants.topics`.
pub mod ledger {
    #[cfg(target_arch = "wasm32")]
    use crate::bindings::consumer::ledgerhost::plugin0_1_0::ledger as raw;
    pub use crate::bindings::consumer::ledgerhost::plugin0_1_0::ledger::Message;
    #[cfg(not(target_arch = "wasm32"))]
    use crate::testing::mock;
    use crate::{Error, Event, EventExt};

    /// Creates the topic if it does not exist (publishing to a missing topic fails).
    #[inline]
    pub fn create_topic(topic: &str) -> Result<(), Error> {
        route!(
            raw::create_topic(topic),
            mock::with(|h| h.topic_create(topic))
        )
    }

    /// Publishes in order; returns once every message is durably accepted.
    #[inline]
    pub fn publish(topic: &str, messages: &[Message]) -> Result<(), Error> {
        route!(
            raw::publish(topic, messages),
            mock::with(|h| h.topic_publish(topic, messages))
        )
    }

    /// The message that carries `event` unchanged: its Avro, ordering key and attributes
    /// (all of them: the standard four the host does not send are restored,
    /// [`Event::ledger_attributes`]).
    pub fn message_of(event: &Event) -> Message {
        Message {
            data: event.avro.clone(),
            ordering_key: event.ordering_key().to_string(),
            attributes: event.ledger_attributes(),
        }
    }

    /// Publishes events unchanged onto `topic` (see [`message_of`]); nothing to publish is
    /// not an error and makes no call.
    pub fn republish<'a>(
        topic: &str,
        events: impl IntoIterator<Item = &'a Event>,
    ) -> Result<(), Error> {
        let messages: Vec<Message> = events.into_iter().map(message_of).collect();
        if messages.is_empty() {
            return Ok(());
        }
        publish(topic, &messages)
    }
}

/// Configuration values: the manifest's `[config]` (or the host's overrides), for the keys
/// listed in `grants.config`. An ungranted key reads as absent.
pub mod config {
    #[cfg(target_arch = "wasm32")]
    use crate::bindings::consumer::wasi::config::store as raw;
    #[cfg(not(target_arch = "wasm32"))]
    use crate::testing::mock;

    /// The value of `key`; `Err` only when the host's config store itself failed.
    #[inline]
    pub fn try_get(key: &str) -> Result<Option<String>, String> {
        route!(
            raw::get(key).map_err(|e| format!("config store failed reading `{key}`: {e:?}")),
            Ok(mock::with(|h| h.config_get(key)))
        )
    }

    /// The value of `key`, if granted and set. A failing config store reads as absent.
    #[inline]
    pub fn get(key: &str) -> Option<String> {
        try_get(key).ok().flatten()
    }

    /// The value of `key` parsed as `T`, or `default` when absent. A value that does not
    /// parse is an error naming the key, so a typo in a manifest is not silently ignored.
    pub fn parse_or<T: std::str::FromStr>(key: &str, default: T) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        match try_get(key)? {
            None => Ok(default),
            Some(text) => text
                .trim()
                .parse()
                .map_err(|e| format!("config `{key}` = {text:?} is invalid: {e}")),
        }
    }
}

/// Logging through the host (one structured line per call, tagged with the plugin name).
pub mod log {
    #[cfg(target_arch = "wasm32")]
    use crate::bindings::consumer::wasi::logging::logging as raw;
    pub use crate::bindings::consumer::wasi::logging::logging::Level;
    #[cfg(not(target_arch = "wasm32"))]
    use crate::testing::mock;

    /// Logs `message` at `level`, with `context` (e.g. an event id; may be empty).
    #[inline]
    pub fn log(level: Level, context: &str, message: &str) {
        route!(
            raw::log(level, context, message),
            mock::with_or_stderr(level, context, message)
        )
    }
    /// Logs at debug level.
    pub fn debug(message: &str) {
        log(Level::Debug, "", message);
    }
    /// Logs at info level.
    pub fn info(message: &str) {
        log(Level::Info, "", message);
    }
    /// Logs at warn level.
    pub fn warn(message: &str) {
        log(Level::Warn, "", message);
    }
    /// Logs at error level.
    pub fn error(message: &str) {
        log(Level::Error, "", message);
    }
}

/// Logs a formatted message at debug level: `log_debug!("saw {}", id)`.
#[macro_export]
macro_rules! log_debug {
    ($($arg:tt)*) => { $crate::log::debug(&::std::format!($($arg)*)) };
}
/// Logs a formatted message at info level.
#[macro_export]
macro_rules! log_info {
    ($($arg:tt)*) => { $crate::log::info(&::std::format!($($arg)*)) };
}
/// Logs a formatted message at warn level.
#[macro_export]
macro_rules! log_warn {
    ($($arg:tt)*) => { $crate::log::warn(&::std::format!($($arg)*)) };
}
/// Logs a formatted message at error level.
#[macro_export]
macro_rules! log_error {
    ($($arg:tt)*) => { $crate::log::error(&::std::format!($($arg)*)) };
}
