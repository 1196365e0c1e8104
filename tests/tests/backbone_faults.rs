//! The backbone under real faults: kill -9 of either side, a broker restart, a cut WAN line, a
//! full disk budget, a damaged store, a foreign certificate, a gateway speaking for another.
//! Each test checks the promise: every event the gateway acknowledged reaches central, once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use firmware_config::runtime::mqtt::client_options;
use gridedge_tests::backbone::{assert_central_has, batch, Poster};
use gridedge_tests::proxy::FaultProxy;
use gridedge_tests::services::{
    central_external_toml, central_toml, gateway_toml, ServiceProcess, TestCentral, TestGateway,
};
use gridedge_tests::{eventually, free_port, init_test_logging, Mosquitto};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde_json::{json, Value};

const DRAIN: Duration = Duration::from_secs(90);

async fn healthy(addr: SocketAddr) {
    gridedge_tests::chaos::answers_healthz(addr, Duration::from_secs(20))
        .await
        .unwrap();
}

async fn metrics(addr: SocketAddr) -> String {
    gridedge_tests::get_text(format!("http://{addr}/metrics")).await
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|r| r.trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_gateway_under_load_loses_no_acknowledged_event() {
    init_test_logging();
    let central = TestCentral::embedded().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let toml = gateway_toml(
        data.path(),
        "gw-k9",
        central.broker_url.as_deref().unwrap(),
        None,
        port,
    );
    let mut gw = ServiceProcess::spawn("gateway", &toml).unwrap();
    healthy(addr).await;
    let poster = Poster::start(addr, "gw-k9", 200);
    for round in 0..6u64 {
        tokio::time::sleep(Duration::from_millis(400 + round * 137 % 500)).await;
        gw.kill();
        tokio::time::sleep(Duration::from_millis(100)).await;
        gw.start_again().unwrap();
        healthy(addr).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let accepted = poster.stop().await;
    assert!(
        accepted.len() >= 2000,
        "too few events accepted to prove anything: {}",
        accepted.len()
    );
    assert_central_has(central.http_addr, "gw-k9", &accepted, DRAIN)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", gw.process.log_text()));
    eprintln!(
        "kill -9 x6: {} events acknowledged to callers, all at central once",
        accepted.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_central_and_a_broker_restart_lose_nothing() {
    init_test_logging();
    let mut m = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let central_port = free_port();
    let central_addr = SocketAddr::from(([127, 0, 0, 1], central_port));
    let mut central = ServiceProcess::spawn(
        "central",
        &central_external_toml(dir.path(), &m.url(), None, central_port),
    )
    .unwrap();
    healthy(central_addr).await;
    let gw = TestGateway::start("gw-c9", &m.url(), None).await.unwrap();
    let poster = Poster::start(gw.http_addr, "gw-c9", 200);
    tokio::time::sleep(Duration::from_millis(800)).await;
    central.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    m.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    m.start_again().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    central.start_again().unwrap();
    healthy(central_addr).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let accepted = poster.stop().await;
    assert!(accepted.len() >= 1000, "{}", accepted.len());
    assert_central_has(central_addr, "gw-c9", &accepted, DRAIN)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", central.process.log_text()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_central_with_its_embedded_broker_loses_nothing() {
    init_test_logging();
    let dir = tempfile::tempdir().unwrap();
    let (broker_port, http_port) = (free_port(), free_port());
    let central_addr = SocketAddr::from(([127, 0, 0, 1], http_port));
    let mut central =
        ServiceProcess::spawn("central", &central_toml(dir.path(), broker_port, http_port))
            .unwrap();
    healthy(central_addr).await;
    let gw = TestGateway::start("gw-e9", &format!("mqtt://127.0.0.1:{broker_port}"), None)
        .await
        .unwrap();
    let poster = Poster::start(gw.http_addr, "gw-e9", 200);
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        central.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        central.start_again().unwrap();
        healthy(central_addr).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let accepted = poster.stop().await;
    assert_central_has(central_addr, "gw-e9", &accepted, DRAIN)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", central.process.log_text()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_line_queues_events_and_the_backlog_drains_in_order_per_class() {
    init_test_logging();
    let m = Mosquitto::start().unwrap();
    let central = TestCentral::external(&m.url(), None).await.unwrap();
    let proxy = FaultProxy::start(m.addr()).await.unwrap();
    let gw = TestGateway::start("gw-cut", &format!("mqtt://{}", proxy.addr), None)
        .await
        .unwrap();

    // A spy on the broker records the order in which event batches arrive.
    let opts = client_options(&m.url(), None, "spy", Duration::from_secs(10)).unwrap();
    let (spy, mut spy_ev) = AsyncClient::new(opts, 64);
    spy.subscribe("gridedge/v1/gw/gw-cut/events", QoS::AtLeastOnce)
        .await
        .unwrap();
    let order = tokio::spawn(async move {
        let mut first_seen: Vec<(String, u64)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        while let Ok(ev) = spy_ev.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = ev {
                let Ok(env) = firmware_config::wire::decode(&p.payload) else {
                    continue;
                };
                if let firmware_config::wire::Message::Events(b) = env.message {
                    for e in b.events {
                        if seen.insert(e.seq) {
                            first_seen.push((e.class.as_str().to_owned(), e.seq));
                        }
                    }
                }
                if first_seen.len() >= 6000 {
                    return first_seen;
                }
            }
        }
        first_seen
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut accepted = gridedge_tests::backbone::Accepted::new();
    let post = |start: u64| {
        let gw = &gw;
        async move { (start, gw.post_events(&batch(start, 500)).await.unwrap()) }
    };
    for i in 0..2 {
        let (start, seqs) = post(i * 500).await;
        accepted.extend(
            seqs.into_iter()
                .enumerate()
                .map(|(k, s)| (s, start + k as u64)),
        );
    }
    proxy.cut();
    eventually(
        "the gateway to see the cut",
        Duration::from_secs(20),
        || async {
            let h = gridedge_tests::try_json(gw.url("/healthz")).await?;
            (h["uplink"] == "disconnected").then_some(())
        },
    )
    .await
    .unwrap();
    for i in 2..12 {
        let (start, seqs) = post(i * 500).await;
        accepted.extend(
            seqs.into_iter()
                .enumerate()
                .map(|(k, s)| (s, start + k as u64)),
        );
    }
    let h: Value = reqwest::get(gw.url("/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(h["outbox"]["pending"].as_u64().unwrap() >= 5000, "{h}");
    proxy.restore();
    assert_central_has(central.http_addr, "gw-cut", &accepted, DRAIN)
        .await
        .unwrap();

    let first_seen = tokio::time::timeout(Duration::from_secs(30), order)
        .await
        .unwrap()
        .unwrap();
    let mut last: HashMap<String, u64> = HashMap::new();
    for (class, seq) in &first_seen {
        let prev = last.insert(class.clone(), *seq).unwrap_or(0);
        assert!(
            *seq > prev,
            "{class} event {seq} first arrived after {prev}"
        );
    }
    assert_eq!(first_seen.len(), 6000);
}

#[tokio::test]
async fn a_full_disk_budget_evicts_telemetry_first_keeps_alerts_and_refuses_a_source_at_its_quota()
{
    init_test_logging();
    // The uplink points at a closed port: nothing drains.
    let gw = TestGateway::start_with(
        "gw-full",
        "mqtt://127.0.0.1:1",
        None,
        "disk_budget = \"16 MiB\"\n",
    )
    .await
    .unwrap();
    let big = |class: &str, n: usize| {
        Value::Array((0..n).map(|i| json!({"class": class, "kind": "fill", "payload": {"i": i, "pad": "y".repeat(900)}})).collect())
    };
    // About 1 KB each: 15 MB of telemetry, then 2 MB of health, then alerts until refused:
    // the source's alerts may fill its quota (an eighth of the budget, 2 MiB) and no more, the
    // oldest telemetry making room for them (about 2 MB of it).
    for _ in 0..15 {
        gw.post_events(&big("telemetry", 1000)).await.unwrap();
    }
    gw.post_events(&big("health", 2000)).await.unwrap();
    let mut refused = None;
    for _ in 0..30 {
        let r = reqwest::Client::new()
            .post(gw.url("/api/v1/events"))
            .bearer_auth(gridedge_tests::services::source_token("gw-full"))
            .json(&big("alert", 200))
            .send()
            .await
            .unwrap();
        if !r.status().is_success() {
            refused = Some((r.status().as_u16(), r.text().await.unwrap()));
            break;
        }
    }
    let (status, body) = refused.expect("a source's alerts must be refused at its quota");
    assert_eq!(status, 507, "{body}");
    assert!(body.contains("quota of 2097152"), "{body}");
    let text = metrics(gw.http_addr).await;
    let evicted = metric(
        &text,
        "gridedge_gateway_outbox_evicted_total{class=\"telemetry\"}",
    );
    assert!(
        (1_000..4_000).contains(&evicted),
        "telemetry made room: {text}"
    );
    for class in ["health", "alert"] {
        assert_eq!(
            metric(
                &text,
                &format!("gridedge_gateway_outbox_evicted_total{{class=\"{class}\"}}")
            ),
            0,
            "{class}: {text}"
        );
    }
    let alerts = metric(&text, "gridedge_gateway_outbox_pending{class=\"alert\"}");
    assert!((1_600..=2_000).contains(&alerts), "{text}");
    assert_eq!(
        metric(
            &text,
            "gridedge_gateway_events_refused_total{reason=\"quota\"}"
        ),
        1,
        "{text}"
    );
    // The gateway tells central what it dropped, in its health report.
    let h: Value = reqwest::get(gw.url("/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["outbox"]["evicted"]["telemetry"], evicted, "{h}");
}

#[tokio::test]
async fn a_damaged_store_is_quarantined_and_central_is_told() {
    init_test_logging();
    let central = TestCentral::embedded().await.unwrap();
    let broker = central.broker_url.clone().unwrap();
    let mut gw = TestGateway::start("gw-dmg", &broker, None).await.unwrap();
    let first = gw.post_events(&batch(0, 50)).await.unwrap();
    let mut data = None;
    gw.restart_with(|dir| {
        // Damage sled's own files so that the store can no longer be opened.
        std::fs::write(dir.join("outbox/conf"), b"\x00\x01 not a sled config").unwrap();
        data = Some(dir.to_owned());
    })
    .await
    .unwrap();
    let data = data.unwrap();
    let moved: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("outbox.quarantined-"))
        .collect();
    assert_eq!(
        moved.len(),
        1,
        "the damaged store must be moved aside, not deleted"
    );

    // The gateway works on a fresh store, numbering above everything it handed out before.
    let next = gw.post_events(&batch(50, 1)).await.unwrap();
    assert!(next[0] > *first.last().unwrap(), "{next:?} after {first:?}");
    // Central hears of the quarantine as an alert.
    let alert = eventually(
        "the quarantine alert at central",
        Duration::from_secs(30),
        || async {
            let events = gridedge_tests::services::central_events(central.http_addr, "gw-dmg")
                .await
                .ok()?;
            events
                .into_iter()
                .find(|e| e["kind"] == "gateway.outbox_quarantined")
        },
    )
    .await
    .unwrap();
    assert_eq!(alert["class"], "alert");
    assert!(
        alert["payload"]["moved_to"]
            .as_str()
            .unwrap()
            .contains("outbox.quarantined-"),
        "{alert}"
    );
}

#[tokio::test]
async fn a_gateway_with_a_certificate_from_another_ca_is_refused() {
    init_test_logging();
    let m = Mosquitto::start().unwrap();
    let central = TestCentral::external(&m.tls_url(), Some(&m.pki.client("central").unwrap()))
        .await
        .unwrap();
    let files = m.pki.foreign_client("gw-rogue").unwrap();
    let gw = TestGateway::start("gw-rogue", &m.tls_url(), Some(&files))
        .await
        .unwrap();
    gw.post_events(&batch(0, 10)).await.unwrap();
    eventually(
        "failed connection attempts",
        Duration::from_secs(20),
        || async {
            (metric(
                &metrics(gw.http_addr).await,
                "gridedge_gateway_uplink_errors_total",
            ) >= 2)
                .then_some(())
        },
    )
    .await
    .unwrap();
    assert!(central.presence_of("gw-rogue").await.is_none());
    assert!(
        gridedge_tests::services::central_events(central.http_addr, "gw-rogue")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        metric(
            &metrics(gw.http_addr).await,
            "gridedge_gateway_uplink_connected"
        ),
        0
    );
}

#[tokio::test]
async fn a_gateway_speaking_for_another_is_refused_and_counted() {
    init_test_logging();
    let m = Mosquitto::start().unwrap();
    let central = TestCentral::external(&m.tls_url(), Some(&m.pki.client("central").unwrap()))
        .await
        .unwrap();
    eventually("central on the broker", Duration::from_secs(20), || async {
        let h = gridedge_tests::try_json(central.url("/healthz")).await?;
        (h["broker_link"] == "connected").then_some(())
    })
    .await
    .unwrap();
    let opts = client_options(
        &m.tls_url(),
        Some(&m.pki.client("gw-a").unwrap()),
        "gw-a",
        Duration::from_secs(10),
    )
    .unwrap();
    let (client, mut ev) = AsyncClient::new(opts, 16);
    let claim = |topic_gw: &str, envelope_gw: &str| {
        let e = gridedge_tests::backbone::forged_batch(envelope_gw, 1, 1, None).unwrap();
        (format!("gridedge/v1/gw/{topic_gw}/events"), e)
    };
    // On another gateway's topic: the broker's ACL drops it. On its own topic but claiming to
    // be another: central refuses it.
    for (t, e) in [claim("gw-b", "gw-b"), claim("gw-a", "gw-b")] {
        client.publish(t, QoS::AtLeastOnce, false, e).await.unwrap();
    }
    tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    eventually(
        "central to count the forged batch",
        Duration::from_secs(20),
        || async {
            let text = gridedge_tests::try_text(central.url("/metrics")).await?;
            (metric(
                &text,
                "gridedge_central_messages_rejected_total{reason=\"gateway_mismatch\"}",
            ) == 1)
                .then_some(())
        },
    )
    .await
    .unwrap();
    for gw in ["gw-a", "gw-b"] {
        assert!(
            gridedge_tests::services::central_events(central.http_addr, gw)
                .await
                .unwrap()
                .is_empty(),
            "{gw}"
        );
    }
}
