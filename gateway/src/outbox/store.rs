//! The sled side of the outbox: one tree per class holding chunks of records, keyed by the
//! chunk's first sequence number (big-endian), and a `meta` tree with the next sequence number
//! and the eviction counters.

use firmware_config::runtime::sled_store;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use firmware_config::wire::{Event, EventClass};

use super::chunk;
use super::record::{self, RecordError};
use super::{class_index, OpenReport, OutboxError, Quarantine, Stats, CLASSES};

pub(super) const NEXT_SEQ: &[u8] = b"next_seq";

/// Bytes a record costs against the budget: its value, its key, and a fixed share for sled's
/// own bookkeeping.
pub(super) fn cost(value_len: usize) -> u64 {
    value_len as u64 + 8 + 32
}

pub(super) struct Store {
    pub db: sled::Db,
    pub trees: [sled::Tree; 4],
    pub meta: sled::Tree,
    pub stats: Stats,
}

#[derive(Debug)]
enum OpenFailure {
    Sled(sled::Error),
    Corrupt {
        seq: u64,
        class: EventClass,
        error: RecordError,
    },
}

impl std::fmt::Display for OpenFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenFailure::Sled(e) => write!(f, "cannot open: {e}"),
            OpenFailure::Corrupt { seq, class, error } => {
                write!(f, "{} record {seq}: {error}", class.as_str())
            }
        }
    }
}

fn config(path: &Path, cache_bytes: u64) -> sled::Config {
    sled::Config::new()
        .path(path)
        .cache_capacity(cache_bytes)
        // The writer flushes after every group commit; no background flusher needed.
        .flush_every_ms(None)
        .mode(sled::Mode::HighThroughput)
}

fn open_trees(db: sled::Db) -> Result<Store, sled::Error> {
    let trees = [
        db.open_tree("class/telemetry")?,
        db.open_tree("class/health")?,
        db.open_tree("class/submission")?,
        db.open_tree("class/alert")?,
    ];
    let meta = db.open_tree("meta")?;
    Ok(Store {
        db,
        trees,
        meta,
        stats: Stats::default(),
    })
}

pub(super) fn first_seq(k: &[u8]) -> u64 {
    seq_of(k)
}

pub(super) fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn seq_of(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[8 - n..].copy_from_slice(&key[..n]);
    u64::from_be_bytes(b)
}

fn read_u64(tree: &sled::Tree, k: &[u8]) -> Result<u64, sled::Error> {
    Ok(tree.get(k)?.map(|v| seq_of(&v)).unwrap_or(0))
}

/// Opens the store under `dir/outbox`; if it is damaged, moves it aside, salvages what passes
/// its checksum into a fresh store, and says so in the report.
pub(super) fn open_or_quarantine(
    dir: &Path,
    cache_bytes: u64,
) -> Result<(Store, OpenReport), OutboxError> {
    std::fs::create_dir_all(dir).map_err(OutboxError::Folder)?;
    let path = dir.join("outbox");
    let failure = match sled_store::open(&config(&path, cache_bytes)) {
        Ok(db) => match open_trees(db) {
            Ok(store) => match scan(&store) {
                Ok(next) => {
                    let report = OpenReport {
                        quarantined: None,
                        next_seq: next,
                        pending: store
                            .stats
                            .pending
                            .iter()
                            .map(|p| p.load(Ordering::Relaxed))
                            .sum(),
                    };
                    return Ok((store, report));
                }
                Err(f) => f,
            },
            Err(e) => OpenFailure::Sled(e),
        },
        Err(e) => OpenFailure::Sled(e),
    };
    if let OpenFailure::Sled(e) = &failure {
        // Another process holds the store: it is not damaged, and must not be moved aside.
        if sled_store::is_locked(e) {
            return Err(OutboxError::Locked(path.display().to_string()));
        }
        // A full disk is a state of the disk: moving the store aside would strand what it
        // holds, and the fresh one would not open either.
        if sled_store::is_out_of_space(e) {
            return Err(OutboxError::NoSpace(path.display().to_string()));
        }
    }
    let reason = failure.to_string();
    tracing::error!(path = %path.display(), %reason, "outbox store is damaged; moving it aside");
    let moved_to = quarantine_path(dir);
    std::fs::rename(&path, &moved_to).map_err(OutboxError::Quarantine)?;
    let store = open_trees(sled_store::open(&config(&path, cache_bytes))?)?;
    let (salvaged, max_seq) = salvage(&moved_to, &store);
    let floor = max_seq + 1;
    store.meta.insert(NEXT_SEQ, &key(floor))?;
    store.db.flush()?;
    let next = scan(&store).map_err(|f| match f {
        OpenFailure::Sled(e) => OutboxError::Store(e),
        OpenFailure::Corrupt { .. } => OutboxError::Store(sled::Error::Unsupported(f.to_string())),
    })?;
    let report = OpenReport {
        quarantined: Some(Quarantine {
            moved_to,
            reason,
            salvaged,
        }),
        next_seq: next,
        pending: salvaged,
    };
    Ok((store, report))
}

