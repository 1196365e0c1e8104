//! `bench-console [--quick] [--cases N] [--requests N] [--runs N] [--serve]`: the operator console with a
//! street of 1,000 base grids and 100,000 residents' cases.
//!
//! - Case queue: a mix of queue pages (the newest 50; by status; by area; disputes overdue; a
//!   grid station's own), each with its total, asked of the release central's API one after
//!   another by a signed-in operator: p50 and p99. Peer: PostgreSQL 15 with the same cases in
//!   one table, indexed on each filter with the creation time, answering the same pages and
//!   totals as SQL (`… ORDER BY created DESC LIMIT 50` and `count(*)`) over one connection.
//! - Map: headless Chromium drawing the street's 1,021 grids (street, 20 areas, 1,000 base
//!   grids): the console's map view from being asked for to every grid drawn. Peer: Leaflet's
//!   own GeoJSON layer on a canvas with the same grids inline in a static page, from navigation
//!   to drawn.
//!
//! Prints both sides and their ratios, with the goals (queue p99 ≤ 100 ms, map ≤ 1 s). Build
//! with `cargo build --release --workspace --bins`.

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use gridedge_tests::bench::arg_value;
use gridedge_tests::process::ChildProcess;
use gridedge_tests::services::{binary, central_toml, operator_password, Console};
use gridedge_tests::{free_port, wait_for_port, workspace_root};
use serde_json::json;

const STREET: &str = "110199001000";
const AREAS: usize = 20;
const BASES: usize = 50;

fn area(a: usize) -> String {
    format!("{STREET}{:02}", a + 1)
}

fn base(a: usize, b: usize) -> String {
    format!("{}{:03}", area(a), b + 1)
}

fn ring(x: f64, y: f64, w: f64, h: f64) -> serde_json::Value {
    json!([[[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]]])
}

/// A street of 20 areas (5 × 4) of 50 base grids (10 × 5) each: grids.csv and boundaries.
fn street(dir: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    std::fs::create_dir_all(dir)?;
    let (x0, y0, aw, ah) = (120.0, 30.0, 0.01, 0.005);
    let mut csv = String::from("code,name,level,parent,households,addresses\n");
    let mut features = vec![json!({"type": "Feature", "properties": {"code": STREET},
        "geometry": {"type": "Polygon", "coordinates": ring(x0, y0, aw * 5.0, ah * 4.0)}})];
    writeln!(csv, "{STREET},基准街道,street,,,")?;
    for a in 0..AREAS {
        let (ax, ay) = (x0 + aw * (a % 5) as f64, y0 + ah * (a / 5) as f64);
        writeln!(csv, "{},第{}片区,area,{STREET},,", area(a), a + 1)?;
        features.push(json!({"type": "Feature", "properties": {"code": area(a)},
            "geometry": {"type": "Polygon", "coordinates": ring(ax, ay, aw, ah)}}));
        for b in 0..BASES {
            let (bw, bh) = (aw / 10.0, ah / 5.0);
            let (bx, by) = (ax + bw * (b % 10) as f64, ay + bh * (b / 10) as f64);
            writeln!(
                csv,
                "{},第{}片区第{}网格,base,{},300,",
                base(a, b),
                a + 1,
                b + 1,
                area(a)
            )?;
            features.push(
                json!({"type": "Feature", "properties": {"code": base(a, b)},
                "geometry": {"type": "Polygon", "coordinates": ring(bx, by, bw, bh)}}),
            );
        }
    }
    std::fs::write(dir.join("grids.csv"), csv)?;
    let geo = json!({"type": "FeatureCollection", "features": features});
    std::fs::write(dir.join("boundaries.geojson"), serde_json::to_vec(&geo)?)?;
    // The sample catalogue: a data set needs one.
    std::fs::copy(
        workspace_root().join("deploy/sample-data/service_items.json"),
        dir.join("service_items.json"),
    )?;
    Ok(geo)
}

const STATUSES: [&str; 6] = [
    "registered",
    "assigned",
    "accepted",
    "handling",
    "resolved",
    "closed",
];
const CATEGORIES: [&str; 3] = ["report", "dispute", "application"];

