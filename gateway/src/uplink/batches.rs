//! Which pending events go into the next batch, and which batches await central's ack.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use firmware_config::runtime::clock::Instant;
use firmware_config::wire::{Event, EventClass};

use crate::outbox::{class_index, Outbox};

/// Limits of one batch and of the window.
#[derive(Debug, Clone, Copy)]
pub struct BatchPlan {
    pub max_events: usize,
    /// Payload bytes (approximate, before the envelope); well under the 1 MiB message limit.
    pub max_bytes: usize,
    /// Batches sent and not yet acknowledged.
    pub window: usize,
}

impl Default for BatchPlan {
    fn default() -> Self {
        Self {
            max_events: 2000,
            max_bytes: 512 * 1024,
            window: 8,
        }
    }
}

/// Batches sent before the last rewind whose acks may still come (their events were sent
/// again, but an ack for the first sending is just as true).
const SUPERSEDED: usize = 1024;

/// A batch sent: when, and the sequence numbers it carried (sorted, inclusive ranges).
#[derive(Debug, Clone)]
struct Sent {
    at: Instant,
    ranges: Vec<(u64, u64)>,
    /// The same, per class (a batch takes the next class when one runs out).
    by_class: Vec<(EventClass, Vec<(u64, u64)>)>,
}

/// Acknowledged sequence numbers (inclusive ranges) of each class a batch carried.
pub type AckedByClass = Vec<(EventClass, Vec<(u64, u64)>)>;

/// Why an ack was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckRefusal {
    /// It names no batch this gateway sent (or one answered already).
    UnknownBatch(Option<u64>),
    /// It names sequence numbers its batch did not carry.
    OutsideBatch { batch: u64, range: (u64, u64) },
}

/// The send cursor per class and the batches in flight.
#[derive(Debug)]
pub struct Window {
    plan: BatchPlan,
    /// Highest sequence number sent, per class.
    cursors: [u64; 4],
    inflight: BTreeMap<u64, Sent>,
    /// Batches in flight at a rewind, oldest first: their acks are still taken.
    superseded: VecDeque<(u64, Sent)>,
}

/// Sorted sequence numbers as inclusive ranges.
fn ranges_of(mut seqs: Vec<u64>) -> Vec<(u64, u64)> {
    seqs.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for s in seqs {
        match out.last_mut() {
            Some((_, hi)) if s <= hi.saturating_add(1) => *hi = (*hi).max(s),
            _ => out.push((s, s)),
        }
    }
    out
}

/// The parts of `b` (any order) that lie within `a` (sorted, merged).
fn intersect(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(lo, hi) in b {
        let start = a.partition_point(|(_, end)| *end < lo);
        for &(x, y) in &a[start..] {
            if x > hi {
                break;
            }
            out.push((x.max(lo), y.min(hi)));
        }
    }
    out.sort_unstable();
    out
}

/// Whether `r` lies within the union of `ranges` (sorted, merged).
fn covered(ranges: &[(u64, u64)], r: (u64, u64)) -> bool {
    r.0 <= r.1 && ranges.iter().any(|(a, b)| *a <= r.0 && r.1 <= *b)
}

impl Window {
    pub fn new(plan: BatchPlan) -> Self {
        Self {
            plan,
            cursors: [0; 4],
            inflight: BTreeMap::new(),
            superseded: VecDeque::new(),
        }
    }

    pub fn has_room(&self) -> bool {
        self.inflight.len() < self.plan.window
    }

    /// The next batch: the most urgent classes first, each in sequence order after its cursor.
    pub fn next_batch(&self, outbox: &Outbox) -> Vec<Event> {
        let mut events = Vec::new();
        let mut bytes = 0;
        for class in EventClass::BY_URGENCY {
            let room = self.plan.max_events - events.len();
            if room == 0 || bytes >= self.plan.max_bytes {
                break;
            }
            for e in outbox.pending(class, self.cursors[class_index(class)], room) {
                bytes += e.payload.get().len() + e.kind.len() + 96;
                events.push(e);
                if bytes >= self.plan.max_bytes {
                    break;
                }
            }
        }
        events
    }

    /// Records a batch as sent: cursors move past its events.
    pub fn sent(&mut self, batch: u64, events: &[Event], now: Instant) {
        for e in events {
            let c = &mut self.cursors[class_index(e.class)];
            *c = (*c).max(e.seq);
        }
        let ranges = ranges_of(events.iter().map(|e| e.seq).collect());
        let by_class = EventClass::BY_URGENCY
            .iter()
            .map(|c| {
                let seqs = events.iter().filter(|e| e.class == *c).map(|e| e.seq);
                (*c, ranges_of(seqs.collect()))
            })
            .filter(|(_, r)| !r.is_empty())
            .collect();
        self.inflight.insert(
            batch,
            Sent {
                at: now,
                ranges,
                by_class,
            },
        );
    }

