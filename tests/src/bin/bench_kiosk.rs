//! `bench-kiosk [--quick] [--seconds N] [--connections N]`: kiosk queries against the gateway,
//! side by side with nginx serving the same answer, precomputed, from disk.
//!
//! - GridEdge: the release gateway answering from its master data replica (the sample street,
//!   published by a release central): a service search (`q=低保`) and a grid lookup by point,
//!   each authenticated with a kiosk token and passed through its rate limiter (set high: one
//!   token stands for a whole service hall here).
//! - Peer: nginx serving each answer as a static JSON file of the same bytes.
//!
//! Load: `wrk` (Debian's), keep-alive connections, one thread, `--latency`. It prints requests/s
//! and p50/p99 for each, and the ratios. Build with `cargo build --release --workspace --bins`.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use gridedge_tests::bench::arg_value;
use gridedge_tests::process::ChildProcess;
use gridedge_tests::services::{binary, central_toml, street_keys};
use gridedge_tests::{free_port, wait_for_port, workspace_root};

struct Wrk {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

fn ms(v: &str) -> Option<f64> {
    let v = v.trim();
    let (n, unit) = v
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| v.split_at(i))?;
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => return None,
    })
}

fn wrk(url: &str, token: Option<&str>, seconds: u64, connections: u64) -> anyhow::Result<Wrk> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t1",
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
        "--latency",
    ]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd
        .arg(url)
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(out.status.success(), "wrk failed: {text}");
    let find = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|r| r.trim().to_owned()))
    };
    let errors = text
        .lines()
        .filter(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
        .map(|l| {
            l.split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum();
    Ok(Wrk {
        rps: find("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .context("no Requests/sec in wrk's output")?,
        p50_ms: find("50%").and_then(|v| ms(&v)).unwrap_or(f64::NAN),
        p99_ms: find("99%").and_then(|v| ms(&v)).unwrap_or(f64::NAN),
        errors,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let seconds = arg_value(&args, "--seconds").unwrap_or(if quick { 10 } else { 30 });
    let connections = arg_value(&args, "--connections").unwrap_or(16);
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let d = dir.path();

    // A street: central with its key and the sample data, a gateway trusting it.
    let public = &street_keys().1;
    let (c_port, b_port, g_port) = (free_port(), free_port(), free_port());
    std::fs::create_dir_all(d.join("central"))?;
    let c_conf = d.join("central.toml");
    std::fs::write(&c_conf, central_toml(&d.join("central"), b_port, c_port))?;
    let mut cmd = Command::new(binary("central")?);
    cmd.arg("--config").arg(&c_conf).env("RUST_LOG", "warn");
    let _central = ChildProcess::spawn("central", cmd, &d.join("central.log"))?;
    wait_for_port(([127, 0, 0, 1], c_port).into(), Duration::from_secs(20))?;
    std::fs::write(d.join("kiosk.token"), "kiosk-token")?;
    let g_conf = d.join("gateway.toml");
    std::fs::write(
        &g_conf,
        format!(
            "[site]\nid = \"bench-site\"\nname = \"Bench\"\n[gateway]\nid = \"gw-kiosk-bench\"\n\
             [uplink]\nbroker = \"mqtt://127.0.0.1:{b_port}\"\nhealth_interval = \"2s\"\ncentral_key_file = \"{}\"\n\
             [http]\nlisten = \"127.0.0.1:{g_port}\"\n[storage]\ndir = \"{}\"\n\
             [kiosk]\nrequests_per_second = 1000000.0\nburst = 1000000\n\
             [[terminals]]\nid = \"kiosk-1\"\nname = \"Kiosk\"\nkind = \"kiosk\"\n\
             health = {{ mode = \"heartbeat\", interval = \"1h\" }}\ntoken = {{ file = \"{}\" }}\n",
            public.display(),
            d.join("gw-data").display(),
            d.join("kiosk.token").display()
        ),
    )?;
    let mut cmd = Command::new(binary("gateway")?);
    cmd.arg("--config").arg(&g_conf).env("RUST_LOG", "warn");
    let _gateway = ChildProcess::spawn("gateway", cmd, &d.join("gateway.log"))?;
    wait_for_port(([127, 0, 0, 1], g_port).into(), Duration::from_secs(20))?;
    let push = Command::new(binary("central")?)
        .args(["data", "push"])
        .arg(workspace_root().join("deploy/sample-data"))
        .args(["--url", &format!("http://127.0.0.1:{c_port}")])
        .env("GRIDEDGE_API_TOKEN", gridedge_tests::services::API_TOKEN)
        .output()?;
    anyhow::ensure!(
        push.status.success(),
        "data push: {}",
        String::from_utf8_lossy(&push.stderr)
    );
    let client = reqwest::Client::builder().no_proxy().build()?;
    let base = format!("http://127.0.0.1:{g_port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: serde_json::Value = client
            .get(format!("{base}/api/v1/masterdata"))
            .send()
            .await?
            .json()
            .await?;
        if v["version"] == 1 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the replica did not arrive");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The same answers, precomputed, for nginx.
    let search = format!("{base}/api/v1/kiosk/items?q=%E4%BD%8E%E4%BF%9D");
    let grid = format!("{base}/api/v1/kiosk/grids/at?lon=120.156&lat=30.2715");
    let root = d.join("www");
    std::fs::create_dir_all(&root)?;
    let mut sizes = Vec::new();
    for (url, file) in [(&search, "search.json"), (&grid, "grid.json")] {
        let body = client
            .get(url)
            .bearer_auth("kiosk-token")
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        sizes.push(body.len());
        std::fs::write(root.join(file), &body)?;
    }
    let n_port = free_port();
    let run = d.join("nginx-run");
    std::fs::create_dir_all(&run)?;
    let _nginx = gridedge_tests::bench::nginx(
        n_port,
        &run,
        &format!("root {}; default_type application/json;", root.display()),
    )?;

    eprintln!("kiosk: {seconds} s per run, {connections} keep-alive connections, wrk -t1");
    let g_search = wrk(&search, Some("kiosk-token"), seconds, connections)?;
    let n_search = wrk(
        &format!("http://127.0.0.1:{n_port}/search.json"),
        None,
        seconds,
        connections,
    )?;
    let g_grid = wrk(&grid, Some("kiosk-token"), seconds, connections)?;
    let n_grid = wrk(
        &format!("http://127.0.0.1:{n_port}/grid.json"),
        None,
        seconds,
        connections,
    )?;

    println!();
    println!(
        "kiosk benchmark: sample street (32 service items, 10 grids); answers of {} and {} bytes; {seconds} s per run, {connections} connections; one machine ({} s)",
        sizes[0],
        sizes[1],
        started.elapsed().as_secs()
    );
    println!(
        "errors: GridEdge {} / {}, nginx {} / {}",
        g_search.errors, g_grid.errors, n_search.errors, n_grid.errors
    );
    println!(
        "{:<34} {:>10} {:>10} {:>8} {:>12}",
        "figure", "GridEdge", "nginx", "ratio", "goal"
    );
    let rows = [
        ("search requests/s", g_search.rps, n_search.rps, ">= 0.5x"),
        (
            "search latency p50 (ms)",
            g_search.p50_ms,
            n_search.p50_ms,
            "-",
        ),
        (
            "search latency p99 (ms)",
            g_search.p99_ms,
            n_search.p99_ms,
            "<= 2 ms",
        ),
        ("grid lookup requests/s", g_grid.rps, n_grid.rps, "-"),
        (
            "grid lookup latency p99 (ms)",
            g_grid.p99_ms,
            n_grid.p99_ms,
            "-",
        ),
    ];
    for (name, a, b, goal) in rows {
        println!("{name:<34} {a:>10.2} {b:>10.2} {:>7.2}x {goal:>12}", a / b);
    }
    Ok(())
}
