//! REST/JSON through the front: which RPC a request is, the rules applied to its JSON
//! fields, and the forwarding to the emulator (HTTP/1.1).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Response, StatusCode, request::Parts};
use base64::Engine as _;
use ledgerhost_core::ledger::{Message, limits};
use serde_json::Value as Json;

use super::{PublishShape, Rpc, State, Transport, forwarded};

/// The request path, parsed: `/v1/projects/P/(topics|subscriptions)/ID[:verb]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub rpc: Rpc,
    /// `("topic" | "subscription", id)` when the path names one.
    pub resource: Option<(&'static str, String)>,
}

/// Which RPC `method` on `path` is, and the resource it names.
pub fn classify(method: &Method, path: &str) -> Target {
    let rest = path.strip_prefix("/v1/").unwrap_or("");
    let (resource, verb) = match rest.rsplit_once(':') {
        // A `:` after the last `/` is a custom verb.
        Some((r, v)) if !v.contains('/') => (r, Some(v)),
        _ => (rest, None),
    };
    let parts: Vec<&str> = resource.split('/').collect();
    let m = method.as_str();
    let (rpc, named) = match (parts.as_slice(), verb, m) {
        (["projects", _, "topics"], None, "GET") => (Rpc::ListTopics, None),
        (["projects", _, "subscriptions"], None, "GET") => (Rpc::ListSubscriptions, None),
        (["projects", _, "topics", t, "subscriptions"], None, "GET") => {
            (Rpc::ListTopicSubscriptions, Some(("topic", *t)))
        }
        (["projects", _, "topics", t], None, _) => (
            match m {
                "PUT" => Rpc::CreateTopic,
                "GET" => Rpc::GetTopic,
                "PATCH" => Rpc::UpdateTopic,
                "DELETE" => Rpc::DeleteTopic,
                _ => Rpc::Other,
            },
            Some(("topic", *t)),
        ),
        (["projects", _, "topics", t], Some("publish"), "POST") => {
            (Rpc::Publish, Some(("topic", *t)))
        }
        (["projects", _, "subscriptions", s], None, _) => (
            match m {
                "PUT" => Rpc::CreateSubscription,
                "GET" => Rpc::GetSubscription,
                "PATCH" => Rpc::UpdateSubscription,
                "DELETE" => Rpc::DeleteSubscription,
                _ => Rpc::Other,
            },
            Some(("subscription", *s)),
        ),
        (["projects", _, "subscriptions", s], Some(v), "POST") => (
            match v {
                "pull" => Rpc::Pull,
                "acknowledge" => Rpc::Acknowledge,
                "modifyAckDeadline" => Rpc::ModifyAckDeadline,
                _ => Rpc::Other,
            },
            Some(("subscription", *s)),
        ),
        _ => (Rpc::Other, None),
    };
    Target {
        rpc,
        resource: named.map(|(k, id)| (k, id.to_string())),
    }
}

/// An integer JSON field, as proto3 JSON writes it (a number, or a string for 64-bit).
fn int_field(v: Option<&Json>) -> Option<i64> {
    match v? {
        Json::Number(n) => n.as_i64(),
        Json::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The messages of a Publish body, as the ledger's [`Message`]s.
fn publish_messages(body: &Json) -> Result<Vec<Message>, String> {
    let Some(list) = body.get("messages") else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or("PublishRequest.messages is not a list")?;
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let data = match m.get("data").and_then(Json::as_str) {
                None | Some("") => Vec::new(),
                Some(s) => base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|e| {
                        format!(
                            "message {i}: `data` is not base64 (PubsubMessage.data is bytes): {e}"
                        )
                    })?,
            };
            let attributes = match m.get("attributes") {
                None | Some(Json::Null) => BTreeMap::new(),
                Some(Json::Object(o)) => o
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect(),
                Some(_) => return Err(format!("message {i}: `attributes` is not a map")),
            };
            let ordering_key = m
                .get("orderingKey")
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_string();
            Ok(Message {
                data,
                ordering_key,
                attributes,
            })
        })
        .collect()
}