    /// Takes central's ack of `batch` naming `ranges`: the sequence numbers to delete, all of
    /// them carried by that batch, by class. Anything else is refused, and nothing is deleted
    /// for it.
    pub fn acked(
        &mut self,
        batch: Option<u64>,
        ranges: &[(u64, u64)],
    ) -> Result<AckedByClass, AckRefusal> {
        let id = batch.ok_or(AckRefusal::UnknownBatch(None))?;
        let sent = match self.inflight.get(&id) {
            Some(s) => s,
            None => self
                .superseded
                .iter()
                .find(|(b, _)| *b == id)
                .map(|(_, s)| s)
                .ok_or(AckRefusal::UnknownBatch(Some(id)))?,
        };
        if let Some(r) = ranges.iter().find(|r| !covered(&sent.ranges, **r)) {
            return Err(AckRefusal::OutsideBatch {
                batch: id,
                range: *r,
            });
        }
        let by_class = sent
            .by_class
            .iter()
            .map(|(class, sent)| (*class, intersect(sent, ranges)))
            .filter(|(_, r)| !r.is_empty())
            .collect();
        self.inflight.remove(&id);
        self.superseded.retain(|(b, _)| *b != id);
        Ok(by_class)
    }

    /// True when, at `now`, the oldest batch in flight has waited longer than `timeout`.
    pub fn overdue(&self, now: Instant, timeout: Duration) -> bool {
        self.inflight
            .values()
            .map(|s| s.at)
            .min()
            .is_some_and(|t| now.saturating_duration_since(t) > timeout)
    }

    /// Forgets what was sent: everything still pending goes again. The batches in flight are
    /// remembered a while, so that their acks, when they come, still delete their events.
    pub fn rewind(&mut self) {
        self.cursors = [0; 4];
        for (id, s) in std::mem::take(&mut self.inflight) {
            self.superseded.push_back((id, s));
        }
        while self.superseded.len() > SUPERSEDED {
            self.superseded.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn event(seq: u64, class: EventClass) -> Event {
        Event {
            seq,
            class,
            kind: "k".into(),
            time: time::OffsetDateTime::UNIX_EPOCH,
            payload: RawValue::from_string("{}".into()).unwrap(),
            source: None,
        }
    }

    #[test]
    fn an_ack_deletes_only_what_its_batch_carried() {
        let mut w = Window::new(BatchPlan::default());
        let events: Vec<Event> = [1, 2, 3, 7, 8]
            .into_iter()
            .map(|s| event(s, EventClass::Alert))
            .collect();
        w.sent(10, &events, Instant::now());
        // A forged ack with wide ranges, an unknown batch, no batch, a reversed range:
        // refused, nothing deleted, and never a panic.
        assert_eq!(
            w.acked(Some(10), &[(0, u64::MAX)]),
            Err(AckRefusal::OutsideBatch {
                batch: 10,
                range: (0, u64::MAX)
            })
        );
        assert_eq!(
            w.acked(Some(11), &[(1, 1)]),
            Err(AckRefusal::UnknownBatch(Some(11)))
        );
        assert_eq!(
            w.acked(None, &[(1, 1)]),
            Err(AckRefusal::UnknownBatch(None))
        );
        assert!(w.acked(Some(10), &[(3, 1)]).is_err());
        assert!(w.acked(Some(10), &[(3, 7)]).is_err(), "4..6 were not in it");
        assert_eq!(
            w.acked(Some(10), &[(1, 3), (7, 8)]),
            Ok(vec![(EventClass::Alert, vec![(1, 3), (7, 8)])])
        );
        assert!(!w.has_room() || w.inflight.is_empty());
        assert_eq!(
            w.acked(Some(10), &[(1, 3)]),
            Err(AckRefusal::UnknownBatch(Some(10))),
            "answered already"
        );
    }

    #[test]
    fn an_ack_of_a_batch_sent_before_a_rewind_still_counts() {
        let mut w = Window::new(BatchPlan::default());
        w.sent(1, &[event(5, EventClass::Health)], Instant::now());
        w.rewind();
        assert!(w.has_room());
        w.sent(2, &[event(5, EventClass::Health)], Instant::now());
        assert_eq!(
            w.acked(Some(1), &[(5, 5)]),
            Ok(vec![(EventClass::Health, vec![(5, 5)])])
        );
        // An empty ack (central stored none of them) is fine too.
        assert_eq!(w.acked(Some(2), &[]), Ok(vec![]));
    }

    #[test]
    fn an_ack_of_a_batch_of_two_classes_is_split_by_class() {
        let mut w = Window::new(BatchPlan::default());
        let events: Vec<Event> = [(1, EventClass::Alert), (5, EventClass::Alert)]
            .into_iter()
            .chain([(2, EventClass::Submission), (6, EventClass::Submission)])
            .map(|(s, c)| event(s, c))
            .collect();
        w.sent(3, &events, Instant::now());
        assert_eq!(
            w.acked(Some(3), &[(1, 2), (5, 6)]),
            Ok(vec![
                (EventClass::Alert, vec![(1, 1), (5, 5)]),
                (EventClass::Submission, vec![(2, 2), (6, 6)]),
            ])
        );
        assert_eq!(intersect(&[(1, 10)], &[(12, 14), (3, 4)]), vec![(3, 4)]);
    }

    #[test]
    fn ranges_merge_and_cover() {
        assert_eq!(ranges_of(vec![3, 1, 2, 9, 10, 2]), vec![(1, 3), (9, 10)]);
        assert!(covered(&[(1, 3), (9, 10)], (2, 3)));
        assert!(!covered(&[(1, 3), (9, 10)], (3, 9)));
        assert_eq!(
            ranges_of(vec![u64::MAX, u64::MAX - 1]),
            vec![(u64::MAX - 1, u64::MAX)]
        );
    }
}
