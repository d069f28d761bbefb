//! Generated bindings of the worlds of both contract versions, for their exports
//! (`ConsumerPre` etc.). The linker is filled by the capabilities
//! (`ledgerhost-capabilities`), not by these worlds: 0.2 imports the very capability
//! interfaces of 0.1 (`@0.1.0`), so one implementation of each serves both. The shared
//! `types` come from the capabilities crate; the other imports are generated once (with the
//! 0.2 consumer world) and shared by the other worlds.

#![allow(missing_docs)]

/// `ledgerhost:plugin/consumer@0.2.0`: a batch with its schema once, values by position.
pub mod consumer {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "ledgerhost:plugin/consumer@0.2.0",
        imports: { default: async },
        exports: { default: async },
        with: { "ledgerhost:plugin/types@0.1.0": ledgerhost_capabilities::wit::types },
    });
}

/// `ledgerhost:plugin/consumer@0.1.0`: every event with its field names (deprecated).
pub mod consumer_v01 {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "ledgerhost:plugin/consumer@0.1.0",
        imports: { default: async },
        exports: { default: async },
        with: {
            "ledgerhost:plugin/types@0.1.0": ledgerhost_capabilities::wit::types,
            "ledgerhost:plugin/blobstore@0.1.0": crate::bindings::consumer::ledgerhost::plugin0_1_0::blobstore,
            "ledgerhost:plugin/keyvalue@0.1.0": crate::bindings::consumer::ledgerhost::plugin0_1_0::keyvalue,
            "ledgerhost:plugin/warehouse@0.1.0": crate::bindings::consumer::ledgerhost::plugin0_1_0::warehouse,
            "ledgerhost:plugin/ledger@0.1.0": crate::bindings::consumer::ledgerhost::plugin0_1_0::ledger,
            "wasi:logging": crate::bindings::consumer::wasi::logging,
            "wasi:config": crate::bindings::consumer::wasi::config,
        },
    });
}

/// The scheduled world (the same shape in 0.1 and 0.2).
pub mod scheduled {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "ledgerhost:plugin/scheduled@0.2.0",
        imports: { default: async },
        exports: { default: async },
        with: {
            "ledgerhost:plugin/types@0.1.0": ledgerhost_capabilities::wit::types,
            "ledgerhost:plugin/blobstore@0.1.0": crate::bindings::consumer::ledgerhost::plugin0_1_0::blobstore,
            "ledgerhost:plugin/keyvalue@0.1.0": crate::bindings::consumer::ledgerhost::plugin0_1_0::keyvalue,
            "ledgerhost:plugin/warehouse@0.1.0": crate::bindings::consumer::ledgerhost::plugin0_1_0::warehouse,
            "ledgerhost:plugin/ledger@0.1.0": crate::bindings::consumer::ledgerhost::plugin0_1_0::ledger,
            "wasi:logging": crate::bindings::consumer::wasi::logging,
            "wasi:config": crate::bindings::consumer::wasi::config,
        },
    });
}

/// The HTTP-trigger world (the same shape in 0.1 and 0.2).
pub mod http {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "ledgerhost:plugin/http-trigger@0.2.0",
        imports: { default: async },
        exports: { default: async },
        with: {
            "ledgerhost:plugin/types@0.1.0": ledgerhost_capabilities::wit::types,
            "ledgerhost:plugin/blobstore@0.1.0": crate::bindings::consumer::ledgerhost::plugin0_1_0::blobstore,
            "ledgerhost:plugin/keyvalue@0.1.0": crate::bindings::consumer::ledgerhost::plugin0_1_0::keyvalue,
            "ledgerhost:plugin/warehouse@0.1.0": crate::bindings::consumer::ledgerhost::plugin0_1_0::warehouse,
            "ledgerhost:plugin/ledger@0.1.0": crate::bindings::consumer::ledgerhost::plugin0_1_0::ledger,
            "wasi:logging": crate::bindings::consumer::wasi::logging,
            "wasi:config": crate::bindings::consumer::wasi::config,
        },
    });
}

pub use consumer::ledgerhost::plugin0_2_0::events as wit02;
pub use ledgerhost_capabilities::wit::types as wit;
