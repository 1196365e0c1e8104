//! What the benchmarks share: the pre-encoded camera video and the replay fixture serving it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::ChildProcess;
use crate::{free_port, wait_for_port, workspace_root};

/// The benchmark camera: 1080p H.264 at 25 fps, about 4 Mbit/s, a keyframe every 2 s.
pub const FPS: u32 = 25;
pub const KEYINT: u32 = 50;
pub const KBITS: u32 = 4000;

pub fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

/// The pre-encoded camera video, made once and kept in `target/bench-cache`.
pub fn video(seconds: u32) -> crate::Result<PathBuf> {
    let dir = workspace_root().join("target/bench-cache");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(format!("camera-1080p-{KBITS}k-{seconds}s.h264"));
    if file.exists() {
        return Ok(file);
    }
    eprintln!("encoding {seconds} s of 1080p H.264 for the replay fixture (once)…");
    let status = Command::new(crate::camera::PYTHON)
        .arg(workspace_root().join("tests/fixtures/rtsp_camera.py"))
        .args(["--encode-to"])
        .arg(&file)
        .args(["--seconds", &seconds.to_string()])
        .args(["--width", "1920", "--height", "1080", "--pattern", "scene"])
        .args(["--fps", &FPS.to_string(), "--keyint", &KEYINT.to_string()])
        .args(["--bitrate", &KBITS.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "encoding the benchmark video failed");
    Ok(file)
}

/// The replay fixture serving `n` cameras at `rtsp://127.0.0.1:PORT/cam{i}`.
pub fn fixture(file: &Path, n: usize, dir: &Path) -> crate::Result<(ChildProcess, u16)> {
    let port = free_port();
    let mut cmd = Command::new(crate::camera::PYTHON);
    cmd.arg(workspace_root().join("tests/fixtures/rtsp_camera.py"))
        .args(["--port", &port.to_string(), "--replay"])
        .arg(file)
        .args(["--fps", &FPS.to_string(), "--mounts", &n.to_string()]);
    let p = ChildProcess::spawn("camera fixture", cmd, &dir.join("fixture.log"))?;
    wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(20))?;
    Ok((p, port))
}

/// The RTSP URL of camera `i` of the fixture on `port`.
pub fn url(port: u16, i: usize) -> String {
    format!("rtsp://127.0.0.1:{port}/cam{i}")
}

/// nginx in the foreground on 127.0.0.1:`port`, one worker, its files in `dir`; `server` is the
/// body of its server block (root, locations, types).
pub fn nginx(port: u16, dir: &Path, server: &str) -> crate::Result<ChildProcess> {
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes 1;\npid {pid};\nerror_log {log} warn;\nevents {{ worker_connections 4096; }}\n\
             http {{\n access_log off;\n client_body_temp_path {tmp};\n proxy_temp_path {tmp};\n fastcgi_temp_path {tmp};\n uwsgi_temp_path {tmp};\n scgi_temp_path {tmp};\n\
             sendfile on;\n server {{ listen 127.0.0.1:{port}; {server} }}\n}}\n",
            pid = dir.join("nginx.pid").display(),
            log = dir.join("nginx-error.log").display(),
            tmp = dir.display(),
        ),
    )?;
    let mut cmd = Command::new("nginx");
    cmd.arg("-c").arg(&conf).arg("-p").arg(dir);
    let p = ChildProcess::spawn("nginx", cmd, &dir.join("nginx.log"))?;
    wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(10))?;
    Ok(p)
}

/// The number after `name` on a benchmark's command line.
pub fn arg_value(args: &[String], name: &str) -> Option<u64> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

/// Access units of an Annex B stream encoded one slice a frame (as the fixture's `--encode-to`
/// makes them): each VCL NAL unit with the NAL units before it. `vcl` says whether a NAL
/// unit's first byte is of a picture (H.264: types 1 to 5; H.265: below 32).
pub fn access_units(data: &[u8], vcl: impl Fn(u8) -> bool) -> Vec<Vec<u8>> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i..].starts_with(&[0, 0, 1]) {
            let s = if i > 0 && data[i - 1] == 0 { i - 1 } else { i };
            starts.push((s, i + 3));
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::new();
    let mut begin = 0;
    for (n, &(_, nal)) in starts.iter().enumerate() {
        if data.get(nal).is_some_and(|b| vcl(*b)) {
            let end = starts.get(n + 1).map_or(data.len(), |&(s, _)| s);
            out.push(data[begin..end].to_vec());
            begin = end;
        }
    }
    out
}
