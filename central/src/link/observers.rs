//! What central does with what its link took in, once checked and (events) stored: the
//! registry and the terminal and device boards, master data offers, the outbox and
//! certificate rules, meeting answers, cases from residents' submissions, and the alert rules.
//!
//! The link only checks, stores and acknowledges; these observers run beside it, on their own
//! handles, in the order the link took things in, so a gateway's ack waits only for its batch
//! to be on disk. The link's task is central's ingest bottleneck: perf under `bench-central`
//! put these observers at over half of its time during a burst. Events are stored before they
//! get here, so nothing is lost to the queue; its bound holds the link back (and with it the
//! broker) when the observers fall behind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use firmware_config::ids::GatewayId;
use firmware_config::runtime::clock::{Clock, Instant};
use firmware_config::wire::{self, GatewayHealth, OutboxReport, Status};
use prometheus_client::metrics::gauge::Gauge;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::alerts::Alerts;
use crate::cases::Cases;
use crate::link::commands::Commands;
use crate::masterdata::MasterData;
use crate::meetings::Meetings;
use crate::registry::devices::DeviceBoard;
use crate::registry::terminals::TerminalBoard;
use crate::replication::Replication;
use crate::GatewayRegistry;

/// One thing the link took in, checked.
pub enum Observed {
    /// A gateway's status (its birth message, goodbye or last will).
    Status {
        gateway: GatewayId,
        status: Status,
        at: Instant,
    },
    /// A gateway's health report, and when the gateway sent it.
    Health {
        gateway: GatewayId,
        health: Box<GatewayHealth>,
        sent: OffsetDateTime,
        at: Instant,
    },
    /// What one batch added to the store.
    Stored(Fresh),
}

/// The new events of one stored batch.
pub struct Fresh {
    pub gateway: GatewayId,
    /// Those the boards and rules act on: never telemetry, never a kind a source claimed
    /// that only the gateway may originate, never a submission.
    pub events: Vec<wire::Event>,
    /// Residents' submissions the gateway took, new or sent again: cases to make (once; one a
    /// stop between store and case left unmade is made now).
    pub submissions: Vec<wire::Event>,
    /// How many events of the batch were new (telemetry included).
    pub new: u64,
}

/// Per gateway, for the outbox rules: evictions last reported, and when central last stored
/// something of it.
pub type OutboxSeen = Arc<Mutex<HashMap<String, (u64, Instant)>>>;

/// Everything the observers touch: built in `lib.rs`, nothing else.
pub struct Observers {
    pub registry: Arc<Mutex<GatewayRegistry>>,
    pub terminals: Arc<Mutex<TerminalBoard>>,
    pub devices: Arc<Mutex<DeviceBoard>>,
    pub meetings: Arc<Meetings>,
    pub alerts: Arc<Alerts>,
    pub replication: Arc<Replication>,
    pub cases: Arc<Cases>,
    pub masterdata: Arc<MasterData>,
    /// Tells a gateway its residents' cases' status.
    pub commands: Arc<Commands>,
    pub outbox_seen: OutboxSeen,
    /// Each gateway's clock offset, and how far it may be before it is an alert.
    pub clocks: Arc<super::clocks::GatewayClocks>,
    pub max_clock_offset: std::time::Duration,
    /// Groups waiting (`gridedge_central_observer_backlog`).
    pub backlog: Gauge,
    /// With replicas: tells the others of device events, for their boards.
    pub announcer: Option<crate::pg::feed::Announcer>,
    pub clock: Clock,
}

/// Groups waiting for the observers; a group is what the link took in at once (one flush).
const QUEUE: usize = 16;

/// Sequence numbers per note to other replicas (well within NOTIFY's 8,000 bytes).
const DEVICE_SEQS_PER_NOTE: usize = 300;

