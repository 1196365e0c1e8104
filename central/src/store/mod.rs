//! `EventStore`: central's durable store of every gateway's events, deduplicated on
//! `(gateway, seq)`. A batch is acknowledged to its gateway only after it is flushed here.

use std::collections::HashMap;
use std::path::Path;

use firmware_config::runtime::clock::Clock;
use firmware_config::runtime::disk::{DiskGuard, DiskState};
use firmware_config::runtime::sled_store;

use firmware_config::ids::GatewayId;
use firmware_config::wire::{Event, EventClass};

mod backend;
mod buckets;
mod retention;
mod segments;
pub use backend::EventBackend;
pub use buckets::{Bucket, BucketWidths};
#[cfg(test)]
pub(crate) use retention::tests as retention_tests;
pub use retention::{Expired, ExpiredChunk, CLASSES};

/// What storing a batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub new: u64,
    pub duplicates: u64,
    /// The batch's sequence numbers as inclusive ranges, for the ack.
    pub ranges: Vec<(u64, u64)>,
    /// Highest sequence number stored for the gateway so far.
    pub high: u64,
    /// The sequence numbers stored for the first time (what central has not acted on yet).
    pub fresh: Vec<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("event store: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored event is unreadable: {0}")]
    Decode(#[from] serde_json::Error),
    /// The group's flush failed: none of its batches is durable.
    #[error("event store flush: {0}")]
    Flush(String),
    /// The disk is full: nothing stored, nothing acknowledged; gateways keep their backlog.
    #[error("central's disk is full: batch not stored (the gateway keeps it and sends it again)")]
    DiskFull,
    /// A write met the full disk: sled cannot write again; central restarts.
    #[error("the event store stopped on a full disk; central restarts it")]
    Stopped,
    #[error("event store segment file: {0}")]
    Segment(std::io::Error),
    #[error(transparent)]
    Postgres(#[from] crate::pg::PgError),
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        // ENOSPC: a refused append leaves nothing pointing at it, so this is only a full disk.
        if e.raw_os_error() == Some(28) || e.kind() == std::io::ErrorKind::StorageFull {
            StoreError::DiskFull
        } else {
            StoreError::Segment(e)
        }
    }
}

/// One batch to store: its gateway, its events, and its payload as received.
pub type BatchIn<'a> = (&'a GatewayId, &'a [Event], Option<&'a [u8]>);

/// The sequence numbers held of one gateway, as sorted inclusive ranges.
pub(crate) type SeenSet = Vec<(u64, u64)>;

pub struct EventStore {
    db: sled::Db,
    /// The time buckets (see `buckets`): in each, `gateway/first_seq` → where a chunk of new
    /// events of one class from one batch (see `encode_chunk`) is in the bucket's segment file
    /// (see `segments`), and the bucket's header.
    buckets: std::sync::Mutex<buckets::Buckets>,
    /// The width of new buckets of each class.
    widths: BucketWidths,
    /// `gateway` → the sequence numbers stored so far, as merged inclusive ranges. Pruned
    /// events stay in it, so that a gateway sending them again is still told they are held.
    seen: sled::Tree,
    /// Cache of `seen`; only the ingest path (one task) changes it.
    seen_cache: std::sync::Mutex<std::collections::HashMap<GatewayId, Vec<(u64, u64)>>>,
    /// Keeps the store off a full disk (sled does not come back from a refused write).
    disk: std::sync::Mutex<DiskGuard>,
    disk_state: std::sync::Arc<DiskState>,
    /// Set once a write met the full disk anyway.
    stopped: std::sync::atomic::AtomicBool,
    /// Stamps each chunk with when it was received.
    clock: Clock,
}

