//! Capture by change stream: a table's changes read from a Spanner change stream through
//! its `READ_<stream>` table-valued function, instead of polled by commit timestamp.
//!
//! The parts: `prepare` (the stream must give the table's rows whole; the schema its events
//! carry), `record` (the records a partition query returns, as types), `parse` (a query's
//! result rows as records), [`tracker`] (the partitions of a stream and the order their
//! records are released in, with the progress to resume from), `rows` (a record's mods as
//! the rows the poller would have read), `reader` (the partition queries, feeding the
//! tracker) and `capture` (all of it as the [`ledgerhost_core::change::ChangeCapture`]
//! port).

mod capture;
pub mod parse;
mod prepare;
mod reader;
pub mod record;
pub mod rows;
pub mod spool;
pub mod tracker;
mod worker;

pub use reader::HEARTBEAT;
pub use record::{ChangeRecord, Child, ChildPartitions, DataChange, Mod, ModType, RecordKey};
pub use tracker::{Progress, Start, Tracker, TrackerError};
