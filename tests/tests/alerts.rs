//! Sensing alerts at central from real devices: a camera that stops is one alert (after its
//! hold-down), acknowledged by an operator, cleared when the camera is back, resolved with a
//! note, every step in its audit trail; a gateway that goes away is a critical alert; bad
//! operator input gets a clear 4xx.

use std::time::Duration;

use gridedge_tests::services::{TestCentral, TestGateway};
use gridedge_tests::{
    camera_toml, eventually, init_test_logging, try_json, CameraOptions, Pattern, TestCamera,
};
use serde_json::{json, Value};

async fn alert_with_key(central: &TestCentral, key: &str) -> Option<Value> {
    let v = try_json(central.url("/api/v1/alerts?all=true")).await?;
    v["alerts"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .cloned()
}

async fn post(central: &TestCentral, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(central.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_camera_is_one_alert_acknowledged_cleared_and_resolved_with_its_trail() {
    init_test_logging();
    let central = TestCentral::embedded().await.unwrap();
    let mut cam = TestCamera::start(CameraOptions::small(Pattern::Moving)).unwrap();
    let gw = TestGateway::start_with(
        "gw-alerts",
        central.broker_url.as_deref().unwrap(),
        None,
        &camera_toml("door", cam.url().as_str(), ""),
    )
    .await
    .unwrap();
    eventually("the camera streaming", Duration::from_secs(20), || async {
        let c = try_json(gw.url("/api/v1/cameras/door")).await?;
        (c["state"] == "streaming").then_some(())
    })
    .await
    .unwrap();

    // A console's live feed, open before anything happens.
    let feed = reqwest::get(central.url("/api/v1/alerts/stream"))
        .await
        .unwrap();
    assert_eq!(feed.headers()["content-type"], "text/event-stream");
    let (tx, mut pushed) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let mut feed = feed;
    tokio::spawn(async move {
        let mut text = String::new();
        while let Ok(Some(chunk)) = feed.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = text.find("\n\n") {
                let event: String = text.drain(..end + 2).collect();
                if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                    if let Ok(v) = serde_json::from_str(data) {
                        let _ = tx.send(v);
                    }
                }
            }
        }
    });

    let key = "gw-alerts/camera/door#camera.offline";
    cam.stop();
    let t0 = std::time::Instant::now();
    let a = eventually("the camera's alert", Duration::from_secs(40), || {
        alert_with_key(&central, key)
    })
    .await
    .unwrap();
    // Stalled, then offline: one alert (one rule), opened after its 10 s hold-down.
    assert!(
        t0.elapsed() >= Duration::from_secs(10),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(a["severity"], "major");
    assert_eq!(
        (a["acknowledged"].clone(), a["cleared"].clone()),
        (json!(false), json!(false))
    );
    let id = a["id"].as_u64().unwrap();
    // The feed pushed its opening.
    let opened = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let v = pushed.recv().await.unwrap();
            if v["change"]["change"] == "opened" && v["alert"]["key"] == key {
                return v;
            }
        }
    })
    .await
    .expect("the live feed pushes the new alert");
    assert_eq!(opened["alert"]["id"], id);
    let all = try_json(central.url("/api/v1/alerts")).await.unwrap();
    assert_eq!(
        all["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["key"] == key)
            .count(),
        1
    );

    let (status, acked) = post(
        &central,
        &format!("/api/v1/alerts/{id}/ack"),
        json!({"by": "op-wang"}),
    )
    .await;
    assert_eq!(status, 200, "{acked}");
    assert_eq!(acked["acknowledged"], true);
    let (status, _) = post(
        &central,
        &format!("/api/v1/alerts/{id}/assign"),
        json!({"by": "op-wang", "to": "李网格员"}),
    )
    .await;
    assert_eq!(status, 200);

    cam.restart().unwrap();
    let cleared = eventually("the alert cleared", Duration::from_secs(40), || async {
        let a = alert_with_key(&central, key).await?;
        (a["cleared"] == true).then_some(a)
    })
    .await
    .unwrap();
    assert_eq!(cleared["acknowledged"], true, "independent flags");
    assert_eq!(cleared["assignee"], "李网格员");

    let (status, done) = post(
        &central,
        &format!("/api/v1/alerts/{id}/resolve"),
        json!({"by": "op-wang", "note": "摄像头供电恢复"}),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    let trail: Vec<(String, String)> = done["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["by"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let actions: Vec<&str> = trail.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        [
            "opened",
            "acknowledged",
            "assigned to 李网格员",
            "cleared",
            "resolved"
        ],
        "{trail:?}"
    );
    assert_eq!(trail[1].1, "op-wang");
    // Resolved: no longer in the queue, and no more actions.
    let open = try_json(central.url("/api/v1/alerts")).await.unwrap();
    assert!(open["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["id"] != id));
    let (status, _) = post(
        &central,
        &format!("/api/v1/alerts/{id}/ack"),
        json!({"by": "op"}),
    )
    .await;
    assert_eq!(status, 409);

    // The gateway goes away: one critical alert for it.
    gw.stop().await.unwrap();
    let g = eventually("the gateway's alert", Duration::from_secs(10), || {
        alert_with_key(&central, "gw-alerts#gateway.offline")
    })
    .await
    .unwrap();
    assert_eq!(g["severity"], "critical");

    // The health view: the gateway offline, its camera unknown (not offline), last known
    // streaming; the camera's history has its changes.
    let health = try_json(central.url("/api/v1/health")).await.unwrap();
    let centre = health["centres"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["gateway"] == "gw-alerts")
        .unwrap()
        .clone();
    assert_eq!(centre["presence"], "offline", "{centre}");
    assert_eq!(centre["cameras"][0]["id"], "door");
    assert_eq!(centre["cameras"][0]["state"], "unknown", "{centre}");
    assert_eq!(centre["cameras"][0]["last_known"], "streaming", "{centre}");
    assert_eq!(health["street"]["cameras"]["unknown"], 1, "{health}");
    assert!(
        health["street"]["cameras"].get("offline").is_none(),
        "{health}"
    );
    let history = try_json(central.url("/api/v1/health/gw-alerts/camera/door/history"))
        .await
        .unwrap();
    let states: Vec<&str> = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.first(), Some(&"streaming"), "{history}");
    assert!(states.contains(&"offline"), "{history}");
    assert_eq!(states.last(), Some(&"streaming"), "{history}");
    central.stop().await.unwrap();
}

#[tokio::test]
async fn operators_get_clear_errors_and_maintenance_and_roster_are_kept() {
    init_test_logging();
    let central = TestCentral::embedded().await.unwrap();
    let bad = [
        ("/api/v1/alerts/99/ack", json!({"by": "op"}), 404),
        ("/api/v1/alerts/99/ack", json!({}), 400),
        ("/api/v1/alerts/99/explode", json!({"by": "op"}), 400),
        (
            "/api/v1/alerts/maintenance",
            json!({"scope": "gw-1", "from": "2026-11-26T10:00:00Z", "until": "2026-11-26T09:00:00Z", "by": "op"}),
            400,
        ),
        (
            "/api/v1/alerts/maintenance",
            json!({"scope": "gw-1", "from": "yesterday", "until": "2026-11-26T09:00:00Z", "by": "op"}),
            400,
        ),
    ];
    for (path, body, want) in bad {
        let (status, v) = post(&central, path, body.clone()).await;
        assert_eq!(status, want, "{path} {body}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    let (status, m) = post(
        &central,
        "/api/v1/alerts/maintenance",
        json!({"scope": "gw-1", "from": "2026-11-26T08:00:00Z", "until": "2099-01-01T00:00:00Z", "reason": "机房改造", "by": "admin"}),
    )
    .await;
    assert_eq!(status, 201, "{m}");
    let r = reqwest::Client::new()
        .put(central.url("/api/v1/alerts/roster"))
        .json(&json!([{"scope": "command", "name": "", "phone": "1", "from_minute": 0, "until_minute": 0}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = reqwest::Client::new()
        .put(central.url("/api/v1/alerts/roster"))
        .json(&json!([{"scope": "command", "name": "值班长", "phone": "010-12345678", "from_minute": 0, "until_minute": 0}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let w = try_json(central.url("/api/v1/alerts/maintenance"))
        .await
        .unwrap();
    assert_eq!(w["maintenance"][0]["reason"], "机房改造");
    let roster = try_json(central.url("/api/v1/alerts/roster"))
        .await
        .unwrap();
    assert_eq!(roster["roster"][0]["name"], "值班长");
    central.stop().await.unwrap();
}
