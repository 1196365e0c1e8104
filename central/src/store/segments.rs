//! Segment files: the bytes of a bucket's chunks, appended to a file of the bucket's own
//! (`segments/<class>-<start>-<width>`), while the bucket's tree keeps only where each chunk
//! is. Retention unlinks a bucket's file whole, so the disk goes back to the filesystem the
//! moment a bucket is dropped; sled, holding events itself, kept its files at their high-water
//! mark and wrote each event about six times over (its log, then its pages, then again as it
//! cleaned them).
//!
//! A segment is only ever appended to, at the length it had, by the ingest path (under the
//! bucket lock). Its bytes are synced before the tree entries that point at them are written,
//! so sled never holds a pointer to bytes the disk lost; bytes a crash leaves past the last
//! pointer are never read, and the next append goes after them.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::buckets::Bucket;

/// Marks a tree entry that points into the bucket's segment: `[min seq][max seq]` (as in a
/// chunk), the mark, then the chunk's offset (8 bytes) and length (4 bytes), big-endian.
/// Chunks kept whole in the tree have `0xFE` or `{` there instead.
pub(super) const POINTER_MARK: u8 = 0xFD;
const POINTER_LEN: usize = 16 + 1 + 8 + 4;

/// A chunk's place in its bucket's segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Place {
    pub offset: u64,
    pub len: u32,
}

/// The tree entry for a chunk whose bytes are at `place`: its min and max seq (copied from the
/// chunk, so that reads can skip it without opening the file), then where it is.
pub(super) fn encode_pointer(chunk: &[u8], place: Place) -> Vec<u8> {
    let mut p = Vec::with_capacity(POINTER_LEN);
    p.extend_from_slice(chunk.get(..16).unwrap_or(&[0; 16]));
    p.push(POINTER_MARK);
    p.extend_from_slice(&place.offset.to_be_bytes());
    p.extend_from_slice(&place.len.to_be_bytes());
    p
}

/// Where the chunk a tree entry points to is; None for a chunk kept whole in the tree.
pub(super) fn decode_pointer(entry: &[u8]) -> Option<Place> {
    if entry.len() != POINTER_LEN || entry[16] != POINTER_MARK {
        return None;
    }
    Some(Place {
        offset: u64::from_be_bytes(entry[17..25].try_into().ok()?),
        len: u32::from_be_bytes(entry[25..29].try_into().ok()?),
    })
}

/// One bucket's file.
#[derive(Debug)]
pub(super) struct Segment {
    file: File,
    path: PathBuf,
    /// Where the next append goes: the file's length when opened, then past each append.
    len: AtomicU64,
}

impl Segment {
    fn open(path: PathBuf) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let len = file.metadata()?.len();
        Ok(Self {
            file,
            path,
            len: AtomicU64::new(len),
        })
    }

    /// Writes `bytes` after everything before; not durable until [`Self::sync`]. A failed
    /// write leaves the length where it was, so the next one writes over what it left.
    pub(super) fn append(&self, bytes: &[u8]) -> io::Result<Place> {
        let len = u32::try_from(bytes.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "chunk over 4 GiB"))?;
        let offset = self.len.load(Ordering::Acquire);
        self.file.write_all_at(bytes, offset)?;
        self.len.store(offset + u64::from(len), Ordering::Release);
        Ok(Place { offset, len })
    }

    pub(super) fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// The chunk at `place`; an error when the file does not hold it (it was cut short).
    pub(super) fn read(&self, place: Place) -> io::Result<Vec<u8>> {
        // Checked before allocating: a damaged pointer must not ask for gigabytes.
        if place.offset.saturating_add(u64::from(place.len)) > self.size() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "a chunk points past the end of its segment file",
            ));
        }
        let mut buf = vec![0; place.len as usize];
        self.file.read_exact_at(&mut buf, place.offset)?;
        Ok(buf)
    }

    pub(super) fn size(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }
}

/// The folder of segment files.
#[derive(Debug)]
pub(super) struct SegmentDir {
    dir: PathBuf,
}

impl SegmentDir {
    pub(super) fn new(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, bucket: &Bucket) -> PathBuf {
        self.dir.join(format!(
            "{}-{:016x}-{:x}",
            bucket.class.as_str(),
            bucket.start_ms,
            bucket.width_ms
        ))
    }

