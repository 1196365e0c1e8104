//! The `Outbox`: every event the gateway accepted, on local disk (sled) until central says it
//! has stored it.
//!
//! - **Group commit.** Appends go to one writer thread, which takes every append waiting, writes
//!   them, flushes once, and only then tells each caller its sequence numbers. A caller that got
//!   its numbers has its events on disk.
//! - **Sequence numbers** increase per gateway and survive restarts (the next one is stored with
//!   every flush).
//! - **Priority classes and the disk budget.** Each class has its own tree. When the budget is
//!   full, the oldest telemetry is evicted, then the oldest health; alerts and submissions are
//!   never evicted: when only they are left, the append is refused with [`OutboxError::Full`].
//! - **Checksums.** Every record carries a CRC32. A store that cannot be opened, or holds a
//!   record that fails its checksum, is moved aside (quarantined); the records that pass are
//!   copied into a fresh store, and an alert tells central.
//! - **Acknowledgement.** Records leave only when central's ack names them ([`Outbox::acknowledge`]).
//!
//! sled is kept behind this interface so that it can be replaced without touching callers.

mod chunk;
mod floor;
mod record;
mod store;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use firmware_config::kinds::Kind;
use firmware_config::runtime::clock::Clock;
use firmware_config::runtime::disk::{DiskGuard, DiskState};
use firmware_config::wire::{Event, EventClass};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot, Notify};

pub use floor::SeqFloor;
pub use record::RecordError;
use store::Store;

/// Longest a group commit may take before the store counts as stopped.
pub const STALL: std::time::Duration = std::time::Duration::from_secs(60);

/// Longest the last handle waits for the store to close.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Most events one request may carry.
pub const MAX_EVENTS_PER_APPEND: usize = 10_000;
/// Longest event kind, in bytes.
pub const MAX_KIND_BYTES: usize = 128;
/// Largest event payload, in bytes of JSON.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// An event handed to the gateway, before it has a sequence number.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub class: EventClass,
    pub kind: String,
    pub payload: Box<RawValue>,
    /// When it happened (Unix milliseconds); the time of append when absent.
    pub time_ms: Option<i64>,
    /// The event source (`[[sources]]` id) that posted it; None for the gateway's own.
    pub source: Option<String>,
}

impl NewEvent {
    /// One of the gateway's own events, in the class the catalogue gives its kind.
    pub fn own(kind: Kind, payload: &serde_json::Value) -> Result<Self, OutboxError> {
        let class = kind
            .class()
            .ok_or_else(|| OutboxError::NotOwnKind(kind.to_string()))?;
        Ok(Self {
            class,
            kind: kind.to_string(),
            payload: serde_json::value::to_raw_value(payload).map_err(OutboxError::Encode)?,
            time_ms: None,
            source: None,
        })
    }

