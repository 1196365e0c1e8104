//! Sensing alerts at central from real devices: a camera that stops is one alert (after its
//! hold-down), acknowledged by an operator, cleared when the camera is back, resolved with a
//! note, every step in its audit trail; a gateway that goes away is a critical alert; bad
//! operator input gets a clear 4xx. The camera's alert and the late report also with central's
//! state in PostgreSQL.

use std::time::Duration;

use gridedge_tests::postgres::Postgres;
use gridedge_tests::services::{TestCentral, TestGateway};
use gridedge_tests::{
    camera_toml, eventually, init_test_logging, CameraOptions, Pattern, TestCamera,
};
use serde_json::{json, Value};

/// Central on sled, or on PostgreSQL when `pg` is given, with `extra` config lines.
async fn central(pg: Option<&Postgres>, extra: &str) -> TestCentral {
    match pg {
        None => TestCentral::embedded_with(extra).await.unwrap(),
        Some(pg) => TestCentral::embedded_on_postgres(&pg.url(), extra)
            .await
            .unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_camera_is_one_alert_acknowledged_cleared_and_resolved_with_its_trail() {
    stopped_camera_alert(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_stopped_camera_is_one_alert_acknowledged_cleared_and_resolved_with_its_trail(
) {
    let pg = Postgres::start().unwrap();
    stopped_camera_alert(Some(&pg)).await;
    assert_ne!(
        pg.psql("SELECT count(*) FROM state WHERE tbl = 'alerts'")
            .unwrap(),
        "0"
    );
}

async fn stopped_camera_alert(pg: Option<&Postgres>) {
    init_test_logging();
    let central = central(pg, "").await;
    let op = central.console("op").await.unwrap();
    let mut cam = TestCamera::start(CameraOptions::small(Pattern::Moving)).unwrap();
    let gw = TestGateway::start_with(
        "gw-alerts",
        central.broker_url.as_deref().unwrap(),
        None,
        &camera_toml("door", cam.url().as_str(), ""),
    )
    .await
    .unwrap();
    gw.camera_in("door", "streaming").await.unwrap();

    // A console's live feed, open before anything happens.
    let mut pushed = op.alert_feed().await;

    let key = "gw-alerts/camera/door#camera.offline";
    cam.stop();
    let t0 = std::time::Instant::now();
    let a = eventually("the camera's alert", Duration::from_secs(40), || {
        op.alert(key)
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
    let (_, all) = op.get("/api/v1/alerts").await;
    assert_eq!(
        all["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["key"] == key)
            .count(),
        1
    );

    let (status, acked) = op
        .post(&format!("/api/v1/alerts/{id}/ack"), json!({}))
        .await;
    assert_eq!(status, 200, "{acked}");
    assert_eq!(acked["acknowledged"], true);
    let (status, _) = op
        .post(
            &format!("/api/v1/alerts/{id}/assign"),
            json!({"to": "李网格员"}),
        )
        .await;
    assert_eq!(status, 200);

    cam.restart().unwrap();
    let cleared = eventually("the alert cleared", Duration::from_secs(40), || async {
        let a = op.alert(key).await?;
        (a["cleared"] == true).then_some(a)
    })
    .await
    .unwrap();
    assert_eq!(cleared["acknowledged"], true, "independent flags");
    assert_eq!(cleared["assignee"], "李网格员");

    let (status, done) = op
        .post(
            &format!("/api/v1/alerts/{id}/resolve"),
            json!({"note": "摄像头供电恢复"}),
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
    assert_eq!(trail[1].1, "op", "the signed-in operator");
    // Resolved: no longer in the queue, and no more actions.
    let (_, open) = op.get("/api/v1/alerts").await;
    assert!(open["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["id"] != id));
    let (status, _) = op
        .post(&format!("/api/v1/alerts/{id}/ack"), json!({}))
        .await;
    assert_eq!(status, 409);

    // The gateway goes away: one critical alert for it.
    gw.stop().await.unwrap();
    let g = eventually("the gateway's alert", Duration::from_secs(10), || {
        op.alert("gw-alerts#gateway.offline")
    })
    .await
    .unwrap();
    assert_eq!(g["severity"], "critical");

    // The health view: the gateway offline, its camera unknown (not offline), last known
    // streaming; the camera's history has its changes.
    let (_, health) = op.get("/api/v1/health").await;
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
    let (_, history) = op.get("/api/v1/health/gw-alerts/camera/door/history").await;
    let states: Vec<&str> = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.first(), Some(&"streaming"), "{history}");
    assert!(states.contains(&"offline"), "{history}");
    assert_eq!(states.last(), Some(&"streaming"), "{history}");

    // The day's assessment of the centre: the camera's alert acknowledged and resolved in
    // time, the gateway's outage as evidence.
    let (_, a) = op.get("/api/v1/assessment?days=1").await;
    let score = a["centres"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["gateway"] == "gw-alerts")
        .unwrap()
        .clone();
    assert!(score["alerts"].as_u64().unwrap() >= 2, "{score}");
    assert!(score["acked_in_time"].as_u64().unwrap() >= 1, "{score}");
    assert_eq!(score["evidence"]["outages"], json!([g["id"]]), "{score}");
    // The camera's offline spell counts against its devices' uptime.
    assert!(
        !score["evidence"]["device_outages"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{score}"
    );
    assert!(
        score["device_uptime_pct"].as_f64().unwrap() < 100.0,
        "{score}"
    );
    assert!(a["stations"].is_array(), "{a}");
    assert!(score["points"].as_f64().unwrap() > 50.0, "{score}");
    assert_eq!(op.get("/api/v1/assessment?days=0").await.0, 400);
    central.stop().await.unwrap();
}

#[tokio::test]
async fn operators_log_in_with_roles_and_csrf_and_get_clear_errors() {
    init_test_logging();
    let central = TestCentral::embedded().await.unwrap();
    let anon = reqwest::Client::new();
    // Not logged in: refused, and a wrong password too.
    for path in [
        "/api/v1/alerts",
        "/api/v1/health",
        "/api/v1/meetings",
        "/api/v1/session",
        "/api/v1/gateways",
        "/api/v1/events?gateway=gw-1",
        "/api/v1/cases",
        "/api/v1/shares",
        "/api/v1/masterdata",
        "/api/v1/bundles",
        "/api/v1/gateways/gw-1/cameras/hall/snapshot.jpg",
    ] {
        let r = anon.get(central.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
    }
    // Nor may anyone share a camera, or a wrong API token.
    let r = anon
        .post(central.url("/api/v1/shares"))
        .json(&json!({"gateway": "gw-1", "camera": "hall", "viewers": ["x"], "minutes": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = anon
        .get(central.url("/api/v1/gateways"))
        .bearer_auth("ge_not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = gridedge_tests::services::api_client()
        .get(central.url("/api/v1/gateways"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "the administrator's API token");
    let r = anon
        .post(central.url("/api/v1/session"))
        .json(&json!({"name": "op", "password": "guess-guess"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let op = central.console("op").await.unwrap();
    let (status, me) = op.get("/api/v1/session").await;
    assert_eq!((status, me["role"].clone()), (200, json!("operator")));
    // A change without the CSRF token is refused, even with the session cookie.
    let no_csrf = anon
        .post(central.url("/api/v1/alerts/maintenance"))
        .header(
            reqwest::header::COOKIE,
            op.request(reqwest::Method::GET, "/").build().unwrap().headers()[reqwest::header::COOKIE].clone(),
        )
        .json(&json!({"scope": "gw-1", "from": "2026-11-26T08:00:00Z", "until": "2099-01-01T00:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_csrf.status().as_u16(), 403);
    let v: Value = no_csrf.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("CSRF"), "{v}");
    // An operator may not set maintenance windows, the roster or meetings: a supervisor may.
    let window = json!({"scope": "gw-1", "from": "2026-11-26T08:00:00Z", "until": "2099-01-01T00:00:00Z", "reason": "机房改造"});
    let (status, v) = op.post("/api/v1/alerts/maintenance", window.clone()).await;
    assert_eq!(status, 403, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("needs supervisor"),
        "{v}"
    );
    let sup = central.console("super").await.unwrap();
    let bad = [
        ("/api/v1/alerts/99/ack", json!({}), 404),
        ("/api/v1/alerts/99/ack", json!({"by": "someone else"}), 400),
        ("/api/v1/alerts/99/explode", json!({}), 400),
        (
            "/api/v1/alerts/maintenance",
            json!({"scope": "gw-1", "from": "2026-11-26T10:00:00Z", "until": "2026-11-26T09:00:00Z"}),
            400,
        ),
        (
            "/api/v1/alerts/maintenance",
            json!({"scope": "gw-1", "from": "yesterday", "until": "2026-11-26T09:00:00Z"}),
            400,
        ),
    ];
    for (path, body, want) in bad {
        let (status, v) = sup.post(path, body.clone()).await;
        assert_eq!(status, want, "{path} {body}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    let (status, m) = sup.post("/api/v1/alerts/maintenance", window).await;
    assert_eq!(status, 201, "{m}");
    assert_eq!(m["by"], "super");
    let (status, _) = sup
        .put(
            "/api/v1/alerts/roster",
            json!([{"scope": "command", "name": "", "phone": "1", "from_minute": 0, "until_minute": 0}]),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = sup
        .put(
            "/api/v1/alerts/roster",
            json!([{"scope": "command", "name": "值班长", "phone": "010-12345678", "from_minute": 0, "until_minute": 0}]),
        )
        .await;
    assert_eq!(status, 200);
    let (_, w) = op.get("/api/v1/alerts/maintenance").await;
    assert_eq!(w["maintenance"][0]["reason"], "机房改造");
    let (_, roster) = op.get("/api/v1/alerts/roster").await;
    assert_eq!(roster["roster"][0]["name"], "值班长");
    // Every action is audited; the trail is for administrators.
    let (status, _) = sup.get("/api/v1/operators/audit").await;
    assert_eq!(status, 403);
    let admin = central.console("admin").await.unwrap();
    let (_, audit) = admin.get("/api/v1/operators/audit").await;
    let actions: Vec<(String, String)> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["who"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for want in [
        ("super", "roster.set"),
        ("super", "maintenance.add"),
        ("op", "login"),
        ("op", "login refused"),
    ] {
        assert!(
            actions.iter().any(|(w, a)| w == want.0 && a == want.1),
            "{want:?} in {actions:?}"
        );
    }
    // Logged out: the cookie no longer works.
    let (status, _) = op
        .send(op.request(reqwest::Method::DELETE, "/api/v1/session"))
        .await;
    assert_eq!(status, 204);
    let (status, _) = op.get("/api/v1/alerts").await;
    assert_eq!(status, 401);
    central.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_not_handled_in_time_is_an_alert_until_it_is_resolved() {
    late_report_alert(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_report_not_handled_in_time_is_an_alert_until_it_is_resolved() {
    let pg = Postgres::start().unwrap();
    late_report_alert(Some(&pg)).await;
    assert_ne!(
        pg.psql("SELECT count(*) FROM state WHERE tbl = 'cases'")
            .unwrap(),
        "0"
    );
}

async fn late_report_alert(pg: Option<&Postgres>) {
    init_test_logging();
    let central = central(pg, "[alerts]\ncase_limit = \"2s\"\n").await;
    let op = central.console("op").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gw = gridedge_tests::terminals::gateway_with_kiosk(
        "gw-late",
        central.broker_url.as_deref().unwrap(),
        dir.path(),
    )
    .await
    .unwrap();
    let receipt = gridedge_tests::terminals::submit(
        &gw,
        &json!({"category": "dispute", "title": "邻里噪音纠纷", "contact": {"name": "赵", "phone": "13800138000"}}),
    )
    .await
    .unwrap();
    let key = format!("gw-late/case/{receipt}#case.overdue");
    let a = eventually("the overdue case's alert", Duration::from_secs(30), || {
        op.alert(&key)
    })
    .await
    .unwrap();
    assert_eq!(a["count"], 1, "raised once, not on every check: {a}");
    // Resolved at central: the alert clears.
    let (status, _) = central
        .post_masterdata(&gridedge_tests::workspace_root().join("deploy/sample-data"))
        .await
        .unwrap();
    assert_eq!(status, 201);
    let boss = central.console("super").await.unwrap();
    let (status, answer) = boss
        .post(
            &format!("/api/v1/cases/{receipt}/actions"),
            json!({"action": "assign", "station": "11019900100001002", "person": "网格员"}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    // The case is 东风巷's (station-2) now: its alert is theirs, and no other station's.
    let id = a["id"].as_u64().unwrap();
    let own = central.console("station-2").await.unwrap();
    let other = central.console("station-3").await.unwrap();
    let (mut own_feed, mut other_feed) = (own.alert_feed().await, other.alert_feed().await);
    assert_eq!(own.alert(&key).await.unwrap()["id"], id);
    let (status, v) = other.get("/api/v1/alerts?all=true").await;
    assert_eq!(status, 200);
    assert!(
        !v["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == id),
        "another station lists the case's alert: {v}"
    );
    assert_eq!(v["counts"]["open"], 0, "{v}");
    let (status, _) = other.get(&format!("/api/v1/alerts/{id}")).await;
    assert_eq!(status, 404);
    for action in ["ack", "note", "assign", "resolve"] {
        let (status, answer) = other
            .post(
                &format!("/api/v1/alerts/{id}/{action}"),
                json!({"to": "x", "note": "x"}),
            )
            .await;
        assert_eq!(status, 404, "{action} by another station: {answer}");
    }
    // A note by the street reaches the station's feed, not the other's.
    let (status, _) = boss
        .post(
            &format!("/api/v1/alerts/{id}/note"),
            json!({"note": "请尽快办理"}),
        )
        .await;
    assert_eq!(status, 200);
    let pushed = tokio::time::timeout(Duration::from_secs(5), own_feed.recv())
        .await
        .expect("the station's feed pushes the note")
        .unwrap();
    assert_eq!(pushed["alert"]["id"], id, "{pushed}");
    assert!(
        tokio::time::timeout(Duration::from_secs(1), other_feed.recv())
            .await
            .is_err(),
        "another station's feed pushed the case's alert"
    );
    // A cut queue keeps whole counts, and says what it takes.
    let (status, v) = boss.get("/api/v1/alerts?limit=1&sort=pressing").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["alerts"].as_array().unwrap().len(), 1, "{v}");
    assert!(v["counts"]["open"].as_u64().unwrap() >= 1, "{v}");
    for bad in [
        "limit=0",
        "limit=1001",
        "sort=oldest",
        "limit=x",
        "colour=red",
    ] {
        let (status, v) = boss.get(&format!("/api/v1/alerts?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {v}");
    }
    for step in [
        json!({"action": "accept"}),
        json!({"action": "refer", "to": "人民调解委员会", "note": "转人民调解"}),
        json!({"action": "resolve", "note": "已调解", "by": "网格员"}),
    ] {
        let (status, answer) = op
            .post(&format!("/api/v1/cases/{receipt}/actions"), step.clone())
            .await;
        assert_eq!(status, 200, "{step}: {answer}");
    }
    let (_, case) = op.get(&format!("/api/v1/cases/{receipt}")).await;
    assert_eq!(
        case["history"].as_array().unwrap().last().unwrap()["by"],
        "op for 网格员",
        "the signed-in operator is the author: {case}"
    );
    let cleared = eventually("the alert cleared", Duration::from_secs(30), || async {
        let a = op.alert(&key).await?;
        (a["cleared"] == true).then_some(a)
    })
    .await
    .unwrap();
    assert_eq!(cleared["count"], 1, "{cleared}");
    gw.stop().await.unwrap();
    central.stop().await.unwrap();
}
