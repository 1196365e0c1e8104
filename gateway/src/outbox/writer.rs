//! The outbox's single writer thread: group commit, sequence numbers, the disk budget.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Notify};

use super::chunk;
use super::floor::SeqFloor;
use super::store::{cost, evicted_key, first_seq, key, Store, NEXT_SEQ};
use super::{class_index, record, NewEvent, OutboxError, Request, CLASSES};
use firmware_config::runtime::disk::DiskGuard;
use firmware_config::runtime::sled_store;
use firmware_config::wire::EventClass;

/// Most events written under one flush: bounds the memory a group commit holds.
const MAX_GROUP_EVENTS: usize = 8_000;

/// Most records in one chunk. Measured with `bench-backbone --gridedge-only` and a backlog of a
/// million 200-byte events: 1 record a key gives 85k events/s accepted and 85 MiB peak RSS,
/// 20 give 314k/s and 92 MiB, 100 give 330k/s and 152 MiB, 4000 give 350k/s and 275 MiB
/// (sled holds written values in memory far beyond its `cache_capacity`).
const MAX_CHUNK_RECORDS: usize = 20;

/// How often evictions are logged while they go on.
const EVICT_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Most chunks deleted in one sled batch (see `Writer::delete`): few while the disk is full,
/// more otherwise (each batch costs the writer time that appends wait for).
const DELETE_BATCH_CHUNKS_FULL: usize = 8;
const DELETE_BATCH_CHUNKS: usize = 64;

pub(super) struct Writer {
    store: Arc<Store>,
    budget: u64,
    next_seq: u64,
    floor: SeqFloor,
    appended: Arc<Notify>,
    /// Keeps the store off a full disk; none in tests that need no disk of their own.
    disk: Option<DiskGuard>,
    /// Woken when a write meets a full disk after all.
    stopped: Arc<Notify>,
    /// When evictions were last logged, and how many since.
    evict_logged: std::cell::Cell<Option<std::time::Instant>>,
    evicted_unlogged: std::cell::Cell<u64>,
}

type Reply = oneshot::Sender<Result<Vec<u64>, OutboxError>>;

