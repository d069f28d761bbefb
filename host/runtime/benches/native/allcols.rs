//! `plugins/testing/allcols`'s logic over the host's events: the native twin the runtime
//! and consumer benches measure the plugin against (one copy, included by path by both).

use ledgerhost_core::{Event, Value};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

fn fold(h: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(h, |h, b| (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME))
}

/// `plugins/testing/allcols`'s fold of one value, over the host's values: the same bytes in
/// the same order (a present element is prefixed by 1, a NULL one is 0).
fn fold_value(h: u64, v: &Value) -> u64 {
    match v {
        Value::Null => fold(h, &[0]),
        Value::Bool(b) => fold(h, &[u8::from(*b)]),
        Value::Int64(i) | Value::Timestamp(i) => fold(h, &i.to_le_bytes()),
        Value::Float32(f) => fold(h, &f.to_le_bytes()),
        Value::Float64(f) => fold(h, &f.to_le_bytes()),
        Value::Date(d) => fold(h, &d.to_le_bytes()),
        Value::Numeric(s) | Value::String(s) | Value::Json(s) => fold(h, s.as_bytes()),
        Value::Bytes(b) => fold(h, b),
        Value::Array(_, items) => items.iter().fold(h, |h, i| match i {
            Value::Null => fold(h, &[0]),
            x => fold_value(fold(h, &[1]), x),
        }),
    }
}

/// The checksum `plugins/testing/allcols` computes over a batch: every column of every event
/// by name (the names of the batch's first event), then its deleted flag.
pub fn checksum(events: &[Event]) -> u64 {
    let names: Vec<&str> = events
        .first()
        .map(|e| e.fields.iter().map(|f| &*f.name).collect())
        .unwrap_or_default();
    events.iter().fold(FNV_OFFSET, |h, e| {
        let h = names
            .iter()
            .fold(h, |h, n| e.get(n).map_or(h, |v| fold_value(h, v)));
        fold(h, &[u8::from(e.deleted)])
    })
}
