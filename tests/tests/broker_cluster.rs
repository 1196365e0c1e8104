//! Central replicas and gateways on a clustered broker: three NATS nodes with MQTT on
//! JetStream (every stream on all three), certificates mapped to users with per-identity
//! permissions, a balancer in front. Two replicas on PostgreSQL, two gateways under a steady
//! load; the node one gateway is connected to is killed (-9). The gateway reconnects through
//! another node and every event its source had acknowledged is stored exactly once. A
//! gateway's certificate reaches no other gateway's topics.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gridedge_tests::backbone::{assert_stored_once, Poster};
use gridedge_tests::nats::{Identities, NatsCluster};
use gridedge_tests::postgres::Postgres;
use gridedge_tests::services::{
    central_events, central_replica_toml_tls, ServiceProcess, TestGateway,
};
use gridedge_tests::{eventually, free_port, init_test_logging, try_json};

const GATEWAYS: [&str; 2] = ["gw-n1", "gw-n2"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_node_dies_and_its_gateways_move_to_another_losing_nothing() {
    init_test_logging();
    let mut nats = NatsCluster::start(&Identities {
        central: "central-test".into(),
        gateways: GATEWAYS.iter().map(|g| (*g).to_owned()).collect(),
    })
    .await
    .unwrap();
    let pg = Postgres::start().unwrap();
    let central_tls = nats.client("central-test").unwrap();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut replicas: Vec<(ServiceProcess, SocketAddr)> = ["a", "b"]
        .iter()
        .zip(&dirs)
        .map(|(name, dir)| {
            let port = free_port();
            let url_file = dir.path().join("pg-url");
            std::fs::write(&url_file, pg.url()).unwrap();
            let text = central_replica_toml_tls(
                dir.path(),
                &nats.url(),
                Some(&central_tls),
                port,
                name,
                &url_file,
            );
            let p = ServiceProcess::spawn("central", &text).unwrap();
            (p, SocketAddr::from(([127, 0, 0, 1], port)))
        })
        .collect();
    let logs = |replicas: &[(ServiceProcess, SocketAddr)], nats: &NatsCluster| {
        let mut all: Vec<String> = replicas.iter().map(|(p, _)| p.process.log_text()).collect();
        all.push(nats.log_text());
        all.join("\n---\n")
    };
    for (_, addr) in &replicas {
        eventually("replica up", Duration::from_secs(30), || async {
            try_json(format!("http://{addr}/healthz")).await
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&replicas, &nats)));
    }
    let mut gateways = Vec::new();
    let mut posters = Vec::new();
    let mut certs = Vec::new();
    for id in GATEWAYS {
        let tls = nats.client(id).unwrap();
        let gw = TestGateway::start(id, &nats.url(), Some(&tls))
            .await
            .unwrap();
        certs.push(tls);
        posters.push(Poster::start_paced(gw.http_addr, id, 10, 100.0));
        gateways.push(gw);
    }
    for id in GATEWAYS {
        eventually("events stored", Duration::from_secs(40), || async {
            let n: u64 = pg
                .psql(&format!(
                    "SELECT count(*) FROM events WHERE gateway = '{id}'"
                ))
                .ok()?
                .parse()
                .ok()?;
            (n > 100).then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{id}: {e}\n{}", logs(&replicas, &nats)));
    }

    // A stolen gateway certificate: no other gateway's commands, no forged uplink.
    let spied = spy(&nats.url(), &certs[1], GATEWAYS[0]).await;
    assert!(spied, "gw-n2's certificate is refused gw-n1's downlink");

    // The node the first gateway is on dies.
    let node = eventually("the gateway's node", Duration::from_secs(10), || async {
        nats.node_of(GATEWAYS[0]).await
    })
    .await
    .unwrap();
    nats.kill(node);
    let killed = Instant::now();
    let moved = eventually(
        "the gateway on another node",
        Duration::from_secs(60),
        || async {
            let h = try_json(gateways[0].url("/healthz")).await?;
            (h["uplink"] == "connected"
                && nats.node_of(GATEWAYS[0]).await.is_some_and(|n| n != node))
            .then_some(killed.elapsed())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&replicas, &nats)));
    eprintln!("gateway reconnected through another node {moved:?} after the kill");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut accepted = Vec::new();
    for p in posters {
        accepted.push(p.stop().await);
    }
    for (gw, accepted) in gateways.iter().zip(&accepted) {
        eventually("the outbox drained", Duration::from_secs(120), || async {
            let h = try_json(gw.url("/healthz")).await?;
            (h["outbox"]["pending"].as_u64()? == 0).then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", gw.id, logs(&replicas, &nats)));
        let stored = central_events(replicas[0].1, &gw.id).await.unwrap();
        assert_stored_once(&stored, accepted);
    }
    for gw in gateways {
        gw.stop().await.unwrap();
    }
    for (p, _) in &mut replicas {
        p.kill();
    }
}

/// Connects with `tls` (another gateway's certificate) and asks for `victim`'s commands:
/// true when the broker refuses the subscription.
async fn spy(url: &str, tls: &firmware_config::config::TlsFiles, victim: &str) -> bool {
    use rumqttc::{AsyncClient, Event, Packet, QoS, SubscribeReasonCode};
    let opts = firmware_config::runtime::mqtt::client_options(
        url,
        Some(tls),
        "spy",
        Duration::from_secs(10),
    )
    .unwrap();
    let (client, mut events) = AsyncClient::new(opts, 16);
    client
        .subscribe(format!("gridedge/v1/gw/{victim}/cmd"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::SubAck(ack)))) => {
                return ack
                    .return_codes
                    .iter()
                    .all(|c| *c == SubscribeReasonCode::Failure);
            }
            Ok(Ok(_)) => {}
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    false
}

/// `deploy/demo-cluster.sh`'s program, for 30 s: it brings the cluster up, shows each gateway
/// held, kills a replica and shows the other take over, and every gateway's events go on.
#[test]
fn the_cluster_demo_shows_a_takeover_and_events_going_on() {
    let bin = gridedge_tests::services::binary("demo-cluster").unwrap();
    let out = std::process::Command::new(bin)
        .env("DEMO_SECONDS", "30")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("three NATS nodes behind mqtts://"), "{text}");
    assert!(
        text.contains("every gateway held by central-test-b"),
        "{text}"
    );
    // Events keep being stored after the kill: the last count is above the first.
    let counts: Vec<u64> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("gw-east: "))
        .filter_map(|l| l.split(',').next()?.parse().ok())
        .collect();
    assert!(
        counts.len() >= 2 && counts.last() > counts.first(),
        "{counts:?}\n{text}"
    );
}
