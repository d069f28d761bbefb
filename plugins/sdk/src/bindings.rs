//! Generated bindings, one module per world of `ledgerhost:plugin@0.2.0`. The imports are
//! generated once (in `consumer`) and shared by the other worlds through `with`. 0.2 uses
//! 0.1's `types` and capability interfaces unchanged (`ledgerhost::plugin0_1_0`); its own
//! `events` interface is `ledgerhost::plugin0_2_0::events`.

#![allow(missing_docs, clippy::all)]

/// The event-consumer world.
pub mod consumer {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "ledgerhost:plugin/consumer@0.2.0",
        pub_export_macro: true,
        export_macro_name: "export_consumer_raw",
        default_bindings_module: "ledgerhost_sdk::bindings::consumer",
        // Lets plugin tests compare dispositions and values with `assert_eq!`.
        additional_derives: [PartialEq],
        generate_all,
    });
}

/// The scheduled world.
pub mod scheduled {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "ledgerhost:plugin/scheduled@0.2.0",
        pub_export_macro: true,
        export_macro_name: "export_scheduled",
        default_bindings_module: "ledgerhost_sdk::bindings::scheduled",
        type_section_suffix: "scheduled",
        with: {
            "ledgerhost:plugin/types@0.1.0": crate::bindings::consumer::ledgerhost::plugin0_1_0::types,
            "ledgerhost:plugin/blobstore@0.1.0": crate::bindings::consumer::ledgerhost::plugin0_1_0::blobstore,
            "ledgerhost:plugin/keyvalue@0.1.0": crate::bindings::consumer::ledgerhost::plugin0_1_0::keyvalue,
            "ledgerhost:plugin/warehouse@0.1.0": crate::bindings::consumer::ledgerhost::plugin0_1_0::warehouse,
            "ledgerhost:plugin/ledger@0.1.0": crate::bindings::consumer::ledgerhost::plugin0_1_0::ledger,
            "wasi:logging/logging": crate::bindings::consumer::wasi::logging::logging,
            "wasi:config/store@0.2.0-rc.1": crate::bindings::consumer::wasi::config::store,
        },
    });
}

/// The HTTP-trigger world.
pub mod http {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "ledgerhost:plugin/http-trigger@0.2.0",
        pub_export_macro: true,
        export_macro_name: "export_http",
        default_bindings_module: "ledgerhost_sdk::bindings::http",
        type_section_suffix: "http",
        with: {
            "ledgerhost:plugin/types@0.1.0": crate::bindings::consumer::ledgerhost::plugin0_1_0::types,
            "ledgerhost:plugin/blobstore@0.1.0": crate::bindings::consumer::ledgerhost::plugin0_1_0::blobstore,
            "ledgerhost:plugin/keyvalue@0.1.0": crate::bindings::consumer::ledgerhost::plugin0_1_0::keyvalue,
            "ledgerhost:plugin/warehouse@0.1.0": crate::bindings::consumer::ledgerhost::plugin0_1_0::warehouse,
            "ledgerhost:plugin/ledger@0.1.0": crate::bindings::consumer::ledgerhost::plugin0_1_0::ledger,
            "wasi:logging/logging": crate::bindings::consumer::wasi::logging::logging,
            "wasi:config/store@0.2.0-rc.1": crate::bindings::consumer::wasi::config::store,
        },
    });
}
