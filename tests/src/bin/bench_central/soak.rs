//! `bench-central --soak [--quick] [--seconds S] [--retain S]`: an hour (80 s with `--quick`)
//! of the city's steady load into central with retention on, and the peer beside it at the
//! same time with its own fleet, each keeping the fleet's events for `--retain` seconds (10
//! min; 20 s with `--quick`).
//!
//! - GridEdge: central keeps `health` (every event the fleet sends) for the retention, pruning
//!   every 10 s (2 s with `--quick`), without an archive.
//! - Peer: Mosquitto + the consumer, appending to segment files of a tenth of the retention and
//!   deleting each whole once it is past it: the cheapest retention there is.
//!
//! Sampled every 30 s (5 s with `--quick`): each side's resident memory (all its processes)
//! and its data on disk (blocks taken, not file lengths); and the bytes its processes had
//! written to storage (write amplification: the event is ~200 bytes). Reported: events stored and
//! acknowledged per second, memory and disk at the end, their peaks, and their growth over the
//! second half of the run (once the retention has passed at least once, the part that must be
//! flat).

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gridedge_tests::bench::arg_value;

use super::{gridedge_server, growth_per_min, peer_server, Fleet, Server};

/// Bytes a folder's files take on disk (their blocks: sparse files count what they use).
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

struct Side {
    name: &'static str,
    server: Server,
    fleet: Fleet,
    dir: std::path::PathBuf,
    /// (seconds, MiB resident, MiB on disk)
    series: Vec<(f64, f64, f64)>,
    events0: u64,
    /// Bytes written to storage at the start of the window.
    written0: u64,
}

impl Side {
    fn sample(&mut self, at: f64) {
        let disk = disk_bytes(&self.dir) as f64 / (1 << 20) as f64;
        self.series.push((at, self.server.rss_mib(), disk));
    }

    fn events(&self) -> u64 {
        self.fleet.stats.steady_events.load(Ordering::Relaxed)
    }
}

struct Figures {
    per_s: f64,
    rss_end: f64,
    rss_peak: f64,
    rss_growth_per_h: f64,
    disk_end: f64,
    disk_peak: f64,
    disk_growth_per_h: f64,
    /// Bytes written to storage per event stored, over the window.
    written_per_event: f64,
    errors: u64,
}

fn figures(side: &Side, window: f64) -> Figures {
    let col = |i: usize| -> Vec<(f64, f64)> {
        side.series
            .iter()
            .map(|r| (r.0, if i == 1 { r.1 } else { r.2 }))
            .collect()
    };
    let (rss, disk) = (col(1), col(2));
    let last = |v: &[(f64, f64)]| v.last().map_or(f64::NAN, |p| p.1);
    let peak = |v: &[(f64, f64)]| v.iter().map(|p| p.1).fold(f64::NAN, f64::max);
    Figures {
        per_s: (side.events() - side.events0) as f64 / window,
        rss_end: last(&rss),
        rss_peak: peak(&rss),
        rss_growth_per_h: 60.0 * growth_per_min(&rss),
        disk_end: last(&disk),
        disk_peak: peak(&disk),
        disk_growth_per_h: 60.0 * growth_per_min(&disk),
        written_per_event: side.server.disk_writes().saturating_sub(side.written0) as f64
            / (side.events() - side.events0).max(1) as f64,
        errors: side.fleet.stats.errors.load(Ordering::Relaxed),
    }
}

