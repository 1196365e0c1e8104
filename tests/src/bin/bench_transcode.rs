//! `bench-transcode [--quick] [--seconds N]`: the CPU of turning a 1080p H.265 camera into
//! H.264 for a browser without H.265, in the gateway's own transcoder (`video/transcode.rs`,
//! 1280 wide), against `ffmpeg -c:v libx264 -preset ultrafast` at the same size and quality
//! (CRF 26), both with one thread for the decoder and one for the encoder, on the same
//! pre-encoded camera video (1080p H.265 at 25 fps, about 4 Mbit/s, a keyframe every 2 s).
//!
//! Prints the CPU seconds each spends per second of video (a camera's share of a core) and
//! their ratio (goal: ≤ 1.0). Build with `cargo build --release --workspace --bins`.

use std::process::Command;

use gateway::video::transcode::Transcoder;
use gridedge_tests::bench::{arg_value, FPS, KBITS, KEYINT};
use gridedge_tests::workspace_root;

fn cpu(who: i32) -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut ru) };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(ru.ru_utime) + s(ru.ru_stime)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let seconds = arg_value(&args, "--seconds").unwrap_or(if quick { 20 } else { 60 }) as u32;
    let dir = workspace_root().join("target/bench-cache");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(format!("camera-1080p-h265-{KBITS}k-{seconds}s.h265"));
    if !file.exists() {
        eprintln!("encoding {seconds} s of 1080p H.265 (once)…");
        let status = Command::new(gridedge_tests::camera::PYTHON)
            .arg(workspace_root().join("tests/fixtures/rtsp_camera.py"))
            .args(["--encode-to"])
            .arg(&file)
            .args(["--seconds", &seconds.to_string(), "--codec", "h265"])
            .args(["--width", "1920", "--height", "1080", "--pattern", "scene"])
            .args(["--fps", &FPS.to_string(), "--keyint", &KEYINT.to_string()])
            .args(["--bitrate", &KBITS.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "encoding the H.265 video failed");
    }
    let data = std::fs::read(&file)?;
    let aus = gridedge_tests::bench::access_units(&data, |b| (b >> 1) & 0x3F < 32);
    anyhow::ensure!(
        aus.len() as u32 >= seconds * FPS / 2,
        "{} frames in {}",
        aus.len(),
        file.display()
    );
    let video_secs = aus.len() as f64 / f64::from(FPS);

    // GridEdge: this thread's CPU over the whole file.
    let mut t = Transcoder::new(1280, (1, FPS))?;
    let (mut frames, mut bytes) = (0usize, 0usize);
    let before = cpu(libc::RUSAGE_THREAD);
    for (i, au) in aus.iter().enumerate() {
        t.push(i as i64 * i64::from(90_000 / FPS), au, |e| {
            frames += 1;
            bytes += e.data.len();
        })?;
    }
    let ours = cpu(libc::RUSAGE_THREAD) - before;
    let size = t.size();

    // Peer: ffmpeg, the same size, one thread to decode and one to encode.
    let before = cpu(libc::RUSAGE_CHILDREN);
    let status = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-threads",
            "1",
            "-f",
            "hevc",
            "-r",
            &FPS.to_string(),
            "-i",
        ])
        .arg(&file)
        .args(["-vf", &format!("scale={}:{}", size.0, size.1)])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-crf",
            "26",
            "-threads",
            "1",
        ])
        .args(["-f", "null", "-"])
        .status()?;
    anyhow::ensure!(status.success(), "ffmpeg failed");
    let theirs = cpu(libc::RUSAGE_CHILDREN) - before;

    println!();
    println!(
        "transcode benchmark: {video_secs:.0} s of 1080p H.265 ({} kbit/s, {FPS} fps) to H.264 {}×{}; {frames} frames out, {:.1} Mbit/s",
        KBITS,
        size.0,
        size.1,
        bytes as f64 * 8.0 / video_secs / 1e6
    );
    println!("| figure | GridEdge | peer | ratio (GridEdge / peer) | goal |");
    println!("| --- | --- | --- | --- | --- |");
    println!(
        "| CPU per camera viewed: CPU seconds per second of video (peer: ffmpeg -c:v libx264 -preset ultrafast, same size, one thread each) | {:.3} | {:.3} | {:.2} | ≤ 1.0 |",
        ours / video_secs,
        theirs / video_secs,
        ours / theirs.max(1e-9)
    );
    Ok(())
}
