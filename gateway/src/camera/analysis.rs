//! What the gateway sees in each camera's picture: snapshots and sensing on decoded keyframes.
//!
//! A camera session hands every frame's size to its [`Analysis`]; when a keyframe is due (a
//! snapshot is older than its interval, or sensing wants a picture and the decode budget
//! allows) the keyframe goes to the shared [`Decoders`] pool. A camera has at most one
//! keyframe in the pool: when decoding falls behind, keyframes are skipped, never queued, so
//! a slow decoder can neither grow memory nor hold up an RTSP session.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use firmware_config::config::gateway::Camera;
use firmware_config::runtime::clock::{Clock, Instant};
use serde::Serialize;
use time::UtcOffset;

use super::decode::{Pictures, VideoCodec};
use super::sensing::{Between, Finding, Sensor};
use super::Cameras;

/// Evidence pictures kept per camera (the pictures sensing events refer to).
const EVIDENCE_KEPT: usize = 8;

/// A JPEG of a camera's picture.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Milliseconds since the Unix epoch when the keyframe was received; also its reference.
    pub id: u64,
    pub width: u32,
    pub height: u32,
    #[serde(skip)]
    pub jpeg: Bytes,
}

#[derive(Default)]
struct Kept {
    latest: Option<Snapshot>,
    evidence: VecDeque<Snapshot>,
}

/// Per-camera decode bookkeeping, touched by the session on every frame.
struct Pace {
    last_decode: Option<Instant>,
    last_snapshot: Option<Instant>,
    between: Between,
}

/// Snapshots and sensing of one camera.
pub struct Analysis {
    /// Stamps the pictures (snapshots, sensing's time of day).
    clock: Clock,
    camera: Camera,
    cameras: Cameras,
    offset: UtcOffset,
    min_decode_gap: Duration,
    sensing: bool,
    busy: AtomicBool,
    pace: Mutex<Pace>,
    sensor: Mutex<Sensor>,
    pictures: Mutex<Kept>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Analysis {
    pub fn new(camera: &Camera, cameras: Cameras, offset: UtcOffset, clock: Clock) -> Arc<Self> {
        let sensor = Sensor::new(&camera.sensing);
        Arc::new(Self {
            clock,
            sensing: sensor.active(),
            min_decode_gap: Duration::from_secs_f64(1.0 / camera.sensing.max_decode_fps.max(0.01)),
            camera: camera.clone(),
            cameras,
            offset,
            busy: AtomicBool::new(false),
            pace: Mutex::new(Pace {
                last_decode: None,
                last_snapshot: None,
                between: Between::default(),
            }),
            sensor: Mutex::new(sensor),
            pictures: Mutex::new(Kept::default()),
        })
    }

    /// Counts a frame; for a keyframe that is due (and no other keyframe of this camera is
    /// being decoded), returns what to decode it for.
    pub fn on_frame(self: &Arc<Self>, now: Instant, keyframe: bool, len: usize) -> Option<Want> {
        let mut pace = lock(&self.pace);
        if !keyframe {
            pace.between.inter_frames += 1;
            pace.between.inter_bytes += len as u64;
            return None;
        }
        let snapshot = pace
            .last_snapshot
            .is_none_or(|t| now.duration_since(t) >= self.camera.snapshot.interval);
        let sense = self.sensing
            && pace
                .last_decode
                .is_none_or(|t| now.duration_since(t) >= self.min_decode_gap);
        if !(snapshot || sense) || self.busy.swap(true, Ordering::AcqRel) {
            return None;
        }
        let between = std::mem::take(&mut pace.between);
        pace.last_decode = Some(now);
        if snapshot {
            pace.last_snapshot = Some(now);
        }
        Some(Want {
            snapshot,
            between,
            received: SystemTime::from(self.clock.now_utc()),
            at: now,
        })
    }

    /// A new RTSP session streams: what came before it is no longer the previous picture.
    pub fn session_started(&self) {
        lock(&self.pace).between = Between::default();
        lock(&self.sensor).restart();
    }

    /// The latest snapshot.
    pub fn latest(&self) -> Option<Snapshot> {
        lock(&self.pictures).latest.clone()
    }

    /// A snapshot by its reference: the latest or one kept as evidence.
    pub fn find(&self, id: u64) -> Option<Snapshot> {
        let p = lock(&self.pictures);
        p.latest
            .iter()
            .chain(p.evidence.iter())
            .find(|s| s.id == id)
            .cloned()
    }

    /// Runs on a decoder thread.
    fn process(&self, pictures: &mut Pictures, job: Job) {
        let id = &self.camera.id;
        let picture = match pictures.decode(job.codec, &job.data) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(camera = %id, error = %e, "keyframe not decoded");
                self.cameras.update(id, |h| {
                    h.decode_errors += 1;
                    h.last_decode_error = Some(e.to_string());
                });
                return;
            }
        };
        let mut findings: Vec<Finding> = Vec::new();
        if self.sensing {
            match pictures.thumb(&picture) {
                Ok(thumb) => {
                    let local =
                        time::OffsetDateTime::from(job.want.received).to_offset(self.offset);
                    let mut between = job.want.between;
                    between.pixels = u64::from(picture.width()) * u64::from(picture.height());
                    let mut sensor = lock(&self.sensor);
                    findings = sensor.observe(job.want.at, local, &thumb, between);
                    let measures = sensor.last.clone();
                    drop(sensor);
                    self.cameras.update(id, |h| h.measures = Some(measures));
                }
                Err(e) => tracing::warn!(camera = %id, error = %e, "no thumb for sensing"),
            }
        }
        let raised = findings.iter().any(|f| f.raised);
        let mut evidence = None;
        if job.want.snapshot || raised {
            let snap = &self.camera.snapshot;
            match pictures.jpeg(&picture, snap.width, snap.quality) {
                Ok((jpeg, width, height)) => {
                    let shot = Snapshot {
                        id: unix_ms(job.want.received),
                        width,
                        height,
                        jpeg: Bytes::from(jpeg),
                    };
                    let mut p = lock(&self.pictures);
                    if raised {
                        if p.evidence.len() == EVIDENCE_KEPT {
                            p.evidence.pop_front();
                        }
                        p.evidence.push_back(shot.clone());
                        evidence = Some(shot.id);
                    }
                    p.latest = Some(shot);
                    drop(p);
                    self.cameras.update(id, |h| {
                        h.snapshot_at_ms = Some(unix_ms(job.want.received));
                    });
                }
                Err(e) => tracing::warn!(camera = %id, error = %e, "snapshot not encoded"),
            }
        }
        self.cameras.update(id, |h| {
            h.decoded += 1;
            h.last_decode_error = None;
            h.picture_width = Some(picture.width());
            h.picture_height = Some(picture.height());
        });
        for f in findings {
            self.cameras
                .sensed(&self.camera, &f, job.want.received, self.offset, evidence);
        }
    }
}

