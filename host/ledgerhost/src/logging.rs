//! Log output: human-readable text, or (`--log-json` / `LEDGERHOST_LOG_JSON=1`) one JSON
//! object per line in the form Cloud Logging's structured-logging agents read (Cloud Run, GKE,
//! the Ops Agent): `severity`, `message`, `time` (RFC 3339), `logging.googleapis.com/sourceLocation`,
//! the fields of the event and of its spans as further keys, and
//! `logging.googleapis.com/trace` / `spanId` / `trace_sampled` when the event or a span carries
//! a trace (see [`CloudLogging`]).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Keys Cloud Logging gives a meaning to; a field of the same name is kept as `field.<name>`.
const SEVERITY: &str = "severity";
const MESSAGE: &str = "message";
const TIME: &str = "time";
const SOURCE_LOCATION: &str = "logging.googleapis.com/sourceLocation";
const TRACE: &str = "logging.googleapis.com/trace";
const SPAN_ID: &str = "logging.googleapis.com/spanId";
const TRACE_SAMPLED: &str = "logging.googleapis.com/trace_sampled";
const RESERVED: [&str; 8] = [
    SEVERITY,
    MESSAGE,
    TIME,
    SOURCE_LOCATION,
    TRACE,
    SPAN_ID,
    TRACE_SAMPLED,
    "logging.googleapis.com/labels",
];

/// Installs the process's log subscriber: text, or Cloud Logging JSON, on stderr, filtered by
/// `LEDGERHOST_LOG` (default `default_level`). In JSON mode a panic is logged as one ERROR
/// line too, so nothing the host writes is unstructured.
pub fn init(json: bool, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("LEDGERHOST_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    // Colours only for a terminal: a log file or a collector gets plain `key=value` text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if json {
        builder
            .fmt_fields(JsonFields::new())
            .event_format(CloudLogging::from_env())
            .init();
        std::panic::set_hook(Box::new(|info| {
            let payload = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(non-string panic payload)".into());
            let location = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            tracing::error!(panic.location = %location, "panic: {payload}");
        }));
    } else {
        builder.init();
    }
}

/// A `tracing_subscriber` event format writing Cloud Logging structured JSON lines.
///
/// Use it with [`JsonFields`] as the field formatter, so span fields are stored as JSON and
/// can be merged into each line (innermost span wins, the event's own fields win over all).
///
/// A trace is taken from a field of the event or an enclosing span:
/// - `trace`: `projects/P/traces/T`, a bare trace id `T`, or an `X-Cloud-Trace-Context`
///   value `T/SPAN;o=1`;
/// - `traceparent`: a W3C trace context `00-T-SPAN-FLAGS`;
/// - `span_id` and `trace_sampled` set the span and sampling explicitly.
///
/// A bare trace id becomes `projects/<project>/traces/<id>` when the project is known (from
/// `GOOGLE_CLOUD_PROJECT`), as Cloud Logging needs to link the entry to Cloud Trace.
#[derive(Debug, Clone, Default)]
pub struct CloudLogging {
    project: Option<String>,
}

impl CloudLogging {
    /// A formatter that qualifies bare trace ids with `project`.
    pub fn new(project: Option<String>) -> Self {
        CloudLogging {
            project: project.filter(|p| !p.trim().is_empty()),
        }
    }

    /// The project from `GOOGLE_CLOUD_PROJECT`, if set.
    pub fn from_env() -> Self {
        CloudLogging::new(std::env::var(crate::config::PROJECT_ENV).ok())
    }

    /// The JSON object of one event, given its level, source and fields (span fields
    /// outermost first, then the event's). Separate from [`FormatEvent`] for tests.
    fn entry(
        &self,
        level: &Level,
        meta: &tracing::Metadata<'_>,
        now: SystemTime,
        span_names: Vec<String>,
        layers: Vec<Map<String, Value>>,
    ) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert(SEVERITY.into(), severity(level).into());
        out.insert(TIME.into(), rfc3339(now).into());
        let mut location = Map::new();
        if let Some(file) = meta.file() {
            location.insert("file".into(), file.into());
        }
        if let Some(line) = meta.line() {
            // A string, as the LogEntrySourceLocation's int64 is in JSON.
            location.insert("line".into(), line.to_string().into());
        }
        location.insert(
            "function".into(),
            meta.module_path().unwrap_or(meta.target()).into(),
        );
        out.insert(SOURCE_LOCATION.into(), location.into());
        out.insert("target".into(), meta.target().into());
        if !span_names.is_empty() {
            out.insert("spans".into(), span_names.join(":").into());
        }

