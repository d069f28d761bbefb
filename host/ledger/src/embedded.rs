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
//! Layout: `messages` is one append-only log for all topics (the row id is the global
//! sequence). A row is compact ([`layout`]): an Avro container's header (the schema JSON,
//! the same for every message of a schema) is stored once in `headers` and the row holds
//! the rest, attributes are one binary blob; rows of a file written before that keep their
//! whole data and JSON attributes, and read back the same. Each subscription has a durable cursor (every message below it is settled),
//! the set of acked ids at or above it, and the attempt counts of nacked messages. Leases
//! live in memory: after a restart every unacked message is delivered again (at least once).
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
//! Retention: messages older than the retention are deleted, acked or not (as Pub/Sub does);
//! the newest message of each topic is always kept so [`Ledger::last_message`] keeps working.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ledgerhost_core::ledger::{
    DeadLetter, Delivery, Ledger, Message, Progress, RedriveSelection, Retained, SubscriptionSpec,
    dead_letter_subscription, limits,
};
use ledgerhost_core::{PortError, PortResult};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::Notify;

use crate::drift;

mod layout;

const BACKEND: &str = "embedded";
/// Messages kept in memory per subscription ahead of delivery.
const WINDOW: usize = 10_000;

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

struct Pending {
    message: Message,
    /// Deliveries so far.
    attempt: u32,
    /// Leased until then (`None`: not leased).
    leased_until: Option<Instant>,
    /// Not deliverable before then (after a nack).
    visible_at: Instant,
}

struct SubState {
    topic: String,
    filter: BTreeMap<String, String>,
    ack_deadline: Duration,
    /// Next message id to load from the log.
    next_load: i64,
    /// Loaded, unsettled messages by id.
    pending: BTreeMap<i64, Pending>,
    /// Durable attempt counts of nacked messages not yet loaded (after a restart).
    nacked_attempts: HashMap<i64, u32>,
    /// Acked ids at or above the durable cursor (loaded at open, to skip them).
    acked: HashSet<i64>,
}

struct Inner {
    conn: Connection,
    subs: HashMap<String, SubState>,
    retention: Duration,
    last_cleanup: Instant,
    /// Ids of the stored headers (`headers` table) written or looked up so far.
    headers: HashMap<Vec<u8>, i64>,
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

impl EmbeddedLedger {
    /// Opens (or creates) the ledger in `dir`.
    pub fn open(dir: &Path, options: EmbeddedOptions) -> PortResult<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            PortError::unavailable(BACKEND, format!("cannot create {}: {e}", dir.display()))
        })?;
        let path = dir.join("ledger.db");
        let conn = Connection::open(&path).map_err(|e| {
            PortError::unavailable(BACKEND, format!("cannot open {}: {e}", path.display()))
        })?;
        let setup = || -> rusqlite::Result<()> {
            conn.busy_timeout(Duration::from_secs(30))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS topics (name TEXT PRIMARY KEY);
                 CREATE TABLE IF NOT EXISTS messages (
                     id INTEGER PRIMARY KEY AUTOINCREMENT,
                     topic TEXT NOT NULL,
                     ordering_key TEXT NOT NULL,
                     attributes TEXT NOT NULL,
                     data BLOB NOT NULL,
                     published_at INTEGER NOT NULL);
                 CREATE INDEX IF NOT EXISTS messages_by_topic ON messages (topic, id);
                 CREATE TABLE IF NOT EXISTS subscriptions (
                     name TEXT PRIMARY KEY,
                     topic TEXT NOT NULL,
                     filter TEXT NOT NULL,
                     ack_deadline_ms INTEGER NOT NULL,
                     dead_letter_topic TEXT NOT NULL,
                     cursor INTEGER NOT NULL);
                 CREATE TABLE IF NOT EXISTS acks (sub TEXT NOT NULL, id INTEGER NOT NULL,
                     PRIMARY KEY (sub, id)) WITHOUT ROWID;
                 CREATE TABLE IF NOT EXISTS nacks (sub TEXT NOT NULL, id INTEGER NOT NULL,
                     attempt INTEGER NOT NULL, PRIMARY KEY (sub, id)) WITHOUT ROWID;
                 -- The poller's progress per source table, written in the transaction of
                 -- the page it covers (Ledger::publish_page).
                 CREATE TABLE IF NOT EXISTS progress (tbl TEXT PRIMARY KEY,
                     record TEXT NOT NULL);
                 -- What the messages of a schema share, once (layout::header_len).
                 CREATE TABLE IF NOT EXISTS headers (id INTEGER PRIMARY KEY,
                     bytes BLOB NOT NULL UNIQUE);",
            )?;
            // A file written before `headers` existed: its rows keep their whole data
            // (header NULL) and JSON attributes, which the readers still understand.
            let has_header: bool = conn
                .prepare("SELECT 1 FROM pragma_table_info('messages') WHERE name = 'header'")?
                .exists([])?;
            if !has_header {
                conn.execute_batch("ALTER TABLE messages ADD COLUMN header INTEGER")?;
            }
            Ok(())
        };
        setup().map_err(|e| {
            PortError::unavailable(BACKEND, format!("cannot prepare {}: {e}", path.display()))
        })?;
        let subs = load_subscriptions(&conn).map_err(|e| {
            PortError::unavailable(BACKEND, format!("cannot read subscriptions: {e}"))
        })?;
        Ok(EmbeddedLedger {
            inner: Arc::new(Mutex::new(Inner {
                conn,
                subs,
                retention: options.retention,
                last_cleanup: Instant::now(),
                headers: HashMap::new(),
            })),
            notify: Arc::new(Notify::new()),
        })
    }

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
}

