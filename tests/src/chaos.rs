//! Chaos runs: cycles of kill -9 and WAN cuts at random moments under a steady load, then a
//! full accounting of what was acknowledged and what arrived. One seeded plan drives GridEdge
//! ([`GridEdgeRig`]: the real `central` and `gateway` binaries, the gateway's MQTT line through
//! a [`FaultProxy`]) and, in `bench-chaos`, the Mosquitto bridge it is compared with.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use serde_json::Value;

use crate::backbone::{Accepted, Ledger, Outcome, Poster};
use crate::proxy::FaultProxy;
use crate::services::{central_events_by_page, central_toml, gateway_toml, ServiceProcess};
use crate::{free_port, FixtureDir, Result};

/// What one cycle does to the system under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// kill -9 of the edge (the gateway; the peer's edge broker), then a start.
    KillEdge,
    /// kill -9 of central (with its broker; the peer's central broker and subscriber).
    KillCentral,
    /// kill -9 of both, then central started first.
    KillBoth,
    /// The WAN line between edge and central cut, then restored.
    CutWan,
}

impl Fault {
    pub const ALL: [Fault; 4] = [
        Fault::KillEdge,
        Fault::KillCentral,
        Fault::KillBoth,
        Fault::CutWan,
    ];

    /// The fault's name on a command line (`edge`, `central`, `both`, `wan`).
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillEdge => "edge",
            Fault::KillCentral => "central",
            Fault::KillBoth => "both",
            Fault::CutWan => "wan",
        }
    }

    /// The fault named `name` (see [`Fault::name`]).
    pub fn from_name(name: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == name)
    }

    pub fn label(self) -> &'static str {
        match self {
            Fault::KillEdge => "kill -9 edge",
            Fault::KillCentral => "kill -9 central",
            Fault::KillBoth => "kill -9 both",
            Fault::CutWan => "WAN cut",
        }
    }
}

/// One cycle of a plan: wait `after` under load, then `fault`; `hold` is how long the killed
/// side stays down, or the line stays cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cycle {
    pub fault: Fault,
    pub after: Duration,
    pub hold: Duration,
}

/// `cycles` cycles drawn from `seed`: the same seed gives the same plan. Faults come in rounds
/// of four that hold each kind once in random order, so any run of four cycles or more has
/// every kind; the moment of each fault (100–1000 ms after the last cycle ended), a kill's
/// down time (0–500 ms) and a cut's length (100–2000 ms) are drawn at random.
pub fn plan(seed: u64, cycles: usize) -> Vec<Cycle> {
    plan_of(seed, cycles, &Fault::ALL)
}

/// [`plan`] with only the faults in `kinds` (each round holds each of them once).
pub fn plan_of(seed: u64, cycles: usize, kinds: &[Fault]) -> Vec<Cycle> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(cycles);
    if kinds.is_empty() {
        return out;
    }
    while out.len() < cycles {
        let mut round = kinds.to_vec();
        round.shuffle(&mut rng);
        for fault in round.into_iter().take(cycles - out.len()) {
            let after = Duration::from_millis(rng.gen_range(100..=1000));
            let hold = match fault {
                Fault::CutWan => Duration::from_millis(rng.gen_range(100..=2000)),
                _ => Duration::from_millis(rng.gen_range(0..=500)),
            };
            out.push(Cycle { fault, after, hold });
        }
    }
    out
}

/// A system under test that a plan can be played against: an edge and a central that can be
/// killed and started again, and a line between them that can be cut.
// Driven only by `run_plan` on the caller's own task: the futures need not be `Send`.
#[allow(async_fn_in_trait)]
pub trait Rig {
    /// kill -9 of the edge.
    fn kill_edge(&mut self);
    /// kill -9 of central.
    fn kill_central(&mut self);
    /// Starts the edge again and waits until it takes load.
    async fn start_edge(&mut self) -> Result<()>;
    /// Starts central again and waits until it answers.
    async fn start_central(&mut self) -> Result<()>;
    /// Cuts the line between edge and central.
    fn cut(&self);
    /// Restores the line.
    fn restore(&self);
    /// The load so far, for progress lines.
    fn load_so_far(&self) -> String;
    /// The last `lines` lines of each child process's log, for a failure.
    fn logs(&self, lines: usize) -> String;
    /// Keeps the folders of the child processes (data and logs) after the run; their paths.
    fn keep_files(&mut self) -> Vec<PathBuf>;
    /// Stops the load, restores everything, times the drain (at most `limit`) and counts what
    /// central stored against what the sender was told.
    async fn finish(&mut self, played: &Played, limit: Duration) -> Result<Accounting>;
}

