//! Sensing alerts at central: rules turn incoming facts into observations ([`rules`]), the
//! engine keeps each alert's lifecycle ([`engine`]), and this module keeps both in central's
//! state store and processes everything in order under one lock, so concurrent batches never
//! duplicate an alert.

pub mod engine;
pub mod rules;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::broadcast;

use crate::state::{StateError, StateStore, Table};

use crate::pg::feed::{Announcer, Note};
pub use engine::{
    Alert, AlertError, Change, Duty, Engine, IdSource, Maintenance, Observation, OwnerCheck,
    Policy, Severity,
};

const ROSTER_KEY: &[u8] = b"roster";

/// What the stored side holds besides the alerts.
#[derive(Default, Serialize, Deserialize)]
struct Extras {
    maintenance: Vec<Maintenance>,
}

pub struct Alerts {
    engine: Mutex<Engine>,
    tree: Arc<dyn Table>,
    meta: Arc<dyn Table>,
    /// Every change, for the console's live feed.
    pub changes: broadcast::Sender<Change>,
    /// With other replicas: who to tell what it stored.
    announcer: std::sync::OnceLock<Announcer>,
}

impl Alerts {
    pub fn open(state: &dyn StateStore, policy: Policy) -> Result<Self, StateError> {
        let tree = state.table("alerts")?;
        let meta = state.table("alerts_meta")?;
        let alerts: Vec<Alert> = tree
            .scan(b"")
            .filter_map(|e| e.ok().and_then(|(_, v)| serde_json::from_slice(&v).ok()))
            .collect();
        let extras: Extras = meta
            .get(b"extras")
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or_default();
        let roster: Vec<Duty> = meta
            .get(ROSTER_KEY)
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or_default();
        let (changes, _) = broadcast::channel(1024);
        Ok(Self {
            engine: Mutex::new(Engine::restore(policy, alerts, extras.maintenance, roster)),
            tree,
            meta,
            changes,
            announcer: Default::default(),
        })
    }

    /// One of several replicas: ids from the shared sequence, timed work only for the gateways
    /// `owner` accepts, and every stored change announced to the other replicas.
    pub fn share(&self, ids: IdSource, owner: OwnerCheck, announcer: Announcer) {
        self.engine().share(ids, owner);
        let _ = self.announcer.set(announcer);
    }

    /// Whether this replica does `gateway`'s alert work (always, on one central).
    pub fn owns(&self, gateway: &str) -> bool {
        self.engine().owns(gateway)
    }

