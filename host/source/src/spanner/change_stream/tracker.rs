//! The partitions of one change stream and the order their records leave in.
//!
//! A stream is read as a tree of partitions: the root query (a NULL token) names the first
//! partitions; each partition's query ends with the children it splits or merges into (a
//! merged child is announced by every parent). A key's next version can land in a partition
//! that does not descend from the one holding its previous version, so parent-before-child
//! is not an order. The tracker merges the records of every partition by [`RecordKey`]
//! (commit timestamp, transaction, sequence) and releases them only up to the low watermark:
//! the least time through which every partition not yet ended has returned all its records
//! (its last heartbeat, or just before its last record, or just before its start). Every
//! record released after that has a later key, so the table's changes leave in commit order,
//! and with them every key's.
//!
//! The rules relied on, from Spanner's "Change stream partitions, records, and queries"
//! (https://cloud.google.com/spanner/docs/change-streams/details): a heartbeat record at T
//! means the partition has returned every record with a timestamp at or before T; a child
//! partitions record's children hold records at or after its `start_timestamp`; a merged
//! child is announced by each parent; `record_sequence` orders a transaction's records;
//! a partition query's `start_timestamp` is inclusive.
//!
//! Progress ([`Progress`]) is the key of the last record released and the partitions that
//! may still hold later records. A tracker resumed from it queries each of those partitions
//! again from the released record's commit timestamp (a query's start is inclusive) and drops
//! what it already released: at least once, nothing skipped.

use std::collections::BTreeMap;

use serde_json::json;

use super::record::{ChangeRecord, ChildPartitions, DataChange, RecordKey};

/// The root query's place in the tree: its token is NULL, its children have no parents.
pub const ROOT: &str = "";

/// Where a partition's query is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Known, not queried yet (a merged child waits for every parent to end).
    Waiting,
    /// Its query runs.
    Running,
    /// Its query returned everything; it stays until its records are released.
    Ended,
}

/// One partition of the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Partition {
    /// The partitions it continues.
    pub parents: Vec<String>,
    /// Its records have commit timestamps at or after this.
    pub start: i64,
    /// Every record of it at or before this time has been returned.
    pub through: i64,
    /// Its last data record seen.
    pub last: Option<RecordKey>,
    /// Where its query is.
    pub state: State,
    /// Its records held, not yet released.
    buffered: usize,
}

/// A query to start: the partition's token ([`ROOT`] for the root query) and the time to
/// read from (inclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// The partition.
    pub token: String,
    /// The query's `start_timestamp`, µs.
    pub from: i64,
}

/// A record the tracker cannot place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackerError {
    /// Records arrived for a partition the tracker does not know.
    #[error("change stream records for partition {0:?}, which no query announced")]
    UnknownPartition(String),
    /// A progress record that does not parse.
    #[error("unreadable change stream progress: {0}")]
    Progress(String),
}

/// The partitions of a stream, the records they returned and those released.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    partitions: BTreeMap<String, Partition>,
    /// Records returned, not yet released, in release order, with their partition's token.
    held: BTreeMap<RecordKey, (String, DataChange)>,
    /// The last record released.
    released: Option<RecordKey>,
    /// Every record at or before this time has been released (see [`Tracker::released_through`]).
    through: i64,
}

impl Tracker {
    /// A tracker reading the stream from `start` (µs, inclusive) through the root query.
    pub fn new(start: i64) -> Tracker {
        let mut tracker = Tracker {
            through: start.saturating_sub(1),
            ..Tracker::default()
        };
        tracker.partitions.insert(
            ROOT.to_string(),
            Partition {
                parents: Vec::new(),
                start,
                through: start - 1,
                last: None,
                state: State::Waiting,
                buffered: 0,
            },
        );
        tracker
    }

    /// The partitions known, by token.
    pub fn partitions(&self) -> &BTreeMap<String, Partition> {
        &self.partitions
    }

    /// The last record released.
    pub fn released(&self) -> Option<&RecordKey> {
        self.released.as_ref()
    }

    /// Records returned and not released yet.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The partitions to query now: every waiting one whose parents have all ended (or are
    /// no longer tracked: released and retired). They are running from here on.
    pub fn to_start(&mut self) -> Vec<Start> {
        let ready: Vec<String> = self
            .partitions
            .iter()
            .filter(|(_, p)| {
                p.state == State::Waiting
                    && p.parents.iter().all(|parent| {
                        self.partitions
                            .get(parent)
                            .is_none_or(|q| q.state == State::Ended)
                    })
            })
            .map(|(token, _)| token.clone())
            .collect();
        ready
            .into_iter()
            .map(|token| {
                let p = self.partitions.get_mut(&token).expect("listed above");
                p.state = State::Running;
                Start {
                    from: p.start.max(p.through + 1),
                    token,
                }
            })
            .collect()
    }

