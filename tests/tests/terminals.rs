//! Terminal health end to end: kiosks heartbeating into a real gateway, a video terminal probed
//! over HTTP, and what central learns of them.

use std::time::Duration;

use gridedge_tests::services::{central_events, TestCentral, TestGateway};
use gridedge_tests::terminals::{heartbeat_body, terminal_toml, Kiosk, StatusPage};
use gridedge_tests::{eventually, init_test_logging, try_json};
use serde_json::Value;

/// Central's events about `terminal` of gateway `gw`, as (kind, state).
async fn terminal_events(central: &TestCentral, gw: &str, terminal: &str) -> Vec<(String, String)> {
    central_events(central.http_addr, gw)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["payload"]["terminal"] == terminal)
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or("").to_owned(),
                e["payload"]["state"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

async fn count(central: &TestCentral, gw: &str, terminal: &str, kind: &str) -> usize {
    terminal_events(central, gw, terminal)
        .await
        .iter()
        .filter(|(k, _)| k == kind)
        .count()
}

async fn gateway_state(gw: &TestGateway, id: &str) -> Option<String> {
    let v = try_json(gw.url(&format!("/api/v1/terminals/{id}"))).await?;
    v["state"].as_str().map(str::to_owned)
}

async fn central_state(central: &TestCentral, gw: &str, id: &str) -> Option<String> {
    let v = gridedge_tests::try_json_api(central.url(&format!("/api/v1/terminals?gateway={gw}")))
        .await?;
    v["terminals"]
        .as_array()?
        .iter()
        .find(|t| t["terminal"] == id)
        .and_then(|t| t["state"].as_str().map(str::to_owned))
}

/// Heartbeats every `every` until the task is aborted.
fn keep_beating(kiosk: Kiosk, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let _ = kiosk.beat(&heartbeat_body(true)).await;
            tokio::time::sleep(every).await;
        }
    })
}

