//! Alert clips against the real RTSP test camera: a motion alert's clip is an MP4 that FFmpeg
//! decodes, starting at least `clips.pre` before the alert and ending `clips.post` after it,
//! fetched only by the centre's video terminals.

use std::time::Duration;

use gridedge_tests::services::{central_events, source_token, TestCentral, TestGateway};
use gridedge_tests::{
    camera_toml, eventually, init_test_logging, CameraOptions, Pattern, TestCamera,
};
use serde_json::Value;

const PRE: Duration = Duration::from_secs(3);
const POST: Duration = Duration::from_secs(2);

/// Frames, width and height of an MP4, and whether FFmpeg decodes all of it without an error.
fn probe(mp4: &[u8]) -> (u64, u64, u64, bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clip.mp4");
    std::fs::write(&path, mp4).unwrap();
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=nb_read_frames,width,height",
            "-of",
            "json",
        ])
        .arg(&path)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let s = &v["streams"][0];
    let n = |k: &str| {
        s[k].as_u64()
            .or_else(|| s[k].as_str().and_then(|x| x.parse().ok()))
            .unwrap_or(0)
    };
    let decode = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-xerror", "-i"])
        .arg(&path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    let clean = decode.status.success() && decode.stderr.is_empty();
    (n("nb_read_frames"), n("width"), n("height"), clean)
}

