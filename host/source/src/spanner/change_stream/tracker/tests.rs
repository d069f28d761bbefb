use std::collections::BTreeMap;

use super::*;
use crate::spanner::change_stream::record::{Child, ModType};

fn data(ts: i64, tx: &str, seq: u32) -> ChangeRecord {
    ChangeRecord::Data(DataChange {
        key: RecordKey::new(ts, tx, &format!("{seq:08}")),
        last_in_partition: true,
        table: "t".into(),
        mod_type: ModType::Update,
        value_capture_type: "NEW_ROW".into(),
        mods: Vec::new(),
    })
}

fn children(start: i64, tokens: &[&str], parents: &[&str]) -> ChangeRecord {
    ChangeRecord::Children(ChildPartitions {
        start,
        children: tokens
            .iter()
            .map(|t| Child {
                token: t.to_string(),
                parents: parents.iter().map(|p| p.to_string()).collect(),
            })
            .collect(),
    })
}

fn times(records: &[DataChange]) -> Vec<i64> {
    records.iter().map(|d| d.key.commit_ts).collect()
}

#[test]
fn a_split_and_a_merge_release_in_commit_order_up_to_the_low_watermark() {
    let mut t = Tracker::new(0);
    assert_eq!(
        t.to_start(),
        vec![Start {
            token: ROOT.into(),
            from: 0
        }]
    );
    t.receive(ROOT, [children(0, &["a", "b"], &[])]).unwrap();
    t.ended(ROOT).unwrap();
    let mut started: Vec<String> = t.to_start().into_iter().map(|s| s.token).collect();
    started.sort();
    assert_eq!(started, ["a", "b"]);

    // A key's versions in two partitions, the later one returned first.
    t.receive("b", [data(20, "x", 0)]).unwrap();
    assert!(t.release(10).is_empty(), "a has returned nothing yet");
    t.receive("a", [data(10, "y", 0)]).unwrap();
    assert!(t.release(10).is_empty(), "a is through 9 only");
    t.receive("a", [ChangeRecord::Heartbeat { at: 25 }])
        .unwrap();
    assert_eq!(times(&t.release(10)), [10], "b is through 19 only");
    t.receive("b", [ChangeRecord::Heartbeat { at: 50 }])
        .unwrap();
    assert_eq!(times(&t.release(10)), [20]);

    // a splits into c and d at 30; c and b merge into e at 60, announced by both.
    t.receive("a", [children(30, &["c", "d"], &["a"])]).unwrap();
    t.ended("a").unwrap();
    assert_eq!(t.watermark(), 29, "c and d have not started");
    let mut started: Vec<String> = t.to_start().into_iter().map(|s| s.token).collect();
    started.sort();
    assert_eq!(started, ["c", "d"]);
    assert!(
        !t.partitions().contains_key("a"),
        "a is released and retired"
    );

    t.receive("c", [data(40, "z", 1), data(40, "z", 0)])
        .unwrap();
    t.receive("d", [data(35, "w", 0), ChangeRecord::Heartbeat { at: 70 }])
        .unwrap();
    t.receive("c", [children(60, &["e"], &["b", "c"])]).unwrap();
    t.ended("c").unwrap();
    assert!(t.to_start().is_empty(), "e waits for b to end");
    assert_eq!(t.watermark(), 50, "b is through 50");
    let released = t.release(10);
    assert_eq!(times(&released), [35, 40, 40]);
    assert_eq!(
        released[1].key.sequence, "00000000",
        "a transaction's records in sequence order"
    );
    t.receive("b", [children(60, &["e"], &["b", "c"])]).unwrap();
    t.ended("b").unwrap();
    assert_eq!(t.to_start().len(), 1, "e starts once, after both parents");
    assert_eq!(t.watermark(), 59);
    t.receive("e", [data(65, "v", 0)]).unwrap();
    t.receive("e", [ChangeRecord::Heartbeat { at: 80 }])
        .unwrap();
    assert_eq!(times(&t.release(10)), [65]);
    let tokens: Vec<&String> = t.partitions().keys().collect();
    assert_eq!(
        tokens,
        ["d", "e"],
        "ended and released partitions are retired"
    );
}

