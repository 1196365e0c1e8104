//! Chunks by age, for retention: each chunk has a place in `chunks_by_age` under every class
//! it holds and the time central received it, so that the pruner reads the oldest chunks of a
//! class straight from the front of a range, never scanning the rest. Ingest stores a batch
//! as it came (one chunk, classes mixed); the pruner, off the ingest path, takes a class out
//! of a chunk by writing the chunk again without it, and deletes the chunk when nothing is left.
//!
//! Pruning is two steps, so that nothing is deleted before it is archived: [`EventStore::expired`]
//! reads the oldest chunks of a class past a time, the caller writes them away, then
//! [`EventStore::forget`] deletes them and flushes. Only the pruner (one task) does either.

use firmware_config::wire::{Event, EventBatch, EventClass};

use super::{chunk_body, encode_chunk, EventStore, StoreError};

/// Marks a store whose chunks all have their places by age.
const INDEXED: &[u8] = b"chunks_by_age.v1";

pub(super) fn class_code(class: EventClass) -> u8 {
    class.index() as u8
}

pub const CLASSES: [EventClass; 4] = EventClass::ALL;

/// `class, received (ms, big-endian, never negative), chunk key`: sorted by age within a class.
pub(super) fn age_key(class: EventClass, received_ms: i64, chunk_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + chunk_key.len());
    k.push(class_code(class));
    k.extend_from_slice(&received_ms.max(0).to_be_bytes());
    k.extend_from_slice(chunk_key);
    k
}

fn received_of(age_key: &[u8]) -> i64 {
    age_key
        .get(1..9)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(i64::from_be_bytes)
        .unwrap_or(0)
}

/// What becomes of a chunk once a class is taken out of it.
#[derive(Debug)]
enum Rest {
    /// Nothing is left: delete it.
    Nothing,
    /// Other classes are left: the chunk as it is written again.
    Chunk(Vec<u8>),
    /// It was gone already (a prune stopped halfway): only its place is left to delete.
    Gone,
}

/// The events of one class in one chunk, past their time.
#[derive(Debug)]
pub struct ExpiredChunk {
    pub gateway: String,
    /// When central received them (Unix ms).
    pub received_ms: i64,
    pub events: Vec<Event>,
    age_key: Vec<u8>,
    rest: Rest,
}

/// The oldest chunks of a class past a time, in order of age.
#[derive(Debug)]
pub struct Expired {
    pub class: EventClass,
    pub chunks: Vec<ExpiredChunk>,
}

impl Expired {
    pub fn events(&self) -> usize {
        self.chunks.iter().map(|c| c.events.len()).sum()
    }

    /// Names this batch by its first chunk: the same after a crash and a second try, so that
    /// an archive file written twice is the same file, not a second copy.
    pub fn name(&self) -> Option<String> {
        let first = self.chunks.first()?;
        let seq = first.events.iter().map(|e| e.seq).min().unwrap_or(0);
        Some(format!("{}-{}-{seq}", first.received_ms, first.gateway))
    }
}

fn gateway_of(chunk_key: &[u8]) -> Option<&[u8]> {
    chunk_key.len().checked_sub(9).map(|n| &chunk_key[..n])
}

impl EventStore {
    /// Gives every chunk its places by age once, for stores written before retention. A chunk
    /// that does not say when it was received is counted from now.
    pub(super) fn index_by_age(&self) -> Result<(), StoreError> {
        let meta = self.db.open_tree("store_meta")?;
        if meta.get(INDEXED)?.is_some() {
            return Ok(());
        }
        let now = self.clock.unix_ms();
        let (mut done, mut places) = (0u64, sled::Batch::default());
        for item in self.chunks.iter() {
            let (k, v) = item?;
            let (received, json) = chunk_body(&v);
            let received = received.map_or(now, |t| (t.unix_timestamp_nanos() / 1_000_000) as i64);
            let batch: EventBatch = serde_json::from_slice(json)?;
            let classes: std::collections::BTreeSet<EventClass> =
                batch.events.iter().map(|e| e.class).collect();
            for class in classes {
                places.insert(age_key(class, received, &k), &[] as &[u8]);
            }
            done += 1;
            if done % 10_000 == 0 {
                self.by_age.apply_batch(std::mem::take(&mut places))?;
                if done % 100_000 == 0 {
                    tracing::info!(chunks = done, "placing stored events by age for retention");
                }
            }
        }
        self.by_age.apply_batch(places)?;
        meta.insert(INDEXED, &[1])?;
        self.db.flush()?;
        if done > 0 {
            tracing::info!(chunks = done, "stored events placed by age for retention");
        }
        Ok(())
    }

