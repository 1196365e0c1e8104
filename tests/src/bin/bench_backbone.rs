//! `bench-backbone [--quick] [--events N] [--backlog N]`: GridEdge's store-and-forward path
//! against the usual alternative, side by side on this machine.
//!
//! - GridEdge: events POSTed to a gateway (durable in its outbox before the answer), sent over
//!   the embedded broker of central, stored by central.
//! - Peer: the same events published QoS 1 to a local Mosquitto with persistence, bridged
//!   (QoS 1, persistent session) to a central Mosquitto, where a subscriber appends them to a
//!   file and fsyncs.
//!
//! For both it measures events/s accepted at the edge, events/s delivered end to end, the
//! drain rate of a backlog built while the line to central was cut, and the edge process's
//! peak RSS; then prints the ratios. Build with `cargo build --release --workspace --bins`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use gridedge_tests::bench::arg_value;
use gridedge_tests::bridge::{
    central_conf, durable_subscriber, edge_conf, mosquitto, SubscriberAcks,
};
use gridedge_tests::process::peak_rss_mib;
use gridedge_tests::proxy::FaultProxy;
use gridedge_tests::services::{central_toml, gateway_toml, source_token, ServiceProcess};
use gridedge_tests::{free_port, wait_for_port};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const PER_REQUEST: u64 = 1000;
const CLIENTS: u64 = 4;

struct Figures {
    accepted_per_s: f64,
    delivered_per_s: f64,
    drain_per_s: f64,
    peak_rss_mib: f64,
}

fn payload(i: u64) -> String {
    // About 200 bytes of JSON, like a device status event.
    format!(
        "{{\"n\":{i},\"site\":\"hongxing-community\",\"device\":\"kiosk-hall-1\",\"state\":\"online\",\"temp_c\":41.5,\"disk_free_mb\":20480,\"note\":\"{}\"}}",
        "x".repeat(60)
    )
}

