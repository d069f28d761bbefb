//! The dispatcher: one loop per plugin subscription. It pulls a batch from the ledger, decodes
//! each Avro record once, applies the host-side filter, calls the plugin, and settles every
//! delivery from the plugin's disposition: ack, retry with exponential backoff (dead letter
//! after the configured attempts), or reject to the dead-letter topic with the reason.
//! A delivery is acknowledged only after the plugin returned for it.
//!
//! A plugin with K instances (`subscription.instances`) gets each batch split by ordering key
//! ([`instances::instance_of`]): the K parts run concurrently, each in a task of its own (so
//! on tokio's multi-thread runtime K CPU-bound instances use K cores), and the batch is settled
//! once every part returned.

pub mod filter;
mod handler;
pub mod instances;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledgerhost_avro::Decoder;
use ledgerhost_core::ledger::{Delivery, Ledger, Message, SubscriptionSpec, attr, limits};
use ledgerhost_core::{Disposition, Event, PortError};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::metrics::{DispatchCounters, DispatchStep, PluginStats};
pub use filter::EventFilter;
pub use handler::{BatchHandler, CurrentHandler, HandlerError};

/// Everything a subscription loop needs to know, derived from the plugin's manifest.
#[derive(Debug, Clone)]
pub struct SubscriptionPlan {
    /// Name of the plugin the subscription feeds.
    pub plugin: String,
    /// Ledger subscription name.
    pub subscription: String,
    /// Topic the subscription reads from.
    pub topic: String,
    /// The source table whose topic it reads (per-table counters); `None` for any other
    /// topic. A plugin with `subscription.tables` has one plan per table.
    pub table: Option<String>,
    /// Topic receiving rejected events and events out of attempts.
    pub dead_letter_topic: String,
    /// Which events of the topic the plugin receives.
    pub filter: EventFilter,
    /// Most events handed to the plugin in one call.
    pub batch_size: usize,
    /// Longest time to wait for a batch to fill before calling the plugin.
    pub max_wait: Duration,
    /// Deliveries of one event before it is dead-lettered.
    pub max_attempts: u32,
    /// Delay before the first redelivery after a retry.
    pub backoff_initial: Duration,
    /// Upper bound of the exponential redelivery delay.
    pub backoff_max: Duration,
    /// How long a delivery stays leased before the ledger redelivers it.
    pub ack_deadline: Duration,
}

impl SubscriptionPlan {
    /// The ledger subscription to create for this plan.
    pub fn spec(&self) -> SubscriptionSpec {
        SubscriptionSpec {
            name: self.subscription.clone(),
            topic: self.topic.clone(),
            attribute_filter: self.filter.attribute_equalities(),
            ack_deadline: self.ack_deadline,
            dead_letter_topic: self.dead_letter_topic.clone(),
        }
    }

    /// Delay before redelivering after the `attempt`-th failure: doubling, capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.backoff_initial
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

/// The longest plugin reason the host keeps (logs, dead letters, status); longer ones are
/// cut with a marker. A dead letter's attribute is cut further, to Pub/Sub's value limit.
pub const MAX_REASON_BYTES: usize = 4096;

/// `reason` cut to [`MAX_REASON_BYTES`], with a marker when cut.
fn capped(reason: String) -> String {
    if reason.len() <= MAX_REASON_BYTES {
        return reason;
    }
    let mut out =
        limits::truncate(&reason, MAX_REASON_BYTES - limits::TRUNCATED.len()).into_owned();
    out.push_str(limits::TRUNCATED);
    out
}

/// One subscription's loop.
pub struct Dispatcher {
    plan: Arc<SubscriptionPlan>,
    ledger: Arc<dyn Ledger>,
    decoder: Arc<Decoder>,
    current: CurrentHandler,
    counters: DispatchCounters,
}

/// What one instance's part of a batch needs, cloned into the part's task.
#[derive(Clone)]
struct Caller {
    plan: Arc<SubscriptionPlan>,
    ledger: Arc<dyn Ledger>,
    decoder: Arc<Decoder>,
    stats: Arc<PluginStats>,
}

/// The deliveries of one instance's part of a batch: the batch, shared, and the positions
/// of the part's events in it. The events themselves move into the call; what a retry one
/// by one or a lease extension needs is read back from here, so nothing is copied for them.
struct Part {
    batch: Arc<[Delivery]>,
    slots: Vec<usize>,
}

impl Part {
    /// The ack ids of the part's deliveries (for a lease extension).
    fn ack_ids(&self) -> Vec<String> {
        self.slots
            .iter()
            .map(|s| self.batch[*s].ack_id.clone())
            .collect()
    }
}

/// What the dispatcher decided for one delivery.
enum Outcome {
    Ack,
    Retry(String),
    DeadLetter(String),
}

impl Dispatcher {
    /// A dispatcher; call [`Dispatcher::run`]. It counts into `stats` (the plugin's) and,
    /// for a plan reading a table, into `stats`' counters of that table.
    pub fn new(
        plan: SubscriptionPlan,
        ledger: Arc<dyn Ledger>,
        decoder: Arc<Decoder>,
        current: CurrentHandler,
        stats: Arc<PluginStats>,
    ) -> Self {
        let counters = DispatchCounters::new(stats, plan.table.as_deref(), &plan.subscription);
        Dispatcher {
            plan: Arc::new(plan),
            ledger,
            decoder,
            current,
            counters,
        }
    }

