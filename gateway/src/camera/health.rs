//! What the gateway knows about each camera at every moment.

use std::time::Duration;

use firmware_config::runtime::clock::Instant;
use serde::Serialize;

pub use firmware_config::kinds::CameraState;

/// Health of one camera, as `/api/v1/cameras` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CameraHealth {
    pub id: String,
    pub name: String,
    pub state: CameraState,
    pub codec: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fps: Option<f64>,
    pub bitrate_kbps: Option<f64>,
    pub keyframe_interval_secs: Option<f64>,
    pub frames: u64,
    pub frames_lost: u64,
    /// Sessions tried (successful or not).
    pub attempts: u64,
    pub reconnects: u64,
    pub last_frame_age_ms: Option<u64>,
    pub last_error: Option<String>,
    /// Keyframes decoded for snapshots and sensing.
    pub decoded: u64,
    /// Keyframes skipped because every decoder was busy.
    pub keyframes_skipped: u64,
    pub decode_errors: u64,
    pub last_decode_error: Option<String>,
    /// Size of the last decoded picture.
    pub picture_width: Option<u32>,
    pub picture_height: Option<u32>,
    /// When the latest snapshot was taken, ms since the Unix epoch.
    pub snapshot_at_ms: Option<u64>,
    /// Sensing conditions raised now, e.g. `covered` or `motion:archive-door`.
    pub sensing: Vec<String>,
    /// The figures of the last sensing observation.
    pub measures: Option<super::sensing::Measures>,
    /// Live viewers now (filled in by the API from the camera's live stream).
    pub viewers: usize,
    /// Of an H.265 camera: viewers of its H.264 transcode now, whether it runs, and how many
    /// times it was started (filled in by the API).
    pub h264_viewers: usize,
    pub transcoding: bool,
    pub transcodes: u64,
    #[serde(skip)]
    pub last_frame_at: Option<Instant>,
    #[serde(skip)]
    rate: RateWindow,
}

/// Frame and byte counts over a short window, for frame rate and bitrate.
#[derive(Debug, Clone, Default)]
struct RateWindow {
    started: Option<Instant>,
    frames: u64,
    bytes: u64,
    last_keyframe_ts: Option<f64>,
}

const WINDOW: Duration = Duration::from_secs(2);

impl CameraHealth {
    pub fn new(id: &str, name: &str, enabled: bool) -> Self {
        Self {
            id: id.to_owned(),
            name: name.to_owned(),
            state: if enabled {
                CameraState::Connecting
            } else {
                CameraState::Disabled
            },
            codec: None,
            width: None,
            height: None,
            fps: None,
            bitrate_kbps: None,
            keyframe_interval_secs: None,
            frames: 0,
            frames_lost: 0,
            attempts: 0,
            reconnects: 0,
            last_frame_age_ms: None,
            last_error: None,
            decoded: 0,
            keyframes_skipped: 0,
            decode_errors: 0,
            last_decode_error: None,
            picture_width: None,
            picture_height: None,
            snapshot_at_ms: None,
            sensing: Vec::new(),
            measures: None,
            viewers: 0,
            h264_viewers: 0,
            transcoding: false,
            transcodes: 0,
            last_frame_at: None,
            rate: RateWindow::default(),
        }
    }

    /// Counts a frame: `bytes` long, `ts_secs` its stream time, `key` a keyframe, `lost`
    /// packets lost before it.
    pub fn frame(&mut self, now: Instant, bytes: usize, ts_secs: f64, key: bool, lost: u64) {
        self.frames += 1;
        self.frames_lost += lost;
        self.last_frame_at = Some(now);
        if key {
            if let Some(prev) = self.rate.last_keyframe_ts {
                let gap = ts_secs - prev;
                if gap > 0.0 {
                    self.keyframe_interval_secs = Some(gap);
                }
            }
            self.rate.last_keyframe_ts = Some(ts_secs);
        }
        let started = *self.rate.started.get_or_insert(now);
        self.rate.frames += 1;
        self.rate.bytes += bytes as u64;
        let elapsed = now.duration_since(started);
        if elapsed >= WINDOW {
            let secs = elapsed.as_secs_f64();
            self.fps = Some(self.rate.frames as f64 / secs);
            self.bitrate_kbps = Some(self.rate.bytes as f64 * 8.0 / 1000.0 / secs);
            self.rate.started = Some(now);
            self.rate.frames = 0;
            self.rate.bytes = 0;
        }
    }

    /// A new session starts: rates start over.
    pub fn reset_rates(&mut self) {
        self.rate = RateWindow::default();
    }

    /// The health with its ages computed for `now`.
    pub fn at(&self, now: Instant) -> Self {
        let mut h = self.clone();
        h.last_frame_age_ms = self
            .last_frame_at
            .map(|t| now.saturating_duration_since(t).as_millis() as u64);
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_rate_bitrate_and_keyframe_interval() {
        let t0 = Instant::now();
        let mut h = CameraHealth::new("c", "C", true);
        for i in 0..=50u32 {
            let now = t0 + Duration::from_millis(u64::from(i) * 40);
            h.frame(now, 5000, f64::from(i) * 0.04, i % 25 == 0, 0);
        }
        let fps = h.fps.unwrap();
        assert!((fps - 25.0).abs() < 1.0, "{fps}");
        let kbps = h.bitrate_kbps.unwrap();
        assert!((kbps - 1000.0).abs() < 50.0, "{kbps}");
        assert!((h.keyframe_interval_secs.unwrap() - 1.0).abs() < 1e-9);
        assert_eq!(h.frames, 51);
        assert_eq!(
            h.at(t0 + Duration::from_secs(3)).last_frame_age_ms,
            Some(1000)
        );
        assert!(CameraState::Offline.alarming() && !CameraState::Connecting.reportable());
    }
}
