//! The security room's camera wall in a real browser (headless Chromium): live video over
//! fragmented MP4 and Media Source Extensions, straight from the RTSP camera.

use std::time::Duration;

use gridedge_tests::browser::{watch, watch_playing};
use gridedge_tests::services::{viewer_token, TestGateway};
use gridedge_tests::{
    camera_toml, init_test_logging, try_json, CameraOptions, Codec, Pattern, TestCamera,
};

async fn streaming(gw: &TestGateway, id: &str) {
    gridedge_tests::eventually("streaming", Duration::from_secs(20), || async {
        let c = try_json(gw.url(&format!("/api/v1/cameras/{id}"))).await?;
        (c["state"] == "streaming").then_some(())
    })
    .await
    .unwrap();
}

/// A camera with `options` and a gateway (without uplink) streaming it as `camera`.
async fn wall(gw_id: &str, camera: &str, options: CameraOptions) -> (TestCamera, TestGateway) {
    let cam = TestCamera::start(options).unwrap();
    let gw = TestGateway::start_with(
        gw_id,
        "mqtt://127.0.0.1:1",
        None,
        &camera_toml(camera, cam.url().as_str(), ""),
    )
    .await
    .unwrap();
    streaming(&gw, camera).await;
    (cam, gw)
}

#[tokio::test]
async fn the_camera_wall_plays_the_camera_live_in_chromium() {
    init_test_logging();
    let options = CameraOptions {
        width: 640,
        height: 360,
        ..CameraOptions::small(Pattern::Moving)
    };
    let (_cam, gw) = wall("gw-wall", "hall", options).await;
    let url = gw.url(&format!("/viewer#token={}", viewer_token("gw-wall")));
    let w = watch_playing(url, 1.0, Duration::from_secs(30)).await;
    assert_eq!(w.second[0].camera, "hall");
    assert_eq!((w.second[0].width, w.second[0].height), (640, 360), "{w:?}");
}