fn key(gateway: &GatewayId, seq: u64) -> Vec<u8> {
    // Ids never contain '/', so the prefix is unambiguous.
    let mut k = Vec::with_capacity(gateway.as_str().len() + 9);
    k.extend_from_slice(gateway.as_str().as_bytes());
    k.push(b'/');
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn transaction_error(e: sled::transaction::TransactionError<()>) -> StoreError {
    match e {
        sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
        sled::transaction::TransactionError::Abort(()) => {
            StoreError::Sled(sled::Error::Unsupported("aborted".into()))
        }
    }
}

/// Sorted, merged inclusive ranges of `seqs`.
pub fn ranges(seqs: impl IntoIterator<Item = u64>) -> Vec<(u64, u64)> {
    let mut v: Vec<u64> = seqs.into_iter().collect();
    v.sort_unstable();
    v.dedup();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for s in v {
        match out.last_mut() {
            Some((_, hi)) if *hi + 1 == s => *hi = s,
            _ => out.push((s, s)),
        }
    }
    out
}

/// Merges two sorted lists of inclusive ranges.
pub(crate) fn merge(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut all: Vec<(u64, u64)> = a.iter().chain(b.iter()).copied().collect();
    all.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(all.len());
    for (lo, hi) in all {
        match out.last_mut() {
            Some((_, h)) if lo <= h.saturating_add(1) => *h = (*h).max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn contains(set: &[(u64, u64)], seq: u64) -> bool {
    let i = set.partition_point(|(lo, _)| *lo <= seq);
    i > 0 && set[i - 1].1 >= seq
}

pub(crate) fn encode_ranges(set: &[(u64, u64)]) -> Vec<u8> {
    set.iter()
        .flat_map(|(a, b)| a.to_be_bytes().into_iter().chain(b.to_be_bytes()))
        .collect()
}

pub(crate) fn decode_ranges(bytes: &[u8]) -> Vec<(u64, u64)> {
    bytes
        .chunks_exact(16)
        .map(|c| {
            let mut a = [0u8; 8];
            let mut b = [0u8; 8];
            a.copy_from_slice(&c[..8]);
            b.copy_from_slice(&c[8..]);
            (u64::from_be_bytes(a), u64::from_be_bytes(b))
        })
        .collect()
}

/// A chunk: `[min seq][max seq]` (8 bytes each, big-endian), then the events as an `events`
/// payload (`{"events":[…]}`), so that reads can skip a chunk without parsing it. When every
/// event of a batch is new, `raw` (the batch payload as received) is stored as it came.
/// Marks a chunk that carries when central received it (8 bytes, Unix milliseconds) before its
/// JSON; chunks stored before central kept the time go straight on with `{`.
const RECEIVED_MARK: u8 = 0xFE;

/// An event as central holds it: the gateway's event, and when central received it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub event: Event,
    /// None for events stored before central kept the time.
    pub received: Option<time::OffsetDateTime>,
}

impl std::ops::Deref for StoredEvent {
    type Target = Event;
    fn deref(&self) -> &Event {
        &self.event
    }
}

/// How far an event's own time may be ahead of its receipt, or behind it, before it is flagged
/// as suspect: a clock a day fast, or years slow (a box booted without its clock). A WAN cut
/// of weeks still delivers honest old events unflagged.
pub const SUSPECT_AHEAD: time::Duration = time::Duration::days(1);
pub const SUSPECT_BEHIND: time::Duration = time::Duration::days(365);

impl StoredEvent {
    /// Whether its time is implausible beside when central received it (kept all the same).
    pub fn time_suspect(&self) -> bool {
        self.received.is_some_and(|r| {
            self.event.time > r + SUSPECT_AHEAD || self.event.time < r - SUSPECT_BEHIND
        })
    }
}

fn encode_chunk(
    events: &[&Event],
    raw: Option<&[u8]>,
    received_ms: i64,
) -> Result<Vec<u8>, serde_json::Error> {
    #[derive(serde::Serialize)]
    struct Batch<'a> {
        events: &'a [&'a Event],
    }
    let min = events.iter().map(|e| e.seq).min().unwrap_or(0);
    let max = events.iter().map(|e| e.seq).max().unwrap_or(0);
    let mut out = Vec::with_capacity(CHUNK_HEADER + raw.map_or(events.len() * 256, <[u8]>::len));
    out.extend_from_slice(&min.to_be_bytes());
    out.extend_from_slice(&max.to_be_bytes());
    out.push(RECEIVED_MARK);
    out.extend_from_slice(&received_ms.to_be_bytes());
    match raw {
        Some(raw) => out.extend_from_slice(raw),
        None => serde_json::to_writer(&mut out, &Batch { events })?,
    }
    Ok(out)
}

/// The largest chunk written as one piece: what a page of a gateway's events reads past what it
/// needs, at most. Chunks moved whole into a tree (from an older central's store) also stay
/// this small: sled writes a page larger than a quarter of its 512 KiB segment to a file of
/// its own, which it does not reclaim under a steady insert-and-delete load.
pub(crate) const CHUNK_MAX: usize = 6 * 1024;

/// How often sled's background thread flushes and then cleans segments.
const CLEAN_EVERY_MS: u64 = 500;

/// One chunk of a batch: its first sequence number (its key), its bytes, its one class and
/// how many events it holds.
struct ChunkPart {
    first: u64,
    bytes: Vec<u8>,
    class: EventClass,
    events: u64,
}

/// The new events of one batch as chunks of one class each (each class has its own buckets)
/// of at most [`CHUNK_MAX`] bytes (an event larger than that alone in its chunk), in batch
/// order within a class. A batch of one class that fits is stored as one chunk, `raw` as it
/// came when given; others are cut between events, which are taken from `raw` without
/// re-encoding when it holds them.
fn split_chunks(
    fresh: &[&Event],
    raw: Option<&[u8]>,
    received_ms: i64,
) -> Result<Vec<ChunkPart>, serde_json::Error> {
    let one_class = fresh
        .first()
        .map(|e| e.class)
        .filter(|c| fresh.iter().all(|e| e.class == *c));
    if let (Some(class), Some(raw)) = (
        one_class,
        raw.filter(|r| r.len() + CHUNK_HEADER <= CHUNK_MAX),
    ) {
        return Ok(vec![ChunkPart {
            first: fresh.iter().map(|e| e.seq).min().unwrap_or(0),
            bytes: encode_chunk(fresh, Some(raw), received_ms)?,
            class,
            events: fresh.len() as u64,
        }]);
    }
    // Each event's JSON: borrowed from the payload when it parses to the same events.
    #[derive(serde::Deserialize)]
    struct RawBatch<'a> {
        #[serde(borrow)]
        events: Vec<&'a serde_json::value::RawValue>,
    }
    let from_raw: Option<Vec<&[u8]>> = raw
        .and_then(|r| serde_json::from_slice::<RawBatch<'_>>(r).ok())
        .filter(|b| b.events.len() == fresh.len())
        .map(|b| b.events.iter().map(|e| e.get().as_bytes()).collect());
    let jsons: Vec<std::borrow::Cow<'_, [u8]>> = match from_raw {
        Some(v) => v.into_iter().map(std::borrow::Cow::Borrowed).collect(),
        None => fresh
            .iter()
            .map(|e| serde_json::to_vec(e).map(std::borrow::Cow::Owned))
            .collect::<Result<_, _>>()?,
    };
    let mut parts = Vec::new();
    for class in EventClass::ALL {
        let of_class: Vec<usize> = (0..fresh.len())
            .filter(|i| fresh[*i].class == class)
            .collect();
        let mut start = 0;
        while start < of_class.len() {
            let mut end = start;
            let mut size = CHUNK_HEADER + 12;
            while end < of_class.len()
                && (end == start || size + jsons[of_class[end]].len() < CHUNK_MAX)
            {
                size += jsons[of_class[end]].len() + 1;
                end += 1;
            }
            let group: Vec<&Event> = of_class[start..end].iter().map(|i| fresh[*i]).collect();
            let mut body = Vec::with_capacity(size);
            body.extend_from_slice(b"{\"events\":[");
            for (n, i) in of_class[start..end].iter().enumerate() {
                if n > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(&jsons[*i]);
            }
            body.extend_from_slice(b"]}");
            parts.push(ChunkPart {
                first: group.iter().map(|e| e.seq).min().unwrap_or(0),
                bytes: encode_chunk(&group, Some(&body), received_ms)?,
                class,
                events: group.len() as u64,
            });
            start = end;
        }
    }
    Ok(parts)
}

