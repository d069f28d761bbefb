//! The capability set: every capability the host offers plugins, in one place, with their
//! per-plugin and per-instance states as typed fields (no lookup by type or position).
//! Adding a capability is one line in the `capability_set!` call below. What a capability
//! implements to be listed is in [`crate::capability`] and [`crate::setup`].

use std::collections::BTreeMap;

use wasmtime::component::{Linker, ResourceTable};

use crate::blobstore::BlobstoreCapability;
use crate::capability::{Capability, Offer, PluginInfo, StateOf};
use crate::config::ConfigCapability;
use crate::http::HttpCapability;
use crate::keyvalue::KeyValueCapability;
use crate::ledger::LedgerCapability;
use crate::logging::LoggingCapability;
use crate::probe::Probe;
use crate::setup::{HostContext, Ports, Setup};
use crate::warehouse::WarehouseCapability;

/// The store data of a plugin instance, as the capabilities see it.
pub trait CapabilityHost: Send + 'static {
    /// Every capability's per-instance state, and the store's one resource table (shared
    /// with WASI: resources, streams and pollables of every interface live there).
    fn capability_parts(&mut self) -> (&mut InstanceCapabilities, &mut ResourceTable);
}

/// Generates the set from `field: Type` pairs, in linking order: the built capabilities
/// ([`CapabilitySet`]), their per-plugin-version states ([`PluginCapabilities`]), their
/// per-instance states ([`InstanceCapabilities`]), and each capability's [`StateOf`] view of
/// any [`CapabilityHost`].
macro_rules! capability_set {
    ($($field:ident: $ty:ty),* $(,)?) => {
        /// Every capability the host offers plugins, built from the host's ports and config.
        #[derive(Clone)]
        pub struct CapabilitySet {
            $(#[doc = concat!("`", stringify!($field), "`.")] pub $field: $ty,)*
        }

        /// What each capability keeps for one plugin version ([`Capability::configure`]).
        pub struct PluginCapabilities {
            $($field: <$ty as Capability>::Configured,)*
        }

        /// One instance's state of each capability ([`Capability::prepare`]).
        pub struct InstanceCapabilities {
            $($field: <$ty as Capability>::Instance,)*
        }

        $(
            impl<T: CapabilityHost> StateOf<$ty> for T {
                fn state_and_table(
                    &mut self,
                ) -> (&mut <$ty as Capability>::Instance, &mut ResourceTable) {
                    let (states, table) = self.capability_parts();
                    (&mut states.$field, table)
                }
            }
        )*

        impl CapabilitySet {
            /// What each capability offers, in linking order.
            pub const OFFERS: &'static [Offer] = &[$(Offer::of::<$ty>(),)*];

            /// Builds every capability from its `[capabilities.<name>]` section and the
            /// host's ports.
            pub fn build(host: &HostContext<'_>) -> anyhow::Result<CapabilitySet> {
                Ok(CapabilitySet { $($field: build::<$ty>(host)?,)* })
            }

            /// Checks each capability's config section; `Err((key, problem))` relative to
            /// its section.
            fn check_each(
                sections: &BTreeMap<String, toml::Value>,
            ) -> Result<(), (&'static str, (String, String))> {
                $(check::<$ty>(sections.get(<$ty>::NAME))
                    .map_err(|e| (<$ty>::NAME, e))?;)*
                Ok(())
            }

            /// Adds every capability's host functions to the runtime's linker.
            pub fn add_to_linker<T: CapabilityHost>(
                &self,
                linker: &mut Linker<T>,
            ) -> Result<(), (&'static str, wasmtime::Error)> {
                $(self.$field
                    .add_to_linker(linker)
                    .map_err(|e| (<$ty>::NAME, e))?;)*
                Ok(())
            }

            /// Checks a plugin's grants with every capability, at load. The error names what
            /// to fix in the manifest.
            pub fn configure(&self, plugin: &PluginInfo<'_>) -> Result<PluginCapabilities, String> {
                Ok(PluginCapabilities { $($field: self.$field.configure(plugin)?,)* })
            }

            /// The states one new instance of a plugin version gets.
            pub fn prepare(&self, plugin: &PluginCapabilities) -> InstanceCapabilities {
                InstanceCapabilities { $($field: self.$field.prepare(&plugin.$field),)* }
            }

            /// The reachability checks of the capabilities' remote backends.
            pub fn probes(&self) -> Vec<Probe> {
                [$(self.$field.probe(),)*].into_iter().flatten().collect()
            }
        }
    };
}

capability_set! {
    logging: LoggingCapability,
    config: ConfigCapability,
    blobstore: BlobstoreCapability,
    keyvalue: KeyValueCapability,
    warehouse: WarehouseCapability,
    ledger: LedgerCapability,
    http: HttpCapability,
}

fn parse<C: Setup>(section: Option<&toml::Value>) -> Result<C::Config, (String, String)> {
    match section {
        None => Ok(C::Config::default()),
        Some(v) => v
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| (String::new(), e.to_string().trim_end().to_string())),
    }
}

