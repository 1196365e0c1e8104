//! The last seconds of one camera's stream as it came (compressed, never decoded), and the
//! clips being recorded from it. A clip of an alert starts on the keyframe at or before `pre`
//! seconds ahead of the alert and takes every frame up to `post` seconds after it.
//!
//! Frames are shared, not copied: the ring, the live muxer and every recording hold the same
//! bytes (`Bytes` counts its owners), so a clip costs its frames' headers until it is written.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

/// One frame as the camera sent it: `ts` in 90 kHz units, `wall_ms` when it came (Unix ms),
/// `data` in Annex B.
#[derive(Clone, Debug)]
pub struct Frame {
    pub ts: i64,
    pub wall_ms: i64,
    pub keyframe: bool,
    pub data: Bytes,
}

/// The track the frames belong to: what a clip's init segment is written from.
#[derive(Clone, Debug)]
pub struct TrackInfo {
    pub sample_entry: Arc<[u8]>,
    pub width: u32,
    pub height: u32,
    pub h265: bool,
    /// A frame's duration in 90 kHz units when the timestamps do not tell (the last one).
    pub default_duration: u32,
}

/// A recording's frames once it ended.
#[derive(Debug)]
pub struct Taken {
    pub track: TrackInfo,
    pub frames: Vec<Frame>,
    /// The stream stopped or changed before the recording's end.
    pub cut_short: bool,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RingError {
    #[error("no video yet from this camera")]
    NoVideo,
}

struct Recording {
    until_ms: i64,
    taken: Taken,
    done: oneshot::Sender<Taken>,
}

impl Recording {
    fn finish(mut self, cut_short: bool) {
        self.taken.cut_short = cut_short;
        // The receiver may have gone (the gateway stopping): nothing to write then.
        let _ = self.done.send(self.taken);
    }
}

pub struct Ring {
    keep_ms: i64,
    frames: VecDeque<Frame>,
    bytes: usize,
    track: Option<TrackInfo>,
    recordings: Vec<Recording>,
}

impl Ring {
    /// A ring keeping at least `keep` of stream (from a keyframe); zero keeps nothing.
    pub fn new(keep: std::time::Duration) -> Self {
        Self {
            keep_ms: keep.as_millis().min(i64::MAX as u128) as i64,
            frames: VecDeque::new(),
            bytes: 0,
            track: None,
            recordings: Vec::new(),
        }
    }

    /// A new track (a session started, or the camera changed its parameters): what was kept
    /// is of the old one, and recordings of it end here.
    pub fn set_track(&mut self, track: TrackInfo) {
        self.end(true);
        self.track = Some(track);
    }

    /// The stream stopped: recordings end cut short, and nothing is kept.
    pub fn end(&mut self, cut_short: bool) {
        for r in self.recordings.drain(..) {
            r.finish(cut_short);
        }
        self.frames.clear();
        self.bytes = 0;
    }

    pub fn push(&mut self, f: Frame) {
        // Recordings take frames up to their end, and end on the first frame after it.
        let mut i = 0;
        while i < self.recordings.len() {
            if f.wall_ms > self.recordings[i].until_ms {
                self.recordings.swap_remove(i).finish(false);
            } else {
                self.recordings[i].taken.frames.push(f.clone());
                i += 1;
            }
        }
        if self.keep_ms == 0 || (self.frames.is_empty() && !f.keyframe) {
            return;
        }
        let cutoff = f.wall_ms - self.keep_ms;
        self.bytes += f.data.len();
        self.frames.push_back(f);
        // Whole GOPs go while the next keyframe is old enough to start from: the ring always
        // begins on a keyframe at or before the cutoff.
        while let Some(next) = self.frames.iter().skip(1).position(|f| f.keyframe) {
            let next = next + 1;
            if self.frames[next].wall_ms > cutoff {
                break;
            }
            for old in self.frames.drain(..next) {
                self.bytes -= old.data.len();
            }
        }
    }

