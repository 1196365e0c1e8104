//! `bench-clips [--quick] [--clips N]`: alert clips of the benchmark camera (1080p H.264, about
//! 4 Mbit/s, a keyframe every 2 s), in the gateway's own code (no RTSP: the frames of the
//! pre-encoded file, timed at 25 a second).
//!
//! - Ring memory: the heap the gateway's ring of 10 s takes (glibc's `mallinfo2`, in use),
//!   against the bytes of the frames it holds (the floor any ring of them has).
//! - Write cost: a clip of 10 s before and 10 s after written as the gateway writes it (MP4
//!   fragments from the ring's frames, made durable and renamed), against `ffmpeg -c copy`
//!   muxing the same frames from their Annex B file into an MP4 (`-movflags +faststart`, the
//!   way a recorder finishing a file writes it), each timed from start to a durable file.
//!
//! Prints both sides and their ratios. Build with `cargo build --release --workspace --bins`.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway::video::ring::{Frame, Ring, TrackInfo};
use gridedge_tests::bench::{arg_value, video, FPS};

fn nal_of(au: &[u8], kind: u8) -> Option<Vec<u8>> {
    let mut i = 0;
    while i + 3 < au.len() {
        if au[i..].starts_with(&[0, 0, 1]) && au[i + 3] & 0x1F == kind {
            let from = i + 3;
            let to = (from..au.len().saturating_sub(2))
                .find(|&j| au[j..].starts_with(&[0, 0, 1]))
                .map_or(au.len(), |j| if au[j - 1] == 0 { j - 1 } else { j });
            return Some(au[from..to].to_vec());
        }
        i += 1;
    }
    None
}

fn heap_in_use() -> usize {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    unsafe { libc::mallinfo2().uordblks }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let clips = arg_value(&args, "--clips").unwrap_or(if quick { 5 } else { 20 }) as usize;
    let file = video(30)?;
    let data = std::fs::read(&file)?;
    let aus: Vec<(bool, Vec<u8>)> =
        gridedge_tests::bench::access_units(&data, |b| matches!(b & 0x1F, 1 | 5))
            .into_iter()
            .map(|au| (nal_of(&au, 5).is_some(), au))
            .collect();
    anyhow::ensure!(
        aus.len() > 500,
        "{} frames in {}",
        aus.len(),
        file.display()
    );
    let first_key = aus
        .iter()
        .find(|(k, _)| *k)
        .map(|(_, a)| a.clone())
        .unwrap_or_default();
    let (sps, pps) = (nal_of(&first_key, 7), nal_of(&first_key, 8));
    let (Some(sps), Some(pps)) = (sps, pps) else {
        anyhow::bail!("no SPS/PPS in the first keyframe");
    };
    let entry = gateway::video::fmp4::sample_entry(
        &gateway::video::fmp4::ParameterSets::H264 {
            sps: &sps,
            pps: &pps,
        },
        1920,
        1080,
    )
    .ok_or_else(|| anyhow::anyhow!("no sample entry"))?;
    let track = TrackInfo {
        sample_entry: Arc::from(entry.as_slice()),
        width: 1920,
        height: 1080,
        h265: false,
        default_duration: 90_000 / FPS,
    };
    let frame = |i: usize| {
        let (key, au) = &aus[i % aus.len()];
        Frame {
            ts: i as i64 * i64::from(90_000 / FPS),
            wall_ms: i as i64 * 1000 / i64::from(FPS),
            keyframe: *key,
            // As retina hands them over: a buffer of exactly the frame.
            data: Bytes::from(au.clone()),
        }
    };

    // Ring memory: 30 s through a ring of 10 s; what it holds at the end against the heap.
    let before = heap_in_use();
    let mut ring = Ring::new(Duration::from_secs(10));
    ring.set_track(track.clone());
    for i in 0..aus.len() {
        ring.push(frame(i));
    }
    let heap = heap_in_use().saturating_sub(before);
    let held = ring.bytes();
    let span = ring.span_ms();
    let frames_held = ring.len();

    // Write cost: clips of 20 s (10 before, 10 after), ours and ffmpeg's, one after another.
    let dir = tempfile::tempdir()?;
    let n = (20 * FPS) as usize;
    let start = aus.iter().position(|(k, _)| *k).unwrap_or(0);
    let taken = gateway::video::ring::Taken {
        track,
        frames: (start..start + n).map(frame).collect(),
        cut_short: false,
    };
    let annexb: Vec<u8> = (start..start + n)
        .flat_map(|i| aus[i % aus.len()].1.clone())
        .collect();
    let es = dir.path().join("clip.h264");
    std::fs::write(&es, &annexb)?;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut our_bytes, mut their_bytes) = (0, 0);
    for k in 0..clips {
        let path = dir.path().join(format!("ours-{k}.mp4"));
        let t = Instant::now();
        our_bytes = gateway::clips::write_atomically_with(&path, |f| {
            gateway::video::clip::write_mp4(&taken, f)
        })?;
        ours.push(t.elapsed().as_secs_f64() * 1000.0);

        let out = dir.path().join(format!("ffmpeg-{k}.mp4"));
        let t = Instant::now();
        let status = Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-y",
                "-f",
                "h264",
                "-framerate",
                &FPS.to_string(),
                "-i",
            ])
            .arg(&es)
            .args(["-c", "copy", "-movflags", "+faststart"])
            .arg(&out)
            .status()?;
        anyhow::ensure!(status.success(), "ffmpeg -c copy failed");
        std::fs::File::open(&out)?.sync_all()?;
        theirs.push(t.elapsed().as_secs_f64() * 1000.0);
        their_bytes = std::fs::metadata(&out)?.len();
    }
    // Ours is a whole MP4 to FFmpeg: every frame decodes.
    let check = Command::new("ffprobe")
        .args(["-v", "error", "-count_packets", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=nb_read_packets,width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(dir.path().join("ours-0.mp4"))
        .output()?;
    let probed = String::from_utf8_lossy(&check.stdout).trim().to_owned();

    println!();
    println!(
        "clip benchmark: 1080p H.264 at {} kbit/s, {FPS} fps, a keyframe every {} s; {clips} clips of 20 s",
        gridedge_tests::bench::KBITS,
        gridedge_tests::bench::KEYINT / FPS
    );
    println!("| figure | GridEdge | peer | ratio (GridEdge / peer) | goal |");
    println!("| --- | --- | --- | --- | --- |");
    println!(
        "| ring of 10 s: heap in use (peer: the bytes of the {frames_held} frames it holds, {:.1} s from a keyframe) | {:.2} MB | {:.2} MB | {:.3} | ≤ 1.10 |",
        span as f64 / 1000.0,
        heap as f64 / 1e6,
        held as f64 / 1e6,
        heap as f64 / held.max(1) as f64
    );
    let (o, t) = (median(&mut ours), median(&mut theirs));
    println!(
        "| clip of 20 s written and durable, median (peer: ffmpeg -c copy to MP4 from the same frames) | {o:.1} ms | {t:.1} ms | {:.2} | |",
        o / t
    );
    println!(
        "| clip size (peer: ffmpeg's MP4 of the same frames) | {:.2} MB | {:.2} MB | {:.3} | |",
        our_bytes as f64 / 1e6,
        their_bytes as f64 / 1e6,
        our_bytes as f64 / their_bytes.max(1) as f64
    );
    println!("ffprobe of GridEdge's clip (packets, width, height): {probed}");
    Ok(())
}
