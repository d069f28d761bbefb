//! A consumer built against `ledgerhost:plugin@0.1.0` (wit/v0.1) without the SDK, kept so the
//! tests prove the host still serves 0.1 beside 0.2. For every event it stores
//! `legacy/<event-id>` = one `name=type value` line per field plus `deleted=`, the format of
//! the 0.2 recorder (`plugins/testing/recorder`), so a test compares what each received.

#![allow(missing_docs)]

mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit/v0.1",
        world: "ledgerhost:plugin/consumer",
        generate_all,
    });
}

use bindings::ledgerhost::plugin::keyvalue;
use bindings::ledgerhost::plugin::types::{Disposition, Event, Value};

/// One value as text, in the recorder's format: `type value`, `null`, arrays as `[...]`.
/// (Its own copy: this plugin's `Value` is generated from the 0.1 WIT, not the SDK's type.)
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
    for f in &e.fields {
        out.push_str(&format!("{}={}\n", f.name, render(&f.value)));
    }
    out.push_str(&format!("deleted={}\n", e.deleted));
    out
}

struct Legacy;

impl bindings::Guest for Legacy {
    fn handle(events: Vec<Event>) -> Vec<Disposition> {
        events
            .iter()
            .map(
                |e| match keyvalue::set(&format!("legacy/{}", e.id), describe(e).as_bytes()) {
                    Ok(()) => Disposition::Ack,
                    Err(err) => Disposition::Retry(format!("cannot record {}: {err:?}", e.id)),
                },
            )
            .collect()
    }
}

bindings::export!(Legacy with_types_in bindings);
