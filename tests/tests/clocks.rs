//! Wrong clocks, for real: the gateway's binary runs under libfaketime (its wall clock set from
//! a file the test rewrites; its monotonic clock left alone), central in the test's process on
//! the true time. A gateway hours off is still heard (its health reports are judged on its own
//! clock), its offset shows in the health view and is an alert while it lasts; its events keep
//! the gateway's time beside central's receipt, an absurd one flagged, never dropped; steps
//! forwards and backwards break no timer, and every event arrives once.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use gridedge_tests::backbone::{assert_central_has, Accepted};
use gridedge_tests::services::{
    central_events, gateway_toml, source_token, Console, ServiceProcess, TestCentral,
};
use gridedge_tests::{eventually, free_port, init_test_logging};
use serde_json::{json, Value};

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
const GW: &str = "gw-clock";

/// Sets the gateway's wall clock `offset` from the true time (libfaketime's `-3h`, `+0`).
fn set_clock(file: &Path, offset: &str) {
    std::fs::write(file, format!("{offset}\n")).unwrap();
}

async fn gateway_view(central: &TestCentral) -> Option<Value> {
    central
        .gateways()
        .await
        .ok()?
        .into_iter()
        .find(|g| g["id"] == GW)
}

/// Waits until central sees the gateway's clock `hours` off (within 10 s).
async fn offset_near(central: &TestCentral, hours: i64, within: Duration) -> Value {
    let want = hours * 3_600_000;
    eventually(&format!("a clock offset of {hours} h"), within, || async {
        let g = gateway_view(central).await?;
        let off = g["clock_offset_ms"].as_i64()?;
        ((off - want).abs() < 10_000).then_some(g)
    })
    .await
    .unwrap()
}

async fn alert(console: &Console) -> Option<Value> {
    console.alert(&format!("{GW}#gateway.clock_offset")).await
}

/// Posts ten telemetry events (numbered from `n`, with `time_ms` when given).
async fn post(addr: SocketAddr, n: u64, time_ms: Option<i64>, accepted: &mut Accepted) {
    let events: Vec<Value> = (0..10)
        .map(|i| {
            let mut e =
                json!({ "class": "telemetry", "kind": "hall.air", "payload": { "n": n + i } });
            if let Some(t) = time_ms {
                e["time_ms"] = json!(t);
            }
            e
        })
        .collect();
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/events"))
        .bearer_auth(source_token(GW))
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    for (i, seq) in body["seqs"].as_array().unwrap().iter().enumerate() {
        accepted.insert(seq.as_u64().unwrap(), n + i as u64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_hours_off_is_heard_shown_and_alerted_and_steps_lose_nothing() {
    init_test_logging();
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} missing: run deploy/bootstrap.sh"
    );
    let central = TestCentral::embedded().await.unwrap();
    let console = Console::login(&central.url(""), "op").await.unwrap();
    let fixture = tempfile::tempdir().unwrap();
    let clock = fixture.path().join("gateway-clock");
    set_clock(&clock, "-3h");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // It takes config bundles from central.
    let text = gateway_toml(
        fixture.path(),
        GW,
        central.broker_url.as_deref().unwrap(),
        None,
        port,
    ) + "\n[bundles]\nconfirm_within = \"5m\"\n";
    let clock_file = clock.display().to_string();
    let mut gw = ServiceProcess::spawn_with_env(
        "gateway",
        &text,
        &[
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME_TIMESTAMP_FILE", &clock_file),
            ("FAKETIME_CACHE_DURATION", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    )
    .unwrap();

    // Three hours slow: heard all the same, its health shown, its offset shown and an alert.
    let view = offset_near(&central, -3, Duration::from_secs(30)).await;
    eventually(
        "the gateway's health at central",
        Duration::from_secs(20),
        || async {
            let g = gateway_view(&central).await?;
            (!g["health"].is_null()).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {view}\n{}", gw.process.log_text()));
    let raised = eventually("the clock alert", Duration::from_secs(20), || async {
        alert(&console).await
    })
    .await
    .unwrap();
    assert!(
        raised["title"].as_str().unwrap().contains("慢 108"),
        "{raised}"
    );
    let (_, health) = console.get("/api/v1/health").await;
    assert!(
        health.to_string().contains("\"clock_offset_ms\":-10"),
        "{health}"
    );

    // A config bundle central issues now is three hours in this gateway's future: judged on
    // central's clock (as its signed messages show it), it is taken all the same.
    let bundle = gridedge_tests::services::api_client()
        .post(central.url("/api/v1/bundles"))
        .json(&json!({ "gateway": GW, "toml": format!("{text}\n# from central\n"), "version": 1 }))
        .send()
        .await
        .unwrap();
    let status = bundle.status().as_u16();
    let answer: Value = bundle.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "{answer}\n{}", gw.process.log_text());

    // Its events carry its time beside central's receipt; one from a box that booted in 1975
    // is kept and flagged.
    let mut accepted = Accepted::new();
    post(addr, 0, None, &mut accepted).await;
    post(addr, 100, Some(157_766_400_000), &mut accepted).await;
    assert_central_has(central.http_addr, GW, &accepted, Duration::from_secs(30))
        .await
        .unwrap();
    let events = central_events(central.http_addr, GW).await.unwrap();
    let of = |n: u64| {
        events
            .iter()
            .find(|e| e["payload"]["n"] == n)
            .cloned()
            .unwrap()
    };
    let slow = of(0);
    let (time, received) = (
        time::OffsetDateTime::parse(
            slow["time"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap(),
        time::OffsetDateTime::parse(
            slow["received"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap(),
    );
    let behind = received - time;
    assert!(
        (behind.whole_seconds() - 3 * 3600).abs() < 60,
        "{slow}: {behind}"
    );
    assert!(slow.get("time_suspect").is_none(), "{slow}");
    assert_eq!(of(100)["time_suspect"], true, "{}", of(100));

    // NTP steps it right: the offset and the alert follow, events flow.
    set_clock(&clock, "+0");
    offset_near(&central, 0, Duration::from_secs(30)).await;
    eventually(
        "the clock alert to clear",
        Duration::from_secs(30),
        || async { (alert(&console).await?["cleared"] == true).then_some(()) },
    )
    .await
    .unwrap();
    post(addr, 200, None, &mut accepted).await;

    // Stepped back two hours under way: no timer of the gateway stalls (hold-downs, health,
    // acknowledgements run on the monotonic clock); within a minute the offset shows it.
    set_clock(&clock, "-2h");
    for round in 0..20u64 {
        post(addr, 1_000 + round * 10, None, &mut accepted).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    offset_near(&central, -2, Duration::from_secs(90)).await;
    // Its health reports, judged on its clock as it is now, are heard again.
    let stale = || async {
        let m = central.metrics().await;
        m.lines()
            .find(|l| l.contains("reason=\"stale_health\""))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = stale().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(stale().await, before, "health still refused after the step");
    assert_central_has(central.http_addr, GW, &accepted, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", gw.process.log_text()));
    eventually("the gateway to drain", Duration::from_secs(30), || async {
        let h = gridedge_tests::try_json(format!("http://{addr}/healthz")).await?;
        (h["outbox"]["pending"] == 0).then_some(())
    })
    .await
    .unwrap();
    assert!(gw.process.is_running());
    gw.kill();
    central.stop().await.unwrap();
}