    /// The same event, as having happened at `time_ms` (Unix milliseconds).
    pub fn at(mut self, time_ms: i64) -> Self {
        self.time_ms = Some(time_ms);
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox is full: {needed} more bytes do not fit the {budget}-byte disk budget, and only alerts and submissions are left")]
    Full { needed: u64, budget: u64 },
    #[error("source {origin} has {pending} bytes of alerts and submissions waiting for central; {needed} more would pass its quota of {quota}")]
    SourceQuota {
        origin: String,
        pending: u64,
        needed: u64,
        quota: u64,
    },
    #[error("outbox is closed")]
    Closed,
    #[error("{0:?} is not one of the gateway's own kinds")]
    NotOwnKind(String),
    #[error("an event's payload: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("outbox store: {0}")]
    Store(#[from] sled::Error),
    #[error("cannot move the damaged store aside: {0}")]
    Quarantine(#[source] std::io::Error),
    #[error("outbox folder: {0}")]
    Folder(#[source] std::io::Error),
    #[error("cannot start the outbox writer: {0}")]
    Writer(#[source] std::io::Error),
    #[error("cannot keep the sequence floor: {0}")]
    Floor(#[source] std::io::Error),
    #[error("outbox store {0} is in use by another process")]
    Locked(String),
    /// The disk is full: nothing was moved aside or lost; it works again once there is space.
    #[error("outbox store {0}: the disk is full; nothing was moved or lost, it opens once there is space again")]
    NoSpace(String),
    /// The disk is full and only alerts and submissions are left to shed.
    #[error("the disk is full: {needed} more bytes do not fit; the store keeps to the {limit} bytes it holds until central takes the backlog or space is freed")]
    DiskFull { needed: u64, limit: u64 },
    /// A write met a full disk after all (something else took the space and the reserve):
    /// the store takes nothing more until the gateway restarts it.
    #[error(
        "the outbox store stopped on a full disk; it takes nothing until the gateway restarts it"
    )]
    Stopped,
}

impl OutboxError {
    /// The disk (or the quota) is full: a state that passes, not damage.
    pub fn is_out_of_space(&self) -> bool {
        match self {
            OutboxError::NoSpace(_) | OutboxError::DiskFull { .. } | OutboxError::Stopped => true,
            OutboxError::Store(e) => firmware_config::runtime::sled_store::is_out_of_space(e),
            _ => false,
        }
    }
}

/// Counters, shared with metrics and the health report.
#[derive(Debug, Default)]
pub struct Stats {
    pub appended: [AtomicU64; 4],
    pub acked: AtomicU64,
    pub evicted: [AtomicU64; 4],
    pub pending: [AtomicU64; 4],
    pub pending_bytes: AtomicU64,
    pub refused: AtomicU64,
    pub corrupt: AtomicU64,
    pub flushes: AtomicU64,
    /// Bytes of alerts and submissions waiting, per event source (the gateway's own are not
    /// here): what source quotas are checked against.
    pub source_pending: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// Set when a write met a full disk: see [`OutboxError::Stopped`].
    pub stopped: AtomicBool,
    /// When the writer's current group commit began ([`monotonic_ms`]); 0 while it waits.
    pub busy_since_ms: AtomicU64,
}

/// Milliseconds since the first call, on the monotonic clock (a wall-clock step must not
/// make a commit look stalled).
pub(crate) fn monotonic_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
        + 1
}

impl Stats {
    /// Adds `delta` bytes (negative: removes) to `source`'s pending alerts and submissions.
    pub(crate) fn source_add(&self, source: &str, delta: i64) {
        let mut m = self
            .source_pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let v = m.entry(source.to_owned()).or_insert(0);
        *v = v.saturating_add_signed(delta);
        if *v == 0 {
            m.remove(source);
        }
    }

    /// `source`'s pending bytes, and every source's together.
    pub(crate) fn source_usage(&self, source: &str) -> (u64, u64) {
        let m = self
            .source_pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (m.get(source).copied().unwrap_or(0), m.values().sum())
    }
}

/// Index of a class in per-class arrays.
pub fn class_index(class: EventClass) -> usize {
    class.index()
}

/// The classes in `class_index` order.
pub const CLASSES: [EventClass; 4] = EventClass::ALL;

/// The summary reported to central and on `/healthz`.
pub use firmware_config::wire::OutboxReport as OutboxSummary;

/// What happened while opening the store.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    /// Set when the store was moved aside: where to, why, and how many records were saved.
    pub quarantined: Option<Quarantine>,
    pub next_seq: u64,
    pub pending: u64,
}

#[derive(Debug, Clone)]
pub struct Quarantine {
    pub moved_to: PathBuf,
    pub reason: String,
    pub salvaged: u64,
}

enum Request {
    Append {
        events: Vec<NewEvent>,
        /// Most bytes of alerts and submissions the events' source may have pending.
        quota: Option<u64>,
        reply: oneshot::Sender<Result<Vec<u64>, OutboxError>>,
    },
    /// Acknowledged ranges, and the class they are all of when known (only that class's
    /// records are then looked at).
    Ack(Vec<(u64, u64)>, Option<EventClass>),
    Flush(oneshot::Sender<Result<(), OutboxError>>),
}

/// Handle to the outbox; cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    store: Arc<Store>,
    tx: mpsc::Sender<Request>,
    /// Woken when events are appended, for the uplink.
    pub appended: Arc<Notify>,
    writer: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
    /// Stamps events that come without a time.
    clock: Clock,
    /// The disk under the store, as the writer last saw it.
    disk: Arc<DiskState>,
    /// Woken when the store stops on a full disk.
    stopped: Arc<Notify>,
}

impl Outbox {
    /// Opens (or creates) the outbox under `dir`, quarantining a damaged store, and keeping
    /// up to `reserve` bytes of the disk aside for the day it fills.
    pub fn open(
        dir: &Path,
        budget: u64,
        cache_bytes: u64,
        reserve: u64,
    ) -> Result<(Self, OpenReport), OutboxError> {
        std::fs::create_dir_all(dir).map_err(OutboxError::Folder)?;
        let mut disk = DiskGuard::new(dir, reserve).map_err(OutboxError::Folder)?;
        disk.before_open();
        let (store, mut report) = store::open_or_quarantine(dir, cache_bytes)?;
        // Takes the reserve (or sees the disk full) now rather than at the first append.
        disk.check(store.stats.pending_bytes.load(Ordering::Relaxed));
        let disk_state = disk.state();
        let floor = floor::SeqFloor::open(dir);
        // The store may have been lost or started fresh: never reuse a number handed out.
        report.next_seq = report.next_seq.max(floor.floor()).max(1);
        let store = Arc::new(store);
        let appended = Arc::new(Notify::new());
        let (tx, rx) = mpsc::channel(4096);
        let stopped = Arc::new(Notify::new());
        let w = writer::Writer::new(
            store.clone(),
            budget,
            report.next_seq,
            floor,
            appended.clone(),
        )
        .on_disk(disk, stopped.clone());
        let handle = std::thread::Builder::new()
            .name("outbox-writer".into())
            .spawn(move || w.run(rx))
            .map_err(OutboxError::Writer)?;
        let writer = Arc::new(std::sync::Mutex::new(Some(handle)));
        Ok((
            Self {
                store,
                tx,
                appended,
                writer,
                clock: Clock::system(),
                disk: disk_state,
                stopped,
            },
            report,
        ))
    }

