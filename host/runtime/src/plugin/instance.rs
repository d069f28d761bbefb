//! What a plugin version is instantiated from and what one live instance holds: the
//! pre-instantiated world, its exports, the store, and a clock that stands still.

use std::time::Duration;

use wasmtime::Store;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

use crate::bindings::consumer::{Consumer, ConsumerPre};
use crate::bindings::consumer_v01::{Consumer as ConsumerV01, ConsumerPre as ConsumerV01Pre};
use crate::bindings::http::{HttpTrigger, HttpTriggerPre};
use crate::bindings::scheduled::{Scheduled, ScheduledPre};
use crate::state::StoreData;

/// The pre-instantiated component, by the world it implements.
#[derive(Clone)]
pub(super) enum Pre {
    Consumer(ConsumerPre<StoreData>),
    /// A consumer built against the deprecated `ledgerhost:plugin@0.1.0`.
    ConsumerV01(ConsumerV01Pre<StoreData>),
    Scheduled(ScheduledPre<StoreData>),
    Http(HttpTriggerPre<StoreData>),
}

/// A live instance's exports, by world.
pub(super) enum Exports {
    Consumer(Consumer),
    ConsumerV01(ConsumerV01),
    Scheduled(Scheduled),
    Http(HttpTrigger),
}

/// One live instance: its store (state, limits), exports and captured stderr.
pub(super) struct Live {
    pub(super) store: Store<StoreData>,
    pub(super) exports: Exports,
    pub(super) stderr: MemoryOutputPipe,
}

/// A plugin has no clock: time stands still at the epoch unless the host passes it in.
pub(super) struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}
