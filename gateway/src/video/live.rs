//! The live video of one camera, packaged once and shared by every viewer.
//!
//! The camera session hands each frame to its [`Live`]: it becomes a fragment, the fragments
//! since the last keyframe are kept (the GOP), and each goes out on a broadcast ring. A viewer
//! gets the init segment and the GOP at once — so its player starts on a decodable picture —
//! then follows the ring. A viewer that falls behind the ring skips to the next keyframe
//! instead of growing memory.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::broadcast;

use super::fmp4;

/// Fragments a viewer may be behind before it skips to the next keyframe (about 2.5 s at
/// 25 fps; a power of two, as the broadcast ring rounds up to one).
const RING: usize = 64;
/// At most this many fragments are kept from the last keyframe (a GOP longer than this is
/// not kept whole: viewers then wait for the next keyframe).
const MAX_GOP: usize = 300;

/// What a player needs to know before the bytes: the MSE type and the picture size.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Track {
    pub codec: String,
    /// `video/mp4; codecs="…"`, for `MediaSource.isTypeSupported`.
    pub mime: String,
    pub width: u32,
    pub height: u32,
    /// Bumped whenever the parameters change: the player appends the new init segment.
    pub generation: u64,
}

/// One piece of the stream for viewers.
#[derive(Debug, Clone)]
pub enum Piece {
    /// A new track (parameters changed): its description and init segment.
    Init(Arc<Track>, Bytes),
    Fragment {
        keyframe: bool,
        bytes: Bytes,
    },
}

#[derive(Default)]
struct State {
    track: Option<(Arc<Track>, Bytes)>,
    gop: Vec<Bytes>,
    sequence: u32,
    last_ts: Option<i64>,
    default_duration: u32,
    generation: u64,
    h265: bool,
}

/// The live stream of one camera; cheap to clone.
#[derive(Clone)]
pub struct Live {
    state: Arc<Mutex<State>>,
    tx: broadcast::Sender<Piece>,
}

impl Default for Live {
    fn default() -> Self {
        Self::new()
    }
}

/// What a new viewer starts from.
pub struct Joined {
    pub track: Option<(Arc<Track>, Bytes)>,
    pub gop: Vec<Bytes>,
    pub rx: broadcast::Receiver<Piece>,
}

impl Live {
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            tx: broadcast::channel(RING).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn viewers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// New parameters from the camera (a session started, or they changed mid-stream).
    pub fn set_parameters(&self, params: &retina::codec::VideoParameters, h265: bool) {
        use retina::codec::VideoParametersCodec as C;
        let sets = match params.codec_params() {
            C::H264 { sps, pps } => fmp4::ParameterSets::H264 { sps, pps },
            C::H265 { vps, sps, pps } => fmp4::ParameterSets::H265 { vps, sps, pps },
            _ => return,
        };
        let (width, height) = params.pixel_dimensions();
        let Some(entry) = fmp4::sample_entry(&sets, width as u16, height as u16) else {
            tracing::warn!("parameter sets too short for an MP4 sample entry");
            return;
        };
        let codec = params.rfc6381_codec().to_owned();
        let mut s = self.lock();
        s.generation += 1;
        let track = Arc::new(Track {
            mime: format!("video/mp4; codecs=\"{codec}\""),
            codec,
            width,
            height,
            generation: s.generation,
        });
        let init = Bytes::from(fmp4::init_segment(&entry, width, height));
        s.default_duration = params
            .frame_rate()
            .filter(|(n, d)| *n > 0 && *d > 0)
            .map(|(n, d)| (u64::from(fmp4::TIMESCALE) * u64::from(n) / u64::from(d)) as u32)
            .unwrap_or(fmp4::TIMESCALE / 25);
        s.track = Some((track.clone(), init.clone()));
        s.gop.clear();
        s.last_ts = None;
        s.h265 = h265;
        drop(s);
        let _ = self.tx.send(Piece::Init(track, init));
    }