    /// Another replica stored alert `id`: reads it and takes it as it is.
    pub fn mirror(&self, id: u64) {
        let Some(a) = self
            .tree
            .get(&id.to_be_bytes())
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_slice::<Alert>(&v).ok())
        else {
            return;
        };
        let change = self.engine().upsert(a);
        if let Some(c) = change {
            let _ = self.changes.send(c);
        }
    }

    /// Reads the stored alerts again (only those of `gateways`, when given): a replica that
    /// takes gateways over, or that may have missed other replicas' notes.
    pub fn reload(&self, gateways: Option<&std::collections::HashSet<String>>) {
        let alerts: Vec<Alert> = self
            .tree
            .scan(b"")
            .filter_map(|e| e.ok().and_then(|(_, v)| serde_json::from_slice(&v).ok()))
            .filter(|a: &Alert| gateways.is_none_or(|g| g.contains(&a.gateway)))
            .collect();
        let changes: Vec<Change> = {
            let mut engine = self.engine();
            alerts
                .into_iter()
                .filter_map(|a| engine.upsert(a))
                .collect()
        };
        for c in changes {
            let _ = self.changes.send(c);
        }
    }

    /// Reads the maintenance windows and the roster again (another replica changed them).
    pub fn reload_settings(&self) {
        let read = |k: &[u8]| self.meta.get(k).ok().flatten();
        let extras: Extras = read(b"extras")
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or_default();
        let roster: Vec<Duty> = read(ROSTER_KEY)
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or_default();
        let mut engine = self.engine();
        engine.set_maintenance(extras.maintenance);
        engine.set_roster(roster);
    }

    pub fn engine(&self) -> MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The alerts `keep` takes, open or resolved, copied out of the engine (for figures and
    /// scores that take a while: the engine stays free meanwhile).
    pub fn matching(&self, keep: impl Fn(&Alert) -> bool) -> Vec<Alert> {
        self.engine()
            .list(true)
            .into_iter()
            .filter(|a| keep(a))
            .cloned()
            .collect()
    }

    /// Applies `f` to the engine, stores what it changed, and tells the live feed.
    pub fn apply<T>(&self, f: impl FnOnce(&mut Engine) -> (T, Vec<Change>)) -> T {
        let mut engine = self.engine();
        let (out, changes) = f(&mut engine);
        for c in &changes {
            if let Some(a) = engine.get(c.id()) {
                self.store(a);
            }
        }
        drop(engine);
        for c in changes {
            match &c {
                Change::Opened { id } | Change::Escalated { id, .. } => {
                    tracing::warn!(alert = id, change = ?c, "alert")
                }
                _ => tracing::debug!(change = ?c, "alert changed"),
            }
            let _ = self.changes.send(c);
        }
        out
    }

    /// Observations, in order.
    pub fn observe(&self, observations: Vec<Observation>, now: OffsetDateTime) {
        if observations.is_empty() {
            return;
        }
        self.apply(|e| {
            let changes = observations
                .into_iter()
                .flat_map(|o| e.observe(o, now))
                .collect();
            ((), changes)
        });
    }

    fn store(&self, a: &Alert) {
        match serde_json::to_vec(a) {
            Ok(v) => match self.tree.insert(&a.id.to_be_bytes(), v) {
                Ok(()) => {
                    if let Some(an) = self.announcer.get() {
                        an.send(Note::Alert { id: a.id });
                    }
                }
                Err(e) => tracing::error!(alert = a.id, error = %e, "cannot store an alert"),
            },
            Err(e) => tracing::error!(alert = a.id, error = %e, "cannot encode an alert"),
        }
    }

    /// Stores the maintenance windows and the roster (after they changed).
    pub fn store_settings(&self) {
        let engine = self.engine();
        let extras = Extras {
            maintenance: engine.maintenance().to_vec(),
        };
        let roster = engine.roster().to_vec();
        drop(engine);
        let put = |k: &[u8], v: serde_json::Result<Vec<u8>>| match v {
            Ok(v) => {
                if let Err(e) = self.meta.insert(k, v) {
                    tracing::error!(error = %e, "cannot store alert settings");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot encode alert settings"),
        };
        put(b"extras", serde_json::to_vec(&extras));
        put(ROSTER_KEY, serde_json::to_vec(&roster));
        let _ = self.meta.flush();
        if let Some(an) = self.announcer.get() {
            an.send(Note::AlertSettings);
        }
    }
}

/// The cases whose overdue alert may change: overdue and not known to be, or handled while
/// known overdue (`known`, or an open alert: the set is empty after a restart).
fn overdue_cases(
    cases: &crate::cases::Cases,
    alerts: &Alerts,
    known: &std::collections::HashSet<String>,
    now: OffsetDateTime,
) -> Vec<Observation> {
    let alerted: std::collections::HashSet<String> = alerts
        .engine()
        .list(false)
        .into_iter()
        .filter(|a| a.rule == "case.overdue" && !a.cleared)
        .filter_map(|a| {
            a.detail
                .get("receipt")
                .and_then(|r| r.as_str())
                .map(str::to_owned)
        })
        .collect();
    cases
        .overdue_changes(now, |r| known.contains(r) || alerted.contains(r))
        .iter()
        .filter_map(|c| rules::case_overdue(c, cases.fallback(), now))
        .collect()
}

/// What the alert watch reads and raises: built in `lib.rs`, nothing else.
pub struct Watch {
    pub registry: std::sync::Arc<Mutex<crate::GatewayRegistry>>,
    pub alerts: std::sync::Arc<Alerts>,
    pub cases: std::sync::Arc<crate::cases::Cases>,
    /// Reminders of deadlines go out through it.
    pub notifier: std::sync::Arc<crate::notify::Notifier>,
    pub masterdata: std::sync::Arc<crate::masterdata::MasterData>,
    pub clock: firmware_config::runtime::clock::Clock,
    /// `[alerts]`: the time zone of maintenance windows and the rosters, and case limits.
    pub settings: firmware_config::config::central::AlertPolicy,
}

/// Once a second: gateways' presence (offline or silent raises `gateway.offline`, back clears
/// it), hold-downs that ran out, escalations, maintenance windows that ended.
pub async fn watch(w: Watch, token: tokio_util::sync::CancellationToken) {
    use crate::registry::Presence;
    let offset = firmware_config::config::gateway::parse_utc_offset(&w.settings.utc_offset)
        .unwrap_or(time::UtcOffset::UTC);
    let mut seen: std::collections::HashMap<String, Presence> = std::collections::HashMap::new();
    // Cases are looked at less often: half their limit, at most every 10 s.
    let case_limit = w.settings.case_limit;
    let case_every = (case_limit / 2).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(10),
    );
    let mut cases_checked = w.clock.instant();
    let mut overdue: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = every.tick() => {}
        }
        let now = w.clock.now_utc();
        let views = w
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .views(w.clock.instant());
        let mut observations = Vec::new();
        for v in views {
            // Another replica's gateway: its owner watches it. Forgotten here, so that taking
            // it over looks at its presence afresh.
            if !w.alerts.owns(&v.id) {
                seen.remove(&v.id);
                continue;
            }
            if seen.insert(v.id.clone(), v.presence) == Some(v.presence) {
                continue;
            }
            let why = match v.presence {
                Presence::Online => "online",
                Presence::Silent => "silent longer than health.gateway_silence",
                Presence::Offline => "offline (its last will or goodbye)",
            };
            observations.push(rules::gateway_presence(
                &v.id,
                v.presence == Presence::Online,
                why,
            ));
        }
        if w.clock.since(cases_checked) >= case_every {
            cases_checked = w.clock.instant();
            let cases = w.cases.clone();
            let alerts = w.alerts.clone();
            let known = std::mem::take(&mut overdue);
            let (found, reminded, known) = tokio::task::spawn_blocking(move || {
                // Reminders of the gateways this replica holds: each case's once.
                let reminded = cases.remind(now, |gw| alerts.owns(gw));
                (overdue_cases(&cases, &alerts, &known, now), reminded, known)
            })
            .await
            .unwrap_or_default();
            overdue = known;
            for c in &reminded {
                tracing::info!(receipt = %c.receipt, assignee = ?c.assignee, due = ?c.due, "a case's deadline is near; its assignee is reminded");
                w.notifier
                    .notify("case.reminder", crate::cases::notice(c, ""));
            }
            for o in found.into_iter().filter(|o| w.alerts.owns(&o.gateway)) {
                let receipt = o
                    .originator
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                // Only changes: a case stays overdue without raising its count every check.
                let changed = if o.raised {
                    overdue.insert(receipt)
                } else {
                    overdue.remove(&receipt) || w.alerts.engine().is_open(&o.key())
                };
                if changed {
                    observations.push(o);
                }
            }
        }
        w.alerts.observe(observations, now);
        let local = now.to_offset(offset);
        let minute = local.hour() as u16 * 60 + local.minute() as u16;
        w.alerts.apply(|e| ((), e.tick(now, minute)));
    }
}