/// The bytes before a chunk's JSON: min and max seq, the mark, when received.
const CHUNK_HEADER: usize = 25;

/// When a chunk was received (if it says) and its JSON.
fn chunk_body(bytes: &[u8]) -> (Option<time::OffsetDateTime>, &[u8]) {
    let rest = bytes.get(16..).unwrap_or_default();
    match rest.split_first() {
        Some((&RECEIVED_MARK, tail)) if tail.len() >= 8 => {
            let (ms, json) = tail.split_at(8);
            let ms = i64::from_be_bytes(ms.try_into().unwrap_or_default());
            let at =
                time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok();
            (at, json)
        }
        _ => (None, rest),
    }
}

fn chunk_max(bytes: &[u8]) -> u64 {
    bytes
        .get(8..16)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(u64::MAX)
}

impl EventStore {
    /// The database, for other trees central keeps beside the events.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Opens the store under `dir`, keeping up to `reserve` bytes of its disk aside for the
    /// day it fills, making new time buckets `widths` wide. A store an older central wrote
    /// (one tree of chunks) is moved into buckets first.
    pub fn open(
        dir: &Path,
        cache_bytes: u64,
        reserve: u64,
        widths: BucketWidths,
    ) -> Result<Self, StoreError> {
        let mut disk = DiskGuard::new(dir, reserve).map_err(|e| {
            StoreError::Flush(format!("cannot read the disk under {}: {e}", dir.display()))
        })?;
        disk.before_open();
        let db = firmware_config::runtime::sled_store::open(
            &sled::Config::new()
                .path(dir.join("events"))
                .cache_capacity(cache_bytes)
                // Not for durability (each group is flushed before its ack): sled's periodic
                // thread is where it cleans segments that rewritten records (the seen sets)
                // left part empty, spending up to half of each period on it.
                .flush_every_ms(Some(CLEAN_EVERY_MS)),
        )?;
        let seen = db.open_tree("seen")?;
        let buckets = buckets::Buckets::load(&db, &dir.join("segments"))?;
        disk.check(0);
        let disk_state = disk.state();
        let store = Self {
            db,
            buckets: std::sync::Mutex::new(buckets),
            widths,
            seen,
            seen_cache: Default::default(),
            disk: std::sync::Mutex::new(disk),
            disk_state,
            stopped: Default::default(),
            clock: Clock::system(),
        };
        store.move_legacy_chunks()?;
        Ok(store)
    }