pub async fn main(
    args: &[String],
    quick: bool,
    gateways: usize,
    devices: usize,
    g_dir: &Path,
    p_dir: &Path,
) -> anyhow::Result<()> {
    let seconds = arg_value(args, "--seconds").unwrap_or(if quick { 80 } else { 3600 });
    let retain = arg_value(args, "--retain").unwrap_or(if quick { 20 } else { 600 });
    anyhow::ensure!(
        retain >= 10 && seconds >= 2 * retain,
        "--retain must be at least 10 s and at most half of --seconds"
    );
    let every = Duration::from_secs(if quick { 5 } else { 30 });
    let prune_every = if quick { 2 } else { 10 };
    let retention = format!(
        "[retention]\nhealth = \"{retain}s\"\ntelemetry = \"{retain}s\"\nprune_every = \"{prune_every}s\"\n"
    );
    eprintln!(
        "soak: {seconds} s, {gateways} gateways x {devices} devices each side, kept {retain} s"
    );
    let g_server = gridedge_server(g_dir, &retention).await?;
    let p_server = peer_server(p_dir, Some(Duration::from_secs(retain))).await?;
    let mut sides = Vec::new();
    for (name, server, dir) in [
        ("GridEdge", g_server, g_dir.join("central-data")),
        ("peer", p_server, p_dir.to_owned()),
    ] {
        eprintln!("{name}: connecting {gateways} gateways");
        let fleet = Fleet::start(gateways, devices, server.mqtt_port).await?;
        sides.push(Side {
            name,
            server,
            fleet,
            dir,
            series: Vec::new(),
            events0: 0,
            written0: 0,
        });
    }
    // Warm up: every gateway has reported once.
    tokio::time::sleep(super::INTERVAL + Duration::from_secs(3)).await;
    let t0 = Instant::now();
    for s in &mut sides {
        s.events0 = s.events();
        s.written0 = s.server.disk_writes();
        s.sample(0.0);
    }
    let mut told = Instant::now();
    while t0.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(every).await;
        let at = t0.elapsed().as_secs_f64();
        for s in &mut sides {
            s.sample(at);
        }
        if told.elapsed() >= Duration::from_secs(if quick { 20 } else { 300 }) {
            told = Instant::now();
            for s in &sides {
                let (_, rss, disk) = s.series.last().copied().unwrap_or_default();
                eprintln!(
                    "{}: {at:.0} s: {} events acked, RSS {rss:.0} MiB, disk {disk:.1} MiB",
                    s.name,
                    s.events() - s.events0
                );
            }
        }
    }
    let window = t0.elapsed().as_secs_f64();
    let figs: Vec<Figures> = sides.iter().map(|s| figures(s, window)).collect();
    for s in &sides {
        let step = (s.series.len() / 12).max(1);
        eprintln!(
            "{}: RSS / disk over the run: {}",
            s.name,
            s.series
                .iter()
                .step_by(step)
                .map(|(t, m, d)| format!("{m:.0}/{d:.0} MiB at {t:.0} s"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for s in sides {
        s.fleet.stop().await;
    }
    let (g, p) = (&figs[0], &figs[1]);
    println!();
    println!(
        "soak benchmark: {gateways} gateways x {devices} devices every 10 s into each side at once ({:.0} events/s each), \
         {seconds} s, events kept {retain} s; one machine",
        (gateways * devices) as f64 / super::INTERVAL.as_secs_f64()
    );
    println!(
        "GridEdge: central (embedded broker, sled, retention pruning every {prune_every} s). \
         Peer: Mosquitto + a consumer appending to segment files, deleting each once past the retention."
    );
    println!("client errors: GridEdge {}, peer {}", g.errors, p.errors);
    println!(
        "{:<46} {:>12} {:>12} {:>8}",
        "figure", "GridEdge", "peer", "ratio"
    );
    let rows: [(&str, f64, f64, bool); 8] = [
        ("events/s stored and acked", g.per_s, p.per_s, true),
        ("RSS at the end, MiB", g.rss_end, p.rss_end, false),
        ("peak RSS, MiB", g.rss_peak, p.rss_peak, false),
        (
            "RSS growth, 2nd half, MiB/h",
            g.rss_growth_per_h,
            p.rss_growth_per_h,
            false,
        ),
        (
            "data on disk at the end, MiB",
            g.disk_end,
            p.disk_end,
            false,
        ),
        ("peak data on disk, MiB", g.disk_peak, p.disk_peak, false),
        (
            "disk growth, 2nd half, MiB/h",
            g.disk_growth_per_h,
            p.disk_growth_per_h,
            false,
        ),
        (
            "bytes written to disk per event",
            g.written_per_event,
            p.written_per_event,
            false,
        ),
    ];
    for (name, gv, pv, higher_better) in rows {
        // A ratio of slopes near zero says nothing.
        let ratio = if gv <= 0.0 || pv <= 0.0 || name.contains("growth") {
            "-".to_owned()
        } else if higher_better {
            format!("{:.2}x", gv / pv)
        } else {
            format!("{:.2}x", pv / gv)
        };
        println!("{name:<46} {gv:>12.1} {pv:>12.1} {ratio:>8}");
    }
    println!(
        "ratio: how many times better GridEdge is (peer / GridEdge where lower is better); \
         growth is the least-squares slope over the second half, after the retention has passed \
         (flat is near 0; no ratio of slopes)."
    );
    Ok(())
}
