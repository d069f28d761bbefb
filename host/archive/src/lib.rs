//! The archive's layout, shared by the `archiver`, `janitor` and `replayer` plugins (and
//! readable by anyone else, e.g. a warehouse loader):
//!
//! - Bucket per table: `<bucket-prefix><table in lowercase>` (default `archive-orders`).
//! - One object per event (the archiver):
//!   `<table>-YYYY_MM_DD_HHMMSS_mmm-NNNN.avro` — the commit time (UTC) to the millisecond and
//!   four digits derived from the event id ([`event_digits`]), so a redelivery of an event
//!   lands on the same name. Its content is the event's Avro object container (one record,
//!   writer schema inside), byte for byte as it travelled on the ledger.
//! - One compacted file per table and span (the janitor):
//!   `<table>-YYYY_MM_DD_HHMM-HHMM.avro`, e.g. `orders-2026_11_22_1200-1300.avro` — an Avro
//!   object container file, deflate codec, schema [`COMPACTED_SCHEMA`]: one record per
//!   event, in commit order, each carrying the event's own container in `avro`.
//!
//! Names sort by time within a table, so a listing by `<table>-YYYY_MM_DD` prefix finds a
//! day's objects.

mod compacted;
mod names;
#[cfg(feature = "testing")]
pub mod testing;

pub use compacted::{
    ArchivedEvent, COMPACTED_SCHEMA, FormatError, archived_event, read_compacted, sort_events,
    write_compacted,
};
pub use names::{
    ObjectName, Span, bucket_for, civil_from_micros, compacted_name, event_digits,
    micros_from_civil, parse_object_name, single_name,
};
