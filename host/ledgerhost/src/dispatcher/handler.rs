//! What the dispatcher calls: a loaded plugin version, or a native closure in benchmarks and
//! tests.

use std::sync::Arc;

use async_trait::async_trait;
use ledgerhost_core::{Disposition, Event};

/// Why a whole batch failed (no dispositions): the dispatcher retries its events one by one.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The plugin call failed: trap, deadline, memory cap, wrong answer.
    #[error(transparent)]
    Plugin(#[from] ledgerhost_runtime::CallError),
    /// A native handler (benchmarks, tests) failed.
    #[error(transparent)]
    Native(Box<dyn std::error::Error + Send + Sync>),
}

/// Something that handles a batch of events: a loaded plugin version, or a native closure in
/// benchmarks and tests.
#[async_trait]
pub trait BatchHandler: Send + Sync {
    /// Handles a batch; `Ok` holds exactly one disposition per event, in order.
    async fn handle(&self, events: Vec<Event>) -> Result<Vec<Disposition>, HandlerError>;
    /// The version serving (for logs).
    fn version(&self) -> String;
    /// How many instances serve this version; a batch is split among them by ordering key
    /// and the parts run concurrently. One unless overridden.
    fn instances(&self) -> usize {
        1
    }
    /// Handles a batch on instance `instance` (below [`BatchHandler::instances`]); the one
    /// instance of [`BatchHandler::handle`] unless overridden.
    async fn handle_on(
        &self,
        instance: usize,
        events: Vec<Event>,
    ) -> Result<Vec<Disposition>, HandlerError> {
        let _ = instance;
        self.handle(events).await
    }
}

/// Gives the handler to use for the next batch; `None` once the plugin was removed.
pub type CurrentHandler = Arc<dyn Fn() -> Option<Arc<dyn BatchHandler>> + Send + Sync>;
