//! Decimal text, read one way everywhere: a NUMERIC value, a filter literal, a threshold in
//! a plugin's config. Exact ([`BigDecimal`]), never through a float.

use std::cmp::Ordering;

pub use bigdecimal::BigDecimal;

/// The longest decimal text read (sign, digits and point). Spanner's NUMERIC has 38 digits,
/// PostgreSQL's at most 147 455; this bound keeps one comparison cheap.
pub const MAX_DECIMAL_LEN: usize = 1000;

/// Text that is not a decimal number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a decimal number")]
pub struct NotADecimal {
    /// The text as given.
    pub text: String,
}

/// Reads `[+|-]digits[.digits]` (either side of the point may be empty, not both), around
/// white space. No exponent, no `inf`/`NaN`, no `_`: what a database prints for NUMERIC.
pub fn parse_decimal(text: &str) -> Result<BigDecimal, NotADecimal> {
    let t = text.trim();
    let unsigned = t.strip_prefix(['+', '-']).unwrap_or(t);
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let plain = t.len() <= MAX_DECIMAL_LEN
        && !(int.is_empty() && frac.is_empty())
        && digits(int)
        && digits(frac);
    let not = || NotADecimal {
        text: text.to_string(),
    };
    if !plain {
        return Err(not());
    }
    t.parse().map_err(|_| not())
}

/// The exact value of a finite float (every finite `f64` is a decimal fraction); `None` for
/// NaN and the infinities.
pub fn decimal_of_f64(x: f64) -> Option<BigDecimal> {
    BigDecimal::try_from(x).ok()
}

/// Compares a float with a decimal exactly: the infinities lie beyond every decimal, NaN is
/// incomparable (`None`).
pub fn cmp_f64(x: f64, d: &BigDecimal) -> Option<Ordering> {
    if x.is_nan() {
        None
    } else if x == f64::INFINITY {
        Some(Ordering::Greater)
    } else if x == f64::NEG_INFINITY {
        Some(Ordering::Less)
    } else {
        decimal_of_f64(x).map(|v| v.cmp(d))
    }
}

/// How the integer `v` compares with `d`, exactly. Without allocating when `d`'s coefficient
/// fits an `i128` and its scale is within ±19 (any threshold a config holds): both sides are
/// then exact in `i128` (|v| · 10^19 < 2^127). Else through a [`BigDecimal`] of `v`. This runs
/// for every INT64 value a filter compares, and a `BigDecimal` of it would allocate each time.
pub fn cmp_i64(v: i64, d: &BigDecimal) -> Ordering {
    use bigdecimal::ToPrimitive;
    let (coefficient, scale) = d.as_bigint_and_scale();
    let exact = coefficient.to_i128().and_then(|c| match scale {
        0..=19 => Some((i128::from(v) * 10i128.pow(scale as u32), c)),
        -19..=-1 => c
            .checked_mul(10i128.pow(scale.unsigned_abs() as u32))
            .map(|c| (i128::from(v), c)),
        _ => None,
    });
    match exact {
        Some((a, b)) => a.cmp(&b),
        None => BigDecimal::from(v).cmp(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> BigDecimal {
        parse_decimal(s).unwrap()
    }

    #[test]
    fn decimals_compare_exactly() {
        assert!(dec("1000.000000001") > dec("1000"));
        assert!(dec("999.999999999") < dec("1000"));
        assert_eq!(dec("0100.50"), dec("100.5"));
        assert!(dec("-5") < dec("-4.9"));
        assert_eq!(dec("-0.0"), dec("0"));
        assert!(dec(".5") > dec("0.49"));
        assert_eq!(dec("+1000"), dec("1000"));
        assert_eq!(dec(" 7. "), dec("7"));
        for bad in [
            "", "-", "1e3", "1.2.3", "abc", ".", "inf", "NaN", "1_000", "--1", "+-1",
        ] {
            assert!(parse_decimal(bad).is_err(), "{bad:?} must not parse");
        }
        assert_eq!(
            parse_decimal("a lot").unwrap_err().to_string(),
            "`a lot` is not a decimal number"
        );
        assert!(parse_decimal(&"9".repeat(MAX_DECIMAL_LEN + 1)).is_err());
    }

    #[test]
    fn integers_compare_exactly_on_the_fast_path_and_off_it() {
        let cases = [
            "1000",
            "999.999999999",
            "1000.000000001",
            "-0.5",
            "0",
            "1000000000000000000",
            "9223372036854775807.5",
            "-9223372036854775808",
            "0.0000000000000000001",
            // Scale 20 and a coefficient past i128: the BigDecimal path.
            "0.00000000000000000001",
            "123456789012345678901234567890123456789012",
        ];
        let mut with_exponent = vec![
            "1e25".parse::<BigDecimal>().unwrap(),
            "-3e19".parse().unwrap(),
            "7e40".parse().unwrap(),
        ];
        with_exponent.extend(cases.iter().map(|c| dec(c)));
        for d in &with_exponent {
            for v in [i64::MIN, -1001, -1, 0, 1, 999, 1000, 1001, i64::MAX] {
                assert_eq!(cmp_i64(v, d), BigDecimal::from(v).cmp(d), "{v} vs {d}");
            }
        }
    }

    #[test]
    fn floats_compare_by_their_exact_value() {
        let t = dec("1000");
        assert_eq!(cmp_f64(1000.0, &t), Some(Ordering::Equal));
        assert_eq!(cmp_f64(999.99, &t), Some(Ordering::Less));
        // 0.1 as a float is a little above one tenth.
        assert_eq!(cmp_f64(0.1, &dec("0.1")), Some(Ordering::Greater));
        assert_eq!(cmp_f64(f64::INFINITY, &t), Some(Ordering::Greater));
        assert_eq!(cmp_f64(f64::NEG_INFINITY, &t), Some(Ordering::Less));
        assert_eq!(cmp_f64(f64::NAN, &t), None);
        assert_eq!(
            cmp_f64(1e20, &dec("100000000000000000000")),
            Some(Ordering::Equal)
        );
    }
}