    /// The time to query partition `token` again from after its query failed: the first
    /// time it has not returned everything of.
    pub fn restart_from(&self, token: &str) -> Option<i64> {
        self.partitions
            .get(token)
            .map(|p| p.start.max(p.through + 1))
    }

    /// Takes the records partition `token` returned, in the order it returned them.
    pub fn receive(
        &mut self,
        token: &str,
        records: impl IntoIterator<Item = ChangeRecord>,
    ) -> Result<(), TrackerError> {
        if !self.partitions.contains_key(token) {
            return Err(TrackerError::UnknownPartition(token.to_string()));
        }
        for record in records {
            match record {
                ChangeRecord::Data(data) => self.hold(token, data),
                ChangeRecord::Heartbeat { at } => self.advance(token, at),
                ChangeRecord::Children(children) => self.announce(token, children),
            }
        }
        Ok(())
    }

    /// Partition `token`'s query returned its last record.
    pub fn ended(&mut self, token: &str) -> Result<(), TrackerError> {
        let p = self
            .partitions
            .get_mut(token)
            .ok_or_else(|| TrackerError::UnknownPartition(token.to_string()))?;
        p.state = State::Ended;
        self.retire();
        Ok(())
    }

    fn hold(&mut self, token: &str, data: DataChange) {
        let p = self.partitions.get_mut(token).expect("checked by receive");
        p.through = p.through.max(data.key.commit_ts - 1);
        if p.last.as_ref().is_none_or(|l| *l < data.key) {
            p.last = Some(data.key.clone());
        }
        // Released before (a resumed or restarted query reads its start again), or held.
        if self.released.as_ref().is_some_and(|r| data.key <= *r)
            || self.held.contains_key(&data.key)
        {
            return;
        }
        p.buffered += 1;
        self.held
            .insert(data.key.clone(), (token.to_string(), data));
    }

    fn advance(&mut self, token: &str, at: i64) {
        let p = self.partitions.get_mut(token).expect("checked by receive");
        p.through = p.through.max(at);
    }

    fn announce(&mut self, token: &str, children: ChildPartitions) {
        self.advance(token, children.start - 1);
        for child in children.children {
            self.partitions
                .entry(child.token)
                .or_insert_with(|| Partition {
                    parents: child.parents,
                    start: children.start,
                    through: children.start - 1,
                    last: None,
                    state: State::Waiting,
                    buffered: 0,
                });
        }
    }

    /// The low watermark: every record at or before it, of every partition, has been
    /// returned. `i64::MAX` when no partition is left to read.
    pub fn watermark(&self) -> i64 {
        self.partitions
            .values()
            .filter(|p| p.state != State::Ended)
            .map(|p| p.through)
            .min()
            .unwrap_or(i64::MAX)
    }

    /// Every record committed at or before this time has been released: the watermark, or
    /// just before the first record held back. Never moves back.
    pub fn released_through(&mut self) -> i64 {
        let mut t = self.watermark();
        if let Some((first, _)) = self.held.first_key_value() {
            t = t.min(first.commit_ts - 1);
        }
        self.through = self.through.max(t);
        self.through
    }

    /// Releases, in order, up to `max` held records at or before the watermark.
    pub fn release(&mut self, max: usize) -> Vec<DataChange> {
        let mut taken = 0;
        self.release_while(|_| {
            taken += 1;
            taken <= max
        })
    }

    /// Releases, in order, whole held records at or before the watermark until their rows
    /// (mods) reach `max_rows`: at least one record when one can leave, and a record is
    /// never split, so one large transaction can exceed it.
    pub fn release_rows(&mut self, max_rows: usize) -> Vec<DataChange> {
        let mut rows = 0;
        self.release_while(|next| {
            let more = rows == 0 || rows < max_rows;
            rows += next.mods.len().max(1);
            more
        })
    }

    /// Releases held records at or before the watermark, in order, while `more` says so of
    /// the next one; the watermark is taken once and the retired partitions dropped once.
    fn release_while(&mut self, mut more: impl FnMut(&DataChange) -> bool) -> Vec<DataChange> {
        let watermark = self.watermark();
        let mut out = Vec::new();
        while let Some(entry) = self.held.first_entry() {
            if entry.key().commit_ts > watermark || !more(&entry.get().1) {
                break;
            }
            let (token, data) = entry.remove();
            if let Some(p) = self.partitions.get_mut(&token) {
                p.buffered -= 1;
            }
            self.released = Some(data.key.clone());
            out.push(data);
        }
        self.retire();
        out
    }

