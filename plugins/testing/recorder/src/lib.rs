//! Makes what a plugin received observable: for every event it stores
//! `rec/<event-id>` (or `<config prefix><event-id>`) = the decoded fields as text (one `name=type value` line per column, plus
//! `deleted=`), and appends the commit timestamp to `order/<table>/<key>` (a comma-separated
//! list), so a test can check values of every type, NULLs, and each key's delivery order.
//! Deliveries of one key are serialised by the host, so the read-modify-write is safe.
use ledgerhost_sdk::prelude::*;

/// One value as text: `type value`, `null`, arrays as `[...]` of their elements.
pub fn render(v: &Value) -> String {
    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
    fn list<T>(items: &[Option<T>], f: impl Fn(&T) -> String) -> String {
        let parts: Vec<String> = items
            .iter()
            .map(|i| i.as_ref().map_or_else(|| "null".to_string(), &f))
            .collect();
        format!("[{}]", parts.join(", "))
    }
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("bool {b}"),
        Value::Int64(i) => format!("int64 {i}"),
        Value::Float32(f) => format!("float32 {f}"),
        Value::Float64(f) => format!("float64 {f}"),
        Value::Numeric(n) => format!("numeric {n}"),
        Value::String(s) => format!("string {s}"),
        Value::Bytes(b) => format!("bytes {}", hex(b)),
        Value::Date(d) => format!("date {d}"),
        Value::Timestamp(t) => format!("timestamp {t}"),
        Value::Json(j) => format!("json {j}"),
        Value::BoolArray(a) => format!("bool-array {}", list(a, |x| x.to_string())),
        Value::Int64Array(a) => format!("int64-array {}", list(a, |x| x.to_string())),
        Value::Float32Array(a) => format!("float32-array {}", list(a, |x| x.to_string())),
        Value::Float64Array(a) => format!("float64-array {}", list(a, |x| x.to_string())),
        Value::NumericArray(a) => format!("numeric-array {}", list(a, |x| x.clone())),
        Value::StringArray(a) => format!("string-array {}", list(a, |x| x.clone())),
        Value::BytesArray(a) => format!("bytes-array {}", list(a, |x| hex(x))),
        Value::DateArray(a) => format!("date-array {}", list(a, |x| x.to_string())),
        Value::TimestampArray(a) => format!("timestamp-array {}", list(a, |x| x.to_string())),
        Value::JsonArray(a) => format!("json-array {}", list(a, |x| x.clone())),
    }
}

/// The text stored for an event.
pub fn describe(e: &Event) -> String {
    let mut out = String::new();
    for (name, value) in e.fields() {
        out.push_str(&format!("{name}={}\n", render(value)));
    }
    out.push_str(&format!("deleted={}\n", e.deleted));
    out
}

fn record(e: &Event, prefix: &str) -> Result<(), Error> {
    kv::set(&format!("{prefix}{}", e.id), describe(e).as_bytes())?;
    let key_path = e.id.rsplit_once('/').map_or(e.id.as_str(), |(k, _)| k);
    let order_key = format!("order/{key_path}");
    let mut seen = kv::get(&order_key)?.unwrap_or_default();
    seen.extend_from_slice(format!("{},", e.commit_ts).as_bytes());
    kv::set(&order_key, &seen)
}

struct Recorder;

impl Consumer for Recorder {
    fn handle(events: Vec<Event>) -> Vec<Disposition> {
        // A second recorder on one host (e.g. one with `subscription.columns`) records under
        // its own prefix.
        let prefix = config::get("prefix").unwrap_or_else(|| "rec/".to_string());
        events
            .iter()
            .map(|e| match record(e, &prefix) {
                Ok(()) => Disposition::Ack,
                Err(err) => Disposition::Retry(format!("cannot record {}: {err}", e.id)),
            })
            .collect()
    }
}

export_consumer!(Recorder);

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerhost_sdk::testing::{EventBuilder, MockHost};

    #[test]
    fn records_values_and_each_keys_order() {
        let host = MockHost::from_manifest(include_str!("../plugin.toml")).unwrap();
        let first = EventBuilder::new("orders")
            .key("id", 1)
            .field("note", Value::Null)
            .field("tags", Value::StringArray(vec![Some("a".into()), None]))
            .commit_ts(5)
            .build();
        let second = EventBuilder::new("orders")
            .key("id", 1)
            .field("note", "x")
            .field("tags", Value::Null)
            .commit_ts(9)
            .build();
        assert_eq!(
            Recorder::handle(vec![first.clone()]),
            vec![Disposition::Ack]
        );
        assert_eq!(Recorder::handle(vec![second]), vec![Disposition::Ack]);
        assert_eq!(
            host.kv(&format!("rec/{}", first.id)),
            Some(b"id=int64 1\nnote=null\ntags=string-array [a, null]\ndeleted=false\n".to_vec())
        );
        assert_eq!(host.kv("order/orders/1"), Some(b"5,9,".to_vec()));
    }
}
