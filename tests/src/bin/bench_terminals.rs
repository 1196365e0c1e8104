//! `bench-terminals [--quick] [--terminals N] [--gateway-workers N]`: 10,000 simulated terminals heartbeating every
//! 10 s into one gateway, against nginx answering the same requests, side by side.
//!
//! - GridEdge: the release gateway with N heartbeat terminals (each its own token), connected to
//!   a release central (embedded broker). Each heartbeat is authenticated, parsed, checked
//!   against the limits and thresholds and fed to the terminal's state machine.
//! - Peer: nginx answering the same POSTs with a fixed JSON body (`return 200`): the floor of
//!   what any HTTP service costs for this load, with no work done.
//!
//! The simulator is open loop: terminal i sends at i·10 s/N and then every 10 s, each heartbeat
//! on a new connection (as separate devices do), and latency is measured from the time it was
//! due, so a stalled server cannot hide its queue. It also measures how long after the last
//! terminal's first heartbeat central's fleet view shows all N online, from the gateway's
//! periodic summary. Build with `cargo build --release --workspace --bins`.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use gridedge_tests::bench::arg_value;
use gridedge_tests::process::{cpu_seconds, ChildProcess};
use gridedge_tests::services::{binary, central_toml, street_keys};
use gridedge_tests::terminals::heartbeat_body;
use gridedge_tests::{free_port, wait_for_port};

const INTERVAL: Duration = Duration::from_secs(10);

struct Run {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: u64,
    sent: u64,
    cpu_pct: f64,
    rss_mib: f64,
}

/// Resident memory now (VmRSS) of a process and its children, in MiB.
fn rss_mib(pid: u32) -> f64 {
    family(pid)
        .into_iter()
        .map(gridedge_tests::process::rss_mib)
        .sum()
}

/// A process and its direct children (nginx's workers).
fn family(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let ppid = stat
                .rfind(')')
                .and_then(|i| stat[i + 2..].split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(pid) {
                out.push(child);
            }
        }
    }
    out
}