#[tokio::test]
async fn alert_clips_start_before_the_alert_decode_and_play_only_for_those_who_may_see_them() {
    init_test_logging();
    let central = TestCentral::embedded().await.unwrap();
    // The ball shows (motion starts) 6 s into the stream, when the ring holds more than `PRE`.
    let cam = TestCamera::start(CameraOptions {
        object_after: Some(6),
        ..CameraOptions::small(Pattern::Object(0.1, 0.1))
    })
    .unwrap();
    let sensing = "[cameras.snapshot]\ninterval = \"1s\"\nwidth = 320\n[cameras.sensing]\nhold_down = \"3s\"\n\
         [[cameras.sensing.motion_zones]]\nname = \"box\"\npolygon = [[0.08, 0.08], [0.37, 0.08], [0.37, 0.37], [0.08, 0.37]]\n";
    // A door-access source whose alerts at the hall take the camera's clip.
    let door_token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(door_token.path(), "token-of-the-door").unwrap();
    let toml = format!(
        "{}\n[clips]\npre = \"{}s\"\npost = \"{}s\"\n\
         [[sources]]\nid = \"door\"\nname = \"Door access\"\ntoken = {{ file = \"{}\" }}\nkinds = [\"door.*\"]\ncameras = [\"cam\"]\n",
        camera_toml("cam", cam.url().as_str(), sensing),
        PRE.as_secs(),
        POST.as_secs(),
        door_token.path().display()
    );
    // The centre of 光明社区: the street's operators reach it, 红星社区's do not.
    let (status, _) = central
        .post_masterdata(&gridedge_tests::workspace_root().join("deploy/sample-data"))
        .await
        .unwrap();
    assert_eq!(status, 201);
    let gw = TestGateway::start_in_areas(
        "gw-clips",
        central.broker_url.as_deref().unwrap(),
        None,
        &["11019900100002"],
        &toml,
    )
    .await
    .unwrap();
    // The alert at central names its clip.
    let alert = eventually(
        "the motion alert at central",
        Duration::from_secs(60),
        || async {
            central_events(central.http_addr, "gw-clips")
                .await
                .ok()?
                .into_iter()
                .find(|e| e["kind"] == "camera.motion" && e["payload"]["state"] == "raised")
        },
    )
    .await
    .unwrap();
    let path = alert["payload"]["clip_path"].as_str().unwrap().to_owned();
    let clip_ref = alert["payload"]["clip"].as_str().unwrap().to_owned();
    assert!(path.starts_with("/api/v1/cameras/cam/clips/"), "{alert}");

    // Written `post` after the alert; until then it is too early.
    let mp4 = eventually("the clip written", Duration::from_secs(30), || async {
        let (status, kind, body) = gw.get_as_viewer(&path).await.ok()?;
        assert!(
            status == 200 || status == 425,
            "{status}: {}",
            String::from_utf8_lossy(&body)
        );
        (status == 200).then(|| {
            assert_eq!(kind, "video/mp4");
            body
        })
    })
    .await
    .unwrap();
    let (frames, width, height, clean) = probe(&mp4);
    assert!(clean, "FFmpeg decodes the clip without an error");
    assert_eq!((width, height), (320, 180), "the camera's size");

    // It starts at least `pre` before the alert and ends `post` after it.
    let (status, _, list) = gw.get_as_viewer("/api/v1/cameras/cam/clips").await.unwrap();
    assert_eq!(status, 200);
    let list: Value = serde_json::from_slice(&list).unwrap();
    let id: u64 = clip_ref.rsplit('/').next().unwrap().parse().unwrap();
    let info = list["clips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("{list}"))
        .clone();
    assert_eq!(info["state"], "ready", "{info}");
    assert_eq!(info["reason"], "camera.motion:box", "{info}");
    assert_eq!(info["late_start"], false, "{info}");
    let at = info["at_ms"].as_i64().unwrap();
    let starts = info["starts_ms"].as_i64().unwrap();
    assert!(
        at - starts >= PRE.as_millis() as i64,
        "starts {} ms before the alert: {info}",
        at - starts
    );
    let duration = info["duration_ms"].as_u64().unwrap();
    assert!(
        duration as i64 >= (at - starts) + POST.as_millis() as i64 - 200,
        "lasts {duration} ms: {info}"
    );
    // Every frame the camera sent over the span (25 a second), each one decoded.
    assert_eq!(info["frames"].as_u64().unwrap(), frames, "{info}");
    assert!(
        frames as f64 >= duration as f64 / 40.0 * 0.9,
        "{frames} frames in {duration} ms"
    );

    // Only the centre's video terminals: no token, an event source's, a made-up path.
    let anon = reqwest::get(gw.url(&path)).await.unwrap().status().as_u16();
    assert_eq!(anon, 401);
    let as_source = reqwest::Client::new()
        .get(gw.url(&path))
        .bearer_auth(source_token("gw-clips"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(as_source, 403);
    for (bad, status) in [
        ("/api/v1/cameras/cam/clips/..%2F..%2Foutbox.mp4", 400),
        ("/api/v1/cameras/cam/clips/1.mp4", 404),
        ("/api/v1/cameras/nope/clips", 404),
    ] {
        let (s, _, body) = gw.get_as_viewer(bad).await.unwrap();
        assert_eq!(s, status, "{bad}: {}", String::from_utf8_lossy(&body));
    }

    // Through central: listed with where it plays, the same bytes whole and by range.
    let boss = central.console("super").await.unwrap();
    let (status, v) = boss
        .get("/api/v1/gateways/gw-clips/cameras/cam/clips")
        .await;
    assert_eq!(status, 200, "{v}");
    let url = v["clips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .and_then(|c| c["url"].as_str())
        .unwrap_or_else(|| panic!("{v}"))
        .to_owned();
    let whole = boss
        .send_raw(boss.request(reqwest::Method::GET, &url))
        .await;
    assert_eq!(whole, mp4, "the gateway's clip, byte for byte");
    let r = boss
        .request(reqwest::Method::GET, &url)
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 1000-1999/{}", mp4.len()).as_str()
    );
    assert_eq!(r.bytes().await.unwrap(), &mp4[1000..2000]);
    // An operator's own clip: named at once.
    let (status, taken) = boss
        .post(
            "/api/v1/gateways/gw-clips/cameras/cam/clips",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 201, "{taken}");
    assert_eq!(taken["reason"], "operator");
    assert_eq!(taken["state"], "recording");

    // Played in the console, from the alert, in Chromium.
    let mut b = gridedge_tests::browser::ConsoleDriver::start().unwrap();
    b.must(serde_json::json!({"do": "open", "url": central.url("/console")}))
        .await;
    b.must(serde_json::json!({"do": "login", "name": "super",
        "password": gridedge_tests::services::operator_password("super")}))
        .await;
    let key = "gw-clips/camera/cam#camera.motion:box";
    b.must(serde_json::json!({"do": "waitAlert", "key": key, "timeoutMs": 20000}))
        .await;
    let played = b
        .must(serde_json::json!({"do": "playClip", "key": key, "timeoutMs": 30000}))
        .await;
    assert_eq!(
        (played["width"].as_u64(), played["height"].as_u64()),
        (Some(320), Some(180)),
        "{played}"
    );
    assert!(
        played["duration"].as_f64().unwrap() * 1000.0 >= duration as f64 - 200.0,
        "{played}"
    );
    b.quit().await;

    // Another community's operator and supervisor: the centre is not theirs.
    for who in ["station-2", "community-1"] {
        let other = central.console(who).await.unwrap();
        for path in [
            "/api/v1/gateways/gw-clips/cameras/cam/clips".to_owned(),
            url.clone(),
            "/api/v1/gateways/gw-clips/cameras/cam/snapshot.jpg".to_owned(),
        ] {
            let (status, v) = other.get(&path).await;
            assert_eq!(status, 404, "{who} {path}: {v}");
        }
        let (status, _) = other
            .post(
                "/api/v1/gateways/gw-clips/cameras/cam/clips",
                serde_json::json!({}),
            )
            .await;
        assert_eq!(status, 404, "{who} takes a clip");
    }
    // A door forced at the hall: the door source's alert takes a clip (once the operator's is
    // written: one within a clip being recorded would be that clip).
    let operator_clip = taken["id"].as_u64().unwrap();
    eventually(
        "the operator's clip written",
        Duration::from_secs(20),
        || async {
            let (_, _, list) = gw.get_as_viewer("/api/v1/cameras/cam/clips").await.ok()?;
            let list: Value = serde_json::from_slice(&list).ok()?;
            list["clips"]
                .as_array()?
                .iter()
                .any(|c| c["id"] == operator_clip && c["state"] == "ready")
                .then_some(())
        },
    )
    .await
    .unwrap();
    let post = |token: &'static str, camera: &'static str| {
        let url = gw.url("/api/v1/events");
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .json(
                    &serde_json::json!([{"class": "alert", "kind": "door.forced",
                    "payload": {"door": "east", "camera": camera}}]),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
        }
    };
    post("token-of-the-door", "cam").await;
    // The test source names no cameras; the door source names only "cam".
    post("token-of-source-gw-clips", "cam").await;
    post("token-of-the-door", "yard").await;
    let forced = eventually(
        "the door alerts at central",
        Duration::from_secs(20),
        || async {
            let e: Vec<Value> = central_events(central.http_addr, "gw-clips")
                .await
                .ok()?
                .into_iter()
                .filter(|e| e["kind"] == "door.forced")
                .collect();
            (e.len() == 3).then_some(e)
        },
    )
    .await
    .unwrap();
    let with_clip: Vec<&Value> = forced
        .iter()
        .filter(|e| e["payload"]["clip_path"].is_string())
        .collect();
    assert_eq!(with_clip.len(), 1, "{forced:?}");
    assert_eq!(with_clip[0]["source"], "door", "{forced:?}");
    let door_clip = with_clip[0]["payload"]["clip_path"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _, _) = eventually(
        "the door's clip written",
        Duration::from_secs(20),
        || async {
            let r = gw.get_as_viewer(&door_clip).await.ok()?;
            (r.0 == 200).then_some(r)
        },
    )
    .await
    .unwrap();
    assert_eq!(status, 200);

    // On the centre's camera wall, in Chromium: the camera's clips listed, the newest played.
    let wall = gw.url(&format!(
        "/viewer#token={}",
        gridedge_tests::services::viewer_token("gw-clips")
    ));
    let out = tokio::process::Command::new("node")
        .current_dir(gridedge_tests::workspace_root().join("tests/browser"))
        .args(["wall_clip.mjs", &wall, "cam", "20000"])
        .output()
        .await
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    let played: Value = serde_json::from_str(line.lines().last().unwrap_or_default())
        .unwrap_or_else(|_| panic!("{line} {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(played["ok"], true, "{played}");
    assert!(played["clips"].as_u64().unwrap() >= 3, "{played}");
    assert_eq!(
        (played["width"].as_u64(), played["height"].as_u64()),
        (Some(320), Some(180)),
        "{played}"
    );

    let anon = reqwest::get(central.url(&url))
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(anon, 401, "no session");
    gw.stop().await.unwrap();
}
