//! Three central replicas (central's binary) on one PostgreSQL and one Mosquitto, three
//! gateways under a steady load. Each replica holds the lease of one gateway: it alone takes
//! that gateway's batches and raises and escalates its alerts, and every replica shows every
//! alert. The replica holding one gateway is killed (-9) mid-stream; another takes the gateway
//! over within 10 s, every event the kiosks had acknowledged is stored exactly once, each
//! alert was raised once, the dead replica's alert still escalates (once), and an operator's
//! console session opened on the dead replica goes on working on the others. And two replicas
//! wait out a restart of PostgreSQL under load, and a shared camera plays on both with one push
//! and goes on when the replica relaying it dies.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use gridedge_tests::backbone::{assert_stored_once, Poster};
use gridedge_tests::live::Viewer;
use gridedge_tests::mosquitto::Mosquitto;
use gridedge_tests::postgres::Postgres;
use gridedge_tests::services::{
    api_client, central_events, central_replica_toml, Console, ServiceProcess, TestGateway,
};
use gridedge_tests::{
    camera_toml, eventually, free_port, init_test_logging, try_json, CameraOptions, Pattern,
    TestCamera,
};
use serde_json::{json, Value};

const GATEWAYS: [&str; 3] = ["gw-r1", "gw-r2", "gw-r3"];
const REPLICAS: [&str; 3] = ["a", "b", "c"];
/// How long after opening an unacknowledged alert escalates to the grid station.
const ESCALATE_AFTER: Duration = Duration::from_secs(30);

