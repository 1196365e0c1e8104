//! Snapshots and sensing against the real RTSP test camera: JPEGs of the configured size, and
//! covered, frozen, moved and motion alerts where (and only where) they belong.

use std::time::{Duration, Instant};

use gridedge_tests::services::{central_events, TestCentral, TestGateway};
use gridedge_tests::{
    camera_toml, eventually, init_test_logging, jpeg_size, try_json, CameraOptions, Codec, Pattern,
    TestCamera,
};
use serde_json::Value;

const SENSING_KINDS: [&str; 4] = [
    "camera.covered",
    "camera.frozen",
    "camera.moved",
    "camera.motion",
];

/// Sensing with a short hold-down, so that the tests take seconds, not minutes.
fn sensing(extra: &str) -> String {
    format!("[cameras.snapshot]\ninterval = \"1s\"\nwidth = 320\n[cameras.sensing]\nhold_down = \"3s\"\n{extra}")
}

fn zone(name: &str, x0: f64, y0: f64, x1: f64, y1: f64, schedule: &str) -> String {
    format!(
        "[[cameras.sensing.motion_zones]]\nname = \"{name}\"\npolygon = [[{x0}, {y0}], [{x1}, {y0}], [{x1}, {y1}], [{x0}, {y1}]]\n{schedule}"
    )
}

async fn camera(gw: &TestGateway, id: &str) -> Option<Value> {
    try_json(gw.url(&format!("/api/v1/cameras/{id}"))).await
}

/// Sensing events of `camera` stored at central.
async fn sensing_events(central: &TestCentral, gw: &str, camera: &str) -> Vec<Value> {
    central_events(central.http_addr, gw)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["payload"]["camera"] == camera)
        .filter(|e| {
            let k = e["kind"].as_str().unwrap_or("");
            SENSING_KINDS.iter().any(|s| k.starts_with(s))
        })
        .collect()
}

#[tokio::test]
async fn snapshots_are_jpegs_of_the_configured_size_for_viewers_only() {
    init_test_logging();
    for (codec, w, h, want) in [
        (Codec::H264, 640, 360, (320, 180)),
        (Codec::H265, 320, 240, (160, 120)),
    ] {
        let cam = TestCamera::start(CameraOptions {
            codec,
            width: w,
            height: h,
            ..Default::default()
        })
        .unwrap();
        let extra = camera_toml(
            "hall",
            cam.url().as_str(),
            &format!(
                "[cameras.snapshot]\ninterval = \"1s\"\nwidth = {}\n",
                want.0
            ),
        );
        let gw = TestGateway::start_with("gw-snap", "mqtt://127.0.0.1:1", None, &extra)
            .await
            .unwrap();
        let (status, kind, body) = eventually("a snapshot", Duration::from_secs(30), || async {
            let r = gw
                .get_as_viewer("/api/v1/cameras/hall/snapshot.jpg")
                .await
                .ok()?;
            (r.0 == 200).then_some(r)
        })
        .await
        .unwrap();
        assert_eq!((status, kind.as_str()), (200, "image/jpeg"));
        assert_eq!(
            jpeg_size(&body),
            Some(want),
            "{codec:?}: {} bytes",
            body.len()
        );
        // A fresh one follows the interval.
        let first = camera(&gw, "hall").await.unwrap()["snapshot_at_ms"]
            .as_u64()
            .unwrap();
        eventually("a newer snapshot", Duration::from_secs(10), || async {
            let c = camera(&gw, "hall").await?;
            (c["snapshot_at_ms"].as_u64()? > first).then_some(())
        })
        .await
        .unwrap();
        let c = camera(&gw, "hall").await.unwrap();
        assert!(c["decoded"].as_u64().unwrap() >= 2, "{c}");
        assert_eq!(c["decode_errors"], 0, "{c}");
        assert_eq!(
            (c["picture_width"].as_u64(), c["picture_height"].as_u64()),
            (Some(u64::from(w)), Some(u64::from(h)))
        );
        // Pictures are for video terminals: no token, a source's token, or an unknown camera
        // are refused with a reason.
        let anon = reqwest::get(gw.url("/api/v1/cameras/hall/snapshot.jpg"))
            .await
            .unwrap();
        assert_eq!(anon.status(), 401);
        let source = reqwest::Client::new()
            .get(gw.url("/api/v1/cameras/hall/snapshot.jpg"))
            .bearer_auth(gridedge_tests::services::source_token("gw-snap"))
            .send()
            .await
            .unwrap();
        assert_eq!(source.status(), 403);
        let (status, _, body) = gw
            .get_as_viewer("/api/v1/cameras/nope/snapshot.jpg")
            .await
            .unwrap();
        assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
        gw.stop().await.unwrap();
    }
}