    /// Drops the ended partitions nothing is held of and whose parents are gone, so what is
    /// tracked (and stored as progress) is what may still hold unreleased records.
    fn retire(&mut self) {
        loop {
            let done: Vec<String> = self
                .partitions
                .iter()
                .filter(|(_, p)| {
                    p.state == State::Ended
                        && p.buffered == 0
                        && p.parents.iter().all(|q| !self.partitions.contains_key(q))
                })
                .map(|(t, _)| t.clone())
                .collect();
            if done.is_empty() {
                return;
            }
            for token in done {
                self.partitions.remove(&token);
            }
        }
    }

    /// What to store to resume from after everything released so far.
    pub fn progress(&mut self) -> Progress {
        Progress {
            through: self.released_through(),
            released: self.released.clone(),
            partitions: self
                .partitions
                .iter()
                .map(|(token, p)| Stored {
                    token: token.clone(),
                    parents: p.parents.clone(),
                    start: p.start,
                    last: p.last.clone(),
                })
                .collect(),
        }
    }

    /// A tracker going on from `progress`: every partition it names waits to be queried
    /// again from the first time not wholly released (the released record's, or just after
    /// the time released through, or its own start, whichever is latest).
    pub fn resume(progress: Progress) -> Tracker {
        let floor = progress
            .released
            .as_ref()
            .map_or(i64::MIN, |r| r.commit_ts)
            .max(progress.through.saturating_add(1));
        Tracker {
            partitions: progress
                .partitions
                .into_iter()
                .map(|s| {
                    let partition = Partition {
                        through: s.start.max(floor).saturating_sub(1),
                        start: s.start,
                        parents: s.parents,
                        last: s.last,
                        state: State::Waiting,
                        buffered: 0,
                    };
                    (s.token, partition)
                })
                .collect(),
            held: BTreeMap::new(),
            released: progress.released,
            through: progress.through,
        }
    }
}

/// A tracker's progress: the last record released and the partitions that may hold later
/// ones. Stored as JSON (see [`Progress::encode`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The last record released, `None` before the first.
    pub released: Option<RecordKey>,
    /// Every record at or before this time was released.
    pub through: i64,
    /// The partitions to query again on resume.
    pub partitions: Vec<Stored>,
}

/// One partition in a progress record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Its token ([`ROOT`] for the root query).
    pub token: String,
    /// The partitions it continues.
    pub parents: Vec<String>,
    /// Its start, µs.
    pub start: i64,
    /// Its last data record seen.
    pub last: Option<RecordKey>,
}

fn key_json(key: &RecordKey) -> serde_json::Value {
    json!([key.commit_ts, key.transaction, key.sequence])
}

fn key_of(v: &serde_json::Value) -> Result<Option<RecordKey>, String> {
    if v.is_null() {
        return Ok(None);
    }
    match (v[0].as_i64(), v[1].as_str(), v[2].as_str()) {
        (Some(ts), Some(tx), Some(seq)) => Ok(Some(RecordKey::new(ts, tx, seq))),
        _ => Err(format!("{v} is not [commit_ts, transaction, sequence]")),
    }
}

impl Progress {
    /// The progress as the JSON text a ledger stores:
    /// `{"cs": 1, "released": null | [ts, tx, seq], "through": t, "partitions": [{"token",
    /// "parents", "start", "last"}]}`.
    pub fn encode(&self) -> String {
        json!({
            "cs": 1,
            "released": self.released.as_ref().map(key_json),
            "through": self.through,
            "partitions": self.partitions.iter().map(|p| json!({
                "token": p.token,
                "parents": p.parents,
                "start": p.start,
                "last": p.last.as_ref().map(key_json),
            })).collect::<Vec<_>>(),
        })
        .to_string()
    }

    /// Reads back what [`Progress::encode`] wrote.
    pub fn decode(text: &str) -> Result<Progress, TrackerError> {
        let bad = TrackerError::Progress;
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(format!("{e}: {text}")))?;
        if v["cs"].as_i64() != Some(1) {
            return Err(bad(format!("not a change stream progress record: {text}")));
        }
        let partitions = v["partitions"]
            .as_array()
            .ok_or_else(|| bad(format!("no `partitions` array: {text}")))?
            .iter()
            .map(|p| {
                let parents = p["parents"]
                    .as_array()
                    .ok_or("no `parents` array")?
                    .iter()
                    .map(|t| t.as_str().map(str::to_string).ok_or("a parent is not text"))
                    .collect::<Result<_, _>>()?;
                Ok(Stored {
                    token: p["token"].as_str().ok_or("no `token`")?.to_string(),
                    parents,
                    start: p["start"].as_i64().ok_or("no integer `start`")?,
                    last: key_of(&p["last"])?,
                })
            })
            .collect::<Result<_, String>>()
            .map_err(bad)?;
        Ok(Progress {
            released: key_of(&v["released"]).map_err(bad)?,
            through: v["through"]
                .as_i64()
                .ok_or_else(|| bad(format!("no integer `through`: {text}")))?,
            partitions,
        })
    }
}

#[cfg(test)]
mod tests;
