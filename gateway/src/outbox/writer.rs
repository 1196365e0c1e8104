//! The outbox's single writer thread: group commit, sequence numbers, the disk budget.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Notify};

use super::floor::SeqFloor;
use super::store::{cost, evicted_key, key, Store, NEXT_SEQ};
use super::{class_index, record, NewEvent, OutboxError, Request, CLASSES};
use firmware_config::wire::EventClass;

/// Most events written under one flush.
const MAX_GROUP_EVENTS: usize = 50_000;

pub(super) struct Writer {
    store: Arc<Store>,
    budget: u64,
    next_seq: u64,
    floor: SeqFloor,
    appended: Arc<Notify>,
}

type Reply = oneshot::Sender<Result<Vec<u64>, OutboxError>>;

impl Writer {
    pub fn new(
        store: Arc<Store>,
        budget: u64,
        next_seq: u64,
        floor: SeqFloor,
        appended: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            budget,
            next_seq,
            floor,
            appended,
        }
    }

    pub fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        while let Some(first) = rx.blocking_recv() {
            let mut group = vec![first];
            let mut events = 0;
            while events < MAX_GROUP_EVENTS {
                match rx.try_recv() {
                    Ok(r) => {
                        if let Request::Append { events: e, .. } = &r {
                            events += e.len();
                        }
                        group.push(r);
                    }
                    Err(_) => break,
                }
            }
            self.commit(group);
        }
        // Every handle is gone: make what was written durable before the thread ends.
        let _ = self.store.db.flush();
    }

    /// Applies one group: acks first (they free room), then appends, then one flush.
    fn commit(&mut self, group: Vec<Request>) {
        let mut replies: Vec<(Reply, Result<Vec<u64>, OutboxError>)> = Vec::new();
        let mut flush_waiters = Vec::new();
        let mut appends = Vec::new();
        for r in group {
            match r {
                Request::Ack(ranges) => self.delete(&ranges),
                Request::Append { events, reply } => appends.push((events, reply)),
                Request::Flush(reply) => flush_waiters.push(reply),
            }
        }
        let mut batches: [sled::Batch; 4] = Default::default();
        let mut wrote = false;
        for (events, reply) in appends {
            let outcome = self.stage(&events, &mut batches);
            wrote |= outcome.is_ok();
            replies.push((reply, outcome));
        }
        let result = self.write(batches, wrote);
        for (reply, outcome) in replies {
            let outcome = match (&result, outcome) {
                (Err(e), Ok(_)) => Err(OutboxError::Store(sled::Error::Unsupported(e.to_string()))),
                (_, o) => o,
            };
            let _ = reply.send(outcome);
        }
        for w in flush_waiters {
            let _ = w.send(
                result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| OutboxError::Store(sled::Error::Unsupported(e.to_string()))),
            );
        }
        if wrote {
            self.appended.notify_waiters();
            self.appended.notify_one();
        }
    }

    fn write(&self, batches: [sled::Batch; 4], wrote: bool) -> Result<(), sled::Error> {
        for (i, b) in batches.into_iter().enumerate() {
            self.store.trees[i].apply_batch(b)?;
        }
        if wrote {
            self.store.meta.insert(NEXT_SEQ, &key(self.next_seq))?;
        }
        self.store.db.flush()?;
        self.store.stats.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Makes room for and stages one request's events; nothing is staged if they cannot fit.
    fn stage(
        &mut self,
        events: &[NewEvent],
        batches: &mut [sled::Batch; 4],
    ) -> Result<Vec<u64>, OutboxError> {
        let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        let encoded: Vec<(EventClass, Vec<u8>)> = events
            .iter()
            .map(|e| {
                (
                    e.class,
                    record::encode(e.time_ms.unwrap_or(now_ms), &e.kind, e.payload.get()),
                )
            })
            .collect();
        let needed: u64 = encoded.iter().map(|(_, v)| cost(v.len())).sum();
        if let Err(e) = self.make_room(needed) {
            self.store
                .stats
                .refused
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            return Err(e);
        }
        if let Err(e) = self.floor.reserve(self.next_seq + encoded.len() as u64) {
            return Err(OutboxError::Quarantine(e));
        }
        let s = &self.store.stats;
        let mut seqs = Vec::with_capacity(encoded.len());
        for (class, value) in encoded {
            let seq = self.next_seq;
            self.next_seq += 1;
            let i = class_index(class);
            s.pending_bytes
                .fetch_add(cost(value.len()), Ordering::Relaxed);
            s.pending[i].fetch_add(1, Ordering::Relaxed);
            s.appended[i].fetch_add(1, Ordering::Relaxed);
            batches[i].insert(&key(seq), value);
            seqs.push(seq);
        }
        Ok(seqs)
    }

    /// Evicts the oldest evictable records until `needed` more bytes fit the budget.
    fn make_room(&self, needed: u64) -> Result<(), OutboxError> {
        let s = &self.store.stats;
        let full =
            |s: &super::Stats| s.pending_bytes.load(Ordering::Relaxed) + needed > self.budget;
        if needed > self.budget {
            return Err(OutboxError::Full {
                needed,
                budget: self.budget,
            });
        }
        for class in CLASSES.into_iter().filter(|c| c.evictable()) {
            let i = class_index(class);
            let mut evicted = 0u64;
            while full(s) {
                match self.store.trees[i].pop_min() {
                    Ok(Some((_, v))) => {
                        s.pending_bytes.fetch_sub(cost(v.len()), Ordering::Relaxed);
                        s.pending[i].fetch_sub(1, Ordering::Relaxed);
                        evicted += 1;
                    }
                    Ok(None) => break,
                    Err(e) => return Err(OutboxError::Store(e)),
                }
            }
            if evicted > 0 {
                let total = s.evicted[i].fetch_add(evicted, Ordering::Relaxed) + evicted;
                self.store
                    .meta
                    .insert(evicted_key(class).as_bytes(), &key(total))?;
                tracing::warn!(
                    class = class.as_str(),
                    evicted,
                    "outbox full: evicted oldest events"
                );
            }
            if !full(s) {
                return Ok(());
            }
        }
        if full(s) {
            Err(OutboxError::Full {
                needed,
                budget: self.budget,
            })
        } else {
            Ok(())
        }
    }

    /// Deletes acknowledged records.
    fn delete(&self, ranges: &[(u64, u64)]) {
        let s = &self.store.stats;
        for &(from, to) in ranges {
            if from > to {
                continue;
            }
            for (i, tree) in self.store.trees.iter().enumerate() {
                let keys: Vec<_> = tree.range(key(from)..=key(to)).keys().flatten().collect();
                for k in keys {
                    if let Ok(Some(v)) = tree.remove(&k) {
                        s.pending_bytes.fetch_sub(cost(v.len()), Ordering::Relaxed);
                        s.pending[i].fetch_sub(1, Ordering::Relaxed);
                        s.acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}
