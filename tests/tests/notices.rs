//! Notices out through the signed webhook, on central's binary: a case step a resident follows
//! reaches a local receiver, signed; a receiver that fails is retried until it takes the
//! notice; one that never does leaves the notice `failed`, shown to supervisors. Operators
//! below supervisor and strangers cannot read notices (they carry residents' phone numbers).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gridedge_tests::services::TestCentral;
use gridedge_tests::terminals::{gateway_with_kiosk, submit};
use gridedge_tests::{eventually, init_test_logging, try_json_api, workspace_root};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a receiver took: each post's signature header and body.
type Posts = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A webhook receiver on 127.0.0.1: answers 500 to the first `fail_first` posts (all of them
/// while `broken`), 200 after; keeps every post's signature header and body.
struct Receiver {
    port: u16,
    posts: Posts,
    seen: Arc<AtomicUsize>,
    broken: Arc<std::sync::atomic::AtomicBool>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let posts: Posts = Arc::default();
        let seen = Arc::new(AtomicUsize::new(0));
        let broken = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (p, n, b) = (posts.clone(), seen.clone(), broken.clone());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (p, n, b) = (p.clone(), n.clone(), b.clone());
                tokio::spawn(async move {
                    let Some((sig, body)) = read_post(&mut socket).await else {
                        return;
                    };
                    let i = n.fetch_add(1, Ordering::SeqCst);
                    let ok = i >= fail_first && !b.load(Ordering::SeqCst);
                    if ok {
                        p.lock().unwrap().push((sig, body));
                    }
                    let status = if ok {
                        "200 OK"
                    } else {
                        "500 Internal Server Error"
                    };
                    let _ = socket
                        .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes())
                        .await;
                });
            }
        });
        Self {
            port,
            posts,
            seen,
            broken,
        }
    }
}

/// One request: its `x-gridedge-signature` and its body.
async fn read_post(socket: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
    };
    let len: usize = header("content-length")?.trim().parse().ok()?;
    while buf.len() < head_end + len {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some((
        header("x-gridedge-signature").unwrap_or_default(),
        buf[head_end..head_end + len].to_vec(),
    ))
}

