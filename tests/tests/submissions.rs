//! Residents' submissions: taken at a kiosk with the broker down, kept over a gateway restart,
//! turned into exactly one case at central once the link is back, routed to the grid's
//! station, and their status back at the kiosk.

use std::time::Duration;

use gridedge_tests::services::{TestCentral, TestGateway};
use gridedge_tests::terminals::{terminal_token, terminal_toml};
use gridedge_tests::{eventually, init_test_logging, try_json_api, workspace_root, Mosquitto};
use serde_json::{json, Value};

async fn post(gw: &TestGateway, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(gw.url("/api/v1/kiosk/submissions"))
        .bearer_auth(terminal_token("kiosk-a"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn status_at_kiosk(gw: &TestGateway, receipt: &str) -> Option<Value> {
    let r = reqwest::Client::new()
        .get(gw.url(&format!("/api/v1/kiosk/submissions/{receipt}")))
        .bearer_auth(terminal_token("kiosk-a"))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_taken_offline_survives_a_restart_and_becomes_one_routed_case() {
    init_test_logging();
    let mut broker = Mosquitto::start().unwrap();
    let central = TestCentral::external(&broker.url(), None).await.unwrap();
    // Central knows the street's grids, so it can route.
    let (status, _) = central
        .post_masterdata(&workspace_root().join("deploy/sample-data"))
        .await
        .unwrap();
    assert_eq!(status, 201);

    let dir = tempfile::tempdir().unwrap();
    let extra = terminal_toml(
        dir.path(),
        "kiosk-a",
        "kiosk",
        "{ mode = \"heartbeat\", interval = \"1h\" }",
    );
    let mut gw = TestGateway::start_with("gw-cases", &broker.url(), None, &extra)
        .await
        .unwrap();
    central
        .wait_presence("gw-cases", "online", Duration::from_secs(10))
        .await
        .unwrap();

    // The WAN (here: the broker) goes down; the kiosk still takes submissions.
    broker.stop().unwrap();
    let dispute = json!({
        "category": "dispute",
        "grid": "11019900100001002",
        "title": "楼上漏水纠纷",
        "description": "楼上卫生间漏水到我家，协商未果，请求调解。",
        "contact": { "name": "张女士", "phone": "13800138000" },
    });
    let (status, answer) = post(&gw, &dispute).await;
    assert_eq!(status, 201, "{answer}");
    let receipt = answer["receipt"].as_str().unwrap().to_owned();
    assert!(receipt.starts_with("gw-cases-"), "{receipt}");
    assert_eq!(answer["status"], "submitted");
    // The receipt ends in a random check code: without it, or with another, it reads nothing
    // (receipts are numbered in order; the number alone would let anyone read every case).
    let (number, check) = receipt.rsplit_once('-').unwrap();
    assert!(firmware_config::wire::is_receipt_check(check), "{receipt}");
    let other_check: String = check
        .chars()
        .map(|c| if c == 'A' { 'B' } else { 'A' })
        .collect();
    for guess in [number.to_owned(), format!("{number}-{other_check}")] {
        let r = reqwest::Client::new()
            .get(gw.url(&format!("/api/v1/kiosk/submissions/{guess}")))
            .bearer_auth(terminal_token("kiosk-a"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404, "{guess}");
    }

    // Bad submissions are refused with the field named, and store nothing.
    for (bad, field) in [
        (
            json!({"category": "report", "title": "x", "contact": {"name": "李", "phone": "12345"}}),
            "contact.phone",
        ),
        (
            json!({"category": "application", "title": "申请低保", "contact": {"name": "李", "phone": "13800138000"}}),
            "item_code",
        ),
        (
            json!({"category": "report", "title": "x", "contact": {"name": "李", "phone": "13800138000"}, "id_number": "1101"}),
            "id_number",
        ),
        (
            json!({"category": "complaint", "title": "x", "contact": {"name": "李", "phone": "13800138000"}}),
            "category",
        ),
    ] {
        let (status, answer) = post(&gw, &bad).await;
        assert_eq!(status, 400, "{field}: {answer}");
        assert!(
            answer["error"].as_str().unwrap_or("").contains(field),
            "{field}: {answer}"
        );
    }

    // The gateway restarts while the broker is still down: the submission is still there.
    gw.restart_with(|_| {}).await.unwrap();
    let s = status_at_kiosk(&gw, &receipt).await.unwrap();
    assert_eq!(s["status"], "submitted", "{s}");

    // The link is back: exactly one case, routed to the grid's station and its leader.
    broker.start_again().unwrap();
    let case = eventually("the case at central", Duration::from_secs(30), || async {
        let c = try_json_api(central.url(&format!("/api/v1/cases/{receipt}"))).await?;
        c.get("receipt").is_some().then_some(c)
    })
    .await
    .unwrap();
    assert_eq!(case["status"], "registered", "{case}");
    assert!(
        case["station_name"].as_str().unwrap().contains("东风巷"),
        "{case}"
    );
    assert!(
        case["assignee"].as_str().unwrap().contains("网格长"),
        "{case}"
    );
    assert_eq!(case["submission"]["contact"]["phone"], "13800138000");

    // Its status comes back to the kiosk.
    eventually(
        "registered at the kiosk",
        Duration::from_secs(20),
        || async {
            let s = status_at_kiosk(&gw, &receipt).await?;
            (s["status"] == "registered").then_some(())
        },
    )
    .await
    .unwrap();
    // Worked at central step by step, by the street and by the grid station; the kiosk
    // follows.
    let station = case["station"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/cases/{receipt}/actions");
    let act = |body: Value| {
        let url = central.url(&path);
        async move {
            let r = gridedge_tests::services::api_client()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, answer) = act(json!({"action": "resolve", "note": "x"})).await;
    assert_eq!(status, 400, "not before it is assigned: {answer}");
    let (status, answer) =
        act(json!({"action": "assign", "station": station, "person": "网格长"})).await;
    assert_eq!(status, 200, "{answer}");
    // Another grid station's operator: no such case, however asked.
    let other = central.console("station-3").await.unwrap();
    let (status, list) = other.get("/api/v1/cases").await;
    assert_eq!((status, list["total"].as_u64()), (200, Some(0)), "{list}");
    let (status, _) = other.get(&format!("/api/v1/cases/{receipt}")).await;
    assert_eq!(status, 404, "another station's case is not there for it");
    let (status, _) = other.post(&path, json!({"action": "accept"})).await;
    assert_eq!(status, 404, "nor can it act on it");
    let (status, _) = other.get(&format!("/api/v1/cases?grid={station}")).await;
    assert_eq!(status, 200);
    // The case's own station sees and works it; it may not assign.
    let own = central.console("station-2").await.unwrap();
    let (_, list) = own.get("/api/v1/cases?status=assigned").await;
    assert_eq!(list["cases"][0]["receipt"], receipt.as_str(), "{list}");
    let (status, _) = own
        .post(
            &path,
            json!({"action": "assign", "station": "11019900100001003", "person": "x"}),
        )
        .await;
    assert_eq!(status, 403, "station staff do not assign");
    for step in [
        json!({"action": "accept"}),
        json!({"action": "mediate", "note": "双方到场调解", "parties": ["甲", "乙"]}),
        json!({"action": "agree", "note": "达成一致"}),
    ] {
        let (status, answer) = own.post(&path, step.clone()).await;
        assert_eq!(status, 200, "{step}: {answer}");
    }
    eventually("handling at the kiosk", Duration::from_secs(20), || async {
        let s = status_at_kiosk(&gw, &receipt).await?;
        (s["status"] == "handling").then_some(())
    })
    .await
    .unwrap();
    // Its community's supervisor sees it too.
    let community = central.console("community-1").await.unwrap();
    let (status, c) = community.get(&format!("/api/v1/cases/{receipt}")).await;
    assert_eq!((status, c["mediations"].as_u64()), (200, Some(1)), "{c}");
    let (status, _) =
        act(json!({ "action": "resolve", "note": "双方已签调解协议", "by": "调解员王" })).await;
    assert_eq!(status, 200);
    let s = eventually("resolved at the kiosk", Duration::from_secs(20), || async {
        let s = status_at_kiosk(&gw, &receipt).await?;
        (s["status"] == "resolved").then_some(s)
    })
    .await
    .unwrap();
    assert_eq!(s["note"], "双方已签调解协议");
    let case = try_json_api(central.url(&format!("/api/v1/cases/{receipt}")))
        .await
        .unwrap();
    assert_eq!(
        case["history"].as_array().unwrap().last().unwrap()["by"],
        "test-admin for 调解员王",
        "the change names its caller: {case}"
    );
    let all = try_json_api(central.url("/api/v1/cases")).await.unwrap();
    assert_eq!(all["cases"].as_array().unwrap().len(), 1, "{all}");
    gw.stop().await.unwrap();
    central.stop().await.unwrap();
}