impl EmbeddedLedger {
    /// Appends `messages` to `topic` and, when given, replaces the table's progress record,
    /// in one transaction: both are on disk after a crash, or neither (SQLite's WAL commits
    /// a transaction atomically; `synchronous = NORMAL` may lose the last ones on a power
    /// cut, but then it loses the progress with the messages it covers).
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
            if !topic_exists(&inner.conn, &topic)? {
                return Err(PortError::not_found(
                    BACKEND,
                    format!("topic `{topic}` (create it first with ensure_topic)"),
                ));
            }
            let now = now_micros();
            let Inner { conn, headers, .. } = &mut *inner;
            let tx = conn
                .transaction()
                .map_err(|e| PortError::unavailable(BACKEND, e))?;
            let added = {
                let added = insert_messages(&tx, headers, &topic, &messages, now)?;
                if let Some(p) = &progress {
                    tx.prepare_cached(
                        "INSERT INTO progress (tbl, record) VALUES (?1, ?2)
                         ON CONFLICT (tbl) DO UPDATE SET record = excluded.record",
                    )
                    .and_then(|mut stmt| stmt.execute(params![p.table, p.record]))
                    .map_err(|e| PortError::unavailable(BACKEND, e))?;
                }
                added
            };
            tx.commit()
                .map_err(|e| PortError::unavailable(BACKEND, e))?;
            headers.extend(added);
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

/// Appends `messages` to `topic`'s log inside `tx`, stamped `now` (µs), in the compact
/// layout ([`layout`]): each message's container header by id (`headers` caches them),
/// the rest of its data, its attributes as one blob. Returns the headers it stored, for
/// the caller to cache once the transaction commits (a rolled-back id must not be reused).
fn insert_messages(
    tx: &rusqlite::Transaction<'_>,
    headers: &HashMap<Vec<u8>, i64>,
    topic: &str,
    messages: &[Message],
    now: i64,
) -> PortResult<NewHeaders> {
    let err = |e: rusqlite::Error| PortError::unavailable(BACKEND, e);
    let mut added: NewHeaders = Vec::new();
    // The messages of a page share one header: compared with the last one first, which
    // spares hashing it for every message.
    let mut last: Option<(&[u8], i64)> = None;
    let mut rows = Vec::with_capacity(messages.len());
    for m in messages {
        let (header, body) = match layout::header_len(&m.data) {
            Some(n) => {
                let bytes = &m.data[..n];
                let id = match last.filter(|(b, _)| *b == bytes) {
                    Some((_, id)) => id,
                    None => match headers.get(bytes) {
                        Some(id) => *id,
                        None => match added.iter().find(|(b, _)| b == bytes) {
                            Some((_, id)) => *id,
                            None => {
                                let id = header_id(tx, bytes).map_err(err)?;
                                added.push((bytes.to_vec(), id));
                                id
                            }
                        },
                    },
                };
                last = Some((bytes, id));
                (Some(id), &m.data[n..])
            }
            None => (None, &m.data[..]),
        };
        rows.push((m, header, body, layout::encode_attributes(&m.attributes)));
    }
    // Many rows per statement: SQLite's per-statement work (bind, step, reset) was a
    // large share of a page's write.
    for chunk in rows.chunks(INSERT_ROWS) {
        let mut sql = String::from(
            "INSERT INTO messages (topic, ordering_key, attributes, data, published_at, header)
             VALUES ",
        );
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 {
                "(?, ?, ?, ?, ?, ?)"
            } else {
                ", (?, ?, ?, ?, ?, ?)"
            });
        }
        let mut stmt = tx.prepare_cached(&sql).map_err(err)?;
        let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(chunk.len() * 6);
        for (m, header, body, attrs) in chunk {
            values.extend_from_slice(&[
                &topic as &dyn rusqlite::ToSql,
                &m.ordering_key,
                attrs,
                body,
                &now,
                header,
            ]);
        }
        stmt.execute(values.as_slice()).map_err(err)?;
    }
    Ok(added)
}

