//! Retention's side of the store: the buckets of a class past a time, read in pages for the
//! archive, then dropped whole (see `buckets`). Nothing is dropped before it is archived: the
//! pruner reads every page of a bucket and writes it away, then drops the tree, and a crash
//! between makes it write the same files again. Only the pruner (one task) does either.
//!
//! A store an older central wrote (one `chunks` tree of mixed classes, with `chunks_by_age`
//! beside it) is moved into buckets once, when it opens.

use firmware_config::wire::{Event, EventBatch, EventClass};

use super::buckets::Bucket;
use super::{chunk_body, chunk_bytes, split_chunks, EventStore, StoreError};

pub const CLASSES: [EventClass; 4] = EventClass::ALL;

/// Where an older central kept every chunk, and each chunk's places by age.
const LEGACY_CHUNKS: &str = "chunks";
const LEGACY_TREES: [&str; 2] = ["chunks_by_age", "store_meta"];

/// The events of one chunk, as the archive takes them.
#[derive(Debug)]
pub struct ExpiredChunk {
    pub gateway: String,
    /// When central received them (Unix ms).
    pub received_ms: i64,
    pub events: Vec<Event>,
    key: Vec<u8>,
}

/// A page of a bucket past its time: chunks in key order.
#[derive(Debug)]
pub struct Expired {
    pub class: EventClass,
    pub chunks: Vec<ExpiredChunk>,
}

impl ExpiredChunk {
    /// Events of `gateway` received at `received_ms`, from a store without chunk keys.
    pub(crate) fn new(gateway: String, received_ms: i64, events: Vec<Event>) -> Self {
        Self {
            gateway,
            received_ms,
            events,
            key: Vec::new(),
        }
    }
}

impl Expired {
    pub fn events(&self) -> usize {
        self.chunks.iter().map(|c| c.events.len()).sum()
    }

    /// Names this page by its first chunk: the same after a crash and a second try, so that
    /// an archive file written twice is the same file, not a second copy.
    pub fn name(&self) -> Option<String> {
        let first = self.chunks.first()?;
        let seq = first.events.iter().map(|e| e.seq).min().unwrap_or(0);
        Some(format!("{}-{}-{seq}", first.received_ms, first.gateway))
    }

    /// Where the next page starts: just after this one's last chunk.
    pub fn last_key(&self) -> Option<&[u8]> {
        self.chunks.last().map(|c| c.key.as_slice())
    }
}

fn gateway_of(chunk_key: &[u8]) -> Option<&[u8]> {
    chunk_key.len().checked_sub(9).map(|n| &chunk_key[..n])
}

