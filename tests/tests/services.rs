//! Central and gateway start, connect, report health, and stop, on both broker paths.

use std::time::Duration;

use firmware_config::examples;
use gridedge_tests::services::{ServiceProcess, TestCentral, TestGateway};
use gridedge_tests::{eventually, free_port, init_test_logging, Mosquitto};

const SOON: Duration = Duration::from_secs(15);

async fn wait_presence(central: &TestCentral, id: &str, want: &str) {
    central.wait_presence(id, want, SOON).await.unwrap();
}

#[tokio::test]
async fn gateway_reports_online_to_central_through_the_embedded_broker() {
    init_test_logging();
    let central = TestCentral::embedded().await.unwrap();
    let broker = central.broker_url.clone().unwrap();
    let gw = TestGateway::start("gw-embedded", &broker, None)
        .await
        .unwrap();
    wait_presence(&central, "gw-embedded", "online").await;

    let health: serde_json::Value = reqwest::get(gw.url("/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["uplink"], "connected");
    let all = central.gateways().await.unwrap();
    assert_eq!(all[0]["site"], "site-gw-embedded");
    eventually("a health report at central", SOON, || async {
        let all = central.gateways().await.ok()?;
        all[0]["health"]["uptime_secs"].as_u64()
    })
    .await
    .unwrap();

    let metrics = gridedge_tests::get_text(central.url("/metrics")).await;
    assert!(
        metrics.contains("gridedge_central_gateways{presence=\"online\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gridedge_central_messages_received_total{kind=\"health\"}"),
        "{metrics}"
    );
    let gw_metrics = gridedge_tests::get_text(gw.url("/metrics")).await;
    assert!(
        gw_metrics.contains("gridedge_gateway_uplink_connected 1"),
        "{gw_metrics}"
    );

    // A clean stop says goodbye: central shows the gateway offline at once, not after silence.
    gw.stop().await.unwrap();
    wait_presence(&central, "gw-embedded", "offline").await;
    central.stop().await.unwrap();
}

#[tokio::test]
async fn gateway_and_central_meet_on_mosquitto_over_tls_with_client_certificates() {
    init_test_logging();
    let m = Mosquitto::start().unwrap();
    let central_tls = m.pki.client("central").unwrap();
    let gw_tls = m.pki.client("gw-tls").unwrap();
    let central = TestCentral::external(&m.tls_url(), Some(&central_tls))
        .await
        .unwrap();
    let _gw = TestGateway::start("gw-tls", &m.tls_url(), Some(&gw_tls))
        .await
        .unwrap();
    wait_presence(&central, "gw-tls", "online").await;
    assert!(
        m.log_text().contains("as gw-tls"),
        "mosquitto did not see the gateway's certificate identity:\n{}",
        m.log_text()
    );
}

#[tokio::test]
async fn a_gateway_reconnects_after_the_broker_crashes_and_reports_again() {
    init_test_logging();
    let mut m = Mosquitto::start().unwrap();
    let central = TestCentral::external(&m.url(), None).await.unwrap();
    let gw = TestGateway::start("gw-flaky", &m.url(), None)
        .await
        .unwrap();
    wait_presence(&central, "gw-flaky", "online").await;

    // Crash the broker: the gateway keeps serving its LAN and says the uplink is down.
    m.kill();
    eventually("gateway to notice the lost uplink", SOON, || async {
        let h: serde_json::Value = reqwest::get(gw.url("/healthz"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (h["uplink"] == "disconnected").then_some(())
    })
    .await
    .unwrap();
    let uptime_before = central.gateways().await.unwrap()[0]["health"]["uptime_secs"]
        .as_u64()
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    m.start_again().unwrap();

    eventually("gateway to reconnect", SOON, || async {
        let metrics = gridedge_tests::try_text(gw.url("/metrics")).await?;
        (metrics.contains("gridedge_gateway_uplink_connected 1")
            && metrics.contains("gridedge_gateway_uplink_reconnects_total 1"))
        .then_some(())
    })
    .await
    .unwrap();
    // Central hears fresh health reports, not only the retained birth message.
    eventually("a health report from after the crash", SOON, || async {
        let all = central.gateways().await.ok()?;
        (all[0]["health"]["uptime_secs"].as_u64()? > uptime_before + 1).then_some(())
    })
    .await
    .unwrap();
}

/// The example configs with this machine's ports and folders swapped in, and the files they
/// name made for real in `dir`: the street CA, the broker's and central's HTTPS certificates,
/// the example gateway's certificate, and central's signing key.
fn example_configs(dir: &std::path::Path) -> (String, String, u16, u16, u16) {
    let (broker, tls_port, central_http, gw_http) =
        (free_port(), free_port(), free_port(), free_port());
    let pki = dir.join("pki");
    let ca = firmware_config::certs::Authority::create(&pki, "Example street CA").unwrap();
    let here = ["localhost".to_owned(), "127.0.0.1".to_owned()];
    ca.server("broker", &here).unwrap();
    ca.server("central-http", &here).unwrap();
    ca.client("gw-hongxing-01").unwrap();
    firmware_config::bundle::create_key_files(&dir.join("keys"), "central-signing").unwrap();
    let files = |text: &str| {
        text.replace("/etc/gridedge/tls/", &format!("{}/", pki.display()))
            .replace(
                "/etc/gridedge/keys/",
                &format!("{}/", dir.join("keys").display()),
            )
    };
    let central = files(examples::CENTRAL)
        .replace(
            "/var/lib/gridedge/central",
            &dir.join("central").display().to_string(),
        )
        .replace("127.0.0.1:1883", &format!("127.0.0.1:{broker}"))
        .replace("0.0.0.0:8883", &format!("127.0.0.1:{tls_port}"))
        .replace("0.0.0.0:8090", &format!("127.0.0.1:{central_http}"))
        .replace("# signing_key_file", "signing_key_file");
    let gateway = files(examples::GATEWAY)
        .replace(
            "/var/lib/gridedge/gateway",
            &dir.join("gateway").display().to_string(),
        )
        .replace(
            "mqtts://central.street.example:8883",
            &format!("mqtts://localhost:{tls_port}"),
        )
        .replace("0.0.0.0:8080", &format!("127.0.0.1:{gw_http}"))
        // Tests talk only to this machine: the example's devices become closed local ports.
        .replace("192.0.2.", "127.0.0.")
        .replace(":554/", ":9/");
    assert_ne!(central, examples::CENTRAL);
    assert_ne!(gateway, examples::GATEWAY);
    (central, gateway, broker, central_http, gw_http)
}

/// A client that trusts the example street's CA (central serves HTTPS).
fn example_client(dir: &std::path::Path) -> reqwest::Client {
    let ca = std::fs::read(dir.join("pki/ca.pem")).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .no_proxy()
        .build()
        .unwrap()
}

async fn get_ok(client: &reqwest::Client, url: &str) -> String {
    eventually(&format!("GET {url}"), SOON, || async {
        let r = client.get(url).send().await.ok()?;
        if r.status().is_success() {
            r.text().await.ok()
        } else {
            None
        }
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn binaries_start_from_the_example_configs_and_stop_within_5s_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (central_toml, gateway_toml, _, central_http, gw_http) = example_configs(dir.path());
    let mut central = ServiceProcess::spawn("central", &central_toml).unwrap();
    let mut gateway = ServiceProcess::spawn("gateway", &gateway_toml).unwrap();
    let client = example_client(dir.path());

    // The example's secure path: central on HTTPS, the gateway over mqtts with its
    // certificate, the broker's ACL and both directions signed.
    for (name, base) in [
        ("central", format!("https://localhost:{central_http}")),
        ("gateway", format!("http://127.0.0.1:{gw_http}")),
    ] {
        let health = get_ok(&client, &format!("{base}/healthz")).await;
        assert!(health.contains("\"status\":\"ok\""), "{name}: {health}");
        let metrics = get_ok(&client, &format!("{base}/metrics")).await;
        assert!(
            metrics.contains(&format!("gridedge_{name}_build_info")),
            "{name}: {metrics}"
        );
        assert!(metrics.trim_end().ends_with("# EOF"), "{name}: {metrics}");
    }
    // The example config has no logins: the registry is seen through the metrics.
    let url = format!("https://localhost:{central_http}/metrics");
    eventually("the example gateway online at central", SOON, || async {
        let body = client.get(&url).send().await.ok()?.text().await.ok()?;
        body.contains("gridedge_central_gateways{presence=\"online\"} 1")
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", gateway.process.log_text()));
    assert_eq!(
        client
            .get(format!("https://localhost:{central_http}/api/v1/gateways"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        401,
        "the registry is for operators"
    );

    for svc in [&mut gateway, &mut central] {
        svc.process.signal(libc::SIGTERM).unwrap();
        let t0 = std::time::Instant::now();
        let status = svc
            .process
            .wait_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{e}\n{}", svc.process.log_text()));
        assert!(
            status.success(),
            "exit {status}: {}",
            svc.process.log_text()
        );
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
}

#[tokio::test]
async fn services_refuse_an_invalid_config_with_the_same_text_as_fwcfg() {
    let dir = tempfile::tempdir().unwrap();
    let (central, gateway, ..) = example_configs(dir.path());
    let bad = gateway
        .replace(
            "rtsp://127.0.0.10:9/Streaming/Channels/101",
            "http://127.0.0.10/",
        )
        .replace("id = \"security-room\"", "id = \"hall-entrance\"");
    let mut gw = ServiceProcess::spawn("gateway", &bad).unwrap();
    let status = gw.process.wait_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(status.code(), Some(2), "{}", gw.process.log_text());
    let fwcfg = std::process::Command::new(gridedge_tests::services::binary("fwcfg").unwrap())
        .arg("check")
        .arg(&gw.config)
        .output()
        .unwrap();
    assert!(!fwcfg.status.success());
    let fwcfg_err = String::from_utf8_lossy(&fwcfg.stderr);
    let issues: Vec<&str> = fwcfg_err
        .lines()
        .filter(|l| !l.ends_with("problem(s)"))
        .collect();
    assert_eq!(issues.len(), 2, "{fwcfg_err}");
    let log = gw.process.log_text();
    for line in issues {
        assert!(log.contains(line), "gateway did not print {line:?}:\n{log}");
    }
    let central_bad = central.replace("max_connections = 10000", "max_connections = 0");
    let mut c = ServiceProcess::spawn("central", &central_bad).unwrap();
    assert_eq!(
        c.process
            .wait_timeout(Duration::from_secs(10))
            .unwrap()
            .code(),
        Some(2)
    );
    assert!(c
        .process
        .log_text()
        .contains("broker.embedded.max_connections: must be greater than zero"));
}