#[tokio::test]
async fn central_gets_a_snapshot_through_a_command() {
    init_test_logging();
    let central = TestCentral::embedded().await.unwrap();
    let (_cam, gw) = sensed(
        &central,
        "gw-cmd",
        CameraOptions::small(Pattern::Moving),
        "",
    )
    .await;
    let url = format!(
        "http://{}/api/v1/gateways/gw-cmd/cameras/cam/snapshot.jpg",
        central.http_addr
    );
    let body = eventually(
        "a snapshot through central",
        Duration::from_secs(40),
        || async {
            let r = gridedge_tests::services::api_client()
                .get(&url)
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())?;
            r.bytes().await.ok()
        },
    )
    .await
    .unwrap();
    assert_eq!(jpeg_size(&body), Some((320, 180)));
    let r = gridedge_tests::services::api_client()
        .get(format!(
            "http://{}/api/v1/gateways/gw-cmd/cameras/nope/snapshot.jpg",
            central.http_addr
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("no enabled camera"));
    drop(gw);
}

/// Starts a camera with `pattern` and a gateway sensing it with `extra` (zones); returns them.
async fn sensed(
    central: &TestCentral,
    gw_id: &str,
    options: CameraOptions,
    extra: &str,
) -> (TestCamera, TestGateway) {
    let cam = TestCamera::start(options).unwrap();
    let toml = camera_toml("cam", cam.url().as_str(), &sensing(extra));
    let gw = TestGateway::start_with(gw_id, central.broker_url.as_deref().unwrap(), None, &toml)
        .await
        .unwrap();
    (cam, gw)
}

async fn wait_condition(gw: &TestGateway, condition: &str, within: Duration) -> Value {
    let found = eventually(&format!("{condition} raised"), within, || async {
        let c = camera(gw, "cam").await?;
        c["sensing"]
            .as_array()?
            .iter()
            .any(|s| s == condition)
            .then_some(c)
    })
    .await;
    match found {
        Ok(c) => c,
        Err(e) => panic!(
            "{e}; the camera: {}",
            camera(gw, "cam").await.unwrap_or_default()
        ),
    }
}

#[tokio::test]
async fn a_black_picture_raises_covered_with_its_snapshot() {
    init_test_logging();
    let central = TestCentral::embedded().await.unwrap();
    let (_cam, gw) = sensed(
        &central,
        "gw-black",
        CameraOptions::small(Pattern::Black),
        "",
    )
    .await;
    let c = wait_condition(&gw, "covered", Duration::from_secs(40)).await;
    assert_eq!(
        c["sensing"],
        serde_json::json!(["covered"]),
        "covered alone: {c}"
    );
    let events = eventually("the alert at central", Duration::from_secs(20), || async {
        let e = sensing_events(&central, "gw-black", "cam").await;
        (!e.is_empty()).then_some(e)
    })
    .await
    .unwrap();
    let alert = &events[0];
    assert_eq!(alert["kind"], "camera.covered", "{events:?}");
    assert_eq!(alert["class"], "alert");
    assert_eq!(alert["payload"]["rule"], "covered");
    assert_eq!(alert["payload"]["state"], "raised");
    // The snapshot it refers to is the black picture.
    let path = alert["payload"]["snapshot_path"].as_str().unwrap();
    let (status, _, jpeg) = gw.get_as_viewer(path).await.unwrap();
    assert_eq!(status, 200, "{path}");
    assert_eq!(jpeg_size(&jpeg), Some((320, 180)));
}

#[tokio::test]
async fn a_picture_that_stands_still_in_a_running_stream_is_frozen() {
    init_test_logging();
    let central = TestCentral::embedded().await.unwrap();
    for (codec, gw_id) in [(Codec::H264, "gw-frozen"), (Codec::H265, "gw-frozen5")] {
        let (_cam, gw) = sensed(
            &central,
            gw_id,
            CameraOptions {
                codec,
                ..CameraOptions::small(Pattern::Static)
            },
            "",
        )
        .await;
        let c = wait_condition(&gw, "frozen", Duration::from_secs(40)).await;
        assert_eq!(c["state"], "streaming", "{c}");
        assert_eq!(
            c["sensing"],
            serde_json::json!(["frozen"]),
            "{codec:?}: {c}"
        );
        let events = eventually("the alert at central", Duration::from_secs(20), || async {
            let e = sensing_events(&central, gw_id, "cam").await;
            (!e.is_empty()).then_some(e)
        })
        .await
        .unwrap();
        assert_eq!(events[0]["kind"], "camera.frozen", "{events:?}");
        gw.stop().await.unwrap();
    }
}

