//! Camera ingest against the real RTSP test camera: health, faults, credentials.

use std::time::Duration;

use gridedge_tests::services::{central_events, TestCentral, TestGateway};
use gridedge_tests::{
    camera_toml, eventually, init_test_logging, try_json, CameraOptions, Codec, Pattern, TestCamera,
};
use serde_json::Value;

async fn camera(gw: &TestGateway, id: &str) -> Option<Value> {
    let all = try_json(gw.url("/api/v1/cameras")).await?;
    all.as_array()?.iter().find(|c| c["id"] == id).cloned()
}

async fn wait_state(gw: &TestGateway, id: &str, state: &str, within: Duration) -> Value {
    eventually(&format!("camera {id} {state}"), within, || async {
        let c = camera(gw, id).await?;
        (c["state"] == state).then_some(c)
    })
    .await
    .unwrap()
}

/// A small moving camera and a gateway (without uplink) streaming from it as `cam_id`.
async fn streaming_camera(gw_id: &str, cam_id: &str, extra: &str) -> (TestCamera, TestGateway) {
    let cam = TestCamera::start(CameraOptions::small(Pattern::Moving)).unwrap();
    let toml = camera_toml(cam_id, cam.url().as_str(), extra);
    let gw = TestGateway::start_with(gw_id, "mqtt://127.0.0.1:1", None, &toml)
        .await
        .unwrap();
    wait_state(&gw, cam_id, "streaming", Duration::from_secs(20)).await;
    (cam, gw)
}

