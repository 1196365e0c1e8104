//! Terminals of the centre — kiosks, video terminals, screens — and their health.
//!
//! Terminals that can push send heartbeats (`POST /api/v1/terminals/heartbeat`); the others are
//! probed by the gateway (`probe.rs`). Every observation goes through the terminal's
//! [`TerminalHealth`]; the changes it yields go to the outbox in order, through one writer task.
//! A heartbeat is missed when none comes within 1.5 intervals of the last one, and then every
//! interval: a terminal with `misses_before_offline = 3` and a 10 s interval is offline 35 s
//! after its last heartbeat.

pub mod health;
pub mod probe;
pub mod report;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use firmware_config::config::gateway::{HealthSource, Terminal, TerminalKind, TerminalPolicy};
use firmware_config::config::GatewayConfig;
use firmware_config::kinds::Kind;
use firmware_config::runtime::clock::Instant;
use firmware_config::wire::TerminalsSummary;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use health::{Change, Observation, Policy, TerminalHealth, TerminalState};
pub use report::Heartbeat;

use crate::outbox::{NewEvent, Outbox};

/// How often deadlines and flapping are checked: a quarter of the shortest heartbeat interval,
/// within these bounds (a miss is then counted at most a quarter interval late).
pub const TICK_MIN: Duration = Duration::from_millis(250);
pub const TICK_MAX: Duration = Duration::from_secs(2);

struct Entry {
    terminal: Terminal,
    health: TerminalHealth,
    /// Heartbeat mode: when the next heartbeat is missed.
    due: Option<Instant>,
    report: Option<Heartbeat>,
    /// Peripherals the terminal's settings bundle requires.
    required: Vec<String>,
    /// The settings bundle version the gateway holds for it.
    bundle_version: Option<u64>,
}

struct Inner {
    entries: HashMap<String, Entry>,
    policy: TerminalPolicy,
    /// How often to tick, from the shortest heartbeat interval.
    tick: Duration,
}

/// Every terminal's health; cheap to clone.
#[derive(Clone)]
pub struct Terminals {
    inner: Arc<Mutex<Inner>>,
    events: mpsc::UnboundedSender<NewEvent>,
}

/// Why a heartbeat was not taken.
#[derive(Debug, PartialEq, Eq)]
pub enum HeartbeatError {
    /// The token belongs to no terminal (an event source).
    NotATerminal(String),
    /// The terminal is probed; it has no heartbeat to send.
    NotHeartbeating(String),
}

/// What the terminal is told back.
#[derive(Debug, Serialize)]
pub struct HeartbeatReply {
    pub terminal: String,
    pub state: TerminalState,
    /// Send the next heartbeat within this many seconds.
    pub interval_secs: u64,
    /// The settings bundle the gateway holds for this terminal; fetch it when it differs from
    /// the one it runs (`GET /api/v1/terminals/config`).
    pub config_version: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct TerminalView {
    pub id: String,
    pub name: String,
    pub kind: TerminalKind,
    pub mode: &'static str,
    pub state: TerminalState,
    pub since_secs: u64,
    pub last_seen_secs_ago: Option<u64>,
    pub flapping: bool,
    pub reasons: Vec<String>,
    pub report: Option<Heartbeat>,
    pub config_version: Option<u64>,
}

fn policy_of(t: &Terminal, p: &TerminalPolicy) -> Policy {
    let (misses, successes) = match &t.health {
        HealthSource::Heartbeat {
            misses_before_offline,
            successes_before_online,
            ..
        }
        | HealthSource::HttpProbe {
            misses_before_offline,
            successes_before_online,
            ..
        }
        | HealthSource::TcpProbe {
            misses_before_offline,
            successes_before_online,
            ..
        } => (*misses_before_offline, *successes_before_online),
    };
    Policy {
        misses_before_offline: misses,
        successes_before_online: successes,
        flap_window: p.flap_window,
        flap_changes: p.flap_changes,
    }
}

fn heartbeat_interval(t: &Terminal) -> Option<Duration> {
    match t.health {
        HealthSource::Heartbeat { interval, .. } => Some(interval),
        _ => None,
    }
}

fn mode(t: &Terminal) -> &'static str {
    match t.health {
        HealthSource::Heartbeat { .. } => "heartbeat",
        HealthSource::HttpProbe { .. } => "http_probe",
        HealthSource::TcpProbe { .. } => "tcp_probe",
    }
}

/// The first deadline after a heartbeat at `at` is 1.5 intervals later (slack for jitter).
fn first_due(at: Instant, interval: Duration) -> Instant {
    at + interval + interval / 2
}

