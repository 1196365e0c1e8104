//! Master data at central: the sample street published with the `central data push` CLI and the
//! API, versions only for changes, and a bad data set refused whole with every problem named.

use std::path::{Path, PathBuf};
use std::process::Command;

use gridedge_tests::services::{binary, SigningCentral, TestCentral};
use gridedge_tests::{init_test_logging, try_json_api, workspace_root};
use serde_json::{json, Value};

fn sample() -> PathBuf {
    workspace_root().join("deploy/sample-data")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("content")).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
    for e in std::fs::read_dir(from.join("content")).unwrap().flatten() {
        std::fs::copy(e.path(), to.join("content").join(e.file_name())).unwrap();
    }
}

/// `central data push DIR --url …`: (success, stdout, stderr).
fn push(central: &TestCentral, dir: &Path) -> (bool, String, String) {
    let out = Command::new(binary("central").unwrap())
        .args(["data", "push"])
        .arg(dir)
        .args(["--url", &central.url(""), "--by", "tests"])
        .env("GRIDEDGE_API_TOKEN", gridedge_tests::services::API_TOKEN)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_street_is_published_in_versions_and_a_bad_set_is_refused_whole() {
    init_test_logging();
    let central = TestCentral::embedded().await.unwrap();
    // Not for anyone who asks: grid staff and their phone numbers are in it.
    let anon = reqwest::get(central.url("/api/v1/masterdata"))
        .await
        .unwrap();
    assert_eq!(anon.status().as_u16(), 401);
    let none = gridedge_tests::services::api_client()
        .get(central.url("/api/v1/masterdata"))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status().as_u16(), 404);
    // An operator may read it, only an administrator publish.
    let op = central.console("op").await.unwrap();
    assert_eq!(op.get("/api/v1/masterdata/versions").await.0, 200);
    let (status, refused) = op.post("/api/v1/masterdata", serde_json::json!({})).await;
    assert_eq!(status, 403, "{refused}");

    // Without an API token the CLI publishes nothing and says how to get one.
    let out = Command::new(binary("central").unwrap())
        .args(["data", "push"])
        .arg(sample())
        .args(["--url", &central.url("")])
        .env_remove("GRIDEDGE_API_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("central operator token"),
        "{err}"
    );
    let (ok, out, err) = tokio::task::block_in_place(|| push(&central, &sample()));
    assert!(ok, "{err}");
    assert!(
        out.contains("published as version 1") && out.contains("32 service item(s)"),
        "{out}"
    );
    let (ok, out, _) = tokio::task::block_in_place(|| push(&central, &sample()));
    assert!(ok && out.contains("unchanged: already version 1"), "{out}");

    // A bad copy: the CLI names every problem and central still serves version 1.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&sample(), dir.path());
    let grids = std::fs::read_to_string(dir.path().join("grids.csv")).unwrap()
        + "11019900100001001,重复网格,base,11019900100001,400,\n";
    std::fs::write(dir.path().join("grids.csv"), grids).unwrap();
    let items = std::fs::read_to_string(dir.path().join("service_items.json"))
        .unwrap()
        .replacen("MZ110199-0002", "MZ-BAD", 1);
    std::fs::write(dir.path().join("service_items.json"), items).unwrap();
    let (ok, _, err) = tokio::task::block_in_place(|| push(&central, dir.path()));
    assert!(!ok);
    assert!(
        err.contains("11019900100001001 code: duplicate code"),
        "{err}"
    );
    assert!(err.contains("MZ-BAD code:"), "{err}");
    assert!(err.contains("nothing was published"), "{err}");
    let current = try_json_api(central.url("/api/v1/masterdata"))
        .await
        .unwrap();
    assert_eq!(current["version"], 1);

    // The API refuses the same with 422 and the problems, checked at central too.
    let (status, v) = central.post_masterdata(dir.path()).await.unwrap();
    assert_eq!(status, 422);
    let texts: Vec<&str> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["text"].as_str())
        .collect();
    assert!(texts.iter().any(|t| t.contains("duplicate code")), "{v}");
    let r = gridedge_tests::services::api_client()
        .post(central.url("/api/v1/masterdata"))
        .header("content-type", "application/json")
        .body("{\"texts\": 3}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    // A real change: version 2, naming what changed.
    let dir2 = tempfile::tempdir().unwrap();
    copy_dir(&sample(), dir2.path());
    let items = std::fs::read_to_string(dir2.path().join("service_items.json"))
        .unwrap()
        .replacen("\"time_limit_days\": 30", "\"time_limit_days\": 20", 1);
    std::fs::write(dir2.path().join("service_items.json"), items).unwrap();
    let (ok, out, err) = tokio::task::block_in_place(|| push(&central, dir2.path()));
    assert!(ok && out.contains("published as version 2"), "{out}{err}");
    let versions = try_json_api(central.url("/api/v1/masterdata/versions"))
        .await
        .unwrap();
    let latest = &versions["versions"][0];
    assert_eq!(latest["version"], 2);
    assert_eq!(
        latest["changes"]["items"]["changed"],
        json!(["MZ110199-0001"])
    );
    // The token that published it, and the person the CLI was told it publishes for.
    assert_eq!(latest["by"], "test-admin for tests");

    // The whole data set of a version, and a content file by its hash.
    let v1 = try_json_api(central.url("/api/v1/masterdata/versions/1"))
        .await
        .unwrap();
    let file = &v1["dataset"]["content"][0];
    let bytes = gridedge_tests::services::api_client()
        .get(central.url(&format!(
            "/api/v1/masterdata/content/{}",
            file["sha256"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(bytes.len() as u64, file["bytes"].as_u64().unwrap());
    assert_eq!(
        firmware_config::masterdata::sha256_hex(&bytes),
        file["sha256"].as_str().unwrap()
    );
    central.stop().await.unwrap();
}

async fn import(central: &TestCentral, dir: &Path) -> Value {
    let (status, v) = central.post_masterdata(dir).await.unwrap();
    assert!((200..300).contains(&status), "{status}: {v}");
    v
}

async fn replica_at(gw: &gridedge_tests::services::TestGateway, version: u64, hash: &str) -> Value {
    let v = gw.replica_at(version).await.unwrap();
    assert_eq!(v["hash"], hash, "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_replica_follows_central_by_snapshot_then_delta_and_recovers_when_lost() {
    init_test_logging();
    let SigningCentral {
        central,
        trust,
        keys: _keys,
    } = SigningCentral::embedded().await.unwrap();
    let v1 = import(&central, &sample()).await;
    let mut gw = gridedge_tests::services::TestGateway::start_with(
        "gw-replica",
        central.broker_url.as_deref().unwrap(),
        None,
        &trust,
    )
    .await
    .unwrap();
    let r = replica_at(&gw, 1, v1["gateway_hash"].as_str().unwrap()).await;
    assert_eq!(r["last_update"], "snapshot", "{r}");
    assert!(
        r["summary"]
            .as_str()
            .unwrap()
            .contains("32 service item(s)"),
        "{r}"
    );

    // Once central knows the gateway holds version 1, a new version reaches it as a delta.
    gridedge_tests::eventually(
        "central to hear the replica is at version 1",
        std::time::Duration::from_secs(10),
        || async {
            let gws = central.gateways().await.ok()?;
            let g = gws.iter().find(|g| g["id"] == "gw-replica")?;
            (g["health"]["masterdata"]["version"] == 1).then_some(())
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&sample(), dir.path());
    let items = std::fs::read_to_string(dir.path().join("service_items.json"))
        .unwrap()
        .replacen("高龄津贴申领", "高龄津贴（80周岁以上）申领", 1);
    std::fs::write(dir.path().join("service_items.json"), items).unwrap();
    let v2 = import(&central, dir.path()).await;
    assert_eq!(v2["version"], 2);
    let r = replica_at(&gw, 2, v2["gateway_hash"].as_str().unwrap()).await;
    assert_eq!(r["last_update"], "delta", "{r}");

    // Kiosks ask the replica.
    let hits = kiosk_get(&gw, "/api/v1/kiosk/items?q=%E4%BD%8E%E4%BF%9D").await; // 低保
    assert_eq!(hits["hits"][0]["code"], "MZ110199-0001", "{hits}");
    let at = kiosk_get(&gw, "/api/v1/kiosk/grids/at?lon=120.156&lat=30.2715").await;
    assert_eq!(at["grid"]["code"], "11019900100002001", "{at}");
    assert_eq!(at["grid"]["staff"].as_array().unwrap().len(), 3);
    assert_eq!(at["party"][0]["kind"], "党支部");
    let r = reqwest::Client::new()
        .get(gw.url("/api/v1/kiosk/party"))
        .bearer_auth(gridedge_tests::services::source_token("gw-replica"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        403,
        "an event source is not a terminal"
    );
    let r = reqwest::get(gw.url("/api/v1/kiosk/party")).await.unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // Restarted, it still holds version 2 (no update needed).
    gw.restart_with(|_| {}).await.unwrap();
    let r = replica_at(&gw, 2, v2["gateway_hash"].as_str().unwrap()).await;
    assert_eq!(r["last_update"], Value::Null, "{r}");

    // Its replica lost: a snapshot brings it back.
    gw.restart_with(|data| {
        std::fs::remove_dir_all(data.join("replica")).unwrap();
    })
    .await
    .unwrap();
    let r = replica_at(&gw, 2, v2["gateway_hash"].as_str().unwrap()).await;
    assert_eq!(r["last_update"], "snapshot", "{r}");

    // Central and its broker gone: kiosks are still answered from the replica.
    central.stop().await.unwrap();
    let item = kiosk_get(&gw, "/api/v1/kiosk/items/WJ110199-0001").await;
    assert_eq!(item["name"], "生育登记", "{item}");
    let named = kiosk_get(
        &gw,
        "/api/v1/kiosk/grids?q=%E5%92%8C%E5%B9%B3%E5%AE%B6%E5%9B%AD",
    )
    .await; // 和平家园
    assert_eq!(named["grids"].as_array().unwrap().len(), 1, "{named}");
    gw.stop().await.unwrap();
}

/// `GET path` on the gateway with a terminal's token; 200 expected.
async fn kiosk_get(gw: &gridedge_tests::services::TestGateway, path: &str) -> Value {
    let r = reqwest::Client::new()
        .get(gw.url(path))
        .bearer_auth(gridedge_tests::services::viewer_token(&gw.id))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{path}");
    r.json().await.unwrap()
}

/// A counter of the gateway's `/metrics`, by its full name.
async fn gateway_counter(gw: &gridedge_tests::services::TestGateway, name: &str) -> Option<u64> {
    let text = reqwest::get(gw.url("/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// The kiosk's content list once all `n` files are at the gateway.
async fn all_content_here(gw: &gridedge_tests::services::TestGateway, n: usize) -> Option<Value> {
    let r = kiosk_request(gw, "/api/v1/kiosk/content", &[]).await;
    let v: Value = r.json().await.ok()?;
    let files = v["files"].as_array()?;
    (files.len() == n && files.iter().all(|f| f["available"] == true)).then_some(v)
}

/// Restarts the gateway with the content file `sha` cut back to `partial` bytes on disk, and
/// waits until all four content files are there again.
async fn restart_with_partial(
    gw: &mut gridedge_tests::services::TestGateway,
    sha: &str,
    partial: &[u8],
) {
    gw.restart_with(|data| {
        let content = data.join("content");
        std::fs::remove_file(content.join(sha)).unwrap();
        std::fs::write(content.join(format!("{sha}.part")), partial).unwrap();
    })
    .await
    .unwrap();
    gridedge_tests::eventually(
        "the video again",
        std::time::Duration::from_secs(30),
        || all_content_here(gw, 4),
    )
    .await
    .unwrap();
}

/// A GET with a terminal's token and extra headers.
async fn kiosk_request(
    gw: &gridedge_tests::services::TestGateway,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut r = reqwest::Client::new()
        .get(gw.url(path))
        .bearer_auth(gridedge_tests::services::viewer_token(&gw.id));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_files_reach_kiosks_in_checked_pieces_resume_after_a_cut_and_serve_ranges() {
    init_test_logging();
    let SigningCentral {
        central,
        trust,
        keys: _keys,
    } = SigningCentral::embedded().await.unwrap();
    // The sample street plus a 700 kB video: three pieces of 256 KiB.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&sample(), dir.path());
    let video: Vec<u8> = (0u32..700_000)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let sha = firmware_config::masterdata::sha256_hex(&video);
    std::fs::write(dir.path().join("content/社区安全宣传片.mp4"), &video).unwrap();
    let mut csv = std::fs::read_to_string(dir.path().join("content.csv")).unwrap();
    csv.push_str(&format!(
        "vid-001,video,社区消防安全宣传片,content/社区安全宣传片.mp4,{sha}\n"
    ));
    std::fs::write(dir.path().join("content.csv"), csv).unwrap();
    let v1 = import(&central, dir.path()).await;
    let mut gw = gridedge_tests::services::TestGateway::start_with(
        "gw-content",
        central.broker_url.as_deref().unwrap(),
        None,
        &trust,
    )
    .await
    .unwrap();
    replica_at(&gw, 1, v1["gateway_hash"].as_str().unwrap()).await;
    let list = gridedge_tests::eventually(
        "every content file at the gateway",
        std::time::Duration::from_secs(20),
        || all_content_here(&gw, 4),
    )
    .await
    .unwrap();
    let entry = list["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "vid-001")
        .unwrap();
    assert_eq!(entry["bytes"], 700_000);
    assert_eq!(entry["sha256"], sha.as_str());
    let total = 700_000 + 132 + 97 + 82;
    assert_eq!(
        gateway_counter(&gw, "gridedge_gateway_content_bytes_fetched_total").await,
        Some(total)
    );

    // Whole, a range, the tail, past the end, and unchanged.
    let r = kiosk_request(&gw, "/api/v1/kiosk/content/vid-001", &[]).await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "video/mp4");
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert_eq!(r.bytes().await.unwrap().as_ref(), video.as_slice());
    let r = kiosk_request(
        &gw,
        "/api/v1/kiosk/content/vid-001",
        &[("range", "bytes=300000-300099")],
    )
    .await;
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 300000-300099/700000");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &video[300_000..300_100]);
    let r = kiosk_request(
        &gw,
        "/api/v1/kiosk/content/vid-001",
        &[("range", "bytes=-10")],
    )
    .await;
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &video[699_990..]);
    let r = kiosk_request(
        &gw,
        "/api/v1/kiosk/content/vid-001",
        &[("range", "bytes=700000-")],
    )
    .await;
    assert_eq!(r.status().as_u16(), 416);
    assert_eq!(r.headers()["content-range"], "bytes */700000");
    let etag = format!("\"{sha}\"");
    let r = kiosk_request(
        &gw,
        "/api/v1/kiosk/content/vid-001",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(r.status().as_u16(), 304);
    let r = kiosk_request(&gw, "/api/v1/kiosk/content/doc-001", &[]).await;
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    assert!(r.text().await.unwrap().contains("二十大"));
    let r = kiosk_request(&gw, "/api/v1/kiosk/content/nope", &[]).await;
    assert_eq!(r.status().as_u16(), 404);

    // A transfer cut off after 300,000 bytes: the gateway goes on from there, not from 0.
    restart_with_partial(&mut gw, &sha, &video[..300_000]).await;
    assert_eq!(
        gateway_counter(&gw, "gridedge_gateway_content_bytes_fetched_total").await,
        Some(400_000),
        "only what was missing is fetched"
    );
    let r = kiosk_request(&gw, "/api/v1/kiosk/content/vid-001", &[]).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), video.as_slice());

    // A damaged partial file: the whole hash does not match, it is dropped and fetched anew.
    let mut bad = video[..300_000].to_vec();
    bad[1234] ^= 0xff;
    restart_with_partial(&mut gw, &sha, &bad).await;
    assert_eq!(
        gateway_counter(&gw, "gridedge_gateway_content_fetch_errors_total").await,
        Some(1)
    );
    let r = kiosk_request(&gw, "/api/v1/kiosk/content/vid-001", &[]).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), video.as_slice());

    // A version without the video: its file is removed from the gateway.
    let v2 = import(&central, &sample()).await;
    replica_at(&gw, 2, v2["gateway_hash"].as_str().unwrap()).await;
    gridedge_tests::eventually(
        "the old video removed",
        std::time::Duration::from_secs(10),
        || async { (!gw.data_dir().join("content").join(&sha).exists()).then_some(()) },
    )
    .await
    .unwrap();
    gw.stop().await.unwrap();
    central.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiosks_find_their_grid_by_address_and_are_held_to_their_rates() {
    init_test_logging();
    let SigningCentral {
        central,
        trust,
        keys: _keys,
    } = SigningCentral::embedded().await.unwrap();
    let v1 = import(&central, &sample()).await;
    let extra = format!(
        "{trust}\n[kiosk]\nrequests_per_second = 0.2\nburst = 4\nsubmissions_per_hour = 1\n"
    );
    let gw = gridedge_tests::services::TestGateway::start_with(
        "gw-rates",
        central.broker_url.as_deref().unwrap(),
        None,
        &extra,
    )
    .await
    .unwrap();
    replica_at(&gw, 1, v1["gateway_hash"].as_str().unwrap()).await;
    // 红星路64号: the even side past 60 is grid 2 (东风巷).
    let found = kiosk_get(
        &gw,
        "/api/v1/kiosk/grids?q=%E7%BA%A2%E6%98%9F%E8%B7%AF64%E5%8F%B7",
    )
    .await;
    assert_eq!(found["grids"][0]["code"], "11019900100001002", "{found}");
    assert_eq!(found["grids"][0]["matched"], "红星路62-120号双", "{found}");
    assert_eq!(found["grids"][0]["staff"].as_array().unwrap().len(), 3);
    // One submission an hour: the second is refused, with when to come back.
    let submit = || async {
        reqwest::Client::new()
            .post(gw.url("/api/v1/kiosk/submissions"))
            .bearer_auth(gridedge_tests::services::viewer_token("gw-rates"))
            .json(&json!({"category": "report", "grid": "11019900100001002", "title": "路灯不亮",
                "description": "东风巷12号门口路灯坏了", "contact": {"name": "张三", "phone": "13800000000"}}))
            .send()
            .await
            .unwrap()
    };
    let first = submit().await;
    assert_eq!(first.status().as_u16(), 201, "{:?}", first.text().await);
    let second = submit().await;
    assert_eq!(second.status().as_u16(), 429);
    assert!(
        second.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 60
    );
    // Four requests were allowed at once (the grid query and two submissions took three);
    // the fifth is refused with a Retry-After, and after that wait it is allowed again.
    let ok = kiosk_request(&gw, "/api/v1/kiosk/party", &[]).await;
    assert_eq!(ok.status().as_u16(), 200);
    let refused = kiosk_request(&gw, "/api/v1/kiosk/party", &[]).await;
    assert_eq!(refused.status().as_u16(), 429);
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&wait), "{wait}");
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("0.2 requests a second"),
        "{body}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(wait * 1000 + 100)).await;
    assert_eq!(
        kiosk_request(&gw, "/api/v1/kiosk/party", &[])
            .await
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        gateway_counter(&gw, "gridedge_gateway_kiosk_rate_limited_total").await,
        Some(2)
    );
    gw.stop().await.unwrap();
    central.stop().await.unwrap();
}
