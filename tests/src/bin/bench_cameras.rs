//! Camera benchmark: N cameras of pre-encoded 1080p H.264 (25 fps, about 4 Mbit/s, a keyframe
//! every 2 s) served by the low-CPU replay fixture, watched side by side by
//!
//! * the GridEdge gateway, ingest only (no snapshots, no sensing) vs one
//!   `ffmpeg -rtsp_transport tcp -i URL -c copy -f null -` per camera;
//! * the gateway with snapshots (every 10 s) and tamper + motion sensing vs a Frigate-style
//!   pipeline, one `ffmpeg … -vf fps=5,scale=1280:720 -f rawvideo` per camera (decode every
//!   frame, keep 5 fps), and vs ffmpeg decoding keyframes only (`-skip_frame nokey`).
//!
//! For each it measures CPU seconds per camera-minute (user + system time of the processes
//! over a fixed window, read from /proc) and peak RSS per camera (VmHWM), and prints the
//! ratios. Usage: `bench-cameras [--quick] [--cameras 16,32] [--seconds 40]`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use gridedge_tests::bench::{fixture, url, video, FPS, KBITS, KEYINT};
use gridedge_tests::process::{cpu_seconds, peak_rss_mib, ChildProcess};
use gridedge_tests::services::{gateway_toml, ServiceProcess};
use gridedge_tests::{free_port, FixtureDir};

/// One measured setup.
struct Run {
    /// CPU seconds per camera-minute.
    cpu: f64,
    /// Peak RSS per camera, MiB.
    rss: f64,
    /// Share of the machine's cores the setup used: near 1.0 it was starved and its CPU figure
    /// is a floor.
    load: f64,
}

/// Measures `pids` over `window` after `warm`: CPU per camera-minute and the load.
async fn measure(pids: &[u32], n: usize, warm: Duration, window: Duration) -> (f64, f64) {
    tokio::time::sleep(warm).await;
    let total = |pids: &[u32]| pids.iter().filter_map(|&p| cpu_seconds(p)).sum::<f64>();
    let (c0, t0) = (total(pids), Instant::now());
    tokio::time::sleep(window).await;
    let (used, secs) = (total(pids) - c0, t0.elapsed().as_secs_f64());
    (
        used / n as f64 / (secs / 60.0),
        used / secs / gridedge_tests::bench::cores(),
    )
}

fn camera_toml(n: usize, port: u16, full: bool) -> String {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!(
            "\n[[cameras]]\nid = \"cam{i}\"\nname = \"Camera {i}\"\nurl = \"{}\"\n",
            url(port, i)
        ));
        if full {
            // Shipped defaults: a snapshot every 10 s, every tamper rule, one motion zone.
            s.push_str(
                "[[cameras.sensing.motion_zones]]\nname = \"door\"\npolygon = [[0.1, 0.1], [0.4, 0.1], [0.4, 0.6], [0.1, 0.6]]\n",
            );
        } else {
            s.push_str("[cameras.snapshot]\ninterval = \"24h\"\n[cameras.sensing]\ncovered = false\nfrozen = false\nmoved = false\n");
        }
    }
    s
}

async fn cameras_json(http: u16) -> Option<Vec<serde_json::Value>> {
    let url = format!("http://127.0.0.1:{http}/api/v1/cameras");
    reqwest::get(url).await.ok()?.json().await.ok()
}

