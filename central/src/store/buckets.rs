//! Time buckets: each class's chunks live in trees of their own by when central received them
//! (`events/<class>/<start>/<width>`), so that retention drops a whole tree once the newest
//! thing it could hold is past the class's time. sled gives a dropped tree's pages back at
//! once; deleting chunks one by one left part-empty segments that it reclaims slowly, if at
//! all, and the store's files crept up for hours under a steady load.
//!
//! A bucket is a tenth of its class's retention (at least a second, at most a week), so an
//! event is kept at least its class's time and at most a tenth longer, and a class has about
//! eleven trees live. A bucket's width is in its name: changing retention makes new buckets of
//! the new width beside the old ones, which go when their own time is up.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use firmware_config::config::central::Retention;
use firmware_config::wire::EventClass;

use super::segments::{Segment, SegmentDir};

const PREFIX: &str = "events/";

/// The tree of every bucket's header, keyed by the bucket's tree name. Apart from the buckets:
/// a header changes with every batch, and in the bucket's first leaf (beside ~16 chunks) each
/// tenth change would rewrite that whole leaf.
const HEADERS: &str = "bucket_headers";

/// One tree of chunks: a class, and the span of receipt times `[start, start + width)` in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bucket {
    pub class: EventClass,
    pub start_ms: i64,
    pub width_ms: i64,
}

impl Bucket {
    /// The bucket of `class` that holds what was received at `received_ms`.
    pub(super) fn of(class: EventClass, received_ms: i64, width_ms: i64) -> Self {
        let width_ms = width_ms.max(1);
        Self {
            class,
            start_ms: received_ms.max(0) / width_ms * width_ms,
            width_ms,
        }
    }

    /// Just after the last receipt time it can hold.
    pub fn end_ms(&self) -> i64 {
        self.start_ms.saturating_add(self.width_ms)
    }

    pub(super) fn tree_name(&self) -> String {
        format!(
            "{PREFIX}{}/{:016x}/{:x}",
            self.class.as_str(),
            self.start_ms,
            self.width_ms
        )
    }

    /// The bucket a tree name stands for; None for every other tree.
    pub(super) fn from_tree_name(name: &[u8]) -> Option<Self> {
        let name = std::str::from_utf8(name).ok()?.strip_prefix(PREFIX)?;
        let mut parts = name.split('/');
        let class = parts.next()?;
        let class = EventClass::ALL.into_iter().find(|c| c.as_str() == class)?;
        let start_ms = i64::from_str_radix(parts.next()?, 16).ok()?;
        let width_ms = i64::from_str_radix(parts.next()?, 16).ok()?;
        (parts.next().is_none() && width_ms > 0 && start_ms >= 0).then_some(Self {
            class,
            start_ms,
            width_ms,
        })
    }
}

/// The width of new buckets of each class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketWidths([i64; 4]);

impl BucketWidths {
    const MIN: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(7 * 24 * 3600);

    pub fn for_retention(r: &Retention) -> Self {
        let mut w = [0; 4];
        for class in EventClass::ALL {
            let width = (r.keep(class) / 10).clamp(Self::MIN, Self::MAX);
            w[class.index()] = i64::try_from(width.as_millis()).unwrap_or(i64::MAX);
        }
        Self(w)
    }

    pub fn of(&self, class: EventClass) -> i64 {
        self.0[class.index()]
    }
}

impl Default for BucketWidths {
    fn default() -> Self {
        Self::for_retention(&Retention::default())
    }
}

/// A bucket's header: when it received its first chunk (ms), and how many events it holds.
pub(super) fn encode_header(first_ms: i64, events: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..8].copy_from_slice(&first_ms.to_be_bytes());
    h[8..].copy_from_slice(&events.to_be_bytes());
    h
}

pub(super) fn decode_header(bytes: &[u8]) -> Option<(i64, u64)> {
    let first = i64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let events = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some((first, events))
}

/// A bucket as a reader takes it: its tree of chunk entries, and its segment file (None for a
/// bucket whose chunks are all kept whole in its tree, as a store moved from an older central
/// has them).
#[derive(Clone)]
pub(super) struct OpenBucket {
    pub tree: sled::Tree,
    pub segment: Option<Arc<Segment>>,
}

/// The open bucket trees and their segment files. Ingest holds it while it writes and the
/// pruner while it drops a bucket, so that nothing is written to a bucket being dropped.
pub(super) struct Buckets {
    open: BTreeMap<Bucket, sled::Tree>,
    segments: HashMap<Bucket, Arc<Segment>>,
    dir: SegmentDir,
    headers: sled::Tree,
}

