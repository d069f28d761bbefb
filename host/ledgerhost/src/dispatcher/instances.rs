//! K instances per plugin: which instance gets an event, and the loaded plugin version (with
//! its [`Instances`]) as the dispatcher's [`BatchHandler`].

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ledgerhost_core::ledger::ordering::shard_of;
use ledgerhost_core::{Disposition, Event};
use ledgerhost_runtime::Instances;
use ledgerhost_runtime::registry::PluginSlot;

use super::handler::{BatchHandler, CurrentHandler, HandlerError};

/// The instance (0..k) that handles an event with `ordering_key`, at `position` in its batch.
/// A key always maps to the same instance (the stable FNV hash the ordering shards use), so a
/// key's events stay in commit order within one instance, across batches and retries. An
/// event without an ordering key (`ordering = "none"`) has no order to keep: those are
/// spread by position.
pub fn instance_of(ordering_key: &str, position: usize, k: usize) -> usize {
    if k <= 1 {
        return 0;
    }
    if ordering_key.is_empty() {
        return position % k;
    }
    shard_of(ordering_key, k as u32) as usize
}

/// A loaded plugin version and its instances, as a dispatcher handler.
pub struct PluginInstances(Instances);

impl PluginInstances {
    /// The instances the version's manifest asks for.
    pub fn new(version: Arc<ledgerhost_runtime::Plugin>) -> Self {
        PluginInstances(Instances::of(version))
    }
}

#[async_trait]
impl BatchHandler for PluginInstances {
    async fn handle(&self, events: Vec<Event>) -> Result<Vec<Disposition>, HandlerError> {
        self.handle_on(0, events).await
    }

    fn version(&self) -> String {
        self.0.version().version().to_string()
    }

    fn instances(&self) -> usize {
        self.0.len()
    }

    async fn handle_on(
        &self,
        instance: usize,
        events: Vec<Event>,
    ) -> Result<Vec<Disposition>, HandlerError> {
        Ok(self.0.get(instance).handle(events).await?)
    }
}

/// The serving version of the plugin in `slot`, with its instances. The instances of a
/// version are made once, when the dispatcher first asks for it, and kept until the slot
/// serves another version: a hot swap replaces all K between two batches.
pub fn serving(slot: Arc<PluginSlot>) -> CurrentHandler {
    let cache: Mutex<Option<Arc<PluginInstances>>> = Mutex::new(None);
    Arc::new(move || {
        let version = slot.current()?;
        let mut cached = cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(current) = cached.as_ref()
            && current.0.runs(&version)
        {
            return Some(current.clone() as Arc<dyn BatchHandler>);
        }
        let fresh = Arc::new(PluginInstances::new(version));
        tracing::info!(
            plugin = fresh.0.version().manifest().name,
            version = fresh.version(),
            instances = fresh.instances(),
            "serving"
        );
        *cached = Some(fresh.clone());
        Some(fresh as Arc<dyn BatchHandler>)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerhost_core::ledger::ordering::shard_key;

    #[test]
    fn a_key_always_maps_to_the_same_instance_in_range() {
        for k in 1..=16 {
            for shard in 0..64 {
                let key = shard_key(shard);
                let i = instance_of(&key, 0, k);
                assert!(i < k);
                for position in 1..10 {
                    assert_eq!(instance_of(&key, position, k), i, "{key} k={k}");
                }
            }
        }
    }

    #[test]
    fn the_default_shards_spread_over_every_instance() {
        // The default ordering (16 shards per table) must use every instance, or K > 1 would
        // leave cores idle.
        for k in 2..=4 {
            let mut load = vec![0; k];
            for shard in 0..ledgerhost_core::ledger::ordering::DEFAULT_SHARDS {
                load[instance_of(&shard_key(shard), 0, k)] += 1;
            }
            assert!(load.iter().all(|n| *n > 0), "k={k}: {load:?}");
        }
        let mut two = [0; 2];
        for shard in 0..16 {
            two[instance_of(&shard_key(shard), 0, 2)] += 1;
        }
        assert_eq!(two, [8, 8]);
    }

    #[test]
    fn events_without_a_key_are_spread_by_position() {
        let got: Vec<usize> = (0..6).map(|p| instance_of("", p, 3)).collect();
        assert_eq!(got, vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(instance_of("", 5, 1), 0);
    }
}