async fn wait_until(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

// ---------------------------------------------------------------- GridEdge

async fn central_stored(http: SocketAddr) -> u64 {
    let Ok(r) = reqwest::get(format!("http://{http}/metrics")).await else {
        return 0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("gridedge_central_events_stored_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// Posts `n` events starting at `start` from `CLIENTS` concurrent clients.
async fn post(gw: SocketAddr, start: u64, n: u64) -> anyhow::Result<()> {
    let per_client = n / CLIENTS;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let token = source_token("gw-bench");
            let first = start + c * per_client;
            let mut i = first;
            while i < first + per_client {
                let k = PER_REQUEST.min(first + per_client - i);
                let mut body = String::with_capacity((k as usize) * 260);
                body.push('[');
                for j in i..i + k {
                    if j > i {
                        body.push(',');
                    }
                    body.push_str(
                        "{\"class\":\"telemetry\",\"kind\":\"sensor.state\",\"payload\":",
                    );
                    body.push_str(&payload(j));
                    body.push('}');
                }
                body.push(']');
                let r = client
                    .post(format!("http://{gw}/api/v1/events"))
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                anyhow::ensure!(r.status().is_success(), "gateway answered {}", r.status());
                i += k;
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn gridedge(events: u64, backlog: u64, dir: &Path) -> anyhow::Result<Figures> {
    let (broker, central_http, gw_http) = (free_port(), free_port(), free_port());
    let central_addr = SocketAddr::from(([127, 0, 0, 1], central_http));
    let gw_addr = SocketAddr::from(([127, 0, 0, 1], gw_http));
    let _central = ServiceProcess::spawn("central", &central_toml(dir, broker, central_http))?;
    wait_for_port(central_addr, Duration::from_secs(20))?;
    let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], broker))).await?;
    let toml = gateway_toml(
        dir,
        "gw-bench",
        &format!("mqtt://{}", proxy.addr),
        None,
        gw_http,
    ) + "disk_budget = \"2 GiB\"\n"
        + &std::env::var("BENCH_GATEWAY_STORAGE").unwrap_or_default();
    let gw = ServiceProcess::spawn("gateway", &toml)?;
    wait_for_port(gw_addr, Duration::from_secs(20))?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    eprintln!("gridedge: {events} events live");
    let t0 = Instant::now();
    post(gw_addr, 0, events).await?;
    let accepted = t0.elapsed();
    loop {
        if central_stored(central_addr).await >= events {
            break;
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(600),
            "central did not get every event"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered = t0.elapsed();

    eprintln!("gridedge: {backlog} events while the line is cut");
    proxy.cut();
    post(gw_addr, events, backlog).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t1 = Instant::now();
    proxy.restore();
    loop {
        if central_stored(central_addr).await >= events + backlog {
            break;
        }
        anyhow::ensure!(
            t1.elapsed() < Duration::from_secs(900),
            "the backlog did not drain"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = t1.elapsed();
    let rss = gw.process.pid().map(peak_rss_mib).unwrap_or(f64::NAN);
    Ok(Figures {
        accepted_per_s: events as f64 / accepted.as_secs_f64(),
        delivered_per_s: events as f64 / delivered.as_secs_f64(),
        drain_per_s: backlog as f64 / drained.as_secs_f64(),
        peak_rss_mib: rss,
    })
}

// ---------------------------------------------------------------- Mosquitto bridge

/// Publishes `n` QoS 1 messages from `CLIENTS` clients; returns when every PUBACK is in.
async fn publish(port: u16, start: u64, n: u64, tag: &str) -> anyhow::Result<()> {
    let per_client = n / CLIENTS;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut opts = MqttOptions::new(format!("pub-{tag}-{c}"), "127.0.0.1", port);
            opts.set_inflight(100);
            opts.set_keep_alive(Duration::from_secs(30));
            let (client, mut ev) = AsyncClient::new(opts, 1000);
            let first = start + c * per_client;
            let acks = Arc::new(AtomicU64::new(0));
            let a = acks.clone();
            let poller = tokio::spawn(async move {
                while a.load(Ordering::Relaxed) < per_client {
                    match ev.poll().await {
                        Ok(Event::Incoming(Packet::PubAck(_))) => {
                            a.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(e) => return Err(anyhow::anyhow!("publisher: {e}")),
                    }
                }
                Ok(())
            });
            for i in first..first + per_client {
                client
                    .publish("events/gw-bench", QoS::AtLeastOnce, false, payload(i))
                    .await?;
            }
            poller.await??;
            let _ = client.disconnect().await;
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn mosquitto_bridge(events: u64, backlog: u64, dir: &Path) -> anyhow::Result<Figures> {
    let (edge_port, central_port) = (free_port(), free_port());
    let _central = mosquitto(
        dir,
        "central-mosquitto",
        &central_conf(central_port, &dir.join("central-db"), ""),
    )?;
    std::fs::create_dir_all(dir.join("central-db"))?;
    std::fs::create_dir_all(dir.join("edge-db"))?;
    wait_for_port(
        SocketAddr::from(([127, 0, 0, 1], central_port)),
        Duration::from_secs(10),
    )?;
    let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], central_port))).await?;
    let edge = mosquitto(
        dir,
        "edge-mosquitto",
        &edge_conf(edge_port, &dir.join("edge-db"), proxy.addr, ""),
    )?;
    wait_for_port(
        SocketAddr::from(([127, 0, 0, 1], edge_port)),
        Duration::from_secs(10),
    )?;
    let received = Arc::new(AtomicU64::new(0));
    durable_subscriber(
        central_port,
        std::fs::File::create(dir.join("received.log"))?,
        received.clone(),
        SubscriberAcks::OnReceipt,
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    eprintln!("mosquitto: {events} events live");
    let t0 = Instant::now();
    publish(edge_port, 0, events, "live").await?;
    let accepted = t0.elapsed();
    wait_until(
        "the subscriber to get every event",
        Duration::from_secs(600),
        || received.load(Ordering::Relaxed) >= events,
    )
    .await?;
    let delivered = t0.elapsed();

    eprintln!("mosquitto: {backlog} events while the line is cut");
    proxy.cut();
    publish(edge_port, events, backlog, "backlog").await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t1 = Instant::now();
    proxy.restore();
    wait_until("the backlog to drain", Duration::from_secs(900), || {
        received.load(Ordering::Relaxed) >= events + backlog
    })
    .await?;
    let drained = t1.elapsed();
    let rss = edge.pid().map(peak_rss_mib).unwrap_or(f64::NAN);
    Ok(Figures {
        accepted_per_s: events as f64 / accepted.as_secs_f64(),
        delivered_per_s: events as f64 / delivered.as_secs_f64(),
        drain_per_s: backlog as f64 / drained.as_secs_f64(),
        peak_rss_mib: rss,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let events = arg_value(&args, "--events").unwrap_or(if quick { 100_000 } else { 1_000_000 });
    let backlog = arg_value(&args, "--backlog").unwrap_or(if quick { 100_000 } else { 1_000_000 });
    let dir = tempfile::tempdir()?;
    let g_dir = dir.path().join("gridedge");
    let m_dir = dir.path().join("mosquitto");
    std::fs::create_dir_all(&g_dir)?;
    std::fs::create_dir_all(&m_dir)?;
    let started = Instant::now();
    let g = gridedge(events, backlog, &g_dir)
        .await
        .context("GridEdge run")?;
    if args.iter().any(|a| a == "--gridedge-only") {
        println!(
            "GridEdge only: accepted {:.0}/s, delivered {:.0}/s, drained {:.0}/s, peak RSS {:.0} MiB",
            g.accepted_per_s, g.delivered_per_s, g.drain_per_s, g.peak_rss_mib
        );
        return Ok(());
    }
    let m = mosquitto_bridge(events, backlog, &m_dir)
        .await
        .context("Mosquitto bridge run")?;
    println!();
    println!("backbone benchmark: {events} live events, then a backlog of {backlog} built while the line was cut");
    println!(
        "events of about 200 bytes; 4 concurrent senders; one machine ({} s)",
        started.elapsed().as_secs()
    );
    println!(
        "{:<40} {:>14} {:>18} {:>8}",
        "figure", "GridEdge", "Mosquitto bridge", "ratio"
    );
    let rows = [
        (
            "accepted durably at the edge (events/s)",
            g.accepted_per_s,
            m.accepted_per_s,
            true,
        ),
        (
            "delivered end to end (events/s)",
            g.delivered_per_s,
            m.delivered_per_s,
            true,
        ),
        (
            "backlog drain after an outage (events/s)",
            g.drain_per_s,
            m.drain_per_s,
            true,
        ),
        ("edge peak RSS (MiB)", g.peak_rss_mib, m.peak_rss_mib, false),
    ];
    for (name, gv, mv, higher_better) in rows {
        let ratio = if higher_better { gv / mv } else { mv / gv };
        println!("{name:<40} {gv:>14.0} {mv:>18.0} {ratio:>7.2}x");
    }
    println!("(ratio: how many times better GridEdge is; for RSS, peer / GridEdge)");
    Ok(())
}
