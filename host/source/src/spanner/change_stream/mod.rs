//! Capture by change stream: a table's changes read from a Spanner change stream through
//! its `READ_<stream>` table-valued function, instead of polled by commit timestamp.
//!
//! The parts: `record` (the records a partition query returns, as types), `parse` (a
//! query's result rows as records), `rows` (a record's mods as the rows the poller would
//! have read), [`tracker`] (the partitions of a stream and the order
//! their records are released in, with the progress to resume from).

pub mod parse;
pub mod record;
pub mod rows;
pub mod tracker;

pub use record::{ChangeRecord, Child, ChildPartitions, DataChange, Mod, ModType, RecordKey};
pub use tracker::{Progress, Start, Tracker, TrackerError};