    /// Up to `max_chunks` of the oldest chunks holding `class` received before `before_ms`,
    /// with their events of that class.
    pub fn expired(
        &self,
        class: EventClass,
        before_ms: i64,
        max_chunks: usize,
    ) -> Result<Expired, StoreError> {
        let start = vec![class_code(class)];
        let end = age_key(class, before_ms, &[]);
        let mut out = Expired {
            class,
            chunks: Vec::new(),
        };
        for item in self.by_age.range(start..end).take(max_chunks) {
            let (age_key, _) = item?;
            let chunk_key = &age_key[9..];
            let gateway = gateway_of(chunk_key)
                .map(|g| String::from_utf8_lossy(g).into_owned())
                .unwrap_or_default();
            let Some(v) = self.chunks.get(chunk_key)? else {
                out.chunks.push(ExpiredChunk {
                    gateway,
                    received_ms: received_of(&age_key),
                    events: Vec::new(),
                    age_key: age_key.to_vec(),
                    rest: Rest::Gone,
                });
                continue;
            };
            let (received, json) = chunk_body(&v);
            let batch: EventBatch = serde_json::from_slice(json)?;
            let (events, others): (Vec<Event>, Vec<Event>) =
                batch.events.into_iter().partition(|e| e.class == class);
            let rest = if others.is_empty() {
                Rest::Nothing
            } else {
                let received = received.map_or(received_of(&age_key), |t| {
                    (t.unix_timestamp_nanos() / 1_000_000) as i64
                });
                let others: Vec<&Event> = others.iter().collect();
                Rest::Chunk(encode_chunk(&others, None, received)?)
            };
            out.chunks.push(ExpiredChunk {
                gateway,
                received_ms: received_of(&age_key),
                events,
                age_key: age_key.to_vec(),
                rest,
            });
        }
        Ok(out)
    }

