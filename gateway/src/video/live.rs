//! The live video of one camera: frames packaged once as fragments ([`fmp4`]) and handed to a
//! [`Hub`] that every viewer of the camera shares.
//!
//! Packaging costs as much as receiving the camera, so it runs only while someone watches.
//! Meanwhile the frames since the last keyframe are kept as they came (moved, not copied), so
//! that a first viewer still starts at once: joining packages that GOP first.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
pub use firmware_config::runtime::video_hub::{next_piece, Hub, Joined, Piece, Track};

use super::fmp4;

/// How long packaging goes on after a viewer asked for it, even before it is counted.
const JOIN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Default)]
struct Muxer {
    sequence: u32,
    last_ts: Option<i64>,
    default_duration: u32,
    generation: u64,
    h265: bool,
    /// Frames since the last keyframe, as received: (timestamp, keyframe, Annex B).
    raw_gop: Vec<(i64, bool, Bytes)>,
    /// The last seconds of the stream, for alert clips (none kept when clips are off).
    ring: Option<super::ring::Ring>,
    /// H.264 made of this H.265 stream, while someone watches it; how many were started.
    transcode: Option<super::transcode::Transcode>,
    transcodes: u64,
    /// The stream's parameter sets in Annex B: put before each keyframe the transcoder gets
    /// (a camera's H.265 keyframes may come without them).
    sets: Bytes,
    /// Packaging into the hub, and until when at least (a viewer is joining).
    packaging: bool,
    grace_until: Option<firmware_config::runtime::clock::Instant>,
}

/// At most this many frames are kept from the last keyframe.
const MAX_RAW_GOP: usize = 300;

/// The live stream of one camera; cheap to clone.
#[derive(Clone, Default)]
pub struct Live {
    muxer: Arc<Mutex<Muxer>>,
    hub: Hub,
}

impl Live {
    pub fn new() -> Self {
        Self::default()
    }

    /// A live stream that also keeps the last `keep` of the stream for clips.
    pub fn with_ring(keep: std::time::Duration) -> Self {
        let live = Self::default();
        if !keep.is_zero() {
            live.lock().ring = Some(super::ring::Ring::new(keep));
        }
        live
    }

    /// Records the stream from the keyframe at or before `from_ms` to `until_ms` (Unix ms).
    pub fn record(
        &self,
        from_ms: i64,
        until_ms: i64,
    ) -> Result<tokio::sync::oneshot::Receiver<super::ring::Taken>, super::ring::RingError> {
        match self.lock().ring.as_mut() {
            Some(r) => r.record(from_ms, until_ms),
            None => Err(super::ring::RingError::NoVideo),
        }
    }

    /// Whether the stream is H.265 (as its last parameters said).
    pub fn is_h265(&self) -> bool {
        self.lock().h265
    }

    /// This H.265 stream as H.264 at most `width` wide, for players that cannot decode H.265:
    /// one transcode shared by every such viewer, started now (from the frames kept since the
    /// last keyframe, so the first picture comes at once) and stopped once nobody watches it.
    pub fn h264(&self, camera: &str, width: u32) -> std::io::Result<Live> {
        let mut m = self.lock();
        if let Some(t) = &m.transcode {
            return Ok(t.out.clone());
        }
        // As the camera's parameters give it: seconds a frame, as a fraction.
        let frame_rate = (m.default_duration > 0).then_some((m.default_duration, fmp4::TIMESCALE));
        let out = Live::new();
        out.prepare();
        let mut t = super::transcode::Transcode::start(camera, out.clone(), width, frame_rate)?;
        for (ts, keyframe, data) in &m.raw_gop {
            t.send(*ts, *keyframe, with_sets(&m.sets, *keyframe, data));
        }
        m.transcode = Some(t);
        m.transcodes += 1;
        Ok(out)
    }

    /// Of the H.264 made of this stream: its viewers, whether it runs, and how many times it
    /// was started.
    pub fn h264_state(&self) -> (usize, bool, u64) {
        let m = self.lock();
        match &m.transcode {
            Some(t) => (t.out.viewers(), true, m.transcodes),
            None => (0, false, m.transcodes),
        }
    }

    /// Someone watches, or is about to.
    fn watched(&self) -> bool {
        self.hub.viewers() > 0
            || self
                .lock()
                .grace_until
                .is_some_and(|t| firmware_config::runtime::clock::Instant::now() < t)
    }

