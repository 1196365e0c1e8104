//! The service hall's kiosk page in a real browser (headless Chromium): a resident searches a
//! service, finds their grid by address, hands in a report and follows it until central has
//! registered it at the grid station; then the same with the WAN down.

use std::time::Duration;

use gridedge_tests::browser::use_kiosk;
use gridedge_tests::services::{viewer_token, SigningCentral, TestGateway};
use gridedge_tests::{init_test_logging, try_json, workspace_root, Mosquitto};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resident_uses_the_kiosk_page_online_and_with_the_wan_down() {
    init_test_logging();
    // On Mosquitto, so that the WAN can really go down (the embedded broker cannot be stopped).
    let mut broker = Mosquitto::start().unwrap();
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
    let gw = TestGateway::start_with("gw-page", &broker.url(), None, &trust)
        .await
        .unwrap();
    gw.replica_at(1).await.unwrap();
    // The terminal is provisioned with its token in the address's fragment, which no server
    // sees; the page trades it for a session cookie and drops it from the address.
    let url = gw.url(&format!("/kiosk#token={}", viewer_token("gw-page")));
    let u = url.clone();
    let seen =
        tokio::task::spawn_blocking(move || use_kiosk(&u, "registered", Duration::from_secs(30)))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(seen["error"], serde_json::Value::Null, "{seen}");
    assert_eq!(
        seen["tokenHidden"], true,
        "the token is taken out of the address"
    );
    assert_eq!(
        seen["cookieHidden"], true,
        "the session cookie is HttpOnly: the page's scripts cannot read it"
    );
    assert_eq!(seen["hits"][0], "MZ110199-0001", "{seen}");
    assert_eq!(seen["item"]["code"], "MZ110199-0001");
    assert_eq!(
        seen["item"]["steps"],
        serde_json::json!(["申请", "受理", "审查", "决定", "送达"])
    );
    assert!(seen["item"]["materials"].as_u64().unwrap() >= 2, "{seen}");
    assert_eq!(seen["grid"]["code"], "11019900100001002", "{seen}");
    assert_eq!(seen["grid"]["staff"].as_array().unwrap().len(), 3);
    assert!(!seen["grid"]["party"].as_array().unwrap().is_empty());
    let receipt = seen["receipt"].as_str().unwrap();
    assert!(receipt.starts_with("gw-page-"), "{seen}");
    assert_eq!(
        seen["status"], "registered",
        "central's registration came back: {seen}"
    );
    assert!(seen["statusText"].as_str().unwrap().contains("已登记"));
    assert_eq!(seen["content"].as_array().unwrap().len(), 3, "{seen}");
    assert!(
        seen["document"].as_str().unwrap().contains("代办"),
        "{seen}"
    );
    assert!(seen["link"].as_str().unwrap().contains("已连接"), "{seen}");
    // Central's case is the one the kiosk's receipt names.
    let case = gridedge_tests::try_json_api(central.url(&format!("/api/v1/cases/{receipt}")))
        .await
        .unwrap();
    assert_eq!(case["station"], "11019900100001002", "{case}");

    // The WAN down: the page still answers and takes the report, which waits on the gateway.
    broker.stop().unwrap();
    gridedge_tests::eventually(
        "the gateway to see the link down",
        Duration::from_secs(20),
        || async {
            let h = try_json(gw.url("/healthz")).await?;
            (h["uplink"] == "disconnected").then_some(())
        },
    )
    .await
    .unwrap();
    let seen =
        tokio::task::spawn_blocking(move || use_kiosk(&url, "submitted", Duration::from_secs(5)))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(seen["error"], serde_json::Value::Null, "{seen}");
    assert_eq!(seen["hits"][0], "MZ110199-0001", "{seen}");
    assert_eq!(seen["grid"]["code"], "11019900100001002");
    assert_eq!(seen["status"], "submitted", "{seen}");
    assert!(seen["link"].as_str().unwrap().contains("离线"), "{seen}");
    gw.stop().await.unwrap();
    central.stop().await.unwrap();
}
