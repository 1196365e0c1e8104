//! `bench-chaos [--quick] [--cycles N] [--seed S] [--rate R] [--faults edge,central,both,wan]
//! [--gridedge-only] [--keep-files]`: N cycles of kill -9 and WAN cuts at random moments under
//! a steady load, then a full accounting, for GridEdge and for a Mosquitto bridge played the
//! same plan.
//!
//! - GridEdge: the real `central` (embedded broker) and one `gateway`, the gateway's MQTT line
//!   through a fault proxy; numbered events POSTed to the gateway, acked when it answers 200.
//! - Peer: an edge Mosquitto with persistence bridging QoS 1 (through the same kind of proxy)
//!   to a central Mosquitto, where a subscriber process appends each message to a file, fsyncs
//!   and only then acknowledges; numbered messages published QoS 1 to the edge, acked on
//!   PUBACK. kill -9 hits the edge broker, or the central broker with its subscriber.
//!
//! Each cycle waits a random moment under load, then kills the edge, central or both (started
//! again after a random pause) or cuts the line for a random time. At the end the load stops,
//! everything is restored, the drain is timed, and what central stored is counted against what
//! the senders were told: acked, stored, lost (acked, not stored), duplicated. The exit status
//! is non-zero when GridEdge lost or duplicated anything. Build with
//! `cargo build --release --workspace --bins`.

