//! Calendar text of DATE and TIMESTAMP values, as the host writes them (proleptic Gregorian,
//! UTC), so every plugin renders a date the same way: the host's own calendar
//! (`ledgerhost_manifest::calendar`), which the SDK links on every target.

pub use ledgerhost_manifest::calendar::{civil_from_days, date_text, timestamp_text};
