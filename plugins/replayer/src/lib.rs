//! Replayer: on `POST` with a table and a time range, publishes the archived events of that
//! range — from compacted files and per-event objects alike, each event once — in commit
//! order onto a new ledger topic, and answers with the topic's name.
//!
//! Request body (JSON): `{"table": "orders", "from": "2026-11-22T12:00:00Z",
//! "to": "2026-11-22T13:00:00Z", "topic": "replay-orders-audit"}` — `from` inclusive, `to`
//! exclusive, each an RFC 3339 UTC time or microseconds since the epoch; `topic` optional
//! (default `<topic-prefix><table>-<from>-<to>-<n>`). A topic is never reused: a name a
//! previous replay took is refused (409).
//!
//! Answer: `200 {"topic": …, "events": n, "compacted_files": …, "objects": …}`, or
//! `{"error": {"code": …, "description": …}}` with 400 (bad request), 403 (topic or bucket
//! not granted), 405 (not POST), 409 (topic already used), 422 (an archived object in range
//! is unreadable: nothing published), 502 (the archive or the ledger failed; the
//! description says how many events were published before, and the body names the topic).
//!
//! Everything in range is read and checked before the first publish, so an unreadable
//! archive publishes nothing; a publish failure midway leaves a prefix (in commit order) on
//! the topic.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use ledgerhost_archive::{
    ArchivedEvent, ObjectName, archived_event, bucket_for, civil_from_micros, micros_from_civil,
    parse_object_name, read_compacted, sort_events,
};
use ledgerhost_avro::Decoder;
use ledgerhost_sdk::ledger::Message;
use ledgerhost_sdk::prelude::*;
use serde_json::{Value as Json, json};

/// The plugin.
pub struct Replayer;

const DAY: i64 = 86_400_000_000;

fn decoder() -> &'static Decoder {
    static DECODER: OnceLock<Decoder> = OnceLock::new();
    DECODER.get_or_init(Decoder::new)
}

/// A refusal: HTTP status, error code and description.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub status: u16,
    pub code: &'static str,
    pub description: String,
    /// The topic, when one was created before the failure.
    pub topic: Option<String>,
}

fn fail(status: u16, code: &'static str, description: impl Into<String>) -> Failure {
    Failure {
        status,
        code,
        description: description.into(),
        topic: None,
    }
}

fn bad(description: impl Into<String>) -> Failure {
    fail(400, "bad-request", description)
}

/// A capability error as an answer: not granted → 403, a bad name → 400, else 502.
fn cap_failure(what: &str, e: Error) -> Failure {
    match e {
        Error::Denied(m) => fail(403, "not-granted", format!("{what}: {m}")),
        Error::Invalid(m) => fail(400, "bad-request", format!("{what}: {m}")),
        Error::Backend(m) => fail(502, "backend-unavailable", format!("{what}: {m}")),
    }
}

/// A validated request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub table: String,
    /// Microseconds since the epoch, inclusive.
    pub from: i64,
    /// Microseconds since the epoch, exclusive.
    pub to: i64,
    pub topic: Option<String>,
}

