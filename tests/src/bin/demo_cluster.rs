//! `deploy/demo-cluster.sh`: central as two replicas on one machine. PostgreSQL and a
//! three-node NATS cluster (MQTT on JetStream, certificates per identity) are started from the
//! test fixtures in temporary folders (as an unprivileged user), then two central replicas, and
//! two gateways whose event sources post a steady trickle and one forced door each. It prints where to look, which replica holds which gateway, and then kills one
//! replica (-9) to show the other take its gateway over and every event stored once. Runs until
//! Ctrl-C, or for `DEMO_SECONDS` seconds; `DEMO_KILL=0` keeps both replicas.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use gridedge_tests::nats::{Identities, NatsCluster};
use gridedge_tests::postgres::Postgres;
use gridedge_tests::services::{
    api_client, central_replica_toml_tls, gateway_toml, operator_password, post_events,
    ServiceProcess,
};
use gridedge_tests::{free_port, FixtureDir};
use serde_json::json;

const GATEWAYS: [&str; 2] = ["gw-east", "gw-west"];
const REPLICAS: [&str; 2] = ["a", "b"];

struct Replica {
    name: String,
    http: SocketAddr,
    process: ServiceProcess,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let run_for = std::env::var("DEMO_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs);
    let kill = std::env::var("DEMO_KILL").map_or(true, |v| v != "0");
    let started = Instant::now();

    let pg = Postgres::start().context("PostgreSQL")?;
    let broker = NatsCluster::start(&Identities {
        central: "central-test".into(),
        gateways: GATEWAYS.iter().map(|g| (*g).to_owned()).collect(),
    })
    .await
    .context("the NATS cluster")?;
    let central_tls = broker.client("central-test")?;
    let dir = FixtureDir::new("demo-cluster")?;
    let url_file = dir.join("pg-url");
    std::fs::write(&url_file, pg.url())?;
    let mut replicas = Vec::new();
    for name in REPLICAS {
        let port = free_port();
        let rdir = dir.join(format!("replica-{name}"));
        std::fs::create_dir_all(&rdir)?;
        let text = central_replica_toml_tls(
            &rdir,
            &broker.url(),
            Some(&central_tls),
            port,
            name,
            &url_file,
        );
        let process = ServiceProcess::spawn("central", &text).context("a central replica")?;
        replicas.push(Replica {
            name: format!("central-test-{name}"),
            http: SocketAddr::from(([127, 0, 0, 1], port)),
            process,
        });
    }
    for r in &replicas {
        wait_healthy(r.http).await?;
    }
    let mut gateways = Vec::new();
    for id in GATEWAYS {
        let port = free_port();
        let gdir = dir.join(id);
        std::fs::create_dir_all(&gdir)?;
        let tls = broker.client(id)?;
        let text = gateway_toml(&gdir, id, &broker.url(), Some(&tls), port);
        let process = ServiceProcess::spawn("gateway", &text).context("a gateway")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_healthy(addr).await?;
        gateways.push((id, addr, process));
    }

    println!(
        "\nGridEdge central as two replicas, up in {:.0?}:",
        started.elapsed()
    );
    for r in &replicas {
        println!(
            "  replica {}: console http://{}/  (log in as op / {}), http://{}/healthz, http://{}/metrics",
            r.name,
            r.http,
            operator_password("op"),
            r.http,
            r.http
        );
        println!("    log: {}", r.process.process.log.display());
    }
    for (id, addr, p) in &gateways {
        println!(
            "  gateway {id}: http://{addr}/healthz  log: {}",
            p.process.log.display()
        );
    }
    println!("  PostgreSQL: psql '{}'", pg.url());
    println!(
        "  broker: three NATS nodes behind {} (their logs: {})",
        broker.url(),
        broker.log_dir().display()
    );

    // A trickle from each gateway's event source, and a forced door each.
    let targets: Vec<(&'static str, SocketAddr)> =
        gateways.iter().map(|(id, addr, _)| (*id, *addr)).collect();
    let posting = tokio::spawn(async move {
        for (id, addr) in &targets {
            let door = json!([{ "class": "alert", "kind": "door.forced", "payload": { "door": "archive room" } }]);
            let _ = post_events(*addr, id, &door).await;
        }
        let mut n = 0u64;
        loop {
            for (id, addr) in &targets {
                let e = json!([{ "class": "telemetry", "kind": "hall.visitors", "payload": { "n": n } }]);
                if post_events(*addr, id, &e).await.is_ok() {
                    n += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    tokio::time::sleep(Duration::from_secs(8)).await;
    print_leases(&pg);
    print_alerts(&replicas).await;
    if kill {
        let victim = replicas.remove(0);
        println!(
            "\nkilling replica {} (-9); the other takes its gateway over within 8 s",
            victim.name
        );
        let killed = Instant::now();
        let mut victim = victim;
        victim.process.kill();
        loop {
            let held: Vec<String> = GATEWAYS.iter().filter_map(|g| pg.lease_owner(g)).collect();
            if held.len() == GATEWAYS.len() && held.iter().all(|o| *o != victim.name) {
                println!(
                    "every gateway held by {} after {:.1?}",
                    held[0],
                    killed.elapsed()
                );
                break;
            }
            if killed.elapsed() > Duration::from_secs(30) {
                println!("not taken over after 30 s: see the logs");
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        print_leases(&pg);
    }
    println!("\nevents stored per gateway every 10 s (Ctrl-C to stop):");
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let counts = pg
            .psql("SELECT string_agg(gateway || ': ' || n, ', ' ORDER BY gateway) FROM (SELECT gateway, count(*) AS n FROM events GROUP BY gateway) c")
            .unwrap_or_default();
        println!("  {counts}");
        if run_for.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
    posting.abort();
    print_alerts(&replicas).await;
    drop(gateways);
    Ok(())
}

async fn wait_healthy(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = reqwest::get(format!("http://{addr}/healthz")).await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "{addr} did not come up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn print_leases(pg: &Postgres) {
    println!("\nwho holds which gateway (view live_leases):");
    for g in GATEWAYS {
        println!(
            "  {g}: {}",
            pg.lease_owner(g).unwrap_or_else(|| "nobody yet".into())
        );
    }
}

async fn print_alerts(replicas: &[Replica]) {
    for r in replicas {
        let v: serde_json::Value = match api_client()
            .get(format!("http://{}/api/v1/alerts", r.http))
            .send()
            .await
        {
            Ok(resp) => resp.json().await.unwrap_or_default(),
            Err(_) => continue,
        };
        let keys: Vec<&str> = v["alerts"]
            .as_array()
            .map(|a| a.iter().filter_map(|a| a["key"].as_str()).collect())
            .unwrap_or_default();
        println!("open alerts on {}: {keys:?}", r.name);
    }
}