impl Terminals {
    /// The registry, and the receiver its events come out of (for [`write_events`]).
    pub fn new(config: &GatewayConfig, now: Instant) -> (Self, mpsc::UnboundedReceiver<NewEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let t = Self {
            inner: Arc::new(Mutex::new(Inner {
                entries: HashMap::new(),
                policy: config.terminal_health.clone(),
                tick: TICK_MIN,
            })),
            events: tx,
        };
        t.reconfigure(config, now);
        (t, rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Follows a new config: new terminals start unknown, removed ones are forgotten, changed
    /// ones keep their state under the new policy.
    pub fn reconfigure(&self, config: &GatewayConfig, now: Instant) {
        let mut inner = self.lock();
        inner.policy = config.terminal_health.clone();
        let shortest = config
            .terminals
            .iter()
            .filter_map(heartbeat_interval)
            .min()
            .unwrap_or(TICK_MAX * 4);
        inner.tick = (shortest / 4).clamp(TICK_MIN, TICK_MAX);
        let policy = inner.policy.clone();
        inner
            .entries
            .retain(|id, _| config.terminals.iter().any(|t| &t.id == id));
        for t in &config.terminals {
            let p = policy_of(t, &policy);
            let interval = heartbeat_interval(t);
            match inner.entries.get_mut(&t.id) {
                Some(e) => {
                    e.health.set_policy(p);
                    if heartbeat_interval(&e.terminal) != interval {
                        e.due = interval.map(|i| first_due(now, i));
                    }
                    e.terminal = t.clone();
                }
                None => {
                    inner.entries.insert(
                        t.id.clone(),
                        Entry {
                            terminal: t.clone(),
                            health: TerminalHealth::new(p, now),
                            due: interval.map(|i| first_due(now, i)),
                            report: None,
                            required: Vec::new(),
                            bundle_version: None,
                        },
                    );
                }
            }
        }
    }

    /// The settings bundle held for a terminal: what it must have, and its version.
    pub fn set_bundle(&self, id: &str, version: u64, required: Vec<String>) {
        if let Some(e) = self.lock().entries.get_mut(id) {
            e.bundle_version = Some(version);
            e.required = required;
        }
    }

    /// A heartbeat from the terminal `id` (authenticated by its token).
    pub fn heartbeat(
        &self,
        id: &str,
        hb: Heartbeat,
        now: Instant,
    ) -> Result<HeartbeatReply, HeartbeatError> {
        let mut inner = self.lock();
        let Inner {
            entries, policy, ..
        } = &mut *inner;
        let e = entries
            .get_mut(id)
            .ok_or_else(|| HeartbeatError::NotATerminal(id.to_owned()))?;
        let Some(interval) = heartbeat_interval(&e.terminal) else {
            return Err(HeartbeatError::NotHeartbeating(id.to_owned()));
        };
        let problems = hb.problems(policy, &e.required);
        e.due = Some(first_due(now, interval));
        e.report = Some(hb);
        let changes = e.health.observe(now, Observation::Answered { problems });
        let reply = HeartbeatReply {
            terminal: id.to_owned(),
            state: e.health.state(),
            interval_secs: interval.as_secs(),
            config_version: e.bundle_version,
        };
        self.emit(&e.terminal, &e.health, changes);
        Ok(reply)
    }

    /// The result of probing terminal `id`.
    pub fn probed(&self, id: &str, result: Result<(), probe::ProbeMiss>, now: Instant) {
        let mut inner = self.lock();
        let Some(e) = inner.entries.get_mut(id) else {
            return;
        };
        let obs = match result {
            Ok(()) => Observation::Answered {
                problems: Vec::new(),
            },
            Err(miss) => Observation::Missed {
                reason: miss.to_string(),
            },
        };
        let changes = e.health.observe(now, obs);
        self.emit(&e.terminal, &e.health, changes);
    }

    fn tick_period(&self) -> Duration {
        self.lock().tick
    }

    /// Counts missed heartbeats and clears flapping; called every [`Terminals::tick_period`].
    pub fn tick(&self, now: Instant) {
        let mut inner = self.lock();
        for e in inner.entries.values_mut() {
            let mut changes = Vec::new();
            if let (Some(due), Some(interval)) = (e.due, heartbeat_interval(&e.terminal)) {
                if now >= due {
                    let reason = format!(
                        "no heartbeat for {}",
                        humantime::format_duration(Duration::from_secs(
                            e.health
                                .last_answer()
                                .map_or(0, |t| now.saturating_duration_since(t).as_secs())
                        ))
                    );
                    e.due = Some(due + interval);
                    changes.extend(e.health.observe(now, Observation::Missed { reason }));
                }
            }
            changes.extend(e.health.tick(now));
            if !changes.is_empty() {
                self.emit(&e.terminal, &e.health, changes);
            }
        }
    }

    fn emit(&self, t: &Terminal, h: &TerminalHealth, changes: Vec<Change>) {
        for c in changes {
            let (kind, payload) = match c {
                Change::State { from, to, reasons } => {
                    tracing::info!(terminal = %t.id, from = from.as_str(), to = to.as_str(), ?reasons, "terminal state");
                    (
                        Kind::Terminal(to),
                        serde_json::json!({
                            "terminal": t.id, "name": t.name, "kind": t.kind,
                            "state": to.as_str(), "previous": from.as_str(), "reasons": reasons,
                        }),
                    )
                }
                Change::FlappingRaised { state, changes } => {
                    tracing::warn!(terminal = %t.id, changes, "terminal flapping");
                    (
                        Kind::TerminalFlapping { cleared: false },
                        serde_json::json!({
                            "terminal": t.id, "name": t.name, "kind": t.kind,
                            "state": state.as_str(), "changes": changes,
                            "reasons": h.reasons(),
                        }),
                    )
                }
                Change::FlappingCleared { state, reasons } => {
                    tracing::info!(terminal = %t.id, state = state.as_str(), "terminal steady again");
                    (
                        Kind::TerminalFlapping { cleared: true },
                        serde_json::json!({
                            "terminal": t.id, "name": t.name, "kind": t.kind,
                            "state": state.as_str(), "reasons": reasons,
                        }),
                    )
                }
            };
            match NewEvent::own(kind, &payload) {
                Ok(event) => {
                    let _ = self.events.send(event);
                }
                Err(e) => tracing::error!(error = %e, "cannot record a terminal event"),
            }
        }
    }

    /// Every terminal by state, for the periodic report to central.
    pub fn summary(&self) -> TerminalsSummary {
        let inner = self.lock();
        let mut s = TerminalsSummary::default();
        let mut ids: Vec<_> = inner.entries.iter().collect();
        ids.sort_by(|a, b| a.0.cmp(b.0));
        for (id, e) in ids {
            let list = match e.health.state() {
                TerminalState::Online => &mut s.online,
                TerminalState::Degraded => &mut s.degraded,
                TerminalState::Offline => &mut s.offline,
                TerminalState::Unknown => &mut s.unknown,
            };
            list.push(id.clone());
            if e.health.flapping() {
                s.flapping.push(id.clone());
            }
        }
        s
    }

    /// Counts per state, for `/metrics`.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        let inner = self.lock();
        let mut m: BTreeMap<&'static str, u64> = [
            TerminalState::Unknown,
            TerminalState::Online,
            TerminalState::Degraded,
            TerminalState::Offline,
        ]
        .into_iter()
        .map(|s| (s.as_str(), 0))
        .collect();
        for e in inner.entries.values() {
            *m.entry(e.health.state().as_str()).or_default() += 1;
        }
        m
    }