    /// Starts recording from the keyframe at or before `from_ms` (the oldest kept when the
    /// ring is shorter) to `until_ms`; the frames come when it ends.
    pub fn record(
        &mut self,
        from_ms: i64,
        until_ms: i64,
    ) -> Result<oneshot::Receiver<Taken>, RingError> {
        let track = self.track.clone().ok_or(RingError::NoVideo)?;
        let start = self
            .frames
            .iter()
            .rposition(|f| f.keyframe && f.wall_ms <= from_ms)
            .unwrap_or(0);
        let frames: Vec<Frame> = self
            .frames
            .iter()
            .skip(start)
            .filter(|f| f.wall_ms <= until_ms)
            .cloned()
            .collect();
        let (done, taken) = oneshot::channel();
        self.recordings.push(Recording {
            until_ms,
            taken: Taken {
                track,
                frames,
                cut_short: false,
            },
            done,
        });
        Ok(taken)
    }

    /// The bytes of the frames kept (not counting recordings).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// From the first kept frame to the last, in ms.
    pub fn span_ms(&self) -> i64 {
        match (self.frames.front(), self.frames.back()) {
            (Some(a), Some(b)) => b.wall_ms - a.wall_ms,
            _ => 0,
        }
    }

    pub fn recording(&self) -> usize {
        self.recordings.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track() -> TrackInfo {
        TrackInfo {
            sample_entry: Arc::from(&b"avc1"[..]),
            width: 320,
            height: 240,
            h265: false,
            default_duration: 3600,
        }
    }

    /// 25 frames a second, a keyframe every second; frame `i` comes at `i * 40` ms.
    fn frame(i: i64) -> Frame {
        Frame {
            ts: i * 3600,
            wall_ms: i * 40,
            keyframe: i % 25 == 0,
            data: Bytes::from(vec![0u8; 100]),
        }
    }

    #[test]
    fn the_ring_keeps_its_time_from_a_keyframe_and_counts_its_bytes() {
        let mut r = Ring::new(std::time::Duration::from_secs(3));
        r.set_track(track());
        // Before the first keyframe: nothing to start a clip from.
        for i in 1..=24 {
            r.push(Frame {
                keyframe: false,
                ..frame(i - 25)
            });
        }
        assert!(r.is_empty());
        for i in 0..250 {
            r.push(frame(i));
            // From the newest keyframe at least 3 s old (keyframes come each second).
            let cutoff = i * 40 - 3000;
            let expected = if cutoff < 0 { 0 } else { cutoff / 1000 * 1000 };
            assert!(r.frames[0].keyframe);
            assert_eq!(r.frames[0].wall_ms, expected, "after frame {i}");
            assert_eq!(r.bytes(), r.len() * 100);
        }
        // The newest 9.96 s: kept from the keyframe at 6 s (3.96 s back).
        assert_eq!(r.frames[0].wall_ms, 6000);
        assert_eq!(r.span_ms(), 3960);
    }

    #[tokio::test]
    async fn a_recording_starts_on_the_keyframe_before_and_ends_after_its_time() {
        let mut r = Ring::new(std::time::Duration::from_secs(5));
        r.set_track(track());
        for i in 0..200 {
            r.push(frame(i));
        }
        // Asked at 7.96 s for 2 s before and 1 s after: from the keyframe at 5 s.
        let taken = r.record(5960, 8960).unwrap();
        assert_eq!(r.recording(), 1);
        for i in 200..260 {
            r.push(frame(i));
        }
        let t = taken.await.unwrap();
        assert!(!t.cut_short);
        assert_eq!(t.frames[0].wall_ms, 5000);
        assert!(t.frames[0].keyframe);
        assert_eq!(t.frames.last().unwrap().wall_ms, 8960);
        assert_eq!(t.frames.len(), (8960 - 5000) / 40 + 1);
        assert_eq!(r.recording(), 0);
    }

    #[tokio::test]
    async fn a_recording_ends_cut_short_when_the_stream_does() {
        let mut r = Ring::new(std::time::Duration::from_secs(5));
        assert_eq!(r.record(0, 1000).unwrap_err(), RingError::NoVideo);
        r.set_track(track());
        for i in 0..30 {
            r.push(frame(i));
        }
        let taken = r.record(0, 10_000).unwrap();
        r.end(true);
        let t = taken.await.unwrap();
        assert!(t.cut_short);
        assert_eq!(t.frames.len(), 30);
        assert!(r.is_empty());
    }

    #[test]
    fn a_ring_of_no_time_keeps_nothing() {
        let mut r = Ring::new(std::time::Duration::ZERO);
        r.set_track(track());
        for i in 0..100 {
            r.push(frame(i));
        }
        assert!(r.is_empty());
        assert_eq!(r.bytes(), 0);
    }
}