/// Rows per `INSERT` statement (6 parameters each, far below SQLite's limit of 32 766).
const INSERT_ROWS: usize = 100;

/// Headers stored by a transaction not yet committed, with their ids.
type NewHeaders = Vec<(Vec<u8>, i64)>;

/// The id of a stored header, inserting it when new.
fn header_id(tx: &rusqlite::Transaction<'_>, bytes: &[u8]) -> rusqlite::Result<i64> {
    tx.prepare_cached("INSERT INTO headers (bytes) VALUES (?1) ON CONFLICT (bytes) DO NOTHING")?
        .execute([bytes])?;
    tx.prepare_cached("SELECT id FROM headers WHERE bytes = ?1")?
        .query_row([bytes], |r| r.get(0))
}

/// The columns of a stored message [`stored`] reads (after those a query puts first), and
/// the join that restores its header.
const STORED_COLUMNS: &str = "m.ordering_key, m.attributes, m.data, h.bytes";
const STORED_FROM: &str = "messages m LEFT JOIN headers h ON h.id = m.header";

/// A message as read back from its row: attributes not yet checked.
struct Stored {
    ordering_key: String,
    attributes: Result<BTreeMap<String, String>, String>,
    data: Vec<u8>,
}

/// Reads [`STORED_COLUMNS`] from `row`, starting at column `first`.
fn stored(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Stored> {
    let header = row.get_ref(first + 3)?.as_blob_or_null()?;
    Ok(Stored {
        ordering_key: row.get(first)?,
        attributes: layout::decode_attributes(row.get_ref(first + 1)?),
        data: layout::join(header, row.get_ref(first + 2)?.as_blob()?),
    })
}

impl Stored {
    /// The message; `what` names it in the error when its attributes are unreadable.
    fn into_message(self, what: impl FnOnce() -> String) -> PortResult<Message> {
        let attributes = self.attributes.map_err(|e| PortError::Corrupt {
            backend: BACKEND,
            message: format!("attributes of {}: {e}", what()),
        })?;
        Ok(Message {
            data: self.data,
            ordering_key: self.ordering_key,
            attributes,
        })
    }
}

/// The topic and durable cursor of a stored subscription; `what` names it in the error.
fn stored_subscription(conn: &Connection, name: &str, what: &str) -> PortResult<(String, i64)> {
    conn.query_row(
        "SELECT topic, cursor FROM subscriptions WHERE name = ?1",
        [name],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .map_err(|e| PortError::unavailable(BACKEND, e))?
    .ok_or_else(|| PortError::not_found(BACKEND, what.to_string()))
}

/// The unsettled messages of the dead-letter subscription `name` on `topic` (each with its
/// log id), oldest first, at most `max`.
fn unsettled_dead_letters(
    conn: &Connection,
    subscription: &str,
    max: usize,
) -> PortResult<Vec<(i64, DeadLetter)>> {
    let name = dead_letter_subscription(subscription);
    let (topic, cursor) = stored_subscription(
        conn,
        &name,
        &format!(
            "dead-letter subscription `{name}` (the host creates it with `{subscription}` when \
             it starts the plugin; is the plugin name right?)"
        ),
    )?;
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT m.id, m.published_at, {STORED_COLUMNS} FROM {STORED_FROM}
                 WHERE m.topic = ?1 AND m.id >= ?2
                   AND NOT EXISTS (SELECT 1 FROM acks a WHERE a.sub = ?3 AND a.id = m.id)
                 ORDER BY m.id LIMIT ?4"
        ))
        .map_err(|e| PortError::unavailable(BACKEND, e))?;
    let rows = stmt
        .query_map(
            params![topic, cursor, name, max.min(i64::MAX as usize) as i64],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, stored(r, 2)?)),
        )
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| PortError::unavailable(BACKEND, e))?;
    rows.into_iter()
        .map(|(id, at, stored)| {
            let message = stored.into_message(|| format!("message {id} on {topic}"))?;
            Ok((id, DeadLetter::from_message(message, at)))
        })
        .collect()
}