        let mut fields = Map::new();
        for layer in layers {
            fields.extend(layer);
        }
        let message = match fields.remove(MESSAGE) {
            Some(Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        out.insert(MESSAGE.into(), message.into());
        let trace = Trace::from_fields(&fields);
        for (k, v) in fields {
            if RESERVED.contains(&k.as_str()) || out.contains_key(&k) {
                out.insert(format!("field.{k}"), v);
            } else {
                out.insert(k, v);
            }
        }
        if let Some(id) = trace.trace {
            let qualified = match (&self.project, id.starts_with("projects/")) {
                (Some(p), false) => format!("projects/{p}/traces/{id}"),
                _ => id,
            };
            out.insert(TRACE.into(), qualified.into());
        }
        if let Some(span) = trace.span {
            out.insert(SPAN_ID.into(), span.into());
        }
        if let Some(sampled) = trace.sampled {
            out.insert(TRACE_SAMPLED.into(), sampled.into());
        }
        out
    }
}

impl<S, N> FormatEvent<S, N> for CloudLogging
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut span_names = Vec::new();
        let mut layers = Vec::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                span_names.push(span.name().to_string());
                let ext = span.extensions();
                if let Some(f) = ext.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&f.fields)
                {
                    layers.push(map);
                }
            }
        }
        let mut visitor = JsonVisitor::default();
        event.record(&mut visitor);
        layers.push(visitor.0);
        let entry = self.entry(meta.level(), meta, SystemTime::now(), span_names, layers);
        let line = serde_json::to_string(&entry).map_err(|_| fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

/// Cloud Logging's severity of a tracing level (TRACE has no own severity: DEBUG).
pub fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

/// `t` as RFC 3339 in UTC with microseconds, e.g. `2026-12-02T12:59:34.123456Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    ledgerhost_manifest::calendar::timestamp_text(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The trace an entry belongs to, from its fields.
#[derive(Debug, Default, PartialEq)]
struct Trace {
    trace: Option<String>,
    span: Option<String>,
    sampled: Option<bool>,
}

impl Trace {
    fn from_fields(fields: &Map<String, Value>) -> Trace {
        let text = |k: &str| match fields.get(k) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let mut t = Trace::default();
        if let Some(tp) = text("traceparent") {
            // version-traceid-spanid-flags
            let parts: Vec<&str> = tp.split('-').collect();
            if parts.len() == 4 && parts[1].len() == 32 && parts[2].len() == 16 {
                t.trace = Some(parts[1].to_string());
                t.span = Some(parts[2].to_string());
                t.sampled = u8::from_str_radix(parts[3], 16).ok().map(|f| f & 1 == 1);
            }
        }
        if let Some(tr) = text("trace") {
            // X-Cloud-Trace-Context: TRACE_ID/SPAN_ID;o=OPTIONS
            let (head, options) = match tr.split_once(";o=") {
                Some((h, o)) => (h.to_string(), Some(o.to_string())),
                None => (tr.clone(), None),
            };
            match head.split_once('/') {
                Some((id, span)) if !head.starts_with("projects/") => {
                    t.trace = Some(id.to_string());
                    if !span.is_empty() {
                        t.span = Some(span.to_string());
                    }
                }
                _ => t.trace = Some(head),
            }
            if let Some(o) = options {
                t.sampled = Some(o.trim() == "1");
            }
        }
        if let Some(span) = text("span_id") {
            t.span = Some(span);
        }
        match fields.get("trace_sampled") {
            Some(Value::Bool(b)) => t.sampled = Some(*b),
            Some(Value::String(s)) => t.sampled = s.parse().ok().or(t.sampled),
            _ => {}
        }
        t
    }
}

/// Collects an event's fields as JSON values.
#[derive(Default)]
struct JsonVisitor(Map<String, Value>);

impl Visit for JsonVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = serde_json::Number::from_f64(value)
            .map(Value::Number)
            .unwrap_or_else(|| value.to_string().into());
        self.0.insert(field.name().into(), v);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Runs `f` with the Cloud Logging format installed; returns the lines, parsed.
    fn capture(project: Option<&str>, f: impl FnOnce()) -> Vec<Map<String, Value>> {
        let buf = Buffer::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .fmt_fields(JsonFields::new())
            .event_format(CloudLogging::new(project.map(str::to_string)))
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| match serde_json::from_str::<Value>(l) {
                Ok(Value::Object(m)) => m,
                other => panic!("not a JSON object line: {l} ({other:?})"),
            })
            .collect()
    }

    #[test]
    fn lines_carry_what_cloud_logging_reads() {
        let lines = capture(None, || {
            let span = tracing::info_span!("poller", table = "orders", attempt = 3_u64);
            let _g = span.enter();
            tracing::info!(rows = 42_i64, ok = true, "published a page");
            tracing::warn!(error = %"boom", "retrying");
            tracing::error!(severity = "fake", "nope");
            tracing::debug!("debug");
            tracing::trace!("trace");
        });
        assert_eq!(lines.len(), 5, "{lines:?}");
        let info = &lines[0];
        assert_eq!(info["severity"], "INFO");
        assert_eq!(info["message"], "published a page");
        assert_eq!(info["rows"], 42);
        assert_eq!(info["ok"], true);
        assert_eq!(info["table"], "orders", "span fields as keys");
        assert_eq!(info["attempt"], 3);
        assert_eq!(info["spans"], "poller");
        let time = info["time"].as_str().unwrap();
        assert!(
            time.len() == 27 && time.ends_with('Z') && &time[10..11] == "T",
            "{time}"
        );
        let loc = info[SOURCE_LOCATION].as_object().unwrap();
        assert!(
            loc["file"].as_str().unwrap().ends_with("logging.rs"),
            "{loc:?}"
        );
        assert!(
            loc["line"].as_str().unwrap().parse::<u32>().is_ok(),
            "{loc:?}"
        );
        assert!(
            loc["function"].as_str().unwrap().contains("logging"),
            "{loc:?}"
        );
        assert!(!info.contains_key(TRACE));

        assert_eq!(lines[1]["severity"], "WARNING");
        assert_eq!(lines[1]["error"], "boom");
        assert_eq!(lines[2]["severity"], "ERROR");
        assert_eq!(lines[2]["message"], "nope");
        assert_eq!(
            lines[2]["field.severity"], "fake",
            "a reserved name is kept aside"
        );
        assert_eq!(lines[3]["severity"], "DEBUG");
        assert_eq!(lines[4]["severity"], "DEBUG", "TRACE maps to DEBUG");
    }

    #[test]
    fn a_known_trace_links_the_entry() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let lines = capture(Some("my-proj"), || {
            let span = tracing::info_span!("request", trace = id);
            let _g = span.enter();
            tracing::info!(span_id = "00f067aa0ba902b7", "handled");
            tracing::info!(
                traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "w3c"
            );
        });
        assert_eq!(lines[0][TRACE], format!("projects/my-proj/traces/{id}"));
        assert_eq!(lines[0][SPAN_ID], "00f067aa0ba902b7");
        // The event's traceparent is overridden by the span's `trace` (same id here) but
        // still gives the span id and the sampling flag.
        assert_eq!(lines[1][TRACE], format!("projects/my-proj/traces/{id}"));
        assert_eq!(lines[1][SPAN_ID], "00f067aa0ba902b7");
        assert_eq!(lines[1][TRACE_SAMPLED], true);

        let no_project = capture(None, || {
            tracing::info!(trace = "abc/123;o=1", "x-cloud-trace-context");
            tracing::info!(trace = "projects/p/traces/abc", "qualified");
        });
        assert_eq!(no_project[0][TRACE], "abc");
        assert_eq!(no_project[0][SPAN_ID], "123");
        assert_eq!(no_project[0][TRACE_SAMPLED], true);
        assert_eq!(no_project[1][TRACE], "projects/p/traces/abc");
        assert!(!no_project[1].contains_key(SPAN_ID));
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::from_micros(1_709_210_096_123_456);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.123456Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_799);
        assert_eq!(rfc3339(t), "2099-12-31T23:59:59.000000Z");
    }

    #[test]
    fn severities() {
        assert_eq!(severity(&Level::WARN), "WARNING");
        assert_eq!(severity(&Level::ERROR), "ERROR");
        assert_eq!(severity(&Level::INFO), "INFO");
        assert_eq!(severity(&Level::TRACE), "DEBUG");
    }
}