use std::collections::{HashMap, VecDeque};
use std::io::{Read as _, Seek as _, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use gridedge_tests::backbone::{batch, Ledger, Outcome};
use gridedge_tests::bench::arg_value;
use gridedge_tests::bridge::{
    central_conf, durable_subscriber, edge_conf, mosquitto, SubscriberAcks, AS_ROOT,
};
use gridedge_tests::chaos::{
    accounting_table, plan_of, port_open, run_plan, tail, thousands, Accounting, Arrivals, Drain,
    Fault, GridEdgeRig, Played, Rig,
};
use gridedge_tests::process::ChildProcess;
use gridedge_tests::proxy::FaultProxy;
use gridedge_tests::{free_port, FixtureDir, Result};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

const QUICK_CYCLES: usize = 12;
const DEFAULT_RATE: u64 = 500;
const TOPIC: &str = "events/gw-chaos";
/// The peer has no outbox to watch: its drain is over once nothing has arrived for this long.
/// Well above the edge broker's wait between two bridge connection attempts (6–15 s seen here
/// under cuts, though its `restart_timeout 1` asks for one second): a shorter wait took
/// messages still queued at the edge for lost ones.
const QUIET: Duration = Duration::from_secs(45);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------- the peer's load

/// Publishes numbered messages QoS 1 to the edge broker at a steady rate, a new MQTT session
/// after each broken one; a message is acked when its PUBACK arrives.
struct Publisher {
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    fn start(port: u16, rate: f64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let (s, l) = (stop.clone(), ledger.clone());
        let per_tick = (rate / 20.0).round().max(1.0) as u64;
        let every = Duration::from_secs_f64(per_tick as f64 / rate.max(1.0));
        let task = tokio::spawn(async move {
            let mut next = 0u64;
            let mut session = 0u64;
            let mut slot = tokio::time::Instant::now();
            while !s.load(Ordering::SeqCst) {
                session += 1;
                let mut opts = MqttOptions::new(format!("chaos-pub-{session}"), "127.0.0.1", port);
                opts.set_keep_alive(Duration::from_secs(5));
                opts.set_inflight(1000);
                let (client, mut ev) = AsyncClient::new(opts, 10_000);
                // Messages handed to the client and not yet written, in order; then written
                // and waiting for their PUBACK, by packet id. Mosquitto acknowledges in order,
                // and rumqttc writes in the order it was handed them.
                let queued: Arc<Mutex<VecDeque<u64>>> = Arc::default();
                let inflight: Arc<Mutex<HashMap<u16, u64>>> = Arc::default();
                let (q, i, l2) = (queued.clone(), inflight.clone(), l.clone());
                let poller = tokio::spawn(async move {
                    loop {
                        match ev.poll().await {
                            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                                if let Some(n) = lock(&q).pop_front() {
                                    lock(&i).insert(pkid, n);
                                }
                            }
                            Ok(Event::Incoming(Packet::PubAck(a))) => {
                                if let Some(n) = lock(&i).remove(&a.pkid) {
                                    lock(&l2).record(n, 1, Outcome::Acked, "");
                                }
                            }
                            Ok(_) => {}
                            Err(_) => return,
                        }
                    }
                });
                while !s.load(Ordering::SeqCst) && !poller.is_finished() {
                    tokio::time::sleep_until(slot).await;
                    slot = (slot + every).max(
                        tokio::time::Instant::now()
                            .checked_sub(Duration::from_secs(1))
                            .unwrap_or(slot),
                    );
                    for _ in 0..per_tick {
                        let n = next;
                        next += 1;
                        lock(&queued).push_back(n);
                        let body = serde_json::to_vec(&batch(n, 1)[0]).unwrap_or_default();
                        if client
                            .try_publish(TOPIC, QoS::AtLeastOnce, false, body)
                            .is_err()
                        {
                            lock(&queued).pop_back();
                            let reason = if poller.is_finished() {
                                "no connection"
                            } else {
                                "client queue full"
                            };
                            lock(&l).record(n, 1, Outcome::Refused, reason);
                        }
                    }
                }
                if !poller.is_finished() {
                    // Stopping: the PUBACKs of what is in flight have a moment to arrive.
                    let deadline = Instant::now() + Duration::from_secs(2);
                    while !(lock(&queued).is_empty() && lock(&inflight).is_empty())
                        && Instant::now() < deadline
                    {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    poller.abort();
                }
                let _ = poller.await;
                {
                    let mut ledger = lock(&l);
                    for n in lock(&queued).drain(..) {
                        ledger.record(n, 1, Outcome::Refused, "no connection");
                    }
                    for (_, n) in lock(&inflight).drain() {
                        ledger.record(n, 1, Outcome::Unanswered, "");
                    }
                }
                if !s.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        Self { stop, ledger, task }
    }

    fn ledger(&self) -> Ledger {
        lock(&self.ledger).clone()
    }

    async fn stop(self) -> Ledger {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        lock(&self.ledger).clone()
    }
}

// ---------------------------------------------------------------- the peer's arrivals

/// What the subscriber's file holds, read as it grows: complete lines only (a subscriber
/// killed mid-write leaves a partial one, which its successor cuts off).
#[derive(Default)]
struct FileArrivals {
    arrivals: Arrivals,
    lines: u64,
    unreadable: u64,
    last: Option<Instant>,
    offset: u64,
}

impl FileArrivals {
    fn read_more(&mut self, file: &Path) -> Result<()> {
        let Ok(mut f) = std::fs::File::open(file) else {
            return Ok(());
        };
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
            return Ok(());
        };
        for line in buf[..end].split(|b| *b == b'\n') {
            self.lines += 1;
            let n = serde_json::from_slice::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["payload"]["n"].as_u64());
            match n {
                Some(n) => self.arrivals.add(n),
                None => self.unreadable += 1,
            }
        }
        self.offset += end as u64 + 1;
        self.last = Some(Instant::now());
        Ok(())
    }
}

/// `bench-chaos --peer-subscriber PORT FILE`: the peer's central subscriber, a process of its
/// own so that it can be killed with its broker.
async fn peer_subscriber(port: u16, file: &Path) -> Result<()> {
    // Gone with the benchmark, however it ends.
    // SAFETY: prctl(2) with PR_SET_PDEATHSIG only sets a flag of this process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // A predecessor killed mid-write left a partial last line: cut it off (its message was
    // not acknowledged, so the broker sends it again).
    if let Ok(bytes) = std::fs::read(file) {
        let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if keep < bytes.len() {
            std::fs::OpenOptions::new()
                .write(true)
                .open(file)?
                .set_len(keep as u64)?;
        }
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?;
    durable_subscriber(port, out, Arc::default(), SubscriberAcks::AfterSync).await?;
    std::future::pending::<()>().await;
    Ok(())
}

// ---------------------------------------------------------------- the peer's rig

struct BridgeRig {
    dir: FixtureDir,
    edge_port: u16,
    central_port: u16,
    edge: Option<ChildProcess>,
    central: Option<ChildProcess>,
    subscriber: Option<ChildProcess>,
    proxy: FaultProxy,
    publisher: Option<Publisher>,
    arrivals: FileArrivals,
    started: Instant,
}

impl BridgeRig {
    async fn start(rate: f64) -> Result<Self> {
        let started = Instant::now();
        let dir = FixtureDir::new("chaos-bridge")?;
        std::fs::create_dir_all(dir.join("central-db"))?;
        std::fs::create_dir_all(dir.join("edge-db"))?;
        let (edge_port, central_port) = (free_port(), free_port());
        let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], central_port))).await?;
        let mut rig = Self {
            dir,
            edge_port,
            central_port,
            edge: None,
            central: None,
            subscriber: None,
            proxy,
            publisher: None,
            arrivals: FileArrivals::default(),
            started,
        };
        rig.start_central().await?;
        rig.start_edge().await?;
        // The bridge connects and the subscriber subscribes before the load starts.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        rig.publisher = Some(Publisher::start(edge_port, rate));
        Ok(rig)
    }

    fn received(&self) -> PathBuf {
        self.dir.join("received.log")
    }
}