    /// Creates the subscription and its topics (idempotent).
    pub async fn bootstrap(&self) -> Result<(), PortError> {
        self.ledger.ensure_topic(&self.plan.topic).await?;
        self.ledger
            .ensure_topic(&self.plan.dead_letter_topic)
            .await?;
        self.ledger.ensure_subscription(&self.plan.spec()).await
    }

    /// Runs until `shutdown` turns true or the plugin is removed. An in-flight batch is always
    /// finished and settled before returning (the drain).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let plugin = self.plan.plugin.clone();
        let mut failures = 0u32;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let Some(handler) = (self.current)() else {
                tracing::info!(plugin, "plugin removed: subscription loop stopped");
                break;
            };
            let pulling = Instant::now();
            let batch = tokio::select! {
                b = self.collect_batch() => b,
                _ = shutdown.changed() => continue,
            };
            self.counters.plugin.time_step(DispatchStep::Pull, pulling);
            match batch {
                Ok(deliveries) => {
                    failures = 0;
                    if !deliveries.is_empty() {
                        self.process(handler, deliveries).await;
                    }
                }
                Err(e) => {
                    failures += 1;
                    let delay = self.plan.backoff(failures.min(8));
                    tracing::warn!(plugin, error = %e, retry_in_ms = delay.as_millis() as u64, "pull failed");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }
    }

    /// Pulls until the batch is full or `max-wait` passed since its first message.
    async fn collect_batch(&self) -> Result<Vec<Delivery>, PortError> {
        let plan = &self.plan;
        let mut batch = self
            .ledger
            .pull(&plan.subscription, plan.batch_size, Duration::from_secs(1))
            .await?;
        if batch.is_empty() {
            return Ok(batch);
        }
        let started = Instant::now();
        while batch.len() < plan.batch_size {
            let left = plan.max_wait.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            let more = self
                .ledger
                .pull(&plan.subscription, plan.batch_size - batch.len(), left)
                .await?;
            if more.is_empty() {
                break;
            }
            batch.extend(more);
        }
        Ok(batch)
    }

