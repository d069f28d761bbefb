//! materializer: keeps, per client, a view of that client's current rows in the key-value
//! store, for low-latency reads.
//!
//! Key layout (every part under the `prefix` config value, itself under a granted prefix):
//!
//! - `<prefix><client>/<table>/<primary key>`: the row as a JSON object (every column, plus
//!   `_commit_ts`, the commit timestamp in µs of the version shown). `<client>` is the
//!   `client-field` column's value with `%`, `/` and `@` percent-encoded; `<primary key>` is
//!   the event's ordering key (key columns joined by `,`, each with `%`, `,`, `/` encoded).
//! - `<prefix>@owner/<table>/<primary key>`: the client currently owning the row, so a row
//!   whose client changes leaves the old client's view.
//!
//! Every write is versioned by the event's commit timestamp (`set-if-newer`,
//! `delete-if-newer`), so the newest version wins whatever the delivery order, a tombstone
//! deletes the row and keeps older versions out, and redelivery changes nothing.
//! The `clients` config value (comma-separated) restricts the views to those clients.

use ledgerhost_sdk::prelude::*;
use ledgerhost_sdk::time::{date_text, timestamp_text};
use serde_json::{Map, Value as Json};

/// Config key: prefix of every key written.
pub const PREFIX: &str = "prefix";
/// Config key: the column holding a row's client id.
pub const CLIENT_FIELD: &str = "client-field";
/// Config key: comma-separated clients to keep views for (empty or absent: all).
pub const CLIENTS: &str = "clients";
/// Segment of the ownership index, which no encoded client id can equal.
pub const OWNER_SEGMENT: &str = "@owner";

/// The plugin's settings, read from config on every batch (cheap, and a host override
/// applies without a reload).
struct Settings {
    prefix: String,
    client_field: String,
    clients: Option<Vec<String>>,
}

impl Settings {
    fn read() -> Result<Settings, String> {
        let prefix = config::try_get(PREFIX)?.unwrap_or_else(|| "views/".into());
        let client_field = config::try_get(CLIENT_FIELD)?.unwrap_or_else(|| "client_id".into());
        let clients: Vec<String> = config::try_get(CLIENTS)?
            .unwrap_or_default()
            .split(',')
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect();
        Ok(Settings {
            prefix,
            client_field,
            clients: (!clients.is_empty()).then_some(clients),
        })
    }

    fn tracks(&self, client: &str) -> bool {
        self.clients
            .as_ref()
            .is_none_or(|c| c.iter().any(|x| x == client))
    }
}

/// A client id as a key segment: `%`, `/` and `@` percent-encoded.
pub fn encode_client(client: &str) -> String {
    client
        .replace('%', "%25")
        .replace('/', "%2F")
        .replace('@', "%40")
}

/// The view key of a row.
pub fn view_key(prefix: &str, client: &str, table: &str, pk: &str) -> String {
    format!("{prefix}{}/{table}/{pk}", encode_client(client))
}

/// The ownership-index key of a row.
pub fn owner_key(prefix: &str, table: &str, pk: &str) -> String {
    format!("{prefix}{OWNER_SEGMENT}/{table}/{pk}")
}