    /// The same outbox, stamping events that come without a time by `clock` (the writer
    /// thread cannot read a test's paused time, so events are stamped before they reach it).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Appends events; returns their sequence numbers once they are on disk. All or none: a
    /// refused request stores nothing.
    pub async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<u64>, OutboxError> {
        self.append_with(events, None).await
    }

    /// Appends events a source posted (each with its `source`): their alerts and submissions
    /// may bring what the source has waiting up to `max_pending` bytes, and never all
    /// sources' together beyond half the disk budget — so a source can never crowd out the
    /// gateway's own alerts and residents' submissions.
    pub async fn append_from_source(
        &self,
        events: Vec<NewEvent>,
        max_pending: u64,
    ) -> Result<Vec<u64>, OutboxError> {
        self.append_with(events, Some(max_pending)).await
    }

    async fn append_with(
        &self,
        mut events: Vec<NewEvent>,
        quota: Option<u64>,
    ) -> Result<Vec<u64>, OutboxError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let now_ms = self.clock.unix_ms();
        for e in events.iter_mut().filter(|e| e.time_ms.is_none()) {
            e.time_ms = Some(now_ms);
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Append {
                events,
                quota,
                reply,
            })
            .await
            .map_err(|_| OutboxError::Closed)?;
        rx.await.map_err(|_| OutboxError::Closed)?
    }

    /// Bytes of alerts and submissions `source` has waiting for central.
    pub fn source_pending(&self, source: &str) -> u64 {
        self.store.stats.source_usage(source).0
    }

    /// Deletes the events central has stored (inclusive ranges). Unknown numbers are ignored.
    pub fn acknowledge(&self, ranges: Vec<(u64, u64)>) {
        if !ranges.is_empty() {
            // A full queue only delays deletion; the ack will be repeated for resent events.
            let _ = self.tx.try_send(Request::Ack(ranges, None));
        }
    }

