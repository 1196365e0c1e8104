//! Video sharing benchmark, GridEdge against the usual alternative in one run, one 1080p
//! 4 Mbit/s camera (the replay fixture):
//!
//! * time from request to the first decodable frame at a viewer: opening the gateway's live
//!   stream on the LAN, and a share through central (grant, command, push from the gateway,
//!   relay) — against `ffmpeg -c copy -f hls` started on request and served by nginx (the first
//!   segment listed and fetchable);
//! * latency: what central's relay adds (each fragment's arrival at a central viewer minus its
//!   arrival at a LAN viewer of the gateway) — against HLS (a segment's first frame's age when
//!   the segment is listed);
//! * fan-out: CPU (% of one core) and RSS of central with 1, 10 and 50 viewers — against nginx
//!   serving the HLS stream to as many polling players.
//!
//! Usage: `bench-video [--quick]`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use gridedge_tests::bench::{fixture, url, video};
use gridedge_tests::live::Viewer;
use gridedge_tests::process::{cpu_seconds, ChildProcess};
use gridedge_tests::services::{central_toml, gateway_toml, viewer_token, ServiceProcess};
use gridedge_tests::{camera_toml, free_port, FixtureDir};
use serde_json::{json, Value};

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn p95(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 * 0.95) as usize).min(v.len() - 1)]
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

async fn wait_for(
    what: &str,
    timeout: Duration,
    mut f: impl AsyncFnMut() -> bool,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("timed out waiting for {what}")
}

async fn json_get(url: &str) -> Option<Value> {
    reqwest::get(url).await.ok()?.json().await.ok()
}

/// `ffmpeg -c copy -f hls` of the camera into `root`.
fn hls(camera: &str, root: &Path, dir: &Path) -> anyhow::Result<ChildProcess> {
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root)?;
    let mut cmd = Command::new("ffmpeg");
    cmd.args([
        "-nostdin",
        "-loglevel",
        "error",
        "-rtsp_transport",
        "tcp",
        "-i",
        camera,
    ])
    .args([
        "-c",
        "copy",
        "-f",
        "hls",
        "-hls_time",
        "2",
        "-hls_list_size",
        "6",
    ])
    .args(["-hls_flags", "delete_segments+independent_segments"])
    .arg(root.join("index.m3u8"));
    ChildProcess::spawn("ffmpeg hls", cmd, &dir.join("ffmpeg-hls.log"))
}

/// The segments a playlist lists, with their durations.
fn segments(playlist: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let mut dur = None;
    for line in playlist.lines() {
        if let Some(d) = line.strip_prefix("#EXTINF:") {
            dur = d
                .trim_end_matches(',')
                .split(',')
                .next()
                .and_then(|x| x.parse().ok());
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            out.push((line.trim().to_owned(), dur.take().unwrap_or(0.0)));
        }
    }
    out
}