fn load_subscriptions(conn: &Connection) -> rusqlite::Result<HashMap<String, SubState>> {
    let mut subs = HashMap::new();
    let mut stmt =
        conn.prepare("SELECT name, topic, filter, ack_deadline_ms, cursor FROM subscriptions")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })?;
    for row in rows {
        let (name, topic, filter, deadline, cursor) = row?;
        let acked = conn
            .prepare("SELECT id FROM acks WHERE sub = ?1")?
            .query_map([&name], |r| r.get::<_, i64>(0))?
            .collect::<rusqlite::Result<HashSet<_>>>()?;
        let nacked_attempts = conn
            .prepare("SELECT id, attempt FROM nacks WHERE sub = ?1")?
            .query_map([&name], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, u32>(1)?)))?
            .collect::<rusqlite::Result<HashMap<_, _>>>()?;
        subs.insert(
            name,
            SubState {
                topic,
                filter: serde_json::from_str(&filter).unwrap_or_default(),
                ack_deadline: Duration::from_millis(deadline.max(0) as u64),
                next_load: cursor,
                pending: BTreeMap::new(),
                nacked_attempts,
                acked,
            },
        );
    }
    Ok(subs)
}

/// What the embedded ledger stores of a subscription, for [`drift::compare`]. Every
/// subscription here keeps per-key order; there is no retry policy (the dispatcher's
/// backoff is the nack delay).
fn drift_settings(
    topic: &str,
    filter: &BTreeMap<String, String>,
    ack_deadline: Duration,
    dead_letter_topic: &str,
) -> drift::Settings {
    drift::Settings {
        topic: topic.to_string(),
        filter: filter
            .iter()
            .map(|(k, v)| format!("{k} = {v:?}"))
            .collect::<Vec<_>>()
            .join(" AND "),
        message_ordering: true,
        ack_deadline,
        dead_letter: Some(drift::DeadLetter {
            topic: dead_letter_topic.to_string(),
            max_delivery_attempts: 0,
        }),
        retry: None,
    }
}

fn topic_exists(conn: &Connection, topic: &str) -> PortResult<bool> {
    conn.prepare_cached("SELECT 1 FROM topics WHERE name = ?1")
        .and_then(|mut stmt| stmt.query_row([topic], |_| Ok(())).optional())
        .map(|r| r.is_some())
        .map_err(|e| PortError::unavailable(BACKEND, e))
}

fn sub_mut<'a>(inner: &'a mut Inner, name: &str) -> PortResult<&'a mut SubState> {
    inner
        .subs
        .get_mut(name)
        .ok_or_else(|| PortError::not_found(BACKEND, format!("subscription `{name}`")))
}