    /// The same store, stamping what it receives by `clock`.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The disk under the store, as last seen.
    pub fn disk(&self) -> &DiskState {
        &self.disk_state
    }

    /// Whether a write met the full disk (only a restart brings the store back).
    pub fn stopped(&self) -> bool {
        self.stopped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Looks at the disk: whether `bytes` more may be written now. Under the guard's floor
    /// nothing may, until there is room for its reserve again.
    pub fn room_for(&self, bytes: u64) -> bool {
        let mut disk = self
            .disk
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Central keeps everything it stores: the limit is what half the room above the
        // floor allows, and nothing at all once the floor is reached.
        let limit = disk.check(0);
        !self.disk_state.full() && bytes <= limit
    }

    fn seen_of(&self, gateway: &GatewayId) -> Result<Vec<(u64, u64)>, StoreError> {
        if let Some(set) = self
            .seen_cache
            .lock()
            .ok()
            .and_then(|c| c.get(gateway).cloned())
        {
            return Ok(set);
        }
        Ok(self
            .seen
            .get(gateway.as_str().as_bytes())?
            .map(|v| decode_ranges(&v))
            .unwrap_or_default())
    }

    /// Stores the events that are new as one chunk, records them as seen, flushes, and says
    /// what to acknowledge.
    pub fn store_batch(&self, gateway: &GatewayId, events: &[Event]) -> Result<Stored, StoreError> {
        self.store_batch_raw(gateway, events, None)
    }

    /// Like [`Self::store_batch`]; `raw` is the batch payload exactly as received
    /// (`{"events":[…]}` holding `events`), stored without re-encoding when all are new.
    pub fn store_batch_raw(
        &self,
        gateway: &GatewayId,
        events: &[Event],
        raw: Option<&[u8]>,
    ) -> Result<Stored, StoreError> {
        self.store_batches(&[(gateway, events, raw)])
            .pop()
            .unwrap_or_else(|| Err(StoreError::Flush("no result".into())))
    }

    /// Stores several batches (gateway, events, raw payload) with one flush for all: a group
    /// commit, so a burst costs one disk sync per group instead of one per batch. Each result
    /// is that batch's [`Self::store_batch_raw`]; a failed flush fails them all.
    ///
    /// The chunks of every batch are appended to their buckets' segment files and synced
    /// first; then each batch's entries, bucket headers and seen set are written in one sled
    /// transaction; then sled is flushed. A batch whose transaction fails fails every later
    /// one: a later batch of the same gateway was checked against a seen set holding it.
    pub fn store_batches(&self, batches: &[BatchIn<'_>]) -> Vec<Result<Stored, StoreError>> {
        let refuse = |e: fn() -> StoreError| batches.iter().map(|_| Err(e())).collect();
        if self.stopped() {
            return refuse(|| StoreError::Stopped);
        }
        // Roughly what the group writes: its payloads once in segment files, and as much
        // again for margin and sled's entries.
        let bytes: u64 = batches
            .iter()
            .map(|(_, events, raw)| 2 * raw.map_or(events.len() * 512, <[u8]>::len) as u64)
            .sum();
        if !self.room_for(bytes) {
            return refuse(|| StoreError::DiskFull);
        }
        // Held from the first append to the last entry, so that the pruner cannot drop a
        // bucket this group writes to.
        let mut buckets = self.buckets();
        // Seen sets as this group leaves them: a gateway may have two batches in one group.
        let mut group: HashMap<GatewayId, SeenSet> = HashMap::new();
        let mut touched: Vec<(Bucket, std::sync::Arc<segments::Segment>)> = Vec::new();
        let prepared: Vec<Result<Prepared<'_>, StoreError>> = batches
            .iter()
            .map(|(gateway, events, raw)| {
                let seen = match group.get(*gateway) {
                    Some(set) => set.clone(),
                    None => self.seen_of(gateway)?,
                };
                let p = self.prepare(&mut buckets, &mut touched, gateway, seen, events, *raw)?;
                if let Some(set) = &p.set {
                    group.insert((*gateway).clone(), set.clone());
                }
                Ok(p)
            })
            .collect();
        for (_, segment) in &touched {
            if let Err(e) = segment.sync() {
                tracing::error!(error = %e, "syncing a segment file failed: the group is not stored");
                let e = StoreError::from(e);
                return batches
                    .iter()
                    .map(|_| Err(StoreError::Flush(e.to_string())))
                    .collect();
            }
        }
        let mut committed: HashMap<GatewayId, SeenSet> = HashMap::new();
        let mut failed: Option<String> = None;
        let mut results: Vec<Result<Stored, StoreError>> = prepared
            .into_iter()
            .map(|p| {
                if let Some(e) = &failed {
                    return Err(StoreError::Flush(format!(
                        "an earlier batch of its group failed: {e}"
                    )));
                }
                let p = p?;
                if let Some(set) = p.set {
                    if let Err(e) = self.commit(&mut buckets, p.gateway, &set, p.entries) {
                        failed = Some(e.to_string());
                        return Err(e);
                    }
                    committed.insert(p.gateway.clone(), set);
                }
                Ok(p.stored)
            })
            .collect();
        drop(buckets);
        if !committed.is_empty() {
            if let Err(e) = self.db.flush() {
                if sled_store::is_out_of_space(&e) {
                    tracing::error!(error = %e, "the event store met a full disk; central restarts it");
                    self.stopped
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                let e = e.to_string();
                return results
                    .drain(..)
                    .map(|_| Err(StoreError::Flush(e.clone())))
                    .collect();
            }
            if let Ok(mut cache) = self.seen_cache.lock() {
                cache.extend(committed);
            }
        }
        results
    }

    /// Finds the new events of one batch and appends their chunks to their buckets' segment
    /// files (unsynced), noting each file in `touched`.
    fn prepare<'g>(
        &self,
        buckets: &mut buckets::Buckets,
        touched: &mut Vec<(Bucket, std::sync::Arc<segments::Segment>)>,
        gateway: &'g GatewayId,
        seen: SeenSet,
        events: &[Event],
        raw: Option<&[u8]>,
    ) -> Result<Prepared<'g>, StoreError> {
        let fresh = fresh_events(&seen, events);
        let new = fresh.len() as u64;
        let duplicates = events.len() as u64 - new;
        let mut set = seen;
        let mut changed = None;
        let mut entries = Vec::new();
        if !fresh.is_empty() {
            let raw = raw.filter(|_| fresh.len() == events.len());
            let received = self.clock.unix_ms().max(0);
            for part in split_chunks(&fresh, raw, received)? {
                let bucket = Bucket::of(part.class, received, self.widths.of(part.class));
                let segment = buckets.segment(bucket)?;
                let place = segment.append(&part.bytes)?;
                if !touched.iter().any(|(b, _)| *b == bucket) {
                    touched.push((bucket, segment));
                }
                entries.push(Entry {
                    bucket,
                    received,
                    key: key(gateway, part.first),
                    pointer: segments::encode_pointer(&part.bytes, place),
                    events: part.events,
                });
            }
            set = merge(&set, &ranges(fresh.iter().map(|e| e.seq)));
            changed = Some(set.clone());
        }
        Ok(Prepared {
            gateway,
            stored: Stored {
                fresh: fresh.iter().map(|e| e.seq).collect(),
                new,
                duplicates,
                ranges: ranges(events.iter().map(|e| e.seq)),
                high: set.last().map(|r| r.1).unwrap_or(0),
            },
            set: changed,
            entries,
        })
    }

    /// Writes a batch's entries, their buckets' headers and its gateway's seen set as one
    /// transaction, unflushed.
    fn commit(
        &self,
        buckets: &mut buckets::Buckets,
        gateway: &GatewayId,
        set: &SeenSet,
        entries: Vec<Entry>,
    ) -> Result<(), StoreError> {
        let mut writes = self::buckets::BucketWrites::new(self.seen.clone(), buckets);
        for e in entries {
            writes.add(
                buckets, &self.db, e.bucket, e.received, e.key, e.pointer, e.events,
            )?;
        }
        let ranges = encode_ranges(set);
        writes
            .commit(|seen| {
                seen.insert(gateway.as_str().as_bytes(), ranges.as_slice())
                    .map(drop)
            })
            .map_err(transaction_error)
    }

    fn buckets(&self) -> std::sync::MutexGuard<'_, buckets::Buckets> {
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every chunk of every bucket, with its bucket and key.
    #[cfg(test)]
    fn chunks(&self) -> Vec<(Bucket, Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        for (bucket, open) in self.buckets().all() {
            for item in open.tree.iter() {
                let (k, v) = item.unwrap();
                let chunk = chunk_bytes(&v, open.segment.as_deref()).unwrap();
                out.push((bucket, k.to_vec(), chunk.into_owned()));
            }
        }
        out
    }

    pub fn high(&self, gateway: &GatewayId) -> Result<u64, StoreError> {
        Ok(self.seen_of(gateway)?.last().map(|r| r.1).unwrap_or(0))
    }

    /// Up to `limit` stored events of `gateway` after `after`, in sequence order. Reads the
    /// gateway's chunks in each bucket in key order (by first sequence number), skipping those
    /// that end at or before `after` by their header, and leaves a bucket once its next chunk
    /// starts past the `limit` lowest found so far: meant for audits and paging, not for bulk
    /// export.
    pub fn events_after(
        &self,
        gateway: &GatewayId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut prefix = gateway.as_str().as_bytes().to_vec();
        prefix.push(b'/');
        let mut found: Vec<StoredEvent> = Vec::new();
        // The highest sequence number that can still make the page, once it is full.
        let mut bound = u64::MAX;
        // Taken apart from the lock: ingest goes on while this reads, and a bucket the pruner
        // drops meanwhile reads as gone (its open file still reads).
        let open = self.buckets().all();
        for (_, bucket) in open {
            for item in bucket.tree.scan_prefix(&prefix) {
                let (k, v) = match item {
                    Ok(kv) => kv,
                    // Dropped by the pruner while this read it: past its time.
                    Err(sled::Error::CollectionNotFound(_)) => break,
                    Err(e) => return Err(e.into()),
                };
                if chunk_first(&k) > bound {
                    break;
                }
                if chunk_max(&v) <= after {
                    continue;
                }
                let chunk = chunk_bytes(&v, bucket.segment.as_deref())?;
                let (received, json) = chunk_body(&chunk);
                let batch: firmware_config::wire::EventBatch = serde_json::from_slice(json)?;
                found.extend(
                    batch
                        .events
                        .into_iter()
                        .filter(|e| e.seq > after && e.seq <= bound)
                        .map(|event| StoredEvent { event, received }),
                );
                if limit > 0 && found.len() >= 2 * limit {
                    found.sort_unstable_by_key(|e| e.seq);
                    found.truncate(limit);
                    bound = found.last().map_or(u64::MAX, |e| e.seq);
                }
            }
        }
        found.sort_unstable_by_key(|e| e.seq);
        found.truncate(limit);
        Ok(found)
    }
}

/// The events of a batch not in `seen`, each sequence number once, in batch order.
pub(crate) fn fresh_events<'e>(seen: &[(u64, u64)], events: &'e [Event]) -> Vec<&'e Event> {
    let mut fresh: Vec<&Event> = Vec::with_capacity(events.len());
    let mut batch_seqs = std::collections::HashSet::with_capacity(events.len());
    for e in events {
        if batch_seqs.insert(e.seq) && !contains(seen, e.seq) {
            fresh.push(e);
        }
    }
    fresh
}

