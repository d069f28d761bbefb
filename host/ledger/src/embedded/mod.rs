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
//! Concurrency: two connections, each behind its own lock (`state`). The writer writes
//! pages, acks, nacks and subscriptions; the reader (read-only) fills the windows, leases
//! and serves the reads, seeing the last committed state (WAL) while a page is written, so
//! a pull never waits for a page write. An ack updates the window at once and is recorded
//! before it returns when the writer is free; while a page is being written it is queued
//! and recorded as soon as that write ends, so an ack never waits behind a page either (a
//! crash in those milliseconds redelivers the messages: at least once, as on Pub/Sub).
//!
//! The parts: `state` (the two halves), `schema` (the file's tables and their migration),
//! `page` (a page's bytes), `layout` (headers and attributes in compact form), `write` and
//! `read` (the log), `subscriptions`, `delivery` (windows and leases, on the reader),
//! `settle` (acks and nacks recorded, on the writer), `dead_letters`, `retention`. This
//! file holds the ledger's handle and the [`Ledger`] port, which runs each call on the
//! blocking pool.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ledgerhost_core::ledger::{
    Batch, DeadLetter, Delivery, Ledger, Message, Progress, RedriveSelection, Retained,
    SubscriptionSpec, limits,
};
use ledgerhost_core::{PortError, PortResult};
use tokio::sync::Notify;

use state::{AckRecord, BACKEND, Reader, Sides, Writer};
use write::Appended;

mod dead_letters;
mod delivery;
mod layout;
mod page;
mod read;
mod retention;
mod schema;
mod settle;
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
    sides: Arc<Sides>,
    notify: Arc<Notify>,
}