/// What a played plan did.
#[derive(Clone, Debug, Default)]
pub struct Played {
    /// Cycles done, by fault.
    pub cycles: BTreeMap<Fault, u64>,
    /// From the first cycle's start to the last cycle's end.
    pub elapsed: Duration,
}

impl Played {
    pub fn total(&self) -> u64 {
        self.cycles.values().sum()
    }
}

/// Plays `plan` against `rig`, printing a progress line (prefixed `name`) every `every`
/// cycles. Stops at the first side that does not come back.
pub async fn run_plan<R: Rig>(
    rig: &mut R,
    name: &str,
    plan: &[Cycle],
    every: usize,
) -> Result<Played> {
    let started = Instant::now();
    let mut played = Played::default();
    for (i, c) in plan.iter().enumerate() {
        tokio::time::sleep(c.after).await;
        let what = || format!("{name}: cycle {} ({})", i + 1, c.fault.label());
        match c.fault {
            Fault::KillEdge => {
                rig.kill_edge();
                tokio::time::sleep(c.hold).await;
                rig.start_edge()
                    .await
                    .map_err(|e| e.context(what() + ": the edge did not come back"))?;
            }
            Fault::KillCentral => {
                rig.kill_central();
                tokio::time::sleep(c.hold).await;
                rig.start_central()
                    .await
                    .map_err(|e| e.context(what() + ": central did not come back"))?;
            }
            Fault::KillBoth => {
                rig.kill_edge();
                rig.kill_central();
                tokio::time::sleep(c.hold).await;
                rig.start_central()
                    .await
                    .map_err(|e| e.context(what() + ": central did not come back"))?;
                rig.start_edge()
                    .await
                    .map_err(|e| e.context(what() + ": the edge did not come back"))?;
            }
            Fault::CutWan => {
                rig.cut();
                tokio::time::sleep(c.hold).await;
                rig.restore();
            }
        }
        *played.cycles.entry(c.fault).or_default() += 1;
        let done = i + 1;
        if every > 0 && (done % every == 0 || done == plan.len()) {
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "{name}: cycle {done}/{} at {secs:.0} s ({:.2} s a cycle): {}",
                plan.len(),
                secs / done as f64,
                rig.load_so_far()
            );
        }
    }
    played.elapsed = started.elapsed();
    Ok(played)
}

/// How many copies of each event number arrived at central.
#[derive(Clone, Debug, Default)]
pub struct Arrivals {
    copies: Vec<u32>,
    /// Events stored with a number the sender never handed out, or without one.
    pub unexpected: u64,
}

impl Arrivals {
    /// One copy of event `n` arrived.
    pub fn add(&mut self, n: u64) {
        let Ok(i) = usize::try_from(n) else {
            self.unexpected += 1;
            return;
        };
        if self.copies.len() <= i {
            self.copies.resize(i + 1, 0);
        }
        self.copies[i] = self.copies[i].saturating_add(1);
    }

    pub fn copies(&self, n: u64) -> u32 {
        usize::try_from(n)
            .ok()
            .and_then(|i| self.copies.get(i))
            .copied()
            .unwrap_or(0)
    }
}

/// How long the backlog took to drain once everything was restored and the load stopped.
#[derive(Clone, Copy, Debug)]
pub struct Drain {
    /// Until every acknowledged event was stored (GridEdge: until the gateway's outbox was
    /// empty); when it never got there, until the last arrival.
    pub time: Duration,
    pub complete: bool,
}

