//! Reading a materializer view back from any key-value backend, so views built by different
//! paths (live, replayed, embedded, Redis) can be compared key for key.

use std::collections::BTreeMap;

use ledgerhost_core::PortResult;
use ledgerhost_core::capabilities::KeyValue;

/// Segment of the materializer's ownership index (`<prefix>@owner/<table>/<pk>`), which is
/// bookkeeping, not part of the view.
pub const OWNER_SEGMENT: &str = "@owner/";

/// Every row of the view under `prefix` (e.g. `"views/"`): key → stored bytes (the row as
/// JSON), without the ownership index. A key deleted between listing and reading is left out.
pub async fn materialized_view(
    kv: &dyn KeyValue,
    prefix: &str,
) -> PortResult<BTreeMap<String, Vec<u8>>> {
    let index = format!("{prefix}{OWNER_SEGMENT}");
    let mut view = BTreeMap::new();
    for key in kv.list_keys(prefix).await? {
        if key.starts_with(&index) {
            continue;
        }
        if let Some(value) = kv.get(&key).await? {
            view.insert(key, value);
        }
    }
    Ok(view)
}

/// [`materialized_view`] with each row parsed as JSON; a value that is not JSON panics
/// with its key (the materializer only writes JSON).
pub async fn materialized_rows(
    kv: &dyn KeyValue,
    prefix: &str,
) -> PortResult<BTreeMap<String, serde_json::Value>> {
    Ok(materialized_view(kv, prefix)
        .await?
        .into_iter()
        .map(|(k, v)| {
            let json = serde_json::from_slice(&v)
                .unwrap_or_else(|e| panic!("view key {k} does not hold JSON: {e}"));
            (k, json)
        })
        .collect())
}
