//! The registration list: every capability the host offers plugins, in one place. Adding a
//! capability is one line in [`entries`]. What a capability implements to be listed is in
//! [`crate::setup`].

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::capability::{Capability, CapabilityHost};
use crate::setup::{HostContext, Ports, Setup};
use crate::{blobstore, config, keyvalue, ledger, logging, warehouse};

/// Every capability, in linking order. The one list to extend: `Entry::of::<YourCapability>()`.
pub fn entries<T: CapabilityHost>() -> Vec<Entry<T>> {
    vec![
        Entry::of::<logging::LoggingCapability>(),
        Entry::of::<config::ConfigCapability>(),
        Entry::of::<blobstore::BlobstoreCapability>(),
        Entry::of::<keyvalue::KeyValueCapability>(),
        Entry::of::<warehouse::WarehouseCapability>(),
        Entry::of::<ledger::LedgerCapability>(),
        Entry::of::<crate::http::HttpCapability>(),
    ]
}

type CheckFn = fn(Option<&toml::Value>) -> Result<(), (String, String)>;
type BuildFn<T> = fn(&HostContext<'_>) -> anyhow::Result<Arc<dyn Capability<T>>>;

/// One line of the registration list.
pub struct Entry<T> {
    /// The capability's name and config section.
    pub name: &'static str,
    check: CheckFn,
    build: BuildFn<T>,
}

fn parse<T, C: Setup<T>>(section: Option<&toml::Value>) -> Result<C::Config, (String, String)> {
    match section {
        None => Ok(C::Config::default()),
        Some(v) => v
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| (String::new(), e.to_string().trim_end().to_string())),
    }
}

impl<T: CapabilityHost> Entry<T> {
    /// The entry of capability `C`.
    pub fn of<C: Setup<T>>() -> Entry<T> {
        Entry {
            name: C::NAME,
            check: |section| C::validate(&parse::<T, C>(section)?),
            build: |host| {
                let config = parse::<T, C>(host.sections.get(C::NAME))
                    .map_err(|(k, p)| anyhow::anyhow!("capabilities.{}{k}: {p}", C::NAME))?;
                Ok(Arc::new(C::build(config, host)?))
            },
        }
    }
}

/// Checks the config's `[capabilities.<name>]` sections: each names a registered
/// capability and parses as its settings. `Err((key, problem))`, the key from `capabilities`.
pub fn check_sections<T: CapabilityHost>(
    sections: &BTreeMap<String, toml::Value>,
) -> Result<(), (String, String)> {
    let entries = entries::<T>();
    for name in sections.keys() {
        if !entries.iter().any(|e| e.name == name) {
            let known: Vec<&str> = entries.iter().map(|e| e.name).collect();
            return Err((
                format!("capabilities.{name}"),
                format!(
                    "is not a capability of this host (it has {})",
                    known.join(", ")
                ),
            ));
        }
    }
    for e in &entries {
        (e.check)(sections.get(e.name)).map_err(|(k, p)| {
            let key = if k.is_empty() {
                format!("capabilities.{}", e.name)
            } else {
                format!("capabilities.{}.{k}", e.name)
            };
            (key, p)
        })?;
    }
    Ok(())
}

/// Builds every registered capability.
pub fn build<T: CapabilityHost>(
    host: &HostContext<'_>,
) -> anyhow::Result<Vec<Arc<dyn Capability<T>>>> {
    entries::<T>().iter().map(|e| (e.build)(host)).collect()
}

/// Every capability over `ports`, with default settings and no probes (tests, tools).
pub fn registry<T: CapabilityHost>(ports: &Ports) -> Vec<Arc<dyn Capability<T>>> {
    build(&HostContext {
        ports,
        probes: &BTreeMap::new(),
        sections: &BTreeMap::new(),
    })
    .expect("the built-in capabilities build from default settings")
}

impl<T: CapabilityHost> From<Ports> for Vec<Arc<dyn Capability<T>>> {
    fn from(ports: Ports) -> Self {
        registry(&ports)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capability::InstanceStates;
    use wasmtime::component::ResourceTable;

    struct Host(InstanceStates, ResourceTable);

    impl CapabilityHost for Host {
        fn capability_parts(&mut self) -> (&mut InstanceStates, &mut ResourceTable) {
            (&mut self.0, &mut self.1)
        }
    }

    #[test]
    fn sections_name_a_registered_capability_and_parse_as_its_settings() {
        let mut sections: BTreeMap<String, toml::Value> = BTreeMap::new();
        assert!(check_sections::<Host>(&sections).is_ok());
        sections.insert("logging".into(), toml::Value::Table(Default::default()));
        assert!(check_sections::<Host>(&sections).is_ok());
        sections.insert("nope".into(), toml::Value::Table(Default::default()));
        let (key, problem) = check_sections::<Host>(&sections).unwrap_err();
        assert_eq!(key, "capabilities.nope");
        assert!(problem.contains("blobstore"), "{problem}");
        sections.remove("nope");
        let mut bad = toml::Table::new();
        bad.insert("level".into(), toml::Value::Integer(1));
        sections.insert("logging".into(), toml::Value::Table(bad));
        let (key, problem) = check_sections::<Host>(&sections).unwrap_err();
        assert_eq!(key, "capabilities.logging");
        assert!(problem.contains("level"), "{problem}");
    }
}
