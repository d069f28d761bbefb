//! The load-time check of a component's imports against its manifest's grants and the
//! capabilities this host provides.

use std::path::Path;

use wasmtime::component::Component;

use ledgerhost_capabilities::CapabilitySet;

use crate::engine::Runtime;
use crate::error::LoadError;
use ledgerhost_manifest::Manifest;

/// Refuses components that import what the manifest does not grant, or what this host
/// does not provide, with a message naming the fix. The capabilities' offers say which
/// interface each provides and which grant it needs.
pub(super) fn check_imports(
    runtime: &Runtime,
    path: &Path,
    component: &Component,
    manifest: &Manifest,
) -> Result<(), LoadError> {
    let refuse = |message: String| LoadError::Imports {
        path: path.to_path_buf(),
        message,
    };
    let grants = manifest.grants.to_map();
    let offers = CapabilitySet::OFFERS;
    let known: Vec<&str> = offers
        .iter()
        .filter_map(|o| o.grant.map(|g| g.key))
        .collect();
    if let Some(unknown) = grants.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(refuse(format!(
            "{}.toml: `grants.{unknown}` is not a grant of this host (it knows {})",
            manifest.name,
            known.join(", ")
        )));
    }
    let ty = component.component_type();
    for (name, _) in ty.imports(&runtime.engine) {
        if ledgerhost_capabilities::wit::TYPES_INTERFACES
            .iter()
            .any(|t| name.starts_with(t))
        {
            continue;
        }
        let provider = offers
            .iter()
            .find(|o| o.interfaces.iter().any(|i| name.starts_with(i)));
        if let Some(offer) = provider {
            if let Some(grant) = offer.grant
                && offer.import_needs_grant
                && grants.get(grant.key).is_none_or(|g| g.is_empty())
            {
                return Err(refuse(format!(
                    "imports `{name}` but its manifest grants none: add the {what} it needs to \
                     `grants.{key}` in {}.toml",
                    manifest.name,
                    what = grant.what,
                    key = grant.key,
                )));
            }
            continue;
        }
        if name.starts_with("wasi:") {
            // WASI itself (an empty sandbox), linked by the runtime; the linker refuses the
            // interfaces it lacks.
            continue;
        }
        let unversioned = |n: &str| n.split('@').next().unwrap_or(n).to_string();
        let other_version = offers.iter().any(|o| {
            o.interfaces
                .iter()
                .any(|i| unversioned(i) == unversioned(name))
        });
        if other_version {
            return Err(refuse(format!(
                "imports `{name}`; this host provides ledgerhost:plugin@0.2.0 (and 0.1.0), rebuild the plugin against 0.2.0"
            )));
        }
        let hint = if name.starts_with("ledgerhost:plugin/") {
            " (this host provides ledgerhost:plugin@0.2.0 and 0.1.0; rebuild the plugin against 0.2.0)"
        } else {
            ""
        };
        return Err(refuse(format!(
            "imports `{name}`, which ledgerhost does not provide{hint}"
        )));
    }
    Ok(())
}