    /// Like [`Self::acknowledge`], for events all of `class`: the writer looks at that
    /// class's records only. Classes interleave in sequence order, so ranges spanning a
    /// stretch of one class would otherwise read every other class's records in it too (a
    /// drain of a million events read ~110 MiB of them at once).
    pub fn acknowledge_class(&self, class: EventClass, ranges: Vec<(u64, u64)>) {
        if !ranges.is_empty() {
            let _ = self.tx.try_send(Request::Ack(ranges, Some(class)));
        }
    }

    /// Waits until everything before this call is on disk.
    pub async fn flush(&self) -> Result<(), OutboxError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Flush(reply))
            .await
            .map_err(|_| OutboxError::Closed)?;
        rx.await.map_err(|_| OutboxError::Closed)?
    }

    /// Up to `limit` pending events of `class` with sequence numbers above `after`, in order.
    pub fn pending(&self, class: EventClass, after: u64, limit: usize) -> Vec<Event> {
        self.store.pending(class, after, limit)
    }

    /// The disk under the store: free space, the limit while it is full, the reserve.
    pub fn disk(&self) -> &DiskState {
        &self.disk
    }

    /// Returns once the store has stopped: a write met a full disk, or one group commit has
    /// not finished within [`STALL`] (sled waits forever on a write the disk refused). Only a
    /// restart brings it back.
    pub async fn stopped(&self) {
        let s = &self.store.stats;
        loop {
            let woken = self.stopped.notified();
            if s.stopped.load(Ordering::Relaxed) {
                return;
            }
            let since = s.busy_since_ms.load(Ordering::Relaxed);
            if since != 0 && monotonic_ms().saturating_sub(since) > STALL.as_millis() as u64 {
                tracing::error!(
                    "an outbox write has not finished for {STALL:?}; the store has stopped"
                );
                s.stopped.store(true, Ordering::Relaxed);
                return;
            }
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), woken).await;
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.store.stats
    }

    pub fn summary(&self) -> OutboxSummary {
        let s = &self.store.stats;
        OutboxSummary {
            pending: s.pending.iter().map(|p| p.load(Ordering::Relaxed)).sum(),
            pending_bytes: s.pending_bytes.load(Ordering::Relaxed),
            evicted: CLASSES
                .iter()
                .map(|c| {
                    (
                        c.as_str().to_owned(),
                        s.evicted[class_index(*c)].load(Ordering::Relaxed),
                    )
                })
                .collect(),
            refused: s.refused.load(Ordering::Relaxed),
            corrupt: s.corrupt.load(Ordering::Relaxed),
            disk: Some(firmware_config::wire::DiskReport {
                free_bytes: self.disk.free_bytes.load(Ordering::Relaxed),
                total_bytes: self.disk.total_bytes.load(Ordering::Relaxed),
                full: self.disk.full(),
                store_stopped: s.stopped.load(Ordering::Relaxed),
            }),
        }
    }

    /// Flushes and, when this is the last handle, waits for the writer to finish and the store
    /// to close (so that it can be opened again in this process).
    pub async fn close(self) -> Result<(), OutboxError> {
        let flushed = self.flush().await;
        let Outbox {
            store, tx, writer, ..
        } = self;
        drop(tx);
        drop(store);
        // Only the last handle may wait for the writer: others still hold senders it serves.
        if Arc::strong_count(&writer) > 1 {
            return flushed;
        }
        let handle = writer.lock().ok().and_then(|mut slot| slot.take());
        if let Some(handle) = handle {
            // A store that met a full disk may never finish its last flush: what was
            // acknowledged to callers is on disk already, so the wait is bounded.
            let joined = tokio::time::timeout(
                CLOSE_WAIT,
                tokio::task::spawn_blocking(move || handle.join()),
            )
            .await;
            if joined.is_err() {
                tracing::error!(
                    "the outbox store did not close within {CLOSE_WAIT:?}; leaving it (everything acknowledged is on disk)"
                );
            }
        }
        flushed
    }

    /// Bytes sled uses on disk (its log can hold more than the records' own bytes).
    pub fn size_on_disk(&self) -> u64 {
        self.store.db.size_on_disk().unwrap_or(0)
    }
}

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;