#[tokio::test]
async fn a_silent_kiosk_goes_offline_once_comes_back_and_a_flapping_one_raises_one_alert() {
    init_test_logging();
    let central = TestCentral::embedded().await.unwrap();
    let broker = central.broker_url.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let health = "{ mode = \"heartbeat\", interval = \"1s\", misses_before_offline = 2, successes_before_online = 2 }";
    let extra = format!(
        "{}{}\n[terminal_health]\nflap_window = \"20s\"\nflap_changes = 4\n",
        terminal_toml(dir.path(), "kiosk-a", "kiosk", health),
        terminal_toml(dir.path(), "kiosk-b", "kiosk", health),
    );
    let gw = TestGateway::start_with("gw-kiosks", &broker, None, &extra)
        .await
        .unwrap();
    let a = Kiosk::new("kiosk-a", gw.http_addr);
    let b = Kiosk::new("kiosk-b", gw.http_addr);

    // Heard from: online, with no event (the summary tells central).
    let (status, answer) = a.beat(&heartbeat_body(true)).await.unwrap();
    // kiosk-a's last heartbeat: its silence is counted from here.
    let silent = std::time::Instant::now();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["state"], "online");
    assert_eq!(answer["interval_secs"], 1);
    let beating = keep_beating(b.clone(), Duration::from_millis(300));
    eventually(
        "central's summary lists both kiosks online",
        Duration::from_secs(10),
        || async {
            let a = central_state(&central, "gw-kiosks", "kiosk-a").await?;
            let b = central_state(&central, "gw-kiosks", "kiosk-b").await?;
            (a == "online" && b == "online").then_some(())
        },
    )
    .await
    .unwrap();

    // kiosk-a has fallen silent: offline 1.5 + 1 intervals after its last heartbeat, exactly
    // once.
    eventually(
        "kiosk-a offline at central",
        Duration::from_secs(10),
        || async {
            (count(&central, "gw-kiosks", "kiosk-a", "terminal.offline").await == 1).then_some(())
        },
    )
    .await
    .unwrap();
    let took = silent.elapsed();
    assert!(
        took >= Duration::from_millis(2000) && took < Duration::from_secs(8),
        "offline after {took:?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        count(&central, "gw-kiosks", "kiosk-a", "terminal.offline").await,
        1,
        "more misses must not repeat the alert"
    );
    assert_eq!(
        central_state(&central, "gw-kiosks", "kiosk-a")
            .await
            .as_deref(),
        Some("offline")
    );
    let view = try_json(gw.url("/api/v1/terminals/kiosk-a")).await.unwrap();
    assert!(
        view["reasons"][0]
            .as_str()
            .unwrap_or("")
            .contains("no heartbeat"),
        "{view}"
    );

    // It comes back: online after two heartbeats in a row, and central hears it.
    a.beat(&heartbeat_body(true)).await.unwrap();
    assert_eq!(
        gateway_state(&gw, "kiosk-a").await.as_deref(),
        Some("offline")
    );
    a.beat(&heartbeat_body(true)).await.unwrap();
    assert_eq!(
        gateway_state(&gw, "kiosk-a").await.as_deref(),
        Some("online")
    );
    let back = keep_beating(a.clone(), Duration::from_millis(300));
    eventually(
        "kiosk-a online at central",
        Duration::from_secs(10),
        || async {
            let online = count(&central, "gw-kiosks", "kiosk-a", "terminal.online").await == 1;
            let shown = central_state(&central, "gw-kiosks", "kiosk-a").await? == "online";
            (online && shown).then_some(())
        },
    )
    .await
    .unwrap();

    // kiosk-b's printer fails and recovers with every heartbeat: a few changes, then one
    // flapping alert and silence, however long it goes on.
    beating.abort();
    for i in 0..24 {
        b.beat(&heartbeat_body(i % 2 == 1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let b_events = eventually(
        "kiosk-b flapping at central",
        Duration::from_secs(10),
        || async {
            let ev = terminal_events(&central, "gw-kiosks", "kiosk-b").await;
            ev.iter()
                .any(|(k, _)| k == "terminal.flapping")
                .then_some(ev)
        },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = terminal_events(&central, "gw-kiosks", "kiosk-b").await;
    assert_eq!(after, b_events, "nothing more after the flapping alert");
    let flapping = after
        .iter()
        .filter(|(k, _)| k == "terminal.flapping")
        .count();
    assert_eq!(flapping, 1, "{after:?}");
    assert!(after.len() <= 4, "3 changes, then the alert: {after:?}");
    let board = gridedge_tests::try_json_api(central.url("/api/v1/terminals?gateway=gw-kiosks"))
        .await
        .unwrap();
    let b_entry = board["terminals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["terminal"] == "kiosk-b")
        .cloned()
        .unwrap();
    assert_eq!(b_entry["flapping"], true, "{b_entry}");
    back.abort();
    gw.stop().await.unwrap();
    central.stop().await.unwrap();
}

#[tokio::test]
async fn bad_heartbeats_get_clear_4xx_and_change_nothing() {
    init_test_logging();
    let dir = tempfile::tempdir().unwrap();
    let page = StatusPage::start().await.unwrap();
    let extra = format!(
        "{}{}",
        terminal_toml(
            dir.path(),
            "kiosk-a",
            "kiosk",
            "{ mode = \"heartbeat\", interval = \"1h\" }"
        ),
        terminal_toml(
            dir.path(),
            "vt-1",
            "video_terminal",
            &format!(
                "{{ mode = \"http_probe\", url = \"{}\", interval = \"1h\", timeout = \"1s\" }}",
                page.url()
            )
        ),
    );
    let gw = TestGateway::start_with("gw-bad-beats", "mqtt://127.0.0.1:1", None, &extra)
        .await
        .unwrap();
    let a = Kiosk::new("kiosk-a", gw.http_addr);
    let body = |v: &Value| serde_json::to_vec(v).unwrap();
    let cases: Vec<(Option<String>, Vec<u8>, u16, &str)> = vec![
        (None, body(&heartbeat_body(true)), 401, "Authorization"),
        (
            Some("nonsense".into()),
            body(&heartbeat_body(true)),
            401,
            "unknown device token",
        ),
        (
            Some(gridedge_tests::services::source_token("gw-bad-beats")),
            body(&heartbeat_body(true)),
            403,
            "not a terminal",
        ),
        (
            Some(gridedge_tests::terminals::terminal_token("vt-1")),
            body(&heartbeat_body(true)),
            409,
            "probed",
        ),
        (
            Some(gridedge_tests::terminals::terminal_token("kiosk-a")),
            b"{".to_vec(),
            400,
            "EOF",
        ),
        (
            Some(gridedge_tests::terminals::terminal_token("kiosk-a")),
            body(&serde_json::json!({"app_version": "x", "uptime_secs": 1, "temperature_c": 999})),
            400,
            "temperature_c",
        ),
        (
            Some(gridedge_tests::terminals::terminal_token("kiosk-a")),
            body(
                &serde_json::json!({"app_version": "x", "uptime_secs": 1, "peripherals": {"fax": {"ok": true}}}),
            ),
            400,
            "peripherals.fax",
        ),
        (
            Some(gridedge_tests::terminals::terminal_token("kiosk-a")),
            vec![b' '; 64 * 1024],
            413,
            "",
        ),
    ];
    for (token, body, status, says) in cases {
        let (got, answer) = a.post_raw(token.as_deref(), body).await.unwrap();
        assert_eq!(got, status, "{says}: {answer}");
        assert!(
            answer["error"].as_str().unwrap_or("").contains(says),
            "{says}: {answer}"
        );
    }
    assert_eq!(
        gateway_state(&gw, "kiosk-a").await.as_deref(),
        Some("unknown")
    );
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn a_probed_video_terminal_goes_down_and_up_and_central_sees_both() {
    init_test_logging();
    let central = TestCentral::embedded().await.unwrap();
    let broker = central.broker_url.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let page = StatusPage::start().await.unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let screen_addr = listener.local_addr().unwrap();
    let extra = format!(
        "{}{}",
        terminal_toml(
            dir.path(),
            "vt-reception",
            "video_terminal",
            &format!(
                "{{ mode = \"http_probe\", url = \"{}\", interval = \"1s\", timeout = \"500ms\", misses_before_offline = 2, successes_before_online = 2 }}",
                page.url()
            )
        ),
        terminal_toml(
            dir.path(),
            "hall-screen",
            "screen",
            &format!(
                "{{ mode = \"tcp_probe\", address = \"{screen_addr}\", interval = \"1s\", timeout = \"500ms\", misses_before_offline = 2, successes_before_online = 1 }}"
            )
        ),
    );
    let gw = TestGateway::start_with("gw-probes", &broker, None, &extra)
        .await
        .unwrap();
    for id in ["vt-reception", "hall-screen"] {
        eventually(&format!("{id} online"), Duration::from_secs(10), || async {
            (gateway_state(&gw, id).await? == "online").then_some(())
        })
        .await
        .unwrap();
    }

    page.set_up(false);
    drop(listener);
    for id in ["vt-reception", "hall-screen"] {
        eventually(
            &format!("{id} offline at central"),
            Duration::from_secs(10),
            || async {
                (count(&central, "gw-probes", id, "terminal.offline").await == 1).then_some(())
            },
        )
        .await
        .unwrap();
    }
    let vt = try_json(gw.url("/api/v1/terminals/vt-reception"))
        .await
        .unwrap();
    assert!(
        vt["reasons"][0]
            .as_str()
            .unwrap_or("")
            .contains("status 503, expected 200"),
        "{vt}"
    );
    let screen = try_json(gw.url("/api/v1/terminals/hall-screen"))
        .await
        .unwrap();
    assert!(
        screen["reasons"][0]
            .as_str()
            .unwrap_or("")
            .contains("connect"),
        "{screen}"
    );

    page.set_up(true);
    let _listener = std::net::TcpListener::bind(screen_addr).unwrap();
    for id in ["vt-reception", "hall-screen"] {
        eventually(
            &format!("{id} online at central"),
            Duration::from_secs(10),
            || async {
                let back = count(&central, "gw-probes", id, "terminal.online").await == 1;
                let shown = central_state(&central, "gw-probes", id).await? == "online";
                (back && shown).then_some(())
            },
        )
        .await
        .unwrap();
    }
    assert_eq!(
        count(&central, "gw-probes", "vt-reception", "terminal.offline").await,
        1
    );
    gw.stop().await.unwrap();
    central.stop().await.unwrap();
}