/// A batch's new events, appended to segment files, ready for its transaction.
struct Prepared<'g> {
    gateway: &'g GatewayId,
    stored: Stored,
    /// The gateway's seen set with this batch; None when it holds nothing new.
    set: Option<SeenSet>,
    entries: Vec<Entry>,
}

/// A chunk's entry in its bucket's tree.
struct Entry {
    bucket: Bucket,
    received: i64,
    key: Vec<u8>,
    pointer: Vec<u8>,
    events: u64,
}

/// The chunk a tree entry stands for: read from the bucket's segment file when the entry
/// points there, the entry itself when the chunk is kept whole in the tree.
fn chunk_bytes<'e>(
    entry: &'e [u8],
    segment: Option<&segments::Segment>,
) -> Result<std::borrow::Cow<'e, [u8]>, StoreError> {
    match (segments::decode_pointer(entry), segment) {
        (None, _) => Ok(std::borrow::Cow::Borrowed(entry)),
        (Some(place), Some(segment)) => Ok(std::borrow::Cow::Owned(segment.read(place)?)),
        (Some(_), None) => Err(StoreError::Segment(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "a chunk points into a segment file that is not there",
        ))),
    }
}

/// A chunk's first sequence number, from its key (`gateway/first_seq`).
fn chunk_first(key: &[u8]) -> u64 {
    key.len()
        .checked_sub(8)
        .and_then(|n| <[u8; 8]>::try_from(&key[n..]).ok())
        .map_or(0, u64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_config::wire::EventClass;

    fn ev(seq: u64) -> Event {
        Event {
            seq,
            class: EventClass::Telemetry,
            kind: "t".into(),
            time: time::OffsetDateTime::UNIX_EPOCH,
            payload: serde_json::value::RawValue::from_string(format!("{{\"n\":{seq}}}")).unwrap(),
            source: None,
        }
    }

    #[test]
    fn merges_range_sets() {
        assert_eq!(
            merge(&[(1, 3), (7, 9)], &[(4, 5), (10, 10), (20, 21)]),
            vec![(1, 5), (7, 10), (20, 21)]
        );
        assert!(contains(&[(1, 5), (7, 10)], 8) && !contains(&[(1, 5), (7, 10)], 6));
        assert_eq!(
            decode_ranges(&encode_ranges(&[(1, 2), (5, 9)])),
            vec![(1, 2), (5, 9)]
        );
    }

    /// The sequence numbers stored for `gateway`, in order.
    fn stored_seqs(s: &EventStore, gateway: &GatewayId) -> Vec<u64> {
        s.events_after(gateway, 0, 100)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect()
    }

    #[test]
    fn deduplication_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let a = GatewayId::new("a").unwrap();
        {
            let s = EventStore::open(dir.path(), 1 << 20, 0, BucketWidths::default()).unwrap();
            s.store_batch(&a, &[ev(1), ev(2), ev(5)]).unwrap();
        }
        let s = EventStore::open(dir.path(), 1 << 20, 0, BucketWidths::default()).unwrap();
        let r = s.store_batch(&a, &[ev(2), ev(3), ev(5)]).unwrap();
        assert_eq!((r.new, r.duplicates, r.high), (1, 2, 5));
        let seqs = stored_seqs(&s, &a);
        assert_eq!(seqs, vec![1, 2, 3, 5]);
        assert_eq!(s.events_after(&a, 2, 100).unwrap().len(), 2);
    }

    #[test]
    fn a_group_stores_each_batch_once_with_one_flush() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (GatewayId::new("a").unwrap(), GatewayId::new("b").unwrap());
        {
            let s = EventStore::open(dir.path(), 1 << 20, 0, BucketWidths::default()).unwrap();
            let (first, again, other) = ([ev(1), ev(2)], [ev(2), ev(3)], [ev(1)]);
            let r = s.store_batches(&[
                (&a, &first[..], None),
                (&b, &other[..], None),
                // The same gateway later in the group sees what the group already holds.
                (&a, &again[..], None),
            ]);
            let r: Vec<Stored> = r.into_iter().map(Result::unwrap).collect();
            assert_eq!((r[0].new, r[0].duplicates), (2, 0));
            assert_eq!((r[1].new, r[1].high), (1, 1));
            assert_eq!(
                (r[2].new, r[2].duplicates, r[2].fresh.clone()),
                (1, 1, vec![3])
            );
        }
        let s = EventStore::open(dir.path(), 1 << 20, 0, BucketWidths::default()).unwrap();
        let seqs = stored_seqs(&s, &a);
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(s.high(&b).unwrap(), 1);
    }

    #[test]
    fn merges_ranges() {
        assert_eq!(
            ranges([5, 1, 2, 3, 9, 10, 3]),
            vec![(1, 3), (5, 5), (9, 10)]
        );
        assert!(ranges([]).is_empty());
    }

    /// An event whose payload is `pad` bytes of text, of the given class.
    fn big(seq: u64, pad: usize, class: EventClass) -> Event {
        let mut e = ev(seq);
        e.class = class;
        e.payload =
            serde_json::value::RawValue::from_string(format!("{{\"s\":\"{}\"}}", "x".repeat(pad)))
                .unwrap();
        e
    }

    #[test]
    fn a_large_batch_is_stored_in_chunks_of_one_class_of_at_most_chunk_max() {
        let dir = tempfile::tempdir().unwrap();
        let s = EventStore::open(dir.path(), 1 << 20, 0, BucketWidths::default()).unwrap();
        let a = GatewayId::new("a").unwrap();
        let classes = [EventClass::Telemetry, EventClass::Alert];
        let events: Vec<Event> = (1..=60)
            .map(|i| big(i, 700, classes[i as usize % 2]))
            .collect();
        let raw = serde_json::to_vec(&firmware_config::wire::EventBatch {
            events: events.clone(),
        })
        .unwrap();
        assert!(raw.len() > 6 * CHUNK_MAX);
        s.store_batch_raw(&a, &events, Some(&raw)).unwrap();
        // Part new, part already held: cut from the re-encoded events.
        let more: Vec<Event> = (55..=100)
            .map(|i| big(i, 700, EventClass::Health))
            .collect();
        assert_eq!(s.store_batch(&a, &more).unwrap().new, 40);
        // One event larger than a chunk stands alone.
        s.store_batch(&a, &[big(101, 3 * CHUNK_MAX, EventClass::Submission)])
            .unwrap();

        let chunks = s.chunks();
        let sizes: Vec<usize> = chunks.iter().map(|(_, _, v)| v.len()).collect();
        assert!(sizes.len() >= 12, "{sizes:?}");
        assert_eq!(
            sizes.iter().filter(|n| **n > CHUNK_MAX).count(),
            1,
            "{sizes:?}"
        );
        let back = s.events_after(&a, 0, 1000).unwrap();
        assert_eq!(
            back.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=101).collect::<Vec<_>>()
        );
        for (got, want) in back.iter().zip(events.iter().chain(&more[6..])) {
            assert_eq!((got.seq, got.class), (want.seq, want.class));
            assert!(
                got.payload.get() == want.payload.get(),
                "payload of {}",
                got.seq
            );
        }
        // Every chunk holds one class, and is in that class's bucket.
        for (bucket, k, v) in &chunks {
            let (_, json) = chunk_body(v);
            let batch: firmware_config::wire::EventBatch = serde_json::from_slice(json).unwrap();
            assert!(
                batch.events.iter().all(|e| e.class == bucket.class),
                "chunk {k:?} in {bucket:?}"
            );
        }
        let classes: std::collections::BTreeSet<EventClass> =
            chunks.iter().map(|(b, ..)| b.class).collect();
        assert_eq!(classes.len(), 4);
    }

    #[test]
    fn paging_through_every_bucket_reads_each_event_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = EventStore::open(dir.path(), 1 << 20, 0, BucketWidths::default()).unwrap();
        let (a, b) = (GatewayId::new("a").unwrap(), GatewayId::new("b").unwrap());
        let classes = EventClass::ALL;
        // Batches of mixed classes, out of order, from two gateways, some past a chunk's size.
        for round in 0..30u64 {
            let batch: Vec<Event> = (0..9)
                .map(|i| {
                    let seq = 1 + ((round * 9 + i) * 7) % 270;
                    big(
                        seq,
                        if i == 4 { 900 } else { 10 },
                        classes[(seq % 4) as usize],
                    )
                })
                .collect();
            s.store_batch(&a, &batch).unwrap();
            s.store_batch(&b, &batch[..2]).unwrap();
        }
        let mut after = 0;
        let mut read = Vec::new();
        loop {
            let page = s.events_after(&a, after, 7).unwrap();
            assert!(page.len() <= 7);
            let Some(last) = page.last() else { break };
            after = last.seq;
            read.extend(page.iter().map(|e| e.seq));
        }
        assert_eq!(read, (1..=270).collect::<Vec<_>>());
        assert_eq!(s.events_after(&a, 0, 0).unwrap().len(), 0);
        assert_eq!(s.events_after(&b, 0, 1000).unwrap().len(), 60);
    }

    #[test]
    fn deduplicates_per_gateway_and_reads_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = EventStore::open(dir.path(), 1 << 20, 0, BucketWidths::default()).unwrap();
        let a = GatewayId::new("a").unwrap();
        let b = GatewayId::new("a-b").unwrap();
        let raw = serde_json::to_vec(&firmware_config::wire::EventBatch {
            events: vec![ev(3), ev(1), ev(2)],
        })
        .unwrap();
        let r = s
            .store_batch_raw(&a, &[ev(3), ev(1), ev(2)], Some(&raw))
            .unwrap();
        assert_eq!(
            (r.new, r.duplicates, r.ranges.clone(), r.high),
            (3, 0, vec![(1, 3)], 3)
        );
        let r = s.store_batch(&a, &[ev(2), ev(4), ev(4)]).unwrap();
        assert_eq!((r.new, r.duplicates), (1, 2));
        let r = s.store_batch(&b, &[ev(1)]).unwrap();
        assert_eq!(r.new, 1, "another gateway's seq 1 is not a duplicate");
        let seqs: Vec<u64> = s
            .events_after(&a, 0, 10)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, vec![1, 2, 3, 4]);
        let seqs: Vec<u64> = s
            .events_after(&a, 2, 1)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, vec![3]);
        assert_eq!(s.events_after(&b, 0, 10).unwrap().len(), 1);
        assert_eq!(
            s.events_after(&a, 0, 10).unwrap()[0].payload.get(),
            "{\"n\":1}"
        );
    }

    #[test]
    fn each_event_says_when_it_was_received_and_an_absurd_time_is_kept_and_flagged() {
        let dir = tempfile::tempdir().unwrap();
        let s = EventStore::open(dir.path(), 1 << 20, 0, BucketWidths::default()).unwrap();
        let a = GatewayId::new("gw-a").unwrap();
        let mut now = ev(2);
        now.time = time::OffsetDateTime::now_utc();
        // ev(1) happened in 1970: a box booted without its clock.
        s.store_batch(&a, &[ev(1), now]).unwrap();
        let got = s.events_after(&a, 0, 10).unwrap();
        assert_eq!(got.len(), 2, "both kept");
        assert!(got.iter().all(|e| e.received.is_some()));
        assert!(got[0].time_suspect() && !got[1].time_suspect());
        // A chunk stored before central kept the time still reads, unflagged.
        let legacy = [
            &3u64.to_be_bytes()[..],
            &3u64.to_be_bytes()[..],
            br#"{"events":[{"seq":3,"class":"telemetry","kind":"t","time":"1970-01-01T00:00:00Z","payload":{}}]}"#,
        ]
        .concat();
        let (bucket, ..) = s.chunks()[0].clone();
        s.buckets()
            .tree(&s.db, bucket)
            .unwrap()
            .insert(key(&a, 3), legacy)
            .unwrap();
        let got = s.events_after(&a, 2, 10).unwrap();
        assert_eq!(got[0].seq, 3);
        assert!(got[0].received.is_none() && !got[0].time_suspect());
    }
}