/// A replica named `name` on `broker` and `pg`, its HTTP on a free port.
fn replica(dir: &Path, name: &str, broker: &str, pg: &Postgres) -> (ServiceProcess, SocketAddr) {
    let port = free_port();
    let url_file = dir.join("pg-url");
    std::fs::write(&url_file, pg.url()).unwrap();
    let text = central_replica_toml(dir, broker, port, name, &url_file)
        + &format!(
            "\n[alerts]\nescalate_to_station = \"{}s\"\n",
            ESCALATE_AFTER.as_secs()
        );
    let process = ServiceProcess::spawn("central", &text).unwrap();
    (process, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Every alert a console lists.
async fn alerts(console: &Console) -> Vec<Value> {
    let (_, v) = console.get("/api/v1/alerts?all=true").await;
    v["alerts"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_the_gateways_and_when_one_is_killed_nothing_is_lost_or_doubled() {
    init_test_logging();
    let pg = Postgres::start().unwrap();
    let broker = Mosquitto::start().unwrap();
    let dirs: Vec<_> = REPLICAS
        .iter()
        .map(|_| tempfile::tempdir().unwrap())
        .collect();
    let mut replicas: Vec<(String, ServiceProcess, SocketAddr)> = REPLICAS
        .iter()
        .zip(&dirs)
        .map(|(name, dir)| {
            let (p, addr) = replica(dir.path(), name, &broker.url(), &pg);
            (format!("central-test-{name}"), p, addr)
        })
        .collect();
    for (_, _, addr) in &replicas {
        eventually("replica up", Duration::from_secs(30), || async {
            try_json(format!("http://{addr}/healthz")).await
        })
        .await
        .unwrap();
    }
    let mut gateways = Vec::new();
    let mut posters = Vec::new();
    for id in GATEWAYS {
        let gw = TestGateway::start(id, &broker.url(), None).await.unwrap();
        posters.push(Poster::start_paced(gw.http_addr, id, 10, 100.0));
        gateways.push(gw);
    }
    let logs = |replicas: &[(String, ServiceProcess, SocketAddr)]| {
        replicas
            .iter()
            .map(|(n, p, _)| format!("--- {n}\n{}", p.process.log_text()))
            .collect::<Vec<_>>()
            .join("\n")
    };

    // Each replica holds one gateway, and stores its events.
    eventually("one gateway each", Duration::from_secs(40), || async {
        let owners: std::collections::BTreeSet<String> =
            GATEWAYS.iter().filter_map(|g| pg.lease_owner(g)).collect();
        (owners.len() == 3).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&replicas)));
    for gw in &gateways {
        eventually("events stored", Duration::from_secs(30), || async {
            let n: u64 = pg
                .psql(&format!(
                    "SELECT count(*) FROM events WHERE gateway = '{}'",
                    gw.id
                ))
                .ok()?
                .parse()
                .ok()?;
            (n > 0).then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", gw.id, logs(&replicas)));
    }

    // Each replica's /healthz says who it is and what it holds.
    for (name, _, addr) in &replicas {
        let h = try_json(format!("http://{addr}/healthz")).await.unwrap();
        assert_eq!(h["replica"]["name"], name.as_str(), "{h}");
        assert_eq!(h["replica"]["gateways_held"], 1, "{h}");
        assert_eq!(h["store"]["reachable"], true, "{h}");
        assert_eq!(h["broker_link"], "connected", "{h}");
    }

    // The victim: the replica holding the first gateway. An operator logs in there.
    let victim_name = pg.lease_owner(GATEWAYS[0]).unwrap();
    let victim = replicas.iter().position(|r| r.0 == victim_name).unwrap();
    let base = |addr: SocketAddr| format!("http://{addr}");
    let console = Console::login(&base(replicas[victim].2), "op")
        .await
        .unwrap();
    let consoles: Vec<Console> = replicas.iter().map(|r| console.on(&base(r.2))).collect();

    // A door forced at the first gateway: raised by its owner, on every console within 1 s.
    let key = format!("{}/source/tests#door.forced", GATEWAYS[0]);
    let posted = Instant::now();
    gridedge_tests::services::post_events(
        gateways[0].http_addr,
        GATEWAYS[0],
        &json!([{ "class": "alert", "kind": "door.forced", "payload": { "door": "vault" } }]),
    )
    .await
    .unwrap();
    let seen = futures::future::join_all(consoles.iter().map(|c| {
        let key = key.clone();
        async move {
            while posted.elapsed() < Duration::from_secs(30) {
                if alerts(c).await.iter().any(|a| a["key"] == key) {
                    return Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            None
        }
    }))
    .await;
    let seen: Vec<Instant> = seen
        .into_iter()
        .map(|s| s.unwrap_or_else(|| panic!("{key} on every replica\n{}", logs(&replicas))))
        .collect();
    let first = *seen.iter().min().unwrap();
    let spread = seen.iter().map(|t| *t - first).max().unwrap();
    eprintln!(
        "door alert: first on a console {:?} after the post, on every console within {spread:?}",
        first - posted
    );
    assert!(spread <= Duration::from_secs(1), "{spread:?}");

    // The kill, mid-stream.
    let killed = Instant::now();
    replicas[victim].1.kill();
    let taken_over = eventually(
        "the gateway taken over",
        Duration::from_secs(20),
        || async {
            pg.lease_owner(GATEWAYS[0])
                .filter(|o| *o != victim_name)
                .map(|_| killed.elapsed())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&replicas)));
    eprintln!("{} taken over {taken_over:?} after the kill", GATEWAYS[0]);
    assert!(taken_over <= Duration::from_secs(10), "{taken_over:?}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut accepted = Vec::new();
    for p in posters {
        accepted.push(p.stop().await);
    }
    let live: Vec<usize> = (0..replicas.len()).filter(|i| *i != victim).collect();
    let survivor = consoles[live[0]].clone_on_self();

    // The operator's session, opened on the dead replica, works on the others.
    let (status, _) = survivor.get("/api/v1/alerts").await;
    assert_eq!(status, 200, "the session lives on");

    // The door alert escalates once, by the gateway's new owner.
    let escalated = eventually(
        "the dead replica's alert escalated",
        ESCALATE_AFTER + Duration::from_secs(20),
        || async {
            let a = alerts(&survivor)
                .await
                .into_iter()
                .find(|a| a["key"] == key)?;
            (a["escalation"].as_u64()? >= 1).then_some(a)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&replicas)));
    let escalations = |a: &Value| {
        a["audit"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter(|e| e["action"].as_str().unwrap_or("").starts_with("escalated"))
                    .count()
            })
            .unwrap_or(0)
    };
    assert_eq!(escalations(&escalated), 1, "{escalated}");
    // Acknowledged through the session (its CSRF token) on another replica.
    let id = escalated["id"].as_u64().unwrap();
    let (status, body) = survivor
        .post(&format!("/api/v1/alerts/{id}/ack"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");

    for (gw, accepted) in gateways.iter().zip(&accepted) {
        eventually(
            "the gateway's outbox drained",
            Duration::from_secs(90),
            || async {
                let h = try_json(gw.url("/healthz")).await?;
                (h["outbox"]["pending"].as_u64()? == 0).then_some(())
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", gw.id, logs(&replicas)));
        let stored = central_events(replicas[live[0]].2, &gw.id).await.unwrap();
        assert_stored_once(&stored, accepted);
    }
    // Each alert was raised once: one row per key, the same list on every live replica.
    let rows = pg
        .psql("SELECT count(*), count(DISTINCT convert_from(value, 'UTF8')::json->>'key') FROM state WHERE tbl = 'alerts'")
        .unwrap();
    let (n, distinct) = rows.split_once('|').unwrap();
    assert_eq!(n, distinct, "one alert per key: {rows}");
    let listed = |c: &Console| {
        let c = c.clone_on_self();
        async move {
            let mut keys: Vec<String> = alerts(&c)
                .await
                .iter()
                .filter_map(|a| a["key"].as_str().map(str::to_owned))
                .collect();
            keys.sort();
            keys
        }
    };
    let on_first = listed(&consoles[live[0]]).await;
    assert_eq!(on_first.len().to_string(), n, "{on_first:?}");
    eventually(
        "the same alerts on every replica",
        Duration::from_secs(5),
        || async { (listed(&consoles[live[1]]).await == on_first).then_some(()) },
    )
    .await
    .unwrap();
    // Made-up notes on the replicas' channel (whoever holds the database's credentials): a
    // note only names a row to read again, so an alert nobody stored shows nowhere.
    pg.psql(
        r#"SELECT pg_notify('gridedge_feed', '{"from":"intruder","t":"alert","id":987654}'),
                  pg_notify('gridedge_feed', '{"from":"intruder","t":"devices","gateway":"gw-r2","seqs":[1,2,3]}'),
                  pg_notify('gridedge_feed', 'not a note')"#,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in &live {
        assert_eq!(
            listed(&consoles[*i]).await,
            on_first,
            "nothing made up shows"
        );
        let (_, v) = consoles[*i].get("/api/v1/alerts/987654").await;
        assert!(v.get("id").is_none(), "{v}");
    }
    for gw in gateways {
        gw.stop().await.unwrap();
    }
    for r in &mut replicas {
        r.1.kill();
    }
}

/// Two replicas, two gateways under load, PostgreSQL killed (-9) and started again: while it
/// is down nothing is acknowledged and the leases run out; once it is back the replicas take
/// the gateways again, ask them to resend, and every acknowledged event is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_wait_out_a_database_restart_and_take_their_gateways_again() {
    init_test_logging();
    let mut pg = Postgres::start().unwrap();
    let broker = Mosquitto::start().unwrap();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut replicas: Vec<(ServiceProcess, SocketAddr)> = ["a", "b"]
        .iter()
        .zip(&dirs)
        .map(|(name, dir)| replica(dir.path(), name, &broker.url(), &pg))
        .collect();
    for (_, addr) in &replicas {
        eventually("replica up", Duration::from_secs(30), || async {
            try_json(format!("http://{addr}/healthz")).await
        })
        .await
        .unwrap();
    }
    let logs = |replicas: &[(ServiceProcess, SocketAddr)]| {
        replicas
            .iter()
            .map(|(p, _)| p.process.log_text())
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    let mut gateways = Vec::new();
    let mut posters = Vec::new();
    for id in ["gw-pr1", "gw-pr2"] {
        let gw = TestGateway::start(id, &broker.url(), None).await.unwrap();
        posters.push(Poster::start_paced(gw.http_addr, id, 10, 100.0));
        gateways.push(gw);
    }
    eventually("both gateways held", Duration::from_secs(30), || async {
        let n: usize = pg
            .psql("SELECT count(DISTINCT owner) FROM live_leases")
            .ok()?
            .parse()
            .ok()?;
        (n == 2).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&replicas)));
    tokio::time::sleep(Duration::from_secs(2)).await;

    pg.kill();
    // Down past the leases' time: both replicas let their gateways go.
    let pending = |gw: &TestGateway| {
        let url = gw.url("/healthz");
        async move { try_json(url).await?["outbox"]["pending"].as_u64() }
    };
    eventually(
        "a backlog at each gateway",
        Duration::from_secs(30),
        || async {
            for gw in &gateways {
                if pending(gw).await? < 500 {
                    return None;
                }
            }
            Some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&replicas)));
    tokio::time::sleep(Duration::from_secs(4)).await;
    pg.start_again().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut accepted = Vec::new();
    for p in posters {
        accepted.push(p.stop().await);
    }
    for (gw, accepted) in gateways.iter().zip(&accepted) {
        eventually("the backlog drained", Duration::from_secs(90), || async {
            (pending(gw).await? == 0).then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", gw.id, logs(&replicas)));
        let stored = central_events(replicas[1].1, &gw.id).await.unwrap();
        assert_stored_once(&stored, accepted);
    }
    for gw in gateways {
        gw.stop().await.unwrap();
    }
    for (p, _) in &mut replicas {
        p.kill();
    }
}

/// A camera shared on one replica plays on both: the replica holding the gateway has it
/// pushed, the other follows that relay, and the gateway pushes once. Both device boards show
/// the camera. A viewer's token is no
/// key to the replicas' own relay endpoint. The holder is killed (-9): the survivor takes the
/// gateway, has it push there, and its viewer's video goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_plays_on_every_replica_with_one_push_and_resumes_when_the_relay_dies() {
    init_test_logging();
    let pg = Postgres::start().unwrap();
    let broker = Mosquitto::start().unwrap();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut replicas: Vec<(String, ServiceProcess, SocketAddr)> = ["a", "b"]
        .iter()
        .zip(&dirs)
        .map(|(name, dir)| {
            let (p, addr) = replica(dir.path(), name, &broker.url(), &pg);
            (format!("central-test-{name}"), p, addr)
        })
        .collect();
    let logs = |replicas: &[(String, ServiceProcess, SocketAddr)]| {
        replicas
            .iter()
            .map(|(n, p, _)| format!("--- {n}\n{}", p.process.log_text()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    for (_, _, addr) in &replicas {
        eventually("replica up", Duration::from_secs(30), || async {
            try_json(format!("http://{addr}/healthz")).await
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&replicas)));
    }
    let cam = TestCamera::start(CameraOptions::small(Pattern::Moving)).unwrap();
    let gw = TestGateway::start_with(
        "gw-video",
        &broker.url(),
        None,
        &camera_toml("hall", cam.url().as_str(), ""),
    )
    .await
    .unwrap();
    let holder = eventually("the gateway held", Duration::from_secs(30), || async {
        pg.lease_owner("gw-video")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&replicas)));
    let o = replicas.iter().position(|r| r.0 == holder).unwrap();
    let n = 1 - o;
    let (owner_addr, other_addr) = (replicas[o].2, replicas[n].2);

    // Granted on the replica that does not hold the gateway.
    let r = api_client()
        .post(format!("http://{other_addr}/api/v1/shares"))
        .json(&json!({"gateway": "gw-video", "camera": "hall", "viewers": ["on-owner", "on-other"], "minutes": 5, "by": "supervisor-li"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let granted: Value = r.json().await.unwrap();
    let live = |i: usize| granted["viewers"][i]["live"].as_str().unwrap().to_owned();
    let on_owner = Viewer::connect(&format!("ws://{owner_addr}{}", live(0)))
        .await
        .unwrap();
    let on_other = Viewer::connect(&format!("ws://{other_addr}{}", live(1)))
        .await
        .unwrap();
    eventually(
        "both viewers get video",
        Duration::from_secs(30),
        || async {
            (on_owner.received.binary() > 25 && on_other.received.binary() > 25).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&replicas)));
    // Every replica's device board shows the camera, whichever stored its events.
    for addr in [owner_addr, other_addr] {
        eventually(
            "the camera on every replica's board",
            Duration::from_secs(10),
            || async {
                let h =
                    gridedge_tests::try_json_api(format!("http://{addr}/api/v1/health")).await?;
                h["centres"]
                    .as_array()?
                    .iter()
                    .filter(|c| c["gateway"] == "gw-video")
                    .flat_map(|c| c["cameras"].as_array().cloned().unwrap_or_default())
                    .any(|cam| cam["id"] == "hall" && cam["state"] == "streaming")
                    .then_some(())
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{addr}: {e}\n{}", logs(&replicas)));
    }
    let pushes = || async {
        try_json(gw.url("/api/v1/cameras/hall"))
            .await
            .and_then(|c| c["viewers"].as_u64())
    };
    assert_eq!(pushes().await, Some(1), "one push for both replicas");

    // An attacker with a viewer's token, at the replicas' relay endpoint.
    let token = live(1).split("token=").nth(1).unwrap().to_owned();
    for url in [
        format!("ws://{owner_addr}/api/v1/relay/pull/gw-video/hall?token={token}"),
        format!("ws://{owner_addr}/api/v1/relay/pull/gw-video/hall?token=forged.token"),
    ] {
        let refused = Viewer::connect(&url).await;
        assert!(refused.is_err(), "{url}: a viewer's token is no replica's");
    }

    // The holder dies: the survivor takes the gateway and its viewer's video goes on.
    let before = on_other.received.binary();
    replicas[o].1.kill();
    let killed = Instant::now();
    let resumed = eventually(
        "the survivor's viewer sees video again",
        Duration::from_secs(40),
        || async { (on_other.received.binary() > before + 50).then_some(killed.elapsed()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&replicas)));
    eprintln!("video on the survivor resumed within {resumed:?} of the kill");
    eventually(
        "the survivor holds the gateway",
        Duration::from_secs(10),
        || async { (pg.lease_owner("gw-video")? == replicas[n].0).then_some(()) },
    )
    .await
    .unwrap();
    eventually("one push again", Duration::from_secs(20), || async {
        (pushes().await? == 1).then_some(())
    })
    .await
    .unwrap();
    drop(on_owner);
    drop(on_other);
    gw.stop().await.unwrap();
    for r in &mut replicas {
        r.1.kill();
    }
}
