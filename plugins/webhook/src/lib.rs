//! Webhook: POSTs each event, as JSON of its fields, to the `url` config value through the
//! host's `wasi:http/outgoing-handler` (the manifest must grant the URL's origin in
//! `grants.http`).
//!
//! Every request carries `x-ledgerhost-signature: sha256=<hex>` (HMAC-SHA256 of the exact
//! body with the `secret` config value) and `x-ledgerhost-event-id` (the same on every
//! redelivery, so the receiver can drop duplicates: delivery is at least once).
//!
//! Dispositions: 2xx → `Ack`; 5xx, 408, 429, timeouts and connection errors → `Retry`;
//! other 4xx (and 1xx/3xx: redirects are not followed) → `Reject` with the status in the
//! reason; a request the host denies (origin not in `grants.http`) → `Reject` naming the
//! grant. After a `Retry` the later events of the same key are not sent (retried too, so a
//! key's events reach the endpoint in commit order), and after a timeout or connection
//! error the rest of the batch is not sent (a down endpoint costs one timeout per batch).

mod delivery;
mod json;
#[cfg(target_arch = "wasm32")]
mod transport;

use std::collections::BTreeMap;

use hmac::{Hmac, KeyInit, Mac};
use ledgerhost_sdk::prelude::*;
use sha2::Sha256;

pub use delivery::{Outcome, Request, Settings, Target};
pub use json::event_json;

/// Header carrying the body's signature, `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-ledgerhost-signature";
/// Header carrying the event id (idempotency key).
pub const EVENT_ID_HEADER: &str = "x-ledgerhost-event-id";

/// `sha256=<hex>` of HMAC-SHA256(`secret`, `body`).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The disposition of an event whose POST to `target` ended with `outcome`.
pub fn disposition_for(target: &Target, outcome: &Outcome) -> Disposition {
    let url = format!("{}{}", target.origin(), target.path_with_query);
    match outcome {
        Outcome::Status(s) if (200..300).contains(s) => Disposition::Ack,
        Outcome::Status(s) if *s >= 500 || *s == 408 || *s == 429 => {
            Disposition::Retry(format!("webhook {url} answered {s}; will retry"))
        }
        Outcome::Status(s) if (400..500).contains(s) => Disposition::Reject(format!(
            "webhook {url} answered {s}: the endpoint refused the event (4xx, not retried)"
        )),
        Outcome::Status(s) => Disposition::Reject(format!(
            "webhook {url} answered {s}, which is not a success (redirects are not followed)"
        )),
        Outcome::Denied => Disposition::Reject(format!(
            "the host denied the request to {url}: its origin is not granted; add \"{}\" to \
             grants.http in the plugin's manifest",
            target.origin()
        )),
        Outcome::Failed(why) => Disposition::Retry(format!("webhook {url} unreachable: {why}")),
    }
}

/// The signed request for `event`.
pub fn request_for(settings: &Settings, event: &Event) -> Request {
    let body = event_json(event);
    let headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        (
            SIGNATURE_HEADER.to_string(),
            sign(settings.secret.as_bytes(), &body),
        ),
        (EVENT_ID_HEADER.to_string(), event.id.clone()),
    ];
    Request { headers, body }
}

/// The batch logic with the transport passed in (the component's is `wasi:http`; tests
/// pass a fake). A retried event holds back the later events of its key (commit order);
/// an unreachable endpoint holds back the rest of the batch (one timeout per batch).
pub fn deliver(
    settings: &Settings,
    events: &[Event],
    mut post: impl FnMut(&Settings, &Request) -> Outcome,
) -> Vec<Disposition> {
    let mut unreachable: Option<String> = None;
    let mut held: BTreeMap<&str, String> = BTreeMap::new();
    events
        .iter()
        .map(|event| {
            if let Some(why) = &unreachable {
                return Disposition::Retry(format!("not sent: {why}"));
            }
            if let Some(why) = held.get(event.ordering_key()) {
                return Disposition::Retry(format!(
                    "not sent: an earlier event of the same key will be retried ({why})"
                ));
            }
            let outcome = post(settings, &request_for(settings, event));
            let d = disposition_for(&settings.target, &outcome);
            if let Disposition::Retry(why) = &d {
                if matches!(outcome, Outcome::Failed(_)) {
                    unreachable = Some(why.clone());
                } else {
                    held.insert(event.ordering_key(), why.clone());
                }
            }
            d
        })
        .collect()
}

struct Webhook;

impl Consumer for Webhook {
    fn handle(events: Vec<Event>) -> Vec<Disposition> {
        let settings = match Settings::from_config() {
            Ok(s) => s,
            Err(why) => {
                return events
                    .iter()
                    .map(|_| Disposition::Reject(why.clone()))
                    .collect();
            }
        };
        #[cfg(target_arch = "wasm32")]
        let post = transport::post;
        #[cfg(not(target_arch = "wasm32"))]
        let post = |_: &Settings, _: &Request| {
            Outcome::Failed("no wasi:http outside a component".to_string())
        };
        deliver(&settings, &events, post)
    }
}

