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

use std::collections::BTreeMap;
use std::time::Duration;

use firmware_config::config::central::Retention;
use firmware_config::wire::EventClass;

const PREFIX: &str = "events/";

/// The key of a bucket's header, before every `gateway/seq` key (gateway ids are printable).
pub(super) const HEADER: &[u8] = &[0];

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

/// The open bucket trees. Ingest holds it while it writes and the pruner while it drops a
/// tree, so that nothing is written to a tree being dropped.
#[derive(Default)]
pub(super) struct Buckets {
    open: BTreeMap<Bucket, sled::Tree>,
}

impl Buckets {
    /// Every bucket tree `db` holds.
    pub(super) fn load(db: &sled::Db) -> Result<Self, sled::Error> {
        let mut open = BTreeMap::new();
        for name in db.tree_names() {
            if let Some(b) = Bucket::from_tree_name(&name) {
                open.insert(b, db.open_tree(&name)?);
            }
        }
        Ok(Self { open })
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

    /// The tree of `bucket` if it is there (not dropped).
    pub(super) fn tree_if_open(&self, bucket: &Bucket) -> Option<sled::Tree> {
        self.open.get(bucket).cloned()
    }

    /// The buckets and their trees, oldest first within each class.
    pub(super) fn all(&self) -> Vec<(Bucket, sled::Tree)> {
        self.open.iter().map(|(b, t)| (*b, t.clone())).collect()
    }

    pub(super) fn of_class(
        &self,
        class: EventClass,
    ) -> impl Iterator<Item = (&Bucket, &sled::Tree)> {
        self.open.iter().filter(move |(b, _)| b.class == class)
    }

    /// Drops `bucket`'s tree and everything in it.
    pub(super) fn drop_bucket(
        &mut self,
        db: &sled::Db,
        bucket: &Bucket,
    ) -> Result<(), sled::Error> {
        if self.open.remove(bucket).is_some() {
            db.drop_tree(bucket.tree_name())?;
        }
        Ok(())
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