impl Rig for BridgeRig {
    fn kill_edge(&mut self) {
        if let Some(mut p) = self.edge.take() {
            p.kill();
        }
    }

    fn kill_central(&mut self) {
        for mut p in [self.subscriber.take(), self.central.take()]
            .into_iter()
            .flatten()
        {
            p.kill();
        }
    }

    async fn start_edge(&mut self) -> Result<()> {
        let conf = edge_conf(
            self.edge_port,
            &self.dir.join("edge-db"),
            self.proxy.addr,
            AS_ROOT,
        );
        self.edge = Some(mosquitto(self.dir.path(), "edge-mosquitto", &conf)?);
        port_open(
            SocketAddr::from(([127, 0, 0, 1], self.edge_port)),
            Duration::from_secs(30),
        )
        .await
    }

    async fn start_central(&mut self) -> Result<()> {
        // Saved every second as the edge is: without it a kill -9 loses the subscriber's
        // session, and what arrives before it subscribes again goes nowhere.
        let conf = central_conf(
            self.central_port,
            &self.dir.join("central-db"),
            &format!("autosave_interval 1\n{AS_ROOT}"),
        );
        self.central = Some(mosquitto(self.dir.path(), "central-mosquitto", &conf)?);
        port_open(
            SocketAddr::from(([127, 0, 0, 1], self.central_port)),
            Duration::from_secs(30),
        )
        .await?;
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("--peer-subscriber")
            .arg(self.central_port.to_string())
            .arg(self.received());
        self.subscriber = Some(ChildProcess::spawn(
            "subscriber",
            cmd,
            &self.dir.join("subscriber.log"),
        )?);
        Ok(())
    }

    fn cut(&self) {
        self.proxy.cut();
    }

    fn restore(&self) {
        self.proxy.restore();
    }

    fn load_so_far(&self) -> String {
        let Some(p) = &self.publisher else {
            return "load stopped".to_owned();
        };
        let l = p.ledger();
        format!(
            "{} messages acked, {} refused, {} unanswered",
            thousands(l.count(Outcome::Acked)),
            thousands(l.count(Outcome::Refused)),
            thousands(l.count(Outcome::Unanswered))
        )
    }

