//! Prometheus text exposition (format 0.0.4): one writer for a metric family — its `HELP`
//! and `TYPE` lines, then its samples with escaped label values — so every family on
//! `/metrics` has the same shape, whoever writes it.

use std::fmt::{Display, Write as _};

/// What a family measures, as Prometheus names it in the `TYPE` line.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Only goes up (reset by a restart).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Cumulative buckets, `_sum` and `_count`.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A family being written into `out`: the header is written by [`Family::new`], samples
/// follow.
pub struct Family<'a> {
    out: &'a mut String,
    name: &'a str,
}

impl<'a> Family<'a> {
    /// Writes the family's `HELP` and `TYPE` lines.
    pub fn new(out: &'a mut String, name: &'a str, kind: Kind, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {}", kind.as_str());
        Family { out, name }
    }

    /// One sample of the family itself.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl Display) {
        self.sample_of("", labels, value);
    }

    /// One sample of a series the family owns, named family name + `suffix` (a histogram's
    /// `_bucket`, `_sum`, `_count`).
    pub fn sample_of(&mut self, suffix: &str, labels: &[(&str, &str)], value: impl Display) {
        let _ = write!(self.out, "{}{suffix}", self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"");
                escape_label_value(self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// The text format's escapes for a label value: backslash, double quote and line feed.
fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Seconds from `then` to `now` (both µs since the epoch); 0 when `then` was never set.
pub fn age_seconds(now: i64, then: i64) -> f64 {
    if then > 0 {
        (now - then).max(0) as f64 / 1e6
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_writes_its_header_then_escaped_samples() {
        let mut out = String::new();
        let mut f = Family::new(&mut out, "x_total", Kind::Counter, "Things.");
        f.sample(&[("plugin", "a\"b\\c\nd"), ("table", "t")], 3);
        f.sample(&[], 4);
        f.sample_of("_sum", &[("le", "+Inf")], 0.5);
        assert_eq!(
            out,
            "# HELP x_total Things.\n# TYPE x_total counter\n\
             x_total{plugin=\"a\\\"b\\\\c\\nd\",table=\"t\"} 3\nx_total 4\n\
             x_total_sum{le=\"+Inf\"} 0.5\n"
        );
    }

    #[test]
    fn an_unset_time_has_age_zero() {
        assert_eq!(age_seconds(5_000_000, 0), 0.0);
        assert_eq!(age_seconds(5_000_000, 3_000_000), 2.0);
        assert_eq!(age_seconds(1, 3), 0.0);
    }
}