    fn bucket_of(name: &str) -> Option<Bucket> {
        let mut parts = name.splitn(3, '-');
        let (class, start, width) = (parts.next()?, parts.next()?, parts.next()?);
        Bucket::from_tree_name(format!("events/{class}/{start}/{width}").as_bytes())
    }

    /// The segment of `bucket` if its file is there.
    pub(super) fn existing(&self, bucket: &Bucket) -> io::Result<Option<Segment>> {
        let path = self.path(bucket);
        if !path.exists() {
            return Ok(None);
        }
        Segment::open(path).map(Some)
    }

    /// A new (or the existing) segment of `bucket`; its name made durable before anything
    /// can point into it.
    pub(super) fn create(&self, bucket: &Bucket) -> io::Result<Segment> {
        let segment = Segment::open(self.path(bucket))?;
        File::open(&self.dir)?.sync_all()?;
        Ok(segment)
    }

    /// Removes `segment`'s file (readers that hold it finish their reads).
    pub(super) fn remove(&self, segment: &Segment) -> io::Result<()> {
        match std::fs::remove_file(&segment.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Removes every file whose bucket `keep` does not want (its tree was dropped, and a crash
    /// came before the file went) and every file that names no bucket.
    pub(super) fn remove_unless(&self, keep: impl Fn(&Bucket) -> bool) -> io::Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let wanted = name
                .to_str()
                .and_then(Self::bucket_of)
                .is_some_and(|b| keep(&b));
            if !wanted {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_config::wire::EventClass;

    #[test]
    fn a_pointer_keeps_the_chunks_seq_range_and_reads_back_what_was_appended() {
        let dir = tempfile::tempdir().unwrap();
        let segs = SegmentDir::new(dir.path()).unwrap();
        let bucket = Bucket::of(EventClass::Alert, 5_000, 1_000);
        let seg = segs.create(&bucket).unwrap();
        let chunk = [
            &7u64.to_be_bytes()[..],
            &9u64.to_be_bytes()[..],
            b"\xFEbody",
        ]
        .concat();
        let first = seg.append(b"before").unwrap();
        let place = seg.append(&chunk).unwrap();
        assert_eq!((first.offset, place.offset), (0, 6));
        let pointer = encode_pointer(&chunk, place);
        assert_eq!(&pointer[..16], &chunk[..16]);
        assert_eq!(decode_pointer(&pointer), Some(place));
        assert_eq!(decode_pointer(&chunk), None, "a chunk kept whole");
        assert_eq!(seg.read(place).unwrap(), chunk);
        // A pointer past what the file holds is an error, not garbage.
        let past = Place {
            offset: seg.size(),
            len: 4,
        };
        assert!(seg.read(past).is_err());
        let huge = Place {
            offset: 0,
            len: u32::MAX,
        };
        assert_eq!(
            seg.read(huge).unwrap_err().kind(),
            std::io::ErrorKind::UnexpectedEof
        );
        assert_eq!(
            SegmentDir::bucket_of("alert-0000000000001388-3e8"),
            Some(bucket)
        );
        assert_eq!(SegmentDir::bucket_of("alert-zz-3e8"), None);
    }

    #[test]
    fn after_a_crash_appends_go_past_what_the_file_already_holds() {
        let dir = tempfile::tempdir().unwrap();
        let segs = SegmentDir::new(dir.path()).unwrap();
        let bucket = Bucket::of(EventClass::Telemetry, 0, 1_000);
        let kept = {
            let seg = segs.create(&bucket).unwrap();
            let kept = seg.append(b"kept").unwrap();
            // Written, never pointed to: what a crash before the index leaves.
            seg.append(b"torn").unwrap();
            seg.sync().unwrap();
            kept
        };
        let seg = segs.existing(&bucket).unwrap().unwrap();
        let next = seg.append(b"next").unwrap();
        assert_eq!(next.offset, 8);
        assert_eq!(seg.read(kept).unwrap(), b"kept");
        assert_eq!(seg.read(next).unwrap(), b"next");
        // A file of a dropped bucket, and a stray one, go; the kept bucket's stays.
        let gone = Bucket::of(EventClass::Telemetry, 9_000, 1_000);
        segs.create(&gone).unwrap();
        std::fs::write(dir.path().join("stray"), b"x").unwrap();
        assert_eq!(segs.remove_unless(|b| *b == bucket).unwrap(), 2);
        assert!(segs.existing(&gone).unwrap().is_none());
        assert!(segs.existing(&bucket).unwrap().is_some());
    }
}
