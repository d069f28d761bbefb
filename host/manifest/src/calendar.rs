//! Calendar arithmetic, once for the host and the plugins: DATE values are days since
//! 1970-01-01 and TIMESTAMP values microseconds since the epoch, in the proleptic Gregorian
//! calendar, UTC (what Spanner, BigQuery, Avro and SQLite's text mean). Howard Hinnant's
//! `days_from_civil` / `civil_from_days`, exact for every day an `i64` can count.

/// `(year, month, day)` of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // In range by construction: day 1..=31, month 1..=12.
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Days since 1970-01-01 of `year-month-day`. A day past its month's end counts on into the
/// next month, so callers that take outside input use [`checked_days`].
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 of a day that exists (2023-02-29 does not) and fits a DATE.
pub fn checked_days(year: i64, month: u32, day: u32) -> Option<i32> {
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    (civil_from_days(days) == (year, month, day))
        .then(|| i32::try_from(days).ok())
        .flatten()
}

/// A DATE as `YYYY-MM-DD`.
pub fn date_text(days: i32) -> String {
    let (y, m, d) = civil_from_days(i64::from(days));
    format!("{y:04}-{m:02}-{d:02}")
}

/// The DATE of `YYYY-MM-DD` text, exactly as [`date_text`] writes it; `None` otherwise.
pub fn parse_date(text: &str) -> Option<i32> {
    let mut parts = text.splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    let days = checked_days(y, m, d)?;
    (date_text(days) == text).then_some(days)
}

/// A TIMESTAMP (µs since the epoch) as RFC 3339 UTC with microseconds,
/// e.g. `2026-11-23T11:52:07.123456Z`.
pub fn timestamp_text(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let us = micros.rem_euclid(1_000_000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{us:06}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known days: the epoch, either side of it, leap days (2000 is a leap year, 1900 is
    /// not), the first and last day a four-digit year writes.
    const KNOWN: [(i64, u32, u32, i64); 10] = [
        (1970, 1, 1, 0),
        (1969, 12, 31, -1),
        (2000, 2, 29, 11_016),
        (2000, 3, 1, 11_017),
        (1900, 3, 1, -25_508),
        (2024, 2, 29, 19_782),
        (2025, 11, 23, 20_415),
        (1, 1, 1, -719_162),
        (0, 2, 29, -719_469),
        (9999, 12, 31, 2_932_896),
    ];

    #[test]
    fn known_days_round_trip() {
        for (y, m, d, days) in KNOWN {
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
            assert_eq!(civil_from_days(days), (y, m, d), "{days}");
            let n = i32::try_from(days).unwrap();
            assert_eq!(checked_days(y, m, d), Some(n));
            assert_eq!(parse_date(&date_text(n)), Some(n), "{}", date_text(n));
        }
        assert_eq!(date_text(-1), "1969-12-31");
        assert_eq!(date_text(2_932_896), "9999-12-31");
    }

    #[test]
    fn days_that_do_not_exist_are_refused() {
        for (y, m, d) in [
            (2023, 2, 29),
            (1900, 2, 29),
            (2025, 4, 31),
            (2025, 13, 1),
            (2025, 0, 1),
            (2025, 1, 0),
        ] {
            assert_eq!(checked_days(y, m, d), None, "{y}-{m}-{d}");
        }
        for bad in [
            "2025-1-05",
            "2025-01-05x",
            "20250105",
            "",
            "2023-02-29",
            "2025-01",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
        assert_eq!(checked_days(6_000_000, 1, 1), None, "beyond an i32 of days");
    }

    #[test]
    fn timestamps_read_as_the_calendar() {
        assert_eq!(timestamp_text(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(timestamp_text(1_500_000), "1970-01-01T00:00:01.500000Z");
        assert_eq!(timestamp_text(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(
            timestamp_text(253_402_300_799_999_999),
            "9999-12-31T23:59:59.999999Z"
        );
    }
}
