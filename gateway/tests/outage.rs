//! Seventy-two hours without the WAN, in simulated time: the centre's cameras, kiosks,
//! terminals and sensors go on using the gateway while the uplink is cut; then the link
//! returns and the backlog drains.

mod rig;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use firmware_config::wire::{Event, EventClass};
use rig::{kiosk_token, video_token, Layout, Rig};
use serde_json::{json, Value};

const HOURS: u64 = 72;
const KIOSKS: usize = 3;
const BUDGET: u64 = 16 << 20;
/// Telemetry a minute from the hall's sensors: enough to fill the budget several times over.
const TELEMETRY_PER_MINUTE: usize = 8;
const TELEMETRY_BYTES: usize = 2048;

fn heartbeat(uptime: u64) -> Value {
    json!({ "app_version": "kiosk-app 3.2.1", "uptime_secs": uptime })
}

fn submission(hour: u64) -> Value {
    json!({
        "category": "report",
        "grid": "11019900100001002",
        "title": format!("路灯不亮 {hour}"),
        "description": format!("第 {hour} 小时报告"),
        "contact": { "name": "王先生", "phone": "13800138000" },
    })
}

/// What happened while the link was cut, to be found again at central.
#[derive(Default)]
struct Expect {
    receipts: Vec<String>,
    /// Alerts the sensors posted, by their number.
    sensor_alerts: Vec<u64>,
    kiosk_queries: u64,
    telemetry: u64,
}

