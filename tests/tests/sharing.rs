//! Video sharing through central: signed, expiring grants; the gateway pushes a shared camera
//! on a connection it opens; central fans it out; revocation, forgery and expiry; resuming
//! after the camera or the gateway restarts.

use std::time::{Duration, Instant};

use gridedge_tests::browser::watch_playing;
use gridedge_tests::live::Viewer;
use gridedge_tests::services::{TestCentral, TestGateway};
use gridedge_tests::{
    camera_toml, eventually, init_test_logging, try_json, CameraOptions, Pattern, TestCamera,
};
use serde_json::{json, Value};

/// Central, a camera, and a gateway on central that streams it as `hall`.
async fn setup(gw_id: &str) -> (TestCentral, TestCamera, TestGateway) {
    let central = TestCentral::embedded().await.unwrap();
    let cam = TestCamera::start(CameraOptions::small(Pattern::Moving)).unwrap();
    let gw = TestGateway::start_with(
        gw_id,
        central.broker_url.as_deref().unwrap(),
        None,
        &camera_toml("hall", cam.url().as_str(), ""),
    )
    .await
    .unwrap();
    let url = central.url("/api/v1/gateways");
    eventually(
        "the gateway online at central",
        Duration::from_secs(20),
        || async {
            let gws = gridedge_tests::try_json_api(&url).await?;
            gws.as_array()?
                .iter()
                .any(|g| g["id"] == gw_id && g["presence"] == "online")
                .then_some(())
        },
    )
    .await
    .unwrap();
    (central, cam, gw)
}

