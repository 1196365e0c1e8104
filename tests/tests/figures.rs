//! Figures for the street office: residents' cases counted by category, grid and period, the
//! time one took, within each operator's scope; exported as CSV (read back as text) and XLSX
//! (read back with an independent spreadsheet reader), and shown and downloaded in the console
//! in headless Chromium.

use std::time::Duration;

use calamine::Reader as _;
use gridedge_tests::browser::ConsoleDriver;
use gridedge_tests::services::{operator_password, TestCentral};
use gridedge_tests::terminals::{gateway_with_kiosk, submit};
use gridedge_tests::{eventually, init_test_logging, workspace_root};
use serde_json::json;

const DONGFENG: &str = "11019900100001002";
const FANGZHI: &str = "11019900100001003";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cases_are_figured_within_each_scope_and_exported_as_csv_and_xlsx() {
    init_test_logging();
    let central = TestCentral::embedded().await.unwrap();
    let (status, v) = central
        .post_masterdata(&workspace_root().join("deploy/sample-data"))
        .await
        .unwrap();
    assert_eq!(status, 201, "{v}");
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway_with_kiosk("gw-fig", central.broker_url.as_deref().unwrap(), dir.path())
        .await
        .unwrap();
    let mut receipts = Vec::new();
    for (category, grid, title) in [
        ("dispute", DONGFENG, "噪音纠纷"),
        ("report", DONGFENG, "=HYPERLINK(\"http://x\")"),
        ("report", FANGZHI, "井盖缺失"),
    ] {
        let body = json!({"category": category, "grid": grid, "title": title,
            "contact": {"name": "钱", "phone": "13700000000"}});
        receipts.push(submit(&gw, &body).await.unwrap());
    }
    let street = central.console("super").await.unwrap();
    eventually(
        "three cases at central",
        Duration::from_secs(20),
        || async {
            let (_, v) = street.get("/api/v1/cases").await;
            (v["total"] == 3).then_some(())
        },
    )
    .await
    .unwrap();
    // One report worked to resolved.
    for step in [
        json!({"action": "assign", "station": DONGFENG, "person": "刘建国"}),
        json!({"action": "accept"}),
        json!({"action": "resolve", "note": "已处理"}),
    ] {
        let (s, v) = street
            .post(&format!("/api/v1/cases/{}/actions", receipts[1]), step)
            .await;
        assert_eq!(s, 200, "{v}");
    }

    let (s, f) = street.get("/api/v1/figures?period=day").await;
    assert_eq!(s, 200, "{f}");
    let c = &f["cases"];
    assert_eq!(c["registered"], 3, "{f}");
    assert_eq!(c["time_to_finish"]["finished"], 1, "{f}");
    let by = |table: &str| -> Vec<(String, u64, u64)> {
        c[table]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["key"].as_str().unwrap().to_owned(),
                    r["registered"].as_u64().unwrap(),
                    r["finished"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        by("by_category"),
        [("dispute".into(), 1, 0), ("report".into(), 2, 1)]
    );
    assert_eq!(
        by("by_grid"),
        [(DONGFENG.into(), 2, 1), (FANGZHI.into(), 1, 0)]
    );
    assert_eq!(c["by_grid"][0]["name"], "红星社区第2网格（东风巷）");
    assert_eq!(
        f["periods"].as_array().unwrap().len(),
        30,
        "the last 30 days"
    );
    assert!(
        f["uptime"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["gateway"] == "gw-fig"),
        "{f}"
    );

    // Another station sees its own grid's case only, and not another grid's figures.
    let other = central.console("station-3").await.unwrap();
    let (_, theirs) = other.get("/api/v1/figures").await;
    assert_eq!(theirs["cases"]["registered"], 1, "{theirs}");
    let (s, _) = other.get(&format!("/api/v1/figures?grid={DONGFENG}")).await;
    assert_eq!(s, 404, "another station's grid is as unknown");
    let (s, _) = other
        .get(&format!("/api/v1/figures.csv?table=grid&grid={DONGFENG}"))
        .await;
    assert_eq!(s, 404, "nor exported");
    // Bad requests are named; no session, nothing.
    for (q, want) in [
        ("period=hour", "period"),
        ("from=2026-12-10&to=2026-12-01", "from"),
        ("from=2024-01-01&to=2026-12-01", "366"),
        ("to=2026-02-30", "to"),
        ("table=secrets", "table"),
    ] {
        let path = if q.starts_with("table") {
            format!("/api/v1/figures.csv?{q}")
        } else {
            format!("/api/v1/figures?{q}")
        };
        let (s, v) = street.get(&path).await;
        assert_eq!(s, 400, "{q}: {v}");
        assert!(v.to_string().contains(want), "{q}: {v}");
    }
    let stranger = reqwest::get(central.url("/api/v1/figures.xlsx"))
        .await
        .unwrap();
    assert_eq!(stranger.status().as_u16(), 401);

    // CSV: UTF-8 with its byte order mark, one row per grid.
    let csv = street
        .send_raw(street.request(reqwest::Method::GET, "/api/v1/figures.csv?table=grid"))
        .await;
    let text = String::from_utf8(csv).unwrap();
    assert!(text.starts_with('\u{feff}'), "a byte order mark");
    let lines: Vec<&str> = text.trim_start_matches('\u{feff}').lines().collect();
    assert!(
        lines[0].starts_with("网格 grid,名称 name,登记 registered"),
        "{text}"
    );
    // registered 2, finished 1, open 1 (the dispute), late 0, then the mean hours.
    let row = format!("{DONGFENG},红星社区第2网格（东风巷）,2,1,1,0,");
    assert!(lines.iter().any(|l| l.starts_with(&row)), "{text}");

    // XLSX, read back by an independent reader: a sheet a table.
    let bytes = street
        .send_raw(street.request(reqwest::Method::GET, "/api/v1/figures.xlsx?period=month"))
        .await;
    let mut book = calamine::Xlsx::new(std::io::Cursor::new(bytes)).unwrap();
    assert_eq!(
        book.sheet_names(),
        [
            "按类别 By category",
            "按网格 By grid",
            "按时段 By period",
            "在线率 Uptime"
        ]
    );
    let grid = book.worksheet_range("按网格 By grid").unwrap();
    let row = grid
        .rows()
        .find(|r| r[0] == calamine::Data::String(DONGFENG.into()))
        .expect("the grid's row");
    assert_eq!(row[1].to_string(), "红星社区第2网格（东风巷）");
    assert_eq!(row[2], calamine::Data::Float(2.0), "registered, a number");
    assert_eq!(row[3], calamine::Data::Float(1.0), "finished");

    // In the console: the figures shown, the XLSX downloaded by the browser.
    let mut b = ConsoleDriver::start().unwrap();
    b.must(json!({"do": "open", "url": central.url("/console")}))
        .await;
    b.must(json!({"do": "login", "name": "super", "password": operator_password("super")}))
        .await;
    let shown = b.must(json!({"do": "figures", "period": "month"})).await;
    assert_eq!(shown["registered"], 3, "{shown}");
    assert!(
        shown["download"].as_str().unwrap().ends_with(".xlsx"),
        "{shown}"
    );
    assert!(shown["bytes"].as_u64().unwrap() > 2000, "{shown}");
    assert!(!shown["periods"].as_array().unwrap().is_empty(), "{shown}");
    b.quit().await;
}
