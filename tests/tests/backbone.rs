//! The backbone's promise: an event the gateway accepted reaches central exactly once, on both
//! broker paths.

use std::collections::BTreeMap;
use std::time::Duration;

use gridedge_tests::services::{central_events, TestCentral, TestGateway};
use gridedge_tests::{eventually, init_test_logging, Mosquitto};
use serde_json::{json, Value};

const CLASSES: [&str; 4] = ["alert", "submission", "health", "telemetry"];

fn batch(start: usize, n: usize) -> Value {
    Value::Array(
        (start..start + n)
            .map(|i| json!({"class": CLASSES[i % 4], "kind": "test.event", "payload": {"n": i, "note": "网格 test"}}))
            .collect(),
    )
}

/// Posts `requests` batches of `per` events; returns the accepted seq of every event number.
async fn post_all(gw: &TestGateway, requests: usize, per: usize) -> BTreeMap<u64, u64> {
    let mut accepted = BTreeMap::new();
    for r in 0..requests {
        let seqs = gw.post_events(&batch(r * per, per)).await.unwrap();
        assert_eq!(seqs.len(), per);
        for (i, seq) in seqs.into_iter().enumerate() {
            accepted.insert(seq, (r * per + i) as u64);
        }
    }
    accepted
}

/// Waits until central holds every accepted event, then checks each is there once, with its
/// own payload.
async fn assert_central_has_exactly(
    central: &TestCentral,
    gateway: &str,
    accepted: &BTreeMap<u64, u64>,
) {
    let want = accepted.len();
    let events = eventually(
        &format!("{want} events of {gateway} at central"),
        Duration::from_secs(60),
        || async {
            let events = central_events(central.http_addr, gateway).await.ok()?;
            (events.len() >= want).then_some(events)
        },
    )
    .await
    .unwrap();
    let mut seen = BTreeMap::new();
    for e in &events {
        let seq = e["seq"].as_u64().unwrap();
        assert!(
            seen.insert(seq, e["payload"]["n"].as_u64().unwrap())
                .is_none(),
            "seq {seq} twice"
        );
    }
    for (seq, n) in accepted {
        assert_eq!(
            seen.get(seq),
            Some(n),
            "accepted event seq {seq} (n {n}) missing or wrong at central"
        );
    }
}

