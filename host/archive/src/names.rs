//! Bucket and object names, and the UTC calendar arithmetic behind them (plugins have no
//! date library and no clock; everything is derived from commit timestamps).

use ledgerhost_manifest::calendar::{checked_days, civil_from_days};

const MICROS_PER_SEC: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SEC;

/// The bucket holding a table's archive: `<prefix><table in lowercase>` (bucket names of
/// Cloud Storage are lowercase).
pub fn bucket_for(prefix: &str, table: &str) -> String {
    format!("{prefix}{}", table.to_ascii_lowercase())
}

/// A UTC instant split into calendar fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub micros: u32,
}

/// Splits microseconds since the epoch into UTC calendar fields.
pub fn civil_from_micros(us: i64) -> Civil {
    let days = us.div_euclid(MICROS_PER_DAY);
    let rest = us.rem_euclid(MICROS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let secs = rest / MICROS_PER_SEC;
    Civil {
        year,
        month,
        day,
        hour: (secs / 3600) as u32,
        minute: (secs / 60 % 60) as u32,
        second: (secs % 60) as u32,
        micros: (rest % MICROS_PER_SEC) as u32,
    }
}

/// Microseconds since the epoch of a UTC date and time (`hour` may be 24: the next midnight).
/// `None` for an impossible date or time.
pub fn micros_from_civil(
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
) -> Option<i64> {
    if hour > 24 || minute > 59 || second > 59 {
        return None;
    }
    // Refuses 31 April and 29 February of common years.
    let days = i64::from(checked_days(year, month, day)?);
    let secs = days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second);
    secs.checked_mul(MICROS_PER_SEC)
}

/// Four decimal digits derived from an event id (FNV-1a, mod 10000): a redelivery of the
/// same event gets the same digits, so its object name is the same.
pub fn event_digits(event_id: &str) -> u16 {
    (ledgerhost_core::hash::fnv1a(event_id.as_bytes()) % 10_000) as u16
}

/// The object name of one archived event: `<table>-YYYY_MM_DD_HHMMSS_mmm-NNNN.avro`.
pub fn single_name(table: &str, commit_ts: i64, digits: u16) -> String {
    let c = civil_from_micros(commit_ts);
    format!(
        "{table}-{:04}_{:02}_{:02}_{:02}{:02}{:02}_{:03}-{:04}.avro",
        c.year,
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second,
        c.micros / 1000,
        digits % 10_000
    )
}

/// A time span `[start, end)` of a compacted file, aligned on whole minutes from midnight UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    /// Microseconds since the epoch, inclusive.
    pub start: i64,
    /// Microseconds since the epoch, exclusive.
    pub end: i64,
}

impl Span {
    /// The span of `minutes` (a divisor of 1440) holding `ts`.
    pub fn containing(ts: i64, minutes: u32) -> Span {
        let len = i64::from(minutes.max(1)) * 60 * MICROS_PER_SEC;
        let start = ts.div_euclid(len) * len;
        Span {
            start,
            end: start + len,
        }
    }

    /// True when `ts` falls in the span.
    pub fn contains(&self, ts: i64) -> bool {
        self.start <= ts && ts < self.end
    }

    /// True when the span and `[from, to)` share an instant.
    pub fn overlaps(&self, from: i64, to: i64) -> bool {
        self.start < to && from < self.end
    }
}

/// The compacted file of a span: `<table>-YYYY_MM_DD_HHMM-HHMM.avro` (the end of the day's
/// last span is `2400`).
pub fn compacted_name(table: &str, span: Span) -> String {
    let s = civil_from_micros(span.start);
    let minutes_to_end = (span.end - span.start) / (60 * MICROS_PER_SEC)
        + i64::from(s.hour) * 60
        + i64::from(s.minute);
    format!(
        "{table}-{:04}_{:02}_{:02}_{:02}{:02}-{:02}{:02}.avro",
        s.year,
        s.month,
        s.day,
        s.hour,
        s.minute,
        minutes_to_end / 60,
        minutes_to_end % 60
    )
}

/// What an object name in a table's bucket denotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectName {
    /// One event committed within this millisecond (`millis` since the epoch).
    Single {
        /// Commit millisecond of the event, since the Unix epoch.
        millis: i64,
        /// The four digits derived from the event id (see [`event_digits`]).
        digits: u16,
    },
    /// The compacted file of a span.
    Compacted(Span),
}

