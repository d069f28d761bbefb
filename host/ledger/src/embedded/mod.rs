//! The embedded ledger: durable topics and subscriptions in one SQLite file.
//!
//! Why SQLite: one file, transactions, and WAL mode make a publish durable against a crash
//! of the process (SIGKILL) at the cost of one write transaction per `publish` call, which
//! amortises over a batch. With `synchronous = NORMAL` a power loss may drop the last
//! transactions; process crashes never do. The poller's progress (its watermark) is written
//! in the transaction of the page it covers ([`Ledger::publish_page`], table `progress`), so
//! whatever a power cut drops, the progress it drops with it: it never stands past messages
//! the ledger lost.
//!
//! Layout (1, `schema`): the log is one append-only sequence of message ids for all
//! topics, stored a page at a time (`page`): the messages of one publish are one row, keyed
//! by the id of the first, so a page of 5 000 costs SQLite one record, not 5 000. An Avro
//! container's header (the schema JSON, the same for every message of a schema) is stored
//! once in `headers` and a record holds the rest; attributes are one binary blob
//! (`layout`). A file of layout 0 (a row per message) is migrated when opened, message ids
//! kept; a file of a newer layout is refused. Each subscription has a durable cursor (every
//! message below it is settled), the set of acked ids at or above it, and the attempt counts
//! of nacked messages. Leases live in memory: after a restart every unacked message is
//! delivered again (at least once).
//!
//! Order per key: a message is held back while an earlier message of the same ordering key is
//! leased or waiting for its retry; other keys flow. One pull may hand out several messages of
//! a key, in order. The ordering key is the one the publisher chose (the poller's ordering
//! shard, as on Pub/Sub), so a poison event holds back its shard here as it does there.
//!
//! Limits: a message Pub/Sub would refuse ([`limits::check_message`]) is refused here too,
//! with the same rule in the error.
//!
//! Existing subscriptions: as on Pub/Sub ([`crate::drift`]), a changed ack deadline or
//! dead-letter topic is applied, a changed topic or filter refused naming what differs.
//!
//! Dead letters: each subscription gets `<name>.dead-letters` on its dead-letter topic,
//! starting at that topic's oldest retained message; [`Ledger::dead_letters`] reads its
//! unsettled messages from the file (so another process, the CLI, sees what the host wrote)
//! and [`Ledger::redrive`] appends the copies to the subscription's topic and settles them
//! in one transaction.
//!
//! Retention: messages older than the retention are deleted, acked or not (as Pub/Sub does),
//! a page at a time; the newest page of each topic is always kept so
//! [`Ledger::last_message`] keeps working.
//!
//! The parts: `state` (what lives in memory), `schema` (the file's tables and their
//! migration), `page` (a page's bytes), `layout` (headers and attributes in compact form),
//! `write` and `read` (the log), `subscriptions`, `delivery`
//! (leases, acks, nacks), `dead_letters`, `retention`. This file holds the ledger's
//! handle and the [`Ledger`] port, which runs each call on the blocking pool under one lock.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ledgerhost_core::ledger::{
    DeadLetter, Delivery, Ledger, Message, Progress, RedriveSelection, Retained, SubscriptionSpec,
    limits,
};
use ledgerhost_core::{PortError, PortResult};
use tokio::sync::Notify;

use state::{BACKEND, Inner};

mod dead_letters;
mod delivery;
mod layout;
mod page;
mod read;
mod retention;
mod schema;
mod state;
mod subscriptions;
mod write;

/// Settings of the embedded ledger.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// How long messages are kept.
    pub retention: Duration,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// A durable ledger in `<dir>/ledger.db`.
pub struct EmbeddedLedger {
    inner: Arc<Mutex<Inner>>,
    notify: Arc<Notify>,
}

impl EmbeddedLedger {
    /// Opens (or creates) the ledger in `dir`.
    pub fn open(dir: &Path, options: EmbeddedOptions) -> PortResult<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            PortError::unavailable(BACKEND, format!("cannot create {}: {e}", dir.display()))
        })?;
        let path = dir.join("ledger.db");
        let conn = rusqlite::Connection::open(&path).map_err(|e| {
            PortError::unavailable(BACKEND, format!("cannot open {}: {e}", path.display()))
        })?;
        schema::prepare(&conn, &path)?;
        let subs = subscriptions::load(&conn).map_err(|e| {
            PortError::unavailable(BACKEND, format!("cannot read subscriptions: {e}"))
        })?;
        Ok(EmbeddedLedger {
            inner: Arc::new(Mutex::new(Inner {
                conn,
                subs,
                retention: options.retention,
                last_cleanup: Instant::now(),
                headers: Default::default(),
            })),
            notify: Arc::new(Notify::new()),
        })
    }

    /// Runs `f` on the ledger's state on the blocking pool (SQLite calls block).
    async fn run<T, F>(&self, f: F) -> PortResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Inner) -> PortResult<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = inner.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| PortError::unavailable(BACKEND, format!("ledger task failed: {e}")))?
    }

    /// Checks `messages` against Pub/Sub's limits, then appends them (and the progress
    /// record) in one transaction ([`write::append_page`]) and wakes the pullers.
    async fn write_page(
        &self,
        topic: &str,
        messages: Vec<Message>,
        progress: Option<Progress>,
    ) -> PortResult<()> {
        // Pub/Sub's limits hold here too, so what works on a laptop works in production.
        for m in &messages {
            limits::check_message(m).map_err(|e| PortError::Invalid {
                backend: BACKEND,
                message: format!("publishing to topic `{topic}`: {e}"),
            })?;
        }
        let any = !messages.is_empty();
        let topic = topic.to_string();
        self.run(move |inner| {
            write::append_page(inner, &topic, &messages, progress.as_ref())?;
            inner.cleanup();
            Ok(())
        })
        .await?;
        if any {
            self.notify.notify_waiters();
        }
        Ok(())
    }
}