/// Parses `2026-11-22T12:00:00Z` (fractions of a second allowed, `+00:00` too) or a number
/// of microseconds since the epoch.
pub fn parse_time(v: &Json) -> Option<i64> {
    if let Some(n) = v.as_i64() {
        return Some(n);
    }
    let s = v.as_str()?.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    let s = s
        .strip_suffix('Z')
        .or_else(|| s.strip_suffix('z'))
        .or_else(|| s.strip_suffix("+00:00"))?;
    let (date, time) = s.split_once(['T', 't', ' '])?;
    let d: Vec<&str> = date.split('-').collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let t: Vec<&str> = hms.split(':').collect();
    if d.len() != 3 || t.len() != 3 || d[0].len() != 4 || frac.len() > 6 {
        return None;
    }
    let n = |s: &str| -> Option<u32> {
        (s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let year: i64 = d[0].parse().ok()?;
    let base = micros_from_civil(year, n(d[1])?, n(d[2])?, n(t[0])?, n(t[1])?, n(t[2])?)?;
    if n(t[0])? > 23 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().ok()?
    };
    Some(base + micros)
}

/// A topic name every ledger accepts (Pub/Sub's rules).
fn valid_topic(t: &str) -> bool {
    (3..=255).contains(&t.len())
        && t.starts_with(|c: char| c.is_ascii_alphabetic())
        && !t.starts_with("goog")
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.~+%".contains(c))
}

impl Request {
    /// Validates a request; the error names the field and the expected form.
    pub fn parse(method: &str, body: &[u8], max_range_days: i64) -> Result<Request, Failure> {
        if !method.eq_ignore_ascii_case("POST") {
            return Err(fail(
                405,
                "method-not-allowed",
                format!("use POST with a JSON body {{\"table\", \"from\", \"to\"}}, not {method}"),
            ));
        }
        let v: Json = serde_json::from_slice(body).map_err(|e| {
            bad(format!(
                "the body is not JSON ({e}); send {{\"table\": \"orders\", \"from\": \
                 \"2026-11-22T12:00:00Z\", \"to\": \"2026-11-22T13:00:00Z\"}}"
            ))
        })?;
        let table = v
            .get("table")
            .and_then(Json::as_str)
            .ok_or_else(|| bad("`table` (a string) is required"))?
            .to_string();
        if table.is_empty()
            || !table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(bad(format!(
                "`table` = {table:?} is not a table name (letters, digits, `_`, `-`)"
            )));
        }
        let time = |key: &str| -> Result<i64, Failure> {
            let raw = v
                .get(key)
                .ok_or_else(|| bad(format!("`{key}` is required")))?;
            parse_time(raw).ok_or_else(|| {
                bad(format!(
                    "`{key}` = {raw} is not a UTC time like \"2026-11-22T12:00:00Z\" nor \
                     microseconds since the epoch"
                ))
            })
        };
        let (from, to) = (time("from")?, time("to")?);
        if from >= to {
            return Err(bad(format!(
                "`from` ({from} µs) must be before `to` ({to} µs); `to` is exclusive"
            )));
        }
        if to - from > max_range_days.saturating_mul(DAY) {
            return Err(bad(format!(
                "the range is longer than {max_range_days} days (max-range-days); replay it in \
                 pieces"
            )));
        }
        let topic = match v.get("topic") {
            None | Some(Json::Null) => None,
            Some(Json::String(t)) if valid_topic(t) => Some(t.clone()),
            Some(other) => {
                return Err(bad(format!(
                    "`topic` = {other} is not a topic name (3-255 characters: letters, digits, \
                     `-_.~+%`, starting with a letter)"
                )));
            }
        };
        Ok(Request {
            table,
            from,
            to,
            topic,
        })
    }
}