    pub fn views(&self, now: Instant) -> Vec<TerminalView> {
        let inner = self.lock();
        let mut v: Vec<_> = inner
            .entries
            .iter()
            .map(|(id, e)| TerminalView {
                id: id.clone(),
                name: e.terminal.name.clone(),
                kind: e.terminal.kind,
                mode: mode(&e.terminal),
                state: e.health.state(),
                since_secs: now.saturating_duration_since(e.health.since()).as_secs(),
                last_seen_secs_ago: e
                    .health
                    .last_answer()
                    .map(|t| now.saturating_duration_since(t).as_secs()),
                flapping: e.health.flapping(),
                reasons: e.health.reasons().to_vec(),
                report: e.report.clone(),
                config_version: e.bundle_version,
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }
}

/// Appends terminal events to the outbox in the order they happened, many per write.
pub async fn write_events(
    mut rx: mpsc::UnboundedReceiver<NewEvent>,
    outbox: Outbox,
    token: CancellationToken,
) {
    let mut batch = Vec::new();
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut batch, 256) => n,
            _ = token.cancelled() => {
                // Whatever is already queued still goes to disk.
                while let Ok(e) = rx.try_recv() {
                    batch.push(e);
                }
                0
            }
        };
        if !batch.is_empty() {
            if let Err(e) = outbox.append(std::mem::take(&mut batch)).await {
                tracing::error!(error = %e, "cannot record terminal events");
            }
        }
        if n == 0 {
            return;
        }
    }
}

/// Runs [`Terminals::tick`] until cancelled, as often as the shortest interval needs.
pub async fn watch(terminals: Terminals, token: CancellationToken) {
    loop {
        let period = terminals.tick_period();
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(period) => terminals.tick(Instant::now()),
        }
    }
}