#[cfg(test)]
mod watch_tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use firmware_config::ids::GatewayId;
    use firmware_config::runtime::clock::{Clock, Instant};
    use firmware_config::wire::LinkState;

    use super::*;
    use crate::GatewayRegistry;

    struct Setup {
        registry: Arc<Mutex<GatewayRegistry>>,
        alerts: Arc<Alerts>,
        token: tokio_util::sync::CancellationToken,
    }

    /// The watch on its own handles, its state in memory, a gateway silent after 90 s,
    /// escalations after 10 and 30 minutes.
    fn setup() -> Setup {
        let state = crate::state::MemoryState::default();
        let settings: firmware_config::config::central::AlertPolicy = serde_json::from_value(
            serde_json::json!({ "escalate_to_station": "10m", "escalate_to_command": "30m" }),
        )
        .unwrap();
        let alerts = Arc::new(
            Alerts::open(
                &state,
                Policy {
                    escalate_after: [settings.escalate_to_station, settings.escalate_to_command],
                },
            )
            .unwrap(),
        );
        let registry = Arc::new(Mutex::new(GatewayRegistry::new(Duration::from_secs(90))));
        let token = tokio_util::sync::CancellationToken::new();
        let w = Watch {
            registry: registry.clone(),
            alerts: alerts.clone(),
            cases: Arc::new(crate::cases::Cases::open(&state, Clock::system()).unwrap()),
            notifier: Arc::new(
                crate::notify::Notifier::open(
                    &state,
                    Clock::system(),
                    Default::default(),
                    "test".into(),
                    Arc::new(crate::metrics::Metrics::new(
                        &firmware_config::config::parse_elsewhere(
                            firmware_config::examples::CENTRAL,
                            std::path::Path::new("/"),
                        )
                        .unwrap(),
                    )),
                )
                .unwrap(),
            ),
            masterdata: Arc::new(
                crate::masterdata::MasterData::open(&state, Clock::system()).unwrap(),
            ),
            clock: Clock::following_tokio(time::macros::datetime!(2026-06-01 08:00 UTC)),
            settings,
        };
        tokio::spawn(watch(w, token.clone()));
        Setup {
            registry,
            alerts,
            token,
        }
    }

    fn heard(s: &Setup, gateway: &str) {
        s.registry.lock().unwrap().observe_status(
            &GatewayId::new(gateway).unwrap(),
            LinkState::Online,
            "site",
            "1.0",
            Instant::now(),
        );
    }

    fn offline_alert(s: &Setup, gateway: &str) -> Option<Alert> {
        let e = s.alerts.engine();
        e.list(true)
            .into_iter()
            .find(|a| a.gateway == gateway && a.rule == "gateway.offline")
            .cloned()
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_gateway_raises_an_alert_that_escalates_on_time_and_clears_when_heard() {
        let s = setup();
        heard(&s, "gw-a");
        heard(&s, "gw-b");
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_secs(15)).await;
            heard(&s, "gw-b");
        }
        // 90 s without a word from gw-a: silent.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let a = offline_alert(&s, "gw-a").expect("gw-a went silent");
        assert!(!a.cleared && a.escalation == 0, "{a:?}");
        assert!(offline_alert(&s, "gw-b").is_none(), "gw-b spoke all along");
        tokio::time::sleep(Duration::from_secs(10 * 60)).await;
        assert_eq!(offline_alert(&s, "gw-a").unwrap().escalation, 1);
        // The command centre's after that much more.
        tokio::time::sleep(Duration::from_secs(29 * 60)).await;
        assert_eq!(offline_alert(&s, "gw-a").unwrap().escalation, 1);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(offline_alert(&s, "gw-a").unwrap().escalation, 2);
        heard(&s, "gw-a");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let a = offline_alert(&s, "gw-a").unwrap();
        assert!(a.cleared, "heard again: {a:?}");
        // Its times are the clock's.
        assert!(
            a.last_raised - a.opened < time::Duration::seconds(5),
            "{a:?}"
        );
        assert_eq!(a.opened.date(), time::macros::date!(2026 - 06 - 01));
        s.token.cancel();
    }
}