fn compact_time(us: i64) -> String {
    let c = civil_from_micros(us);
    format!(
        "{:04}{:02}{:02}t{:02}{:02}{:02}",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// Claims `topic` for this replay: false if an earlier replay used it. The versioned write
/// is one atomic step, so two replicas cannot both claim one name.
fn claim(topic: &str) -> Result<bool, Failure> {
    kv::set_if_newer(&format!("replayer/topic/{topic}"), b"1", 1)
        .map_err(|e| cap_failure("recording the topic name", e))
}

/// A generated topic name, with a sequence number claimed atomically.
fn new_topic(prefix: &str, r: &Request) -> Result<String, Failure> {
    for _ in 0..1000 {
        let n: i64 = kv::get("replayer/seq")
            .map_err(|e| cap_failure("reading the replay sequence", e))?
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
            + 1;
        if !kv::set_if_newer("replayer/seq", n.to_string().as_bytes(), n)
            .map_err(|e| cap_failure("claiming a replay sequence number", e))?
        {
            continue; // another replica took n
        }
        let topic = format!(
            "{prefix}{}-{}-{}-{n}",
            r.table.to_ascii_lowercase(),
            compact_time(r.from),
            compact_time(r.to)
        );
        if claim(&topic)? {
            return Ok(topic);
        }
    }
    Err(fail(
        503,
        "busy",
        "could not claim a replay sequence number; retry",
    ))
}

/// What was read for a replay.
#[derive(Debug, Default)]
pub struct Collected {
    pub events: Vec<ArchivedEvent>,
    pub compacted_files: usize,
    pub objects: usize,
}

/// Reads every archived event of `table` in `[from, to)`, each once, in commit order.
pub fn collect(bucket: &str, table: &str, from: i64, to: i64) -> Result<Collected, Failure> {
    let mut by_id: BTreeMap<String, ArchivedEvent> = BTreeMap::new();
    let mut out = Collected::default();
    let first_day = from.div_euclid(DAY);
    let last_day = (to - 1).div_euclid(DAY);
    for day in first_day..=last_day {
        let c = civil_from_micros(day * DAY);
        let prefix = format!("{table}-{:04}_{:02}_{:02}_", c.year, c.month, c.day);
        let names = blobstore::list(bucket, &prefix)
            .map_err(|e| cap_failure(&format!("listing {bucket}/{prefix}*"), e))?;
        for name in names {
            let read = |name: &str| -> Result<Vec<u8>, Failure> {
                blobstore::get(bucket, name)
                    .map_err(|e| cap_failure(&format!("reading {bucket}/{name}"), e))?
                    .ok_or_else(|| {
                        fail(
                            409,
                            "archive-changed",
                            format!("{bucket}/{name} disappeared while reading (the janitor compacted it?); retry"),
                        )
                    })
            };
            let unreadable = |e: String| {
                fail(
                    422,
                    "archive-unreadable",
                    format!("{bucket}/{name}: {e}; nothing was published"),
                )
            };
            let events = match parse_object_name(table, &name) {
                Some(ObjectName::Single { millis, .. })
                    if from.div_euclid(1000) <= millis && millis <= (to - 1).div_euclid(1000) =>
                {
                    out.objects += 1;
                    vec![
                        archived_event(decoder(), &read(&name)?, &name)
                            .map_err(|e| unreadable(e.to_string()))?,
                    ]
                }
                Some(ObjectName::Compacted(span)) if span.overlaps(from, to) => {
                    out.compacted_files += 1;
                    read_compacted(&read(&name)?, decoder())
                        .map_err(|e| unreadable(e.to_string()))?
                }
                _ => continue,
            };
            for e in events {
                if e.table == table && from <= e.commit_ts && e.commit_ts < to {
                    by_id.insert(e.event_id.clone(), e);
                }
            }
        }
    }
    out.events = by_id.into_values().collect();
    sort_events(&mut out.events);
    Ok(out)
}

fn message(e: &ArchivedEvent) -> Message {
    Message {
        data: e.avro.clone(),
        ordering_key: e.ledger_ordering_key(),
        attributes: e.attributes(),
    }
}

/// Runs a validated replay; the JSON answer on success.
pub fn replay(r: &Request) -> Result<Json, Failure> {
    let int = |key: &str, default: i64| -> Result<i64, Failure> {
        config::parse_or(key, default).map_err(|e| fail(500, "misconfigured", e))
    };
    let batch = int("publish-batch", 500)?.clamp(1, 10_000) as usize;
    let bucket = bucket_for(
        &config::get("bucket-prefix").unwrap_or_else(|| "archive-".into()),
        &r.table,
    );
    let collected = collect(&bucket, &r.table, r.from, r.to)?;
    let topic = match &r.topic {
        Some(t) => {
            if !claim(t)? {
                return Err(fail(
                    409,
                    "topic-exists",
                    format!(
                        "topic `{t}` was used by an earlier replay; a replay always gets a new topic (omit `topic` for a generated name)"
                    ),
                ));
            }
            t.clone()
        }
        None => new_topic(
            &config::get("topic-prefix").unwrap_or_else(|| "replay-".into()),
            r,
        )?,
    };
    ledger::create_topic(&topic).map_err(|e| cap_failure(&format!("creating topic {topic}"), e))?;
    let total = collected.events.len();
    log_info!(
        "replay of {} [{}, {}) onto {topic}: {total} events from {} compacted files and {} objects",
        r.table,
        r.from,
        r.to,
        collected.compacted_files,
        collected.objects
    );
    let mut published = 0;
    for chunk in collected.events.chunks(batch) {
        let messages: Vec<Message> = chunk.iter().map(message).collect();
        if let Err(e) = ledger::publish(&topic, &messages) {
            let mut f = cap_failure(&format!("publishing to {topic}"), e);
            f.code = "publish-failed";
            f.description = format!(
                "{}; {published} of {total} events were published (in commit order) before \
                 the failure; replay again onto a new topic",
                f.description
            );
            f.topic = Some(topic);
            return Err(f);
        }
        published += chunk.len();
        log_info!("replay onto {topic}: {published}/{total} events published");
    }
    Ok(json!({
        "topic": topic,
        "table": r.table,
        "from": r.from,
        "to": r.to,
        "events": total,
        "compacted_files": collected.compacted_files,
        "objects": collected.objects,
    }))
}

fn respond(status: u16, body: &Json) -> HttpResponse {
    HttpResponse {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: serde_json::to_vec(body).unwrap_or_default(),
    }
}

impl HttpHandler for Replayer {
    fn handle_request(request: HttpRequest) -> HttpResponse {
        let max_days = match config::parse_or("max-range-days", 31i64) {
            Ok(d) => d,
            Err(e) => {
                return respond(
                    500,
                    &json!({"error": {"code": "misconfigured", "description": e}}),
                );
            }
        };
        match Request::parse(&request.method, &request.body, max_days).and_then(|r| replay(&r)) {
            Ok(body) => respond(200, &body),
            Err(f) => {
                log_warn!(
                    "replay refused ({} {}): {}",
                    f.status,
                    f.code,
                    f.description
                );
                let mut body = json!({"error": {"code": f.code, "description": f.description}});
                if let Some(t) = f.topic {
                    body["topic"] = json!(t);
                }
                respond(f.status, &body)
            }
        }
    }
}

export_http!(Replayer);

#[cfg(test)]
mod tests;
