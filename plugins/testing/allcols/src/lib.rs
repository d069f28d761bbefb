//! Reads every column of every event by name (the SDK's accessor, resolved against the
//! batch's schema) and folds each value into a checksum (FNV-1a over its bytes), so the
//! runtime bench measures a plugin that touches all the data it receives. The bench's
//! native twin (`host/runtime/benches/plugin.rs`) folds the same values the same way.
use ledgerhost_sdk::prelude::*;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

fn fold(h: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(h, |h, b| (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME))
}

fn fold_list<T>(h: u64, items: &[Option<T>], f: impl Fn(u64, &T) -> u64) -> u64 {
    items.iter().fold(h, |h, i| match i {
        None => fold(h, &[0]),
        Some(x) => f(fold(h, &[1]), x),
    })
}

/// One value folded into `h`.
pub fn fold_value(h: u64, v: &Value) -> u64 {
    match v {
        Value::Null => fold(h, &[0]),
        Value::Bool(b) => fold(h, &[u8::from(*b)]),
        Value::Int64(i) | Value::Timestamp(i) => fold(h, &i.to_le_bytes()),
        Value::Float32(f) => fold(h, &f.to_le_bytes()),
        Value::Float64(f) => fold(h, &f.to_le_bytes()),
        Value::Date(d) => fold(h, &d.to_le_bytes()),
        Value::Numeric(s) | Value::String(s) | Value::Json(s) => fold(h, s.as_bytes()),
        Value::Bytes(b) => fold(h, b),
        Value::BoolArray(a) => fold_list(h, a, |h, b| fold(h, &[u8::from(*b)])),
        Value::Int64Array(a) | Value::TimestampArray(a) => {
            fold_list(h, a, |h, i| fold(h, &i.to_le_bytes()))
        }
        Value::Float32Array(a) => fold_list(h, a, |h, f| fold(h, &f.to_le_bytes())),
        Value::Float64Array(a) => fold_list(h, a, |h, f| fold(h, &f.to_le_bytes())),
        Value::DateArray(a) => fold_list(h, a, |h, d| fold(h, &d.to_le_bytes())),
        Value::NumericArray(a) | Value::StringArray(a) | Value::JsonArray(a) => {
            fold_list(h, a, |h, s| fold(h, s.as_bytes()))
        }
        Value::BytesArray(a) => fold_list(h, a, |h, b| fold(h, b)),
    }
}

/// The checksum of a batch: every column of every event, by name, in column order.
pub fn checksum(events: &[Event]) -> u64 {
    let Some(first) = events.first() else {
        return FNV_OFFSET;
    };
    let names: Vec<&str> = first
        .schema()
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    events.iter().fold(FNV_OFFSET, |h, e| {
        let h = names
            .iter()
            .fold(h, |h, n| e.get(n).map_or(h, |v| fold_value(h, v)));
        fold(h, &[u8::from(e.deleted)])
    })
}

struct AllColumns;

impl Consumer for AllColumns {
    fn handle(events: Vec<Event>) -> Vec<Disposition> {
        std::hint::black_box(checksum(&events));
        ack_all(&events)
    }
}

export_consumer!(AllColumns);

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerhost_sdk::testing::EventBuilder;

    #[test]
    fn values_nulls_and_element_order_change_the_checksum() {
        // A fold of bytes, not of types (the bench's native twin folds the same bytes): these
        // differ in their bytes.
        let e = |v: Value| EventBuilder::new("t").key("id", 1).field("x", v).build();
        let values = [
            Value::Null,
            Value::Int64(0),
            Value::Int64(1),
            Value::String("a".into()),
            Value::String("b".into()),
            Value::Int64Array(vec![Some(0), None]),
            Value::Int64Array(vec![None, Some(0)]),
        ];
        let sums: Vec<u64> = values.iter().map(|v| checksum(&[e(v.clone())])).collect();
        for (i, a) in sums.iter().enumerate() {
            for b in &sums[i + 1..] {
                assert_ne!(a, b, "{values:?} → {sums:?}");
            }
        }
        assert_eq!(
            AllColumns::handle(vec![e(Value::Null)]),
            vec![Disposition::Ack]
        );
    }
}