#[tokio::test]
async fn motion_is_raised_in_its_zone_during_its_schedule_only() {
    init_test_logging();
    let central = TestCentral::embedded().await.unwrap();
    // Site time is UTC+8; a window that starts three hours from now is closed now.
    let now = time::OffsetDateTime::now_utc().to_offset(time::macros::offset!(+8));
    let closed = format!(
        "schedule = {{ from = \"{:02}:00\", to = \"{:02}:00\" }}\n",
        (now.hour() + 3) % 24,
        (now.hour() + 4) % 24
    );
    let open = format!(
        "schedule = {{ from = \"{:02}:00\", to = \"{:02}:00\" }}\n",
        (now.hour() + 23) % 24,
        (now.hour() + 2) % 24
    );
    // The ball moves in a box at (0.1, 0.1), a quarter of the picture wide and high.
    let zones = [
        zone("box", 0.08, 0.08, 0.37, 0.37, &open),
        zone("box-later", 0.08, 0.08, 0.37, 0.37, &closed),
        zone("bars", 0.55, 0.05, 0.85, 0.6, ""),
    ]
    .concat();
    let (_cam, gw) = sensed(
        &central,
        "gw-motion",
        CameraOptions::small(Pattern::Object(0.1, 0.1)),
        &zones,
    )
    .await;
    wait_condition(&gw, "motion:box", Duration::from_secs(40)).await;
    // Give the other zones time to be wrong.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let c = camera(&gw, "cam").await.unwrap();
    assert_eq!(c["sensing"], serde_json::json!(["motion:box"]), "{c}");
    let events = eventually("the alert at central", Duration::from_secs(20), || async {
        let e = sensing_events(&central, "gw-motion", "cam").await;
        (!e.is_empty()).then_some(e)
    })
    .await
    .unwrap();
    assert!(
        events
            .iter()
            .all(|e| e["kind"] == "camera.motion" && e["payload"]["zone"] == "box"),
        "{events:?}"
    );
    assert_eq!(
        events.len(),
        1,
        "one alert for continuous motion: {events:?}"
    );
}

#[tokio::test]
async fn a_quiet_live_scene_raises_nothing_over_a_long_run_and_a_turned_camera_is_moved() {
    init_test_logging();
    let central = TestCentral::embedded().await.unwrap();
    // Clear of the noise patch, bottom right in the scene and top left once turned.
    let zones = [
        zone("left", 0.3, 0.0, 0.5, 0.6, ""),
        zone("door", 0.3, 0.2, 0.7, 0.5, ""),
    ]
    .concat();
    let (mut cam, gw) = sensed(
        &central,
        "gw-quiet",
        CameraOptions::small(Pattern::Scene),
        &zones,
    )
    .await;
    let t0 = Instant::now();
    // 20 hold-downs of a quiet scene.
    let run = Duration::from_secs(60);
    eventually("streaming", Duration::from_secs(20), || async {
        (camera(&gw, "cam").await?["state"] == "streaming").then_some(())
    })
    .await
    .unwrap();
    tokio::time::sleep(run.saturating_sub(t0.elapsed())).await;
    let c = camera(&gw, "cam").await.unwrap();
    assert!(c["decoded"].as_u64().unwrap() >= 30, "{c}");
    assert_eq!(c["sensing"], serde_json::json!([]), "{c}");
    let events = sensing_events(&central, "gw-quiet", "cam").await;
    assert!(events.is_empty(), "{events:?}");
    // Someone turns the camera: one moved alert, and the new view is the scene from then on.
    cam.options.pattern = Pattern::Turned;
    cam.restart().unwrap();
    let events = eventually("moved at central", Duration::from_secs(60), || async {
        let e = sensing_events(&central, "gw-quiet", "cam").await;
        (!e.is_empty()).then_some(e)
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let events_after = sensing_events(&central, "gw-quiet", "cam").await;
    assert_eq!(events[0]["kind"], "camera.moved", "{events:?}");
    assert_eq!(events_after.len(), 1, "{events_after:?}");
}

#[tokio::test]
async fn a_camera_back_at_another_size_gets_pictures_of_the_new_size() {
    init_test_logging();
    let mut cam = TestCamera::start(CameraOptions::small(Pattern::Moving)).unwrap();
    let extra = camera_toml(
        "cam",
        cam.url().as_str(),
        "[cameras.snapshot]\ninterval = \"1s\"\nwidth = 640\n",
    );
    let gw = TestGateway::start_with("gw-resize", "mqtt://127.0.0.1:1", None, &extra)
        .await
        .unwrap();
    for (w, h) in [(320, 180), (640, 360)] {
        if w == 640 {
            cam.options.width = 640;
            cam.options.height = 360;
            cam.restart().unwrap();
        }
        // Never wider than the picture.
        let size = eventually(
            &format!("a {w}x{h} snapshot"),
            Duration::from_secs(40),
            || async {
                let (status, _, body) = gw
                    .get_as_viewer("/api/v1/cameras/cam/snapshot.jpg")
                    .await
                    .ok()?;
                let size = jpeg_size(&body).filter(|_| status == 200)?;
                (size == (w, h)).then_some(size)
            },
        )
        .await
        .unwrap();
        assert_eq!(size, (w, h));
        let c = camera(&gw, "cam").await.unwrap();
        assert_eq!(c["picture_width"], w, "{c}");
    }
}