impl EmbeddedLedger {
    /// Opens (or creates) the ledger in `dir`.
    pub fn open(dir: &Path, options: EmbeddedOptions) -> PortResult<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            PortError::unavailable(BACKEND, format!("cannot create {}: {e}", dir.display()))
        })?;
        let path = dir.join("ledger.db");
        let connect = || {
            rusqlite::Connection::open(&path).map_err(|e| {
                PortError::unavailable(BACKEND, format!("cannot open {}: {e}", path.display()))
            })
        };
        let conn = connect()?;
        schema::prepare(&conn, &path)?;
        let subs = subscriptions::load(&conn).map_err(|e| {
            PortError::unavailable(BACKEND, format!("cannot read subscriptions: {e}"))
        })?;
        // The reading half's own connection: it reads the last committed state while a
        // page is being written (WAL), and can write nothing.
        let reader = connect()?;
        schema::prepare_reader(&reader, &path)?;
        let writer = Writer {
            conn,
            retention: options.retention,
            last_cleanup: Instant::now(),
            headers: Default::default(),
            page: Vec::new(),
        };
        Ok(EmbeddedLedger {
            sides: Arc::new(Sides::new(writer, Reader { conn: reader, subs })),
            notify: Arc::new(Notify::new()),
        })
    }

    /// Runs `f` on the ledger's halves on the blocking pool (SQLite calls block); `f` takes
    /// the locks it needs ([`Sides`]).
    async fn run<T, F>(&self, f: F) -> PortResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Sides) -> PortResult<T> + Send + 'static,
    {
        let sides = self.sides.clone();
        tokio::task::spawn_blocking(move || f(&sides))
            .await
            .map_err(|e| PortError::unavailable(BACKEND, format!("ledger task failed: {e}")))?
    }

    /// Appends `appended` (and the progress record) in one transaction
    /// ([`write::append_page`]) and wakes the pullers. Messages are first checked against
    /// Pub/Sub's limits; a batch was checked as it was built.
    async fn write_page(
        &self,
        topic: &str,
        appended: Appended,
        progress: Option<Progress>,
    ) -> PortResult<()> {
        // Pub/Sub's limits hold here too, so what works on a laptop works in production.
        if let Appended::Messages(messages) = &appended {
            for m in messages {
                limits::check_message(m).map_err(|e| PortError::Invalid {
                    backend: BACKEND,
                    message: format!("publishing to topic `{topic}`: {e}"),
                })?;
            }
        }
        let any = !appended.is_empty();
        let topic = topic.to_string();
        self.run(move |sides| {
            let mut writer = sides.writer();
            write::append_page(&mut writer, &topic, &appended, progress.as_ref())?;
            writer.cleanup();
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
        self.run(move |sides| {
            sides
                .writer()
                .conn
                .execute("INSERT OR IGNORE INTO topics (name) VALUES (?1)", [&topic])
                .map_err(|e| PortError::unavailable(BACKEND, e))?;
            Ok(())
        })
        .await
    }

    async fn ensure_subscription(&self, spec: &SubscriptionSpec) -> PortResult<()> {
        let spec = spec.clone();
        self.run(move |sides| {
            let mut writer = sides.writer();
            subscriptions::ensure(&mut writer, &mut sides.reader(), &spec)
        })
        .await
    }

    async fn publish(&self, topic: &str, messages: Vec<Message>) -> PortResult<()> {
        if messages.is_empty() {
            return Ok(());
        }
        self.write_page(topic, Appended::Messages(messages), None)
            .await
    }

    async fn publish_page(
        &self,
        topic: &str,
        page: Batch,
        progress: &Progress,
    ) -> PortResult<bool> {
        self.write_page(topic, Appended::Batch(page), Some(progress.clone()))
            .await?;
        Ok(true)
    }

    async fn progress(&self, table: &str) -> PortResult<Option<String>> {
        let table = table.to_string();
        self.run(move |sides| read::progress(&sides.reader().conn, &table))
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
                .run(move |sides| {
                    let mut reader = sides.reader();
                    let batch = reader.lease(&name, max.max(1))?;
                    Ok((batch, reader.next_wake(&name)))
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
        self.run(move |sides| {
            // The window first (pulls go on meanwhile), then the record: now if the writer
            // is free, else as soon as the page being written lets it go.
            let (ids, cursor) = {
                let mut reader = sides.reader();
                (reader.ack(&name, ids)?, reader.cursor(&name)?)
            };
            sides.queue_acks(AckRecord {
                subscription: name,
                ids,
                cursor,
            })
        })
        .await
    }

    async fn nack(
        &self,
        subscription: &str,
        ack_ids: &[String],
        delay: Duration,
    ) -> PortResult<()> {
        let ids = delivery::parse_ids(ack_ids)?;
        let name = subscription.to_string();
        self.run(move |sides| {
            let attempts = sides.reader().nack(&name, ids, delay)?;
            sides.writer().record_nacks(&name, &attempts)
        })
        .await?;
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
        self.run(move |sides| sides.reader().extend(&name, ids, deadline))
            .await
    }

    async fn list_topics(&self) -> PortResult<Vec<String>> {
        self.run(|sides| read::topics(&sides.reader().conn)).await
    }

    async fn read_retained(
        &self,
        topic: &str,
        after: i64,
        max: usize,
    ) -> PortResult<Vec<Retained>> {
        let topic = topic.to_string();
        self.run(move |sides| read::retained(&sides.reader().conn, &topic, after, max))
            .await
    }

    async fn retained_count(&self, topic: &str) -> PortResult<u64> {
        let topic = topic.to_string();
        self.run(move |sides| read::retained_count(&sides.reader().conn, &topic))
            .await
    }

    async fn last_message(&self, topic: &str) -> PortResult<Option<Message>> {
        let topic = topic.to_string();
        self.run(move |sides| read::last_message(&sides.reader().conn, &topic))
            .await
    }

    async fn dead_letters(&self, subscription: &str, max: usize) -> PortResult<Vec<DeadLetter>> {
        let subscription = subscription.to_string();
        self.run(move |sides| {
            Ok(
                dead_letters::unsettled_dead_letters(&sides.reader().conn, &subscription, max)?
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
            .run(move |sides| {
                dead_letters::redrive(&mut sides.writer(), &subscription, &selection, &extra)
            })
            .await?;
        if !redriven.is_empty() {
            self.notify.notify_waiters();
        }
        Ok(redriven)
    }
}

#[cfg(test)]
mod tests;
