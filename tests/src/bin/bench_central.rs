//! `bench-central [--quick] [--gateways N] [--devices N] [--seconds S] [--burst N]`: a city's
//! gateways reporting into central, against a broker with a minimal durable consumer, side by
//! side.
//!
//! - GridEdge: the release central with its embedded broker, as the README's main command runs
//!   it. Every batch is checked, stored in sled and flushed, fed to the device board and the
//!   alert rules, and only then acknowledged to its gateway.
//! - Peer: Mosquitto (persistence on) with a consumer process that decodes each message,
//!   appends it to a file, fsyncs (group commit) and then publishes the same acknowledgement:
//!   the floor of "a broker and something that keeps what it is told", with no rules, registry
//!   or console.
//!
//! The simulated fleet is N MQTT clients in this process speaking the gateways' wire protocol.
//! Gateway i reports at i·10 s/N and then every 10 s: its health (with its terminals summary)
//! and one batch with a state event of each of its devices (a fifth cameras, the rest
//! terminals). Measured over a steady window: events stored and acknowledged per second, the
//! acknowledgement latency, and the server's CPU and RSS. Meanwhile a probe raises and clears
//! a camera-covered alert on one gateway every second; for GridEdge the delay counts until the
//! change reaches an operator's console feed (`/api/v1/alerts/stream`), for the peer until the
//! event is stored and acknowledged. Then every gateway sends a burst (B/N events in batches
//! of 100 at once), timed until the last acknowledgement.
//!
//! With `--soak`, an hour of the steady load with retention on instead (`bench_central/soak.rs`).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use firmware_config::ids::GatewayId;
use firmware_config::runtime::mqtt::client_options;
use firmware_config::topics::{Channel, Topic};
use firmware_config::wire::{self, Envelope, EventClass, Message};
use gridedge_tests::bench::arg_value;
use gridedge_tests::process::{cpu_seconds, peak_rss_mib, ChildProcess};
use gridedge_tests::services::{binary, central_toml, Console};
use gridedge_tests::{free_port, wait_for_port};
use rumqttc::{AsyncClient, Event, LastWill, Packet, QoS};
use tokio::sync::mpsc;

#[path = "bench_central/soak.rs"]
mod soak;

const INTERVAL: Duration = Duration::from_secs(10);
const BURST_BATCH: u64 = 100;
const PROBE_CAMERA: &str = "cam-probe";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tag {
    Steady,
    Probe,
    Burst,
}

#[derive(Default)]
struct Stats {
    steady_events: AtomicU64,
    burst_events: AtomicU64,
    ack_ms: Mutex<Vec<f64>>,
    probe_ack_ms: Mutex<Vec<f64>>,
    last_burst_ack: Mutex<Option<Instant>>,
    connected: AtomicU64,
    errors: AtomicU64,
}

/// Batches sent and not yet acknowledged, by envelope sequence number.
type Sent = Arc<Mutex<HashMap<u64, (Instant, u64, Tag, Vec<u8>)>>>;

enum Order {
    /// Raise (true) or clear the probe camera's covered alert.
    Probe(bool),
    Burst(u64),
}

struct SimGateway {
    id: GatewayId,
    client: AsyncClient,
    devices: usize,
    envelope_seq: u64,
    event_seq: u64,
    sent: Sent,
}

fn now_utc() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

impl SimGateway {
    fn envelope(&mut self, message: Message) -> anyhow::Result<(u64, Vec<u8>)> {
        self.envelope_seq += 1;
        let env = Envelope::new(self.id.clone(), self.envelope_seq, message);
        Ok((self.envelope_seq, env.encode()?))
    }

    fn device(&self, d: usize) -> (bool, String) {
        // A fifth are cameras, the rest terminals.
        if d % 5 == 0 {
            (true, format!("cam-{d:02}"))
        } else {
            (false, format!("term-{d:02}"))
        }
    }

    fn event(&mut self, class: EventClass, kind: &str, payload: String) -> wire::Event {
        self.event_seq += 1;
        wire::Event {
            seq: self.event_seq,
            class,
            kind: kind.to_owned(),
            time: now_utc(),
            payload: serde_json::value::RawValue::from_string(payload)
                .unwrap_or_else(|_| serde_json::value::RawValue::from_string("{}".into()).unwrap()),
            source: None,
        }
    }

    /// One state event per device, as a gateway forwards them.
    fn device_events(&mut self, n: usize) -> Vec<wire::Event> {
        (0..n)
            .map(|i| {
                let (camera, id) = self.device(i % self.devices);
                if camera {
                    self.event(
                        EventClass::Health,
                        "camera.streaming",
                        format!("{{\"camera\":\"{id}\",\"name\":\"大厅 {id}\",\"fps\":25,\"kbps\":4000}}"),
                    )
                } else {
                    self.event(
                        EventClass::Health,
                        "terminal.online",
                        format!("{{\"terminal\":\"{id}\",\"kind\":\"kiosk\",\"cpu\":12,\"disk_free_mb\":20480}}"),
                    )
                }
            })
            .collect()
    }