    /// A frame: `ts` in 90 kHz units, `data` in Annex B.
    pub fn frame(&self, ts: i64, keyframe: bool, data: &[u8]) {
        let mut s = self.lock();
        if s.track.is_none() || (s.gop.is_empty() && !keyframe) {
            // Nothing decodable to start from yet.
            return;
        }
        let duration = match s.last_ts {
            Some(prev) if ts > prev => (ts - prev).min(i64::from(u32::MAX)) as u32,
            _ => s.default_duration,
        };
        s.last_ts = Some(ts);
        s.sequence = s.sequence.wrapping_add(1);
        let sample = fmp4::annexb_to_sample(s.h265, data);
        let bytes = Bytes::from(fmp4::fragment(
            s.sequence,
            ts.max(0) as u64,
            duration,
            keyframe,
            &sample,
        ));
        if keyframe {
            s.gop.clear();
        }
        if s.gop.len() < MAX_GOP {
            s.gop.push(bytes.clone());
        }
        drop(s);
        let _ = self.tx.send(Piece::Fragment { keyframe, bytes });
    }

    /// The session ended: what was kept is stale.
    pub fn stop(&self) {
        let mut s = self.lock();
        s.gop.clear();
        s.last_ts = None;
    }

    /// A new viewer: the track, the fragments since the last keyframe, and the live ring,
    /// taken together so that nothing falls between them.
    pub fn join(&self) -> Joined {
        let s = self.lock();
        Joined {
            track: s.track.clone(),
            gop: s.gop.clone(),
            rx: self.tx.subscribe(),
        }
    }
}

/// Follows the ring for one viewer: yields pieces in order; after falling behind, skips to
/// the next keyframe (or new track). `None` when the camera's live stream is gone.
pub async fn next_piece(rx: &mut broadcast::Receiver<Piece>, skipping: &mut bool) -> Option<Piece> {
    loop {
        match rx.recv().await {
            Ok(piece) => {
                if *skipping {
                    match &piece {
                        Piece::Fragment {
                            keyframe: false, ..
                        } => continue,
                        _ => *skipping = false,
                    }
                }
                return Some(piece);
            }
            Err(broadcast::error::RecvError::Lagged(_)) => *skipping = true,
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live_with_track() -> Live {
        let live = Live::new();
        let mut s = live.lock();
        s.track = Some((
            Arc::new(Track {
                codec: "avc1.42c01e".into(),
                mime: String::new(),
                width: 2,
                height: 2,
                generation: 1,
            }),
            Bytes::from_static(b"init"),
        ));
        s.default_duration = 3600;
        drop(s);
        live
    }

    const KEY: &[u8] = &[0, 0, 0, 1, 0x65, 1];
    const P: &[u8] = &[0, 0, 0, 1, 0x41, 1];

    #[test]
    fn a_viewer_starts_on_the_last_keyframe() {
        let live = live_with_track();
        live.frame(0, false, P); // before any keyframe: dropped
        live.frame(3600, true, KEY);
        live.frame(7200, false, P);
        live.frame(10800, true, KEY);
        live.frame(14400, false, P);
        let j = live.join();
        assert_eq!(j.gop.len(), 2);
        assert!(j.track.is_some());
    }

    #[tokio::test]
    async fn a_slow_viewer_skips_to_the_next_keyframe() {
        let live = live_with_track();
        live.frame(0, true, KEY);
        let mut j = live.join();
        for i in 1..(2 * RING as i64) {
            live.frame(i * 3600, false, P);
        }
        live.frame(1_000_000, true, KEY);
        live.frame(1_003_600, false, P);
        let mut skipping = false;
        match next_piece(&mut j.rx, &mut skipping).await {
            Some(Piece::Fragment { keyframe, .. }) => assert!(keyframe),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            next_piece(&mut j.rx, &mut skipping).await,
            Some(Piece::Fragment {
                keyframe: false,
                ..
            })
        ));
    }
}