    fn logs(&self, lines: usize) -> String {
        ["edge-mosquitto", "central-mosquitto", "subscriber"]
            .iter()
            .map(|name| {
                let log = self.dir.join(format!("{name}.log"));
                format!(
                    "--- {name} ({})\n{}\n",
                    log.display(),
                    tail(&std::fs::read_to_string(&log).unwrap_or_default(), lines)
                )
            })
            .collect()
    }

    fn keep_files(&mut self) -> Vec<PathBuf> {
        vec![self.dir.keep()]
    }

    /// The peer has no outbox to watch: the drain is over when every acked message is in the
    /// subscriber's file, or when nothing has arrived for [`QUIET`].
    async fn finish(&mut self, played: &Played, limit: Duration) -> Result<Accounting> {
        let ledger = match self.publisher.take() {
            Some(p) => p.stop().await,
            None => Ledger::default(),
        };
        self.proxy.restore();
        if self.central.is_none() {
            self.start_central().await?;
        }
        if self.edge.is_none() {
            self.start_edge().await?;
        }
        let restored = Instant::now();
        let file = self.received();
        let mut missing: Vec<u64> = (0..ledger.len())
            .filter(|n| ledger.outcome(*n) == Some(Outcome::Acked))
            .collect();
        let mut complete = false;
        while restored.elapsed() < limit {
            self.arrivals.read_more(&file)?;
            missing.retain(|n| self.arrivals.arrivals.copies(*n) == 0);
            if missing.is_empty() {
                complete = true;
                break;
            }
            let quiet = self
                .arrivals
                .last
                .map_or(restored.elapsed(), |t| t.elapsed());
            if quiet > QUIET && restored.elapsed() > QUIET {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let time = if complete {
            restored.elapsed()
        } else {
            self.arrivals
                .last
                .map_or(Duration::ZERO, |t| t.saturating_duration_since(restored))
        };
        let mut a = Accounting::new(played, &ledger, &self.arrivals.arrivals);
        a.drain = Some(Drain { time, complete });
        a.wall = self.started.elapsed();
        a.notes.push(format!(
            "the subscriber's file: {} lines, {} unreadable",
            thousands(self.arrivals.lines),
            self.arrivals.unreadable
        ));
        Ok(a)
    }
}

// ---------------------------------------------------------------- main

struct Options {
    cycles: usize,
    faults: Vec<Fault>,
    seed: u64,
    rate: f64,
    gridedge_only: bool,
    keep_files: bool,
}

/// Plays the plan against one side and accounts for it. When the run fails, or (`promised`: a
/// side that promises to lose nothing) an event was lost or duplicated, prints the child
/// processes' last log lines and keeps their files.
async fn side<R: Rig>(
    name: &str,
    rig: &mut R,
    plan: &[gridedge_tests::chaos::Cycle],
    o: &Options,
    promised: bool,
) -> Result<Accounting> {
    let every = if o.cycles <= 200 { 10 } else { 50 };
    // Time enough for the backlog of the longest cut at any sensible rate, with room to spare.
    let limit = Duration::from_secs(120);
    let result = match run_plan(rig, name, plan, every).await {
        Ok(played) => rig.finish(&played, limit).await,
        Err(e) => Err(e),
    };
    let failed = match &result {
        Ok(a) => promised && !a.ok(),
        Err(_) => true,
    };
    if failed {
        eprintln!(
            "{name}: the child processes' last log lines:\n{}",
            rig.logs(60)
        );
    }
    if failed || o.keep_files {
        for kept in rig.keep_files() {
            eprintln!("{name}: files and logs kept in {}", kept.display());
        }
    }
    result
}

async fn chaos(o: Options) -> Result<bool> {
    let plan = plan_of(o.seed, o.cycles, &o.faults);
    let faults: Vec<&str> = o.faults.iter().map(|f| f.name()).collect();
    println!(
        "chaos: seed {} (repeat with --seed {}), {} cycles of {}, {} events/s",
        o.seed,
        o.seed,
        o.cycles,
        faults.join(","),
        o.rate
    );
    let started = Instant::now();

    let mut g = GridEdgeRig::start(o.rate)
        .await
        .context("starting GridEdge")?;
    let g_acc = side("gridedge", &mut g, &plan, &o, true)
        .await
        .context("GridEdge run")?;
    drop(g);

    let mut sides = vec![("GridEdge", g_acc.clone())];
    if !o.gridedge_only {
        // Its figures now, in case the peer's side fails.
        println!("\nGridEdge:\n{}", accounting_table(&[("GridEdge", &g_acc)]));
        let mut m = BridgeRig::start(o.rate)
            .await
            .context("starting the Mosquitto bridge")?;
        let m_acc = side("mosquitto", &mut m, &plan, &o, false)
            .await
            .context("Mosquitto bridge run")?;
        drop(m);
        sides.push(("Mosquitto bridge", m_acc));
    }

    let table: Vec<(&str, &Accounting)> = sides.iter().map(|(n, a)| (*n, a)).collect();
    println!(
        "\nchaos benchmark: seed {}, {} cycles of {} at random moments, {} events/s of load \
         ({} s)",
        o.seed,
        o.cycles,
        faults.join(","),
        o.rate,
        started.elapsed().as_secs()
    );
    print!("{}", accounting_table(&table));
    if let [(_, g), (_, m)] = sides.as_slice() {
        if let (Some(gd), Some(md)) = (g.drain, m.drain) {
            println!(
                "time to drain, peer / GridEdge: {:.2}x{}",
                md.time.as_secs_f64() / gd.time.as_secs_f64().max(0.001),
                if md.complete {
                    ""
                } else {
                    " (the peer's drain never completed: its time is that of its last arrival)"
                }
            );
        }
    }
    let ok = g_acc.ok();
    println!(
        "GridEdge: {}",
        if ok {
            "nothing lost, nothing duplicated"
        } else {
            "EVENTS LOST OR DUPLICATED"
        }
    );
    Ok(ok)
}

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--peer-subscriber") {
        let port = args
            .get(i + 1)
            .and_then(|p| p.parse().ok())
            .context("--peer-subscriber PORT FILE")?;
        let file = args.get(i + 2).context("--peer-subscriber PORT FILE")?;
        peer_subscriber(port, Path::new(file)).await?;
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let faults = match args.iter().position(|a| a == "--faults") {
        None => Fault::ALL.to_vec(),
        Some(i) => args
            .get(i + 1)
            .map(String::as_str)
            .unwrap_or_default()
            .split(',')
            .map(|name| {
                Fault::from_name(name).with_context(|| {
                    format!("--faults: {name:?} is none of edge, central, both, wan")
                })
            })
            .collect::<Result<Vec<_>>>()?,
    };
    let options = Options {
        cycles: arg_value(&args, "--cycles")
            .map_or(if quick { QUICK_CYCLES } else { 1000 }, |n| n as usize),
        faults,
        seed: arg_value(&args, "--seed").unwrap_or_else(|| u64::from(rand::random::<u32>())),
        rate: arg_value(&args, "--rate").unwrap_or(DEFAULT_RATE).max(1) as f64,
        gridedge_only: args.iter().any(|a| a == "--gridedge-only"),
        keep_files: args.iter().any(|a| a == "--keep-files"),
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // Returning drops the rigs, which kill every child process.
    tokio::select! {
        ok = chaos(options) => Ok(if ok? {
            std::process::ExitCode::SUCCESS
        } else {
            std::process::ExitCode::FAILURE
        }),
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted; stopping every child process");
            Ok(std::process::ExitCode::from(130))
        }
        _ = term.recv() => {
            eprintln!("terminated; stopping every child process");
            Ok(std::process::ExitCode::from(143))
        }
    }
}
