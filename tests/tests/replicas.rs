//! Two central replicas (central's binary) on one PostgreSQL and one Mosquitto, sharing a
//! gateway's event batches through the broker's shared subscription, under a steady load; one
//! replica is killed (-9) mid-stream. Every event the kiosk had acknowledged is stored exactly
//! once, and the survivor still shows the gateway.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use gridedge_tests::backbone::{assert_stored_once, Poster};
use gridedge_tests::mosquitto::Mosquitto;
use gridedge_tests::postgres::Postgres;
use gridedge_tests::services::{central_events, central_replica_toml, ServiceProcess, TestGateway};
use gridedge_tests::{eventually, free_port, get_text, init_test_logging, try_json};

const GW: &str = "gw-replicas";

/// A replica named `name` on `broker` and `pg`, its HTTP on a free port.
fn replica(dir: &Path, name: &str, broker: &str, pg: &Postgres) -> (ServiceProcess, SocketAddr) {
    let port = free_port();
    let url_file = dir.join("pg-url");
    std::fs::write(&url_file, pg.url()).unwrap();
    let text = central_replica_toml(dir, broker, port, name, &url_file);
    let process = ServiceProcess::spawn("central", &text).unwrap();
    (process, SocketAddr::from(([127, 0, 0, 1], port)))
}

fn stored_total(metrics: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with("gridedge_central_events_stored_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_ingest_and_when_one_is_killed_every_event_is_stored_once() {
    init_test_logging();
    let pg = Postgres::start().unwrap();
    let broker = Mosquitto::start().unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut a, a_addr) = replica(dir_a.path(), "a", &broker.url(), &pg);
    let (mut b, b_addr) = replica(dir_b.path(), "b", &broker.url(), &pg);
    for addr in [a_addr, b_addr] {
        eventually("replica up", Duration::from_secs(30), || async {
            try_json(format!("http://{addr}/healthz")).await
        })
        .await
        .unwrap();
    }
    let gw = TestGateway::start(GW, &broker.url(), None).await.unwrap();
    let poster = Poster::start_paced(gw.http_addr, GW, 20, 300.0);

    // Both replicas take a share of the batches.
    eventually("both replicas storing", Duration::from_secs(30), || async {
        let (ma, mb) = (
            get_text(format!("http://{a_addr}/metrics")).await,
            get_text(format!("http://{b_addr}/metrics")).await,
        );
        (stored_total(&ma) > 100.0 && stored_total(&mb) > 100.0).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", a.process.log_text(), b.process.log_text()));

    a.kill();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let accepted = poster.stop().await;
    assert!(
        accepted.len() > 1_500,
        "the load went on: {}",
        accepted.len()
    );
    eventually(
        "the gateway's outbox drained through the survivor",
        Duration::from_secs(90),
        || async {
            let h = try_json(gw.url("/healthz")).await?;
            (h["outbox"]["pending"].as_u64()? == 0).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", b.process.log_text()));

    let stored = central_events(b_addr, GW).await.unwrap();
    assert_stored_once(&stored, &accepted);
    // The survivor shows the gateway (statuses reach every replica).
    let gateways = get_text(format!("http://{b_addr}/metrics")).await;
    assert!(
        gateways
            .lines()
            .any(|l| l.starts_with("gridedge_central_gateways{presence=\"online\"} 1")),
        "{gateways}"
    );
    gw.stop().await.unwrap();
    b.kill();
}
