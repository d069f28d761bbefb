//! Calendar text of DATE and TIMESTAMP values, as the host writes them (proleptic Gregorian,
//! UTC), so every plugin renders a date the same way.

/// `(year, month, day)` of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// A DATE (days since 1970-01-01) as `YYYY-MM-DD`.
pub fn date_text(days: i32) -> String {
    let (y, m, d) = civil_from_days(i64::from(days));
    format!("{y:04}-{m:02}-{d:02}")
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

    #[test]
    fn dates_and_timestamps_read_as_the_calendar() {
        assert_eq!(date_text(0), "1970-01-01");
        assert_eq!(date_text(-1), "1969-12-31");
        assert_eq!(date_text(20_415), "2025-11-23");
        assert_eq!(date_text(11_016), "2000-02-29");
        assert_eq!(timestamp_text(1_500_000), "1970-01-01T00:00:01.500000Z");
        assert_eq!(timestamp_text(-1), "1969-12-31T23:59:59.999999Z");
    }
}
