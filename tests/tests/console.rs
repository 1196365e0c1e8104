//! The operator console in a real browser (headless Chromium): a camera that stops shows up as
//! an alert within moments of central opening it, the operator acknowledges it there, it
//! clears when the camera is back, and a meeting dispatched from the console to a simulated
//! terminal that accepts and joins shows its state on the board.

use std::time::{Duration, Instant};

use gridedge_tests::browser::ConsoleDriver;
use gridedge_tests::services::{operator_password, TestCentral, TestGateway};
use gridedge_tests::terminals::{terminal_token, terminal_toml};
use gridedge_tests::{
    camera_toml, eventually, init_test_logging, CameraOptions, Pattern, TestCamera,
};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sees_an_alert_acknowledges_it_and_dispatches_a_meeting_in_the_console() {
    init_test_logging();
    let central = TestCentral::embedded().await.unwrap();
    let mut cam = TestCamera::start(CameraOptions::small(Pattern::Moving)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let extra = camera_toml("door", cam.url().as_str(), "")
        + &terminal_toml(
            dir.path(),
            "vt-1",
            "video_terminal",
            "{ mode = \"heartbeat\", interval = \"1h\" }",
        );
    let gw = TestGateway::start_with(
        "gw-con",
        central.broker_url.as_deref().unwrap(),
        None,
        &extra,
    )
    .await
    .unwrap();
    gw.camera_in("door", "streaming").await.unwrap();

    let mut console = ConsoleDriver::start().unwrap();
    console
        .must(json!({"do": "open", "url": central.url("/console")}))
        .await;
    let who = console
        .must(json!({"do": "login", "name": "super", "password": operator_password("super")}))
        .await;
    assert!(who["who"].as_str().unwrap().contains("supervisor"), "{who}");

    // The camera stops: note when central's API first has the alert, and when the console does.
    let key = "gw-con/camera/door#camera.offline";
    cam.stop();
    let watcher = central.console("op").await.unwrap().when_alert_listed(key);
    let seen = console
        .must(json!({"do": "waitAlert", "key": key, "timeoutMs": 45000}))
        .await;
    let in_console = Instant::now();
    let at_central = watcher.await.unwrap();
    let lag = in_console.saturating_duration_since(at_central);
    eprintln!("the console showed the alert {lag:?} after central's API had it");
    assert!(lag < Duration::from_secs(3), "pushed, not polled: {lag:?}");
    assert_eq!(seen["row"]["acknowledged"], "false");

    // Acknowledged in the console; cleared when the camera is back.
    console.must(json!({"do": "ack", "key": key})).await;
    console
        .must(json!({"do": "waitAlert", "key": key, "acknowledged": true, "timeoutMs": 10000}))
        .await;
    // A note from the console, kept on the alert with who wrote it.
    let noted = console
        .must(json!({"do": "note", "key": key, "text": "已通知物业检修 called the caretaker"}))
        .await;
    assert!(
        noted["notes"][0]
            .as_str()
            .unwrap_or_default()
            .contains("super"),
        "{noted}"
    );
    cam.restart().unwrap();
    let t = Instant::now();
    console
        .must(json!({"do": "waitAlert", "key": key, "acknowledged": true, "cleared": true, "timeoutMs": 45000}))
        .await;

    eprintln!(
        "cleared in the console {:?} after the camera restarted",
        t.elapsed()
    );
    // A meeting dispatched from the console; the terminal accepts and joins.
    console
        .must(json!({"do": "book", "title": "远程接访", "room": "https://meet.example/r/1", "invitees": "gw-con/vt-1"}))
        .await;
    let inv: Value = eventually(
        "the invitation at the terminal",
        Duration::from_secs(15),
        || async {
            let v: Value = reqwest::Client::new()
                .get(gw.url("/api/v1/terminals/meetings?since=0&wait=2"))
                .bearer_auth(terminal_token("vt-1"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            v["invitations"].as_array()?.first().cloned()
        },
    )
    .await
    .unwrap();
    let meeting = inv["meeting"].as_str().unwrap();
    for answer in ["accepted", "joined"] {
        let r = reqwest::Client::new()
            .post(gw.url(&format!("/api/v1/terminals/meetings/{meeting}/answer")))
            .bearer_auth(terminal_token("vt-1"))
            .json(&json!({ "answer": answer }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
    }
    console
        .must(json!({"do": "waitInvitee", "terminal": "gw-con/vt-1", "state": "joined", "timeoutMs": 20000}))
        .await;
    // The assessment table scores the centre.
    console
        .must(json!({"do": "waitText", "selector": "#assessment", "contains": "gw-con", "timeoutMs": 10000}))
        .await;
    let centres = console
        .must(json!({"do": "text", "selector": "#centres"}))
        .await;
    assert!(
        centres["text"].as_str().unwrap().contains("gw-con"),
        "{centres}"
    );
    console.quit().await;
    gw.stop().await.unwrap();
    central.stop().await.unwrap();
}