#[async_trait]
impl Ledger for EmbeddedLedger {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn ensure_topic(&self, topic: &str) -> PortResult<()> {
        let topic = topic.to_string();
        self.run(move |inner| {
            inner
                .conn
                .execute("INSERT OR IGNORE INTO topics (name) VALUES (?1)", [&topic])
                .map_err(|e| PortError::unavailable(BACKEND, e))?;
            Ok(())
        })
        .await
    }

    async fn ensure_subscription(&self, spec: &SubscriptionSpec) -> PortResult<()> {
        let spec = spec.clone();
        self.run(move |inner| subscriptions::ensure(inner, &spec))
            .await
    }

    async fn publish(&self, topic: &str, messages: Vec<Message>) -> PortResult<()> {
        if messages.is_empty() {
            return Ok(());
        }
        self.write_page(topic, messages, None).await
    }

    async fn publish_page(
        &self,
        topic: &str,
        messages: Vec<Message>,
        progress: &Progress,
    ) -> PortResult<bool> {
        self.write_page(topic, messages, Some(progress.clone()))
            .await?;
        Ok(true)
    }

    async fn progress(&self, table: &str) -> PortResult<Option<String>> {
        let table = table.to_string();
        self.run(move |inner| read::progress(&inner.conn, &table))
            .await
    }

    async fn pull(
        &self,
        subscription: &str,
        max: usize,
        wait: Duration,
    ) -> PortResult<Vec<Delivery>> {
        let deadline = Instant::now() + wait;
        loop {
            // Registered before looking, so a publish in between is not missed.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let name = subscription.to_string();
            let (batch, wake) = self
                .run(move |inner| {
                    let batch = inner.lease(&name, max.max(1))?;
                    Ok((batch, inner.next_wake(&name)))
                })
                .await?;
            if !batch.is_empty() {
                return Ok(batch);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let until = wake.map_or(deadline, |w| w.min(deadline));
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(until.into()) => {}
            }
        }
    }

    async fn ack(&self, subscription: &str, ack_ids: &[String]) -> PortResult<()> {
        let ids = delivery::parse_ids(ack_ids)?;
        let name = subscription.to_string();
        self.run(move |inner| inner.ack(&name, ids)).await
    }

    async fn nack(
        &self,
        subscription: &str,
        ack_ids: &[String],
        delay: Duration,
    ) -> PortResult<()> {
        let ids = delivery::parse_ids(ack_ids)?;
        let name = subscription.to_string();
        self.run(move |inner| inner.nack(&name, ids, delay)).await?;
        self.notify.notify_waiters();
        Ok(())
    }

    async fn extend(
        &self,
        subscription: &str,
        ack_ids: &[String],
        deadline: Duration,
    ) -> PortResult<()> {
        let ids = delivery::parse_ids(ack_ids)?;
        let name = subscription.to_string();
        self.run(move |inner| inner.extend(&name, ids, deadline))
            .await
    }

    async fn list_topics(&self) -> PortResult<Vec<String>> {
        self.run(|inner| read::topics(&inner.conn)).await
    }

    async fn read_retained(
        &self,
        topic: &str,
        after: i64,
        max: usize,
    ) -> PortResult<Vec<Retained>> {
        let topic = topic.to_string();
        self.run(move |inner| read::retained(&inner.conn, &topic, after, max))
            .await
    }

    async fn retained_count(&self, topic: &str) -> PortResult<u64> {
        let topic = topic.to_string();
        self.run(move |inner| read::retained_count(&inner.conn, &topic))
            .await
    }

    async fn last_message(&self, topic: &str) -> PortResult<Option<Message>> {
        let topic = topic.to_string();
        self.run(move |inner| read::last_message(&inner.conn, &topic))
            .await
    }

    async fn dead_letters(&self, subscription: &str, max: usize) -> PortResult<Vec<DeadLetter>> {
        let subscription = subscription.to_string();
        self.run(move |inner| {
            Ok(
                dead_letters::unsettled_dead_letters(&inner.conn, &subscription, max)?
                    .into_iter()
                    .map(|(_, d)| d)
                    .collect(),
            )
        })
        .await
    }

    async fn redrive(
        &self,
        subscription: &str,
        selection: &RedriveSelection,
        extra: &BTreeMap<String, String>,
    ) -> PortResult<Vec<DeadLetter>> {
        let (subscription, selection, extra) =
            (subscription.to_string(), selection.clone(), extra.clone());
        let redriven = self
            .run(move |inner| dead_letters::redrive(inner, &subscription, &selection, &extra))
            .await?;
        if !redriven.is_empty() {
            self.notify.notify_waiters();
        }
        Ok(redriven)
    }
}

#[cfg(test)]
mod tests;
