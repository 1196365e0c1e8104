//! `EventStore`: central's durable store of every gateway's events, deduplicated on
//! `(gateway, seq)`. A batch is acknowledged to its gateway only after it is flushed here.

use std::collections::HashMap;
use std::path::Path;

use sled::Transactional;

use firmware_config::ids::GatewayId;
use firmware_config::wire::Event;

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
}

/// One batch to store: its gateway, its events, and its payload as received.
pub type BatchIn<'a> = (&'a GatewayId, &'a [Event], Option<&'a [u8]>);

/// The sequence numbers held of one gateway, as sorted inclusive ranges.
type SeenSet = Vec<(u64, u64)>;

pub struct EventStore {
    db: sled::Db,
    /// `gateway/first_seq` → a chunk: the new events of one batch (see `encode_chunk`).
    chunks: sled::Tree,
    /// `gateway` → the sequence numbers stored so far, as merged inclusive ranges.
    seen: sled::Tree,
    /// Cache of `seen`; only the ingest path (one task) changes it.
    seen_cache: std::sync::Mutex<std::collections::HashMap<GatewayId, Vec<(u64, u64)>>>,
}

fn key(gateway: &GatewayId, seq: u64) -> Vec<u8> {
    // Ids never contain '/', so the prefix is unambiguous.
    let mut k = Vec::with_capacity(gateway.as_str().len() + 9);
    k.extend_from_slice(gateway.as_str().as_bytes());
    k.push(b'/');
    k.extend_from_slice(&seq.to_be_bytes());
    k
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
fn merge(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
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

fn encode_ranges(set: &[(u64, u64)]) -> Vec<u8> {
    set.iter()
        .flat_map(|(a, b)| a.to_be_bytes().into_iter().chain(b.to_be_bytes()))
        .collect()
}

fn decode_ranges(bytes: &[u8]) -> Vec<(u64, u64)> {
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
fn encode_chunk(events: &[&Event], raw: Option<&[u8]>) -> Result<Vec<u8>, serde_json::Error> {
    #[derive(serde::Serialize)]
    struct Batch<'a> {
        events: &'a [&'a Event],
    }
    let min = events.iter().map(|e| e.seq).min().unwrap_or(0);
    let max = events.iter().map(|e| e.seq).max().unwrap_or(0);
    let mut out = Vec::with_capacity(16 + raw.map_or(events.len() * 256, <[u8]>::len));
    out.extend_from_slice(&min.to_be_bytes());
    out.extend_from_slice(&max.to_be_bytes());
    match raw {
        Some(raw) => out.extend_from_slice(raw),
        None => serde_json::to_writer(&mut out, &Batch { events })?,
    }
    Ok(out)
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

    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let db = firmware_config::runtime::sled_store::open(
            &sled::Config::new()
                .path(dir.join("events"))
                .cache_capacity(cache_bytes)
                .flush_every_ms(None),
        )?;
        let chunks = db.open_tree("chunks")?;
        let seen = db.open_tree("seen")?;
        Ok(Self {
            db,
            chunks,
            seen,
            seen_cache: Default::default(),
        })
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
    pub fn store_batches(&self, batches: &[BatchIn<'_>]) -> Vec<Result<Stored, StoreError>> {
        // Seen sets as this group leaves them: a gateway may have two batches in one group.
        let mut group: HashMap<GatewayId, SeenSet> = HashMap::new();
        let mut results: Vec<Result<Stored, StoreError>> = batches
            .iter()
            .map(|(gateway, events, raw)| {
                let seen = match group.get(*gateway) {
                    Some(set) => set.clone(),
                    None => self.seen_of(gateway)?,
                };
                let (stored, set) = self.write_batch(gateway, seen, events, *raw)?;
                if let Some(set) = set {
                    group.insert((*gateway).clone(), set);
                }
                Ok(stored)
            })
            .collect();
        if !group.is_empty() {
            if let Err(e) = self.db.flush() {
                let e = e.to_string();
                return results
                    .drain(..)
                    .map(|_| Err(StoreError::Flush(e.clone())))
                    .collect();
            }
            if let Ok(mut cache) = self.seen_cache.lock() {
                cache.extend(group);
            }
        }
        results
    }

    /// Writes the new events of one batch and its seen set, unflushed; returns the new set
    /// when it changed.
    fn write_batch(
        &self,
        gateway: &GatewayId,
        seen: SeenSet,
        events: &[Event],
        raw: Option<&[u8]>,
    ) -> Result<(Stored, Option<SeenSet>), StoreError> {
        let mut fresh: Vec<&Event> = Vec::with_capacity(events.len());
        let mut batch_seqs = std::collections::HashSet::with_capacity(events.len());
        for e in events {
            if batch_seqs.insert(e.seq) && !contains(&seen, e.seq) {
                fresh.push(e);
            }
        }
        let new = fresh.len() as u64;
        let duplicates = events.len() as u64 - new;
        let mut set = seen;
        let mut changed = None;
        if let Some(first) = fresh.iter().map(|e| e.seq).min() {
            let raw = raw.filter(|_| fresh.len() == events.len());
            let chunk = encode_chunk(&fresh, raw)?;
            set = merge(&set, &ranges(fresh.iter().map(|e| e.seq)));
            // One atomic write: the chunk and the seen set together.
            (&self.chunks, &self.seen)
                .transaction(|(chunks, seen)| {
                    chunks.insert(key(gateway, first), chunk.clone())?;
                    seen.insert(gateway.as_str().as_bytes(), encode_ranges(&set))?;
                    Ok(())
                })
                .map_err(|e: sled::transaction::TransactionError<()>| match e {
                    sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
                    sled::transaction::TransactionError::Abort(()) => {
                        StoreError::Sled(sled::Error::Unsupported("aborted".into()))
                    }
                })?;
            changed = Some(set.clone());
        }
        Ok((
            Stored {
                fresh: fresh.iter().map(|e| e.seq).collect(),
                new,
                duplicates,
                ranges: ranges(events.iter().map(|e| e.seq)),
                high: set.last().map(|r| r.1).unwrap_or(0),
            },
            changed,
        ))
    }

    pub fn high(&self, gateway: &GatewayId) -> Result<u64, StoreError> {
        Ok(self.seen_of(gateway)?.last().map(|r| r.1).unwrap_or(0))
    }

    /// Up to `limit` stored events of `gateway` after `after`, in sequence order. Reads every
    /// chunk of the gateway that may hold one (skipping the others by their header): meant for
    /// audits and checks, not for bulk export.
    pub fn events_after(
        &self,
        gateway: &GatewayId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let mut prefix = gateway.as_str().as_bytes().to_vec();
        prefix.push(b'/');
        let mut found: Vec<Event> = Vec::new();
        for item in self.chunks.scan_prefix(&prefix) {
            let (_, v) = item?;
            if chunk_max(&v) <= after {
                continue;
            }
            let batch: firmware_config::wire::EventBatch =
                serde_json::from_slice(v.get(16..).unwrap_or_default())?;
            found.extend(batch.events.into_iter().filter(|e| e.seq > after));
        }
        found.sort_unstable_by_key(|e| e.seq);
        found.truncate(limit);
        Ok(found)
    }
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
            let s = EventStore::open(dir.path(), 1 << 20).unwrap();
            s.store_batch(&a, &[ev(1), ev(2), ev(5)]).unwrap();
        }
        let s = EventStore::open(dir.path(), 1 << 20).unwrap();
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
            let s = EventStore::open(dir.path(), 1 << 20).unwrap();
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
        let s = EventStore::open(dir.path(), 1 << 20).unwrap();
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

    #[test]
    fn deduplicates_per_gateway_and_reads_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = EventStore::open(dir.path(), 1 << 20).unwrap();
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
}
