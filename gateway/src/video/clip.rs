//! A clip as an MP4 file: the track's init segment, then one fragment per frame as the camera
//! sent it (never re-encoded). A fragmented MP4 needs no index at its end, so a clip cut short
//! by a stream that stopped is still a whole file to players and to FFmpeg.

use super::fmp4;
use super::ring::Taken;

/// The MP4 of `t`, its timeline starting at zero; None when it holds no frame.
pub fn mp4(t: &Taken) -> Option<Vec<u8>> {
    let first = t.frames.first()?;
    let size: usize = t.frames.iter().map(|f| f.data.len() + 120).sum();
    let mut out = fmp4::init_segment(&t.track.sample_entry, t.track.width, t.track.height);
    out.reserve(size);
    for (i, f) in t.frames.iter().enumerate() {
        let duration = match t.frames.get(i + 1) {
            Some(next) if next.ts > f.ts => (next.ts - f.ts).min(i64::from(u32::MAX)) as u32,
            _ => t.track.default_duration,
        };
        out.extend(fmp4::fragment_from_annexb(
            i as u32 + 1,
            (f.ts - first.ts).max(0) as u64,
            duration,
            f.keyframe,
            t.track.h265,
            &f.data,
        ));
    }
    Some(out)
}

/// How long `t` lasts, in ms (its frames' timestamps, the last one's default duration).
pub fn duration_ms(t: &Taken) -> u64 {
    match (t.frames.first(), t.frames.last()) {
        (Some(a), Some(b)) => {
            let ticks = (b.ts - a.ts).max(0) as u64 + u64::from(t.track.default_duration);
            ticks * 1000 / u64::from(fmp4::TIMESCALE)
        }
        _ => 0,
    }
}