/// The full accounting of one side's run.
#[derive(Clone, Debug, Default)]
pub struct Accounting {
    pub cycles: BTreeMap<Fault, u64>,
    /// Event numbers handed out by the load.
    pub offered: u64,
    pub acked: u64,
    /// Refused (an error answer, or no connection), by reason.
    pub refused: BTreeMap<String, u64>,
    /// Handed over but never answered.
    pub unanswered: u64,
    /// Distinct events stored at central.
    pub stored: u64,
    /// Acknowledged but not stored.
    pub lost: u64,
    /// Stored more than once: the extra copies.
    pub duplicated: u64,
    /// Stored though never acknowledged: the answer was lost (fine), or it was refused (a
    /// broken promise for GridEdge, whose refusals store nothing).
    pub stored_unanswered: u64,
    pub stored_refused: u64,
    pub unexpected: u64,
    /// Stored under a sequence number the gateway had given another event (GridEdge only).
    pub misnumbered: u64,
    /// A few of the lost and duplicated event numbers, to look up in the logs.
    pub lost_sample: Vec<u64>,
    pub duplicated_sample: Vec<u64>,
    pub drain: Option<Drain>,
    /// Time spent in the cycles.
    pub cycles_time: Duration,
    /// From the start of the side's processes to the end of its accounting.
    pub wall: Duration,
    /// Facts of one side (the gateway's evictions, sequence numbers stored twice, …).
    pub notes: Vec<String>,
}

impl Accounting {
    /// Counts what the load was told (`ledger`) against what arrived.
    pub fn new(played: &Played, ledger: &Ledger, arrivals: &Arrivals) -> Self {
        let mut a = Accounting {
            cycles: played.cycles.clone(),
            cycles_time: played.elapsed,
            offered: ledger.len(),
            acked: ledger.count(Outcome::Acked),
            refused: ledger.refused.clone(),
            unanswered: ledger.count(Outcome::Unanswered),
            unexpected: arrivals.unexpected,
            ..Accounting::default()
        };
        let highest = (arrivals.copies.len() as u64).max(ledger.len());
        for n in 0..highest {
            let copies = u64::from(arrivals.copies(n));
            let outcome = ledger.outcome(n);
            if copies > 0 {
                a.stored += 1;
            }
            if copies > 1 {
                a.duplicated += copies - 1;
                if a.duplicated_sample.len() < 10 {
                    a.duplicated_sample.push(n);
                }
            }
            match (outcome, copies) {
                (Some(Outcome::Acked), 0) => {
                    a.lost += 1;
                    if a.lost_sample.len() < 10 {
                        a.lost_sample.push(n);
                    }
                }
                (Some(Outcome::Unanswered), 1..) => a.stored_unanswered += 1,
                (Some(Outcome::Refused), 1..) => a.stored_refused += 1,
                (None, 1..) => a.unexpected += 1,
                _ => {}
            }
        }
        a
    }

    /// Nothing lost, nothing duplicated.
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.duplicated == 0
    }

    pub fn refused_total(&self) -> u64 {
        self.refused.values().sum()
    }
}