    /// Decodes, filters, calls the plugin and settles every delivery of one batch.
    async fn process(&self, handler: Arc<dyn BatchHandler>, deliveries: Vec<Delivery>) {
        let plan = &self.plan;
        let deliveries: Arc<[Delivery]> = deliveries.into();
        let decoding = Instant::now();
        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(deliveries.len());
        let mut events = Vec::new();
        let mut event_slots = Vec::new();
        for (i, d) in deliveries.iter().enumerate() {
            // A replay aimed at another plugin (`ledgerhost replay --plugin`): not ours.
            if d.message
                .attributes
                .get(attr::REPLAY_FOR)
                .is_some_and(|p| *p != plan.plugin)
            {
                self.counters.filtered(1);
                outcomes.push(Some(Outcome::Ack));
                continue;
            }
            match self.decoder.decode_message(&d.message) {
                Ok(event) if plan.filter.matches(&event) => {
                    outcomes.push(None);
                    events.push(event);
                    event_slots.push(i);
                }
                Ok(_) => {
                    self.counters.filtered(1);
                    outcomes.push(Some(Outcome::Ack));
                }
                Err(e) => {
                    let reason = format!(
                        "malformed Avro record (table {}, event {}): {e}",
                        d.message.attributes.get(attr::TABLE).map_or("?", |s| s),
                        d.message.attributes.get(attr::EVENT_ID).map_or("?", |s| s),
                    );
                    tracing::error!(
                        plugin = plan.plugin,
                        reason,
                        "dead-lettering undecodable message"
                    );
                    outcomes.push(Some(Outcome::DeadLetter(reason)));
                }
            }
        }

        self.counters
            .plugin
            .time_step(DispatchStep::Decode, decoding);
        if !events.is_empty() {
            let calling = Instant::now();
            self.counters.events_in(events.len() as u64);
            let max_ts = events.iter().map(|e| e.commit_ts).max().unwrap_or(0);
            let dispositions = self
                .call_instances(&handler, &deliveries, &event_slots, events)
                .await;
            let keys = event_slots
                .iter()
                .map(|i| deliveries[*i].message.ordering_key.as_str());
            // Order per key: once an event of a key is retried, later events of that key in
            // this batch are retried too, so redelivery keeps commit order.
            let mut held: HashSet<&str> = HashSet::new();
            for ((slot, key), disposition) in event_slots.iter().zip(keys).zip(dispositions) {
                let attempt = deliveries[*slot].attempt;
                let outcome = match disposition {
                    Disposition::Ack if held.contains(key) => Outcome::Retry(
                        "held back: an earlier event of the same key is being retried".into(),
                    ),
                    Disposition::Ack => Outcome::Ack,
                    Disposition::Retry(reason) => {
                        if attempt >= plan.max_attempts {
                            Outcome::DeadLetter(format!(
                                "gave up after {attempt} attempts: {reason}"
                            ))
                        } else {
                            held.insert(key);
                            Outcome::Retry(reason)
                        }
                    }
                    Disposition::Reject(reason) => Outcome::DeadLetter(reason),
                };
                outcomes[*slot] = Some(outcome);
            }
            self.counters.handled_up_to(max_ts);
            self.counters.plugin.time_step(DispatchStep::Call, calling);
        }
        let settling = Instant::now();
        self.settle(&deliveries, outcomes).await;
        self.counters
            .plugin
            .time_step(DispatchStep::Settle, settling);
    }

    fn caller(&self) -> Caller {
        Caller {
            plan: self.plan.clone(),
            ledger: self.ledger.clone(),
            decoder: self.decoder.clone(),
            stats: self.counters.plugin.clone(),
        }
    }