/// Seconds from starting HLS on request until a player could show the first frame: the
/// first segment listed and fetched.
async fn hls_first_frame(camera: &str, root: &Path, port: u16, dir: &Path) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let mut ff = hls(camera, root, dir)?;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut got = None;
    while t0.elapsed() < Duration::from_secs(30) {
        if let Ok(r) = client.get(format!("{base}/index.m3u8")).send().await {
            if r.status() == 200 {
                let text = r.text().await.unwrap_or_default();
                if let Some((seg, _)) = segments(&text).first() {
                    let s = client.get(format!("{base}/{seg}")).send().await?;
                    if s.status() == 200 && !s.bytes().await?.is_empty() {
                        got = Some(t0.elapsed().as_secs_f64());
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ff.kill();
    got.context("HLS never listed a segment")
}

/// The age of each new segment's first frame when it is listed, over `window`.
async fn hls_latency(
    camera: &str,
    root: &Path,
    port: u16,
    dir: &Path,
    window: Duration,
) -> anyhow::Result<Vec<f64>> {
    let t0 = Instant::now();
    let mut ff = hls(camera, root, dir)?;
    let url = format!("http://127.0.0.1:{port}/index.m3u8");
    let mut seen: Vec<String> = Vec::new();
    let mut start_of: std::collections::HashMap<String, f64> = Default::default();
    let mut elapsed_stream = 0.0;
    let mut ages = Vec::new();
    while t0.elapsed() < window {
        if let Some(text) = reqwest::get(&url).await.ok().filter(|r| r.status() == 200) {
            let text = text.text().await.unwrap_or_default();
            for (seg, d) in segments(&text) {
                if !start_of.contains_key(&seg) {
                    start_of.insert(seg.clone(), elapsed_stream);
                    elapsed_stream += d;
                }
                if !seen.contains(&seg) {
                    seen.push(seg.clone());
                    // The segment's first frame reached ffmpeg about t0 + its start.
                    ages.push(t0.elapsed().as_secs_f64() - start_of[&seg]);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ff.kill();
    // The first segment also carries ffmpeg's start-up; the steady state is what follows.
    if ages.len() > 1 {
        ages.remove(0);
    }
    Ok(ages)
}

/// Players polling the HLS playlist every second and fetching each new segment.
fn hls_players(n: usize, port: u16, stop: tokio_util::sync::CancellationToken) {
    for _ in 0..n {
        let stop = stop.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let base = format!("http://127.0.0.1:{port}");
            let mut fetched: Vec<String> = Vec::new();
            while !stop.is_cancelled() {
                if let Ok(r) = client.get(format!("{base}/index.m3u8")).send().await {
                    let text = r.text().await.unwrap_or_default();
                    for (seg, _) in segments(&text) {
                        if !fetched.contains(&seg) {
                            if let Ok(s) = client.get(format!("{base}/{seg}")).send().await {
                                let _ = s.bytes().await;
                            }
                            fetched.push(seg);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}

async fn cpu_percent(pids: &[u32], window: Duration) -> f64 {
    let total = |p: &[u32]| p.iter().filter_map(|&x| cpu_seconds(x)).sum::<f64>();
    let (c0, t0) = (total(pids), Instant::now());
    tokio::time::sleep(window).await;
    (total(pids) - c0) / t0.elapsed().as_secs_f64() * 100.0
}

struct Setup {
    central: ServiceProcess,
    central_http: u16,
    _gateway: ServiceProcess,
}

async fn share(s: &Setup, viewers: &[&str]) -> anyhow::Result<Value> {
    let r = gridedge_tests::services::api_client()
        .post(format!("http://127.0.0.1:{}/api/v1/shares", s.central_http))
        .json(&json!({"gateway": "bench-gw", "camera": "cam0", "viewers": viewers, "minutes": 60, "by": "bench"}))
        .send()
        .await?;
    anyhow::ensure!(r.status() == 201, "share refused: {}", r.text().await?);
    Ok(r.json().await?)
}

async fn idle(s: &Setup) -> anyhow::Result<()> {
    let url = format!("http://127.0.0.1:{}/api/v1/shares", s.central_http);
    wait_for(
        "the relay to go idle",
        Duration::from_secs(30),
        async || {
            gridedge_tests::try_json_api(&url)
                .await
                .and_then(|v| {
                    v.as_array()
                        .map(|a| a.iter().all(|g| g["pushing"] == false))
                })
                .unwrap_or(false)
        },
    )
    .await
}

/// Seconds from `t0` until a viewer of `url` (with `token`, for the gateway's camera wall) has
/// its first decodable frame.
async fn first_fragment(t0: Instant, url: &str, token: Option<&str>) -> anyhow::Result<f64> {
    let v = match token {
        Some(t) => Viewer::connect_as(url, t).await?,
        None => Viewer::connect(url).await?,
    };
    wait_for("a first frame", Duration::from_secs(30), async || {
        v.received
            .first_fragment
            .lock()
            .map(|f| f.is_some())
            .unwrap_or(false)
    })
    .await?;
    let at = v
        .received
        .first_fragment
        .lock()
        .ok()
        .and_then(|f| *f)
        .context("no first frame")?;
    Ok(at.duration_since(t0).as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let reps = if quick { 2 } else { 5 };
    let window = Duration::from_secs(if quick { 8 } else { 20 });
    let fan_window = Duration::from_secs(if quick { 5 } else { 20 });
    let settle = Duration::from_secs(if quick { 1 } else { 2 });
    let dir = FixtureDir::new("bench-video")?;
    let file = video(if quick { 10 } else { 20 })?;
    let (_fixture, cam_port) = fixture(&file, 1, dir.path())?;
    let camera = url(cam_port, 0);

    // Central and a gateway, as separate processes.
    let (broker, central_http, gateway_http) = (free_port(), free_port(), free_port());
    let cdir = FixtureDir::new("bench-video-central")?;
    let central =
        ServiceProcess::spawn("central", &central_toml(cdir.path(), broker, central_http))?;
    let gdir = FixtureDir::new("bench-video-gateway")?;
    let gtext = gateway_toml(
        gdir.path(),
        "bench-gw",
        &format!("mqtt://127.0.0.1:{broker}"),
        None,
        gateway_http,
    ) + &camera_toml("cam0", &camera, "");
    let gateway = ServiceProcess::spawn("gateway", &gtext)?;
    let s = Setup {
        central,
        central_http,
        _gateway: gateway,
    };
    let gws = format!("http://127.0.0.1:{central_http}/api/v1/gateways");
    wait_for("the gateway online", Duration::from_secs(30), async || {
        gridedge_tests::try_json_api(&gws)
            .await
            .is_some_and(|v| v.to_string().contains("\"presence\":\"online\""))
    })
    .await?;
    let cams = format!("http://127.0.0.1:{gateway_http}/api/v1/cameras/cam0");
    wait_for(
        "the camera streaming",
        Duration::from_secs(30),
        async || {
            json_get(&cams)
                .await
                .is_some_and(|c| c["state"] == "streaming")
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let lan = format!("ws://127.0.0.1:{gateway_http}/api/v1/cameras/cam0/live");
    let lan_token = viewer_token("bench-gw");
    let hls_root = dir.path().join("hls");
    std::fs::create_dir_all(&hls_root)?;
    let nginx_port = free_port();
    let ngx = gridedge_tests::bench::nginx(
        nginx_port,
        dir.path(),
        &format!(
            "root {}; types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }} location / {{ add_header Cache-Control no-cache; }}",
            hls_root.display()
        ),
    )?;

    // 1. Request to first decodable frame.
    eprintln!("first frame: {reps} requests each");
    let (mut t_lan, mut t_share, mut t_hls) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        t_lan.push(first_fragment(Instant::now(), &lan, Some(&lan_token)).await?);
        idle(&s).await?;
        let t0 = Instant::now();
        let granted = share(&s, &["bench-viewer"]).await?;
        let live = format!(
            "ws://127.0.0.1:{central_http}{}",
            granted["viewers"][0]["live"].as_str().context("live")?
        );
        t_share.push(first_fragment(t0, &live, None).await?);
        t_hls.push(hls_first_frame(&camera, &hls_root, nginx_port, dir.path()).await?);
    }

    // 2. Latency.
    eprintln!("latency: {window:?}");
    let granted = share(&s, &["bench-viewer"]).await?;
    let live = format!(
        "ws://127.0.0.1:{central_http}{}",
        granted["viewers"][0]["live"].as_str().context("live")?
    );
    let via_central = Viewer::connect(&live).await?;
    let direct = Viewer::connect_as(&lan, &lan_token).await?;
    tokio::time::sleep(window).await;
    let mut added: Vec<f64> = {
        let d = direct
            .received
            .arrivals
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        let c = via_central
            .received
            .arrivals
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        let at: std::collections::HashMap<u64, Instant> = d.iter().copied().collect();
        c.iter()
            .filter_map(|(t, when)| {
                at.get(t)
                    .map(|d| when.saturating_duration_since(*d).as_secs_f64() * 1000.0)
            })
            .collect()
    };
    drop((via_central, direct));
    let mut hls_ages: Vec<f64> = hls_latency(
        &camera,
        &hls_root,
        nginx_port,
        dir.path(),
        window + Duration::from_secs(6),
    )
    .await?
    .into_iter()
    .map(|a| a * 1000.0)
    .collect();

    // 3. Fan-out.
    eprintln!("fan-out: 1, 10, 50 viewers, {fan_window:?} each");
    let central_pid = s.central.process.pid().context("central pid")?;
    let nginx_pid = ngx.pid().context("nginx pid")?;
    // nginx's worker is its child.
    let nginx_pids: Vec<u32> = std::iter::once(nginx_pid)
        .chain(
            std::fs::read_to_string(format!("/proc/{nginx_pid}/task/{nginx_pid}/children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok()),
        )
        .collect();
    let mut ff = hls(&camera, &hls_root, dir.path())?;
    let mut fan = Vec::new();
    for n in [1usize, 10, 50] {
        let mut viewers = Vec::new();
        for _ in 0..n {
            viewers.push(Viewer::connect(&live).await?);
        }
        tokio::time::sleep(settle).await;
        let ours = cpu_percent(&[central_pid], fan_window).await;
        let ours_rss = rss_mib(central_pid);
        let received: u64 = viewers.iter().map(|v| v.received.binary()).sum();
        drop(viewers);
        let stop = tokio_util::sync::CancellationToken::new();
        hls_players(n, nginx_port, stop.clone());
        tokio::time::sleep(settle).await;
        let peer = cpu_percent(&nginx_pids, fan_window).await;
        let peer_rss: f64 = nginx_pids.iter().map(|&p| rss_mib(p)).sum();
        stop.cancel();
        eprintln!(
            "  {n} viewers: central {ours:.2}% ({received} messages delivered), nginx {peer:.2}%"
        );
        fan.push((n, ours, ours_rss, peer, peer_rss));
    }
    ff.kill();

    println!();
    let (ml, ms, mh) = (median(&mut t_lan), median(&mut t_share), median(&mut t_hls));
    println!("first frame after LAN open, s (median of {reps}): gridedge {ml:.3} | ffmpeg HLS on request + nginx {mh:.3} | ratio {:.3}", ml / mh);
    println!("first frame after share request, s (median of {reps}): gridedge {ms:.3} | ffmpeg HLS on request + nginx {mh:.3} | ratio {:.3}", ms / mh);
    let (am, ap) = (median(&mut added), p95(&mut added));
    let hm = median(&mut hls_ages);
    println!("latency added by the relay, ms (median; p95 {ap:.1}; {} fragments): gridedge {am:.1} | HLS segment age when listed {hm:.0} | ratio {:.4}", added.len(), am / hm);
    for (n, ours, ours_rss, peer, peer_rss) in fan {
        println!("relay CPU % of one core, {n} viewers: gridedge central {ours:.2} | nginx serving HLS {peer:.2} | ratio {:.2}", ours / peer.max(0.01));
        println!("relay RSS MiB, {n} viewers: gridedge central {ours_rss:.1} | nginx {peer_rss:.1} | ratio {:.2}", ours_rss / peer_rss);
    }
    Ok(())
}