fn quarantine_path(dir: &Path) -> PathBuf {
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut p = dir.join(format!("outbox.quarantined-{stamp}"));
    let mut n = 1;
    while p.exists() {
        p = dir.join(format!("outbox.quarantined-{stamp}-{n}"));
        n += 1;
    }
    p
}

/// Copies every record of the damaged store at `from` that passes its checksum into `into`.
/// Returns how many, and the highest sequence number seen (also of bad records, so that no
/// number is reused).
fn salvage(from: &Path, into: &Store) -> (u64, u64) {
    let Ok(old) = sled_store::open(&config(from, 4 << 20)) else {
        return (0, 0);
    };
    let Ok(old) = open_trees(old) else {
        return (0, 0);
    };
    let mut max_seq = read_u64(&old.meta, NEXT_SEQ).unwrap_or(1).saturating_sub(1);
    let mut saved = 0;
    for (i, tree) in old.trees.iter().enumerate() {
        for (k, v) in tree.iter().flatten() {
            max_seq = max_seq.max(seq_of(&k));
            let Ok(records) = chunk::decode(&v) else {
                continue;
            };
            let good: Vec<(u64, &[u8])> = records
                .into_iter()
                .inspect(|(seq, _)| max_seq = max_seq.max(*seq))
                .filter(|(_, rec)| record::verify(rec).is_ok())
                .collect();
            if let Some((first, _)) = good.first() {
                if into.trees[i]
                    .insert(key(*first), chunk::encode(good.iter().copied()))
                    .is_ok()
                {
                    saved += good.len() as u64;
                }
            }
        }
    }
    (saved, max_seq)
}

/// Verifies every record, counts what is pending, and returns the next sequence number.
fn scan(store: &Store) -> Result<u64, OpenFailure> {
    let mut next = read_u64(&store.meta, NEXT_SEQ)
        .map_err(OpenFailure::Sled)?
        .max(1);
    let mut bytes = 0;
    for class in CLASSES {
        let i = class_index(class);
        let mut count = 0;
        for item in store.trees[i].iter() {
            let (k, v) = item.map_err(OpenFailure::Sled)?;
            let first = seq_of(&k);
            let records = chunk::decode(&v).map_err(|error| OpenFailure::Corrupt {
                seq: first,
                class,
                error,
            })?;
            for (seq, rec) in records {
                record::verify(rec).map_err(|error| OpenFailure::Corrupt { seq, class, error })?;
                count += 1;
                bytes += cost(rec.len());
                next = next.max(seq + 1);
                if !class.evictable() {
                    if let Some(src) = record::source_of(rec) {
                        store.stats.source_add(src, cost(rec.len()) as i64);
                    }
                }
            }
        }
        store.stats.pending[i].store(count, Ordering::Relaxed);
        let n = read_u64(&store.meta, evicted_key(class).as_bytes()).map_err(OpenFailure::Sled)?;
        store.stats.evicted[i].store(n, Ordering::Relaxed);
    }
    store.stats.pending_bytes.store(bytes, Ordering::Relaxed);
    Ok(next)
}

impl Store {
    /// Pending events of `class` after `after`, in order; a record that fails its checksum now
    /// is counted, logged and skipped.
    pub fn pending(&self, class: EventClass, after: u64, limit: usize) -> Vec<Event> {
        let tree = &self.trees[class_index(class)];
        let mut out = Vec::with_capacity(limit.min(4096));
        // The chunk holding `after + 1` may start below it.
        let from = after.saturating_add(1);
        let start = match tree.range(..=key(from)).next_back() {
            Some(Ok((k, _))) => seq_of(&k),
            _ => from,
        };
        for item in tree.range(key(start)..) {
            if out.len() >= limit {
                break;
            }
            let Ok((k, v)) = item else { break };
            let records = match chunk::decode(&v) {
                Ok(r) => r,
                Err(e) => {
                    self.stats.corrupt.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(chunk = seq_of(&k), class = class.as_str(), error = %e, "outbox chunk damaged; skipped");
                    continue;
                }
            };
            for (seq, rec) in records.into_iter().filter(|(seq, _)| *seq > after) {
                if out.len() >= limit {
                    break;
                }
                match record::decode(seq, class, rec) {
                    Ok(e) => out.push(e),
                    Err(e) => {
                        self.stats.corrupt.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(seq, class = class.as_str(), error = %e, "outbox record damaged; skipped");
                    }
                }
            }
        }
        out
    }
}

pub(super) fn evicted_key(class: EventClass) -> String {
    format!("evicted/{}", class.as_str())
}
