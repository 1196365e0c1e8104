//! The outbox against a model of what it promises, over random sequences of appends, sends,
//! acks (of what was sent, and of numbers never issued), flushes, crashes and reopens, with a
//! disk budget small enough that eviction happens all the time:
//!
//! - every event accepted (its append answered) is pending until central acknowledged it —
//!   but for telemetry and health evicted to make room, which are counted;
//! - eviction takes telemetry before health and the oldest of a class first, never an alert or
//!   a submission, and what is evicted never comes back;
//! - a refused append stores nothing; sequence numbers only grow, across crashes too;
//! - an acknowledged event is gone once the ack is flushed, and each event is pending once.
//!
//! A crash here drops every handle without closing: what was queued may or may not reach the
//! disk, so an ack not yet flushed may be lost (the event is then sent again, and central
//! drops the duplicate). Killing the real process is left to the system tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::Ordering;

use firmware_config::wire::EventClass;
use proptest::prelude::*;
use serde_json::value::RawValue;

use super::*;

const BUDGET: u64 = 12_000;

#[derive(Debug, Clone)]
enum Op {
    /// Events of these classes (indices into `CLASSES`) with these padding lengths.
    Append(Vec<(usize, usize)>),
    /// The uplink reads up to `limit` pending events of a class after its cursor.
    Send {
        class: usize,
        limit: usize,
    },
    /// Acks some of what was sent (picked by index), and maybe numbers never issued.
    Ack {
        picks: Vec<prop::sample::Index>,
        junk: bool,
    },
    Flush,
    Crash,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec((0..4usize, 0..400usize), 1..8).prop_map(Op::Append),
        2 => (0..4usize, 1..20usize).prop_map(|(class, limit)| Op::Send { class, limit }),
        2 => (prop::collection::vec(any::<prop::sample::Index>(), 0..10), any::<bool>())
            .prop_map(|(picks, junk)| Op::Ack { picks, junk }),
        1 => Just(Op::Flush),
        1 => Just(Op::Crash),
        1 => Just(Op::Reopen),
    ]
}

fn event(class: EventClass, pad: usize) -> NewEvent {
    NewEvent {
        class,
        kind: format!("model.{}", class.as_str()),
        payload: RawValue::from_string(format!("{{\"pad\":\"{}\"}}", "x".repeat(pad))).unwrap(),
        time_ms: None,
        source: None,
    }
}

/// What the outbox was told, and what it may have forgotten.
#[derive(Default)]
struct Model {
    /// Every accepted event and its class.
    issued: BTreeMap<u64, EventClass>,
    /// Acked, and flushed since: gone for good.
    acked: BTreeSet<u64>,
    /// Acked, not flushed yet.
    acked_unflushed: BTreeSet<u64>,
    /// Acked but not flushed when the outbox crashed: gone or pending again, either is right.
    acked_maybe: BTreeSet<u64>,
    /// Seen evicted: never pending again.
    evicted: BTreeSet<u64>,
    /// What the uplink read (and may ack).
    sent: Vec<u64>,
    /// The uplink's cursor per class.
    cursor: [u64; 4],
    highest: u64,
}

fn open(dir: &Path) -> Outbox {
    Outbox::open(dir, BUDGET, 1 << 20, 0).unwrap().0
}

fn all_pending(ob: &Outbox) -> BTreeMap<EventClass, Vec<u64>> {
    CLASSES
        .iter()
        .map(|c| {
            (
                *c,
                ob.pending(*c, 0, usize::MAX)
                    .iter()
                    .map(|e| e.seq)
                    .collect(),
            )
        })
        .collect()
}

