//! `plugin check`: loads a component and its manifest as the host's registry would and
//! prints what the host would see.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;

use super::scratch::{load, scratch_runtime, world_name};

/// Validates a component and its manifest; prints what the host would see.
pub async fn check(wasm: &Path, manifest: Option<&Path>) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir().context("cannot create a scratch directory")?;
    let stores = scratch_runtime(scratch.path()).await?;
    let plugin = load(
        &stores.runtime,
        wasm,
        manifest,
        &BTreeMap::new(),
        scratch.path(),
    )
    .await?;
    let m = plugin.manifest();
    println!("ok: {} is a valid ledgerhost plugin", wasm.display());
    println!("  name      {}", m.name);
    println!("  world     {}", world_name(m.world));
    println!("  version   {}", plugin.version());
    if let Some(s) = &m.subscription {
        let source = match (&s.table, &s.tables, &s.topic) {
            (Some(t), _, _) => format!("table {t}"),
            (None, Some(list), _)
                if list
                    .iter()
                    .any(|t| t == ledgerhost_runtime::manifest::EVERY_TABLE) =>
            {
                "every captured table (one subscription each)".into()
            }
            (None, Some(list), _) => format!("tables {} (one subscription each)", list.join(", ")),
            (None, None, Some(t)) => format!("topic {t}"),
            _ => "-".into(),
        };
        let filter = if s.filter.is_empty() {
            String::new()
        } else {
            format!(", filter {}", s.filter.exprs().join(" AND "))
        };
        println!(
            "  consumes  {source}, batches of {}{filter}, {} attempts",
            s.batch_size, s.max_attempts
        );
    }
    if let Some(s) = &m.schedule {
        println!("  schedule  every {} s", s.every_secs);
    }
    println!(
        "  limits    {} MiB memory, {} ms per call{}",
        m.limits.memory_mb,
        m.limits.deadline_ms,
        match m.instances() {
            1 => String::new(),
            k => format!(", each of {k} instances"),
        }
    );
    for (what, list) in m.grants.iter() {
        if !list.is_empty() {
            println!("  grants    {what}: {}", list.join(", "));
        }
    }
    Ok(())
}
