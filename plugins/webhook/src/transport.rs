//! The POST over the standard `wasi:http/outgoing-handler` (the host checks the origin
//! against `grants.http` and bounds the request by its deadline and size cap).

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};

use crate::delivery::{Outcome, Request, Settings};

/// Sends `request` to the configured target and waits for the response's status.
pub fn post(settings: &Settings, request: &Request) -> Outcome {
    match send(settings, request) {
        Ok(status) => Outcome::Status(status),
        Err(ErrorCode::HttpRequestDenied) => Outcome::Denied,
        Err(e) => Outcome::Failed(format!("{e:?}")),
    }
}

fn send(settings: &Settings, request: &Request) -> Result<u16, ErrorCode> {
    let internal = |what: &str| ErrorCode::InternalError(Some(what.to_string()));
    let entries: Vec<(String, Vec<u8>)> = request
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
        .collect();
    let headers = Fields::from_list(&entries).map_err(|e| internal(&format!("headers: {e:?}")))?;
    let target = &settings.target;
    let req = OutgoingRequest::new(headers);
    let scheme = if target.https {
        Scheme::Https
    } else {
        Scheme::Http
    };
    req.set_method(&Method::Post)
        .and_then(|_| req.set_scheme(Some(&scheme)))
        .and_then(|_| req.set_authority(Some(&target.authority)))
        .and_then(|_| req.set_path_with_query(Some(&target.path_with_query)))
        .map_err(|_| internal("the URL was refused"))?;
    let body = req.body().map_err(|_| internal("no request body"))?;
    write_all(&body, &request.body)?;

    let options = RequestOptions::new();
    let nanos = settings.timeout_ms.saturating_mul(1_000_000);
    // A refusal only means the host keeps its own default; its deadline applies anyway.
    let _ = options.set_connect_timeout(Some(nanos));
    let _ = options.set_first_byte_timeout(Some(nanos));
    let _ = options.set_between_bytes_timeout(Some(nanos));

    let pending = outgoing_handler::handle(req, Some(options))?;
    OutgoingBody::finish(body, None)?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or_else(|| internal("no response after waiting"))?
        .map_err(|_| internal("response taken twice"))??;
    Ok(response.status())
}

/// Writes `bytes` into the request body, as fast as the host takes them.
fn write_all(body: &OutgoingBody, mut bytes: &[u8]) -> Result<(), ErrorCode> {
    let stream = body.write().map_err(|_| failed("no stream"))?;
    let ready = stream.subscribe();
    while !bytes.is_empty() {
        ready.block();
        let permit = stream
            .check_write()
            .map_err(|e| failed(&format!("{e:?}")))?;
        let n = bytes.len().min(permit as usize);
        let (chunk, rest) = bytes.split_at(n);
        stream.write(chunk).map_err(|e| failed(&format!("{e:?}")))?;
        bytes = rest;
    }
    stream.flush().map_err(|e| failed(&format!("{e:?}")))?;
    ready.block();
    stream
        .check_write()
        .map_err(|e| failed(&format!("{e:?}")))?;
    Ok(())
}

fn failed(what: &str) -> ErrorCode {
    ErrorCode::InternalError(Some(format!("writing the request body: {what}")))
}