export_consumer!(Webhook);

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerhost_sdk::testing::{EventBuilder, MockHost};

    fn settings() -> Settings {
        Settings {
            target: Target::parse("http://127.0.0.1:8080/hook").unwrap(),
            secret: "s3cret".into(),
            timeout_ms: 1000,
        }
    }

    fn order(id: i64) -> Event {
        EventBuilder::new("orders")
            .key("id", id)
            .field("amount", 10 * id)
            .commit_ts(1_700_000_000_000_000 + id)
            .build()
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_exact_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let r = request_for(&settings(), &order(1));
        let header = |n: &str| r.headers.iter().find(|(k, _)| k == n).unwrap().1.clone();
        assert_eq!(header(SIGNATURE_HEADER), sign(b"s3cret", &r.body));
        assert_eq!(header(EVENT_ID_HEADER), order(1).id);
        assert_eq!(header("content-type"), "application/json");
    }

    #[test]
    fn statuses_map_to_ack_retry_and_reject() {
        let t = settings().target;
        assert_eq!(disposition_for(&t, &Outcome::Status(200)), Disposition::Ack);
        assert_eq!(disposition_for(&t, &Outcome::Status(204)), Disposition::Ack);
        for s in [500, 503, 408, 429] {
            assert!(
                matches!(disposition_for(&t, &Outcome::Status(s)), Disposition::Retry(r) if r.contains(&s.to_string())),
                "{s}"
            );
        }
        for s in [400, 404, 422, 301] {
            assert!(
                matches!(disposition_for(&t, &Outcome::Status(s)), Disposition::Reject(r) if r.contains(&s.to_string())),
                "{s}"
            );
        }
        assert!(matches!(
            disposition_for(&t, &Outcome::Failed("connection refused".into())),
            Disposition::Retry(r) if r.contains("connection refused")
        ));
        assert!(matches!(
            disposition_for(&t, &Outcome::Denied),
            Disposition::Reject(r) if r.contains("grants.http") && r.contains("\"http://127.0.0.1:8080\"")
        ));
    }

    #[test]
    fn a_retry_holds_back_its_key_and_an_unreachable_endpoint_the_batch() {
        let batch = |ids: &[i64]| -> Vec<Event> { ids.iter().map(|&i| order(i)).collect() };
        // Key 1 answered 503: its later event waits; key 2 goes on.
        let events = batch(&[1, 2, 1, 2]);
        let mut sent = Vec::new();
        let d = deliver(&settings(), &events, |_, r| {
            let id = String::from_utf8_lossy(&r.body).contains("\"key\":{\"id\":1}");
            sent.push(id);
            Outcome::Status(if id { 503 } else { 200 })
        });
        assert_eq!(
            sent,
            vec![true, false, false],
            "key 1's second event is not sent"
        );
        assert!(matches!(&d[0], Disposition::Retry(r) if r.contains("503")));
        assert_eq!((&d[1], &d[3]), (&Disposition::Ack, &Disposition::Ack));
        assert!(matches!(&d[2], Disposition::Retry(r) if r.contains("same key")));

        // A 400 is that event's end, not its key's.
        let mut answers = vec![Outcome::Status(200), Outcome::Status(400)];
        let d = deliver(&settings(), &batch(&[1, 1]), |_, _| answers.pop().unwrap());
        assert!(matches!(&d[0], Disposition::Reject(r) if r.contains("400")));
        assert_eq!(d[1], Disposition::Ack);

        // Connection refused: nothing more is sent in this batch.
        let mut calls = 0;
        let d = deliver(&settings(), &batch(&[1, 2, 3]), |_, _| {
            calls += 1;
            Outcome::Failed("ConnectionRefused".into())
        });
        assert_eq!(calls, 1);
        assert!(
            d.iter()
                .all(|d| matches!(d, Disposition::Retry(r) if r.contains("ConnectionRefused")))
        );
    }

    #[test]
    fn urls_parse_into_origin_and_path() {
        let t = Target::parse("https://Hooks.example.com").unwrap();
        assert_eq!(
            (t.origin().as_str(), t.path_with_query.as_str()),
            ("https://hooks.example.com", "/")
        );
        let t = Target::parse("http://127.0.0.1:9/a?b=c").unwrap();
        assert_eq!(
            (t.https, t.authority.as_str(), t.path_with_query.as_str()),
            (false, "127.0.0.1:9", "/a?b=c")
        );
        assert_eq!(Target::parse("http://h?x").unwrap().path_with_query, "/?x");
        for bad in ["hooks.example.com", "ftp://h/", "http:///x", "http://u@h/"] {
            assert!(Target::parse(bad).unwrap_err().contains("url"), "{bad}");
        }
    }

    #[test]
    fn the_config_comes_from_the_manifest_and_a_missing_secret_is_named() {
        let _host = MockHost::from_manifest(include_str!("../plugin.toml")).unwrap();
        let e = Settings::from_config().unwrap_err();
        assert!(e.contains("`secret`"), "{e}");
        let _host = MockHost::from_manifest(include_str!("../plugin.toml"))
            .unwrap()
            .with_config("secret", "k");
        let s = Settings::from_config().unwrap();
        assert_eq!(s.target.origin(), "https://hooks.example.com");
        assert_eq!(s.timeout_ms, 5000);
        let d = Webhook::handle(vec![order(1)]);
        assert!(
            matches!(&d[0], Disposition::Retry(_)),
            "natively there is no transport"
        );
    }
}