fn family_cpu(pid: u32) -> f64 {
    family(pid).into_iter().filter_map(cpu_seconds).sum()
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

/// Sends every terminal's heartbeats for `warmup + window` to `url`; measures latency, and the
/// server's CPU over the window only.
async fn drive(
    url: &str,
    n: usize,
    warmup: Duration,
    window: Duration,
    server: u32,
) -> anyhow::Result<Run> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()?;
    let bodies: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let mut b = heartbeat_body(true);
            b["uptime_secs"] = serde_json::json!(1000 + i);
            serde_json::to_vec(&b).unwrap_or_default()
        })
        .collect();
    let bodies = Arc::new(bodies);
    let latencies = Arc::new(Mutex::new(Vec::<u32>::with_capacity(n * 16)));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let end = start + warmup + window;
    let measure_from = start + warmup;
    let mut cpu_at_window = None;
    let step = INTERVAL.as_secs_f64() / n as f64;
    let mut k: u64 = 0;
    loop {
        let due = start + Duration::from_secs_f64(k as f64 * step);
        if due >= end {
            break;
        }
        if cpu_at_window.is_none() && due >= measure_from {
            cpu_at_window = Some((Instant::now(), family_cpu(server)));
        }
        let now = Instant::now();
        if due > now {
            tokio::time::sleep(due - now).await;
        }
        let i = (k as usize) % n;
        let (client, url, bodies) = (client.clone(), url.to_owned(), bodies.clone());
        let (latencies, errors, sent) = (latencies.clone(), errors.clone(), sent.clone());
        let measured = due >= measure_from;
        tokio::spawn(async move {
            let r = client
                .post(&url)
                .bearer_auth(format!("token-{i}"))
                .header("content-type", "application/json")
                .body(bodies[i].clone())
                .send()
                .await;
            let ok = match r {
                Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                _ => false,
            };
            if measured {
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if ok {
                    let us = due.elapsed().as_micros().min(u32::MAX as u128) as u32;
                    if let Ok(mut l) = latencies.lock() {
                        l.push(us);
                    }
                } else {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        k += 1;
    }
    let (t_cpu, cpu0) = cpu_at_window.context("window never started")?;
    let cpu1 = family_cpu(server);
    let cpu_pct = 100.0 * (cpu1 - cpu0) / t_cpu.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut l = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort_unstable();
    Ok(Run {
        p50_ms: percentile(&l, 0.50),
        p99_ms: percentile(&l, 0.99),
        max_ms: l.last().map_or(f64::NAN, |m| *m as f64 / 1000.0),
        errors: errors.load(std::sync::atomic::Ordering::Relaxed),
        sent: sent.load(std::sync::atomic::Ordering::Relaxed),
        cpu_pct,
        rss_mib: rss_mib(server),
    })
}

fn gateway_config(dir: &Path, n: usize, broker: &str, port: u16) -> anyhow::Result<String> {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens)?;
    let mut text = format!(
        "[site]\nid = \"bench-site\"\nname = \"Bench site\"\n\
         [gateway]\nid = \"gw-bench\"\n\
         [uplink]\nbroker = \"{broker}\"\nhealth_interval = \"10s\"\ncentral_key_file = \"{}\"\n\
         [http]\nlisten = \"127.0.0.1:{port}\"\n\
         [storage]\ndir = \"{}\"\n",
        street_keys().1.display(),
        dir.join("data").display()
    );
    for i in 0..n {
        let file = tokens.join(i.to_string());
        std::fs::write(&file, format!("token-{i}"))?;
        text.push_str(&format!(
            "[[terminals]]\nid = \"kiosk-{i:05}\"\nname = \"Kiosk {i}\"\nkind = \"kiosk\"\n\
             health = {{ mode = \"heartbeat\", interval = \"10s\", misses_before_offline = 3 }}\n\
             token = {{ file = \"{}\" }}\n",
            file.display()
        ));
    }
    Ok(text)
}

/// The last `n` lines of a log.
fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// GET from central with its test API token.
async fn json(url: &str) -> Option<serde_json::Value> {
    gridedge_tests::try_json_api(url).await
}

async fn gridedge(
    n: usize,
    warmup: Duration,
    window: Duration,
    dir: &Path,
    workers: Option<u64>,
) -> anyhow::Result<(Run, f64, usize)> {
    let c_port = free_port();
    let b_port = free_port();
    std::fs::create_dir_all(dir.join("central"))?;
    let c_conf = dir.join("central.toml");
    std::fs::write(&c_conf, central_toml(&dir.join("central"), b_port, c_port))?;
    let mut cmd = Command::new(binary("central")?);
    cmd.arg("--config").arg(&c_conf).env("RUST_LOG", "warn");
    let central = ChildProcess::spawn("central", cmd, &dir.join("central.log"))?;
    wait_for_port(([127, 0, 0, 1], c_port).into(), Duration::from_secs(20))
        .with_context(|| format!("central's log:\n{}", tail(&central.log_text(), 20)))?;

    let g_port = free_port();
    let g_conf = dir.join("gateway.toml");
    std::fs::write(
        &g_conf,
        gateway_config(dir, n, &format!("mqtt://127.0.0.1:{b_port}"), g_port)?,
    )?;
    let mut cmd = Command::new(binary("gateway")?);
    cmd.arg("--config").arg(&g_conf).env("RUST_LOG", "warn");
    if let Some(w) = workers {
        cmd.env("TOKIO_WORKER_THREADS", w.to_string());
    }
    let gateway = ChildProcess::spawn("gateway", cmd, &dir.join("gateway.log"))?;
    wait_for_port(([127, 0, 0, 1], g_port).into(), Duration::from_secs(60))
        .with_context(|| format!("the gateway's log:\n{}", tail(&gateway.log_text(), 20)))?;
    let pid = gateway.pid().context("gateway pid")?;

    // Central's fleet view, polled while the load runs.
    let central_url = format!("http://127.0.0.1:{c_port}/api/v1/terminals?state=online");
    let started = Instant::now();
    let watcher = tokio::spawn(async move {
        loop {
            if let Some(v) = json(&central_url).await {
                if v["counts"]["online"].as_u64() == Some(n as u64) {
                    return Some(started.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    eprintln!(
        "GridEdge: {n} terminals, {:.0} heartbeats/s for {} s",
        n as f64 / INTERVAL.as_secs_f64(),
        (warmup + window).as_secs()
    );
    let url = format!("http://127.0.0.1:{g_port}/api/v1/terminals/heartbeat");
    let run = drive(&url, n, warmup, window, pid).await?;
    // All terminals have sent their first heartbeat by INTERVAL.
    let fleet = tokio::time::timeout(Duration::from_secs(30), watcher)
        .await
        .ok()
        .and_then(|r| r.ok().flatten())
        .map_or(f64::NAN, |t| t.as_secs_f64() - INTERVAL.as_secs_f64());
    let gateways = json(&format!("http://127.0.0.1:{c_port}/api/v1/gateways")).await;
    let summary_bytes = gateways
        .and_then(|g| g.get(0).cloned())
        .map_or(0, |g| g["health"]["terminals"].to_string().len());
    let online = json(&format!("http://127.0.0.1:{g_port}/metrics")).await;
    drop(online);
    Ok((run, fleet, summary_bytes))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let n = arg_value(&args, "--terminals").unwrap_or(10_000) as usize;
    let warmup = INTERVAL + Duration::from_secs(2);
    let window = Duration::from_secs(if quick { 30 } else { 120 });
    let dir = tempfile::tempdir()?;
    let (g_dir, n_dir) = (dir.path().join("gridedge"), dir.path().join("nginx"));
    std::fs::create_dir_all(&g_dir)?;
    std::fs::create_dir_all(&n_dir)?;
    let started = Instant::now();
    let workers = arg_value(&args, "--gateway-workers");
    let (g, fleet, summary_bytes) = gridedge(n, warmup, window, &g_dir, workers)
        .await
        .context("GridEdge run")?;
    let port = free_port();
    let server = gridedge_tests::bench::nginx(
        port,
        &n_dir,
        "location / { default_type application/json; return 200 '{\"terminal\":\"kiosk\",\"state\":\"online\",\"interval_secs\":10,\"config_version\":null}'; }",
    )?;
    eprintln!("nginx: the same load");
    let url = format!("http://127.0.0.1:{port}/api/v1/terminals/heartbeat");
    let x = drive(&url, n, warmup, window, server.pid().context("nginx pid")?).await?;
    drop(server);

    println!();
    println!(
        "terminals benchmark: {n} terminals heartbeating every 10 s ({:.0}/s), each on a new connection; {} s measured after {} s of warm-up; one machine ({} s)",
        n as f64 / INTERVAL.as_secs_f64(),
        window.as_secs(),
        warmup.as_secs(),
        started.elapsed().as_secs()
    );
    println!(
        "GridEdge: {} heartbeats, {} failed, max {:.1} ms; nginx: {} requests, {} failed, max {:.1} ms",
        g.sent, g.errors, g.max_ms, x.sent, x.errors, x.max_ms
    );
    println!(
        "fleet summary at central: all {n} online {fleet:.1} s after the last terminal's first heartbeat (summary every 10 s, {} KiB of terminal ids)",
        summary_bytes / 1024
    );
    println!(
        "{:<34} {:>10} {:>10} {:>8} {:>10}",
        "figure", "GridEdge", "nginx", "ratio", "goal"
    );
    let rows = [
        ("heartbeat latency p50 (ms)", g.p50_ms, x.p50_ms, "-"),
        ("heartbeat latency p99 (ms)", g.p99_ms, x.p99_ms, "<= 5"),
        ("server CPU (% of one core)", g.cpu_pct, x.cpu_pct, "<= 10"),
        ("server RSS (MiB)", g.rss_mib, x.rss_mib, "<= 64"),
    ];
    for (name, a, b, goal) in rows {
        println!("{name:<34} {a:>10.2} {b:>10.2} {:>7.2}x {goal:>10}", a / b);
    }
    anyhow::ensure!(
        g.errors == 0 && x.errors == 0,
        "requests failed: GridEdge {}, nginx {}",
        g.errors,
        x.errors
    );
    Ok(())
}