/// Records staged by a group commit, per class, in sequence order.
type Staged = [Vec<(u64, Vec<u8>)>; 4];

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
            disk: None,
            stopped: Arc::new(Notify::new()),
            evict_logged: Default::default(),
            evicted_unlogged: Default::default(),
        }
    }

    /// The same writer, keeping to what `disk` allows, waking `stopped` if a write still meets
    /// a full disk.
    pub fn on_disk(mut self, disk: DiskGuard, stopped: Arc<Notify>) -> Self {
        self.disk = Some(disk);
        self.stopped = stopped;
        self
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
            self.store
                .stats
                .busy_since_ms
                .store(super::monotonic_ms(), Ordering::Relaxed);
            self.commit(group);
            self.store.stats.busy_since_ms.store(0, Ordering::Relaxed);
        }
        // Every handle is gone: make what was written durable before the thread ends (a store
        // stopped on a full disk would wait forever, and holds nothing unflushed it promised).
        if !self.store.stats.stopped.load(Ordering::Relaxed) {
            let _ = self.store.db.flush();
        }
    }

    /// Applies one group: acks first (they free room), then appends, then one flush.
    fn commit(&mut self, group: Vec<Request>) {
        let mut replies: Vec<(Reply, Result<Vec<u64>, OutboxError>)> = Vec::new();
        let mut flush_waiters = Vec::new();
        let mut appends = Vec::new();
        let mut acked: [Vec<(u64, u64)>; 4] = Default::default();
        for r in group {
            match r {
                Request::Ack(ranges, Some(class)) => acked[class_index(class)].extend(ranges),
                Request::Ack(ranges, None) => {
                    for a in &mut acked {
                        a.extend(ranges.iter().copied());
                    }
                }
                Request::Append {
                    events,
                    quota,
                    reply,
                } => appends.push((events, quota, reply)),
                Request::Flush(reply) => flush_waiters.push(reply),
            }
        }
        if acked.iter().any(|a| !a.is_empty()) && !self.store.stats.stopped.load(Ordering::Relaxed)
        {
            // Deleting writes too: on a full disk, the reserve must be given back first.
            if let Some(disk) = &mut self.disk {
                disk.check(self.store.stats.pending_bytes.load(Ordering::Relaxed));
            }
            if let Err(e) = self.delete(acked) {
                tracing::error!(error = %e, "cannot delete acknowledged events; they will be sent again");
                if sled_store::is_out_of_space(&e) {
                    self.stop();
                }
            }
        }
        if self.store.stats.stopped.load(Ordering::Relaxed) {
            // sled cannot write again after a failed write: refuse rather than wait forever.
            for (events, _, reply) in appends {
                self.store
                    .stats
                    .refused
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                let _ = reply.send(Err(OutboxError::Stopped));
            }
            for w in flush_waiters {
                let _ = w.send(Err(OutboxError::Stopped));
            }
            return;
        }
        let held = self.store.stats.pending_bytes.load(Ordering::Relaxed);
        let (limit, critical) = match (&mut self.disk, appends.is_empty()) {
            (Some(disk), false) => (Some(disk.check(held)), disk.critical()),
            _ => (None, false),
        };
        let mut staged: Staged = Default::default();
        let mut wrote = false;
        for (events, quota, reply) in appends {
            if critical {
                // No room left to write in, not even by shedding: refuse until acks or
                // someone else free some.
                self.store
                    .stats
                    .refused
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                let _ = reply.send(Err(OutboxError::DiskFull {
                    needed: 0,
                    limit: held,
                }));
                continue;
            }
            let outcome = self.stage(&events, quota, limit, &mut staged);
            wrote |= outcome.is_ok();
            replies.push((reply, outcome));
        }
        let result = self.write(staged, wrote);
        if let Err(e) = &result {
            if sled_store::is_out_of_space(e) {
                tracing::error!(error = %e, "the outbox store met a full disk");
                self.stop();
            }
        }
        let failed = |e: &sled::Error| OutboxError::Store(sled::Error::Unsupported(e.to_string()));
        for (reply, outcome) in replies {
            let outcome = match (&result, outcome) {
                (Err(e), Ok(_)) => Err(failed(e)),
                (_, o) => o,
            };
            let _ = reply.send(outcome);
        }
        for w in flush_waiters {
            let _ = w.send(result.as_ref().map(|_| ()).map_err(failed));
        }
        if wrote {
            self.appended.notify_waiters();
            self.appended.notify_one();
        }
    }

    /// Writes one chunk per class, the next sequence number, and flushes.
    fn write(&self, staged: Staged, wrote: bool) -> Result<(), sled::Error> {
        for (i, records) in staged.iter().enumerate() {
            for part in records.chunks(MAX_CHUNK_RECORDS) {
                if let Some((first, _)) = part.first() {
                    let value = chunk::encode(part.iter().map(|(s, r)| (*s, r.as_slice())));
                    self.store.trees[i].insert(key(*first), value)?;
                }
            }
        }
        if wrote {
            self.store.meta.insert(NEXT_SEQ, &key(self.next_seq))?;
        }
        self.store.db.flush()?;
        self.store.stats.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// A write met the full disk: sled cannot write again, so the store takes nothing more
    /// until the gateway restarts it.
    fn stop(&self) {
        tracing::error!("the outbox store has stopped; the gateway restarts it");
        self.store.stats.stopped.store(true, Ordering::Relaxed);
        self.stopped.notify_waiters();
        self.stopped.notify_one();
    }

    /// Makes room for and stages one request's events; nothing is staged if they cannot fit
    /// (or pass their source's `quota`).
    fn stage(
        &mut self,
        events: &[NewEvent],
        quota: Option<u64>,
        disk_limit: Option<u64>,
        staged: &mut Staged,
    ) -> Result<Vec<u64>, OutboxError> {
        let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        let encoded: Vec<(EventClass, Vec<u8>)> = events
            .iter()
            .map(|e| {
                (
                    e.class,
                    record::encode(
                        e.time_ms.unwrap_or(now_ms),
                        &e.kind,
                        e.source.as_deref(),
                        e.payload.get(),
                    ),
                )
            })
            .collect();
        let needed: u64 = encoded.iter().map(|(_, v)| cost(v.len())).sum();
        // What each source would add to its alerts and submissions waiting.
        let mut by_source: std::collections::BTreeMap<&str, u64> = Default::default();
        for (e, (_, v)) in events.iter().zip(&encoded) {
            if let (Some(src), false) = (e.source.as_deref(), e.class.evictable()) {
                *by_source.entry(src).or_default() += cost(v.len());
            }
        }
        if let Some(quota) = quota {
            if let Err(e) = self.within_quota(&by_source, quota) {
                self.store
                    .stats
                    .refused
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                return Err(e);
            }
        }
        if let Err(e) = self.make_room(needed, disk_limit) {
            self.store
                .stats
                .refused
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            return Err(e);
        }
        if let Err(e) = self.floor.reserve(self.next_seq + encoded.len() as u64) {
            return Err(OutboxError::Floor(e));
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
            staged[i].push((seq, value));
            seqs.push(seq);
        }
        for (src, bytes) in by_source {
            s.source_add(src, bytes as i64);
        }
        Ok(seqs)
    }

    /// Whether each source's new alerts and submissions fit its quota, and all sources'
    /// together half the budget.
    fn within_quota(
        &self,
        by_source: &std::collections::BTreeMap<&str, u64>,
        quota: u64,
    ) -> Result<(), OutboxError> {
        let all_sources = self.budget / 2;
        let mut added = 0;
        for (src, needed) in by_source {
            let (pending, total) = self.store.stats.source_usage(src);
            added += needed;
            let quota = quota.min(all_sources);
            if pending + needed > quota || total + added > all_sources {
                return Err(OutboxError::SourceQuota {
                    origin: (*src).to_owned(),
                    pending,
                    needed: *needed,
                    quota,
                });
            }
        }
        Ok(())
    }

    /// Evicts the oldest evictable chunks until `needed` more bytes fit the budget (or, on a
    /// full disk, `disk_limit`, when it is the lower).
    fn make_room(&self, needed: u64, disk_limit: Option<u64>) -> Result<(), OutboxError> {
        let s = &self.store.stats;
        let cap = disk_limit.map_or(self.budget, |l| l.min(self.budget));
        let refused = || match disk_limit {
            Some(limit) if limit < self.budget => OutboxError::DiskFull { needed, limit },
            _ => OutboxError::Full {
                needed,
                budget: self.budget,
            },
        };
        let full = |s: &super::Stats| s.pending_bytes.load(Ordering::Relaxed) + needed > cap;
        if needed > cap {
            return Err(refused());
        }
        for class in CLASSES.into_iter().filter(|c| c.evictable()) {
            let i = class_index(class);
            let mut evicted = 0u64;
            while full(s) {
                let Some((_, v)) = self.store.trees[i].pop_min()? else {
                    break;
                };
                for (_, rec) in chunk::decode(&v).unwrap_or_default() {
                    s.pending_bytes
                        .fetch_sub(cost(rec.len()), Ordering::Relaxed);
                    s.pending[i].fetch_sub(1, Ordering::Relaxed);
                    evicted += 1;
                }
            }
            if evicted > 0 {
                let total = s.evicted[i].fetch_add(evicted, Ordering::Relaxed) + evicted;
                self.store
                    .meta
                    .insert(evicted_key(class).as_bytes(), &key(total))?;
                // A full store evicts at every append: one line a minute says it all.
                let unlogged = self.evicted_unlogged.get() + evicted;
                let due = self
                    .evict_logged
                    .get()
                    .is_none_or(|t| t.elapsed() >= EVICT_LOG_EVERY);
                if due {
                    tracing::warn!(
                        class = class.as_str(),
                        evicted = unlogged,
                        "outbox full: evicted oldest events"
                    );
                    self.evict_logged.set(Some(std::time::Instant::now()));
                    self.evicted_unlogged.set(0);
                } else {
                    self.evicted_unlogged.set(unlogged);
                }
            }
            if !full(s) {
                return Ok(());
            }
        }
        if full(s) {
            Err(refused())
        } else {
            Ok(())
        }
    }

    /// Deletes acknowledged records: each chunk touched is rewritten once, without them.
    fn delete(&self, mut per_class: [Vec<(u64, u64)>; 4]) -> Result<(), sled::Error> {
        let s = &self.store.stats;
        let per_batch = match &self.disk {
            Some(d) if d.is_full() => DELETE_BATCH_CHUNKS_FULL,
            _ => DELETE_BATCH_CHUNKS,
        };
        for (i, tree) in self.store.trees.iter().enumerate() {
            let ranges = &mut per_class[i];
            ranges.retain(|(a, b)| a <= b);
            if ranges.is_empty() {
                continue;
            }
            ranges.sort_unstable();
            let ranges = &*ranges;
            let acked = |seq: u64| {
                let i = ranges.partition_point(|(a, _)| *a <= seq);
                i > 0 && ranges[i - 1].1 >= seq
            };
            let (lo, hi) = (ranges[0].0, ranges.iter().map(|r| r.1).max().unwrap_or(0));
            // Small atomic batches (a crash never loses the records a chunk keeps): sled
            // deletes by writing, and one batch for a whole backlog wrote ~0.7 bytes for each
            // byte it deleted before any came back, where batches of a few chunks free room as
            // they go (measured on tmpfs: half of 12 MB acknowledged at once took 4.4 MB more
            // of the disk in one batch, gave 3.2 MB back in batches of 8). A full disk drains
            // only because of this.
            let mut batch = sled::Batch::default();
            let mut in_batch = 0;
            let start = match tree.range(..=key(lo)).next_back() {
                Some(Ok((k, _))) => first_seq(&k),
                _ => lo,
            };
            let chunks: Vec<(sled::IVec, sled::IVec)> =
                tree.range(key(start)..=key(hi)).collect::<Result<_, _>>()?;
            for (k, v) in chunks {
                let Ok(records) = chunk::decode(&v) else {
                    continue;
                };
                let (gone, kept): (Vec<_>, Vec<_>) =
                    records.into_iter().partition(|(seq, _)| acked(*seq));
                if gone.is_empty() {
                    continue;
                }
                for (_, rec) in &gone {
                    s.pending_bytes
                        .fetch_sub(cost(rec.len()), Ordering::Relaxed);
                    s.pending[i].fetch_sub(1, Ordering::Relaxed);
                    if !CLASSES[i].evictable() {
                        if let Some(src) = record::source_of(rec) {
                            s.source_add(src, -(cost(rec.len()) as i64));
                        }
                    }
                }
                s.acked.fetch_add(gone.len() as u64, Ordering::Relaxed);
                batch.remove(k);
                if let Some((first, _)) = kept.first() {
                    batch.insert(&key(*first), chunk::encode(kept.iter().copied()));
                }
                in_batch += 1;
                if in_batch == per_batch {
                    tree.apply_batch(std::mem::take(&mut batch))?;
                    in_batch = 0;
                }
            }
            tree.apply_batch(batch)?;
        }
        Ok(())
    }
}