#[tokio::test]
async fn an_h265_camera_plays_through_one_shared_transcode_that_stops_when_its_viewers_leave() {
    init_test_logging();
    let options = CameraOptions {
        codec: Codec::H265,
        ..CameraOptions::small(Pattern::Moving)
    };
    let (_cam, gw) = wall("gw-wall5", "yard", options).await;
    let url = gw.url(&format!("/viewer#token={}", viewer_token("gw-wall5")));
    let camera = gw.url("/api/v1/cameras/yard");
    // Two walls at once: this Chromium decodes no H.265, so each gets the camera as H.264.
    let watch_one = |url: String| {
        tokio::task::spawn_blocking(move || {
            watch(
                &url,
                3.0,
                Duration::from_secs(30),
                Duration::from_millis(1500),
            )
        })
    };
    let (a, b) = (watch_one(url.clone()), watch_one(url));
    let mut most = (0, 0);
    while !(a.is_finished() && b.is_finished()) {
        if let Some(c) = try_json(camera.clone()).await {
            let (v, t) = (
                c["h264_viewers"].as_u64().unwrap_or(0),
                c["transcodes"].as_u64().unwrap_or(0),
            );
            most = (most.0.max(v), most.1.max(t));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for w in [a.await.unwrap().unwrap(), b.await.unwrap().unwrap()] {
        assert!(w.played, "the H.265 camera never played: {w:?}");
        assert!(w.second[0].time > w.first[0].time + 0.5, "{w:?}");
        assert_eq!((w.second[0].width, w.second[0].height), (320, 180), "{w:?}");
    }
    assert_eq!(
        most,
        (2, 1),
        "two viewers, one transcode (viewers, transcodes started)"
    );
    // Both gone: the transcode stops (after the joining grace).
    gridedge_tests::eventually("the transcode stopped", Duration::from_secs(20), || async {
        let c = try_json(camera.clone()).await?;
        (c["transcoding"] == false && c["h264_viewers"] == 0).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn live_video_needs_a_video_terminal_token() {
    init_test_logging();
    let (_cam, gw) = wall("gw-wallt", "hall", CameraOptions::small(Pattern::Moving)).await;
    let url = format!("http://{}/api/v1/cameras/hall/live", gw.http_addr);
    // A plain GET with the WebSocket headers: refused before any upgrade — with an unknown
    // token, a source's, and a viewer's token in the address (never read from there).
    let upgrade = |url: String, token: Option<String>| async move {
        let mut r = reqwest::Client::new()
            .get(url)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.unwrap().status()
    };
    for (token, status) in [
        ("nope".to_owned(), 401),
        (gridedge_tests::services::source_token("gw-wallt"), 403),
    ] {
        assert_eq!(
            upgrade(url.clone(), Some(token.clone())).await,
            status,
            "token {token}"
        );
    }
    let in_address = format!("{url}?token={}", viewer_token("gw-wallt"));
    assert_eq!(
        upgrade(in_address, None).await,
        401,
        "a token in the address is not taken"
    );
}

/// A WebSocket viewer of `camera`: (the track JSON, bytes received) after `frames` fragments,
/// leaving once `hold` completes.
async fn view(
    addr: std::net::SocketAddr,
    gw_id: &str,
    camera: &str,
    frames: usize,
    hold: impl std::future::Future,
) -> (serde_json::Value, usize) {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("ws://{addr}/api/v1/cameras/{camera}/live");
    let request = gridedge_tests::live::request(&url, Some(&viewer_token(gw_id))).unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut track = serde_json::Value::Null;
    let (mut binary, mut bytes) = (0, 0);
    while binary < frames + 1 {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => track = serde_json::from_str(&t).unwrap(),
            Some(Ok(Message::Binary(b))) => {
                binary += 1;
                bytes += b.len();
            }
            Some(Ok(_)) => {}
            other => panic!("viewer stream ended: {other:?}"),
        }
    }
    // Still connected (and receiving) until told to leave.
    hold.await;
    drop(ws);
    (track, bytes)
}

#[tokio::test]
async fn ten_viewers_of_one_camera_share_one_upstream() {
    init_test_logging();
    let (_cam, gw) = wall("gw-ten", "hall", CameraOptions::small(Pattern::Moving)).await;
    // Ten viewers, each held open while the others join.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let rx = futures::future::FutureExt::shared(async { rx.await.ok() });
    let mut viewers = Vec::new();
    for _ in 0..10 {
        let (gw_addr, id) = (gw.http_addr, gw.id.clone());
        let hold = rx.clone();
        viewers.push(tokio::spawn(async move {
            view(gw_addr, &id, "hall", 50, hold).await
        }));
    }
    let c = gridedge_tests::eventually("ten viewers", Duration::from_secs(20), || async {
        let c = try_json(gw.url("/api/v1/cameras/hall")).await?;
        (c["viewers"] == 10).then_some(c)
    })
    .await
    .unwrap();
    // One RTSP session for all of them.
    assert_eq!(
        (c["attempts"].as_u64(), c["reconnects"].as_u64()),
        (Some(1), Some(0)),
        "{c}"
    );
    tx.send(()).unwrap();
    for v in viewers {
        let (track, bytes) = v.await.unwrap();
        assert_eq!(
            (track["width"].as_u64(), track["height"].as_u64()),
            (Some(320), Some(180)),
            "{track}"
        );
        assert!(
            track["mime"]
                .as_str()
                .unwrap()
                .starts_with("video/mp4; codecs=\"avc1."),
            "{track}"
        );
        assert!(bytes > 10_000, "{bytes} bytes for 50 frames");
    }
    gridedge_tests::eventually("viewers gone", Duration::from_secs(10), || async {
        let c = try_json(gw.url("/api/v1/cameras/hall")).await?;
        (c["viewers"] == 0).then_some(())
    })
    .await
    .unwrap();
}

/// The first `frames` fragments of a camera's live stream with its init segment, as one file.
async fn record(gw: &TestGateway, camera: &str, frames: usize) -> Vec<u8> {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("ws://{}/api/v1/cameras/{camera}/live", gw.http_addr);
    let request = gridedge_tests::live::request(&url, Some(&viewer_token(&gw.id))).unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut file = Vec::new();
    let mut n = 0;
    while n < frames + 1 {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => {
                file.extend_from_slice(&b);
                n += 1;
            }
            Some(Ok(_)) => {}
            other => panic!("stream ended: {other:?}"),
        }
    }
    file
}

#[tokio::test]
async fn the_live_stream_is_fragmented_mp4_that_ffmpeg_decodes_for_h264_and_h265() {
    init_test_logging();
    for (codec, name) in [(Codec::H264, "h264"), (Codec::H265, "hevc")] {
        let options = CameraOptions {
            codec,
            ..CameraOptions::small(Pattern::Moving)
        };
        let (_cam, gw) = wall("gw-fmp4", "hall", options).await;
        let bytes = record(&gw, "hall", 50).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.mp4");
        std::fs::write(&path, &bytes).unwrap();
        let out = std::process::Command::new("ffprobe")
            .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
            .args([
                "-show_entries",
                "stream=codec_name,width,height,nb_read_frames",
                "-of",
                "json",
            ])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let s = &v["streams"][0];
        assert_eq!(s["codec_name"], name, "{v}");
        assert_eq!(
            (s["width"].as_u64(), s["height"].as_u64()),
            (Some(320), Some(180)),
            "{v}"
        );
        let decoded: u64 = s["nb_read_frames"].as_str().unwrap().parse().unwrap();
        assert_eq!(decoded, 50, "{name}: every fragment decodes: {v}");
        gw.stop().await.unwrap();
    }
}