#[test]
fn records_of_a_partition_nobody_announced_are_refused() {
    let mut t = Tracker::new(0);
    assert_eq!(
        t.receive("nope", [data(1, "x", 0)]),
        Err(TrackerError::UnknownPartition("nope".into()))
    );
}

#[test]
fn progress_round_trips_as_json_and_rejects_other_records() {
    let p = Progress {
        released: Some(RecordKey::new(5, "tx", "00000003")),
        through: 4,
        partitions: vec![Stored {
            token: "a\"b".into(),
            parents: vec!["p".into(), "q".into()],
            start: -1,
            last: None,
        }],
    };
    assert_eq!(Progress::decode(&p.encode()).unwrap(), p);
    assert!(Progress::decode("{\"w\": 1, \"at\": null}").is_err());
    assert!(Progress::decode("not json").is_err());
}

/// One partition of a simulated stream: its records in the order it returns them, and the
/// children record it ends with (if any).
struct Sim {
    start: i64,
    records: Vec<ChangeRecord>,
}

/// A stream: root → a, b at 0; a splits into c, d at 100; b and c merge into e at 200
/// (announced by both); d continues as f at 300; e and f end at 400 (a bounded read). Every
/// 3 µs a transaction writes one or two partitions alive then, some of it twice at one
/// time (two transactions sharing a commit timestamp); partitions heartbeat now and then.
fn stream(rng: &mut Rng) -> (BTreeMap<String, Sim>, Vec<RecordKey>) {
    let spans: [(&str, i64, i64); 6] = [
        ("a", 0, 100),
        ("b", 0, 200),
        ("c", 100, 200),
        ("d", 100, 300),
        ("e", 200, 400),
        ("f", 300, 400),
    ];
    let mut sims: BTreeMap<String, Sim> = spans
        .iter()
        .map(|(t, start, _)| {
            (
                t.to_string(),
                Sim {
                    start: *start,
                    records: Vec::new(),
                },
            )
        })
        .collect();
    sims.insert(
        ROOT.into(),
        Sim {
            start: 0,
            records: vec![children(0, &["a", "b"], &[])],
        },
    );
    let mut all = Vec::new();
    for ts in (1..400).step_by(3) {
        let live: Vec<&str> = spans
            .iter()
            .filter(|(_, s, e)| (*s..*e).contains(&ts))
            .map(|(t, _, _)| *t)
            .collect();
        for tx in 0..1 + rng.below(2) {
            let tx_id = format!("tx{ts}-{tx}");
            let mut seq = 0;
            for p in &live {
                if rng.below(2) == 0 {
                    continue;
                }
                for _ in 0..1 + rng.below(2) {
                    let r = data(ts, &tx_id, seq);
                    if let ChangeRecord::Data(d) = &r {
                        all.push(d.key.clone());
                    }
                    sims.get_mut(*p).unwrap().records.push(r);
                    seq += 1;
                }
            }
        }
        for p in &live {
            if rng.below(4) == 0 {
                sims.get_mut(*p)
                    .unwrap()
                    .records
                    .push(ChangeRecord::Heartbeat { at: ts + 1 });
            }
        }
    }
    let ends: [(&str, i64, &[&str], &[&str]); 4] = [
        ("a", 100, &["c", "d"], &["a"]),
        ("c", 200, &["e"], &["b", "c"]),
        ("b", 200, &["e"], &["b", "c"]),
        ("d", 300, &["f"], &["d"]),
    ];
    for (token, at, kids, parents) in ends {
        sims.get_mut(token)
            .unwrap()
            .records
            .push(children(at, kids, parents));
    }
    all.sort();
    (sims, all)
}

/// A small deterministic generator (xorshift), so a failure names its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What a partition's query from `from` returns: its records at or after `from` (a
/// children record always: it is how the query ends).
fn query(sim: &Sim, from: i64) -> Vec<ChangeRecord> {
    sim.records
        .iter()
        .filter(|r| match r {
            ChangeRecord::Data(d) => d.key.commit_ts >= from,
            ChangeRecord::Heartbeat { at } => *at >= from,
            ChangeRecord::Children(_) => true,
        })
        .cloned()
        .collect()
}

