//! Central's binary on a real PostgreSQL under a steady load: the database is killed (-9) and
//! started again while gateways keep sending. Central acknowledges nothing while it is down,
//! the gateway keeps its backlog, and once the database is back every event the kiosk had
//! acknowledged is stored exactly once.

use std::net::SocketAddr;
use std::time::Duration;

use gridedge_tests::backbone::{assert_stored_once, Poster};
use gridedge_tests::postgres::Postgres;
use gridedge_tests::services::{central_events, central_toml, ServiceProcess, TestGateway};
use gridedge_tests::{eventually, free_port, init_test_logging, try_json};

const GW: &str = "gw-pg";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn central_waits_out_a_database_restart_under_load_and_stores_every_event_once() {
    init_test_logging();
    let mut pg = Postgres::start().unwrap();
    let fixture = tempfile::tempdir().unwrap();
    let (broker_port, http_port) = (free_port(), free_port());
    let central_addr = SocketAddr::from(([127, 0, 0, 1], http_port));
    let text = central_toml(fixture.path(), broker_port, http_port).replace(
        "[storage]\n",
        "[storage]\npostgres = { url = { env = \"GRIDEDGE_PG_URL\" } }\n",
    );
    let mut central =
        ServiceProcess::spawn_with_env("central", &text, &[("GRIDEDGE_PG_URL", &pg.url())])
            .unwrap();
    eventually("central up", Duration::from_secs(30), || async {
        try_json(format!("http://{central_addr}/healthz")).await
    })
    .await
    .unwrap();
    let gw = TestGateway::start(GW, &format!("mqtt://127.0.0.1:{broker_port}"), None)
        .await
        .unwrap();
    let poster = Poster::start_paced(gw.http_addr, GW, 50, 300.0);
    let pending = || async {
        let h = try_json(gw.url("/healthz")).await?;
        h["outbox"]["pending"].as_u64()
    };
    tokio::time::sleep(Duration::from_secs(4)).await;

    let health = || try_json(format!("http://{central_addr}/healthz"));
    let h = health().await.unwrap();
    assert_eq!(
        (
            h["store"]["backend"].as_str(),
            h["store"]["reachable"].as_bool()
        ),
        (Some("postgres"), Some(true))
    );
    pg.kill();
    // /healthz says the database is out of reach.
    eventually("healthz says so", Duration::from_secs(10), || async {
        (health().await?["store"]["reachable"] == false).then_some(())
    })
    .await
    .unwrap();
    // Nothing is acknowledged while the database is down: the backlog grows at the gateway.
    eventually(
        "a backlog at the gateway",
        Duration::from_secs(20),
        || async { (pending().await? > 1_000).then_some(()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", central.process.log_text()));
    pg.start_again().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let accepted = poster.stop().await;
    assert!(
        accepted.len() > 2_000,
        "the load went on: {}",
        accepted.len()
    );
    eventually(
        "the backlog drained into the database",
        Duration::from_secs(60),
        || async { (pending().await? == 0).then_some(()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", central.process.log_text()));

    assert_eq!(health().await.unwrap()["store"]["reachable"], true);
    let stored = central_events(central_addr, GW).await.unwrap();
    let unique = assert_stored_once(&stored, &accepted);
    assert_eq!(
        pg.psql(&format!(
            "SELECT count(*) FROM events WHERE gateway = '{GW}'"
        ))
        .unwrap(),
        unique.len().to_string()
    );
    gw.stop().await.unwrap();
    central.kill();
}