impl Inner {
    /// Loads more of the log into a subscription's window, auto-acking filtered messages.
    fn fill(&mut self, name: &str) -> PortResult<()> {
        let Inner { conn, subs, .. } = self;
        let sub = subs
            .get_mut(name)
            .ok_or_else(|| PortError::not_found(BACKEND, format!("subscription `{name}`")))?;
        if sub.pending.len() >= WINDOW / 2 {
            return Ok(());
        }
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT m.id, {STORED_COLUMNS} FROM {STORED_FROM}
                     WHERE m.topic = ?1 AND m.id >= ?2 ORDER BY m.id LIMIT ?3"
            ))
            .map_err(|e| PortError::unavailable(BACKEND, e))?;
        let rows = stmt
            .query_map(
                params![
                    sub.topic,
                    sub.next_load,
                    (WINDOW - sub.pending.len()) as i64
                ],
                |r| Ok((r.get::<_, i64>(0)?, stored(r, 1)?)),
            )
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| PortError::unavailable(BACKEND, e))?;
        let now = Instant::now();
        for (id, stored) in rows {
            sub.next_load = id + 1;
            if sub.acked.remove(&id) {
                continue;
            }
            let message = stored.into_message(|| format!("message {id}"))?;
            // Filtered out: never delivered to this subscription (settled by the cursor).
            if !sub
                .filter
                .iter()
                .all(|(k, v)| message.attributes.get(k) == Some(v))
            {
                continue;
            }
            let attempt = sub.nacked_attempts.remove(&id).unwrap_or(0);
            sub.pending.insert(
                id,
                Pending {
                    message,
                    attempt,
                    leased_until: None,
                    visible_at: now,
                },
            );
        }
        Ok(())
    }

    /// Persists the subscription's cursor: everything below the first unsettled id.
    fn advance_cursor(&mut self, name: &str) -> PortResult<()> {
        let Inner { conn, subs, .. } = self;
        let sub = subs
            .get_mut(name)
            .ok_or_else(|| PortError::not_found(BACKEND, format!("subscription `{name}`")))?;
        let cursor = sub.pending.keys().next().copied().unwrap_or(sub.next_load);
        conn.execute(
            "UPDATE subscriptions SET cursor = ?2 WHERE name = ?1",
            params![name, cursor],
        )
        .and_then(|_| {
            conn.execute(
                "DELETE FROM acks WHERE sub = ?1 AND id < ?2",
                params![name, cursor],
            )
        })
        .and_then(|_| {
            conn.execute(
                "DELETE FROM nacks WHERE sub = ?1 AND id < ?2",
                params![name, cursor],
            )
        })
        .map_err(|e| PortError::unavailable(BACKEND, e))?;
        Ok(())
    }

    /// Deletes messages past retention, keeping each topic's newest.
    fn cleanup(&mut self) {
        if self.last_cleanup.elapsed() < Duration::from_secs(60) {
            return;
        }
        self.last_cleanup = Instant::now();
        let cutoff = now_micros() - self.retention.as_micros() as i64;
        let result = self.conn.execute(
            "DELETE FROM messages WHERE published_at < ?1
             AND id NOT IN (SELECT MAX(id) FROM messages GROUP BY topic)",
            [cutoff],
        );
        match result {
            Ok(n) if n > 0 => tracing::info!(deleted = n, "embedded ledger retention"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "embedded ledger retention failed"),
        }
    }

    /// Leases up to `max` deliverable messages.
    fn lease(&mut self, name: &str, max: usize) -> PortResult<Vec<Delivery>> {
        self.fill(name)?;
        let sub = sub_mut(self, name)?;
        let now = Instant::now();
        let deadline = sub.ack_deadline;
        let mut blocked: HashSet<String> = HashSet::new();
        let mut out = Vec::new();
        for (id, p) in sub.pending.iter_mut() {
            if out.len() >= max {
                break;
            }
            if let Some(until) = p.leased_until {
                if until > now {
                    blocked.insert(p.message.ordering_key.clone());
                    continue;
                }
                // Lease expired: deliverable again.
                p.leased_until = None;
            }
            if p.visible_at > now || blocked.contains(&p.message.ordering_key) {
                blocked.insert(p.message.ordering_key.clone());
                continue;
            }
            p.attempt += 1;
            p.leased_until = Some(now + deadline);
            out.push(Delivery {
                ack_id: id.to_string(),
                message: p.message.clone(),
                attempt: p.attempt,
            });
        }
        Ok(out)
    }

    /// When the next pending message becomes deliverable (lease expiry or nack delay).
    fn next_wake(&self, name: &str) -> Option<Instant> {
        let sub = self.subs.get(name)?;
        sub.pending
            .values()
            .map(|p| p.leased_until.unwrap_or(p.visible_at))
            .filter(|t| *t > Instant::now())
            .min()
    }
}