    /// Takes the events of `expired` out of the store (a chunk with other classes is written
    /// again without them) and flushes. Writes nothing while the disk is at its last bytes
    /// (sled writes to delete too): returns false then.
    pub fn forget(&self, expired: &Expired) -> Result<bool, StoreError> {
        if self.stopped() {
            return Err(StoreError::Stopped);
        }
        let critical = {
            let mut disk = self
                .disk
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            disk.check(0);
            disk.critical()
        };
        if critical {
            return Ok(false);
        }
        let (mut chunks, mut places) = (sled::Batch::default(), sled::Batch::default());
        for c in &expired.chunks {
            let chunk_key = &c.age_key[9..];
            match &c.rest {
                Rest::Nothing => chunks.remove(chunk_key),
                Rest::Chunk(rest) => chunks.insert(chunk_key, rest.as_slice()),
                Rest::Gone => {}
            }
            places.remove(c.age_key.as_slice());
        }
        // Chunks first: a crash between leaves places whose events are gone, which the next
        // pass finds empty and clears; never events without their place.
        let written = self
            .chunks
            .apply_batch(chunks)
            .and_then(|()| self.by_age.apply_batch(places))
            .and_then(|()| self.db.flush().map(drop));
        if let Err(e) = written {
            if firmware_config::runtime::sled_store::is_out_of_space(&e) {
                tracing::error!(error = %e, "pruning met a full disk; central restarts the store");
                self.stopped
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            return Err(StoreError::Sled(e));
        }
        Ok(true)
    }

    /// When the oldest kept event of `class` was received (Unix ms), if any is kept.
    pub fn oldest(&self, class: EventClass) -> Result<Option<i64>, StoreError> {
        let start = vec![class_code(class)];
        let end = vec![class_code(class) + 1];
        Ok(self
            .by_age
            .range(start..end)
            .next()
            .transpose()?
            .map(|(k, _)| received_of(&k)))
    }

    /// Bytes the store takes on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use firmware_config::ids::GatewayId;
    use firmware_config::runtime::clock::Clock;

    /// An event of `class` numbered `seq`, its payload `{"n": seq}`.
    pub(crate) fn ev(seq: u64, class: EventClass) -> Event {
        Event {
            seq,
            class,
            kind: "k".into(),
            time: time::OffsetDateTime::UNIX_EPOCH,
            payload: serde_json::value::RawValue::from_string(format!("{{\"n\":{seq}}}")).unwrap(),
            source: None,
        }
    }

    fn seqs(s: &EventStore, gw: &GatewayId) -> Vec<u64> {
        s.events_after(gw, 0, 1000)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect()
    }

    #[test]
    fn each_class_is_pruned_on_its_own_and_a_pruned_event_sent_again_is_still_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let gw = GatewayId::new("gw-a").unwrap();
        let hour = time::Duration::hours(1);
        {
            // Received two hours ago: a mixed batch.
            let s = EventStore::open(dir.path(), 1 << 20, 0)
                .unwrap()
                .with_clock(Clock::system().skewed(-2 * hour));
            let old = [
                ev(1, EventClass::Telemetry),
                ev(2, EventClass::Alert),
                ev(3, EventClass::Telemetry),
                ev(4, EventClass::Submission),
            ];
            s.store_batch(&gw, &old).unwrap();
        }
        let s = EventStore::open(dir.path(), 1 << 20, 0).unwrap();
        s.store_batch(&gw, &[ev(5, EventClass::Telemetry)]).unwrap();
        let now = Clock::system().unix_ms();
        let cutoff = now - hour.whole_milliseconds() as i64;
        assert!(s.oldest(EventClass::Telemetry).unwrap().unwrap() < cutoff);

        let expired = s.expired(EventClass::Telemetry, cutoff, 100).unwrap();
        assert_eq!(
            expired.chunks.len(),
            1,
            "one chunk of the old batch's telemetry"
        );
        let got: Vec<u64> = expired.chunks[0].events.iter().map(|e| e.seq).collect();
        assert_eq!(got, vec![1, 3]);
        assert!(s.forget(&expired).unwrap());
        assert_eq!(seqs(&s, &gw), vec![2, 4, 5], "alerts and submissions kept");
        assert!(s
            .expired(EventClass::Telemetry, cutoff, 100)
            .unwrap()
            .chunks
            .is_empty());
        assert!(s.oldest(EventClass::Telemetry).unwrap().unwrap() >= cutoff);

        // Sent again after pruning: acknowledged as held, not stored a second time.
        let again = s.store_batch(&gw, &[ev(1, EventClass::Telemetry)]).unwrap();
        assert_eq!((again.new, again.duplicates), (0, 1));
        assert_eq!(seqs(&s, &gw), vec![2, 4, 5]);

        // The alert's time has not come at an hour; at its own cutoff it goes.
        assert_eq!(
            s.expired(EventClass::Alert, cutoff, 100).unwrap().events(),
            1
        );
        assert!(s
            .expired(EventClass::Alert, now - 3 * 3_600_000, 100)
            .unwrap()
            .chunks
            .is_empty());
    }