#[tokio::test]
async fn a_camera_streams_with_its_codec_size_and_frame_rate() {
    init_test_logging();
    for (codec, name, w, h) in [
        (Codec::H264, "h264", 640, 360),
        (Codec::H265, "h265", 320, 240),
    ] {
        let cam = TestCamera::start(CameraOptions {
            codec,
            width: w,
            height: h,
            ..Default::default()
        })
        .unwrap();
        let gw = TestGateway::start_with(
            "gw-cam",
            "mqtt://127.0.0.1:1",
            None,
            &camera_toml("hall", cam.url().as_str(), ""),
        )
        .await
        .unwrap();
        wait_state(&gw, "hall", "streaming", Duration::from_secs(20)).await;
        // Rates need a couple of seconds of frames.
        let c = eventually("a frame rate", Duration::from_secs(15), || async {
            let c = camera(&gw, "hall").await?;
            c["fps"].as_f64().is_some().then_some(c)
        })
        .await
        .unwrap();
        assert_eq!(c["codec"], name, "{c}");
        assert_eq!(
            (c["width"].as_u64(), c["height"].as_u64()),
            (Some(u64::from(w)), Some(u64::from(h))),
            "{c}"
        );
        let fps = c["fps"].as_f64().unwrap();
        assert!((20.0..=30.0).contains(&fps), "{name}: {fps} fps: {c}");
        assert!(c["bitrate_kbps"].as_f64().unwrap() > 10.0, "{c}");
        assert!(c["last_frame_age_ms"].as_u64().unwrap() < 1000, "{c}");
        let metrics = gridedge_tests::get_text(gw.url("/metrics")).await;
        assert!(
            metrics
                .contains("gridedge_gateway_camera_state{camera=\"hall\",state=\"streaming\"} 1"),
            "{metrics}"
        );
        gw.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_stopped_camera_goes_offline_comes_back_and_central_hears_both() {
    init_test_logging();
    let central = TestCentral::embedded().await.unwrap();
    let mut cam = TestCamera::start(CameraOptions::small(Pattern::Moving)).unwrap();
    let extra = camera_toml("door", cam.url().as_str(), "");
    let gw = TestGateway::start_with(
        "gw-camf",
        central.broker_url.as_deref().unwrap(),
        None,
        &extra,
    )
    .await
    .unwrap();
    wait_state(&gw, "door", "streaming", Duration::from_secs(20)).await;
    cam.stop();
    let t0 = std::time::Instant::now();
    // Stall time (2 s) plus one backoff step (1 s), with room for a loaded machine.
    wait_state(&gw, "door", "offline", Duration::from_secs(8)).await;
    eprintln!("offline after {:?}", t0.elapsed());
    cam.restart().unwrap();
    let c = wait_state(&gw, "door", "streaming", Duration::from_secs(30)).await;
    assert_eq!(c["reconnects"], 1, "{c}");
    let kinds = eventually(
        "both changes at central",
        Duration::from_secs(30),
        || async {
            let events = central_events(central.http_addr, "gw-camf").await.ok()?;
            let kinds: Vec<(String, String)> = events
                .iter()
                .filter(|e| e["payload"]["camera"] == "door")
                .map(|e| {
                    (
                        e["kind"].as_str().unwrap_or("").to_owned(),
                        e["class"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect();
            (kinds.len() >= 3).then_some(kinds)
        },
    )
    .await
    .unwrap();
    assert_eq!(
        kinds[0],
        ("camera.streaming".to_owned(), "health".to_owned()),
        "{kinds:?}"
    );
    assert_eq!(
        kinds[1],
        ("camera.offline".to_owned(), "alert".to_owned()),
        "{kinds:?}"
    );
    assert_eq!(
        kinds[2],
        ("camera.streaming".to_owned(), "health".to_owned()),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn a_wrong_password_is_unauthorized_reported_once_and_not_hammered() {
    init_test_logging();
    let central = TestCentral::embedded().await.unwrap();
    let cam = TestCamera::start(CameraOptions {
        auth: Some(("viewer".into(), "s3cret".into())),
        ..CameraOptions::small(Pattern::Moving)
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "wrong\n").unwrap();
    let extra = camera_toml(
        "vault",
        cam.url().as_str(),
        &format!(
            "credentials = {{ username = \"viewer\", password = {{ file = \"{}\" }} }}\n",
            pw.display()
        ),
    );
    let gw = TestGateway::start_with(
        "gw-camu",
        central.broker_url.as_deref().unwrap(),
        None,
        &extra,
    )
    .await
    .unwrap();
    let c = wait_state(&gw, "vault", "unauthorized", Duration::from_secs(20)).await;
    assert!(
        c["last_error"].as_str().unwrap().contains("credentials"),
        "{c}"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let c = camera(&gw, "vault").await.unwrap();
    assert_eq!(c["state"], "unauthorized", "{c}");
    let events = eventually("the alert at central", Duration::from_secs(20), || async {
        let events = central_events(central.http_addr, "gw-camu").await.ok()?;
        (!events.is_empty()).then_some(events)
    })
    .await
    .unwrap();
    let unauthorized = events
        .iter()
        .filter(|e| e["kind"] == "camera.unauthorized")
        .count();
    assert_eq!(unauthorized, 1, "{events:?}");
    // Retried slowly: one attempt in these seconds, not one a second.
    assert_eq!(c["attempts"], 1, "the camera was hammered: {c}");
}

#[tokio::test]
async fn a_hung_camera_is_detected_as_stalled_and_recovered_by_reconnecting() {
    init_test_logging();
    let (cam, gw) = streaming_camera("gw-camh", "hung", "").await;
    // The connection stays open, but no frame comes: only the read timeout can tell.
    cam.freeze().unwrap();
    let c = wait_state(&gw, "hung", "stalled", Duration::from_secs(6)).await;
    assert!(
        c["last_error"].as_str().unwrap().contains("no frame"),
        "{c}"
    );
    cam.thaw().unwrap();
    let c = wait_state(&gw, "hung", "streaming", Duration::from_secs(30)).await;
    assert!(c["reconnects"].as_u64().unwrap() >= 1, "{c}");
}

#[tokio::test]
async fn a_camera_over_udp_streams_like_one_over_tcp() {
    init_test_logging();
    let (_cam, gw) = streaming_camera("gw-udp", "yard", "transport = \"udp\"\n").await;
    let c = eventually("a frame rate over UDP", Duration::from_secs(15), || async {
        let c = camera(&gw, "yard").await?;
        c["fps"].as_f64().is_some_and(|f| f > 20.0).then_some(c)
    })
    .await
    .unwrap();
    assert_eq!(c["width"], 320, "{c}");
}

/// A TCP server on a free port that answers every connection with `reply` (repeated) or, when
/// empty, with silence.
async fn fake_camera(reply: &'static [u8]) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut sock, _)) = listener.accept().await {
            if reply.is_empty() {
                held.push(sock);
                continue;
            }
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                for _ in 0..1000 {
                    if sock.write_all(reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn cameras_answering_garbage_or_nothing_do_not_disturb_the_others() {
    init_test_logging();
    let cam = TestCamera::start(CameraOptions::small(Pattern::Moving)).unwrap();
    let garbage =
        fake_camera(b"\x00\xffHTTP/1.1 200 OK\r\n\r\n\x24\x00\xff\xff not rtsp at all ").await;
    let silent = fake_camera(b"").await;
    let extra = [
        camera_toml(
            "good",
            cam.url().as_str(),
            "[cameras.snapshot]\ninterval = \"1s\"\n",
        ),
        camera_toml("garbage", &format!("rtsp://127.0.0.1:{garbage}/cam"), ""),
        camera_toml("silent", &format!("rtsp://127.0.0.1:{silent}/cam"), ""),
    ]
    .concat();
    let gw = TestGateway::start_with("gw-bad", "mqtt://127.0.0.1:1", None, &extra)
        .await
        .unwrap();
    wait_state(&gw, "good", "streaming", Duration::from_secs(20)).await;
    let g = wait_state(&gw, "garbage", "offline", Duration::from_secs(20)).await;
    assert!(
        g["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{g}"
    );
    // DESCRIBE waits 10 s for an answer.
    let s = wait_state(&gw, "silent", "offline", Duration::from_secs(25)).await;
    assert!(
        s["last_error"].as_str().unwrap().contains("timed out"),
        "{s}"
    );
    // Meanwhile the good camera kept streaming and its pictures kept coming.
    let before = camera(&gw, "good").await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = camera(&gw, "good").await.unwrap();
    assert_eq!(after["state"], "streaming", "{after}");
    assert_eq!(after["reconnects"], 0, "{after}");
    assert!(
        after["frames"].as_u64() > before["frames"].as_u64(),
        "{after}"
    );
    assert!(after["decoded"].as_u64().unwrap() >= 2, "{after}");
    let health = try_json(gw.url("/healthz")).await.unwrap();
    assert_eq!(health["status"], "ok");
}
