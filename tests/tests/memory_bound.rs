//! The gateway on a small box, for real: its binary in a memory cgroup of 128 MiB (what the
//! shipped unit's `MemoryMax=` makes), swap kept out, with four 1080p cameras streaming
//! into it while the WAN is down and a backlog of 1,000,000 events builds up; then central
//! comes up and the backlog drains. It is never killed, and every event it acknowledged is
//! stored at central once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gridedge_tests::backbone::Poster;
use gridedge_tests::camera::{camera_toml, CameraOptions, Codec, TestCamera};
use gridedge_tests::cgroup::MemoryCgroup;
use gridedge_tests::process::peak_rss_mib;
use gridedge_tests::services::{central_toml, gateway_toml, Console, ServiceProcess};
use gridedge_tests::{eventually, free_port, get_text, init_test_logging, try_json};

const GW: &str = "gw-small";
const LIMIT: u64 = 128 << 20;

/// Resident and anonymous memory of `pid`, MiB.
fn rss(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |k: &str| {
        s.lines()
            .find_map(|l| {
                l.strip_prefix(k)?
                    .trim()
                    .strip_suffix(" kB")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
            >> 10
    };
    (kb("VmRSS:"), kb("RssAnon:"))
}

const BACKLOG: usize = 1_000_000;

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_128_mib_a_million_event_backlog_and_four_cameras_neither_kill_the_gateway_nor_lose_an_event(
) {
    init_test_logging();
    let group =
        MemoryCgroup::create(&format!("gridedge-test-{}", std::process::id()), LIMIT).unwrap();
    let clip = TestCamera::pre_encoded(Codec::H264, 1920, 1080, 25, 4).unwrap();
    let cameras: Vec<TestCamera> = (0..4)
        .map(|_| {
            TestCamera::start(CameraOptions {
                width: 1920,
                height: 1080,
                keyint: Some(50),
                replay: Some(clip.clone()),
                ..CameraOptions::default()
            })
            .unwrap()
        })
        .collect();

    // Central's broker port is chosen, but nothing listens there yet: the WAN is down.
    let fixture = tempfile::tempdir().unwrap();
    let (broker_port, central_http, gw_port) = (free_port(), free_port(), free_port());
    let mut text = gateway_toml(
        fixture.path(),
        GW,
        &format!("mqtt://127.0.0.1:{broker_port}"),
        None,
        gw_port,
    )
    .replace("\ndisk_reserve", "\ndisk_budget = \"4 GiB\"\ndisk_reserve");
    for (i, cam) in cameras.iter().enumerate() {
        text.push_str(&camera_toml(&format!("cam-{i}"), cam.url().as_str(), ""));
    }
    let mut gw = ServiceProcess::spawn("gateway", &text).unwrap();
    let pid = gw.process.pid().unwrap();
    group.add(pid).unwrap();
    let gw_addr = SocketAddr::from(([127, 0, 0, 1], gw_port));
    let health = || try_json(format!("http://{gw_addr}/healthz"));
    let streaming = || async {
        let Ok(r) = reqwest::get(format!("http://{gw_addr}/metrics")).await else {
            return 0;
        };
        let m = r.text().await.unwrap_or_default();
        m.lines()
            .filter(|l| {
                l.starts_with("gridedge_gateway_camera_state{")
                    && l.contains("state=\"streaming\"")
                    && l.ends_with(" 1")
            })
            .count()
    };
    eventually(
        "the four cameras streaming",
        Duration::from_secs(60),
        || async { (streaming().await == 4).then_some(()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", gw.process.log_text()));

    eprintln!(
        "memory bound: cameras streaming: RSS/anon {:?} MiB",
        rss(pid)
    );
    // Its anonymous memory (what the kernel cannot reclaim under the limit), every second.
    let peak_anon = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let peak_anon = peak_anon.clone();
        tokio::spawn(async move {
            for i in 0u64.. {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let (resident, anon) = rss(pid);
                peak_anon.fetch_max(anon, std::sync::atomic::Ordering::Relaxed);
                if i % 10 == 0 {
                    eprintln!("memory bound: RSS {resident} MiB, anonymous {anon} MiB");
                }
            }
        })
    };
    // A million events while central is away.
    let t0 = Instant::now();
    let poster = Poster::start(gw_addr, GW, 2_000);
    eventually(
        "a backlog of a million events",
        Duration::from_secs(900),
        || async { (poster.accepted_so_far() >= BACKLOG).then_some(()) },
    )
    .await
    .unwrap();
    let accepted = poster.stop().await;
    let filled = t0.elapsed();
    assert!(gw.process.is_running(), "{}", gw.process.log_text());
    let h = health().await.unwrap();
    assert!(
        h["outbox"]["pending"].as_u64().unwrap() >= BACKLOG as u64,
        "{h}"
    );

    // Central comes up; the backlog drains, the cameras streaming all along.
    let t1 = Instant::now();
    let mut central = ServiceProcess::spawn(
        "central",
        &central_toml(fixture.path(), broker_port, central_http),
    )
    .unwrap();
    eventually("the backlog drained", Duration::from_secs(900), || async {
        let h = health().await?;
        (h["outbox"]["pending"].as_u64()? == 0).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", central.process.log_text()));
    let drained = t1.elapsed();

    // Not killed: the same process throughout, and the kernel killed nothing in its cgroup.
    assert!(gw.process.is_running(), "{}", gw.process.log_text());
    assert_eq!(gw.process.pid(), Some(pid));
    assert_eq!(group.oom_kills(), 0);
    assert_eq!(streaming().await, 4, "the cameras streamed all along");

    // Every event the gateway took (the kiosk's and its cameras' own) is at central once.
    let m = get_text(format!("http://127.0.0.1:{central_http}/metrics")).await;
    let stored = metric(&m, "gridedge_central_events_stored_total").unwrap_or_default();
    let g = get_text(format!("http://{gw_addr}/metrics")).await;
    let appended: f64 = g
        .lines()
        .filter(|l| l.starts_with("gridedge_gateway_outbox_appended_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(appended as usize >= accepted.len(), "{g}");
    assert_eq!(stored, appended, "{m}");
    let ends = [
        *accepted.keys().next().unwrap(),
        *accepted.keys().last().unwrap(),
    ];
    let console = Console::login(&format!("http://127.0.0.1:{central_http}"), "op")
        .await
        .unwrap();
    for seq in ends {
        let (_, page) = console
            .get(&format!(
                "/api/v1/events?gateway={GW}&after={}&limit=1",
                seq - 1
            ))
            .await;
        assert_eq!(page["events"][0]["seq"], seq, "{page}");
        assert_eq!(
            page["events"][0]["payload"]["n"].as_u64(),
            accepted.get(&seq).copied(),
            "{page}"
        );
    }
    sampler.abort();
    eprintln!(
        "memory bound: {} events acknowledged in {:.0} s, drained in {:.0} s; gateway peak RSS {:.0} MiB \
         (anonymous {} MiB; the rest is its binary and files, which the kernel reclaims); cgroup peak {} MiB \
         of {} MiB (page cache included), limit reached {} times, {} OOM kills",
        accepted.len(),
        filled.as_secs_f64(),
        drained.as_secs_f64(),
        peak_rss_mib(pid),
        peak_anon.load(std::sync::atomic::Ordering::Relaxed),
        group.peak_bytes() >> 20,
        LIMIT >> 20,
        group.limit_hits(),
        group.oom_kills()
    );
    gw.kill();
    central.kill();
}