/// Creates `spec`'s subscription, or checks and updates an existing one (as on Pub/Sub,
/// [`drift`]); a new one starts at the end of the log, or at its oldest with `from_oldest`.
fn ensure_one(inner: &mut Inner, spec: &SubscriptionSpec, from_oldest: bool) -> PortResult<()> {
    for t in [&spec.topic, &spec.dead_letter_topic] {
        if t.is_empty() {
            continue;
        }
        inner
            .conn
            .execute("INSERT OR IGNORE INTO topics (name) VALUES (?1)", [t])
            .map_err(|e| PortError::unavailable(BACKEND, e))?;
    }
    let filter = serde_json::to_string(&spec.attribute_filter).unwrap_or_default();
    let deadline = spec.ack_deadline.as_millis() as i64;
    if let Some(sub) = inner.subs.get_mut(&spec.name) {
        // It exists: it must match the manifest, as on Pub/Sub (crate::drift): the
        // ack deadline and dead-letter topic change in place, topic and filter not.
        let stored_dead_letter: String = inner
            .conn
            .query_row(
                "SELECT dead_letter_topic FROM subscriptions WHERE name = ?1",
                [&spec.name],
                |r| r.get(0),
            )
            .map_err(|e| PortError::unavailable(BACKEND, e))?;
        let existing = drift_settings(
            &sub.topic,
            &sub.filter,
            sub.ack_deadline,
            &stored_dead_letter,
        );
        let wanted = drift_settings(
            &spec.topic,
            &spec.attribute_filter,
            spec.ack_deadline,
            &spec.dead_letter_topic,
        );
        match drift::compare(&wanted, &existing) {
            drift::Verdict::Same => return Ok(()),
            drift::Verdict::Refuse(differences) => {
                let name = &spec.name;
                let remedy = format!(
                    "Give the plugin a new name (a new subscription `plugin-<name>`, \
                         starting at the topic's end), or, with the host stopped, remove \
                         the old one from the embedded ledger's `ledger.db` (`DELETE FROM \
                         subscriptions WHERE name = '{name}'; DELETE FROM acks WHERE sub = \
                         '{name}'; DELETE FROM nacks WHERE sub = '{name}';`)."
                );
                return Err(PortError::Invalid {
                    backend: BACKEND,
                    message: drift::refusal(name, &differences, &remedy),
                });
            }
            drift::Verdict::Update(_) => {}
        }
        sub.ack_deadline = spec.ack_deadline;
        inner
            .conn
            .execute(
                "UPDATE subscriptions SET ack_deadline_ms = ?2, dead_letter_topic = ?3
                     WHERE name = ?1",
                params![spec.name, deadline, spec.dead_letter_topic],
            )
            .map_err(|e| PortError::unavailable(BACKEND, e))?;
        tracing::info!(subscription = %spec.name, "updated embedded subscription to match its manifest");
        return Ok(());
    }
    // Like Pub/Sub: a new subscription starts at the topic's end. A dead-letter
    // subscription starts at its topic's oldest retained message instead: this log keeps
    // them, so dead letters from before it existed are listed too.
    let end: i64 = if from_oldest {
        0
    } else {
        inner
            .conn
            .query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM messages", [], |r| {
                r.get(0)
            })
            .map_err(|e| PortError::unavailable(BACKEND, e))?
    };
    inner
        .conn
        .execute(
            "INSERT INTO subscriptions (name, topic, filter, ack_deadline_ms,
                 dead_letter_topic, cursor) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                spec.name,
                spec.topic,
                filter,
                deadline,
                spec.dead_letter_topic,
                end
            ],
        )
        .map_err(|e| PortError::unavailable(BACKEND, e))?;
    inner.subs.insert(
        spec.name.clone(),
        SubState {
            topic: spec.topic.clone(),
            filter: spec.attribute_filter.clone(),
            ack_deadline: spec.ack_deadline,
            next_load: end,
            pending: BTreeMap::new(),
            nacked_attempts: HashMap::new(),
            acked: HashSet::new(),
        },
    );
    Ok(())
}

/// The subscription on `spec`'s dead-letter topic that keeps its dead letters for the
/// dead-letter tools ([`dead_letter_subscription`]): no filter, no dead letters of its own.
fn dead_letter_spec(spec: &SubscriptionSpec) -> SubscriptionSpec {
    SubscriptionSpec {
        name: dead_letter_subscription(&spec.name),
        topic: spec.dead_letter_topic.clone(),
        attribute_filter: BTreeMap::new(),
        ack_deadline: spec.ack_deadline,
        dead_letter_topic: String::new(),
    }
}