/// Kinds the device and terminal boards take.
pub fn is_device_kind(kind: &str) -> bool {
    kind.starts_with("camera.") || kind.starts_with("terminal.")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts the observers; they stop when the sender is dropped, after what it had sent.
pub fn spawn(o: Observers) -> (mpsc::Sender<Vec<Observed>>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Vec<Observed>>(QUEUE);
    let o = Arc::new(o);
    let task = tokio::spawn(async move {
        while let Some(group) = rx.recv().await {
            o.backlog.set(rx.len() as i64);
            for observed in group {
                o.observe(observed).await;
            }
        }
    });
    (tx, task)
}

impl Observers {
    async fn observe(self: &Arc<Self>, observed: Observed) {
        match observed {
            Observed::Status {
                gateway,
                status,
                at,
            } => {
                tracing::info!(%gateway, state = ?status.state, site = %status.site, "gateway status");
                lock(&self.registry).observe_status(
                    &gateway,
                    status.state,
                    &status.site,
                    &status.version,
                    at,
                );
            }
            Observed::Health {
                gateway,
                health,
                sent,
                at,
            } => self.health(&gateway, *health, sent, at),
            Observed::Stored(fresh) => self.stored(fresh).await,
        }
    }

    fn health(&self, gateway: &GatewayId, h: GatewayHealth, sent: OffsetDateTime, at: Instant) {
        if let Some(t) = &h.terminals {
            lock(&self.terminals).observe_summary(gateway.as_str(), t, sent);
        }
        // Every replica hears every health report; the gateway's owner offers it master data
        // and raises its alerts.
        let owned = self.alerts.owns(gateway.as_str());
        if let Some(report) = h.masterdata.as_ref().filter(|_| owned) {
            self.replication.offer(gateway, report);
        }
        if let Some(o) = h.outbox.as_ref().filter(|_| owned) {
            self.outbox_rules(gateway.as_str(), o, at);
        }
        if let Some(offset) = self.clocks.offset_ms(gateway.as_str()).filter(|_| owned) {
            let o = crate::alerts::rules::clock(gateway.as_str(), offset, self.max_clock_offset);
            self.alerts.observe(vec![o], self.clock.now_utc());
        }
        if let Some(expires) = h.certificate_expires.filter(|_| owned) {
            let now = self.clock.now_utc();
            let o = crate::alerts::rules::certificate(gateway.as_str(), expires, now);
            self.alerts.observe(vec![o], now);
        }
        lock(&self.registry).observe_health(gateway, h, at);
    }

    /// The outbox rules on a health report: evictions since the last one, a stalled backlog.
    fn outbox_rules(&self, gateway: &str, o: &OutboxReport, now: Instant) {
        let evicted: u64 = o.evicted.values().sum();
        let (before, stalled_for) = {
            let mut seen = lock(&self.outbox_seen);
            let e = seen.entry(gateway.to_owned()).or_insert((evicted, now));
            let before = e.0;
            e.0 = evicted;
            if o.pending == 0 {
                e.1 = now;
            }
            (before, now.saturating_duration_since(e.1))
        };
        let observations = crate::alerts::rules::outbox(gateway, o, before, stalled_for);
        self.alerts.observe(observations, self.clock.now_utc());
    }

    async fn stored(self: &Arc<Self>, fresh: Fresh) {
        let Fresh {
            gateway,
            events,
            submissions,
            new,
        } = fresh;
        let name = gateway.as_str();
        if new > 0 {
            if let Some(e) = lock(&self.outbox_seen).get_mut(name) {
                e.1 = self.clock.instant();
            }
        }
        if !submissions.is_empty() {
            // Made only of what central holds, once; blocking, it flushes.
            let (o, gw) = (self.clone(), name.to_owned());
            let made = tokio::task::spawn_blocking(move || {
                o.cases.observe(&o.masterdata, &gw, &submissions)
            })
            .await;
            for case in made.unwrap_or_default() {
                tracing::info!(receipt = %case.receipt, station = ?case.station, "case routed");
                crate::cases::tell_gateway(&self.commands, &case);
            }
        }
        if events.iter().any(|e| e.kind.starts_with("terminal.")) {
            let mut board = lock(&self.terminals);
            for e in &events {
                board.observe_event(name, e);
            }
        }
        // Those that changed what operators see go to the other replicas' boards: a device
        // saying again what it said costs them nothing.
        let changed: Vec<u64> = {
            let mut devices = lock(&self.devices);
            events
                .iter()
                .filter(|e| devices.observe_event(name, e))
                .map(|e| e.seq)
                .collect()
        };
        if let Some(a) = &self.announcer {
            // Other replicas read them from the database: a note stays small.
            let seqs = changed;
            for chunk in seqs.chunks(DEVICE_SEQS_PER_NOTE) {
                a.send(crate::pg::feed::Note::Devices {
                    gateway: name.to_owned(),
                    seqs: chunk.to_vec(),
                });
            }
        }
        for e in events.iter().filter(|e| e.kind == "meeting.answer") {
            if let Some(m) = self.meetings.answered(name, e) {
                tracing::info!(meeting = %m.id, gateway = name, "meeting answer");
            }
        }
        let observations: Vec<_> = events
            .iter()
            .flat_map(|e| crate::alerts::rules::from_event(name, e))
            .collect();
        if !observations.is_empty() {
            self.alerts.observe(observations, self.clock.now_utc());
        }
    }
}