/// Checks a subscription's settings (a `Subscription` JSON object, or the fields of it
/// `mask` names when given).
fn check_subscription(sub: &Json, mask: Option<&BTreeSet<String>>) -> Result<(), String> {
    let named = |field: &str| mask.is_none_or(|m| m.contains(&normalize(field)));
    if named("ackDeadlineSeconds") {
        // `Subscription.ackDeadlineSeconds`: "If this parameter is 0, a default value of 10
        // seconds is used." Other values: limits::check_ack_deadline (its citation).
        if let Some(secs) = int_field(sub.get("ackDeadlineSeconds"))
            && secs != 0
        {
            limits::check_ack_deadline(secs).map_err(|e| e.to_string())?;
        }
    }
    if named("deadLetterPolicy")
        && let Some(policy) = sub.get("deadLetterPolicy").filter(|p| !p.is_null())
    {
        // `DeadLetterPolicy.maxDeliveryAttempts`: "If this parameter is 0, a default value
        // of 5 is used." Other values: limits::check_dead_letter_attempts.
        if let Some(n) = int_field(policy.get("maxDeliveryAttempts"))
            && n != 0
        {
            limits::check_dead_letter_attempts(n).map_err(|e| e.to_string())?;
        }
    }
    if let Some(mask) = mask {
        // Fields production cannot change in place. Topic: "certain properties of a
        // subscription, such as its topic, are not modifiable" (projects.subscriptions.patch);
        // filter: "After creating the subscription, you can't modify the filter"
        // (<https://cloud.google.com/pubsub/docs/subscription-message-filter>); message
        // ordering is set at creation (<https://cloud.google.com/pubsub/docs/ordering>).
        for (field, what) in [
            ("topic", "a subscription's topic cannot be changed"),
            (
                "filter",
                "a subscription's filter cannot be changed after creation",
            ),
            (
                "enableMessageOrdering",
                "a subscription's message ordering cannot be changed after creation",
            ),
        ] {
            if mask.contains(&normalize(field)) {
                return Err(format!(
                    "UpdateSubscription names `{field}`: {what}; delete and re-create the \
                     subscription"
                ));
            }
        }
    }
    Ok(())
}

/// A field-mask path compared without case or `_` (masks come in camelCase or snake_case).
fn normalize(path: &str) -> String {
    path.chars()
        .filter(|c| *c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The paths of an `updateMask` (a comma-separated string in JSON, or `{paths: [...]}`).
fn mask_paths(mask: Option<&Json>) -> BTreeSet<String> {
    match mask {
        Some(Json::String(s)) => s
            .split(',')
            .filter(|p| !p.is_empty())
            .map(normalize)
            .collect(),
        Some(Json::Object(o)) => o
            .get("paths")
            .and_then(Json::as_array)
            .map(|a| a.iter().filter_map(Json::as_str).map(normalize).collect())
            .unwrap_or_default(),
        _ => BTreeSet::new(),
    }
}

/// What the front decided about a request: `Err(rule)` refuses it. For a Publish, its shape.
pub fn check(target: &Target, body: &[u8]) -> (Result<(), String>, Option<PublishShape>) {
    if let Some((kind, id)) = &target.resource
        && target.rpc != Rpc::Publish
        && let Err(e) = limits::check_resource_id(kind, id)
    {
        // Resource names (limits.rs cites pubsub-basics#resource_names).
        return (Err(e.to_string()), None);
    }
    let json = || -> Option<Json> {
        if body.is_empty() {
            None
        } else {
            serde_json::from_slice(body).ok()
        }
    };
    match target.rpc {
        Rpc::Publish => {
            let topic = target
                .resource
                .as_ref()
                .map(|(_, id)| id.clone())
                .unwrap_or_default();
            // Not JSON: the emulator answers for itself.
            let messages = json().map_or(Ok(Vec::new()), |b| publish_messages(&b));
            let (verdict, shape) = super::publish_verdict(topic, messages, Transport::Rest);
            (verdict, Some(shape))
        }
        Rpc::CreateSubscription => {
            let verdict = match json() {
                Some(sub) => check_subscription(&sub, None),
                None => Ok(()),
            };
            (verdict, None)
        }
        Rpc::UpdateSubscription => {
            let verdict = match json() {
                Some(req) => {
                    let mask = mask_paths(req.get("updateMask"));
                    let sub = req.get("subscription").cloned().unwrap_or(Json::Null);
                    check_subscription(&sub, Some(&mask))
                }
                None => Ok(()),
            };
            (verdict, None)
        }
        Rpc::ModifyAckDeadline => {
            // limits::check_modify_ack_deadline (projects.subscriptions.modifyAckDeadline).
            let verdict = match json().and_then(|b| int_field(b.get("ackDeadlineSeconds"))) {
                Some(secs) => limits::check_modify_ack_deadline(secs).map_err(|e| e.to_string()),
                None => Ok(()),
            };
            (verdict, None)
        }
        _ => (Ok(()), None),
    }
}

pub(super) fn google_error(status: StatusCode, code_name: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "error": { "code": status.as_u16(), "message": message, "status": code_name }
    });
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=UTF-8")
        .body(Body::from(body.to_string()))
        .expect("a valid response")
}

