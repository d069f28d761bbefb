//! Retention: messages older than the retention are deleted, acked or not (as Pub/Sub
//! does); the newest message of each topic is always kept so `last_message` keeps working.

use std::time::{Duration, Instant};

use super::state::Inner;
use ledgerhost_core::clock::now_micros;

impl Inner {
    /// Deletes messages past retention, keeping each topic's newest.
    pub(super) fn cleanup(&mut self) {
        if self.last_cleanup.elapsed() < Duration::from_secs(60) {
            return;
        }
        self.last_cleanup = Instant::now();
        let cutoff = now_micros() - self.retention.as_micros() as i64;
        let result = self.conn.execute(
            "DELETE FROM messages WHERE published_at < ?1
             AND id NOT IN (SELECT MAX(id) FROM messages GROUP BY topic)",
            [cutoff],
        );
        match result {
            Ok(n) if n > 0 => tracing::info!(deleted = n, "embedded ledger retention"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "embedded ledger retention failed"),
        }
    }
}
