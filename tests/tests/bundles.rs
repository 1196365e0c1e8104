//! Signed configuration bundles end to end: built and signed by central, checked, applied live
//! or refused by a real gateway, rolled back when they fail or central never confirms them, and
//! fetched by terminals.

use std::path::{Path, PathBuf};
use std::time::Duration;

use firmware_config::bundle::{self, BundleBody, Content, SignedBundle, SigningKey, Target};
use firmware_config::ids::GatewayId;
use firmware_config::topics::{Channel, Topic};
use firmware_config::wire::{self, Command, Envelope, Message};
use gridedge_tests::services::{central_events, TestCentral, TestGateway};
use gridedge_tests::terminals::{heartbeat_body, terminal_toml, Kiosk};
use gridedge_tests::{
    camera_toml, eventually, get_text, init_test_logging, try_json, CameraOptions, Mosquitto,
    Pattern, TestCamera,
};
use serde_json::{json, Value};

/// Central's key pair — the test street's, which every test central signs with and every test
/// gateway trusts: (private key file, public key file). `_dir` is unused (kept for the callers'
/// shape).
fn keys(_dir: &Path) -> (PathBuf, PathBuf) {
    gridedge_tests::services::street_keys().clone()
}

/// What a gateway adds to take bundles (central's key is already its `uplink.central_key_file`).
fn trust(_public: &Path, confirm_within: &str) -> String {
    format!("\n[bundles]\nconfirm_within = \"{confirm_within}\"\n")
}

async fn central_with_key(_private: &Path) -> TestCentral {
    TestCentral::embedded().await.unwrap()
}