fn check<C: Setup>(section: Option<&toml::Value>) -> Result<(), (String, String)> {
    C::validate(&parse::<C>(section)?)
}

fn build<C: Setup>(host: &HostContext<'_>) -> anyhow::Result<C> {
    let config = parse::<C>(host.sections.get(C::NAME))
        .map_err(|(k, p)| anyhow::anyhow!("capabilities.{}{k}: {p}", C::NAME))?;
    C::build(config, host)
}

impl CapabilitySet {
    /// Every capability over `ports`, with default settings and no probes (tests, tools).
    pub fn over(ports: &Ports) -> CapabilitySet {
        CapabilitySet::build(&HostContext {
            ports,
            probes: &BTreeMap::new(),
            sections: &BTreeMap::new(),
        })
        .expect("the built-in capabilities build from default settings")
    }

    /// Checks the config's `[capabilities.<name>]` sections: each names a capability of the
    /// set and parses as its settings. `Err((key, problem))`, the key from `capabilities`.
    pub fn check_sections(
        sections: &BTreeMap<String, toml::Value>,
    ) -> Result<(), (String, String)> {
        let names = || CapabilitySet::OFFERS.iter().map(|o| o.name);
        if let Some(name) = sections.keys().find(|n| !names().any(|c| c == n.as_str())) {
            let known: Vec<&str> = names().collect();
            return Err((
                format!("capabilities.{name}"),
                format!(
                    "is not a capability of this host (it has {})",
                    known.join(", ")
                ),
            ));
        }
        CapabilitySet::check_each(sections).map_err(|(name, (k, p))| {
            let key = if k.is_empty() {
                format!("capabilities.{name}")
            } else {
                format!("capabilities.{name}.{k}")
            };
            (key, p)
        })
    }
}

impl From<Ports> for CapabilitySet {
    fn from(ports: Ports) -> Self {
        CapabilitySet::over(&ports)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_name_a_capability_of_the_set_and_parse_as_its_settings() {
        let mut sections: BTreeMap<String, toml::Value> = BTreeMap::new();
        assert!(CapabilitySet::check_sections(&sections).is_ok());
        sections.insert("logging".into(), toml::Value::Table(Default::default()));
        assert!(CapabilitySet::check_sections(&sections).is_ok());
        sections.insert("nope".into(), toml::Value::Table(Default::default()));
        let (key, problem) = CapabilitySet::check_sections(&sections).unwrap_err();
        assert_eq!(key, "capabilities.nope");
        assert!(problem.contains("blobstore"), "{problem}");
        sections.remove("nope");
        let mut bad = toml::Table::new();
        bad.insert("level".into(), toml::Value::Integer(1));
        sections.insert("logging".into(), toml::Value::Table(bad));
        let (key, problem) = CapabilitySet::check_sections(&sections).unwrap_err();
        assert_eq!(key, "capabilities.logging");
        assert!(problem.contains("level"), "{problem}");
    }

    #[test]
    fn offers_name_every_capability_once_in_linking_order() {
        let names: Vec<&str> = CapabilitySet::OFFERS.iter().map(|o| o.name).collect();
        assert_eq!(
            names,
            [
                "logging",
                "config",
                "blobstore",
                "keyvalue",
                "warehouse",
                "ledger",
                "http"
            ]
        );
        let config = &CapabilitySet::OFFERS[1];
        assert!(!config.import_needs_grant);
        assert_eq!(config.grant.map(|g| g.key), Some("config"));
    }
}
