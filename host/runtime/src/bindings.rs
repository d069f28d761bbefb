//! Generated bindings of the three worlds. The imports are generated once (with the
//! consumer world) and shared by the other two, so one linker serves every plugin.

#![allow(missing_docs)]

pub mod consumer {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "ledgerhost:plugin/consumer",
        imports: { default: async },
        exports: { default: async },
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

pub use consumer::ledgerhost::plugin::types as wit;