impl Buckets {
    /// Every bucket tree `db` holds, with its segment file under `segments`; headers and
    /// files left by a drop that stopped halfway go.
    pub(super) fn load(db: &sled::Db, segments: &Path) -> Result<Self, sled::Error> {
        let mut open = BTreeMap::new();
        for name in db.tree_names() {
            if let Some(b) = Bucket::from_tree_name(&name) {
                open.insert(b, db.open_tree(&name)?);
            }
        }
        let headers = db.open_tree(HEADERS)?;
        for item in headers.iter().keys() {
            let name = item?;
            if Bucket::from_tree_name(&name).is_none_or(|b| !open.contains_key(&b)) {
                headers.remove(name)?;
            }
        }
        let dir = SegmentDir::new(segments)?;
        let removed = dir.remove_unless(|b| open.contains_key(b))?;
        if removed > 0 {
            tracing::info!(
                files = removed,
                "removed the segment files of buckets already dropped"
            );
        }
        let mut files = HashMap::new();
        for bucket in open.keys() {
            if let Some(segment) = dir.existing(bucket)? {
                files.insert(*bucket, Arc::new(segment));
            }
        }
        Ok(Self {
            open,
            segments: files,
            dir,
            headers,
        })
    }

    /// The segment file of `bucket`, made when it is new (its tree is made when its first
    /// entry is written).
    pub(super) fn segment(&mut self, bucket: Bucket) -> std::io::Result<Arc<Segment>> {
        if let Some(s) = self.segments.get(&bucket) {
            return Ok(s.clone());
        }
        let s = Arc::new(self.dir.create(&bucket)?);
        self.segments.insert(bucket, s.clone());
        Ok(s)
    }

    /// Bytes in every segment file.
    pub(super) fn segment_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size()).sum()
    }

    /// When `bucket` received its first chunk (Unix ms) and how many events it holds.
    pub(super) fn header(&self, bucket: &Bucket) -> Result<Option<(i64, u64)>, sled::Error> {
        Ok(self
            .headers
            .get(bucket.tree_name())?
            .and_then(|h| decode_header(&h)))
    }

    /// The tree of `bucket`, made when it is new.
    pub(super) fn tree(
        &mut self,
        db: &sled::Db,
        bucket: Bucket,
    ) -> Result<sled::Tree, sled::Error> {
        if let Some(t) = self.open.get(&bucket) {
            return Ok(t.clone());
        }
        let t = db.open_tree(bucket.tree_name())?;
        self.open.insert(bucket, t.clone());
        Ok(t)
    }

    /// `bucket` if it is there (not dropped).
    pub(super) fn get(&self, bucket: &Bucket) -> Option<OpenBucket> {
        self.open.get(bucket).map(|tree| OpenBucket {
            tree: tree.clone(),
            segment: self.segments.get(bucket).cloned(),
        })
    }

    /// The buckets, oldest first within each class.
    pub(super) fn all(&self) -> Vec<(Bucket, OpenBucket)> {
        self.open
            .keys()
            .filter_map(|b| Some((*b, self.get(b)?)))
            .collect()
    }

    pub(super) fn of_class(
        &self,
        class: EventClass,
    ) -> impl Iterator<Item = (&Bucket, &sled::Tree)> {
        self.open.iter().filter(move |(b, _)| b.class == class)
    }

    /// Drops `bucket`'s tree and everything in it and its header, flushes, then removes its
    /// segment file: never a pointer to a file that is gone (a crash before the removal leaves
    /// a file that the next load removes).
    pub(super) fn drop_bucket(
        &mut self,
        db: &sled::Db,
        bucket: &Bucket,
    ) -> Result<(), sled::Error> {
        if self.open.remove(bucket).is_some() {
            db.drop_tree(bucket.tree_name())?;
        }
        self.headers.remove(bucket.tree_name())?;
        db.flush()?;
        if let Some(segment) = self.segments.remove(bucket) {
            self.dir.remove(&segment)?;
        }
        Ok(())
    }
}

/// Chunks to write into buckets in one transaction with their headers and one more tree's
/// change (the seen sets, or the old tree they are moved from).
pub(super) struct BucketWrites {
    /// The other tree, the headers, then each bucket written to.
    trees: Vec<sled::Tree>,
    /// Each bucket written to: its first receipt here and the events added.
    held: Vec<(Bucket, i64, u64)>,
    /// (index in `trees`, key, chunk)
    writes: Vec<(usize, Vec<u8>, Vec<u8>)>,
}

/// What a change inside the transaction may fail with.
pub(super) type TxResult = Result<(), sled::transaction::UnabortableTransactionError>;

impl BucketWrites {
    pub(super) fn new(other: sled::Tree, buckets: &Buckets) -> Self {
        Self {
            trees: vec![other, buckets.headers.clone()],
            held: Vec::new(),
            writes: Vec::new(),
        }
    }

