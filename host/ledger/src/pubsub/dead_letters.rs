//! Dead letters on Pub/Sub: the `<name>.dead-letters` subscription pulled whole and held,
//! then handed back (listing) or republished onto the subscription's topic and
//! acknowledged (redrive).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use ledgerhost_core::ledger::{DeadLetter, Message, RedriveSelection, dead_letter_subscription};
use ledgerhost_core::{PortError, PortResult};
use tracing::warn;

use super::client::Inner;
use super::error::{BACKEND, map_err};
use super::names::ledger_name;
use super::publish::publish;
use super::rest::RestError;

impl Inner {
    /// Pulls every message waiting on the dead-letter subscription of `subscription` (until
    /// a Pull answers nothing after the server's wait, or `max`) and keeps them leased; the
    /// caller acknowledges or hands back each ack id.
    pub(super) async fn pull_dead_letters(
        &self,
        subscription: &str,
        max: usize,
    ) -> PortResult<(String, Vec<(String, DeadLetter)>)> {
        let path = self.subscription_path(&dead_letter_subscription(subscription));
        let mut out: Vec<(String, DeadLetter)> = Vec::new();
        let mut seen = HashSet::new();
        while out.len() < max {
            let received = match self.rest.pull(&path, (max - out.len()).min(1000)).await {
                Ok(r) => r,
                Err(RestError::PullTimedOut) => break,
                Err(RestError::NotFound(e)) => {
                    let ids: Vec<String> = out.into_iter().map(|(id, _)| id).collect();
                    let _ = self.rest.modify_ack_deadline(&path, &ids, 0).await;
                    return Err(PortError::NotFound {
                        backend: BACKEND,
                        what: format!(
                            "dead-letter subscription {path} (the host creates it with \
                             `{subscription}` when it starts the plugin; is the plugin name \
                             right?): {e}"
                        ),
                    });
                }
                Err(e) => {
                    let ids: Vec<String> = out.into_iter().map(|(id, _)| id).collect();
                    let _ = self.rest.modify_ack_deadline(&path, &ids, 0).await;
                    return Err(PortError::unavailable(
                        BACKEND,
                        format!("pulling from {path}: {e}"),
                    ));
                }
            };
            if received.is_empty() {
                break;
            }
            for r in received {
                // Held leased, so a later Pull of this loop cannot hand it out again; a
                // duplicate delivery of one message (at least once) is listed once.
                if !seen.insert(r.message_id.clone()) {
                    let _ = self.rest.modify_ack_deadline(&path, &[r.ack_id], 0).await;
                    continue;
                }
                let message = Message {
                    data: r.data,
                    ordering_key: r.ordering_key,
                    attributes: r.attributes.into_iter().collect(),
                };
                out.push((
                    r.ack_id,
                    DeadLetter::from_message(message, r.publish_time_micros),
                ));
            }
        }
        // Oldest first, as the embedded ledger lists them.
        out.sort_by_key(|(_, d)| d.dead_lettered_at_micros);
        Ok((path, out))
    }
}

/// Every dead letter of `subscription` (at most `max`), handed back at once: listing
/// settles nothing.
pub(super) async fn list(
    inner: &Inner,
    subscription: &str,
    max: usize,
) -> PortResult<Vec<DeadLetter>> {
    let (path, held) = inner.pull_dead_letters(subscription, max).await?;
    let ids: Vec<String> = held.iter().map(|(id, _)| id.clone()).collect();
    // Listing settles nothing: hand every one back at once.
    if let Err(e) = inner.rest.modify_ack_deadline(&path, &ids, 0).await {
        warn!(subscription = %path, error = %e, "cannot hand listed dead letters back; they return after their ack deadline");
    }
    Ok(held.into_iter().map(|(_, d)| d).collect())
}

/// Republishes the dead letters `selection` picks (with `extra` attributes) onto the
/// subscription's topic, then acknowledges them; hands the others back.
pub(super) async fn redrive(
    inner: &Arc<Inner>,
    subscription: &str,
    selection: &RedriveSelection,
    extra: &BTreeMap<String, String>,
) -> PortResult<Vec<DeadLetter>> {
    // The topic the subscription reads, as Pub/Sub has it (this process may not have
    // ensured the subscription: the CLI runs beside the host).
    let sub_path = inner.subscription_path(subscription);
    let sub = inner
        .sub_admin
        .get_subscription()
        .set_subscription(sub_path.clone())
        .send()
        .await
        .map_err(|e| map_err(&format!("reading subscription {sub_path}"), &e))?;
    let topic = ledger_name(sub.topic.rsplit('/').next().unwrap_or_default());
    let (path, held) = inner.pull_dead_letters(subscription, usize::MAX).await?;
    let (chosen, rest): (Vec<_>, Vec<_>) =
        held.into_iter().partition(|(_, d)| selection.selects(d));
    let back: Vec<String> = rest.into_iter().map(|(id, _)| id).collect();
    if let Err(e) = inner.rest.modify_ack_deadline(&path, &back, 0).await {
        warn!(subscription = %path, error = %e, "cannot hand unselected dead letters back; they return after their ack deadline");
    }
    if chosen.is_empty() {
        return Ok(Vec::new());
    }
    let copies: Vec<Message> = chosen.iter().map(|(_, d)| d.redrive_copy(extra)).collect();
    let ids: Vec<String> = chosen.iter().map(|(id, _)| id.clone()).collect();
    if let Err(e) = publish(inner, &topic, copies).await {
        let _ = inner.rest.modify_ack_deadline(&path, &ids, 0).await;
        return Err(e);
    }
    // Published first, then settled: a failure here leaves them listed, and a second
    // redrive delivers a duplicate (same event id), never nothing.
    inner
        .rest
        .acknowledge(&path, &ids)
        .await
        .map_err(|e| {
            PortError::unavailable(
                BACKEND,
                format!("redriven onto {topic}, but acknowledging them on {path} failed (a later redrive repeats them): {e}"),
            )
        })?;
    Ok(chosen.into_iter().map(|(_, d)| d).collect())
}
