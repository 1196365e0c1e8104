//! Retention at central, for real: central's binary keeps telemetry and health 10 s and
//! alerts and submissions for a year, prunes every second into its archive, under a steady
//! load, and is killed (-9) while it prunes. Every event a kiosk had acknowledged is in
//! exactly one place at the end, the store or the archive; the long-kept classes are all
//! still in the store; metrics show what was pruned, the oldest kept event and the store's
//! size; ingest and acknowledgements went on throughout. The same on PostgreSQL (central's
//! events there, pruned a page per transaction).

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use gridedge_tests::backbone::{Poster, CLASSES};
use gridedge_tests::postgres::Postgres;
use gridedge_tests::services::{central_events, central_toml, ServiceProcess, TestGateway};
use gridedge_tests::{eventually, free_port, get_text, init_test_logging, try_json};
use serde_json::Value;

const GW: &str = "gw-retain";

/// Every line of every archive file under `dir`.
fn archived(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".jsonl.gz") {
                let mut text = String::new();
                flate2::read::GzDecoder::new(std::fs::File::open(&p).unwrap())
                    .read_to_string(&mut text)
                    .unwrap();
                out.extend(
                    text.lines()
                        .map(|l| serde_json::from_str::<Value>(l).unwrap()),
                );
            }
        }
    }
    out
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn central_prunes_each_class_on_time_into_its_archive_under_load_and_through_a_crash() {
    prunes_on_time_under_load_through_a_crash(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn central_on_postgres_prunes_each_class_on_time_into_its_archive_under_load_and_through_a_crash(
) {
    let pg = Postgres::start().unwrap();
    prunes_on_time_under_load_through_a_crash(Some(&pg)).await;
    // The events were in the database, not in central's own folder.
    assert_ne!(
        pg.psql("SELECT count(*) FROM events WHERE class = 'alert'")
            .unwrap(),
        "0"
    );
}

async fn prunes_on_time_under_load_through_a_crash(pg: Option<&Postgres>) {
    init_test_logging();
    let fixture = tempfile::tempdir().unwrap();
    let archive = fixture.path().join("archive");
    let (broker_port, http_port) = (free_port(), free_port());
    let central_addr = SocketAddr::from(([127, 0, 0, 1], http_port));
    let mut text = format!(
        "{}\n[retention]\ntelemetry = \"10s\"\nhealth = \"10s\"\nprune_every = \"1s\"\narchive_dir = \"{}\"\n",
        central_toml(fixture.path(), broker_port, http_port),
        archive.display()
    );
    let url = pg.map(Postgres::url).unwrap_or_default();
    if pg.is_some() {
        text = text.replace(
            "[storage]\n",
            "[storage]\npostgres = { url = { env = \"GRIDEDGE_PG_URL\" } }\n",
        );
    }
    let mut central =
        ServiceProcess::spawn_with_env("central", &text, &[("GRIDEDGE_PG_URL", &url)]).unwrap();
    let health = || try_json(format!("http://{central_addr}/healthz"));
    eventually("central up", Duration::from_secs(30), || async {
        health().await
    })
    .await
    .unwrap();
    let gw = TestGateway::start(GW, &format!("mqtt://127.0.0.1:{broker_port}"), None)
        .await
        .unwrap();
    // A steady load of all four classes in turn (500 events/s).
    let poster = Poster::start_paced(gw.http_addr, GW, 50, 500.0);

    // Within seconds of their time, the first telemetry and health are in the archive.
    eventually(
        "the first archive files",
        Duration::from_secs(40),
        || async {
            let a = archived(&archive);
            (a.len() > 500).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", central.process.log_text()));

    // Killed while it prunes, and started again: it goes on from where it was.
    central.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    central.start_again().unwrap();
    eventually("central up again", Duration::from_secs(30), || async {
        health().await
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(12)).await;
    let before_stop = poster.accepted_so_far();
    let accepted = poster.stop().await;
    assert!(before_stop > 5_000, "the load went on: {before_stop}");
    // Everything acknowledged by central (pruned ones are in the archive, not the store).
    eventually(
        "the gateway's outbox drained",
        Duration::from_secs(60),
        || async {
            let h = try_json(gw.url("/healthz")).await?;
            (h["outbox"]["pending"].as_u64()? == 0).then_some(())
        },
    )
    .await
    .unwrap();

    // Let the last of the short-kept ones pass their time.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let metrics = get_text(format!("http://{central_addr}/metrics")).await;
    let stored = central_events(central_addr, GW).await.unwrap();
    let archived = archived(&archive);

    // Each acknowledged event is in exactly one place.
    let mut places: BTreeMap<u64, (usize, String)> = BTreeMap::new();
    for (e, place) in stored
        .iter()
        .map(|e| (e, "store"))
        .chain(archived.iter().map(|e| (e, "archive")))
    {
        let seq = e["seq"].as_u64().unwrap();
        let entry = places.entry(seq).or_insert((0, String::new()));
        entry.0 += 1;
        entry.1 = format!("{place} {}", e["class"].as_str().unwrap());
    }
    let twice: Vec<_> = places.iter().filter(|(_, (n, _))| *n > 1).collect();
    assert!(
        twice.is_empty(),
        "in two places: {:?}",
        &twice[..twice.len().min(5)]
    );
    let missing: Vec<_> = accepted
        .keys()
        .filter(|s| !places.contains_key(s))
        .collect();
    assert!(
        missing.is_empty(),
        "{} lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );

    // Alerts and submissions are all kept; telemetry and health are all archived by now.
    for (seq, (_, at)) in &places {
        let want = match at.split(' ').nth(1).unwrap() {
            "alert" | "submission" => "store",
            _ => "archive",
        };
        assert!(at.starts_with(want), "seq {seq}: {at}");
    }
    let archived_classes: std::collections::BTreeSet<&str> = archived
        .iter()
        .map(|e| e["class"].as_str().unwrap())
        .collect();
    assert_eq!(
        archived_classes.into_iter().collect::<Vec<_>>(),
        vec!["health", "telemetry"]
    );
    assert!(archived
        .iter()
        .all(|e| e["gateway"] == GW && e["received"].is_string()));
    assert_eq!(CLASSES.len(), 4);

    // Metrics: what was pruned (since the restart), the oldest kept of each class, the store.
    let pruned = metric(
        &metrics,
        "gridedge_central_events_pruned_total{class=\"telemetry\"}",
    );
    assert!(pruned.is_some_and(|n| n > 0.0), "{metrics}");
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    let oldest_alert = metric(
        &metrics,
        "gridedge_central_events_oldest_received_seconds{class=\"alert\"}",
    )
    .unwrap_or_else(|| panic!("{metrics}"));
    assert!(
        now - oldest_alert > 25.0,
        "alerts kept from the start: {oldest_alert}"
    );
    assert!(
        metric(
            &metrics,
            "gridedge_central_events_oldest_received_seconds{class=\"telemetry\"}"
        )
        .is_none(),
        "no telemetry kept once the load stopped: {metrics}"
    );
    assert!(metric(&metrics, "gridedge_central_store_bytes").is_some_and(|b| b > 0.0));
    gw.stop().await.unwrap();
    central.process.kill();
}
