//! The running read of a table's change stream, kept by its poller across ticks: the
//! source's port, the stream's name, the reader while it runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ledgerhost_core::change::{ChangeCapture, ChangeReader};

/// How often a quiet table's progress is stored (its watermark moves with the stream's
/// heartbeats; storing it keeps a restart's re-read short and within retention).
pub(super) const QUIET_PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// A poller's change stream: the port, the stream's name and the running read.
pub(super) struct StreamCapture {
    pub(super) port: Arc<dyn ChangeCapture>,
    pub(super) stream: String,
    pub(super) reader: Option<Box<dyn ChangeReader>>,
    /// When the progress was last stored.
    pub(super) stored_at: Option<Instant>,
    /// The partitions are queried by the replicas holding their leases and handed over
    /// ([`ChangeCapture::read_stream_shared`]).
    pub(super) shared: bool,
}

impl StreamCapture {
    /// The capture of `stream` through `port`, not reading yet.
    pub(super) fn new(port: Arc<dyn ChangeCapture>, stream: String) -> StreamCapture {
        StreamCapture {
            port,
            stream,
            reader: None,
            stored_at: None,
            shared: false,
        }
    }

    /// Stops the read (its partition queries).
    pub(super) fn stop(&mut self) {
        self.reader = None;
    }
}