/// Flushes, then checks everything the outbox holds against the model.
async fn check(ob: &Outbox, m: &mut Model) {
    ob.flush().await.unwrap();
    m.acked.append(&mut m.acked_unflushed);
    let pending = all_pending(ob);
    let mut seen = BTreeSet::new();
    for (class, seqs) in &pending {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{class:?} out of order: {seqs:?}"
        );
        for s in seqs {
            assert!(seen.insert(*s), "{s} pending twice");
            assert_eq!(
                m.issued.get(s),
                Some(class),
                "{s} pending but never accepted as {class:?}"
            );
            assert!(
                !m.acked.contains(s),
                "{s} pending after its ack was flushed"
            );
            assert!(
                !m.evicted.contains(s),
                "{s} pending again after it was evicted"
            );
        }
    }
    let gone = |s: &u64| m.acked.contains(s) || m.acked_maybe.contains(s);
    for (s, class) in &m.issued {
        if seen.contains(s) || gone(s) {
            continue;
        }
        assert!(
            matches!(class, EventClass::Telemetry | EventClass::Health),
            "{class:?} {s} was accepted and is lost"
        );
        m.evicted.insert(*s);
    }
    for class in [EventClass::Telemetry, EventClass::Health] {
        let evicted = m.evicted.iter().filter(|s| m.issued[*s] == class);
        let oldest_pending = pending[&class].first().copied().unwrap_or(u64::MAX);
        for s in evicted {
            assert!(
                *s < oldest_pending,
                "{class:?} {s} evicted before the older {oldest_pending}"
            );
        }
    }
    // Health goes only once no telemetry is left: none older than an evicted health event.
    if let Some(h) = m
        .evicted
        .iter()
        .rev()
        .find(|s| m.issued[*s] == EventClass::Health)
    {
        let t = pending[&EventClass::Telemetry].first();
        assert!(
            t.is_none_or(|t| t > h),
            "health {h} evicted while telemetry {t:?} waited"
        );
    }
    let counted: u64 = [EventClass::Telemetry, EventClass::Health]
        .iter()
        .map(|c| ob.stats().evicted[class_index(*c)].load(Ordering::Relaxed))
        .sum();
    assert_eq!(counted, m.evicted.len() as u64, "evictions counted");
}

async fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = open(dir.path());
    let mut m = Model::default();
    for op in ops {
        match op {
            Op::Append(spec) => {
                let events = spec
                    .iter()
                    .map(|(c, pad)| event(CLASSES[*c], *pad))
                    .collect();
                match ob.append(events).await {
                    Ok(seqs) => {
                        assert_eq!(seqs.len(), spec.len());
                        for (s, (c, _)) in seqs.iter().zip(&spec) {
                            assert!(*s > m.highest, "{s} issued after {}", m.highest);
                            m.highest = *s;
                            m.issued.insert(*s, CLASSES[*c]);
                        }
                    }
                    Err(e) => assert!(matches!(e, OutboxError::Full { .. }), "{e}"),
                }
            }
            Op::Send { class, limit } => {
                let got = ob.pending(CLASSES[class], m.cursor[class], limit);
                for e in &got {
                    assert!(e.seq > m.cursor[class]);
                    m.cursor[class] = e.seq;
                    m.sent.push(e.seq);
                }
            }
            Op::Ack { picks, junk } => {
                let mut ranges: Vec<(u64, u64)> = Vec::new();
                if !m.sent.is_empty() {
                    for p in &picks {
                        let s = m.sent[p.index(m.sent.len())];
                        ranges.push((s, s));
                        m.acked_unflushed.insert(s);
                    }
                }
                if junk {
                    // Never issued: ignored.
                    ranges.push((m.highest + 1_000, m.highest + 2_000));
                }
                ob.acknowledge(ranges);
            }
            Op::Flush => {}
            Op::Crash => {
                drop(ob);
                m.acked_maybe.append(&mut m.acked_unflushed);
                m.cursor = [0; 4];
                ob = open(dir.path());
            }
            Op::Reopen => {
                ob.close().await.unwrap();
                m.acked.append(&mut m.acked_unflushed);
                m.cursor = [0; 4];
                ob = open(dir.path());
            }
        }
        check(&ob, &mut m).await;
    }
    ob.close().await.unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_outbox_keeps_its_promises(ops in prop::collection::vec(op(), 1..40)) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(ops));
    }
}