/// What a due keyframe is decoded for.
#[derive(Debug)]
pub struct Want {
    pub snapshot: bool,
    between: Between,
    received: SystemTime,
    at: Instant,
}

struct Job {
    analysis: Arc<Analysis>,
    codec: VideoCodec,
    data: Vec<u8>,
    want: Want,
}

/// A small pool of decoder threads shared by every camera of the gateway.
#[derive(Clone)]
pub struct Decoders {
    tx: SyncSender<Job>,
}

impl Decoders {
    /// Starts `threads` decoder threads for `cameras` cameras. They end when every handle is
    /// dropped.
    pub fn start(threads: usize, cameras: usize) -> Result<Self, super::decode::DecodeError> {
        Pictures::init()?;
        let threads = threads.max(1);
        // A camera has at most one keyframe waiting, so keyframes that arrive together (cameras
        // in step) wait their turn instead of being dropped.
        let (tx, rx) = sync_channel::<Job>(cameras.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("decoder-{i}"))
                .spawn(move || worker(&rx));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a decoder thread");
            }
        }
        Ok(Self { tx })
    }

    /// Hands a keyframe to a decoder; drops it when every decoder is busy.
    pub fn submit(&self, analysis: &Arc<Analysis>, codec: VideoCodec, data: Vec<u8>, want: Want) {
        let job = Job {
            analysis: analysis.clone(),
            codec,
            data,
            want,
        };
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) | Err(TrySendError::Disconnected(job)) => {
                job.analysis.busy.store(false, Ordering::Release);
                job.analysis
                    .cameras
                    .update(&job.analysis.camera.id, |h| h.keyframes_skipped += 1);
            }
        }
    }
}

fn worker(rx: &Mutex<Receiver<Job>>) {
    let mut pictures = Pictures::default();
    loop {
        let job = match lock(rx).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        let analysis = job.analysis.clone();
        // A panic inside FFmpeg glue must not take the pool down with it.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            analysis.process(&mut pictures, job)
        }));
        if result.is_err() {
            tracing::error!(camera = %analysis.camera.id, "decoder panicked; rebuilding");
            pictures = Pictures::default();
        }
        analysis.busy.store(false, Ordering::Release);
    }
}