/// `n` with thousands separated by commas.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// The accountings of one or more sides as a table, one column a side.
pub fn accounting_table(sides: &[(&str, &Accounting)]) -> String {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |name: &str, f: &dyn Fn(&Accounting) -> String| {
        rows.push((name.to_owned(), sides.iter().map(|(_, a)| f(a)).collect()));
    };
    row("cycles", &|a| thousands(a.cycles.values().sum()));
    for fault in Fault::ALL {
        row(&format!("  {}", fault.label()), &|a| {
            thousands(a.cycles.get(&fault).copied().unwrap_or(0))
        });
    }
    row("events offered", &|a| thousands(a.offered));
    row("acked", &|a| thousands(a.acked));
    row("refused", &|a| {
        let by: Vec<String> = a
            .refused
            .iter()
            .map(|(r, n)| format!("{r}: {}", thousands(*n)))
            .collect();
        if by.is_empty() {
            "0".to_owned()
        } else {
            format!("{} ({})", thousands(a.refused_total()), by.join(", "))
        }
    });
    row("no answer", &|a| thousands(a.unanswered));
    row("stored", &|a| thousands(a.stored));
    row("lost (acked, not stored)", &|a| thousands(a.lost));
    row("duplicated (extra copies)", &|a| thousands(a.duplicated));
    row("stored, answer lost", &|a| thousands(a.stored_unanswered));
    row("stored though refused", &|a| thousands(a.stored_refused));
    row("stored, never sent", &|a| thousands(a.unexpected));
    row("time to drain", &|a| match a.drain {
        Some(d) if d.complete => format!("{:.2} s", d.time.as_secs_f64()),
        Some(d) => format!("incomplete (last at {:.2} s)", d.time.as_secs_f64()),
        None => "-".to_owned(),
    });
    row("cycle time, mean", &|a| {
        let n = a.cycles.values().sum::<u64>().max(1) as f64;
        format!("{:.2} s", a.cycles_time.as_secs_f64() / n)
    });
    row("wall time", &|a| format!("{:.0} s", a.wall.as_secs_f64()));
    let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let col = |i: usize| {
        rows.iter()
            .map(|(_, v)| v[i].chars().count())
            .chain(std::iter::once(sides[i].0.len()))
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..sides.len()).map(col).collect();
    let mut out = format!("{:width$}", "");
    for ((name, _), w) in sides.iter().zip(&widths) {
        out += &format!("  {name:>w$}");
    }
    out.push('\n');
    for (name, values) in &rows {
        out += &format!("{name:width$}");
        for (v, w) in values.iter().zip(&widths) {
            out += &format!("  {v:>w$}");
        }
        out.push('\n');
    }
    for (name, a) in sides {
        for note in &a.notes {
            out += &format!("{name}: {note}\n");
        }
        if !a.lost_sample.is_empty() {
            out += &format!("{name}: lost events (first of them): {:?}\n", a.lost_sample);
        }
        if !a.duplicated_sample.is_empty() {
            out += &format!(
                "{name}: duplicated events (first of them): {:?}\n",
                a.duplicated_sample
            );
        }
    }
    out
}

/// Waits until `GET http://addr/healthz` answers with success.
pub async fn answers_healthz(addr: SocketAddr, within: Duration) -> Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    crate::eventually(&format!("{addr} to answer /healthz"), within, || async {
        client
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .ok()?
            .status()
            .is_success()
            .then_some(())
    })
    .await
}

/// Waits until something accepts TCP connections on `addr`, without blocking the runtime.
pub async fn port_open(addr: SocketAddr, within: Duration) -> Result<()> {
    crate::eventually(&format!("{addr} to accept"), within, || async {
        tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
    })
    .await
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

const GATEWAY: &str = "gw-chaos";
/// How long a restarted service may take to answer.
const START_LIMIT: Duration = Duration::from_secs(30);

/// GridEdge under chaos: the real `central` (embedded broker) and one `gateway` as child
/// processes, the gateway's MQTT line through a fault proxy, and a [`Poster`] handing the
/// gateway numbered events at a steady rate.
pub struct GridEdgeRig {
    central: ServiceProcess,
    gateway: ServiceProcess,
    proxy: FaultProxy,
    central_http: SocketAddr,
    gateway_http: SocketAddr,
    poster: Option<Poster>,
    started: Instant,
    dir: FixtureDir,
}

impl GridEdgeRig {
    /// Starts central and the gateway, and the load: `rate` events per second, posted 20 times
    /// a second.
    pub async fn start(rate: f64) -> Result<Self> {
        let started = Instant::now();
        let dir = FixtureDir::new("chaos")?;
        let (broker, central_port, gateway_port) = (free_port(), free_port(), free_port());
        let central_http = SocketAddr::from(([127, 0, 0, 1], central_port));
        let gateway_http = SocketAddr::from(([127, 0, 0, 1], gateway_port));
        let central =
            ServiceProcess::spawn("central", &central_toml(dir.path(), broker, central_port))?;
        answers_healthz(central_http, START_LIMIT).await?;
        let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], broker))).await?;
        let gateway = ServiceProcess::spawn(
            "gateway",
            &gateway_toml(
                dir.path(),
                GATEWAY,
                &format!("mqtt://{}", proxy.addr),
                None,
                gateway_port,
            ),
        )?;
        answers_healthz(gateway_http, START_LIMIT).await?;
        let per_request = (rate / 20.0).round().max(1.0) as u64;
        let poster = Poster::start_paced(gateway_http, GATEWAY, per_request, rate);
        Ok(Self {
            central,
            gateway,
            proxy,
            central_http,
            gateway_http,
            poster: Some(poster),
            started,
            dir,
        })
    }

    async fn gateway_health(&self) -> Option<Value> {
        crate::try_json(format!("http://{}/healthz", self.gateway_http)).await
    }
}