async fn gateway(
    n: usize,
    port: u16,
    full: bool,
    warm: Duration,
    window: Duration,
) -> anyhow::Result<Run> {
    let dir = FixtureDir::new("bench-cameras")?;
    let http = free_port();
    let text = gateway_toml(dir.path(), "bench-cams", "mqtt://127.0.0.1:1", None, http)
        + &camera_toml(n, port, full);
    let mut gw = ServiceProcess::spawn("gateway", &text)?;
    let pid = gw.process.pid().context("gateway pid")?;
    let started = Instant::now();
    loop {
        let streaming = cameras_json(http)
            .await
            .map(|c| c.iter().filter(|c| c["state"] == "streaming").count())
            .unwrap_or(0);
        if streaming == n {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "only {streaming} of {n} cameras streaming after 60 s; log: {}",
            gw.process.log.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before: u64 = frames(http).await;
    let (cpu, load) = measure(&[pid], n, warm, window).await;
    let cams = cameras_json(http).await.unwrap_or_default();
    let after: u64 = cams.iter().filter_map(|c| c["frames"].as_u64()).sum();
    let decoded: u64 = cams.iter().filter_map(|c| c["decoded"].as_u64()).sum();
    let skipped: u64 = cams
        .iter()
        .filter_map(|c| c["keyframes_skipped"].as_u64())
        .sum();
    let snapshots = cams.iter().filter(|c| c["snapshot_at_ms"].is_u64()).count();
    let fps = (after - before) as f64 / (warm + window).as_secs_f64() / n as f64;
    eprintln!(
        "  gateway {}: {fps:.1} fps per camera, {decoded} keyframes decoded, {skipped} skipped, {snapshots}/{n} cameras with a snapshot",
        if full { "full" } else { "ingest" }
    );
    let rss = peak_rss_mib(pid) / n as f64;
    gw.kill();
    Ok(Run { cpu, rss, load })
}

async fn frames(http: u16) -> u64 {
    cameras_json(http)
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c["frames"].as_u64())
        .sum()
}

/// One ffmpeg per camera with `args` around `-i URL`.
async fn ffmpeg(
    n: usize,
    port: u16,
    before_input: &[&str],
    after_input: &[&str],
    warm: Duration,
    window: Duration,
    dir: &Path,
) -> anyhow::Result<Run> {
    let mut procs = Vec::new();
    for i in 0..n {
        let mut cmd = Command::new("ffmpeg");
        cmd.args(["-nostdin", "-loglevel", "error"])
            .args(before_input)
            .args(["-rtsp_transport", "tcp", "-i", &url(port, i)])
            .args(after_input);
        procs.push(ChildProcess::spawn(
            "ffmpeg",
            cmd,
            &dir.join(format!("ffmpeg-{i}.log")),
        )?);
    }
    let pids: Vec<u32> = procs.iter().filter_map(ChildProcess::pid).collect();
    // ffmpeg has no health endpoint: its session is up well within a few seconds.
    let (cpu, load) = measure(&pids, n, warm + Duration::from_secs(2), window).await;
    let rss = pids.iter().map(|&p| peak_rss_mib(p)).sum::<f64>() / n as f64;
    let mut alive = 0;
    for p in &mut procs {
        alive += usize::from(p.is_running());
    }
    anyhow::ensure!(
        alive == n,
        "only {alive} of {n} ffmpeg processes ran to the end (logs in {})",
        dir.display()
    );
    for p in &mut procs {
        p.kill();
    }
    Ok(Run { cpu, rss, load })
}

fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let counts: Vec<usize> = match arg(&args, "--cameras") {
        Some(list) => list
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .context("--cameras takes numbers, e.g. 16,32")
            })
            .collect::<anyhow::Result<_>>()?,
        None if quick => vec![8],
        None => vec![16, 32],
    };
    anyhow::ensure!(counts.iter().all(|&n| n > 0), "--cameras must be positive");
    let window = Duration::from_secs(match arg(&args, "--seconds") {
        Some(s) => s.parse().context("--seconds takes a number")?,
        None if quick => 12,
        None => 40,
    });
    let warm = Duration::from_secs(if quick { 3 } else { 8 });
    let file = video(if quick { 10 } else { 20 })?;
    let dir = FixtureDir::new("bench-cameras")?;
    let max = counts.iter().copied().max().unwrap_or(1);
    let (_fixture, port) = fixture(&file, max, dir.path())?;
    eprintln!(
        "cameras: 1080p H.264, {FPS} fps, ~{KBITS} kbit/s, keyframe every {KEYINT} frames; {} cores; window {window:?}",
        gridedge_tests::bench::cores()
    );
    let mut lines = Vec::new();
    for &n in &counts {
        eprintln!("N = {n} cameras");
        let ingest = gateway(n, port, false, warm, window).await?;
        let copy = ffmpeg(
            n,
            port,
            &[],
            &["-c", "copy", "-f", "null", "-"],
            warm,
            window,
            dir.path(),
        )
        .await?;
        let full = gateway(n, port, true, warm, window).await?;
        let frigate = ffmpeg(
            n,
            port,
            &[],
            &[
                "-vf",
                "fps=5,scale=1280:720",
                "-pix_fmt",
                "yuv420p",
                "-f",
                "rawvideo",
                "-y",
                "/dev/null",
            ],
            warm,
            window,
            dir.path(),
        )
        .await?;
        let nokey = ffmpeg(
            n,
            port,
            &["-skip_frame", "nokey"],
            &["-f", "null", "-"],
            warm,
            window,
            dir.path(),
        )
        .await?;
        for (what, ours, peer, peer_name) in [
            ("ingest", &ingest, &copy, "ffmpeg -c copy"),
            (
                "ingest+snapshots+sensing",
                &full,
                &frigate,
                "Frigate-style ffmpeg fps=5 decode",
            ),
            (
                "ingest+snapshots+sensing",
                &full,
                &nokey,
                "ffmpeg -skip_frame nokey",
            ),
        ] {
            let starved = |r: &Run| {
                if r.load > 0.9 {
                    " (CPU-starved: a floor)"
                } else {
                    ""
                }
            };
            lines.push(format!(
                "N={n} {what} CPU s per camera-minute: gridedge {:.3}{} | {peer_name} {:.3}{} | ratio {:.3}",
                ours.cpu,
                starved(ours),
                peer.cpu,
                starved(peer),
                ours.cpu / peer.cpu
            ));
            lines.push(format!(
                "N={n} {what} peak RSS MiB per camera: gridedge {:.2} | {peer_name} {:.2} | ratio {:.3}",
                ours.rss,
                peer.rss,
                ours.rss / peer.rss
            ));
        }
    }
    println!();
    for l in lines {
        println!("{l}");
    }
    Ok(())
}
