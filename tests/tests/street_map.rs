//! The street's map (一张图) in a real browser (headless Chromium): drawn from the master data's
//! grids with no tile server, a camera standing where `places.geojson` puts it, a click drilling
//! down from the street to an area to a base grid; a camera that stops shows its alert on the
//! map within 1 s of central having it (pushed, not polled); open cases are counted on their
//! grid for those who reach it only; and the kiosk's "my grid" draws the resident's grid with
//! the same drawing, from the gateway's replica.

use std::time::{Duration, Instant};

use gridedge_tests::browser::ConsoleDriver;
use gridedge_tests::services::{operator_password, viewer_token, SigningCentral, TestGateway};
use gridedge_tests::terminals::{submit, terminal_toml};
use gridedge_tests::{
    camera_toml, eventually, init_test_logging, workspace_root, CameraOptions, Pattern, TestCamera,
};
use serde_json::{json, Value};

/// The sample street (14 grids), with the test gateway's camera placed in 光明社区第2网格.
const DOOR_AT: [f64; 2] = [120.1555, 30.2745];

fn sample_with_the_door_placed() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let from = workspace_root().join("deploy/sample-data");
    for entry in walk(&from) {
        let to = dir.path().join(entry.strip_prefix(&from).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &to).unwrap();
    }
    let places = dir.path().join("places.geojson");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&places).unwrap()).unwrap();
    v["features"].as_array_mut().unwrap().push(json!({
        "type": "Feature",
        "properties": {"gateway": "gw-map", "device": "camera/door", "name": "东门"},
        "geometry": {"type": "Point", "coordinates": DOOR_AT},
    }));
    std::fs::write(&places, serde_json::to_vec(&v).unwrap()).unwrap();
    dir
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_map_draws_the_street_drills_down_and_shows_a_new_alert_at_its_camera_within_a_second()
{
    init_test_logging();
    let SigningCentral {
        central,
        trust,
        keys: _keys,
    } = SigningCentral::embedded().await.unwrap();
    let data = sample_with_the_door_placed();
    let (status, v) = central.post_masterdata(data.path()).await.unwrap();
    assert_eq!(status, 201, "{v}");
    let mut cam = TestCamera::start(CameraOptions::small(Pattern::Moving)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let extra = trust.clone()
        + &camera_toml("door", cam.url().as_str(), "")
        + &terminal_toml(
            dir.path(),
            "kiosk-a",
            "kiosk",
            "{ mode = \"heartbeat\", interval = \"1h\" }",
        );
    let gw = TestGateway::start_with(
        "gw-map",
        central.broker_url.as_deref().unwrap(),
        None,
        &extra,
    )
    .await
    .unwrap();
    gw.replica_at(1).await.unwrap();
    gw.camera_in("door", "streaming").await.unwrap();
    // A resident's report in 东风巷 (station 002).
    let receipt = submit(
        &gw,
        &json!({"category": "report", "grid": "11019900100001002", "title": "路灯不亮",
                "contact": {"name": "赵", "phone": "13900001111"}}),
    )
    .await
    .unwrap();

    // Through the API: the camera where the data put it; cases counted for who reaches them.
    let street = central.console("super").await.unwrap();
    let map: Value = eventually("the case on the map", Duration::from_secs(20), || async {
        let (_, v) = street.get("/api/v1/map").await;
        (v["cases"].as_array()?.len() == 1).then_some(v)
    })
    .await
    .unwrap();
    assert_eq!(map["grids"].as_array().unwrap().len(), 14);
    assert_eq!(
        map["cases"],
        json!([{"grid": "11019900100001002", "open": 1, "overdue": 0}])
    );
    let centre = map["centres"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["gateway"] == "gw-map")
        .unwrap();
    let door = &centre["devices"][0];
    assert_eq!(
        (
            door["key"].clone(),
            door["at"].clone(),
            door["placed"].clone()
        ),
        (json!("gw-map/camera/door"), json!(DOOR_AT), json!(true))
    );
    assert_eq!(centre["placed"], false, "the centre itself has no place");
    let other = central.console("station-3").await.unwrap();
    let (_, theirs) = other.get("/api/v1/map").await;
    let codes: Vec<&str> = theirs["grids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["11019900100001003"], "their grid only");
    assert_eq!(
        theirs["cases"],
        json!([]),
        "another station's case is not counted for them"
    );
    let (_, mine) = central
        .console("station-2")
        .await
        .unwrap()
        .get("/api/v1/map")
        .await;
    assert_eq!(mine["cases"][0]["open"], 1, "{mine}");
    let (_, their_grids) = other.get("/api/v1/grids").await;
    assert_eq!(
        their_grids["grids"].as_array().map(Vec::len),
        Some(1),
        "their grid list holds their grid only: {their_grids}"
    );
    for path in ["/api/v1/map", "/api/v1/grids"] {
        let stranger = reqwest::get(central.url(path)).await.unwrap();
        assert_eq!(stranger.status().as_u16(), 401, "{path} without a session");
    }
    // The open pages serve their bundled files and nothing else.
    for path in [
        "/console/secrets.js",
        "/console/..%2FCargo.toml",
        "/assets/..%2F..%2FCargo.toml",
        "/assets/LICENSE",
    ] {
        let r = reqwest::get(central.url(path)).await.unwrap();
        assert_eq!(r.status().as_u16(), 404, "{path}");
    }
    let leaflet = reqwest::get(central.url("/assets/leaflet.js"))
        .await
        .unwrap();
    assert_eq!(leaflet.status().as_u16(), 200);

    // In Chromium: the street drawn, every device on it.
    let mut b = ConsoleDriver::start().unwrap();
    b.must(json!({"do": "open", "url": central.url("/console")}))
        .await;
    b.must(json!({"do": "login", "name": "super", "password": operator_password("super")}))
        .await;
    let drawn = b.must(json!({"do": "mapView", "grids": 14})).await;
    eprintln!("the map: {drawn}");
    b.must(json!({"do": "waitMarker", "key": "gw-map/camera/door", "alert": false}))
        .await;
    // The whole street counts open cases by area: 东风巷's in 红星社区.
    b.must(json!({"do": "waitMarker", "key": "cases/11019900100001", "alert": false}))
        .await;
    // Drill down: a click in a base grid first focuses its area, then the grid itself.
    let area = b
        .must(json!({"do": "mapClick", "lon": 120.156, "lat": 30.2745}))
        .await;
    assert_eq!(area["focus"], "11019900100002", "{area}");
    let grid = b
        .must(json!({"do": "mapClick", "lon": 120.156, "lat": 30.2745}))
        .await;
    assert_eq!(grid["focus"], "11019900100002002", "{grid}");
    assert!(
        grid["side"].as_str().unwrap().contains("光明社区第2网格"),
        "{grid}"
    );

    // The camera stops: when central's API first has the alert, and when the map shows it.
    let key = "gw-map/camera/door#camera.offline";
    cam.stop();
    let watcher = central.console("op").await.unwrap().when_alert_listed(key);
    let seen = b
        .must(json!({"do": "waitMarker", "key": "gw-map/camera/door", "alert": true, "timeoutMs": 45000}))
        .await;
    let on_map = Instant::now();
    let at_central = watcher.await.unwrap();
    let lag = on_map.saturating_duration_since(at_central);
    eprintln!("the map showed the alert {lag:?} after central's API had it");
    assert!(lag < Duration::from_secs(1), "within 1 s: {lag:?}");
    assert!(
        seen["title"].as_str().unwrap().contains('⚠'),
        "the marker names the alert: {seen}"
    );
    let off = b
        .must(json!({"do": "markerAt", "key": "gw-map/camera/door", "lon": DOOR_AT[0], "lat": DOOR_AT[1]}))
        .await;
    assert!(
        off["dx"].as_f64().unwrap().abs() < 3.0 && off["dy"].as_f64().unwrap().abs() < 3.0,
        "the camera stands where the data puts it: {off}"
    );

    // The kiosk's "my grid": the same drawing, the resident's grid in focus.
    b.must(
        json!({"do": "kiosk", "url": gw.url(&format!("/kiosk#token={}", viewer_token("gw-map")))}),
    )
    .await;
    let mine = b
        .must(json!({"do": "kioskGrid", "address": "东风巷12号"}))
        .await;
    assert_eq!(mine["focus"], "11019900100001002", "{mine}");
    assert_eq!(mine["grids"], 14, "the street from the replica: {mine}");
    let (_, case) = street.get(&format!("/api/v1/cases/{receipt}")).await;
    assert_eq!(case["station"], "11019900100001002");
    b.quit().await;
}