fn num<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses a name made by [`single_name`] or [`compacted_name`] for `table`; `None` for any
/// other object (which the plugins leave alone).
pub fn parse_object_name(table: &str, name: &str) -> Option<ObjectName> {
    let rest = name.strip_prefix(table)?.strip_prefix('-')?;
    let rest = rest.strip_suffix(".avro")?;
    let b = rest.as_bytes();
    if b.len() < 11 || b[4] != b'_' || b[7] != b'_' || b[10] != b'_' {
        return None;
    }
    let year: i64 = num(&rest[0..4])?;
    let month: u32 = num(&rest[5..7])?;
    let day: u32 = num(&rest[8..10])?;
    let time = &rest[11..];
    match time.len() {
        // HHMMSS_mmm-NNNN
        15 if time.as_bytes()[6] == b'_' && time.as_bytes()[10] == b'-' => {
            let (h, m, s) = (num(&time[0..2])?, num(&time[2..4])?, num(&time[4..6])?);
            if h > 23 {
                return None;
            }
            let ms: i64 = num(&time[7..10])?;
            let digits = num(&time[11..15])?;
            let base = micros_from_civil(year, month, day, h, m, s)?;
            Some(ObjectName::Single {
                millis: base / 1000 + ms,
                digits,
            })
        }
        // HHMM-HHMM
        9 if time.as_bytes()[4] == b'-' => {
            let start =
                micros_from_civil(year, month, day, num(&time[0..2])?, num(&time[2..4])?, 0)?;
            let end = micros_from_civil(year, month, day, num(&time[5..7])?, num(&time[7..9])?, 0)?;
            (start < end && end - start <= MICROS_PER_DAY)
                .then_some(ObjectName::Compacted(Span { start, end }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-22T12:03:04.123456Z
    const TS: i64 = 1_795_348_984_123_456;

    #[test]
    fn calendar_round_trips() {
        let c = civil_from_micros(TS);
        assert_eq!(
            (c.year, c.month, c.day, c.hour, c.minute, c.second, c.micros),
            (2026, 11, 22, 12, 3, 4, 123_456)
        );
        assert_eq!(
            micros_from_civil(2026, 11, 22, 12, 3, 4),
            Some(TS - 123_456)
        );
        assert_eq!(civil_from_micros(0).year, 1970);
        let before = civil_from_micros(-1);
        assert_eq!(
            (before.year, before.month, before.day, before.hour),
            (1969, 12, 31, 23)
        );
        assert_eq!(
            micros_from_civil(2025, 2, 29, 0, 0, 0),
            None,
            "2025 is not a leap year"
        );
        assert!(micros_from_civil(2024, 2, 29, 0, 0, 0).is_some());
        assert_eq!(micros_from_civil(2026, 13, 1, 0, 0, 0), None);
    }

    #[test]
    fn single_names_carry_the_millisecond_and_the_digits() {
        let name = single_name("orders", TS, 42);
        assert_eq!(name, "orders-2026_11_22_120304_123-0042.avro");
        assert_eq!(
            parse_object_name("orders", &name),
            Some(ObjectName::Single {
                millis: TS / 1000,
                digits: 42
            })
        );
        assert_eq!(event_digits("orders/1/5"), event_digits("orders/1/5"));
        assert_ne!(event_digits("orders/1/5"), event_digits("orders/2/5"));
        assert!(event_digits("x") < 10_000);
    }

    #[test]
    fn compacted_names_name_the_span() {
        let span = Span::containing(TS, 60);
        assert!(span.contains(TS));
        let name = compacted_name("orders", span);
        assert_eq!(name, "orders-2026_11_22_1200-1300.avro");
        assert_eq!(
            parse_object_name("orders", &name),
            Some(ObjectName::Compacted(span))
        );
        let last = Span::containing(micros_from_civil(2026, 11, 22, 23, 59, 0).unwrap(), 60);
        let name = compacted_name("orders", last);
        assert_eq!(name, "orders-2026_11_22_2300-2400.avro");
        assert_eq!(
            parse_object_name("orders", &name),
            Some(ObjectName::Compacted(last))
        );
        let quarter = Span::containing(TS, 15);
        assert_eq!(
            compacted_name("orders", quarter),
            "orders-2026_11_22_1200-1215.avro"
        );
    }

    #[test]
    fn other_names_are_not_ours() {
        for name in [
            "orders-2026_11_22_1200-1300.json",
            "order-2026_11_22_1200-1300.avro",
            "orders-2026_11_22_120304_123-42.avro",
            "orders-2026_02_30_1200-1300.avro",
            "orders-2026_11_22_1300-1200.avro",
            "orders-20261122_1200-1300.avro",
            "orders_items-2026_11_22_1200-1300.avro",
            "orders-2026_11_22_250000_000-0001.avro",
        ] {
            assert_eq!(parse_object_name("orders", name), None, "{name}");
        }
        // A table whose name extends another's is told apart by the exact prefix.
        assert!(parse_object_name("orders-eu", "orders-eu-2026_11_22_1200-1300.avro").is_some());
        assert_eq!(
            parse_object_name("orders", "orders-eu-2026_11_22_1200-1300.avro"),
            None
        );
    }

    #[test]
    fn buckets_are_lowercase_per_table() {
        assert_eq!(bucket_for("archive-", "Orders"), "archive-orders");
    }
}