    #[test]
    fn a_store_written_before_retention_is_placed_by_age_once() {
        let dir = tempfile::tempdir().unwrap();
        let gw = GatewayId::new("gw-a").unwrap();
        {
            let s = EventStore::open(dir.path(), 1 << 20, 0).unwrap();
            // As an older central wrote it: one mixed chunk, no time, no place by age.
            let legacy = [
                &1u64.to_be_bytes()[..],
                &3u64.to_be_bytes()[..],
                br#"{"events":[
                  {"seq":1,"class":"telemetry","kind":"t","time":"1970-01-01T00:00:00Z","payload":{}},
                  {"seq":2,"class":"alert","kind":"a","time":"1970-01-01T00:00:00Z","payload":{}},
                  {"seq":3,"class":"telemetry","kind":"t","time":"1970-01-01T00:00:00Z","payload":{}}]}"#,
            ]
            .concat();
            s.chunks.insert(super::super::key(&gw, 1), legacy).unwrap();
            s.by_age.clear().unwrap();
            s.db.open_tree("store_meta").unwrap().clear().unwrap();
            s.db.flush().unwrap();
        }
        let s = EventStore::open(dir.path(), 1 << 20, 0).unwrap();
        assert_eq!(seqs(&s, &gw), vec![1, 2, 3]);
        assert_eq!((s.chunks.len(), s.by_age.len()), (1, 2));
        let later = Clock::system().unix_ms() + 1_000;
        let t = s.expired(EventClass::Telemetry, later, 100).unwrap();
        assert_eq!(t.events(), 2);
        let a = s.expired(EventClass::Alert, later, 100).unwrap();
        assert_eq!(a.events(), 1);
        // Counted from the upgrade, not from 1970.
        assert!(s
            .expired(EventClass::Telemetry, later - 60_000, 100)
            .unwrap()
            .chunks
            .is_empty());
        drop(s);
        // Once only: a second open finds the work done.
        let s = EventStore::open(dir.path(), 1 << 20, 0).unwrap();
        assert_eq!((s.chunks.len(), s.by_age.len()), (1, 2));
        // Its telemetry pruned, its alert stays, in the chunk written again.
        let t = s.expired(EventClass::Telemetry, later, 100).unwrap();
        assert!(s.forget(&t).unwrap());
        assert_eq!(seqs(&s, &gw), vec![2]);
        let a = s.expired(EventClass::Alert, later, 100).unwrap();
        assert_eq!(a.events(), 1);
        assert!(s.forget(&a).unwrap());
        assert_eq!((s.chunks.len(), s.by_age.len()), (0, 0));
    }

    /// The steady state retention makes: each round every gateway sends a batch of ~10 KB and
    /// the round from `window` rounds before is pruned, so the events kept stay the same. The
    /// store's files must stop growing once the window has turned over (sled keeps pages over
    /// 128 KiB in files of their own that this load never gives back: stored whole, such
    /// batches grew the store by about what was written).
    #[test]
    fn the_store_stops_growing_when_retention_deletes_what_ingest_adds() {
        let dir = tempfile::tempdir().unwrap();
        let s = EventStore::open(dir.path(), 4 << 20, 0).unwrap();
        let gateways: Vec<GatewayId> = (0..50)
            .map(|i| GatewayId::new(format!("gw-{i:03}")).unwrap())
            .collect();
        let (per_batch, window, rounds) = (40u64, 60usize, 240usize);
        let pad = "x".repeat(220);
        let mut added = std::collections::VecDeque::new();
        let mut sizes = Vec::new();
        for round in 0..rounds as u64 {
            let before = s.by_age.len();
            let batches: Vec<(Vec<Event>, Vec<u8>)> = gateways
                .iter()
                .map(|_| {
                    let events: Vec<Event> = (1..=per_batch)
                        .map(|i| {
                            let mut e = ev(round * per_batch + i, EventClass::Telemetry);
                            e.payload = serde_json::value::RawValue::from_string(format!(
                                "{{\"pad\":\"{pad}\"}}"
                            ))
                            .unwrap();
                            e
                        })
                        .collect();
                    let raw = serde_json::to_vec(&EventBatch {
                        events: events.clone(),
                    })
                    .unwrap();
                    (events, raw)
                })
                .collect();
            let input: Vec<super::super::BatchIn<'_>> = gateways
                .iter()
                .zip(&batches)
                .map(|(g, (events, raw))| (g, events.as_slice(), Some(raw.as_slice())))
                .collect();
            for r in s.store_batches(&input) {
                assert_eq!(r.unwrap().new, per_batch);
            }
            added.push_back(s.by_age.len() - before);
            if added.len() > window {
                let n = added.pop_front().unwrap_or_default();
                let expired = s.expired(EventClass::Telemetry, i64::MAX, n).unwrap();
                assert_eq!(expired.chunks.len(), n);
                assert!(s.forget(&expired).unwrap());
            }
            sizes.push(s.size_on_disk().unwrap());
        }
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        let (steady, end) = (sizes[2 * window], sizes[rounds - 1]);
        let written = mib(gateways.len() as u64 * per_batch * 250 * rounds as u64);
        assert!(
            mib(end) < 1.25 * mib(steady) + 2.0,
            "the store grew from {:.1} MiB at round {} to {:.1} MiB at round {rounds} \
             ({written:.0} MiB written, {:.0} MiB kept)",
            mib(steady),
            2 * window,
            mib(end),
            written * window as f64 / rounds as f64
        );
    }
}