    /// The ring's bytes and frames (zero without one).
    pub fn ring_held(&self) -> (usize, usize) {
        self.lock()
            .ring
            .as_ref()
            .map_or((0, 0), |r| (r.bytes(), r.len()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Muxer> {
        self.muxer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    pub fn viewers(&self) -> usize {
        self.hub.viewers()
    }

    pub fn join(&self) -> Joined {
        self.prepare();
        self.hub.join()
    }

    /// New parameters from the camera (a session started, or they changed mid-stream).
    pub fn set_parameters(&self, params: &crate::camera::source::StreamParameters, h265: bool) {
        use crate::camera::source::OwnedParameterSets as O;
        let sets = match &params.sets {
            O::H264 { sps, pps } => fmp4::ParameterSets::H264 { sps, pps },
            O::H265 { vps, sps, pps } => fmp4::ParameterSets::H265 { vps, sps, pps },
        };
        let (width, height) = (params.width, params.height);
        let Some(entry) = fmp4::sample_entry(&sets, width as u16, height as u16) else {
            tracing::warn!("parameter sets too short for an MP4 sample entry");
            return;
        };
        let codec = params.rfc6381_codec.clone();
        let mut m = self.lock();
        m.generation += 1;
        let track = Arc::new(Track {
            mime: format!("video/mp4; codecs=\"{codec}\""),
            codec,
            width,
            height,
            generation: m.generation,
        });
        m.default_duration = params
            .frame_rate
            .filter(|(n, d)| *n > 0 && *d > 0)
            .map(|(n, d)| (u64::from(fmp4::TIMESCALE) * u64::from(n) / u64::from(d)) as u32)
            .unwrap_or(fmp4::TIMESCALE / 25);
        m.last_ts = None;
        m.h265 = h265;
        m.raw_gop.clear();
        let start = [0u8, 0, 0, 1];
        m.sets = Bytes::from(match &params.sets {
            O::H264 { sps, pps } => [&start[..], sps, &start, pps].concat(),
            O::H265 { vps, sps, pps } => [&start[..], vps, &start, sps, &start, pps].concat(),
        });
        let default_duration = m.default_duration;
        if let Some(ring) = m.ring.as_mut() {
            ring.set_track(super::ring::TrackInfo {
                sample_entry: std::sync::Arc::from(entry.as_slice()),
                width,
                height,
                h265,
                default_duration,
            });
        }
        let init = Bytes::from(fmp4::init_segment(&entry, width, height));
        // Pushed under the muxer's lock, so that no fragment of the old track follows it.
        self.hub.push(Piece::Init(track, init));
    }

    /// A frame: `ts` in 90 kHz units, `data` in Annex B.
    pub fn frame(&self, ts: i64, keyframe: bool, data: Vec<u8>) {
        // Shared from here on by the ring, the GOP kept and recordings (not copied).
        let data = Bytes::from(data);
        let mut m = self.lock();
        if let Some(ring) = m.ring.as_mut() {
            ring.push(super::ring::Frame {
                ts,
                wall_ms: unix_ms_now(),
                keyframe,
                data: data.clone(),
            });
        }
        // The transcode goes on while its viewers do (its own lock, not this one's users).
        {
            // The guard's fields, borrowed apart.
            let mx = &mut *m;
            if let Some(t) = mx.transcode.as_mut() {
                if !t.out.watched() || !t.send(ts, keyframe, with_sets(&mx.sets, keyframe, &data)) {
                    mx.transcode = None;
                    tracing::debug!("the H.264 variant has no viewers: its transcode ends");
                }
            }
        }
        if keyframe {
            m.raw_gop.clear();
        }
        let watched = self.hub.viewers() > 0
            || m.grace_until
                .is_some_and(|t| firmware_config::runtime::clock::Instant::now() < t);
        if !watched && m.packaging {
            m.packaging = false;
            self.hub.pause();
        } else if watched && !m.packaging {
            self.start_packaging(&mut m);
        }
        if m.packaging {
            self.package(&mut m, ts, keyframe, &data);
        }
        if (keyframe || !m.raw_gop.is_empty()) && m.raw_gop.len() < MAX_RAW_GOP {
            m.raw_gop.push((ts, keyframe, data));
        }
    }

    fn package(&self, m: &mut Muxer, ts: i64, keyframe: bool, data: &[u8]) {
        let duration = match m.last_ts {
            Some(prev) if ts > prev => (ts - prev).min(i64::from(u32::MAX)) as u32,
            _ => m.default_duration,
        };
        m.last_ts = Some(ts);
        m.sequence = m.sequence.wrapping_add(1);
        let bytes = Bytes::from(fmp4::fragment_from_annexb(
            m.sequence,
            ts.max(0) as u64,
            duration,
            keyframe,
            m.h265,
            data,
        ));
        self.hub.push(Piece::Fragment { keyframe, bytes });
    }

    /// A viewer (or a push to central) is about to join the hub: start packaging, beginning
    /// with the frames kept since the last keyframe.
    pub fn prepare(&self) {
        let mut m = self.lock();
        m.grace_until = Some(firmware_config::runtime::clock::Instant::now() + JOIN_GRACE);
        if !m.packaging {
            self.start_packaging(&mut m);
        }
    }

    fn start_packaging(&self, m: &mut Muxer) {
        m.packaging = true;
        m.last_ts = None;
        let gop = std::mem::take(&mut m.raw_gop);
        for (ts, keyframe, data) in &gop {
            self.package(m, *ts, *keyframe, data);
        }
        m.raw_gop = gop;
    }

    /// The session ended: what was kept is stale, and recordings end here.
    pub fn stop(&self) {
        let mut m = self.lock();
        m.last_ts = None;
        m.raw_gop.clear();
        if let Some(ring) = m.ring.as_mut() {
            ring.end(true);
        }
        self.hub.pause();
    }
}

fn unix_ms_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A keyframe with the stream's parameter sets before it (a copy, once a GOP); any other frame
/// as it is.
fn with_sets(sets: &Bytes, keyframe: bool, data: &Bytes) -> Bytes {
    if keyframe && !sets.is_empty() {
        Bytes::from([&sets[..], &data[..]].concat())
    } else {
        data.clone()
    }
}
