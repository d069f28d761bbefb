//! The progress bar of the long-running commands (`replay`, `backfill`, `restore`).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// A progress bar on stderr: redrawn in place on a terminal, a line per second otherwise.
/// Shows the count done and its rate per second (`restore` shares it).
pub(crate) struct ProgressBar {
    label: String,
    unit: &'static str,
    tty: bool,
    started: Instant,
    last: Instant,
}

impl ProgressBar {
    /// A bar counting messages.
    pub(crate) fn new(label: &str) -> Self {
        ProgressBar::counting(label, "messages")
    }

    /// A bar counting `unit`s (e.g. "rows").
    pub(crate) fn counting(label: &str, unit: &'static str) -> Self {
        ProgressBar {
            label: label.into(),
            unit,
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last: Instant::now() - Duration::from_secs(10),
        }
    }

    /// Redraws with `fraction` of the work and `done` units done (at most every 100 ms on a
    /// terminal, every second otherwise, always when `finished`).
    pub(crate) fn update(&mut self, fraction: f64, done: u64, finished: bool) {
        let every = if self.tty {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(1)
        };
        if !finished && self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        let f = fraction.clamp(0.0, 1.0);
        let width = 30;
        let filled = (f * width as f64).round() as usize;
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        let line = format!(
            "{} [{}{}] {:>3.0}% {done} {}, {rate:.0}/s",
            self.label,
            "#".repeat(filled),
            ".".repeat(width - filled),
            f * 100.0,
            self.unit
        );
        let mut err = std::io::stderr();
        if self.tty {
            let _ = write!(err, "\r{line}");
            if finished {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "{line}");
        }
    }
}