    /// One disposition per event, in order: the events (event i from delivery `slots[i]` of
    /// `batch`) split among the handler's instances by ordering key, the parts run
    /// concurrently in tasks of their own, each handled as [`Caller::call`] does. A part
    /// whose task died is retried whole.
    async fn call_instances(
        &self,
        handler: &Arc<dyn BatchHandler>,
        batch: &Arc<[Delivery]>,
        slots: &[usize],
        events: Vec<Event>,
    ) -> Vec<Disposition> {
        let k = handler.instances().max(1);
        if k == 1 {
            let part = Part {
                batch: batch.clone(),
                slots: slots.to_vec(),
            };
            return self.caller().call(handler, 0, part, events).await;
        }
        let n = events.len();
        // parts[i]: positions among the events, slots in the batch and events of instance i,
        // each in batch order.
        let mut parts: Vec<(Vec<usize>, Vec<usize>, Vec<Event>)> =
            (0..k).map(|_| Default::default()).collect();
        for (position, event) in events.into_iter().enumerate() {
            let slot = slots[position];
            let key = &batch[slot].message.ordering_key;
            let part = &mut parts[instances::instance_of(key, position, k)];
            part.0.push(position);
            part.1.push(slot);
            part.2.push(event);
        }
        // A JoinSet aborts the parts when the dispatcher's task is dropped mid-batch: nothing
        // of an abandoned batch is settled, so the ledger redelivers all of it.
        let mut tasks = JoinSet::new();
        let mut positions_of = HashMap::new();
        for (instance, (positions, slots, events)) in parts.into_iter().enumerate() {
            if events.is_empty() {
                continue;
            }
            let caller = self.caller();
            let handler = handler.clone();
            let part = Part {
                batch: batch.clone(),
                slots,
            };
            let task =
                tasks.spawn(async move { caller.call(&handler, instance, part, events).await });
            positions_of.insert(task.id(), positions);
        }
        let mut out: Vec<Option<Disposition>> = vec![None; n];
        while let Some(joined) = tasks.join_next_with_id().await {
            let (id, answer) = match joined {
                Ok((id, dispositions)) => (id, Ok(dispositions)),
                Err(e) => (e.id(), Err(e)),
            };
            let positions = positions_of.remove(&id).unwrap_or_default();
            match answer {
                Ok(dispositions) => {
                    for (p, d) in positions.into_iter().zip(dispositions) {
                        out[p] = Some(d);
                    }
                }
                Err(e) => {
                    tracing::error!(plugin = self.plan.plugin, error = %e, events = positions.len(), "an instance's part of the batch failed; retrying it");
                    let reason = format!("the instance handling this event failed: {e}");
                    for p in positions {
                        out[p] = Some(Disposition::Retry(reason.clone()));
                    }
                }
            }
        }
        out.into_iter()
            .map(|d| d.unwrap_or_else(|| Disposition::Retry("no disposition".into())))
            .collect()
    }
}

impl Caller {
    /// Calls instance `instance` with the lease of the part's deliveries kept alive. If the
    /// whole batch fails (trap, deadline), its events are decoded again from the part's
    /// deliveries and retried one by one on the same instance, so a single poison event
    /// cannot hold the others (and the success path keeps no copy of the batch).
    async fn call(
        &self,
        handler: &Arc<dyn BatchHandler>,
        instance: usize,
        part: Part,
        events: Vec<Event>,
    ) -> Vec<Disposition> {
        let n = events.len();
        let started = Instant::now();
        let first = self
            .with_lease(&part, handler.handle_on(instance, events))
            .await;
        self.stats
            .observe_batch(started.elapsed().as_micros() as u64);
        match first {
            Ok(d) if d.len() == n => d,
            Ok(d) => {
                let reason = format!(
                    "plugin {} returned {} dispositions for {n} events",
                    self.plan.plugin,
                    d.len()
                );
                tracing::error!(
                    plugin = self.plan.plugin,
                    reason,
                    "bad answer; retrying the batch"
                );
                vec![Disposition::Retry(reason); n]
            }
            Err(e) if n == 1 => {
                tracing::warn!(plugin = self.plan.plugin, error = %e, "plugin call failed");
                // The reason travels with the delivery (dead letter, status) as text.
                vec![Disposition::Retry(e.to_string())]
            }
            Err(e) => {
                tracing::warn!(plugin = self.plan.plugin, error = %e, events = n, "batch failed; isolating the failing events one by one");
                let mut out = Vec::with_capacity(n);
                for slot in &part.slots {
                    // It decoded a moment ago; decoding is deterministic.
                    let event = match self.decoder.decode_message(&part.batch[*slot].message) {
                        Ok(event) => event,
                        Err(e) => {
                            out.push(Disposition::Retry(e.to_string()));
                            continue;
                        }
                    };
                    let one = self
                        .with_lease(&part, handler.handle_on(instance, vec![event]))
                        .await;
                    out.push(match one {
                        Ok(mut d) if d.len() == 1 => d.remove(0),
                        Ok(_) => Disposition::Retry("wrong disposition count".into()),
                        Err(e) => Disposition::Retry(e.to_string()),
                    });
                }
                out
            }
        }
    }

