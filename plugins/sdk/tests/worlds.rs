//! Each world's export macro works from a plugin crate, and the three can share capabilities.

use ledgerhost_sdk::prelude::*;
use ledgerhost_sdk::testing::{EventBuilder, MockHost};

struct Sweeper;

impl Scheduled for Sweeper {
    fn tick(now: i64) -> Result<(), String> {
        kv::set("ticks/last", now.to_string().as_bytes()).map_err(|e| e.to_string())
    }
}

struct Echo;

impl HttpHandler for Echo {
    fn handle_request(request: HttpRequest) -> HttpResponse {
        HttpResponse {
            status: if request.method == "POST" { 200 } else { 405 },
            headers: vec![("content-type".into(), "text/plain".into())],
            body: request.body,
        }
    }
}

struct Acker;

impl Consumer for Acker {
    fn handle(events: Vec<Event>) -> Vec<Disposition> {
        ack_all(&events)
    }
}

export_scheduled!(Sweeper);
export_http!(Echo);
export_consumer!(Acker);

#[test]
fn scheduled_http_and_consumer_plugins_run_natively() {
    let host = MockHost::new();
    Sweeper::tick(42).unwrap();
    assert_eq!(host.kv("ticks/last"), Some(b"42".to_vec()));

    let response = Echo::handle_request(HttpRequest {
        method: "POST".into(),
        path: "/".into(),
        query: String::new(),
        headers: vec![],
        body: b"hi".to_vec(),
    });
    assert_eq!((response.status, response.body), (200, b"hi".to_vec()));

    let events = vec![EventBuilder::new("t").key("id", 1).build()];
    assert_eq!(Acker::handle(events), vec![Disposition::Ack]);
}
