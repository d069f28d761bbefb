//! Retention: messages older than the retention are deleted, acked or not (as Pub/Sub
//! does), a page at a time (its messages share their publish time); the newest page of each
//! topic is always kept so `last_message` keeps working and ids are never reused.

use std::time::{Duration, Instant};

use super::state::Writer;
use ledgerhost_core::clock::now_micros;

impl Writer {
    /// Deletes messages past retention, keeping each topic's newest.
    pub(super) fn cleanup(&mut self) {
        if self.last_cleanup.elapsed() < Duration::from_secs(60) {
            return;
        }
        self.last_cleanup = Instant::now();
        let cutoff = now_micros() - self.retention.as_micros() as i64;
        let result = self.conn.execute(
            "DELETE FROM pages WHERE published_at < ?1
             AND id NOT IN (SELECT MAX(id) FROM pages GROUP BY topic)",
            [cutoff],
        );
        match result {
            Ok(n) if n > 0 => tracing::info!(pages = n, "embedded ledger retention"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "embedded ledger retention failed"),
        }
    }
}