/// Whether `sig` is `secret`'s signature of `body`, made within the last minute.
fn verified(secret: &str, sig: &str, body: &[u8]) -> bool {
    let Some(t) = sig
        .strip_prefix("t=")
        .and_then(|r| r.split(',').next())
        .and_then(|t| t.parse::<i64>().ok())
    else {
        return false;
    };
    let fresh = (time::OffsetDateTime::now_utc().unix_timestamp() - t).abs() < 60;
    fresh && central::notify::signature(secret, t, body) == sig
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_step_reaches_the_webhook_signed_and_a_failing_receiver_is_retried() {
    init_test_logging();
    let receiver = Receiver::start(2).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = "webhook-secret-of-the-street";
    let secret_file = dir.path().join("webhook.secret");
    std::fs::write(&secret_file, secret).unwrap();
    let central = TestCentral::embedded_with(&format!(
        "[notify]\nmax_attempts = 3\nretry_after = \"200ms\"\n\
         [notify.webhook]\nurl = \"http://127.0.0.1:{}/hooks\"\nsecret = {{ file = \"{}\" }}\n",
        receiver.port,
        secret_file.display()
    ))
    .await
    .unwrap();
    let (status, _) = central
        .post_masterdata(&workspace_root().join("deploy/sample-data"))
        .await
        .unwrap();
    assert_eq!(status, 201);
    let gw = gateway_with_kiosk(
        "gw-notice",
        central.broker_url.as_deref().unwrap(),
        dir.path(),
    )
    .await
    .unwrap();
    let receipt = submit(
        &gw,
        &json!({"category": "report", "grid": "11019900100001002", "title": "路灯不亮",
                "contact": {"name": "赵", "phone": "13800138000"}}),
    )
    .await
    .unwrap();
    eventually("the case at central", Duration::from_secs(30), || async {
        let c = try_json_api(central.url(&format!("/api/v1/cases/{receipt}"))).await?;
        c.get("receipt").is_some().then_some(())
    })
    .await
    .unwrap();
    let boss = central.console("super").await.unwrap();
    let path = format!("/api/v1/cases/{receipt}/actions");
    let (status, _) = boss
        .post(
            &path,
            json!({"action": "assign", "station": "11019900100001002", "person": "刘建国"}),
        )
        .await;
    assert_eq!(status, 200);

    // Refused twice, taken the third time: sent, signed, saying what happened.
    let sent = eventually("the notice sent", Duration::from_secs(30), || async {
        let (_, v) = boss.get("/api/v1/notices?state=sent").await;
        v["notices"].as_array()?.first().cloned()
    })
    .await
    .unwrap();
    assert_eq!(sent["attempts"], 3, "{sent}");
    assert_eq!(receiver.seen.load(Ordering::SeqCst), 3);
    let (sig, body) = receiver.posts.lock().unwrap()[0].clone();
    assert!(
        verified(secret, &sig, &body),
        "signed with the secret: {sig}"
    );
    assert!(!verified("another secret", &sig, &body));
    let mut forged = body.clone();
    forged.extend_from_slice(b" ");
    assert!(!verified(secret, &sig, &forged), "the body is covered");
    let notice: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(notice["kind"], "case.status", "{notice}");
    assert_eq!(notice["data"]["receipt"], receipt.as_str());
    assert_eq!(notice["data"]["status"], "assigned");
    assert_eq!(notice["data"]["resident_phone"], "13800138000");

    // A receiver that keeps failing: the notice fails after its attempts and shows so.
    receiver.broken.store(true, Ordering::SeqCst);
    let (status, _) = boss
        .post(&path, json!({"action": "supervise", "note": "三日内办结"}))
        .await;
    assert_eq!(status, 200);
    let failed = eventually("the notice failed", Duration::from_secs(30), || async {
        let (_, v) = boss.get("/api/v1/notices?state=failed").await;
        v["notices"].as_array()?.first().cloned()
    })
    .await
    .unwrap();
    assert_eq!(
        (failed["kind"].as_str(), failed["attempts"].as_u64()),
        (Some("case.supervised"), Some(3)),
        "{failed}"
    );
    assert!(
        failed["last_error"].as_str().unwrap().contains("500"),
        "{failed}"
    );
    let metrics = reqwest::get(central.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("gridedge_central_notices_total{outcome=\"failed\"} 1"),
        "{metrics}"
    );

    // Who may read them: supervisors and above; not an operator, not a stranger.
    let op = central.console("op").await.unwrap();
    let (status, _) = op.get("/api/v1/notices").await;
    assert_eq!(status, 403);
    let r = reqwest::get(central.url("/api/v1/notices")).await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let (status, _) = boss.get("/api/v1/notices?state=lost").await;
    assert_eq!(status, 400);
    gw.stop().await.unwrap();
}

/// The stand-in SMS provider (`tests/fixtures/sms_provider.py`): its port, and the requests it
/// logged. Killed with the test.
struct SmsProvider {
    child: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
}

impl SmsProvider {
    async fn start(dir: &std::path::Path, secret: &str, fail_first: usize) -> Self {
        let port_file = dir.join("sms.port");
        let log = dir.join("sms.log");
        let child = std::process::Command::new("/usr/bin/python3")
            .arg(workspace_root().join("tests/fixtures/sms_provider.py"))
            .args([
                port_file.to_str().unwrap(),
                secret,
                log.to_str().unwrap(),
                &fail_first.to_string(),
            ])
            .spawn()
            .unwrap();
        let port = eventually("the SMS provider up", Duration::from_secs(10), || async {
            std::fs::read_to_string(&port_file)
                .ok()?
                .trim()
                .parse()
                .ok()
        })
        .await
        .unwrap();
        Self { child, port, log }
    }

    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for SmsProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn texts_reach_the_resident_and_the_assignee_through_the_sms_provider_signed_and_retried() {
    init_test_logging();
    let dir = tempfile::tempdir().unwrap();
    let secret = "access-key-secret-of-the-street";
    let provider = SmsProvider::start(dir.path(), secret, 2).await;
    let secret_file = dir.path().join("sms.secret");
    std::fs::write(&secret_file, secret).unwrap();
    let central = TestCentral::embedded_with(&format!(
        "[notify]\nmax_attempts = 5\nretry_after = \"200ms\"\n\
         [notify.sms]\nprovider = \"aliyun\"\nurl = \"http://127.0.0.1:{}/\"\n\
         access_key_id = \"LTAI-test\"\nsecret = {{ file = \"{}\" }}\nsign_name = \"红星街道\"\n\
         templates = {{ \"case.status\" = \"SMS_100\", \"case.supervised\" = \"SMS_200\" }}\n",
        provider.port,
        secret_file.display()
    ))
    .await
    .unwrap();
    let (status, _) = central
        .post_masterdata(&workspace_root().join("deploy/sample-data"))
        .await
        .unwrap();
    assert_eq!(status, 201);
    let gw = gateway_with_kiosk("gw-sms", central.broker_url.as_deref().unwrap(), dir.path())
        .await
        .unwrap();
    let receipt = submit(
        &gw,
        &json!({"category": "report", "grid": "11019900100001002", "title": "楼道灯坏了",
                "contact": {"name": "孙", "phone": "13800001234"}}),
    )
    .await
    .unwrap();
    let boss = central.console("super").await.unwrap();
    eventually("the case at central", Duration::from_secs(30), || async {
        let (s, _) = boss.get(&format!("/api/v1/cases/{receipt}")).await;
        (s == 200).then_some(())
    })
    .await
    .unwrap();
    let path = format!("/api/v1/cases/{receipt}/actions");
    for step in [
        json!({"action": "assign", "station": "11019900100001002", "person": "陈春梅"}),
        json!({"action": "supervise", "note": "请今天处理"}),
    ] {
        let (s, v) = boss.post(&path, step).await;
        assert_eq!(s, 200, "{v}");
    }

    // Throttled twice, then both taken: every request signed as the provider checks it.
    let texts = eventually("both texts taken", Duration::from_secs(30), || async {
        let taken: Vec<Value> = provider
            .requests()
            .into_iter()
            .filter(|r| r["answer"]["Code"] == "OK")
            .collect();
        (taken.len() == 2).then_some(taken)
    })
    .await
    .unwrap();
    let all = provider.requests();
    assert!(all.iter().all(|r| r["signed"] == true), "{all:?}");
    assert_eq!(all.len(), 4, "two refused, then two taken: {all:?}");
    let to: Vec<(String, String)> = texts
        .iter()
        .map(|r| {
            (
                r["fields"]["PhoneNumbers"].as_str().unwrap().to_owned(),
                r["fields"]["TemplateCode"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        to.contains(&("13800001234".into(), "SMS_100".into())),
        "the resident is told of the step: {to:?}"
    );
    assert!(
        to.contains(&("19638418916".into(), "SMS_200".into())),
        "the assignee's duty phone is pressed: {to:?}"
    );
    let status_text = texts
        .iter()
        .find(|r| r["fields"]["TemplateCode"] == "SMS_100")
        .unwrap();
    let params: Value =
        serde_json::from_str(status_text["fields"]["TemplateParam"].as_str().unwrap()).unwrap();
    assert_eq!(params["receipt"], receipt.as_str());
    assert_eq!(params["status"], "已派遣到网格站");
    assert_eq!(status_text["fields"]["SignName"], "红星街道");
    // Visible to supervisors: sent on the sms channel, after its retries.
    let (_, v) = boss.get("/api/v1/notices?state=sent").await;
    let sms: Vec<&Value> = v["notices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["channel"] == "sms")
        .collect();
    assert_eq!(sms.len(), 2, "{v}");
    assert!(
        sms.iter().any(|n| n["attempts"].as_u64() > Some(1)),
        "retried: {v}"
    );
}