async fn share(central: &TestCentral, body: Value) -> (u16, Value) {
    let r = gridedge_tests::services::api_client()
        .post(central.url("/api/v1/shares"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn ws(central: &TestCentral, path: &str) -> String {
    format!("ws://{}{path}", central.http_addr)
}

async fn gateway_viewers(gw: &TestGateway) -> u64 {
    try_json(gw.url("/api/v1/cameras/hall"))
        .await
        .and_then(|c| c["viewers"].as_u64())
        .unwrap_or(u64::MAX)
}

/// Central's share audit trail, newest first (its last 100 entries).
async fn share_audit(central: &TestCentral) -> Vec<Value> {
    let audit = gridedge_tests::try_json_api(central.url("/api/v1/audit?limit=100"))
        .await
        .unwrap();
    audit.as_array().cloned().unwrap_or_default()
}

async fn grant_view(central: &TestCentral, id: &str) -> Value {
    let all = gridedge_tests::try_json_api(central.url("/api/v1/shares"))
        .await
        .unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == id)
        .cloned()
        .unwrap()
}

#[tokio::test]
async fn a_shared_camera_plays_at_central_and_ten_viewers_make_one_push() {
    init_test_logging();
    let (central, _cam, gw) = setup("gw-share").await;
    let (status, granted) = share(
        &central,
        json!({"gateway": "gw-share", "camera": "hall", "viewers": ["ops-zhang", "grid-b-terminal"], "minutes": 5, "by": "supervisor-li"}),
    )
    .await;
    assert_eq!(status, 201, "{granted}");
    // The grant names the caller (the test's API token), with whom it says it acts for.
    assert_eq!(
        granted["grant"]["issued_by"], "test-admin for supervisor-li",
        "{granted}"
    );
    let id = granted["grant"]["id"].as_str().unwrap().to_owned();
    let page = central.url(granted["viewers"][0]["page"].as_str().unwrap());
    // Nobody watches yet: nothing is pulled from the gateway.
    assert_eq!(grant_view(&central, &id).await["pushing"], false);
    assert_eq!(gateway_viewers(&gw).await, 0);

    let t0 = Instant::now();
    let w = watch_playing(page, 1.0, Duration::from_secs(30)).await;
    assert_eq!((w.second[0].width, w.second[0].height), (320, 180), "{w:?}");
    eprintln!("share page played after {:?}", t0.elapsed());

    // Ten viewers under the grant: one push from the gateway.
    let live = granted["viewers"][1]["live"].as_str().unwrap();
    let mut viewers = Vec::new();
    for _ in 0..10 {
        viewers.push(Viewer::connect(&ws(&central, live)).await.unwrap());
    }
    eventually("all ten receive video", Duration::from_secs(20), || async {
        viewers
            .iter()
            .all(|v| v.received.binary() > 25)
            .then_some(())
    })
    .await
    .unwrap();
    let g = grant_view(&central, &id).await;
    assert_eq!(
        (g["viewers_watching"].as_u64(), g["pushing"].as_bool()),
        (Some(10), Some(true)),
        "{g}"
    );
    assert_eq!(
        gateway_viewers(&gw).await,
        1,
        "one push, whatever the number of viewers"
    );
    assert_eq!(viewers[0].received.texts()[0]["width"], 320);
    // Everyone leaves: the push ends after its linger.
    drop(viewers);
    eventually("the push ends", Duration::from_secs(20), || async {
        (gateway_viewers(&gw).await == 0).then_some(())
    })
    .await
    .unwrap();
    let audit = share_audit(&central).await;
    let whats: Vec<&str> = audit.iter().filter_map(|e| e["what"].as_str()).collect();
    for what in [
        "share.granted",
        "share.viewer_joined",
        "share.viewer_left",
        "share.push_started",
        "share.push_ended",
    ] {
        assert!(whats.contains(&what), "{what} missing from {whats:?}");
    }
    assert!(
        audit.iter().any(|e| e["viewer"] == "ops-zhang"),
        "{audit:?}"
    );
}

#[tokio::test]
async fn forged_expired_and_revoked_grants_are_refused_and_revocation_cuts_viewers_off() {
    init_test_logging();
    let (central, _cam, gw) = setup("gw-grant").await;
    let body = |extra: Value| {
        let mut b = json!({"gateway": "gw-grant", "camera": "hall", "viewers": ["ops-wang"], "by": "supervisor-li"});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    // Bad requests say what is wrong.
    let (status, e) = share(&central, body(json!({"minutes": 0}))).await;
    assert_eq!(status, 400, "{e}");
    let (status, e) = share(&central, body(json!({"minutes": 100000}))).await;
    assert_eq!(status, 400, "{e}");
    let (status, e) = share(&central, json!({"gateway": "gw-grant"})).await;
    assert_eq!(status, 400, "{e}");

    let (_, granted) = share(&central, body(json!({"minutes": 5}))).await;
    let token = granted["viewers"][0]["token"].as_str().unwrap().to_owned();
    // A forged token (another viewer's name under this signature) and garbage: 403.
    let (claims, sig) = token.split_once('.').unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut c: Value = serde_json::from_slice(&b64.decode(claims).unwrap()).unwrap();
    c["v"] = json!("intruder");
    let forged = format!("{}.{sig}", b64.encode(serde_json::to_vec(&c).unwrap()));
    for bad in [forged.as_str(), "garbage", ""] {
        let e = Viewer::connect(&ws(&central, &format!("/api/v1/shares/live?token={bad}")))
            .await
            .err()
            .unwrap_or_else(|| panic!("{bad:?} was let in"));
        assert!(e.to_string().contains("403"), "{bad:?}: {e}");
    }
    // An expired one.
    let (_, short) = share(&central, body(json!({"seconds": 1}))).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let e = Viewer::connect(&ws(&central, short["viewers"][0]["live"].as_str().unwrap()))
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("403"), "{e}");
    // None of that pulled anything from the gateway.
    assert_eq!(gateway_viewers(&gw).await, 0);

    // A real viewer, then the grant is revoked: cut off within 2 s.
    let viewer = Viewer::connect(&ws(
        &central,
        granted["viewers"][0]["live"].as_str().unwrap(),
    ))
    .await
    .unwrap();
    eventually("video arrives", Duration::from_secs(20), || async {
        (viewer.received.binary() > 10).then_some(())
    })
    .await
    .unwrap();
    let id = granted["grant"]["id"].as_str().unwrap();
    let revoked_at = Instant::now();
    let r = gridedge_tests::services::api_client()
        .delete(central.url(&format!("/api/v1/shares/{id}?by=supervisor-li")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let closed = eventually("the viewer cut off", Duration::from_secs(5), || async {
        viewer.received.closed_at()
    })
    .await
    .unwrap();
    let took = closed.duration_since(revoked_at);
    assert!(took <= Duration::from_secs(2), "cut off after {took:?}");
    let audit = share_audit(&central).await;
    let revoked = audit
        .iter()
        .find(|e| e["what"] == "share.revoked")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        revoked["by"], "test-admin for supervisor-li",
        "the revocation names its caller: {audit:?}"
    );
    let last = viewer.received.texts();
    assert!(
        last.iter().any(|t| t["error"] == "the share ended"),
        "{last:?}"
    );
    // And the token no longer opens anything.
    let e = Viewer::connect(&ws(
        &central,
        granted["viewers"][0]["live"].as_str().unwrap(),
    ))
    .await
    .err()
    .unwrap();
    assert!(e.to_string().contains("403"), "{e}");
}

#[tokio::test]
async fn the_shared_stream_resumes_after_the_camera_and_the_gateway_restart() {
    init_test_logging();
    let (central, mut cam, mut gw) = setup("gw-resume").await;
    let (_, granted) = share(
        &central,
        json!({"gateway": "gw-resume", "camera": "hall", "viewers": ["ops-zhao"], "minutes": 10, "by": "supervisor-li"}),
    )
    .await;
    let viewer = Viewer::connect(&ws(
        &central,
        granted["viewers"][0]["live"].as_str().unwrap(),
    ))
    .await
    .unwrap();
    let flowing = |after: u64, what: &'static str| {
        let r = viewer.received.clone();
        async move {
            eventually(what, Duration::from_secs(40), || async {
                (r.binary() > after + 25).then_some(())
            })
            .await
            .unwrap();
        }
    };
    flowing(0, "video at first").await;
    cam.restart().unwrap();
    let n = viewer.received.binary();
    flowing(n, "video after the camera restarted").await;
    gw.restart_with(|_| {}).await.unwrap();
    let n = viewer.received.binary();
    flowing(n, "video after the gateway restarted").await;
    assert!(
        viewer.received.closed_at().is_none(),
        "the viewer was dropped"
    );
    // The restarted gateway pushes again, once, under the same grant.
    assert_eq!(gateway_viewers(&gw).await, 1);
    let g = grant_view(&central, granted["grant"]["id"].as_str().unwrap()).await;
    assert_eq!(g["pushing"], true, "{g}");
    let audit = share_audit(&central).await;
    let pushes = audit
        .iter()
        .filter(|e| e["what"] == "share.push_started")
        .count();
    assert_eq!(
        pushes, 2,
        "one push before the gateway restarted, one after: {audit:?}"
    );
    // A new track came with each new session (the player appends its init segment).
    assert!(
        viewer.received.texts().len() >= 2,
        "{:?}",
        viewer.received.texts()
    );
}

#[tokio::test]
async fn shares_work_over_https_with_the_gateway_pushing_over_wss() {
    init_test_logging();
    let dir = tempfile::tempdir().unwrap();
    let pki = gridedge_tests::TestPki::new(dir.path()).unwrap();
    let (central, mqtts) = TestCentral::embedded_tls_with(&pki, true).await.unwrap();
    let cam = TestCamera::start(CameraOptions::small(Pattern::Moving)).unwrap();
    let gw = TestGateway::start_with(
        "gw-tls",
        &mqtts,
        Some(&pki.client("gw-tls").unwrap()),
        &camera_toml("hall", cam.url().as_str(), ""),
    )
    .await
    .unwrap();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca_file).unwrap()).unwrap();
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", gridedge_tests::services::API_TOKEN)
            .parse()
            .unwrap(),
    );
    let https = reqwest::Client::builder()
        .add_root_certificate(ca)
        .default_headers(auth)
        .build()
        .unwrap();
    let base = format!("https://localhost:{}", central.http_addr.port());
    // Plain HTTP is not served any more.
    assert!(reqwest::get(central.url("/healthz")).await.is_err());
    eventually(
        "the gateway online at central",
        Duration::from_secs(30),
        || async {
            let gws: Value = https
                .get(format!("{base}/api/v1/gateways"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            gws.to_string()
                .contains("\"presence\":\"online\"")
                .then_some(())
        },
    )
    .await
    .unwrap();
    let granted: Value = https
        .post(format!("{base}/api/v1/shares"))
        .json(&json!({"gateway": "gw-tls", "camera": "hall", "viewers": ["ops-zhang"], "minutes": 5, "by": "supervisor-li"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The relay URL the gateway is given is https://, so it pushes over wss://.
    let live = granted["viewers"][0]["live"].as_str().unwrap();
    let viewer = Viewer::connect_tls(
        &format!("wss://localhost:{}{live}", central.http_addr.port()),
        &pki.ca_file,
    )
    .await
    .unwrap();
    eventually("video over TLS", Duration::from_secs(30), || async {
        (viewer.received.binary() > 25).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(gateway_viewers(&gw).await, 1);
}