#[test]
fn every_interleaving_of_partitions_with_crashes_releases_every_record_once_in_order() {
    for seed in 1..=300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let (sims, all) = stream(&mut rng);
        let mut tracker = Tracker::new(0);
        let mut released: Vec<RecordKey> = Vec::new();
        // Running queries: what each still has to return.
        let mut running: BTreeMap<String, std::collections::VecDeque<ChangeRecord>> =
            BTreeMap::new();
        let mut crashes = 0;
        let mut steps = 0;
        // What the tracker last said it released everything through.
        let mut through = i64::MIN;
        loop {
            steps += 1;
            assert!(steps < 100_000, "seed {seed}: no progress");
            for s in tracker.to_start() {
                assert!(
                    s.from >= sims[&s.token].start,
                    "seed {seed}: {} queried before its start",
                    s.token
                );
                running.insert(s.token.clone(), query(&sims[&s.token], s.from).into());
            }
            if running.is_empty() {
                break;
            }
            match rng.below(10) {
                // A crash: only the stored progress survives.
                0 if crashes < 3 && rng.below(20) == 0 => {
                    crashes += 1;
                    let stored = tracker.progress().encode();
                    tracker = Tracker::resume(Progress::decode(&stored).unwrap());
                    running.clear();
                }
                1..=2 => {
                    let out = tracker.release(1 + rng.below(5) as usize);
                    assert!(
                        out.iter().all(|d| d.key.commit_ts > through),
                        "seed {seed}: a record at or before {through}, said released, came later"
                    );
                    released.extend(out.into_iter().map(|d| d.key));
                    through = tracker.released_through();
                }
                _ => {
                    // One running partition returns its next few records (or ends).
                    let tokens: Vec<String> = running.keys().cloned().collect();
                    let token = &tokens[rng.below(tokens.len() as u64) as usize];
                    let queue = running.get_mut(token).unwrap();
                    let n = 1 + rng.below(3) as usize;
                    let batch: Vec<ChangeRecord> =
                        (0..n).filter_map(|_| queue.pop_front()).collect();
                    tracker.receive(token, batch).unwrap();
                    if queue.is_empty() {
                        running.remove(token);
                        tracker.ended(token).unwrap();
                    }
                }
            }
        }
        released.extend(tracker.release(usize::MAX).into_iter().map(|d| d.key));
        assert!(
            released.windows(2).all(|w| w[0] < w[1]),
            "seed {seed} ({crashes} crashes): released out of order or twice"
        );
        assert_eq!(
            released, all,
            "seed {seed} ({crashes} crashes): every record once"
        );
        assert!(
            tracker.partitions().is_empty(),
            "seed {seed}: everything retired at the end"
        );
    }
}

#[test]
fn a_row_budget_releases_whole_records_and_at_least_one() {
    let with_mods = |ts: i64, n: usize| {
        let ChangeRecord::Data(mut d) = data(ts, &format!("t{ts}"), 0) else {
            unreachable!()
        };
        d.mods = vec![
            crate::spanner::change_stream::record::Mod {
                keys: "{}".into(),
                new_values: "{}".into(),
                old_values: "{}".into(),
            };
            n
        ];
        ChangeRecord::Data(d)
    };
    let mut t = Tracker::new(0);
    t.to_start();
    t.receive(ROOT, [children(0, &["a"], &[])]).unwrap();
    t.ended(ROOT).unwrap();
    t.to_start();
    t.receive(
        "a",
        [
            with_mods(1, 6_000),
            with_mods(2, 2),
            with_mods(3, 2),
            with_mods(4, 2),
            ChangeRecord::Heartbeat { at: 10 },
        ],
    )
    .unwrap();
    assert_eq!(times(&t.release_rows(5)), [1], "one large record, whole");
    assert_eq!(
        times(&t.release_rows(3)),
        [2, 3],
        "whole records up to the budget"
    );
    assert_eq!(times(&t.release_rows(100)), [4]);
    assert!(t.release_rows(100).is_empty());
}
