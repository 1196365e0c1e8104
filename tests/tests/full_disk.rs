//! A real full disk under the gateway: a 24 MiB tmpfs under a 1 GiB budget (mounted by the
//! test, as root). The disk is a state the gateway rides out, never damage: appends answer
//! 507 while it is full, what central acknowledges makes room and appends resume by
//! themselves, a crash or a stop on the full disk comes back with everything it held, and a
//! disk taken by another program stops the store (sled cannot write after the disk refused it)
//! for a restart that loses nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use firmware_config::bundle::SigningKey;
use gridedge_tests::backbone::{assert_central_has, Accepted, Poster};
use gridedge_tests::disk::Tmpfs;
use gridedge_tests::proxy::FaultProxy;
use gridedge_tests::services::{
    central_toml, gateway_toml, source_token, Console, ServiceProcess, TestCentral, TestGateway,
    TEST_DISK_RESERVE,
};
use gridedge_tests::{eventually, free_port, init_test_logging};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "token-of-the-full-disk-source";

fn config(keys: &Path, storage: &Path) -> firmware_config::config::GatewayConfig {
    let (key, _) = SigningKey::generate().unwrap();
    let public = keys.join("central.pub");
    std::fs::write(&public, key.public_pem()).unwrap();
    let token = keys.join("source.token");
    std::fs::write(&token, TOKEN).unwrap();
    let text = format!(
        "[site]\nid = \"full-disk\"\nname = \"A centre with a full disk\"\n\
         [gateway]\nid = \"gw-full\"\n\
         [uplink]\nbroker = \"mqtt://127.0.0.1:9\"\ncentral_key_file = \"{}\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\n\
         [storage]\ndir = \"{}\"\ndisk_budget = \"1 GiB\"\ncache_size = \"4 MiB\"\n\
         [[sources]]\nid = \"sensors\"\nname = \"Sensors\"\ntoken = {{ file = \"{}\" }}\n",
        public.display(),
        storage.display(),
        token.display()
    );
    firmware_config::config::parse(&text, keys).unwrap()
}

/// Ten events of `class`, 4 kB each, numbered from `n`.
fn events(class: &str, n: u64) -> Value {
    let pad = "x".repeat(4000);
    Value::Array(
        (0..10)
            .map(|i| json!({ "class": class, "kind": "hall.air", "payload": { "n": n + i, "pad": pad } }))
            .collect(),
    )
}

/// Posts ten events of `class` with the in-process gateway's source token: (status, body).
async fn post(addr: SocketAddr, class: &str, n: u64) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/events"))
        .bearer_auth(TOKEN)
        .json(&events(class, n))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

