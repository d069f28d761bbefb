//! Generated bindings of the three worlds, for their exports (`ConsumerPre` etc.). The
//! linker is filled by the capabilities (`ledgerhost-capabilities`), not by these worlds;
//! the shared `types` come from there, the other imports are generated once (with the
//! consumer world) and shared by the other two.

#![allow(missing_docs)]

pub mod consumer {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "ledgerhost:plugin/consumer",
        imports: { default: async },
        exports: { default: async },
        with: { "ledgerhost:plugin/types": ledgerhost_capabilities::wit::types },
    });
}

pub mod scheduled {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "ledgerhost:plugin/scheduled",
        imports: { default: async },
        exports: { default: async },
        with: {
            "ledgerhost:plugin": super::consumer::ledgerhost::plugin,
            "wasi:logging": super::consumer::wasi::logging,
            "wasi:config": super::consumer::wasi::config,
        },
    });
}

pub mod http {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "ledgerhost:plugin/http-trigger",
        imports: { default: async },
        exports: { default: async },
        with: {
            "ledgerhost:plugin": super::consumer::ledgerhost::plugin,
            "wasi:logging": super::consumer::wasi::logging,
            "wasi:config": super::consumer::wasi::config,
        },
    });
}

pub use ledgerhost_capabilities::wit::types as wit;
