//! Residents' cases worked in the operator console, in a real browser (headless Chromium): a
//! resident hands in a dispute at the kiosk page; an administrator makes the grid station's
//! account in the console; the street's supervisor finds it in the queue
//! and assigns it to its grid station; another station's operator can neither list nor open
//! it (in the console or through the API); the station's operator works it through mediation,
//! an agreement, its resolution and the follow-up visit to closed; and the resident sees each
//! step on the kiosk page by the receipt.

use std::time::Duration;

use gridedge_tests::browser::ConsoleDriver;
use gridedge_tests::services::{operator_password, viewer_token, SigningCentral, TestGateway};
use gridedge_tests::{eventually, init_test_logging, workspace_root, Mosquitto};
use serde_json::{json, Value};

const STATION: &str = "11019900100001002";
const WANG: &str = "网格员王的密码-2026";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_works_a_dispute_from_the_kiosk_to_closed_in_the_console() {
    init_test_logging();
    let broker = Mosquitto::start().unwrap();
    let SigningCentral {
        central,
        trust,
        keys: _keys,
    } = SigningCentral::external(&broker.url()).await.unwrap();
    let (status, v) = central
        .post_masterdata(&workspace_root().join("deploy/sample-data"))
        .await
        .unwrap();
    assert_eq!(status, 201, "{v}");
    let gw = TestGateway::start_with("gw-desk", &broker.url(), None, &trust)
        .await
        .unwrap();
    gw.replica_at(1).await.unwrap();

    let mut b = ConsoleDriver::start().unwrap();
    b.must(
        json!({"do": "kiosk", "url": gw.url(&format!("/kiosk#token={}", viewer_token("gw-desk")))}),
    )
    .await;
    let handed = b
        .must(
            json!({"do": "kioskSubmit", "category": "dispute", "grid": STATION,
            "title": "楼上漏水纠纷", "description": "楼上卫生间漏水，协商未果",
            "name": "张女士", "phone": "13800001234"}),
        )
        .await;
    let receipt = handed["receipt"].as_str().unwrap().to_owned();
    let api = central.console("super").await.unwrap();
    eventually("the case at central", Duration::from_secs(20), || async {
        let (s, _) = api.get(&format!("/api/v1/cases/{receipt}")).await;
        (s == 200).then_some(())
    })
    .await
    .unwrap();
    b.must(json!({"do": "kioskStatus", "receipt": receipt, "status": "registered"}))
        .await;

    // The administrator makes the station's account in the console.
    b.must(json!({"do": "open", "url": central.url("/console")}))
        .await;
    b.must(json!({"do": "login", "name": "admin", "password": operator_password("admin")}))
        .await;
    let made = b
        .must(
            json!({"do": "createAccount", "name": "grid-wang", "role": "operator",
            "scope": STATION, "password": WANG}),
        )
        .await;
    let wang = made["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "grid-wang")
        .cloned();
    assert_eq!(
        wang,
        Some(json!({"name": "grid-wang", "scope": STATION, "disabled": "false"})),
        "{made}"
    );
    b.must(json!({"do": "logout"})).await;

    // The street's supervisor: the queue, filtered to disputes, holds it; they assign it.
    b.must(json!({"do": "login", "name": "super", "password": operator_password("super")}))
        .await;
    let queue = b
        .must(json!({"do": "filterCases", "category": "dispute"}))
        .await;
    assert_eq!(queue["receipts"], json!([receipt]), "{queue}");
    let queue = b
        .must(json!({"do": "filterCases", "category": "application"}))
        .await;
    assert_eq!(queue["receipts"], json!([]), "the filter filters: {queue}");
    let queue = b
        .must(json!({"do": "filterCases", "grid": STATION, "status": "registered"}))
        .await;
    assert_eq!(queue["receipts"], json!([receipt]), "{queue}");
    b.must(json!({"do": "view", "hash": format!("case/{receipt}")}))
        .await;
    let offered = b.must(json!({"do": "caseActions"})).await;
    let offered = &offered["actions"];
    assert!(
        offered.as_array().unwrap().contains(&json!("assign")),
        "{offered}"
    );
    assert!(
        !offered.as_array().unwrap().contains(&json!("resolve")),
        "not before it is worked: {offered}"
    );
    let step = b
        .must(json!({"do": "caseStep", "action": "assign",
            "fields": {"station": STATION, "person": "王网格员", "note": "请两日内上门"}}))
        .await;
    assert_eq!(step["status"], "assigned", "{step}");
    b.must(json!({"do": "kioskStatus", "receipt": receipt, "status": "assigned"}))
        .await;
    b.must(json!({"do": "logout"})).await;

    // Another station's operator: not in their queue, not opened by its receipt, not through
    // the API either, and nothing to act on.
    b.must(json!({"do": "login", "name": "station-3", "password": operator_password("station-3")}))
        .await;
    let theirs = b.must(json!({"do": "filterCases"})).await;
    assert_eq!(theirs["receipts"], json!([]), "{theirs}");
    b.must(json!({"do": "view", "hash": format!("case/{receipt}")}))
        .await;
    let shown = b.must(json!({"do": "caseActions"})).await;
    assert_eq!(shown["missing"], true, "{shown}");
    assert_eq!(shown["actions"], json!([]), "{shown}");
    let other = central.console("station-3").await.unwrap();
    let (s, v) = other.get(&format!("/api/v1/cases/{receipt}")).await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = other
        .post(
            &format!("/api/v1/cases/{receipt}/actions"),
            json!({"action": "note", "note": "看看"}),
        )
        .await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = other.get("/api/v1/cases?limit=1000").await;
    assert_eq!((s, v["total"].clone()), (200, json!(0)), "{v}");
    b.must(json!({"do": "logout"})).await;

    // The station's operator works it to the end; the kiosk follows every step.
    b.must(json!({"do": "login", "name": "grid-wang", "password": WANG}))
        .await;
    let mine = b.must(json!({"do": "filterCases"})).await;
    assert_eq!(mine["receipts"], json!([receipt]), "{mine}");
    b.must(json!({"do": "view", "hash": format!("case/{receipt}")}))
        .await;
    let offered = b.must(json!({"do": "caseActions"})).await;
    assert!(
        !offered["actions"]
            .as_array()
            .unwrap()
            .contains(&json!("assign")),
        "station staff do not assign: {offered}"
    );
    let steps = [
        ("accept", json!({}), "accepted", ""),
        (
            "mediate",
            json!({"note": "双方到社区调解室", "parties": "张女士, 李先生"}),
            "handling",
            "双方到社区调解室",
        ),
        (
            "agree",
            json!({"note": "签订调解协议，楼上负责维修"}),
            "handling",
            "签订调解协议",
        ),
        (
            "resolve",
            json!({"note": "维修完成"}),
            "resolved",
            "维修完成",
        ),
        (
            "visit",
            json!({"note": "回访：张女士满意"}),
            "resolved",
            "回访",
        ),
        ("close", json!({}), "closed", ""),
    ];
    for (action, fields, status, note) in steps {
        let step = b
            .must(json!({"do": "caseStep", "action": action, "fields": fields}))
            .await;
        assert_eq!(step["status"], status, "{action}: {step}");
        let seen = b
            .must(json!({"do": "kioskStatus", "receipt": receipt, "status": status, "contains": note}))
            .await;
        eprintln!("{action}: the kiosk showed it after {} ms", seen["ms"]);
    }
    let done = b.must(json!({"do": "caseActions"})).await;
    assert!(
        !done["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a != "note"),
        "a closed case takes only notes: {done}"
    );
    let (_, case): (u16, Value) = api.get(&format!("/api/v1/cases/{receipt}")).await;
    let history: Vec<(&str, &str)> = case["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["action"].as_str().unwrap(), h["by"].as_str().unwrap()))
        .collect();
    assert_eq!(
        history,
        [
            ("register", "central"),
            ("assign", "super"),
            ("accept", "grid-wang"),
            ("mediate", "grid-wang"),
            ("agree", "grid-wang"),
            ("resolve", "grid-wang"),
            ("visit", "grid-wang"),
            ("close", "grid-wang"),
        ]
    );
    assert_eq!(
        case["history"][3]["details"]["parties"],
        json!(["张女士", "李先生"])
    );
    assert_eq!(case["outcome"], "agreement");
    b.quit().await;
}