    /// Adds a chunk of `events` events received at `received` to `bucket` under `key`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn add(
        &mut self,
        buckets: &mut Buckets,
        db: &sled::Db,
        bucket: Bucket,
        received: i64,
        key: Vec<u8>,
        chunk: Vec<u8>,
        events: u64,
    ) -> Result<(), sled::Error> {
        let at = match self.held.iter().position(|(b, ..)| *b == bucket) {
            Some(i) => i,
            None => {
                self.trees.push(buckets.tree(db, bucket)?);
                self.held.push((bucket, received, 0));
                self.held.len() - 1
            }
        };
        self.held[at].1 = self.held[at].1.min(received);
        self.held[at].2 += events;
        self.writes.push((at + 2, key, chunk));
        Ok(())
    }

    /// Writes everything, `other` changing the first tree, as one transaction.
    pub(super) fn commit(
        &self,
        other: impl Fn(&sled::transaction::TransactionalTree) -> TxResult,
    ) -> Result<(), sled::transaction::TransactionError<()>> {
        use sled::Transactional;
        self.trees.as_slice().transaction(|t| {
            for (at, key, chunk) in &self.writes {
                t[*at].insert(key.as_slice(), chunk.as_slice())?;
            }
            for (bucket, first, events) in &self.held {
                let name = bucket.tree_name();
                let (f0, n0) = t[1]
                    .get(name.as_bytes())?
                    .and_then(|h| decode_header(&h))
                    .unwrap_or((*first, 0));
                t[1].insert(
                    name.as_bytes(),
                    &encode_header(f0.min(*first), n0 + events)[..],
                )?;
            }
            other(&t[0])?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_is_named_by_its_class_start_and_width_and_read_back_from_the_name() {
        let b = Bucket::of(EventClass::Submission, 1_700_000_123_456, 60_000);
        assert_eq!(
            (b.start_ms, b.end_ms()),
            (1_700_000_100_000, 1_700_000_160_000)
        );
        assert_eq!(Bucket::from_tree_name(b.tree_name().as_bytes()), Some(b));
        for other in [
            "seen",
            "events/x/00/1",
            "events/alert/zz/1",
            "events/alert/10/0",
            "events/alert/10/1/2",
        ] {
            assert_eq!(Bucket::from_tree_name(other.as_bytes()), None, "{other}");
        }
        // Names sort by start within a class, so that trees list oldest first.
        let later = Bucket::of(EventClass::Submission, 1_800_000_000_000, 60_000);
        assert!(b.tree_name() < later.tree_name() && b < later);
    }

    #[test]
    fn a_header_whose_bucket_was_dropped_goes_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let (kept, dropped) = (
            Bucket::of(EventClass::Alert, 10_000, 1_000),
            Bucket::of(EventClass::Alert, 20_000, 1_000),
        );
        let segments = dir.path().join("segments");
        let mut b = Buckets::load(&db, &segments).unwrap();
        for bucket in [kept, dropped] {
            let mut w = BucketWrites::new(db.open_tree("other").unwrap(), &b);
            w.add(
                &mut b,
                &db,
                bucket,
                bucket.start_ms,
                b"gw/1".to_vec(),
                b"x".to_vec(),
                3,
            )
            .unwrap();
            w.commit(|_| Ok(())).unwrap();
        }
        assert_eq!(b.header(&kept).unwrap(), Some((10_000, 3)));
        // As a drop that stopped between the tree and its header leaves it.
        db.drop_tree(dropped.tree_name()).unwrap();
        let b = Buckets::load(&db, &segments).unwrap();
        assert_eq!(b.all().len(), 1);
        assert_eq!(b.header(&kept).unwrap(), Some((10_000, 3)));
        assert_eq!(b.header(&dropped).unwrap(), None);
        assert_eq!(b.headers.len(), 1);
    }

    #[test]
    fn widths_are_a_tenth_of_retention_within_bounds() {
        let r = Retention {
            telemetry: Duration::from_secs(600),
            health: Duration::from_secs(2),
            submission: Duration::from_secs(365 * 24 * 3600),
            ..Retention::default()
        };
        let w = BucketWidths::for_retention(&r);
        assert_eq!(w.of(EventClass::Telemetry), 60_000);
        assert_eq!(w.of(EventClass::Health), 1_000);
        assert_eq!(w.of(EventClass::Submission), 7 * 24 * 3600 * 1000);
        assert_eq!(decode_header(&encode_header(-5, 7)), Some((-5, 7)));
        assert_eq!(decode_header(&[1, 2]), None);
    }
}