#[tokio::test(start_paused = true)]
async fn seventy_two_hours_without_the_wan_lose_nothing_that_matters_and_drain_in_order() {
    let started = Instant::now();
    let mut rig = Rig::start(Layout {
        cameras: 2,
        kiosks: KIOSKS,
        video_terminals: 1,
        disk_budget: "16 MiB",
        health_interval: "30s",
        reconnect_max: "60s",
        bundles: None,
    })
    .await;
    // Master data first, while the link is up, as on any morning.
    let data = rig.central.masterdata();
    rig.send(firmware_config::topics::Channel::Data, data);
    assert!(
        rig.until(Duration::from_secs(30), || rig
            .shared()
            .replica
            .report()
            .version
            == 1)
            .await,
        "the replica never got central's master data"
    );
    beat_all(&rig, 0).await;
    // Central has everything from before the outage.
    drain(&mut rig, Duration::from_secs(60)).await;
    rig.broker.cut();
    let cut_at = rig.clock.now_utc();

    let mut expect = Expect::default();
    let step = Duration::from_secs(10);
    let padding = "x".repeat(TELEMETRY_BYTES);
    let mut max_pending_bytes = 0;
    for tick in 1..=(HOURS * 3600 / step.as_secs()) {
        rig.pass(step).await;
        let secs = tick * step.as_secs();
        // The video terminal is switched off for two hours on the second day, a camera for
        // an hour on the third.
        let video_on = !(24 * 3600..26 * 3600).contains(&secs);
        rig.cameras
            .set_on("camera-1", !(50 * 3600..51 * 3600).contains(&secs));
        if secs % 30 == 0 {
            for n in 0..KIOSKS {
                beat(&rig, &kiosk_token(n), secs).await;
            }
            if video_on {
                beat(&rig, &video_token(0), secs).await;
            }
        }
        if secs % 60 == 0 {
            let events: Vec<Value> = (0..TELEMETRY_PER_MINUTE)
                .map(|i| json!({ "class": "telemetry", "kind": "hall.air", "payload": { "t": secs, "i": i, "pad": padding } }))
                .collect();
            rig.post_events(events).await;
            expect.telemetry += TELEMETRY_PER_MINUTE as u64;
        }
        if secs % 600 == 0 {
            for n in 0..KIOSKS {
                kiosk_queries(&rig, n).await;
                expect.kiosk_queries += 3;
            }
        }
        if secs % 3600 == 0 {
            let hour = secs / 3600;
            let kiosk = kiosk_token((hour as usize) % KIOSKS);
            let (status, answer) = rig
                .call(
                    Method::POST,
                    "/api/v1/kiosk/submissions",
                    Some(&kiosk),
                    Some(submission(hour)),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "hour {hour}: {answer}");
            let receipt = answer["receipt"].as_str().unwrap().to_owned();
            let (status, seen) = rig
                .call(
                    Method::GET,
                    &format!("/api/v1/kiosk/submissions/{receipt}"),
                    Some(&kiosk),
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{seen}");
            assert_eq!(seen["status"], "submitted");
            expect.receipts.push(receipt);
        }
        if secs % (6 * 3600) == 0 {
            let n = secs / (6 * 3600);
            rig.post_events(vec![
                json!({ "class": "alert", "kind": "hall.smoke", "payload": { "n": n } }),
            ])
            .await;
            expect.sensor_alerts.push(n);
        }
        if secs % 3600 == 0 {
            let s = rig.shared().outbox.summary();
            max_pending_bytes = max_pending_bytes.max(s.pending_bytes);
        }
    }
    // The cameras streamed all along (one but for its hour), and pictures were taken.
    let cameras = rig.shared().cameras.snapshot();
    for c in &cameras {
        assert_eq!(c.state.as_str(), "streaming", "{c:?}");
        assert!(c.frames >= (HOURS - 2) * 3600, "{c:?}");
        assert!(
            c.decoded >= HOURS * 6 - 12,
            "a snapshot every ten minutes: {c:?}"
        );
    }
    assert_eq!(cameras[0].reconnects, 0);
    assert_eq!(cameras[1].reconnects, 1);
    let (status, _) = rig
        .call(
            Method::GET,
            "/api/v1/cameras/camera-0/snapshot.jpg",
            Some(&video_token(0)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let simulated = rig.clock.now_utc() - cut_at;
    assert!(
        simulated >= time::Duration::hours(HOURS as i64),
        "{simulated}"
    );
    assert_eq!(
        rig.broker.connects(),
        1,
        "no session while the link was cut"
    );

    // Within the budget, by evicting telemetry (and only telemetry).
    let summary = rig.shared().outbox.summary();
    assert!(
        max_pending_bytes <= BUDGET,
        "{max_pending_bytes} bytes pending, budget {BUDGET}"
    );
    let evicted = |class: &str| summary.evicted.get(class).copied().unwrap_or(0);
    assert!(
        evicted("telemetry") > 0,
        "the budget was never full: {summary:?}"
    );
    assert_eq!(evicted("alert"), 0, "{summary:?}");
    assert_eq!(evicted("submission"), 0, "{summary:?}");
    assert_eq!(summary.refused, 0, "{summary:?}");

    // The link returns: everything left drains, most urgent class first, in order within a
    // class, each event once.
    rig.broker.restore();
    // Central acks each batch as it comes, as the real one does once it stored it.
    let rewinds = rig.shared().metrics.uplink_rewinds.get();
    let restored = rig.clock.instant();
    let got = drain(&mut rig, Duration::from_secs(60)).await;
    let drained_in = rig.clock.since(restored);
    assert_eq!(
        rig.shared().metrics.uplink_rewinds.get(),
        rewinds,
        "no ack was overdue"
    );
    let mut seen = std::collections::BTreeSet::new();
    let twice: Vec<_> = got
        .iter()
        .filter(|e| !seen.insert(e.seq))
        .map(|e| (e.seq, e.kind.clone(), e.payload.get().to_owned()))
        .collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    let mut seqs: Vec<u64> = got.iter().map(|e| e.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), got.len(), "an event was delivered twice");
    let mut by_class: BTreeMap<u8, Vec<&Event>> = BTreeMap::new();
    for e in &got {
        by_class.entry(e.class as u8).or_default().push(e);
    }
    for (class, events) in &by_class {
        assert!(
            events.windows(2).all(|w| w[0].seq < w[1].seq),
            "class {class} out of order"
        );
    }
    let first = |class: EventClass| got.iter().position(|e| e.class == class);
    let last = |class: EventClass| got.iter().rposition(|e| e.class == class);
    assert!(
        last(EventClass::Alert) < first(EventClass::Telemetry),
        "alerts go before telemetry"
    );
    assert!(last(EventClass::Submission) < first(EventClass::Telemetry));

    // Every submission, once.
    let receipts: Vec<String> = got
        .iter()
        .filter(|e| e.class == EventClass::Submission)
        .map(|e| payload(e)["check"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(receipts.len(), expect.receipts.len());
    for (receipt, check) in expect.receipts.iter().zip(&receipts) {
        assert!(receipt.ends_with(check), "{receipt} vs {check}");
    }
    // Every alert: the sensors' and the gateway's own for the terminal switched off.
    let sensor_alerts: Vec<u64> = got
        .iter()
        .filter(|e| e.kind == "hall.smoke")
        .map(|e| payload(e)["n"].as_u64().unwrap())
        .collect();
    assert_eq!(sensor_alerts, expect.sensor_alerts);
    let offline = got
        .iter()
        .filter(|e| e.kind == "terminal.offline")
        .map(|e| {
            payload(e)["terminal"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect::<Vec<_>>();
    assert_eq!(
        offline,
        ["video-0"],
        "only the terminal switched off went offline"
    );
    let cameras_down: Vec<(String, String)> = got
        .iter()
        .filter(|e| e.kind.starts_with("camera.") && e.class == EventClass::Alert)
        .map(|e| {
            (
                e.kind.clone(),
                payload(e)["camera"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        cameras_down,
        [("camera.offline".to_owned(), "camera-1".to_owned())],
        "only the camera switched off, once"
    );
    // Telemetry: what was not evicted arrived, and nothing else.
    let telemetry = got
        .iter()
        .filter(|e| e.class == EventClass::Telemetry)
        .count() as u64;
    let summary = rig.shared().outbox.summary();
    assert_eq!(
        telemetry + summary.evicted["telemetry"],
        expect.telemetry,
        "telemetry delivered plus evicted is telemetry posted"
    );
    eprintln!(
        "72 h of outage simulated in {:.1} s: {} camera frames, {} kiosk queries answered, {} submissions, {} alerts from sensors, {} telemetry events posted and {} evicted, {} events drained in {:?} (simulated); most pending {} of a {} budget",
        started.elapsed().as_secs_f64(),
        cameras.iter().map(|c| c.frames).sum::<u64>(),
        expect.kiosk_queries,
        expect.receipts.len(),
        expect.sensor_alerts.len(),
        expect.telemetry,
        summary.evicted["telemetry"],
        got.len(),
        drained_in,
        max_pending_bytes,
        BUDGET,
    );
    rig.stop().await;
}

/// Takes every batch the gateway sends and acks it at once, as central does once it stored
/// it, until nothing is pending; fails when that takes longer than `limit`.
async fn drain(rig: &mut Rig, limit: Duration) -> Vec<Event> {
    let from = rig.clock.instant();
    let mut got = Vec::new();
    while rig.shared().outbox.summary().pending > 0 {
        while let Some(p) = rig.broker.try_next() {
            let env = firmware_config::wire::decode(&p.payload).unwrap();
            if let firmware_config::wire::Message::Events(batch) = env.message {
                rig.ack(env.seq, &batch.events);
                got.extend(batch.events);
            }
        }
        assert!(
            rig.clock.since(from) < limit,
            "the backlog did not drain in {limit:?}"
        );
        rig.until(Duration::from_millis(10), || false).await;
    }
    got
}

fn payload(e: &Event) -> Value {
    serde_json::from_str(e.payload.get()).unwrap()
}

async fn beat(rig: &Rig, token: &str, uptime: u64) {
    let (status, body) = rig
        .call(
            Method::POST,
            "/api/v1/terminals/heartbeat",
            Some(token),
            Some(heartbeat(uptime)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn beat_all(rig: &Rig, uptime: u64) {
    for n in 0..KIOSKS {
        beat(rig, &kiosk_token(n), uptime).await;
    }
    beat(rig, &video_token(0), uptime).await;
}

/// What a resident at kiosk `n` looks at: the catalogue, the grids, one item.
async fn kiosk_queries(rig: &Rig, n: usize) {
    let token = kiosk_token(n);
    let (status, items) = rig
        .call(Method::GET, "/api/v1/kiosk/items", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{items}");
    let code = items["items"][0]["code"].as_str().unwrap().to_owned();
    let (status, grids) = rig
        .call(Method::GET, "/api/v1/kiosk/grids", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{grids}");
    let (status, item) = rig
        .call(
            Method::GET,
            &format!("/api/v1/kiosk/items/{code}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{item}");
}