fn quarantined(storage: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(storage)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().contains("quarantined"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_full_disk_is_a_state_the_gateway_rides_out_and_never_damage() {
    init_test_logging();
    let disk = Tmpfs::mount("24m").unwrap();
    let keys = tempfile::tempdir().unwrap();
    let storage = disk.path().join("gateway");
    let config = config(keys.path(), &storage);

    let gw = gateway::start(config.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert!(
        storage.join("space.reserve").exists(),
        "no reserve set aside"
    );
    let addr = gw.http_addr;

    // Alerts fill the disk (nothing can be evicted for them): refused with 507, said plainly.
    let mut refused = None;
    for i in 0..2_000 {
        let (status, body) = post(addr, "alert", i * 10).await;
        if status != 200 {
            refused = Some((status, body));
            break;
        }
    }
    let (status, body) = refused.expect("24 MiB never filled");
    assert_eq!(status, 507, "{body}");
    assert!(body.contains("disk is full"), "{body}");
    assert!(gw.shared.outbox.disk().full());
    let pending = gw.shared.outbox.summary().pending;
    assert!(pending > 1_000, "{pending}");

    // Central takes half the backlog (~150 posts' worth): that room is taken again, then more
    // by shedding the oldest telemetry for as long as sled gives back what shedding frees (it
    // does not always, at once: then the gateway refuses rather than write into the last of
    // the disk); the store never meets the full disk itself.
    gw.shared.outbox.acknowledge(vec![(1, pending / 2)]);
    let mut accepted = 0;
    for i in 0..3_000 {
        let (status, body) = post(addr, "telemetry", i * 10).await;
        match status {
            200 => accepted += 1,
            507 => {}
            _ => panic!("{status}: {body}"),
        }
    }
    assert!(
        accepted >= 100,
        "only {accepted} of 3000 taken after the ack"
    );
    assert!(!gw
        .shared
        .outbox
        .stats()
        .stopped
        .load(std::sync::atomic::Ordering::Relaxed));
    let pending = gw.shared.outbox.summary().pending;

    // A stop on the full disk ends, within the service unit's 10 s.
    gw.shutdown();
    tokio::time::timeout(Duration::from_secs(10), gw.wait())
        .await
        .expect("the gateway did not stop on a full disk")
        .unwrap();

    // Started again on the full disk: it opens, with everything it held, nothing moved aside.
    let gw = gateway::start(config.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(gw.shared.outbox.summary().pending, pending);
    assert!(
        quarantined(&storage).is_empty(),
        "{:?}",
        quarantined(&storage)
    );
    gw.shutdown();
    gw.wait().await.unwrap();

    // Space again: the reserve is taken back and the limit lifted.
    disk.resize("64m").unwrap();
    let gw = gateway::start(config, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(gw.shared.outbox.summary().pending, pending);
    let (status, body) = post(gw.http_addr, "alert", 0).await;
    assert_eq!(status, 200, "{body}");
    assert!(!gw.shared.outbox.disk().full());
    assert!(storage.join("space.reserve").exists());
    assert!(quarantined(&storage).is_empty());
    gw.shutdown();
    gw.wait().await.unwrap();
}

fn reserve(size: &str) -> String {
    format!("disk_reserve = \"{size}\"")
}

/// The release (or debug) gateway binary on `storage`, its uplink through `proxy`.
fn gateway_process(
    fixture: &Path,
    id: &str,
    proxy: &FaultProxy,
    storage: &Path,
) -> (ServiceProcess, SocketAddr) {
    let port = free_port();
    let text = gateway_toml(fixture, id, &format!("mqtt://{}", proxy.addr), None, port);
    let default_dir = fixture.join(format!("{id}-data"));
    let text = text
        .replace(
            &format!("dir = \"{}\"", default_dir.display()),
            &format!(
                "dir = \"{}\"\ndisk_budget = \"1 GiB\"\ncache_size = \"4 MiB\"",
                storage.display()
            ),
        )
        .replace(&reserve(TEST_DISK_RESERVE), &reserve("64 MiB"));
    assert!(
        text.contains("disk_budget") && text.contains("64 MiB"),
        "{text}"
    );
    (
        ServiceProcess::spawn("gateway", &text).unwrap(),
        SocketAddr::from(([127, 0, 0, 1], port)),
    )
}

async fn healthz(addr: SocketAddr) -> Value {
    eventually(
        &format!("{addr} to answer /healthz"),
        Duration::from_secs(20),
        || async { gridedge_tests::try_json(format!("http://{addr}/healthz")).await },
    )
    .await
    .unwrap()
}

/// A gateway process on a 24 MiB disk of its own, its WAN cut from central.
struct Offline {
    disk: Tmpfs,
    central: TestCentral,
    proxy: FaultProxy,
    _fixture: tempfile::TempDir,
    storage: PathBuf,
    gw: ServiceProcess,
    addr: SocketAddr,
}

impl Offline {
    async fn start(id: &str) -> Self {
        init_test_logging();
        let disk = Tmpfs::mount("24m").unwrap();
        let central = TestCentral::embedded().await.unwrap();
        let broker: SocketAddr = central.broker_url.as_deref().unwrap()["mqtt://".len()..]
            .parse()
            .unwrap();
        let proxy = FaultProxy::start(broker).await.unwrap();
        proxy.cut();
        let fixture = tempfile::tempdir().unwrap();
        let storage = disk.path().join(id);
        let (gw, addr) = gateway_process(fixture.path(), id, &proxy, &storage);
        healthz(addr).await;
        Self {
            disk,
            central,
            proxy,
            _fixture: fixture,
            storage,
            gw,
            addr,
        }
    }
}

/// Posts ten alerts numbered from `n`: (status, Retry-After, body); status 0 when the
/// gateway did not answer (it stopped).
async fn post_alerts(addr: SocketAddr, id: &str, n: u64) -> (u16, Option<String>, Value) {
    let sent = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/events"))
        .bearer_auth(source_token(id))
        .json(&events("alert", n))
        .send()
        .await;
    let Ok(r) = sent else {
        return (0, None, Value::Null);
    };
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, retry, r.json().await.unwrap_or(Value::Null))
}

/// Fills the gateway's disk with alerts until it refuses; returns what it accepted.
async fn fill(addr: SocketAddr, id: &str) -> (Accepted, Value) {
    let mut accepted = Accepted::new();
    for batch in 0..2_000u64 {
        let (status, retry, body) = post_alerts(addr, id, batch * 10).await;
        if status != 200 {
            assert_eq!(status, 507, "{body}");
            assert_eq!(retry.as_deref(), Some("60"));
            return (accepted, body);
        }
        for (i, seq) in body["seqs"].as_array().unwrap().iter().enumerate() {
            accepted.insert(seq.as_u64().unwrap(), batch * 10 + i as u64);
        }
    }
    panic!("the disk never filled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_crashed_on_a_full_disk_comes_back_serving_and_central_drains_it() {
    let Offline {
        disk: _disk,
        central,
        proxy,
        _fixture,
        storage,
        mut gw,
        addr,
    } = Offline::start("gw-disk").await;

    // The WAN is down and the centre goes on posting: the disk fills, appends answer 507.
    let (accepted, body) = fill(addr, "gw-disk").await;
    assert!(accepted.len() > 1_000, "{}", accepted.len());
    assert!(body.to_string().contains("disk is full"), "{body}");
    let health = healthz(addr).await;
    assert_eq!(health["disk"]["full"], true, "{health}");
    let metrics = gridedge_tests::get_text(format!("http://{addr}/metrics")).await;
    assert!(
        metrics.contains("gridedge_gateway_disk_full 1"),
        "{metrics}"
    );
    assert!(metrics.contains("gridedge_gateway_events_refused_total{reason=\"disk_full\"}"));

    // A crash on the full disk: it comes back, serving, with everything it held.
    gw.kill();
    gw.start_again().unwrap();
    let health = healthz(addr).await;
    assert_eq!(health["outbox"]["pending"], accepted.len(), "{health}");
    assert!(quarantined(&storage).is_empty());

    // The WAN is back: central takes the backlog, once each, and appends resume by themselves.
    proxy.restore();
    assert_central_has(
        central.http_addr,
        "gw-disk",
        &accepted,
        Duration::from_secs(90),
    )
    .await
    .unwrap();
    eventually("the gateway to drain", Duration::from_secs(60), || async {
        let h = gridedge_tests::try_json(format!("http://{addr}/healthz")).await?;
        (h["outbox"]["pending"] == 0).then_some(())
    })
    .await
    .unwrap();
    let (status, _, body) = post_alerts(addr, "gw-disk", 1_000_000).await;
    assert_eq!(status, 200, "{body}");
    assert!(gw.process.is_running());
    // Central stops before its folder goes (sled cannot write into a removed one).
    gw.kill();
    central.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_taken_by_another_program_never_hangs_the_gateway_and_a_restart_loses_nothing() {
    let Offline {
        disk,
        central,
        proxy,
        _fixture,
        storage,
        mut gw,
        addr,
    } = Offline::start("gw-taken").await;
    let mut accepted = Accepted::new();
    let client = reqwest::Client::new();
    for batch in 0..100u64 {
        let (status, _, body) = post_alerts(addr, "gw-taken", batch * 10).await;
        assert_eq!(status, 200, "{body}");
        for (i, seq) in body["seqs"].as_array().unwrap().iter().enumerate() {
            accepted.insert(seq.as_u64().unwrap(), batch * 10 + i as u64);
        }
        // Telemetry beside them, which a full store may shed.
        let r = client
            .post(format!("http://{addr}/api/v1/events"))
            .bearer_auth(source_token("gw-taken"))
            .json(&events("telemetry", 100_000 + batch * 10))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }

    // Another program takes every free byte; the gateway gives its reserve back at its next
    // write, and the program takes that too.
    let filler = disk.fill("other-program.log").unwrap();
    let (status, _, body) = post_alerts(addr, "gw-taken", 5_000).await;
    match status {
        200 => {
            for (i, seq) in body["seqs"].as_array().unwrap().iter().enumerate() {
                accepted.insert(seq.as_u64().unwrap(), 5_000 + i as u64);
            }
        }
        507 => {}
        s => panic!("{s}: {body}"),
    }
    let filler2 = disk.fill("other-program-2.log").unwrap();

    // Telemetry and alerts can still be taken by shedding older telemetry, which writes: the
    // store either finds room in what it already has, or its write fails and the gateway
    // stops for its service manager to start it again. It never hangs.
    for n in 0..50u64 {
        let sent = tokio::time::timeout(
            Duration::from_secs(30),
            client
                .post(format!("http://{addr}/api/v1/events"))
                .bearer_auth(source_token("gw-taken"))
                .json(&events("telemetry", 10_000 + n * 10))
                .send(),
        )
        .await
        .expect("an append hung on the full disk");
        if let Ok(r) = sent {
            let status = r.status().as_u16();
            assert!([200, 507].contains(&status), "{status}");
        }
        // Alerts may be taken in the room shed telemetry leaves: then they are central's too.
        let (status, _, body) = post_alerts(addr, "gw-taken", 20_000 + n * 10).await;
        assert!([0, 200, 507].contains(&status), "{status}: {body}");
        if status == 200 {
            for (i, seq) in body["seqs"].as_array().unwrap().iter().enumerate() {
                accepted.insert(seq.as_u64().unwrap(), 20_000 + n * 10 + i as u64);
            }
        }
        if gw.process.wait_timeout(Duration::from_millis(50)).is_ok() {
            break;
        }
    }

    // The program's files go; the gateway (restarted, as its unit would) has every event.
    std::fs::remove_file(filler).unwrap();
    std::fs::remove_file(filler2).unwrap();
    if gw.process.is_running() {
        gw.kill();
    }
    gw.start_again().unwrap();
    let health = healthz(addr).await;
    assert!(quarantined(&storage).is_empty());
    assert!(health["outbox"]["pending"].as_u64().unwrap() >= accepted.len() as u64);
    proxy.restore();
    assert_central_has(
        central.http_addr,
        "gw-taken",
        &accepted,
        Duration::from_secs(90),
    )
    .await
    .unwrap();
    // Central stops before its folder goes (sled cannot write into a removed one).
    gw.kill();
    central.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn centrals_full_disk_stops_acknowledging_raises_an_alert_and_resumes_losing_nothing() {
    init_test_logging();
    let disk = Tmpfs::mount("64m").unwrap();
    let fixture = tempfile::tempdir().unwrap();
    let (broker_port, http_port) = (free_port(), free_port());
    let central_addr = SocketAddr::from(([127, 0, 0, 1], http_port));
    let text = central_toml(fixture.path(), broker_port, http_port)
        .replace(
            &format!(
                "dir = \"{}\"",
                fixture.path().join("central-data").display()
            ),
            &format!("dir = \"{}\"", disk.path().join("central").display()),
        )
        .replace(&reserve(TEST_DISK_RESERVE), &reserve("64 MiB"));
    assert!(
        text.contains(&disk.path().display().to_string()) && text.contains("64 MiB"),
        "{text}"
    );
    let mut central = ServiceProcess::spawn("central", &text).unwrap();
    healthz(central_addr).await;
    let console = Console::login(&format!("http://{central_addr}"), "op")
        .await
        .unwrap();
    let gw = TestGateway::start("gw-cfull", &format!("mqtt://127.0.0.1:{broker_port}"), None)
        .await
        .unwrap();
    let mut poster = Poster::start_paced(gw.http_addr, "gw-cfull", 20, 1_000.0);

    // Another program takes central's disk.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let filler = disk.fill("other-program.log").unwrap();
    let key = "central-test#central.disk_full";
    let alert = eventually("central's disk alert", Duration::from_secs(30), || async {
        console.alert(key).await
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", central.process.log_text()));
    assert_eq!(alert["severity"], "critical", "{alert}");
    let health = healthz(central_addr).await;
    assert_eq!(health["disk"]["full"], true, "{health}");
    let metrics = gridedge_tests::get_text(format!("http://{central_addr}/metrics")).await;
    assert!(
        metrics.contains("gridedge_central_disk_full 1"),
        "{metrics}"
    );

    // Nothing is acknowledged while it is full: the gateway keeps what it takes.
    let pending = |gw: &TestGateway| {
        let url = gw.url("/healthz");
        async move {
            gridedge_tests::try_json(url).await.unwrap()["outbox"]["pending"]
                .as_u64()
                .unwrap()
        }
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = pending(&gw).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = pending(&gw).await;
    assert!(before > 0 && after > before, "{before} → {after}");
    let metrics = gridedge_tests::get_text(format!("http://{central_addr}/metrics")).await;
    assert!(
        metrics.contains("gridedge_central_messages_rejected_total{reason=\"disk_full\"}"),
        "{metrics}"
    );
    assert!(central.process.is_running());

    // Room again: it resumes by itself, the alert clears, every event is there once.
    std::fs::remove_file(filler).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let accepted = poster.stop().await;
    assert_central_has(
        central_addr,
        "gw-cfull",
        &accepted,
        Duration::from_secs(120),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", central.process.log_text()));
    eventually(
        "the disk alert to clear",
        Duration::from_secs(30),
        || async { (console.alert(key).await?["cleared"] == true).then_some(()) },
    )
    .await
    .unwrap();
    poster = Poster::start_paced(gw.http_addr, "gw-cfull", 20, 1_000.0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let more = poster.stop().await;
    assert_central_has(central_addr, "gw-cfull", &more, Duration::from_secs(60))
        .await
        .unwrap();
    central.kill();
}