async fn outbox_drains(gw: &TestGateway) {
    eventually(
        "the gateway's outbox to drain",
        Duration::from_secs(30),
        || async {
            let h = gridedge_tests::try_json(gw.url("/healthz")).await?;
            (h["outbox"]["pending"] == 0).then_some(())
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn events_reach_central_once_through_the_embedded_broker() {
    init_test_logging();
    let central = TestCentral::embedded().await.unwrap();
    let gw = TestGateway::start(
        "gw-bb-embedded",
        central.broker_url.as_deref().unwrap(),
        None,
    )
    .await
    .unwrap();
    let accepted = post_all(&gw, 20, 250).await;
    assert_eq!(
        accepted.keys().copied().collect::<Vec<_>>(),
        (1..=5000).collect::<Vec<u64>>()
    );
    assert_central_has_exactly(&central, "gw-bb-embedded", &accepted).await;
    outbox_drains(&gw).await;

    let gm = gridedge_tests::get_text(gw.url("/metrics")).await;
    assert!(
        gm.contains("gridedge_gateway_outbox_appended_total{class=\"alert\"} 1250"),
        "{gm}"
    );
    assert!(
        gm.contains("gridedge_gateway_outbox_acked_total 5000"),
        "{gm}"
    );
    assert!(
        gm.contains("gridedge_gateway_outbox_pending{class=\"telemetry\"} 0"),
        "{gm}"
    );
    let cm = gridedge_tests::get_text(central.url("/metrics")).await;
    assert!(
        cm.contains("gridedge_central_events_stored_total 5000"),
        "{cm}"
    );
    assert!(
        cm.contains("gridedge_central_events_duplicate_total"),
        "{cm}"
    );
    // What the gateway reports of its outbox shows at central too.
    eventually("the gateway's drained outbox reported to central", Duration::from_secs(15), || async {
        let cm = gridedge_tests::try_text(central.url("/metrics")).await?;
        (cm.contains("gridedge_central_gateway_outbox_pending{gateway=\"gw-bb-embedded\"} 0")
            && cm.contains("gridedge_central_gateway_outbox_evicted{gateway=\"gw-bb-embedded\",class=\"telemetry\"} 0"))
        .then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn events_reach_central_once_through_mosquitto_over_tls() {
    init_test_logging();
    let m = Mosquitto::start().unwrap();
    let central = TestCentral::external(&m.tls_url(), Some(&m.pki.client("central").unwrap()))
        .await
        .unwrap();
    let gw = TestGateway::start(
        "gw-bb-mosq",
        &m.tls_url(),
        Some(&m.pki.client("gw-bb-mosq").unwrap()),
    )
    .await
    .unwrap();
    let accepted = post_all(&gw, 10, 300).await;
    assert_central_has_exactly(&central, "gw-bb-mosq", &accepted).await;
    outbox_drains(&gw).await;
}

#[tokio::test]
async fn bad_requests_get_a_clear_4xx_and_store_nothing() {
    init_test_logging();
    let central = TestCentral::embedded().await.unwrap();
    let gw = TestGateway::start("gw-bb-bad", central.broker_url.as_deref().unwrap(), None)
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let url = gw.url("/api/v1/events");
    let good = json!([{"class": "alert", "kind": "door.forced", "payload": {}}]);
    let cases: Vec<(Option<&str>, Value, u16, &str)> = vec![
        (None, good.clone(), 401, "missing Authorization"),
        (Some("wrong"), good.clone(), 401, "unknown device token"),
        (
            Some("ok"),
            json!([{"class": "urgent", "kind": "x", "payload": 1}]),
            400,
            "[0].class",
        ),
        (
            Some("ok"),
            json!([{"class": "alert", "kind": "", "payload": 1}]),
            400,
            "[0].kind",
        ),
        (
            Some("ok"),
            json!([{"class": "alert", "kind": "x"}]),
            400,
            "missing field `payload`",
        ),
        (
            Some("ok"),
            json!([{"class": "alert", "kind": "x", "payload": 1, "extra": 2}]),
            400,
            "unknown field `extra`",
        ),
        (Some("ok"), json!({"class": "alert"}), 400, "body"),
        (Some("ok"), json!([]), 400, "at least one event"),
    ];
    for (token, body, status, says) in cases {
        let mut req = client.post(&url).json(&body);
        if let Some(t) = token {
            let t = if t == "ok" {
                gridedge_tests::services::source_token("gw-bb-bad")
            } else {
                t.to_owned()
            };
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert!(
            err["error"].as_str().unwrap().contains(says),
            "{body} → {err}"
        );
    }
    // A good list with something after it is still refused, and says what.
    let resp = client
        .post(&url)
        .bearer_auth(gridedge_tests::services::source_token("gw-bb-bad"))
        .header("content-type", "application/json")
        .body(format!("{good} []"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let err: Value = resp.json().await.unwrap();
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("trailing characters"),
        "{err}"
    );
    // Nothing was stored: the first good event gets sequence number 1.
    assert_eq!(gw.post_events(&good).await.unwrap(), vec![1]);
}

#[tokio::test]
async fn the_embedded_broker_takes_gateways_over_tls_and_refuses_a_foreign_certificate() {
    init_test_logging();
    let dir = tempfile::tempdir().unwrap();
    let pki = gridedge_tests::TestPki::new(dir.path()).unwrap();
    let (central, tls_url) = TestCentral::embedded_tls(&pki).await.unwrap();
    let gw = TestGateway::start(
        "gw-bb-tls",
        &tls_url,
        Some(&pki.client("gw-bb-tls").unwrap()),
    )
    .await
    .unwrap();
    let accepted = post_all(&gw, 2, 100).await;
    assert_central_has_exactly(&central, "gw-bb-tls", &accepted).await;

    let files = pki.foreign_client("gw-rogue").unwrap();
    let bad = TestGateway::start("gw-rogue", &tls_url, Some(&files))
        .await
        .unwrap();
    bad.post_events(&batch(0, 3)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let h: Value = reqwest::get(bad.url("/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["uplink"], "disconnected", "{h}");
    assert!(central.presence_of("gw-rogue").await.is_none());
}
