//! Meeting dispatch: booked at central, delivered through the gateway to a terminal that
//! long-polls for it, answered (accepted, joined) with central following each invitee's state;
//! rescheduled and cancelled everywhere; delivered after the gateway was away; and a meeting
//! that ended while it was away never shown.

use std::time::Duration;

use gridedge_tests::services::{Console, TestCentral, TestGateway};
use gridedge_tests::terminals::{terminal_token, terminal_toml};
use gridedge_tests::{eventually, init_test_logging, Mosquitto};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

fn at(secs_from_now: i64) -> String {
    (OffsetDateTime::now_utc() + time::Duration::seconds(secs_from_now))
        .format(&Rfc3339)
        .unwrap()
}

async fn book(console: &Console, body: Value) -> (u16, Value) {
    console.post("/api/v1/meetings", body).await
}

fn booking(title: &str, starts: i64, ends: i64) -> Value {
    json!({"kind": "petition", "title": title, "starts": at(starts), "ends": at(ends),
           "room": "https://meet.example/r/8801",
           "invitees": [{"gateway": "gw-meet", "terminal": "vt-1"}]})
}

/// The terminal's long poll: (version, invitations).
async fn poll(gw: &TestGateway, since: u64, wait: u64) -> (u64, Vec<Value>) {
    let v: Value = reqwest::Client::new()
        .get(gw.url(&format!(
            "/api/v1/terminals/meetings?since={since}&wait={wait}"
        )))
        .bearer_auth(terminal_token("vt-1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        v["version"].as_u64().unwrap(),
        v["invitations"].as_array().unwrap().clone(),
    )
}

async fn answer(gw: &TestGateway, meeting: &str, a: &str) -> u16 {
    reqwest::Client::new()
        .post(gw.url(&format!("/api/v1/terminals/meetings/{meeting}/answer")))
        .bearer_auth(terminal_token("vt-1"))
        .json(&json!({ "answer": a }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn invitee_state(console: &Console, id: &str, want: &str) -> Value {
    eventually(
        &format!("the invitee {want}"),
        Duration::from_secs(15),
        || async {
            let (_, m) = console.get(&format!("/api/v1/meetings/{id}")).await;
            (m["invitees"][0]["state"] == want).then_some(m)
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meeting_reaches_the_terminal_is_answered_moved_and_cancelled() {
    init_test_logging();
    // On Mosquitto: it keeps the gateway's session and queues commands while it is away.
    let broker = Mosquitto::start().unwrap();
    let central = TestCentral::external(&broker.url(), None).await.unwrap();
    let sup = central.console("super").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let extra = terminal_toml(
        dir.path(),
        "vt-1",
        "video_terminal",
        "{ mode = \"heartbeat\", interval = \"1h\" }",
    );
    let gw = TestGateway::start_with("gw-meet", &broker.url(), None, &extra)
        .await
        .unwrap();
    central
        .wait_presence("gw-meet", "online", Duration::from_secs(10))
        .await
        .unwrap();

    // Bad bookings are refused with the field named.
    for (body, want) in [
        (json!({"kind": "party"}), "missing field"),
        (
            {
                let mut b = booking("x", 60, 30);
                b["kind"] = json!("party");
                b
            },
            "kind",
        ),
        (booking("x", 60, 30), "ends must come after starts"),
        (booking("x", -7200, -3600), "already be over"),
        (
            {
                let mut b = booking("x", 60, 120);
                b["invitees"] = json!([]);
                b
            },
            "invitees",
        ),
    ] {
        let (status, v) = book(&sup, body).await;
        assert_eq!(status, 400, "{v}");
        assert!(v["error"].as_str().unwrap().contains(want), "{v}");
    }

    let (status, m) = book(&sup, booking("远程接访：红星社区", 60, 3600)).await;
    assert_eq!(status, 201, "{m}");
    let id = m["id"].as_str().unwrap().to_owned();
    assert_eq!(m["invitees"][0]["state"], "invited");
    // The terminal long-polls and gets it.
    let (version, invs) = eventually(
        "the invitation at the terminal",
        Duration::from_secs(10),
        || async {
            let (v, invs) = poll(&gw, 0, 5).await;
            (!invs.is_empty()).then_some((v, invs))
        },
    )
    .await
    .unwrap();
    assert_eq!(invs[0]["meeting"], id.as_str());
    assert_eq!(invs[0]["room"], "https://meet.example/r/8801");
    assert_eq!(invs[0]["revision"], 1);

    assert_eq!(answer(&gw, &id, "accepted").await, 202);
    invitee_state(&sup, &id, "accepted").await;
    assert_eq!(answer(&gw, &id, "joined").await, 202);
    let m = invitee_state(&sup, &id, "joined").await;
    assert_eq!(m["invitees"][0]["attended"], true);
    assert_eq!(answer(&gw, &id, "waved").await, 400);
    assert_eq!(answer(&gw, "nope", "joined").await, 404);

    // Moved: a long poll waiting on the last version wakes with the new times.
    let waiting = {
        let url = gw.url(&format!(
            "/api/v1/terminals/meetings?since={version}&wait=20"
        ));
        tokio::spawn(async move {
            let t = std::time::Instant::now();
            let v: Value = reqwest::Client::new()
                .get(url)
                .bearer_auth(terminal_token("vt-1"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (t.elapsed(), v)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = sup
        .post(
            &format!("/api/v1/meetings/{id}/reschedule"),
            json!({"starts": at(7200), "ends": at(9000)}),
        )
        .await;
    assert_eq!(status, 200);
    let (waited, v) = waiting.await.unwrap();
    assert!(
        waited < Duration::from_secs(10),
        "woken by the change, not the timeout: {waited:?}"
    );
    assert_eq!(v["invitations"][0]["revision"], 2, "{v}");

    // Cancelled: the terminal sees it, and can no longer answer.
    let (status, _) = sup
        .post(&format!("/api/v1/meetings/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200);
    eventually(
        "the cancellation at the terminal",
        Duration::from_secs(10),
        || async {
            let (_, invs) = poll(&gw, 0, 0).await;
            (invs[0]["cancelled"] == true).then_some(())
        },
    )
    .await
    .unwrap();
    assert_eq!(answer(&gw, &id, "joined").await, 409);
    let (status, _) = sup
        .post(&format!("/api/v1/meetings/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 409);
    // An operator sees meetings but may not book them.
    let op = central.console("op").await.unwrap();
    assert_eq!(op.get(&format!("/api/v1/meetings/{id}")).await.0, 200);
    assert_eq!(book(&op, booking("x", 60, 120)).await.0, 403);

    // The gateway away: a meeting that will still be on reaches the terminal once it is back
    // (the broker queues the invitation); one that ended meanwhile never shows.
    gw.stop().await.unwrap();
    let (status, on) = book(&sup, booking("网上巡查", 600, 3600)).await;
    assert_eq!(status, 201, "{on}");
    let (status, over) = book(&sup, booking("调度：已过时", 0, 3)).await;
    assert_eq!(status, 201, "{over}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let gw = TestGateway::start_with("gw-meet", &broker.url(), None, &extra)
        .await
        .unwrap();
    let invs = eventually("the queued invitation", Duration::from_secs(15), || async {
        let (_, invs) = poll(&gw, 0, 2).await;
        invs.iter()
            .any(|i| i["meeting"] == on["id"])
            .then_some(invs)
    })
    .await
    .unwrap();
    assert!(invs.iter().all(|i| i["meeting"] != over["id"]), "{invs:?}");
    gw.stop().await.unwrap();
    central.stop().await.unwrap();
}
