//! The live video of one camera: frames packaged once as fragments ([`fmp4`]) and handed to a
//! [`Hub`] that every viewer of the camera shares.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
pub use firmware_config::runtime::video_hub::{next_piece, Hub, Joined, Piece, Track};

use super::fmp4;

#[derive(Default)]
struct Muxer {
    sequence: u32,
    last_ts: Option<i64>,
    default_duration: u32,
    generation: u64,
    h265: bool,
}

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
        self.hub.join()
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
            .frame_rate()
            .filter(|(n, d)| *n > 0 && *d > 0)
            .map(|(n, d)| (u64::from(fmp4::TIMESCALE) * u64::from(n) / u64::from(d)) as u32)
            .unwrap_or(fmp4::TIMESCALE / 25);
        m.last_ts = None;
        m.h265 = h265;
        let init = Bytes::from(fmp4::init_segment(&entry, width, height));
        // Pushed under the muxer's lock, so that no fragment of the old track follows it.
        self.hub.push(Piece::Init(track, init));
    }

    /// A frame: `ts` in 90 kHz units, `data` in Annex B.
    pub fn frame(&self, ts: i64, keyframe: bool, data: &[u8]) {
        let mut m = self.lock();
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

    /// The session ended: what was kept is stale.
    pub fn stop(&self) {
        self.lock().last_ts = None;
        self.hub.pause();
    }
}
