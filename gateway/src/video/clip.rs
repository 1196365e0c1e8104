//! A clip as an MP4 file: the track's init segment, then one fragment per frame as the camera
//! sent it (never re-encoded). A fragmented MP4 needs no index at its end, so a clip cut short
//! by a stream that stopped is still a whole file to players and to FFmpeg.

use super::fmp4;
use super::ring::Taken;

/// Writes the MP4 of `t` to `out`, its timeline starting at zero, a fragment at a time (a
/// clip is not held twice in memory); the bytes written. `t` must hold a frame.
pub fn write_mp4(t: &Taken, out: &mut impl std::io::Write) -> std::io::Result<u64> {
    let first = t
        .frames
        .first()
        .ok_or_else(|| std::io::Error::other("no frame in the clip"))?;
    let init = fmp4::init_segment(&t.track.sample_entry, t.track.width, t.track.height);
    out.write_all(&init)?;
    let mut written = init.len() as u64;
    for (i, f) in t.frames.iter().enumerate() {
        let duration = match t.frames.get(i + 1) {
            Some(next) if next.ts > f.ts => (next.ts - f.ts).min(i64::from(u32::MAX)) as u32,
            _ => t.track.default_duration,
        };
        let fragment = fmp4::fragment_from_annexb(
            i as u32 + 1,
            (f.ts - first.ts).max(0) as u64,
            duration,
            f.keyframe,
            t.track.h265,
            &f.data,
        );
        out.write_all(&fragment)?;
        written += fragment.len() as u64;
    }
    Ok(written)
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