fn parse_ids(ids: &[String]) -> PortResult<Vec<i64>> {
    ids.iter()
        .map(|s| {
            s.parse::<i64>().map_err(|_| PortError::Invalid {
                backend: BACKEND,
                message: format!("`{s}` is not an ack id of this ledger"),
            })
        })
        .collect()
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
        self.run(move |inner| {
            ensure_one(inner, &spec, false)?;
            if !spec.dead_letter_topic.is_empty() {
                ensure_one(inner, &dead_letter_spec(&spec), true)?;
            }
            Ok(())
        })
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
        self.run(move |inner| {
            inner
                .conn
                .prepare_cached("SELECT record FROM progress WHERE tbl = ?1")
                .and_then(|mut stmt| stmt.query_row([&table], |r| r.get(0)).optional())
                .map_err(|e| PortError::unavailable(BACKEND, e))
        })
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
        let ids = parse_ids(ack_ids)?;
        let name = subscription.to_string();
        self.run(move |inner| {
            let sub = sub_mut(inner, &name)?;
            let mut settled = Vec::with_capacity(ids.len());
            for id in ids {
                if sub.pending.remove(&id).is_some() {
                    settled.push(id);
                }
            }
            let tx = inner
                .conn
                .transaction()
                .map_err(|e| PortError::unavailable(BACKEND, e))?;
            {
                let mut stmt = tx
                    .prepare_cached("INSERT OR IGNORE INTO acks (sub, id) VALUES (?1, ?2)")
                    .map_err(|e| PortError::unavailable(BACKEND, e))?;
                for id in &settled {
                    stmt.execute(params![name, id])
                        .map_err(|e| PortError::unavailable(BACKEND, e))?;
                }
            }
            tx.commit()
                .map_err(|e| PortError::unavailable(BACKEND, e))?;
            inner.advance_cursor(&name)
        })
        .await
    }

    async fn nack(
        &self,
        subscription: &str,
        ack_ids: &[String],
        delay: Duration,
    ) -> PortResult<()> {
        let ids = parse_ids(ack_ids)?;
        let name = subscription.to_string();
        self.run(move |inner| {
            let sub = sub_mut(inner, &name)?;
            let visible_at = Instant::now() + delay;
            let mut attempts = Vec::new();
            for id in ids {
                if let Some(p) = sub.pending.get_mut(&id) {
                    p.leased_until = None;
                    p.visible_at = visible_at;
                    attempts.push((id, p.attempt));
                }
            }
            let tx = inner
                .conn
                .transaction()
                .map_err(|e| PortError::unavailable(BACKEND, e))?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT OR REPLACE INTO nacks (sub, id, attempt) VALUES (?1, ?2, ?3)",
                    )
                    .map_err(|e| PortError::unavailable(BACKEND, e))?;
                for (id, attempt) in attempts {
                    stmt.execute(params![name, id, attempt])
                        .map_err(|e| PortError::unavailable(BACKEND, e))?;
                }
            }
            tx.commit().map_err(|e| PortError::unavailable(BACKEND, e))
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
        let ids = parse_ids(ack_ids)?;
        let name = subscription.to_string();
        self.run(move |inner| {
            let sub = sub_mut(inner, &name)?;
            let until = Instant::now() + deadline;
            for id in ids {
                if let Some(p) = sub.pending.get_mut(&id)
                    && p.leased_until.is_some()
                {
                    p.leased_until = Some(until);
                }
            }
            Ok(())
        })
        .await
    }

    async fn list_topics(&self) -> PortResult<Vec<String>> {
        self.run(|inner| {
            let mut stmt = inner
                .conn
                .prepare_cached("SELECT name FROM topics ORDER BY name")
                .map_err(|e| PortError::unavailable(BACKEND, e))?;
            let names = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(|e| PortError::unavailable(BACKEND, e))?
                .collect::<rusqlite::Result<Vec<String>>>()
                .map_err(|e| PortError::unavailable(BACKEND, e))?;
            Ok(names)
        })
        .await
    }

    async fn read_retained(
        &self,
        topic: &str,
        after: i64,
        max: usize,
    ) -> PortResult<Vec<Retained>> {
        let topic = topic.to_string();
        self.run(move |inner| {
            let mut stmt = inner
                .conn
                .prepare_cached(&format!(
                    "SELECT m.id, {STORED_COLUMNS} FROM {STORED_FROM}
                         WHERE m.topic = ?1 AND m.id > ?2 ORDER BY m.id LIMIT ?3"
                ))
                .map_err(|e| PortError::unavailable(BACKEND, e))?;
            let rows = stmt
                .query_map(params![topic, after, max as i64], |r| {
                    Ok((r.get::<_, i64>(0)?, stored(r, 1)?))
                })
                .map_err(|e| PortError::unavailable(BACKEND, e))?;
            let mut out = Vec::new();
            for row in rows {
                let (position, stored) = row.map_err(|e| PortError::unavailable(BACKEND, e))?;
                let message = stored.into_message(|| format!("message {position} on {topic}"))?;
                out.push(Retained { position, message });
            }
            Ok(out)
        })
        .await
    }

    async fn retained_count(&self, topic: &str) -> PortResult<u64> {
        let topic = topic.to_string();
        self.run(move |inner| {
            inner
                .conn
                .query_row(
                    "SELECT COUNT(*) FROM messages WHERE topic = ?1",
                    [&topic],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| n as u64)
                .map_err(|e| PortError::unavailable(BACKEND, e))
        })
        .await
    }

    async fn last_message(&self, topic: &str) -> PortResult<Option<Message>> {
        let topic = topic.to_string();
        self.run(move |inner| {
            let row = inner
                .conn
                .query_row(
                    &format!(
                        "SELECT {STORED_COLUMNS} FROM {STORED_FROM}
                         WHERE m.topic = ?1 ORDER BY m.id DESC LIMIT 1"
                    ),
                    [&topic],
                    |r| stored(r, 0),
                )
                .optional()
                .map_err(|e| PortError::unavailable(BACKEND, e))?;
            row.map(|stored| stored.into_message(|| format!("the last message on {topic}")))
                .transpose()
        })
        .await
    }
    async fn dead_letters(&self, subscription: &str, max: usize) -> PortResult<Vec<DeadLetter>> {
        let subscription = subscription.to_string();
        self.run(move |inner| {
            Ok(unsettled_dead_letters(&inner.conn, &subscription, max)?
                .into_iter()
                .map(|(_, d)| d)
                .collect())
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
            .run(move |inner| {
                let (topic, _) = stored_subscription(
                    &inner.conn,
                    &subscription,
                    &format!("subscription `{subscription}`"),
                )?;
                let chosen: Vec<(i64, DeadLetter)> =
                    unsettled_dead_letters(&inner.conn, &subscription, usize::MAX)?
                        .into_iter()
                        .filter(|(_, d)| selection.selects(d))
                        .collect();
                let copies: Vec<Message> =
                    chosen.iter().map(|(_, d)| d.redrive_copy(&extra)).collect();
                for m in &copies {
                    limits::check_message(m).map_err(|e| PortError::Invalid {
                        backend: BACKEND,
                        message: format!("redriving onto topic `{topic}`: {e}"),
                    })?;
                }
                // The copies and the settlement in one transaction: a crash redrives all
                // of them or none, never one twice.
                let dead_letter_sub = dead_letter_subscription(&subscription);
                let Inner { conn, headers, .. } = &mut *inner;
                let tx = conn
                    .transaction()
                    .map_err(|e| PortError::unavailable(BACKEND, e))?;
                let added = insert_messages(&tx, headers, &topic, &copies, now_micros())?;
                {
                    let mut stmt = tx
                        .prepare_cached("INSERT OR IGNORE INTO acks (sub, id) VALUES (?1, ?2)")
                        .map_err(|e| PortError::unavailable(BACKEND, e))?;
                    for (id, _) in &chosen {
                        stmt.execute(params![dead_letter_sub, id])
                            .map_err(|e| PortError::unavailable(BACKEND, e))?;
                    }
                }
                tx.commit()
                    .map_err(|e| PortError::unavailable(BACKEND, e))?;
                headers.extend(added);
                Ok(chosen.into_iter().map(|(_, d)| d).collect::<Vec<_>>())
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