impl Rig for GridEdgeRig {
    fn kill_edge(&mut self) {
        self.gateway.kill();
    }

    fn kill_central(&mut self) {
        self.central.kill();
    }

    async fn start_edge(&mut self) -> Result<()> {
        self.gateway.start_again()?;
        answers_healthz(self.gateway_http, START_LIMIT).await
    }

    async fn start_central(&mut self) -> Result<()> {
        self.central.start_again()?;
        answers_healthz(self.central_http, START_LIMIT).await
    }

    fn cut(&self) {
        self.proxy.cut();
    }

    fn restore(&self) {
        self.proxy.restore();
    }

    fn load_so_far(&self) -> String {
        let Some(p) = &self.poster else {
            return "load stopped".to_owned();
        };
        let l = p.ledger();
        format!(
            "{} events acked, {} refused, {} unanswered",
            thousands(l.count(Outcome::Acked)),
            thousands(l.count(Outcome::Refused)),
            thousands(l.count(Outcome::Unanswered))
        )
    }

    fn logs(&self, lines: usize) -> String {
        format!(
            "--- central ({})\n{}\n--- gateway ({})\n{}\n",
            self.central.process.log.display(),
            tail(&self.central.process.log_text(), lines),
            self.gateway.process.log.display(),
            tail(&self.gateway.process.log_text(), lines),
        )
    }

    fn keep_files(&mut self) -> Vec<PathBuf> {
        vec![
            self.dir.keep(),
            self.central.keep_files(),
            self.gateway.keep_files(),
        ]
    }

    /// The drain is over when the gateway's outbox is empty; then everything central stored is
    /// read back through its API.
    async fn finish(&mut self, played: &Played, limit: Duration) -> Result<Accounting> {
        let (accepted, ledger) = match self.poster.take() {
            Some(p) => p.stop_with_ledger().await,
            None => (Accepted::new(), Ledger::default()),
        };
        self.proxy.restore();
        if !self.central.process.is_running() {
            self.start_central().await?;
        }
        if !self.gateway.process.is_running() {
            self.start_edge().await?;
        }
        let restored = Instant::now();
        let mut complete = false;
        while restored.elapsed() < limit {
            if let Some(h) = self.gateway_health().await {
                if h["uplink"] == "connected" && h["outbox"]["pending"] == 0 {
                    complete = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let drain = Drain {
            time: restored.elapsed(),
            complete,
        };

        let mut arrivals = Arrivals::default();
        let mut seqs = HashSet::new();
        let (mut seq_twice, mut misnumbered, mut own) = (0u64, 0u64, 0u64);
        central_events_by_page(self.central_http, GATEWAY, |page| {
            for e in page {
                if e["kind"] != "test.event" {
                    own += 1;
                    continue;
                }
                let seq = e["seq"].as_u64().unwrap_or(0);
                if !seqs.insert(seq) {
                    seq_twice += 1;
                }
                match e["payload"]["n"].as_u64() {
                    Some(n) => {
                        if accepted.get(&seq).is_some_and(|m| *m != n) {
                            misnumbered += 1;
                        }
                        arrivals.add(n);
                    }
                    None => arrivals.unexpected += 1,
                }
            }
        })
        .await?;
        let mut a = Accounting::new(played, &ledger, &arrivals);
        a.drain = Some(drain);
        a.misnumbered = misnumbered;
        a.wall = self.started.elapsed();
        if let Some(h) = self.gateway_health().await {
            let o = &h["outbox"];
            a.notes.push(format!(
                "gateway outbox at the end: pending {}, evicted {}, refused {}, corrupt {}",
                o["pending"], o["evicted"], o["refused"], o["corrupt"]
            ));
        }
        a.notes.push(format!(
            "central also stored {own} events of the gateway's own; {seq_twice} sequence numbers \
             stored twice; {misnumbered} events under a number the gateway gave another"
        ));
        Ok(a)
    }
}