/// Case `i` of `n`: spread over the grids, categories and statuses, one a minute up to now.
fn case(i: usize, n: usize, now: time::OffsetDateTime) -> central::cases::Case {
    let grid = base(i % AREAS, (i / AREAS) % BASES);
    let category = CATEGORIES[i % 3];
    let status = if category == "application" {
        [
            "registered",
            "received",
            "reviewing",
            "decided",
            "delivered",
            "closed",
        ][i % 6]
    } else {
        STATUSES[i % 6]
    };
    let created = now - time::Duration::minutes((n - i) as i64);
    let mut c = central::cases::Case::registered(
        &format!("gw-bench-{i:06}-AB12CD"),
        "gw-bench",
        json!({"category": category, "grid": grid, "title": format!("诉求 {i}"),
               "description": "楼道灯不亮，已持续一周", "contact": {"name": "居民", "phone": "13800000000"}}),
        created,
    );
    c.station = Some(grid);
    c.station_name = Some(format!("网格 {i}"));
    c.status = status.to_owned();
    c.due = Some(created + time::Duration::days(5));
    c.history.push(central::cases::HistoryEntry::new(
        "registered",
        "central",
        "received and routed to the grid's station",
        created,
    ));
    c
}

/// The queue pages asked, as the API's query and the same as SQL (a filter).
fn queries() -> Vec<(&'static str, String, String)> {
    vec![
        ("newest 50", String::new(), "true".to_owned()),
        (
            "by status",
            "status=handling".into(),
            "status = 'handling'".into(),
        ),
        (
            "by area",
            format!("grid={}", area(6)),
            format!("area = '{}'", area(6)),
        ),
        (
            "disputes overdue",
            "category=dispute&overdue=true".into(),
            "category = 'dispute' AND open AND due < now()".into(),
        ),
    ]
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let n = arg_value(&args, "--cases").unwrap_or(100_000) as usize;
    let requests = arg_value(&args, "--requests").unwrap_or(if quick { 100 } else { 500 }) as usize;
    let runs = arg_value(&args, "--runs").unwrap_or(if quick { 3 } else { 10 }) as usize;
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let d = dir.path();

    // The street, and the cases put straight into central's store before it starts.
    let data = d.join("data");
    let geo = street(&data)?;
    let store_dir = d.join("central").join("central-data");
    std::fs::create_dir_all(&store_dir)?;
    let now = time::OffsetDateTime::now_utc();
    let t = Instant::now();
    {
        let store = central::store::EventStore::open(
            &store_dir,
            64 << 20,
            0,
            central::store::BucketWidths::for_retention(&Default::default()),
        )?;
        let state = central::state::SledState::new(store.db().clone());
        let cases =
            central::cases::Cases::open(&state, firmware_config::runtime::clock::Clock::system())?;
        cases.import((0..n).map(|i| case(i, n, now)))?;
        store.db().flush()?;
    }
    eprintln!(
        "console: {n} cases stored in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let (c_port, b_port) = (free_port(), free_port());
    let c_conf = d.join("central.toml");
    std::fs::write(&c_conf, central_toml(&d.join("central"), b_port, c_port))?;
    let mut cmd = Command::new(binary("central")?);
    cmd.arg("--config").arg(&c_conf).env("RUST_LOG", "warn");
    let _central = ChildProcess::spawn("central", cmd, &d.join("central.log"))?;
    wait_for_port(([127, 0, 0, 1], c_port).into(), Duration::from_secs(120))?;
    let base_url = format!("http://127.0.0.1:{c_port}");
    let push = Command::new(binary("central")?)
        .args(["data", "push"])
        .arg(&data)
        .args(["--url", &base_url])
        .env("GRIDEDGE_API_TOKEN", gridedge_tests::services::API_TOKEN)
        .output()?;
    anyhow::ensure!(
        push.status.success(),
        "data push: {}",
        String::from_utf8_lossy(&push.stderr)
    );

    // `--serve`: keep this street up to look at it by hand (the console's address and the
    // supervisor's password are printed), measuring nothing.
    if args.iter().any(|a| a == "--serve") {
        println!(
            "console: {base_url}/console as super / {}; Ctrl-C to stop",
            operator_password("super")
        );
        tokio::signal::ctrl_c().await?;
        return Ok(());
    }

    // PostgreSQL with the same cases.
    let pg = gridedge_tests::postgres::Postgres::start()?;
    let csv = d.join("cases.csv");
    {
        let mut out = String::new();
        for i in 0..n {
            let c = case(i, n, now);
            let st = c.station.clone().unwrap_or_default();
            let open = central::cases::workflow::is_open_status(c.category(), &c.status);
            let body = serde_json::to_string(&c)?.replace('"', "\"\"");
            writeln!(
                out,
                "{},{},{},{},{},{},{},{},\"{}\"",
                c.receipt,
                st,
                &st[..14],
                c.category().as_str(),
                c.status,
                c.created,
                c.due.unwrap_or(c.created),
                open,
                body
            )?;
        }
        std::fs::write(&csv, out)?;
    }
    pg.psql(
        "CREATE TABLE cases (receipt text PRIMARY KEY, station text, area text, category text, \
         status text, created timestamptz, due timestamptz, open bool, body jsonb)",
    )?;
    pg.psql(&format!(
        "\\copy cases FROM '{}' WITH (FORMAT csv)",
        csv.display()
    ))?;
    pg.psql(
        "CREATE INDEX ON cases (created DESC, receipt DESC); \
         CREATE INDEX ON cases (status, created DESC, receipt DESC); \
         CREATE INDEX ON cases (area, created DESC, receipt DESC); \
         CREATE INDEX ON cases (station, created DESC, receipt DESC); \
         CREATE INDEX ON cases (category, created DESC, receipt DESC); ANALYZE cases",
    )?;
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            pg.addr().port()
        ),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(conn);

    // The queue: the same pages both ways, one after another.
    let boss = Console::login(&base_url, "super").await?;
    let station =
        Console::login_with(&base_url, "station-2", &operator_password("station-2")).await?;
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut per_kind = Vec::new();
    let mut kinds = queries();
    kinds.push((
        "a station's own",
        String::new(),
        format!("station = '{STREET}01002'"),
    ));
    for (k, (label, q, filter)) in kinds.iter().enumerate() {
        let who = if k == kinds.len() - 1 {
            &station
        } else {
            &boss
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut shown = (0, serde_json::Value::Null);
        for _ in 0..requests {
            let t = Instant::now();
            let (s, v) = who.get(&format!("/api/v1/cases?limit=50&{q}")).await;
            a.push(t.elapsed().as_secs_f64() * 1000.0);
            anyhow::ensure!(s == 200, "{label}: {s} {v}");
            shown = (
                v["cases"].as_array().map_or(0, Vec::len),
                v["total"].clone(),
            );
            let t = Instant::now();
            let rows = client
                .query(
                    &format!("SELECT body FROM cases WHERE {filter} ORDER BY created DESC, receipt DESC LIMIT 50"),
                    &[],
                )
                .await?;
            let total: i64 = client
                .query_one(&format!("SELECT count(*) FROM cases WHERE {filter}"), &[])
                .await?
                .get(0);
            b.push(t.elapsed().as_secs_f64() * 1000.0);
            // The same answer (a case may fall overdue between the two asks).
            let ours_total = shown.1.as_i64().unwrap_or(-1);
            anyhow::ensure!(
                (ours_total - total).abs() <= 1 && shown.0 == rows.len(),
                "{label}: GridEdge {shown:?}, PostgreSQL {} of {total}",
                rows.len()
            );
        }
        per_kind.push((
            *label,
            shown.1.clone(),
            pct(&mut a.clone(), 0.99),
            pct(&mut b.clone(), 0.99),
        ));
        ours.extend(a);
        theirs.extend(b);
    }

    // Every overdue open case is an alert: the console's queue holds tens of thousands.
    let (_, v) = boss.get("/api/v1/alerts?limit=1").await;
    let open_alerts = v["counts"]["open"].clone();

    // The map's own answer, asked by a Rust client (no browser), for comparison.
    let mut api_ms = Vec::new();
    for _ in 0..runs.max(3) {
        let t = Instant::now();
        let (s, _) = boss.get("/api/v1/map").await;
        anyhow::ensure!(s == 200, "map: {s}");
        api_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    // The map, in Chromium.
    let peer = d.join("peer.html");
    let leaflet = workspace_root().join("firmware-config/web/leaflet");
    std::fs::write(
        &peer,
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><link rel=\"stylesheet\" href=\"file://{0}/leaflet.css\">\
             <style>#m{{height:72vh}}</style></head><body><div id=\"m\"></div><script src=\"file://{0}/leaflet.js\"></script>\
             <script>const data={1};const m=L.map('m',{{preferCanvas:true}});\
             const style=(f)=>({{weight:f.properties.code.length>14?1:2}});\
             const layer=L.geoJSON(data,{{style}}).addTo(m);m.fitBounds(layer.getBounds());\
             window.drawnMs=performance.now();</script></body></html>",
            leaflet.display(),
            serde_json::to_string(&geo)?
        ),
    )?;
    let grids = AREAS * BASES + AREAS + 1;
    let out = Command::new("node")
        .current_dir(workspace_root().join("tests/browser"))
        .args([
            "bench_map.mjs",
            &format!("{base_url}/console"),
            "super",
            &operator_password("super"),
            peer.to_str().context("path")?,
            &grids.to_string(),
            &runs.to_string(),
        ])
        .output()?;
    let line = String::from_utf8_lossy(&out.stdout);
    let map: serde_json::Value = serde_json::from_str(line.lines().last().unwrap_or_default())
        .with_context(|| {
            format!(
                "bench_map.mjs: {line} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let times = |k: &str| -> Vec<f64> {
        map[k]
            .as_array()
            .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
            .unwrap_or_default()
    };
    let (mut g, mut p, mut in_page) = (times("gridedge"), times("peer"), times("inPage"));
    anyhow::ensure!(!g.is_empty() && !p.is_empty(), "no map timings: {map}");

    println!();
    println!(
        "console benchmark: {n} cases ({open_alerts} open alerts), {grids} grids; {requests} requests of each of {} queue pages, {runs} map draws; one machine ({} s)",
        kinds.len(),
        started.elapsed().as_secs()
    );
    println!("| figure | GridEdge | peer | ratio (peer / GridEdge) | goal |");
    println!("| --- | --- | --- | --- | --- |");
    let (g50, g99) = (pct(&mut ours, 0.5), pct(&mut ours, 0.99));
    let (p50, p99) = (pct(&mut theirs, 0.5), pct(&mut theirs, 0.99));
    println!(
        "| queue page with its total, p50 / p99 (peer: PostgreSQL 15, indexed) | {g50:.1} / {g99:.1} ms | {p50:.1} / {p99:.1} ms | {:.2} / {:.2} | p99 ≤ 100 ms |",
        p50 / g50,
        p99 / g99
    );
    for (label, total, a, b) in &per_kind {
        println!(
            "| — {label} ({total} cases), p99 | {a:.1} ms | {b:.1} ms | {:.2} | |",
            b / a
        );
    }
    let (gm, gx) = (pct(&mut g, 0.5), pct(&mut g, 1.0));
    let (pm, px) = (pct(&mut p, 0.5), pct(&mut p, 1.0));
    println!(
        "| map of {grids} grids drawn in Chromium, median / slowest (peer: Leaflet's GeoJSON layer, data inline) | {gm:.0} / {gx:.0} ms | {pm:.0} / {px:.0} ms | {:.2} / {:.2} | ≤ 1 s |",
        pm / gm,
        px / gx
    );
    println!(
        "| — of which the map view's own measure (asking /api/v1/map to drawn), median; the same answer to a Rust client, median | {:.0} ms; {:.0} ms | | | |",
        pct(&mut in_page, 0.5),
        pct(&mut api_ms, 0.5)
    );
    Ok(())
}
