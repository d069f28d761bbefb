//! Named fault-injection points: a test (or an operator rehearsing a crash) sets
//! `LEDGERHOST_FAULT=<point>` or `<point>@<n>` and the process aborts
//! (`std::process::abort`, no unwinding, no drain: a crash) at the n-th time (default the
//! first) it reaches that point. Off by default: unset, a point is one load of a
//! once-initialised value and a branch.
//!
//! The points (see ARCHITECTURE.md, "Fault points"):
//! - `poll.before-publish`: a page is read and encoded, not yet handed to the ledger;
//! - `poll.after-publish`: the ledger confirmed the page, the poller has not persisted its
//!   progress yet (on the embedded ledger the progress went in the page's transaction);
//! - `poll.after-watermark`: the poll's watermark is durable.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable naming the armed point.
pub const ENV: &str = "LEDGERHOST_FAULT";

/// Before a page is published.
pub const POLL_BEFORE_PUBLISH: &str = "poll.before-publish";
/// After a page's publish is confirmed, before the poller persists its progress.
pub const POLL_AFTER_PUBLISH: &str = "poll.after-publish";
/// After a poll's watermark is durable.
pub const POLL_AFTER_WATERMARK: &str = "poll.after-watermark";

/// Every point, for the check of the variable's value.
pub const POINTS: [&str; 3] = [
    POLL_BEFORE_PUBLISH,
    POLL_AFTER_PUBLISH,
    POLL_AFTER_WATERMARK,
];

struct Armed {
    point: String,
    at: u64,
    hits: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let value = std::env::var(ENV).ok()?;
            let (point, at) = match value.split_once('@') {
                Some((p, n)) => (p.to_string(), n.parse().unwrap_or(1)),
                None => (value.clone(), 1),
            };
            if !POINTS.contains(&point.as_str()) {
                tracing::warn!(value, known = ?POINTS, "{ENV} names no fault point; ignored");
                return None;
            }
            tracing::warn!(
                point,
                at,
                "fault injection armed: the process will abort there"
            );
            Some(Armed {
                point,
                at: at.max(1),
                hits: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Aborts the process here when `point` is the armed one and this is its n-th hit.
pub fn point(point: &'static str) {
    let Some(armed) = armed() else { return };
    if armed.point == point && armed.hits.fetch_add(1, Ordering::Relaxed) + 1 == armed.at {
        eprintln!("fault injection: aborting at {point}");
        std::process::abort();
    }
}