/// Checks a REST request, records it, and refuses it or forwards it.
pub(super) async fn handle(state: Arc<State>, parts: Parts, body: Bytes) -> Response<Body> {
    let path = parts.uri.path().to_string();
    let target = classify(&parts.method, &path);
    let (verdict, shape) = check(&target, &body);
    state.record(target.rpc, &parts.method, &path, &verdict, shape);
    if let Err(rule) = verdict {
        return google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", &rule);
    }
    let url = format!(
        "{}{}",
        state.upstream,
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or(&path)
    );
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if forwarded(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let sent = state
        .http
        .request(parts.method.clone(), &url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            state.lock().stats.unreachable += 1;
            return google_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                &format!("the Pub/Sub emulator behind the front is unreachable: {e}"),
            );
        }
    };
    let status = resp.status();
    let mut out = Response::builder().status(status);
    for (name, value) in resp.headers() {
        if forwarded(name) {
            out = out.header(name, value);
        }
    }
    match resp.bytes().await {
        Ok(bytes) => out.body(Body::from(bytes)).expect("a valid response"),
        Err(e) => {
            state.lock().stats.unreachable += 1;
            google_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                &format!("the Pub/Sub emulator's answer broke off: {e}"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_classified() {
        let c = |m: Method, p: &str| classify(&m, p);
        assert_eq!(
            c(Method::PUT, "/v1/projects/p/topics/orders"),
            Target {
                rpc: Rpc::CreateTopic,
                resource: Some(("topic", "orders".into()))
            }
        );
        assert_eq!(
            c(Method::POST, "/v1/projects/p/topics/orders:publish").rpc,
            Rpc::Publish
        );
        assert_eq!(
            c(Method::PATCH, "/v1/projects/p/subscriptions/s1").rpc,
            Rpc::UpdateSubscription
        );
        assert_eq!(
            c(
                Method::POST,
                "/v1/projects/p/subscriptions/s1:modifyAckDeadline"
            )
            .rpc,
            Rpc::ModifyAckDeadline
        );
        assert_eq!(c(Method::GET, "/v1/projects/p/topics").rpc, Rpc::ListTopics);
        assert_eq!(c(Method::GET, "/healthz").rpc, Rpc::Other);
    }

    #[test]
    fn the_rules_apply_to_the_json_fields() {
        let publish = classify(&Method::POST, "/v1/projects/p/topics/orders:publish");
        let body = serde_json::json!({"messages": [
            {"data": "eA==", "orderingKey": "a"}, {"data": "eA==", "orderingKey": "b"}]});
        let (verdict, shape) = check(&publish, body.to_string().as_bytes());
        assert!(verdict.unwrap_err().contains("different ordering keys"));
        assert_eq!(shape.unwrap().ordering_keys, 2);
        let ok = serde_json::json!({"messages": [{"data": "eA==", "orderingKey": "a"}]});
        assert!(check(&publish, ok.to_string().as_bytes()).0.is_ok());
        let update = classify(&Method::PATCH, "/v1/projects/p/subscriptions/sub");
        let body = serde_json::json!({"subscription": {"ackDeadlineSeconds": 601},
            "updateMask": "ackDeadlineSeconds"});
        assert!(check(&update, body.to_string().as_bytes()).0.is_err());
        let body = serde_json::json!({"subscription": {"ackDeadlineSeconds": 601},
            "updateMask": "retryPolicy"});
        assert!(check(&update, body.to_string().as_bytes()).0.is_ok());
        let body = serde_json::json!({"subscription": {"filter": "x"}, "updateMask": "filter"});
        assert!(check(&update, body.to_string().as_bytes()).0.is_err());
        let create = classify(&Method::PUT, "/v1/projects/p/subscriptions/ab");
        assert!(check(&create, b"{}").0.unwrap_err().contains("naming rule"));
    }
}