fn unix_ms(t: time::OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

impl EventStore {
    /// The buckets of `class` whose every event was received before `before_ms`, oldest
    /// first.
    pub fn expired_buckets(&self, class: EventClass, before_ms: i64) -> Vec<Bucket> {
        self.buckets()
            .of_class(class)
            .map(|(b, _)| *b)
            .filter(|b| b.end_ms() <= before_ms)
            .collect()
    }

    /// Up to `max_chunks` chunks of `bucket` after the key `after` (from its start when None).
    pub fn read_bucket(
        &self,
        bucket: &Bucket,
        after: Option<&[u8]>,
        max_chunks: usize,
    ) -> Result<Expired, StoreError> {
        let mut out = Expired {
            class: bucket.class,
            chunks: Vec::new(),
        };
        let Some(open) = self.buckets().get(bucket) else {
            return Ok(out);
        };
        let from = match after {
            Some(k) => std::ops::Bound::Excluded(k.to_vec()),
            None => std::ops::Bound::Unbounded,
        };
        for item in open
            .tree
            .range::<Vec<u8>, _>((from, std::ops::Bound::Unbounded))
            .take(max_chunks)
        {
            let (k, v) = item?;
            let chunk = chunk_bytes(&v, open.segment.as_deref())?;
            let (received, json) = chunk_body(&chunk);
            let batch: EventBatch = serde_json::from_slice(json)?;
            out.chunks.push(ExpiredChunk {
                gateway: gateway_of(&k)
                    .map(|g| String::from_utf8_lossy(g).into_owned())
                    .unwrap_or_default(),
                received_ms: received.map_or(bucket.start_ms, unix_ms),
                events: batch.events,
                key: k.to_vec(),
            });
        }
        Ok(out)
    }

    /// How many events `bucket` holds, as its header counts them.
    pub fn bucket_events(&self, bucket: &Bucket) -> Result<u64, StoreError> {
        Ok(self.buckets().header(bucket)?.map_or(0, |(_, n)| n))
    }

    /// Drops `bucket` with everything in it, and flushes. Writes nothing while the disk is at
    /// its last bytes (dropping writes a little too): returns false then.
    pub fn drop_bucket(&self, bucket: &Bucket) -> Result<bool, StoreError> {
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
        if let Err(e) = self.buckets().drop_bucket(&self.db, bucket) {
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
        let buckets = self.buckets();
        let mut oldest: Option<i64> = None;
        for (bucket, _) in buckets.of_class(class) {
            if let Some((first, _)) = buckets.header(bucket)?.filter(|(_, n)| *n > 0) {
                oldest = Some(oldest.map_or(first, |o| o.min(first)));
            }
        }
        Ok(oldest)
    }

    /// Bytes the store takes on disk: sled's files and the segment files.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        let segments = self.buckets().segment_bytes();
        Ok(self.db.size_on_disk()? + segments)
    }

    /// Moves the chunks of a store an older central wrote into buckets, a page at a time,
    /// each page one transaction (its chunks out of the old tree and into their buckets), so
    /// that a crash halfway loses nothing and counts nothing twice. A chunk that does not say
    /// when it was received is counted from now.
    pub(super) fn move_legacy_chunks(&self) -> Result<(), StoreError> {
        let names = self.db.tree_names();
        let has = |n: &str| names.iter().any(|t| t.as_ref() == n.as_bytes());
        if has(LEGACY_CHUNKS) {
            let legacy = self.db.open_tree(LEGACY_CHUNKS)?;
            let now = self.clock.unix_ms().max(0);
            let total = legacy.len();
            let mut moved = 0usize;
            loop {
                let page: Vec<(sled::IVec, sled::IVec)> =
                    legacy.iter().take(1_000).collect::<Result<_, _>>()?;
                if page.is_empty() {
                    break;
                }
                self.move_page(&legacy, &page, now)?;
                self.db.flush()?;
                moved += page.len();
                if moved % 100_000 < page.len() {
                    tracing::info!(moved, total, "moving stored events into time buckets");
                }
            }
            if moved > 0 {
                tracing::info!(chunks = moved, "stored events moved into time buckets");
            }
            self.db.drop_tree(LEGACY_CHUNKS)?;
        }
        for name in LEGACY_TREES {
            if has(name) {
                self.db.drop_tree(name)?;
            }
        }
        self.db.flush()?;
        Ok(())
    }

    fn move_page(
        &self,
        legacy: &sled::Tree,
        page: &[(sled::IVec, sled::IVec)],
        now: i64,
    ) -> Result<(), StoreError> {
        let mut buckets = self.buckets();
        let mut writes = super::buckets::BucketWrites::new(legacy.clone(), &buckets);
        for (k, v) in page {
            let (received, json) = chunk_body(v);
            let timed = received.is_some();
            let received = received.map_or(now, unix_ms).max(0);
            let batch: EventBatch = serde_json::from_slice(json)?;
            let events: Vec<&Event> = batch.events.iter().collect();
            let gateway = gateway_of(k).unwrap_or_default();
            for mut part in split_chunks(&events, None, received)? {
                if !timed {
                    // Not known when central received them: the chunk does not claim a time.
                    part.bytes.drain(16..super::CHUNK_HEADER);
                }
                let bucket = Bucket::of(part.class, received, self.widths.of(part.class));
                let mut key = gateway.to_vec();
                key.push(b'/');
                key.extend_from_slice(&part.first.to_be_bytes());
                writes.add(
                    &mut buckets,
                    &self.db,
                    bucket,
                    received,
                    key,
                    part.bytes,
                    part.events,
                )?;
            }
        }
        writes
            .commit(|old| {
                for (k, _) in page {
                    old.remove(k)?;
                }
                Ok(())
            })
            .map_err(super::transaction_error)
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

    /// Buckets of a tenth of an hour for telemetry (an hour's retention), defaults otherwise.
    pub(crate) fn hourly() -> super::super::BucketWidths {
        super::super::BucketWidths::for_retention(&firmware_config::config::central::Retention {
            telemetry: std::time::Duration::from_secs(3600),
            ..Default::default()
        })
    }

    /// Reads every page of `bucket` (pages of `page` chunks) and drops it; the events read.
    fn prune(s: &EventStore, bucket: &Bucket, page: usize) -> Vec<u64> {
        let mut got = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let p = s.read_bucket(bucket, after.as_deref(), page).unwrap();
            got.extend(p.chunks.iter().flat_map(|c| c.events.iter().map(|e| e.seq)));
            if p.chunks.len() < page {
                break;
            }
            after = p.last_key().map(<[u8]>::to_vec);
        }
        assert_eq!(s.bucket_events(bucket).unwrap(), got.len() as u64);
        assert!(s.drop_bucket(bucket).unwrap());
        got.sort_unstable();
        got
    }

    #[test]
    fn each_class_is_pruned_on_its_own_and_a_pruned_event_sent_again_is_still_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let gw = GatewayId::new("gw-a").unwrap();
        let hour = time::Duration::hours(1);
        {
            // Received two hours ago: a mixed batch.
            let s = EventStore::open(dir.path(), 1 << 20, 0, hourly())
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
        let s = EventStore::open(dir.path(), 1 << 20, 0, hourly()).unwrap();
        s.store_batch(&gw, &[ev(5, EventClass::Telemetry)]).unwrap();
        let now = Clock::system().unix_ms();
        let cutoff = now - hour.whole_milliseconds() as i64;
        assert!(s.oldest(EventClass::Telemetry).unwrap().unwrap() < cutoff);

        let expired = s.expired_buckets(EventClass::Telemetry, cutoff);
        assert_eq!(expired.len(), 1, "the old batch's telemetry bucket");
        assert_eq!(prune(&s, &expired[0], 100), vec![1, 3]);
        assert_eq!(seqs(&s, &gw), vec![2, 4, 5], "alerts and submissions kept");
        assert!(s.expired_buckets(EventClass::Telemetry, cutoff).is_empty());
        assert!(s.oldest(EventClass::Telemetry).unwrap().unwrap() >= cutoff);

        // Sent again after pruning: acknowledged as held, not stored a second time.
        let again = s.store_batch(&gw, &[ev(1, EventClass::Telemetry)]).unwrap();
        assert_eq!((again.new, again.duplicates), (0, 1));
        assert_eq!(seqs(&s, &gw), vec![2, 4, 5]);

        // The alert's time (a year) is not an hour: its bucket is a week wide, and expires
        // only when a cutoff passes the week's end (which may be any time after the batch:
        // weeks are cut from the epoch, not from when a batch came).
        let alerts = s.expired_buckets(EventClass::Alert, i64::MAX);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].width_ms, 7 * 24 * 3600 * 1000);
        let week_end = alerts[0].start_ms + alerts[0].width_ms;
        assert!(week_end > now - 2 * hour.whole_milliseconds() as i64);
        assert!(s
            .expired_buckets(EventClass::Alert, week_end - 1)
            .is_empty());
        assert_eq!(s.expired_buckets(EventClass::Alert, week_end).len(), 1);
        // A page at a time, the last one short.
        for n in 10..40 {
            s.store_batch(&gw, &[ev(n, EventClass::Submission)])
                .unwrap();
        }
        let subs = s.expired_buckets(EventClass::Submission, i64::MAX);
        let want: Vec<u64> = std::iter::once(4).chain(10..40).collect();
        assert_eq!(
            subs.iter()
                .flat_map(|b| prune(&s, b, 7))
                .collect::<Vec<_>>(),
            want
        );
        assert_eq!(seqs(&s, &gw), vec![2, 5]);
        assert_eq!(s.oldest(EventClass::Submission).unwrap(), None);
    }

    /// The segment files under `dir`, by name.
    fn segment_files(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join("segments"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_buckets_events_are_in_its_segment_file_which_goes_when_the_bucket_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let gw = GatewayId::new("gw-a").unwrap();
        let two_hours_ago = Clock::system().skewed(-time::Duration::hours(2));
        let old_file = {
            let s = EventStore::open(dir.path(), 1 << 20, 0, hourly())
                .unwrap()
                .with_clock(two_hours_ago);
            s.store_batch(
                &gw,
                &[ev(1, EventClass::Telemetry), ev(2, EventClass::Telemetry)],
            )
            .unwrap();
            let files = segment_files(dir.path());
            assert_eq!(files.len(), 1, "{files:?}");
            // The tree holds where the chunk is, not the chunk.
            let (_, open) = s.buckets().all().pop().unwrap();
            let (_, entry) = open.tree.iter().next().unwrap().unwrap();
            assert!(super::super::segments::decode_pointer(&entry).is_some());
            let on_disk = std::fs::metadata(dir.path().join("segments").join(&files[0]))
                .unwrap()
                .len();
            assert!(on_disk > 40, "the chunk is in the file: {on_disk} bytes");
            files[0].clone()
        };
        // What a crash leaves: bytes past the last pointer in the old file, and the file of a
        // bucket whose tree was dropped before its file went.
        let old_path = dir.path().join("segments").join(&old_file);
        let mut torn = std::fs::read(&old_path).unwrap();
        torn.extend_from_slice(b"torn write");
        std::fs::write(&old_path, &torn).unwrap();
        std::fs::write(
            dir.path()
                .join("segments")
                .join("telemetry-0000000000000000-57e40"),
            b"left by a crash",
        )
        .unwrap();

        let s = EventStore::open(dir.path(), 1 << 20, 0, hourly())
            .unwrap()
            .with_clock(two_hours_ago);
        assert_eq!(segment_files(dir.path()), vec![old_file.clone()]);
        // The same bucket again: appended after the torn bytes, all read back.
        s.store_batch(&gw, &[ev(3, EventClass::Telemetry)]).unwrap();
        assert_eq!(seqs(&s, &gw), vec![1, 2, 3]);
        let s = s.with_clock(Clock::system());
        s.store_batch(&gw, &[ev(4, EventClass::Alert)]).unwrap();
        assert_eq!(segment_files(dir.path()).len(), 2);
        let size = s.size_on_disk().unwrap();

        let cutoff = Clock::system().unix_ms() - 3_600_000;
        let expired = s.expired_buckets(EventClass::Telemetry, cutoff);
        assert_eq!(expired.len(), 1);
        assert_eq!(prune(&s, &expired[0], 1), vec![1, 2, 3]);
        assert!(
            !segment_files(dir.path()).contains(&old_file),
            "the file went"
        );
        assert!(s.size_on_disk().unwrap() < size);
        assert_eq!(seqs(&s, &gw), vec![4]);
        // A pruned event sent again is still known.
        let again = s.store_batch(&gw, &[ev(2, EventClass::Telemetry)]).unwrap();
        assert_eq!(again.new, 0);
    }

    #[test]
    fn a_store_an_older_central_wrote_is_moved_into_buckets_once() {
        let dir = tempfile::tempdir().unwrap();
        let gw = GatewayId::new("gw-a").unwrap();
        let an_hour_ago = Clock::system().unix_ms() - 3_600_000;
        {
            let db = sled::open(dir.path().join("events")).unwrap();
            let chunks = db.open_tree(LEGACY_CHUNKS).unwrap();
            // As the first central wrote it: one mixed chunk, no time.
            let untimed = [
                &1u64.to_be_bytes()[..],
                &3u64.to_be_bytes()[..],
                br#"{"events":[
                  {"seq":1,"class":"telemetry","kind":"t","time":"1970-01-01T00:00:00Z","payload":{}},
                  {"seq":2,"class":"alert","kind":"a","time":"1970-01-01T00:00:00Z","payload":{}},
                  {"seq":3,"class":"telemetry","kind":"t","time":"1970-01-01T00:00:00Z","payload":{"x":[1,2]}}]}"#,
            ]
            .concat();
            chunks.insert(super::super::key(&gw, 1), untimed).unwrap();
            // As a later one did: with when it was received, an hour ago.
            let timed = super::super::encode_chunk(
                &[&ev(4, EventClass::Telemetry), &ev(5, EventClass::Telemetry)],
                None,
                an_hour_ago,
            )
            .unwrap();
            chunks.insert(super::super::key(&gw, 4), timed).unwrap();
            db.open_tree("chunks_by_age")
                .unwrap()
                .insert(b"x", b"")
                .unwrap();
            db.open_tree("store_meta")
                .unwrap()
                .insert(b"chunks_by_age.v1", b"1")
                .unwrap();
            db.flush().unwrap();
        }
        let s = EventStore::open(dir.path(), 1 << 20, 0, hourly()).unwrap();
        let back = s.events_after(&gw, 0, 10).unwrap();
        assert_eq!(
            back.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        assert_eq!(back[2].payload.get(), r#"{"x":[1,2]}"#);
        // An untimed chunk stays untimed; a timed one keeps its time.
        assert!(back[0].received.is_none() && back[1].received.is_none());
        let at = back[3]
            .received
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64);
        assert_eq!(at, Some(an_hour_ago));
        let names: Vec<String> =
            s.db.tree_names()
                .iter()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect();
        for gone in [LEGACY_CHUNKS, "chunks_by_age", "store_meta"] {
            assert!(!names.iter().any(|n| n == gone), "{gone} in {names:?}");
        }
        // The hour-old telemetry is past an hour; the untimed ones count from the upgrade.
        let now = Clock::system().unix_ms();
        let old = s.expired_buckets(EventClass::Telemetry, now - 3_600_000 + 400_000);
        assert_eq!(
            old.iter()
                .flat_map(|b| prune(&s, b, 10))
                .collect::<Vec<_>>(),
            vec![4, 5]
        );
        assert_eq!(
            s.oldest(EventClass::Alert)
                .unwrap()
                .map(|t| t >= now - 60_000),
            Some(true)
        );
        drop(s);
        // Once only: a second open finds the work done.
        let s = EventStore::open(dir.path(), 1 << 20, 0, hourly()).unwrap();
        assert_eq!(seqs(&s, &gw), vec![1, 2, 3]);
        let later = s.expired_buckets(EventClass::Telemetry, i64::MAX);
        assert_eq!(
            later
                .iter()
                .flat_map(|b| prune(&s, b, 10))
                .collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert_eq!(seqs(&s, &gw), vec![2]);
    }

    /// The steady state retention makes: each second every gateway sends a batch of ~10 KB and
    /// what is past a minute is pruned, so the events kept stay about the same. The store's
    /// files must stop growing once that minute has turned over (deleting chunks one by one,
    /// sled kept growing: by about what was written with batches stored whole, and still
    /// slowly with small chunks).
    #[test]
    fn the_store_stops_growing_when_retention_deletes_what_ingest_adds() {
        let dir = tempfile::tempdir().unwrap();
        let keep = firmware_config::config::central::Retention {
            telemetry: std::time::Duration::from_secs(60),
            ..Default::default()
        };
        let mut s = EventStore::open(
            dir.path(),
            4 << 20,
            0,
            super::super::BucketWidths::for_retention(&keep),
        )
        .unwrap();
        let gateways: Vec<GatewayId> = (0..50)
            .map(|i| GatewayId::new(format!("gw-{i:03}")).unwrap())
            .collect();
        let (per_batch, window, rounds) = (40u64, 60i64, 240usize);
        let pad = "x".repeat(220);
        // Round r is received at `start + r` seconds.
        let start = Clock::system().unix_ms() - 86_400_000;
        let mut sizes = Vec::new();
        for round in 0..rounds as u64 {
            let at = start + round as i64 * 1000;
            s = s.with_clock(
                Clock::system()
                    .skewed(time::Duration::milliseconds(at - Clock::system().unix_ms())),
            );
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
            for b in s.expired_buckets(EventClass::Telemetry, at - window * 1000) {
                assert!(s.drop_bucket(&b).unwrap());
            }
            sizes.push(s.size_on_disk().unwrap());
        }
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        let steady_at = 2 * window as usize;
        let (steady, end) = (sizes[steady_at], sizes[rounds - 1]);
        let written = mib(gateways.len() as u64 * per_batch * 250 * rounds as u64);
        assert!(
            mib(end) < 1.25 * mib(steady) + 2.0,
            "the store grew from {:.1} MiB at round {steady_at} to {:.1} MiB at round {rounds} \
             ({written:.0} MiB written, {:.0} MiB kept)",
            mib(steady),
            mib(end),
            written * window as f64 / rounds as f64
        );
        // Nothing older than the minute and its bucket is left.
        let oldest = s.oldest(EventClass::Telemetry).unwrap().unwrap();
        assert!(
            oldest >= start + (rounds as i64 - window - 7) * 1000,
            "{oldest}"
        );
    }
}