    /// Runs `fut` while extending the lease of the part's deliveries so a slow batch is not
    /// redelivered.
    async fn with_lease<F, T>(&self, part: &Part, fut: F) -> T
    where
        F: std::future::Future<Output = T>,
    {
        let every = self.plan.ack_deadline / 3;
        let keep_alive = async {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = self
                    .ledger
                    .extend(
                        &self.plan.subscription,
                        &part.ack_ids(),
                        self.plan.ack_deadline,
                    )
                    .await
                {
                    tracing::warn!(plugin = self.plan.plugin, error = %e, "cannot extend the lease of a running batch");
                }
            }
        };
        tokio::select! {
            out = fut => out,
            _ = keep_alive => unreachable!("the keep-alive loop never ends"),
        }
    }
}

impl Dispatcher {
    /// Applies outcomes: dead letters first (published, then acked), then acks, then nacks.
    async fn settle(&self, deliveries: &[Delivery], outcomes: Vec<Option<Outcome>>) {
        let plan = &self.plan;
        let mut acks = Vec::new();
        let mut nacks: BTreeMap<Duration, Vec<String>> = BTreeMap::new();
        let mut dead = Vec::new();
        for (d, outcome) in deliveries.iter().zip(outcomes) {
            match outcome.unwrap_or(Outcome::Retry("no outcome".into())) {
                Outcome::Ack => acks.push(d.ack_id.clone()),
                Outcome::Retry(reason) => {
                    let reason = capped(reason);
                    tracing::debug!(
                        plugin = plan.plugin,
                        event = d.message.attributes.get(attr::EVENT_ID).map_or("?", |s| s),
                        attempt = d.attempt,
                        reason,
                        "retry"
                    );
                    nacks
                        .entry(plan.backoff(d.attempt))
                        .or_default()
                        .push(d.ack_id.clone());
                }
                Outcome::DeadLetter(reason) => dead.push((d, capped(reason))),
            }
        }
        if !dead.is_empty() {
            let messages: Vec<Message> = dead
                .iter()
                .map(|(d, reason)| {
                    let mut m = d.message.clone();
                    // A plugin's reason may be megabytes; an attribute value is 1 024 bytes.
                    m.attributes.insert(
                        attr::DEAD_LETTER_REASON.into(),
                        limits::fit_attribute_value(reason).into_owned(),
                    );
                    m.attributes.insert(
                        attr::DEAD_LETTER_SUBSCRIPTION.into(),
                        plan.subscription.clone(),
                    );
                    m.attributes
                        .insert(attr::DEAD_LETTER_ATTEMPTS.into(), d.attempt.to_string());
                    m
                })
                .collect();
            match self.ledger.publish(&plan.dead_letter_topic, messages).await {
                Ok(()) => {
                    for (d, reason) in &dead {
                        tracing::warn!(
                            plugin = plan.plugin,
                            event = d.message.attributes.get(attr::EVENT_ID).map_or("?", |s| s),
                            reason,
                            topic = plan.dead_letter_topic,
                            "dead-lettered"
                        );
                        self.counters
                            .plugin
                            .note_dead_letter(crate::status::DeadLetterStatus {
                                plugin: plan.plugin.clone(),
                                event_id: d
                                    .message
                                    .attributes
                                    .get(attr::EVENT_ID)
                                    .cloned()
                                    .unwrap_or_default(),
                                reason: reason.clone(),
                                attempts: d.attempt,
                                at_micros: crate::metrics::now_micros(),
                            });
                        acks.push(d.ack_id.clone());
                    }
                    self.counters.dead_lettered(dead.len() as u64);
                }
                Err(e) => {
                    // Not acked: the ledger redelivers and we try again; nothing is dropped.
                    tracing::error!(plugin = plan.plugin, error = %e, "cannot publish to the dead-letter topic; will retry");
                }
            }
        }
        let acked = acks.len() as u64;
        if !acks.is_empty() {
            if let Err(e) = self.ledger.ack(&plan.subscription, &acks).await {
                tracing::warn!(plugin = plan.plugin, error = %e, "ack failed; events will be redelivered");
            } else {
                self.counters.acked(acked);
            }
        }
        for (delay, ids) in nacks {
            self.counters.retried(ids.len() as u64);
            if let Err(e) = self.ledger.nack(&plan.subscription, &ids, delay).await {
                tracing::warn!(plugin = plan.plugin, error = %e, "nack failed; the lease will expire instead");
            }
        }
    }
}