/// The client of a row: `Ok(None)` for a NULL client, an error when the column is missing.
fn client_of(e: &Event, field: &str) -> Result<Option<String>, String> {
    let v = e.get(field).ok_or_else(|| {
        format!(
            "event {} of table `{}` has no column `{field}` (config `{CLIENT_FIELD}` names the \
             client column)",
            e.id, e.table
        )
    })?;
    Ok(match v {
        Value::Null => None,
        Value::String(s) | Value::Numeric(s) => Some(s.clone()),
        Value::Int64(i) => Some(i.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        other => {
            return Err(format!(
                "event {}: client column `{field}` holds {other:?}; use a STRING or INT64 column",
                e.id
            ));
        }
    })
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn float(f: f64) -> Json {
    serde_json::Number::from_f64(f).map_or_else(|| Json::String(format!("{f}")), Json::Number)
}

fn json_text(s: &str) -> Json {
    // JSON columns are embedded as documents; text that does not parse stays a string.
    serde_json::from_str(s).unwrap_or_else(|_| Json::String(s.to_string()))
}

fn array<T>(items: &[Option<T>], f: impl Fn(&T) -> Json) -> Json {
    Json::Array(
        items
            .iter()
            .map(|x| x.as_ref().map_or(Json::Null, &f))
            .collect(),
    )
}

/// A column value as JSON: INT64 as a number, NUMERIC as exact text, BYTES as base64,
/// DATE as `YYYY-MM-DD`, TIMESTAMP as RFC 3339, JSON embedded, non-finite floats as text.
pub fn json_of(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int64(i) => Json::from(*i),
        Value::Float32(f) => float(f64::from(*f)),
        Value::Float64(f) => float(*f),
        Value::Numeric(s) | Value::String(s) => Json::String(s.clone()),
        Value::Bytes(b) => Json::String(base64(b)),
        Value::Date(d) => Json::String(date_text(*d)),
        Value::Timestamp(t) => Json::String(timestamp_text(*t)),
        Value::Json(s) => json_text(s),
        Value::BoolArray(a) => array(a, |b| Json::Bool(*b)),
        Value::Int64Array(a) => array(a, |i| Json::from(*i)),
        Value::Float32Array(a) => array(a, |f| float(f64::from(*f))),
        Value::Float64Array(a) => array(a, |f| float(*f)),
        Value::NumericArray(a) | Value::StringArray(a) => array(a, |s| Json::String(s.clone())),
        Value::BytesArray(a) => array(a, |b| Json::String(base64(b))),
        Value::DateArray(a) => array(a, |d| Json::String(date_text(*d))),
        Value::TimestampArray(a) => array(a, |t| Json::String(timestamp_text(*t))),
        Value::JsonArray(a) => array(a, |s| json_text(s)),
    }
}

/// The stored view value of a row: its columns and `_commit_ts`.
pub fn row_json(e: &Event) -> Vec<u8> {
    let mut m = Map::new();
    for (name, value) in e.fields() {
        m.insert(name.to_string(), json_of(value));
    }
    m.insert("_commit_ts".into(), Json::from(e.commit_ts));
    Json::Object(m).to_string().into_bytes()
}

/// Applies one event to the views.
fn apply(s: &Settings, e: &Event) -> Result<(), Disposition> {
    let kv_err = |what: &str, err: Error| {
        let reason = format!("event {}: {what}: {err}", e.id);
        match err {
            Error::Backend(_) => Disposition::Retry(reason),
            Error::Denied(_) | Error::Invalid(_) => Disposition::Reject(reason),
        }
    };
    let client = client_of(e, &s.client_field).map_err(Disposition::Reject)?;
    let tracked = client.as_deref().filter(|c| s.tracks(c));
    let pk = e.ordering_key();
    let owner = owner_key(&s.prefix, &e.table, pk);
    let previous = kv::get(&owner)
        .map_err(|err| kv_err("read the row's owner", err))?
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    if let Some(prev) = &previous
        && tracked != Some(prev.as_str())
    {
        // The row left `prev` (another client, an untracked one, or none): its old view
        // entry goes, at this version, so an older redelivery cannot bring it back.
        kv::delete_if_newer(&view_key(&s.prefix, prev, &e.table, pk), e.commit_ts)
            .map_err(|err| kv_err("remove the row from its previous client's view", err))?;
    }
    match tracked {
        Some(client) => {
            let key = view_key(&s.prefix, client, &e.table, pk);
            if e.deleted {
                kv::delete_if_newer(&key, e.commit_ts)
                    .map_err(|err| kv_err("delete the row", err))?;
            } else {
                kv::set_if_newer(&key, &row_json(e), e.commit_ts)
                    .map_err(|err| kv_err("write the row", err))?;
            }
            kv::set_if_newer(&owner, client.as_bytes(), e.commit_ts)
                .map_err(|err| kv_err("record the row's owner", err))?;
        }
        None if previous.is_some() => {
            kv::delete_if_newer(&owner, e.commit_ts)
                .map_err(|err| kv_err("clear the row's owner", err))?;
        }
        None => {}
    }
    Ok(())
}

/// The plugin.
pub struct Materializer;

impl Consumer for Materializer {
    fn handle(events: Vec<Event>) -> Vec<Disposition> {
        let settings = match Settings::read() {
            Ok(s) => s,
            Err(e) => return retry_all(&events, &e),
        };
        events
            .iter()
            .map(|e| match apply(&settings, e) {
                Ok(()) => Disposition::Ack,
                Err(d) => d,
            })
            .collect()
    }
}

export_consumer!(Materializer);

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerhost_sdk::testing::{Capability, EventBuilder, MockHost};

    fn order(id: i64, client: &str, amount: i64, ts: i64) -> Event {
        EventBuilder::new("orders")
            .key("id", id)
            .field("client_id", client)
            .field("amount", amount)
            .commit_ts(ts)
            .build()
    }

    fn view(host: &MockHost, key: &str) -> Option<Json> {
        host.kv(key)
            .map(|b| serde_json::from_slice(&b).expect("views hold JSON"))
    }

    #[test]
    fn newest_version_wins_whatever_the_order() {
        let host = MockHost::from_manifest(include_str!("../plugin.toml")).unwrap();
        let d = Materializer::handle(vec![order(1, "c1", 10, 5), order(1, "c1", 11, 7)]);
        assert_eq!(d, vec![Disposition::Ack; 2]);
        // An old version redelivered late changes nothing.
        Materializer::handle(vec![order(1, "c1", 9, 6)]);
        let v = view(&host, "views/c1/orders/1").unwrap();
        assert_eq!(v["amount"], 11);
        assert_eq!(v["_commit_ts"], 7);
        assert_eq!(v["client_id"], "c1");
    }

    #[test]
    fn tombstones_delete_and_keep_older_versions_out() {
        let host = MockHost::from_manifest(include_str!("../plugin.toml")).unwrap();
        Materializer::handle(vec![order(1, "c1", 10, 5)]);
        let gone = EventBuilder::new("orders")
            .key("id", 1i64)
            .field("client_id", "c1")
            .field("amount", 10i64)
            .commit_ts(8)
            .deleted()
            .build();
        assert_eq!(Materializer::handle(vec![gone]), vec![Disposition::Ack]);
        assert_eq!(host.kv("views/c1/orders/1"), None);
        Materializer::handle(vec![order(1, "c1", 10, 6)]);
        assert_eq!(host.kv("views/c1/orders/1"), None, "no resurrection");
    }

    #[test]
    fn a_row_that_changes_client_moves_between_views() {
        let host = MockHost::from_manifest(include_str!("../plugin.toml")).unwrap();
        Materializer::handle(vec![order(1, "c1", 10, 5), order(1, "c2", 10, 6)]);
        assert_eq!(host.kv("views/c1/orders/1"), None);
        assert_eq!(view(&host, "views/c2/orders/1").unwrap()["_commit_ts"], 6);
        // The older version, redelivered, neither returns to c1 nor leaves c2.
        Materializer::handle(vec![order(1, "c1", 10, 5)]);
        assert_eq!(host.kv("views/c1/orders/1"), None);
        assert!(host.kv("views/c2/orders/1").is_some());
        assert_eq!(host.kv("views/@owner/orders/1"), Some(b"c2".to_vec()));
    }

    #[test]
    fn the_clients_filter_keeps_only_those_views() {
        let host = MockHost::from_manifest(include_str!("../plugin.toml"))
            .unwrap()
            .with_config(CLIENTS, "c1, c3");
        let d = Materializer::handle(vec![
            order(1, "c1", 1, 5),
            order(2, "c2", 2, 5),
            order(3, "c3", 3, 5),
        ]);
        assert_eq!(d, vec![Disposition::Ack; 3]);
        let rows: Vec<String> = host
            .kv_keys()
            .into_iter()
            .filter(|k| !k.contains(OWNER_SEGMENT))
            .collect();
        assert_eq!(rows, vec!["views/c1/orders/1", "views/c3/orders/3"]);
        // c1's row moves to the untracked c2: it leaves c1's view.
        Materializer::handle(vec![order(1, "c2", 1, 6)]);
        assert_eq!(host.kv("views/c1/orders/1"), None);
        assert_eq!(host.kv("views/@owner/orders/1"), None);
    }

    #[test]
    fn keys_are_escaped_and_writes_outside_the_grant_are_rejected() {
        let host = MockHost::from_manifest(include_str!("../plugin.toml")).unwrap();
        Materializer::handle(vec![order(1, "a/b@c", 1, 5)]);
        assert!(host.kv("views/a%2Fb%40c/orders/1").is_some());
        drop(host);
        let _host = MockHost::from_manifest(include_str!("../plugin.toml"))
            .unwrap()
            .with_config(PREFIX, "other/");
        match &Materializer::handle(vec![order(1, "c1", 1, 5)])[0] {
            Disposition::Reject(r) => assert!(r.contains("key-prefixes"), "{r}"),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn failures_retry_and_missing_client_columns_reject() {
        let host = MockHost::from_manifest(include_str!("../plugin.toml")).unwrap();
        host.fail(Capability::Keyvalue, Error::Backend("redis down".into()));
        assert!(matches!(
            &Materializer::handle(vec![order(1, "c1", 1, 5)])[0],
            Disposition::Retry(r) if r.contains("redis down")
        ));
        host.heal(Capability::Keyvalue);
        let e = EventBuilder::new("orders").key("id", 1i64).build();
        assert!(matches!(
            &Materializer::handle(vec![e])[0],
            Disposition::Reject(r) if r.contains("client_id")
        ));
        let null_client = EventBuilder::new("orders")
            .key("id", 2i64)
            .field("client_id", Value::Null)
            .build();
        assert_eq!(
            Materializer::handle(vec![null_client]),
            vec![Disposition::Ack]
        );
        assert!(host.kv_keys().is_empty());
    }

    #[test]
    fn values_render_as_readable_json() {
        assert_eq!(base64(b"hello"), "aGVsbG8=");
        assert_eq!(base64(b""), "");
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
        assert_eq!(date_text(0), "1970-01-01");
        assert_eq!(date_text(-1), "1969-12-31");
        assert_eq!(date_text(20_415), "2025-11-23");
        assert_eq!(timestamp_text(1_500_000), "1970-01-01T00:00:01.500000Z");
        assert_eq!(timestamp_text(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(json_of(&Value::Json("{\"a\":1}".into()))["a"], 1);
        assert_eq!(
            json_of(&Value::Float64(f64::NAN)),
            Json::String("NaN".into())
        );
        assert_eq!(
            json_of(&Value::Int64Array(vec![Some(1), None])),
            serde_json::json!([1, null])
        );
    }
}