    async fn send_batch(&mut self, events: Vec<wire::Event>, tag: Tag) -> anyhow::Result<()> {
        let n = events.len() as u64;
        let (seq, payload) = self.envelope(Message::Events(wire::EventBatch { events }))?;
        self.sent
            .lock()
            .unwrap()
            .insert(seq, (Instant::now(), n, tag, payload.clone()));
        self.client
            .publish(
                Topic::gateway(&self.id, Channel::Events).path(),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await?;
        Ok(())
    }

    async fn report(&mut self) -> anyhow::Result<()> {
        let terminals: Vec<String> = (0..self.devices)
            .map(|d| self.device(d))
            .filter(|(camera, _)| !camera)
            .map(|(_, id)| id)
            .collect();
        let health = Message::Health(wire::GatewayHealth {
            version: "bench".into(),
            site: format!("site-{}", self.id),
            uptime_secs: 1,
            cameras_configured: (self.devices - terminals.len()) as u32,
            terminals_configured: terminals.len() as u32,
            outbox: Some(wire::OutboxReport::default()),
            terminals: Some(wire::TerminalsSummary {
                online: terminals,
                ..Default::default()
            }),
            config: None,
            masterdata: None,
            certificate_expires: None,
        });
        let (_, payload) = self.envelope(health)?;
        self.client
            .publish(
                Topic::gateway(&self.id, Channel::Health).path(),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await?;
        let events = self.device_events(self.devices);
        self.send_batch(events, Tag::Steady).await
    }

    async fn probe(&mut self, raise: bool) -> anyhow::Result<()> {
        let kind = if raise {
            "camera.covered"
        } else {
            "camera.covered.cleared"
        };
        let e = self.event(
            EventClass::Alert,
            kind,
            format!("{{\"camera\":\"{PROBE_CAMERA}\",\"name\":\"探测\",\"score\":0.93}}"),
        );
        self.send_batch(vec![e], Tag::Probe).await
    }

    async fn burst(&mut self, n: u64) -> anyhow::Result<()> {
        let mut left = n;
        while left > 0 {
            let k = left.min(BURST_BATCH);
            let events = self.device_events(k as usize);
            self.send_batch(events, Tag::Burst).await?;
            left -= k;
        }
        Ok(())
    }
}

/// Connects gateway `i` and runs it until the orders end.
async fn run_gateway(
    i: usize,
    n: usize,
    devices: usize,
    port: u16,
    stats: Arc<Stats>,
    mut orders: mpsc::Receiver<Order>,
    start: Instant,
) -> anyhow::Result<()> {
    let id = GatewayId::new(format!("gw-b{i:04}")).context("gateway id")?;
    let mut opts = client_options(
        &format!("mqtt://127.0.0.1:{port}"),
        None,
        id.as_str(),
        Duration::from_secs(30),
    )?;
    opts.set_inflight(100);
    let will = Envelope::new(
        id.clone(),
        0,
        Message::Status(wire::Status {
            state: wire::LinkState::Offline,
            version: "bench".into(),
            site: format!("site-{id}"),
            will_seq: None,
        }),
    )
    .encode()?;
    opts.set_last_will(LastWill::new(
        Topic::gateway(&id, Channel::Status).path(),
        will,
        QoS::AtLeastOnce,
        true,
    ));
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    firmware_config::runtime::mqtt::send_at_once(&mut eventloop);
    // A thousand connecting at once wait for their CONNACK longer than rumqttc's 5 s.
    let mut net = eventloop.network_options();
    net.set_connection_timeout(30);
    eventloop.set_network_options(net);
    let sent: Sent = Arc::default();
    let mut gw = SimGateway {
        id: id.clone(),
        client: client.clone(),
        devices,
        envelope_seq: 0,
        event_seq: 0,
        sent: sent.clone(),
    };
    let (s, ack_sent, ack_id, c) = (stats.clone(), sent.clone(), id.clone(), client.clone());
    let poller = tokio::spawn(async move {
        let mut sessions = 0;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    // As a gateway does: subscribe on every session, and after a reconnect
                    // send again what was not acknowledged (central keeps each event once).
                    let _ = c.try_subscribe(
                        Topic::gateway(&ack_id, Channel::Ack).path(),
                        QoS::AtLeastOnce,
                    );
                    sessions += 1;
                    if sessions == 1 {
                        s.connected.fetch_add(1, Ordering::Relaxed);
                    } else {
                        resend_pending(&c, &ack_id, &ack_sent);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let Ok(env) = wire::decode(&p.payload) else {
                        s.errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let Message::Ack(ack) = env.message else {
                        continue;
                    };
                    if ack.is_resend_request() {
                        // A replica that took this gateway over: as a gateway does, send
                        // everything unacknowledged again.
                        resend_pending(&c, &ack_id, &ack_sent);
                        continue;
                    }
                    let Some(batch) = ack.batch else { continue };
                    let Some((at, k, tag, _)) = ack_sent.lock().unwrap().remove(&batch) else {
                        continue;
                    };
                    let ms = at.elapsed().as_secs_f64() * 1e3;
                    match tag {
                        Tag::Steady => {
                            s.steady_events.fetch_add(k, Ordering::Relaxed);
                            s.ack_ms.lock().unwrap().push(ms);
                        }
                        Tag::Probe => s.probe_ack_ms.lock().unwrap().push(ms),
                        Tag::Burst => {
                            s.burst_events.fetch_add(k, Ordering::Relaxed);
                            *s.last_burst_ack.lock().unwrap() = Some(Instant::now());
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if s.errors.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("{}: connection error: {e}", ack_id);
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
    let (_, status) = gw.envelope(Message::Status(wire::Status {
        state: wire::LinkState::Online,
        version: "bench".into(),
        site: format!("site-{id}"),
        will_seq: Some(0),
    }))?;
    client
        .publish(
            Topic::gateway(&id, Channel::Status).path(),
            QoS::AtLeastOnce,
            true,
            status,
        )
        .await?;
    // Open loop: report i·10 s/N after the start and then every 10 s.
    let offset = INTERVAL.mul_f64(i as f64 / n as f64);
    let mut ticker = tokio::time::interval_at((start + offset).into(), INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = ticker.tick() => gw.report().await?,
            order = orders.recv() => match order {
                Some(Order::Probe(raise)) => gw.probe(raise).await?,
                Some(Order::Burst(k)) => gw.burst(k).await?,
                None => break,
            },
        }
    }
    let _ = client.disconnect().await;
    poller.abort();
    Ok(())
}

/// Publishes every batch not yet acknowledged again (central keeps each event once).
fn resend_pending(client: &AsyncClient, id: &GatewayId, sent: &Sent) {
    let pending: Vec<Vec<u8>> = sent.lock().unwrap().values().map(|v| v.3.clone()).collect();
    for p in pending {
        let _ = client.try_publish(
            Topic::gateway(id, Channel::Events).path(),
            QoS::AtLeastOnce,
            false,
            p,
        );
    }
}

struct Fleet {
    orders: Vec<mpsc::Sender<Order>>,
    stats: Arc<Stats>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Fleet {
    async fn start(n: usize, devices: usize, port: u16) -> anyhow::Result<Self> {
        let stats = Arc::new(Stats::default());
        let start = Instant::now() + Duration::from_secs(2);
        let mut orders = Vec::new();
        let mut tasks = Vec::new();
        for i in 0..n {
            let (tx, rx) = mpsc::channel(16);
            orders.push(tx);
            tasks.push(tokio::spawn(run_gateway(
                i,
                n,
                devices,
                port,
                stats.clone(),
                rx,
                start,
            )));
        }
        let fleet = Self {
            orders,
            stats,
            tasks,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while fleet.stats.connected.load(Ordering::Relaxed) < n as u64 {
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {} of {n} gateways connected",
                fleet.stats.connected.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(fleet)
    }

    async fn stop(self) {
        drop(self.orders);
        let deadline = Instant::now() + Duration::from_secs(5);
        for t in self.tasks {
            let left = deadline.saturating_duration_since(Instant::now());
            let abort = t.abort_handle();
            match tokio::time::timeout(left, t).await {
                Ok(Ok(Err(e))) => eprintln!("a simulated gateway failed: {e:#}"),
                Ok(Err(e)) if !e.is_cancelled() => eprintln!("a simulated gateway panicked: {e}"),
                Err(_) => abort.abort(),
                _ => {}
            }
        }
    }
}

/// The server side under test: its processes and where the fleet connects.
struct Server {
    name: String,
    pids: Vec<u32>,
    /// Processes whose children count too (PostgreSQL's postmaster and its backends).
    trees: Vec<u32>,
    mqtt_port: u16,
    /// The console of a GridEdge central, for the live alert feed.
    console: Option<Console>,
    _processes: Vec<ChildProcess>,
    _centrals: Vec<gridedge_tests::services::ServiceProcess>,
}

impl Server {
    fn cpu(&self) -> f64 {
        self.pids
            .iter()
            .filter_map(|p| cpu_seconds(*p))
            .sum::<f64>()
            + self
                .trees
                .iter()
                .map(|p| gridedge_tests::process::tree_cpu_seconds(*p))
                .sum::<f64>()
    }

    fn rss_mib(&self) -> f64 {
        self.pids
            .iter()
            .map(|p| gridedge_tests::process::rss_mib(*p))
            .sum()
    }

    fn peak_rss_mib(&self) -> f64 {
        self.pids.iter().map(|p| peak_rss_mib(*p)).sum()
    }

    /// Bytes its processes have had written to storage (`write_bytes` of `/proc/PID/io`:
    /// what reached the block layer, log rewrites and compaction included).
    fn disk_writes(&self) -> u64 {
        self.pids
            .iter()
            .map(|p| gridedge_tests::process::written_bytes(*p))
            .sum()
    }
}

async fn gridedge_server(dir: &Path, extra: &str) -> anyhow::Result<Server> {
    let (broker, http) = (free_port(), free_port());
    let central = gridedge_tests::services::ServiceProcess::spawn(
        "central",
        &format!("{}\n{extra}", central_toml(dir, broker, http)),
    )?;
    wait_for_port(([127, 0, 0, 1], http).into(), Duration::from_secs(30))?;
    wait_for_port(([127, 0, 0, 1], broker).into(), Duration::from_secs(30))?;
    let console = Console::login(&format!("http://127.0.0.1:{http}"), "op").await?;
    Ok(Server {
        name: "GridEdge".into(),
        trees: Vec::new(),
        pids: central.process.pid().into_iter().collect(),
        mqtt_port: broker,
        console: Some(console),
        _processes: Vec::new(),
        _centrals: vec![central],
    })
}

/// GridEdge's central on Mosquitto instead of its embedded broker (`--external`).
async fn gridedge_on_mosquitto(dir: &Path) -> anyhow::Result<Server> {
    let (broker, port) = mosquitto(dir)?;
    let http = free_port();
    let central = gridedge_tests::services::ServiceProcess::spawn(
        "central",
        &gridedge_tests::services::central_external_toml(
            dir,
            &format!("mqtt://127.0.0.1:{port}"),
            None,
            http,
        ),
    )?;
    wait_for_port(([127, 0, 0, 1], http).into(), Duration::from_secs(30))?;
    let console = Console::login(&format!("http://127.0.0.1:{http}"), "op").await?;
    // Central subscribes before the fleet starts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(Server {
        name: "GridEdge on Mosquitto".into(),
        trees: Vec::new(),
        pids: [central.process.pid(), broker.pid()]
            .into_iter()
            .flatten()
            .collect(),
        mqtt_port: port,
        console: Some(console),
        _processes: vec![broker],
        _centrals: vec![central],
    })
}

/// `replicas` centrals on one Mosquitto, their events and state in `pg`, each taking the
/// batches of the gateways whose lease it holds (the fleet shared out between them during the
/// warm-up). The server is the replicas, the broker and PostgreSQL with its backends; no
/// console.
async fn gridedge_on_postgres(
    dir: &Path,
    replicas: usize,
    pg: &gridedge_tests::postgres::Postgres,
) -> anyhow::Result<Server> {
    let (broker, port) = mosquitto(dir)?;
    let url_file = dir.join("pg-url");
    std::fs::write(&url_file, pg.url())?;
    let mut centrals = Vec::new();
    for r in 0..replicas {
        let (http, rdir) = (free_port(), dir.join(format!("replica-{r}")));
        std::fs::create_dir_all(&rdir)?;
        let text = gridedge_tests::services::central_replica_toml(
            &rdir,
            &format!("mqtt://127.0.0.1:{port}"),
            http,
            &format!("r{r}"),
            &url_file,
        );
        centrals.push(gridedge_tests::services::ServiceProcess::spawn(
            "central", &text,
        )?);
        wait_for_port(([127, 0, 0, 1], http).into(), Duration::from_secs(30))?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut pids: Vec<u32> = centrals.iter().filter_map(|c| c.process.pid()).collect();
    pids.extend(broker.pid());
    Ok(Server {
        name: format!("PostgreSQL x{replicas}"),
        trees: pg.pid().into_iter().collect(),
        pids,
        mqtt_port: port,
        console: None,
        _processes: vec![broker],
        _centrals: centrals,
    })
}

/// `--store postgres`: central on sled (one process, its embedded broker; then on Mosquitto)
/// beside central on PostgreSQL with 1, 2 and 3 replicas (`--replicas 1,2,3`) on one
/// Mosquitto, the same fleet and load each.
async fn store_comparison(
    args: &[String],
    quick: bool,
    (gateways, devices, seconds, burst): (usize, usize, u64, u64),
    root: &Path,
) -> anyhow::Result<()> {
    let replicas: Vec<usize> = match args.iter().position(|a| a == "--replicas") {
        Some(i) => args
            .get(i + 1)
            .context("--replicas N,M,…")?
            .split(',')
            .map(|n| n.parse().context("--replicas N,M,…"))
            .collect::<anyhow::Result<_>>()?,
        None if quick => vec![1, 2],
        None => vec![1, 2, 3],
    };
    anyhow::ensure!(
        replicas.iter().all(|n| (1..=8).contains(n)),
        "--replicas: 1 to 8 each"
    );
    let started = Instant::now();
    let sled_dir = root.join("sled");
    std::fs::create_dir_all(&sled_dir)?;
    let mut runs = vec![(
        "sled (1 process)".to_owned(),
        1,
        run(
            gridedge_server(&sled_dir, "").await?,
            gateways,
            devices,
            seconds,
            burst,
        )
        .await
        .context("sled run")?,
    )];
    // The same single central on Mosquitto: what the broker alone changes.
    let mosquitto_dir = root.join("sled-mosquitto");
    std::fs::create_dir_all(&mosquitto_dir)?;
    runs.push((
        "sled on Mosquitto".to_owned(),
        1,
        run(
            gridedge_on_mosquitto(&mosquitto_dir).await?,
            gateways,
            devices,
            seconds,
            burst,
        )
        .await
        .context("sled on Mosquitto run")?,
    ));
    for n in replicas {
        let dir = root.join(format!("postgres-{n}"));
        std::fs::create_dir_all(&dir)?;
        let pg = gridedge_tests::postgres::Postgres::start()?;
        let server = gridedge_on_postgres(&dir, n, &pg).await?;
        let f = run(server, gateways, devices, seconds, burst)
            .await
            .with_context(|| format!("PostgreSQL x{n} run"))?;
        runs.push((format!("PostgreSQL x{n}"), n, f));
    }
    println!();
    println!(
        "central on sled and on PostgreSQL: {gateways} gateways x {devices} devices every 10 s ({:.0} events/s), \
         a {seconds} s steady window, then a burst of {} events; one machine, 2 cores ({} s)",
        runs[0].2.expected_per_s,
        burst / gateways as u64 * gateways as u64,
        started.elapsed().as_secs()
    );
    println!(
        "sled: central with its embedded broker, then the same on Mosquitto. PostgreSQL xN: N replicas on one Mosquitto, each taking the \
         batches of the gateways whose lease it holds; CPU counts the replicas, Mosquitto and PostgreSQL's backends, \
         RSS the replicas and Mosquitto."
    );
    print!("{:<44}", "figure");
    for (name, ..) in &runs {
        print!(" {name:>18}");
    }
    println!();
    let sled = runs[0].2.burst_per_s;
    type Row = (&'static str, fn(&Figures, usize) -> f64);
    let rows: [Row; 7] = [
        ("steady ingest, events/s stored and acked", |f, _| {
            f.steady_per_s
        }),
        ("steady ack latency p99, ms", |f, _| f.ack_p99),
        ("burst ingest, events/s", |f, _| f.burst_per_s),
        ("server CPU, % of one core (steady)", |f, _| f.cpu_pct),
        ("CPU % of one core per 1,000 events/s", |f, _| {
            f.cpu_pct / (f.steady_per_s / 1000.0).max(1e-9)
        }),
        ("  the same per replica", |f, n| {
            f.cpu_pct / (f.steady_per_s / 1000.0).max(1e-9) / n as f64
        }),
        ("server RSS, MiB (steady)", |f, _| f.rss_mib),
    ];
    for (label, value) in rows {
        print!("{label:<44}");
        for (_, n, f) in &runs {
            print!(" {:>18.1}", value(f, *n));
        }
        println!();
    }
    print!("{:<44}", "burst ratio to sled (goal >= 0.50 for x1)");
    for (_, _, f) in &runs {
        print!(" {:>17.2}x", f.burst_per_s / sled.max(1e-9));
    }
    println!();
    for (name, _, f) in &runs {
        println!(
            "{name}: {} client errors; {} of the burst acknowledged",
            f.errors, f.burst_events
        );
    }
    Ok(())
}

/// Mosquitto with persistence, on a free port.
fn mosquitto(dir: &Path) -> anyhow::Result<(ChildProcess, u16)> {
    let port = free_port();
    let db = dir.join("mosquitto-db");
    std::fs::create_dir_all(&db)?;
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n\
             max_queued_messages 0\nmax_inflight_messages 1000\nmax_packet_size {}\nset_tcp_nodelay true\n",
            db.display(),
            wire::MAX_MESSAGE_BYTES + 4096
        ),
    )?;
    let mut cmd = Command::new(gridedge_tests::mosquitto::MOSQUITTO);
    cmd.arg("-c").arg(&conf);
    let broker = ChildProcess::spawn("mosquitto", cmd, &dir.join("mosquitto.log"))?;
    wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(10))?;
    Ok((broker, port))
}

async fn peer_server(dir: &Path, retain: Option<Duration>) -> anyhow::Result<Server> {
    let (broker, port) = mosquitto(dir)?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["--peer-consumer", &port.to_string()])
        .arg(dir.join("received.log"));
    if let Some(r) = retain {
        cmd.arg(r.as_secs().to_string());
    }
    let consumer = ChildProcess::spawn("consumer", cmd, &dir.join("consumer.log"))?;
    // The consumer subscribes before the fleet starts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(Server {
        name: "Mosquitto + consumer".into(),
        trees: Vec::new(),
        pids: [broker.pid(), consumer.pid()]
            .into_iter()
            .flatten()
            .collect(),
        mqtt_port: port,
        console: None,
        _processes: vec![broker, consumer],
        _centrals: Vec::new(),
    })
}

/// Where the peer's consumer appends: one file, or (with a retention) segment files, each
/// deleted whole once its newest record is past the retention, the cheapest retention there is.
struct PeerLog {
    base: std::path::PathBuf,
    retain: Option<Duration>,
    out: std::io::BufWriter<std::fs::File>,
    /// Segments written, oldest first: (path, when it was closed).
    closed: std::collections::VecDeque<(std::path::PathBuf, Instant)>,
    current: (std::path::PathBuf, Instant),
    n: u64,
}

impl PeerLog {
    fn open(base: &Path, retain: Option<Duration>) -> anyhow::Result<Self> {
        let path = Self::segment(base, retain, 0);
        Ok(Self {
            out: std::io::BufWriter::new(std::fs::File::create(&path)?),
            base: base.to_owned(),
            retain,
            closed: Default::default(),
            current: (path, Instant::now()),
            n: 0,
        })
    }

    fn segment(base: &Path, retain: Option<Duration>, n: u64) -> std::path::PathBuf {
        match retain {
            Some(_) => base.with_extension(format!("{n:06}.log")),
            None => base.to_owned(),
        }
    }

    /// After a group is synced: starts a new segment every tenth of the retention and
    /// deletes the segments past it.
    fn roll(&mut self) -> anyhow::Result<()> {
        let Some(retain) = self.retain else {
            return Ok(());
        };
        if self.current.1.elapsed() >= retain / 10 {
            self.n += 1;
            let path = Self::segment(&self.base, self.retain, self.n);
            self.out = std::io::BufWriter::new(std::fs::File::create(&path)?);
            let done = std::mem::replace(&mut self.current, (path, Instant::now()));
            self.closed.push_back((done.0, Instant::now()));
        }
        while self
            .closed
            .front()
            .is_some_and(|(_, at)| at.elapsed() >= retain)
        {
            if let Some((path, _)) = self.closed.pop_front() {
                std::fs::remove_file(path)?;
            }
        }
        Ok(())
    }
}

/// The peer's consumer (run as its own process): decode, append, fsync, acknowledge.
async fn peer_consumer(port: u16, file: &Path, retain: Option<Duration>) -> anyhow::Result<()> {
    let mut opts = client_options(
        &format!("mqtt://127.0.0.1:{port}"),
        None,
        "peer-consumer",
        Duration::from_secs(30),
    )?;
    opts.set_inflight(1000);
    let (client, mut eventloop) = AsyncClient::new(opts, 10_000);
    firmware_config::runtime::mqtt::send_at_once(&mut eventloop);
    for c in [Channel::Events, Channel::Health, Channel::Status] {
        client
            .subscribe(firmware_config::topics::all_gateways(c), QoS::AtLeastOnce)
            .await?;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("consumer: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    let mut log = PeerLog::open(file, retain)?;
    let mut batch = Vec::new();
    while let Some(p) = rx.recv().await {
        batch.push(p);
        while batch.len() < 1000 {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let mut acks = Vec::new();
        for p in batch.drain(..) {
            let Ok(env) = wire::decode(&p.payload) else {
                continue;
            };
            log.out.write_all(&(p.payload.len() as u32).to_le_bytes())?;
            log.out.write_all(&p.payload)?;
            if let Message::Events(b) = &env.message {
                let high = b.events.iter().map(|e| e.seq).max().unwrap_or(0);
                let low = b.events.iter().map(|e| e.seq).min().unwrap_or(0);
                let ack = Message::Ack(wire::Ack {
                    watermark: high,
                    ranges: vec![(low, high)],
                    batch: Some(env.seq),
                });
                let topic = Topic::gateway(&env.gateway, Channel::Ack).path();
                acks.push((topic, Envelope::new(env.gateway, env.seq, ack).encode()?));
            }
        }
        log.out.flush()?;
        log.out.get_ref().sync_data()?;
        log.roll()?;
        for (topic, payload) in acks {
            client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await?;
        }
    }
    Ok(())
}

/// Reads the console's live alert feed; for each change of a probe alert, records when.
async fn console_feed(
    console: &Console,
    seen: Arc<Mutex<Vec<(String, Instant)>>>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut r = console
        .request(reqwest::Method::GET, "/api/v1/alerts/stream")
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "alert stream: {}", r.status());
    Ok(tokio::spawn(async move {
        let mut buf = String::new();
        while let Ok(Some(chunk)) = r.chunk().await {
            let at = Instant::now();
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                for line in frame.lines() {
                    let Some(data) = line.strip_prefix("data:") else {
                        continue;
                    };
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(data.trim()) else {
                        continue;
                    };
                    let key = v["alert"]["key"].as_str().unwrap_or_default();
                    if key.contains(PROBE_CAMERA) {
                        let state = if v["alert"]["cleared"].as_bool() == Some(true) {
                            "cleared"
                        } else {
                            "raised"
                        };
                        seen.lock().unwrap().push((
                            format!(
                                "{}#{state}",
                                v["alert"]["gateway"].as_str().unwrap_or_default()
                            ),
                            at,
                        ));
                    }
                }
            }
        }
    }))
}

struct Figures {
    steady_per_s: f64,
    expected_per_s: f64,
    ack_p50: f64,
    ack_p99: f64,
    cpu_pct: f64,
    rss_mib: f64,
    /// Growth of resident memory over the window's second half, MiB a minute.
    rss_growth: f64,
    burst_per_s: f64,
    burst_events: u64,
    peak_rss_mib: f64,
    /// Event to console (GridEdge) or to stored and acknowledged (peer), ms.
    visible_p50: f64,
    visible_p99: f64,
    visible_max: f64,
    probes: usize,
    missed: usize,
    errors: u64,
}

impl Figures {
    /// A line on stderr as soon as one side is done.
    fn tell(&self, name: &str) {
        eprintln!(
            "{name}: steady {:.0} events/s (ack p50 {:.1} ms, p99 {:.1} ms), CPU {:.1}%, RSS {:.0} MiB; \
             burst {:.0} events/s ({} events); visible p50 {:.1} ms p99 {:.1} ms; {} errors",
            self.steady_per_s, self.ack_p50, self.ack_p99, self.cpu_pct, self.rss_mib,
            self.burst_per_s, self.burst_events, self.visible_p50, self.visible_p99, self.errors
        );
    }
}

/// The least-squares slope of (seconds, MiB) over the second half of the series, in MiB a
/// minute: the first half is start-up (caches and logs filling).
fn growth_per_min(series: &[(f64, f64)]) -> f64 {
    let half = series.last().map_or(0.0, |l| l.0 / 2.0);
    let tail: Vec<_> = series.iter().filter(|(t, _)| *t >= half).collect();
    let n = tail.len() as f64;
    if n < 2.0 {
        return f64::NAN;
    }
    let (mt, mm) = (
        tail.iter().map(|p| p.0).sum::<f64>() / n,
        tail.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let cov: f64 = tail.iter().map(|p| (p.0 - mt) * (p.1 - mm)).sum();
    let var: f64 = tail.iter().map(|p| (p.0 - mt).powi(2)).sum();
    if var == 0.0 {
        return f64::NAN;
    }
    60.0 * cov / var
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn run(
    server: Server,
    gateways: usize,
    devices: usize,
    seconds: u64,
    burst: u64,
) -> anyhow::Result<Figures> {
    let name = server.name.clone();
    eprintln!("{name}: connecting {gateways} gateways of {devices} devices");
    let fleet = Fleet::start(gateways, devices, server.mqtt_port).await?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let feed = match &server.console {
        Some(c) => Some(console_feed(c, seen.clone()).await?),
        None => None,
    };
    // Warm up: every gateway has reported once.
    tokio::time::sleep(INTERVAL + Duration::from_secs(3)).await;
    eprintln!("{name}: steady window of {seconds} s");
    let (cpu0, t0) = (server.cpu(), Instant::now());
    let events0 = fleet.stats.steady_events.load(Ordering::Relaxed);
    fleet.stats.ack_ms.lock().unwrap().clear();
    // One probe a second on a different gateway each time: raise, then clear.
    let mut probes: Vec<(String, Instant)> = Vec::new();
    let mut k = 0usize;
    // Resident memory every 5 s: whether it settles or keeps growing under a steady load.
    let mut rss_series: Vec<(f64, f64)> = Vec::new();
    while t0.elapsed() < Duration::from_secs(seconds) {
        if k % 5 == 0 {
            let at = t0.elapsed().as_secs_f64();
            rss_series.push((at, server.rss_mib()));
        }
        let g = (k / 2 * 37) % gateways;
        let raise = k % 2 == 0;
        let key = format!("gw-b{g:04}#{}", if raise { "raised" } else { "cleared" });
        probes.push((key, Instant::now()));
        fleet.orders[g].send(Order::Probe(raise)).await?;
        k += 1;
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let window = t0.elapsed().as_secs_f64();
    let cpu_pct = 100.0 * (server.cpu() - cpu0) / window;
    let steady_per_s =
        (fleet.stats.steady_events.load(Ordering::Relaxed) - events0) as f64 / window;
    let rss_mib = server.rss_mib();
    rss_series.push((window, rss_mib));
    eprintln!(
        "{name}: RSS over the window: {}",
        rss_series
            .iter()
            .map(|(t, m)| format!("{m:.0} MiB at {t:.0} s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let rss_growth = growth_per_min(&rss_series);
    let mut acks = std::mem::take(&mut *fleet.stats.ack_ms.lock().unwrap());
    let (ack_p50, ack_p99) = (percentile(&mut acks, 0.5), percentile(&mut acks, 0.99));

    eprintln!("{name}: burst of {burst} events");
    let per_gateway = burst / gateways as u64;
    let t1 = Instant::now();
    for o in &fleet.orders {
        o.send(Order::Burst(per_gateway)).await?;
    }
    let total = per_gateway * gateways as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut told = Instant::now();
    while fleet.stats.burst_events.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if told.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "{name}: {} of {total} burst events acknowledged",
                fleet.stats.burst_events.load(Ordering::Relaxed)
            );
            told = Instant::now();
        }
    }
    let burst_events = fleet.stats.burst_events.load(Ordering::Relaxed);
    let last = fleet.stats.last_burst_ack.lock().unwrap().unwrap_or(t1);
    let burst_per_s = burst_events as f64 / last.duration_since(t1).as_secs_f64().max(1e-3);
    let peak_rss_mib = server.peak_rss_mib();

    // Event to visible.
    let mut visible: Vec<f64> = Vec::new();
    let mut missed = 0;
    if feed.is_some() {
        let seen = seen.lock().unwrap();
        for (i, (key, at)) in probes.iter().enumerate() {
            let until = probes.get(i + 1).map(|p| p.1);
            match seen.iter().find(|(k, t)| {
                k == key && t >= at && until.is_none_or(|u| *t < u + Duration::from_secs(5))
            }) {
                Some((_, t)) => visible.push(t.duration_since(*at).as_secs_f64() * 1e3),
                None => missed += 1,
            }
        }
    } else {
        visible = fleet.stats.probe_ack_ms.lock().unwrap().clone();
        missed = probes.len().saturating_sub(visible.len());
    }
    if let Some(f) = feed {
        f.abort();
    }
    let errors = fleet.stats.errors.load(Ordering::Relaxed);
    fleet.stop().await;
    Ok(Figures {
        steady_per_s,
        expected_per_s: (gateways * devices) as f64 / INTERVAL.as_secs_f64(),
        ack_p50,
        ack_p99,
        cpu_pct,
        rss_mib,
        rss_growth,
        burst_per_s,
        burst_events,
        peak_rss_mib,
        visible_p50: percentile(&mut visible, 0.5),
        visible_p99: percentile(&mut visible, 0.99),
        visible_max: visible.iter().copied().fold(f64::NAN, f64::max),
        probes: probes.len(),
        missed,
        errors,
    })
}

fn arg_text<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).map(String::as_str)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--peer-consumer") {
        let port: u16 = args.get(i + 1).context("port")?.parse()?;
        let file = args.get(i + 2).context("file")?;
        let retain = args
            .get(i + 3)
            .map(|s| s.parse().map(Duration::from_secs))
            .transpose()?;
        return peer_consumer(port, Path::new(file), retain).await;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let gateways = arg_value(&args, "--gateways").unwrap_or(1000) as usize;
    let devices = arg_value(&args, "--devices").unwrap_or(50) as usize;
    let seconds = arg_value(&args, "--seconds").unwrap_or(if quick { 20 } else { 300 });
    let burst = arg_value(&args, "--burst").unwrap_or(100_000);
    anyhow::ensure!(
        gateways > 0 && devices > 0,
        "--gateways and --devices must be > 0"
    );
    binary("central")?;
    let dir = tempfile::tempdir()?;
    // --keep: leave the logs and stores for a look afterwards.
    let root = if args.iter().any(|a| a == "--keep") {
        let kept = dir.keep();
        eprintln!("keeping {}", kept.display());
        kept
    } else {
        dir.path().to_owned()
    };
    let (g_dir, p_dir) = (root.join("gridedge"), root.join("peer"));
    std::fs::create_dir_all(&g_dir)?;
    std::fs::create_dir_all(&p_dir)?;
    let started = Instant::now();
    if args.iter().any(|a| a == "--soak") {
        return soak::main(&args, quick, gateways, devices, &g_dir, &p_dir).await;
    }
    match arg_text(&args, "--store") {
        None | Some("sled") => {}
        Some("postgres") => {
            let (gateways, seconds, burst) = if quick {
                (
                    arg_value(&args, "--gateways").unwrap_or(200) as usize,
                    arg_value(&args, "--seconds").unwrap_or(10),
                    arg_value(&args, "--burst").unwrap_or(20_000),
                )
            } else {
                (gateways, seconds, burst)
            };
            return store_comparison(&args, quick, (gateways, devices, seconds, burst), &root)
                .await;
        }
        Some(other) => anyhow::bail!("--store {other}: sled or postgres"),
    }
    let g = run(
        gridedge_server(&g_dir, "").await?,
        gateways,
        devices,
        seconds,
        burst,
    )
    .await
    .context("GridEdge run")?;
    g.tell("GridEdge");
    if args.iter().any(|a| a == "--external") {
        let e_dir = root.join("gridedge-mosquitto");
        std::fs::create_dir_all(&e_dir)?;
        let e = run(
            gridedge_on_mosquitto(&e_dir).await?,
            gateways,
            devices,
            seconds,
            burst,
        )
        .await
        .context("GridEdge on Mosquitto run")?;
        e.tell("GridEdge on Mosquitto");
    }
    let p = run(
        peer_server(&p_dir, None).await?,
        gateways,
        devices,
        seconds,
        burst,
    )
    .await
    .context("peer run")?;
    p.tell("peer");

    println!();
    println!(
        "central benchmark: {gateways} gateways x {devices} devices reporting every 10 s ({:.0} events/s expected), \
         a {seconds} s steady window, then a burst of {} events; one machine ({} s)",
        g.expected_per_s,
        burst / gateways as u64 * gateways as u64,
        started.elapsed().as_secs()
    );
    println!(
        "GridEdge: central with its embedded broker (one process). Peer: Mosquitto + a consumer that decodes, \
         fsyncs and acknowledges (two processes)."
    );
    for (name, f) in [("GridEdge", &g), ("peer", &p)] {
        println!(
            "{name}: {} probes, {} not seen; {} client errors; {} burst events acknowledged",
            f.probes, f.missed, f.errors, f.burst_events
        );
    }
    println!(
        "{:<52} {:>12} {:>12} {:>8} {:>10}",
        "figure", "GridEdge", "peer", "ratio", "goal"
    );
    let rows: [(&str, f64, f64, bool, &str); 10] = [
        (
            "steady ingest, events/s stored and acked",
            g.steady_per_s,
            p.steady_per_s,
            true,
            "-",
        ),
        (
            "steady ack latency p50, ms",
            g.ack_p50,
            p.ack_p50,
            false,
            "-",
        ),
        (
            "steady ack latency p99, ms",
            g.ack_p99,
            p.ack_p99,
            false,
            "-",
        ),
        (
            "steady server CPU, % of one core",
            g.cpu_pct,
            p.cpu_pct,
            false,
            "<= 20",
        ),
        ("steady server RSS, MiB", g.rss_mib, p.rss_mib, false, "-"),
        (
            "RSS growth, 2nd half of window, MiB/min",
            g.rss_growth,
            p.rss_growth,
            false,
            "-",
        ),
        (
            "burst ingest, events/s",
            g.burst_per_s,
            p.burst_per_s,
            true,
            ">= 100000",
        ),
        (
            "server peak RSS, MiB",
            g.peak_rss_mib,
            p.peak_rss_mib,
            false,
            "-",
        ),
        (
            "event -> console p50, ms (peer: -> stored+acked)",
            g.visible_p50,
            p.visible_p50,
            false,
            "-",
        ),
        (
            "event -> console p99, ms (peer: -> stored+acked)",
            g.visible_p99,
            p.visible_p99,
            false,
            "<= 1000",
        ),
    ];
    for (name, gv, pv, higher_better, goal) in rows {
        let ratio = if higher_better { gv / pv } else { pv / gv };
        println!("{name:<52} {gv:>12.1} {pv:>12.1} {ratio:>7.2}x {goal:>10}");
    }
    println!(
        "event -> console max: {:.1} ms. ratio: how many times better GridEdge is (peer / GridEdge where lower is better).",
        g.visible_max
    );
    Ok(())
}