async fn post(central: &TestCentral, path: &str, body: &Value) -> (u16, Value) {
    let r = gridedge_tests::services::api_client()
        .post(central.url(path))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn camera_ids(gw: &TestGateway) -> Vec<String> {
    let all = try_json(gw.url("/api/v1/cameras"))
        .await
        .unwrap_or(Value::Null);
    all.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn metric(gw: &TestGateway, line_start: &str) -> Option<f64> {
    get_text(gw.url("/metrics"))
        .await
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn signed(key: &SigningKey, gateway: &str, version: u64, toml: String) -> SignedBundle {
    key.sign(&BundleBody {
        target: Target {
            gateway: gateway.to_owned(),
            terminal: None,
        },
        version,
        issued: time::OffsetDateTime::now_utc(),
        note: "by hand".into(),
        content: Content::Gateway { toml },
    })
    .unwrap()
}

async fn central_reported(central: &TestCentral, gw: &str) -> Option<Value> {
    let all = central.gateways().await.ok()?;
    all.into_iter()
        .find(|g| g["id"] == gw)
        .map(|g| g["health"]["config"].clone())
}

#[tokio::test]
async fn terminal_settings_reach_the_terminal_with_an_etag_and_set_what_it_must_have() {
    init_test_logging();
    let keydir = tempfile::tempdir().unwrap();
    let (private, public) = keys(keydir.path());
    let central = central_with_key(&private).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = terminal_toml(
        dir.path(),
        "kiosk-a",
        "kiosk",
        "{ mode = \"heartbeat\", interval = \"1h\" }",
    ) + &trust(&public, "5m");
    let gw = TestGateway::start_with(
        "gw-settings",
        central.broker_url.as_deref().unwrap(),
        None,
        &extra,
    )
    .await
    .unwrap();
    central
        .wait_presence("gw-settings", "online", Duration::from_secs(10))
        .await
        .unwrap();
    let kiosk = Kiosk::new("kiosk-a", gw.http_addr);
    let (status, _, _) = kiosk.fetch_config(None).await.unwrap();
    assert_eq!(status, 404, "no bundle yet");

    let settings = json!({ "volume": 30, "locale": "zh-CN", "required_peripherals": ["printer", "card_reader", "scanner"] });
    let (status, answer) = post(
        &central,
        "/api/v1/bundles",
        &json!({ "gateway": "gw-settings", "terminal": "kiosk-a", "settings": settings, "note": "quieter" }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["version"], 1);
    assert_eq!(answer["outcome"], "applied");

    let (status, etag, body) = kiosk.fetch_config(None).await.unwrap();
    assert_eq!(status, 200);
    assert!(etag.starts_with("\"v1-"), "{etag}");
    // The terminal can check the signature itself.
    let trusted = bundle::VerifyingKey::load(&public).unwrap();
    let got = trusted
        .verify(&SignedBundle::parse(body.as_bytes()).unwrap())
        .unwrap();
    match got.content {
        Content::Terminal { settings } => assert_eq!(settings.volume, 30),
        other => panic!("{other:?}"),
    }
    let (status, etag2, body) = kiosk.fetch_config(Some(&etag)).await.unwrap();
    assert_eq!(
        (status, etag2.as_str(), body.as_str()),
        (304, etag.as_str(), "")
    );

    // The settings say a scanner must work; this kiosk has none: degraded, with the reason.
    let (_, answer) = kiosk.beat(&heartbeat_body(true)).await.unwrap();
    assert_eq!(answer["config_version"], 1, "{answer}");
    assert_eq!(answer["state"], "degraded", "{answer}");
    let view = try_json(gw.url("/api/v1/terminals/kiosk-a")).await.unwrap();
    assert_eq!(view["reasons"], json!(["scanner: not reported"]), "{view}");

    // New settings: a new version and a new ETag.
    let (status, answer) = post(
        &central,
        "/api/v1/bundles",
        &json!({ "gateway": "gw-settings", "terminal": "kiosk-a", "settings": { "volume": 50 } }),
    )
    .await;
    assert_eq!(
        (status, answer["version"].as_u64()),
        (200, Some(2)),
        "{answer}"
    );
    let (status, etag3, _) = kiosk.fetch_config(Some(&etag)).await.unwrap();
    assert_eq!(status, 200);
    assert_ne!(etag3, etag);
    let (_, answer) = kiosk.beat(&heartbeat_body(true)).await.unwrap();
    assert_eq!(answer["state"], "online", "{answer}");
    eventually(
        "central sees the terminal's version",
        Duration::from_secs(10),
        || async {
            let c = central_reported(&central, "gw-settings").await?;
            (c["terminals"]["kiosk-a"] == 2).then_some(())
        },
    )
    .await
    .unwrap();
    gw.stop().await.unwrap();
    central.stop().await.unwrap();
}

#[tokio::test]
async fn bad_bundles_are_refused_with_a_reason_and_change_nothing() {
    init_test_logging();
    let keydir = tempfile::tempdir().unwrap();
    let (private, public) = keys(keydir.path());
    let key = SigningKey::load(&private).unwrap();
    let central = central_with_key(&private).await;
    let gw = TestGateway::start_with(
        "gw-refuse",
        central.broker_url.as_deref().unwrap(),
        None,
        &trust(&public, "5m"),
    )
    .await
    .unwrap();
    central
        .wait_presence("gw-refuse", "online", Duration::from_secs(10))
        .await
        .unwrap();
    let base = gw.config_text().to_owned();
    let good_extra = camera_toml("extra-cam", "rtsp://127.0.0.1:1/none", "enabled = false\n");

    // A good one first, so that an older version has something to be older than.
    let (status, answer) = post(
        &central,
        "/api/v1/bundles",
        &json!({ "gateway": "gw-refuse", "toml": format!("{base}{good_extra}"), "version": 3 }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(camera_ids(&gw).await, ["extra-cam"]);

    let (other, _) = SigningKey::generate().unwrap();
    let mut altered = signed(&key, "gw-refuse", 4, base.clone());
    altered.body = altered.body.replace("\"version\":4", "\"version\":5");
    let cases: Vec<(&str, SignedBundle, &str)> = vec![
        (
            "another key",
            signed(&other, "gw-refuse", 4, base.clone()),
            "signed by key",
        ),
        ("altered", altered, "signature does not verify"),
        (
            "wrong target",
            signed(
                &key,
                "gw-elsewhere",
                4,
                base.replace("id = \"gw-refuse\"", "id = \"gw-elsewhere\""),
            ),
            "wrong target",
        ),
        (
            "older",
            signed(&key, "gw-refuse", 2, base.clone()),
            "not newer than version 3",
        ),
        (
            "invalid schema",
            signed(
                &key,
                "gw-refuse",
                4,
                format!("{base}{}", camera_toml("bad", "http://127.0.0.1/x", "")),
            ),
            "cameras[0].url",
        ),
        (
            "restart-only",
            signed(
                &key,
                "gw-refuse",
                4,
                format!("{base}{good_extra}").replace(
                    "[http]\nlisten = \"127.0.0.1:0\"",
                    "[http]\nlisten = \"127.0.0.1:1\"",
                ),
            ),
            "need a restart",
        ),
    ];
    for (what, bundle, says) in &cases {
        let (status, answer) = post(
            &central,
            "/api/v1/bundles/signed",
            &json!({ "gateway": "gw-refuse", "bundle": bundle }),
        )
        .await;
        assert_eq!(status, 409, "{what}: {answer}");
        let error = answer["error"].as_str().unwrap_or("");
        assert!(error.contains(says), "{what}: {error}");
        // Nothing changed.
        assert_eq!(camera_ids(&gw).await, ["extra-cam"], "{what}");
        assert_eq!(
            metric(&gw, "gridedge_gateway_config_version ").await,
            Some(3.0),
            "{what}"
        );
    }
    let refused = eventually(
        "central has every refusal",
        Duration::from_secs(10),
        || async {
            let events = central_events(central.http_addr, "gw-refuse").await.ok()?;
            let refused: Vec<String> = events
                .iter()
                .filter(|e| e["kind"] == "config.refused")
                .map(|e| e["payload"]["reason"].as_str().unwrap_or("").to_owned())
                .collect();
            (refused.len() == cases.len()).then_some(refused)
        },
    )
    .await
    .unwrap();
    for ((what, _, says), reason) in cases.iter().zip(&refused) {
        assert!(reason.contains(says), "{what}: {reason}");
    }
    let history = gridedge_tests::try_json_api(central.url("/api/v1/bundles"))
        .await
        .unwrap();
    assert!(
        history["bundles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["outcome"] == "refused" && b["version"] == 2),
        "{history}"
    );
    gw.stop().await.unwrap();
    central.stop().await.unwrap();
}

#[tokio::test]
async fn a_good_bundle_adds_a_camera_live_and_one_that_fails_to_apply_rolls_back() {
    init_test_logging();
    let keydir = tempfile::tempdir().unwrap();
    let (private, public) = keys(keydir.path());
    let central = central_with_key(&private).await;
    let cam = TestCamera::start(CameraOptions::small(Pattern::Moving)).unwrap();
    let mut gw = TestGateway::start_with(
        "gw-live",
        central.broker_url.as_deref().unwrap(),
        None,
        &trust(&public, "5m"),
    )
    .await
    .unwrap();
    central
        .wait_presence("gw-live", "online", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(camera_ids(&gw).await.is_empty());
    let http = gw.http_addr;
    let base = gw.config_text().to_owned();
    let with_cam = format!("{base}{}", camera_toml("lobby", cam.url().as_str(), ""));

    let (status, answer) = post(
        &central,
        "/api/v1/bundles",
        &json!({ "gateway": "gw-live", "toml": with_cam, "note": "lobby camera" }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["version"], 1);
    eventually(
        "the new camera streams",
        Duration::from_secs(20),
        || async {
            let all = try_json(gw.url("/api/v1/cameras")).await?;
            (all[0]["id"] == "lobby" && all[0]["state"] == "streaming").then_some(())
        },
    )
    .await
    .unwrap();
    assert_eq!(gw.http_addr, http, "applied without a restart");
    eventually(
        "central confirmed version 1",
        Duration::from_secs(10),
        || async {
            let c = central_reported(&central, "gw-live").await?;
            (c["gateway"] == 1 && c["confirmed"] == true).then_some(())
        },
    )
    .await
    .unwrap();

    // A camera whose password is nowhere to be read: the apply fails and nothing changes.
    let failing = format!(
        "{with_cam}{}",
        camera_toml(
            "vault",
            "rtsp://127.0.0.1:1/vault",
            "credentials = { username = \"u\", password = { env = \"GRIDEDGE_TEST_NO_SUCH_PASSWORD\" } }\n"
        )
    );
    let (status, answer) = post(
        &central,
        "/api/v1/bundles",
        &json!({ "gateway": "gw-live", "toml": failing }),
    )
    .await;
    assert_eq!(status, 409, "{answer}");
    let error = answer["error"].as_str().unwrap_or("");
    assert!(
        error.contains("apply failed, rolled back to version 1")
            && error.contains("GRIDEDGE_TEST_NO_SUCH_PASSWORD"),
        "{error}"
    );
    assert_eq!(camera_ids(&gw).await, ["lobby"]);
    assert_eq!(
        metric(&gw, "gridedge_gateway_config_version ").await,
        Some(1.0)
    );
    eventually(
        "central has the rollback",
        Duration::from_secs(10),
        || async {
            let events = central_events(central.http_addr, "gw-live").await.ok()?;
            events
                .iter()
                .any(|e| e["kind"] == "config.rolled_back" && e["payload"]["back_to"] == 1)
                .then_some(())
        },
    )
    .await
    .unwrap();

    // The bundle in force outlives a restart.
    gw.restart_with(|_| {}).await.unwrap();
    eventually(
        "the camera streams after the restart",
        Duration::from_secs(20),
        || async {
            let all = try_json(gw.url("/api/v1/cameras")).await?;
            (all[0]["id"] == "lobby" && all[0]["state"] == "streaming").then_some(())
        },
    )
    .await
    .unwrap();
    assert_eq!(
        metric(&gw, "gridedge_gateway_config_version ").await,
        Some(1.0)
    );
    gw.stop().await.unwrap();
    central.stop().await.unwrap();
}

#[tokio::test]
async fn a_bundle_central_never_confirms_is_rolled_back() {
    init_test_logging();
    let keydir = tempfile::tempdir().unwrap();
    let (private, public) = keys(keydir.path());
    let key = SigningKey::load(&private).unwrap();
    // A broker and no central: the gateway's events are never acknowledged.
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gw = TestGateway::start_with(
        "gw-unconfirmed",
        &broker.url(),
        None,
        &trust(&public, "10s"),
    )
    .await
    .unwrap();
    eventually("gateway connected", Duration::from_secs(10), || async {
        (metric(&gw, "gridedge_gateway_uplink_connected ").await? == 1.0).then_some(())
    })
    .await
    .unwrap();

    let toml = format!(
        "{}{}",
        gw.config_text(),
        terminal_toml(
            dir.path(),
            "kiosk-new",
            "kiosk",
            "{ mode = \"heartbeat\", interval = \"1h\" }"
        )
    );
    let bundle = signed(&key, "gw-unconfirmed", 1, toml);
    let mut opts = rumqttc::MqttOptions::new("test-central", "127.0.0.1", broker.addr().port());
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = rumqttc::AsyncClient::new(opts, 16);
    let id = GatewayId::new("gw-unconfirmed").unwrap();
    client
        .subscribe(
            Topic::gateway(&id, Channel::Reply).path(),
            rumqttc::QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    // This test stands in for central: it seals its command as central would.
    let command_for = |bundle: &bundle::SignedBundle, id: &str| {
        gridedge_tests::services::sealed(
            "gw-unconfirmed",
            Channel::Cmd,
            Message::Command(Command {
                id: id.into(),
                name: "config.bundle".into(),
                args: json!({ "bundle": bundle }),
            }),
        )
        .unwrap()
    };
    let command = command_for(&bundle, "b1");
    let mut sent = false;
    let reply = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) if !sent => {
                    sent = true;
                    client
                        .publish(
                            Topic::gateway(&id, Channel::Cmd).path(),
                            rumqttc::QoS::AtLeastOnce,
                            false,
                            command.clone(),
                        )
                        .await
                        .unwrap();
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    if let Ok(Envelope {
                        message: Message::Reply(r),
                        ..
                    }) = wire::decode(&p.payload)
                    {
                        return r;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("test client: {e}"),
            }
        }
    })
    .await
    .expect("a reply to the bundle");
    assert!(reply.ok, "{reply:?}");
    let applied = std::time::Instant::now();
    let ids = || async {
        let all = try_json(gw.url("/api/v1/terminals")).await?;
        Some(
            all.as_array()?
                .iter()
                .filter_map(|t| t["id"].as_str().map(str::to_owned))
                .collect::<Vec<_>>(),
        )
    };
    assert!(ids().await.unwrap().contains(&"kiosk-new".to_owned()));
    eventually("rolled back", Duration::from_secs(20), || async {
        (!ids().await?.contains(&"kiosk-new".to_owned())).then_some(())
    })
    .await
    .unwrap();
    let took = applied.elapsed();
    assert!(took >= Duration::from_secs(9), "rolled back after {took:?}");
    assert_eq!(
        metric(&gw, "gridedge_gateway_config_version ").await,
        Some(0.0)
    );
    assert_eq!(
        metric(&gw, "gridedge_gateway_bundles_total{kind=\"rolled_back\"}").await,
        Some(1.0)
    );

    // The bundle that was rolled back, sent again (a replay, freshly sealed): refused, and the
    // gateway stays on the configuration that works.
    let again = command_for(&bundle, "b2");
    client
        .publish(
            Topic::gateway(&id, Channel::Cmd).path(),
            rumqttc::QoS::AtLeastOnce,
            false,
            again,
        )
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    if let Ok(Envelope {
                        message: Message::Reply(r),
                        ..
                    }) = wire::decode(&p.payload)
                    {
                        if r.id == "b2" {
                            return r;
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("test client: {e}"),
            }
        }
    })
    .await
    .expect("a reply to the replayed bundle");
    assert!(!reply.ok, "{reply:?}");
    assert!(reply.message.contains("replay or rollback"), "{reply:?}");
    assert!(!ids().await.unwrap().contains(&"kiosk-new".to_owned()));
    // An old command, replayed as it was sent (same seal): refused before it is read.
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    client
        .publish(
            Topic::gateway(&id, Channel::Cmd).path(),
            rumqttc::QoS::AtLeastOnce,
            false,
            command,
        )
        .await
        .unwrap();
    eventually(
        "the replayed command refused",
        Duration::from_secs(10),
        || async {
            (metric(
                &gw,
                "gridedge_gateway_downlink_refused_total{reason=\"replayed\"}",
            )
            .await?
                >= 1.0)
                .then_some(())
        },
    )
    .await
    .unwrap();
    assert_eq!(
        metric(&gw, "gridedge_gateway_bundles_total{kind=\"refused\"}").await,
        Some(1.0)
    );
    gw.stop().await.unwrap();
}
