//! The alert lifecycle, pure: every call takes `now`, so tests run hours of it without sleeping.
//!
//! - One alert per **key** (originator + rule) until an operator resolves it: repeats raise its
//!   count; a condition that goes away sets `cleared`, and coming back unsets it.
//!   `acknowledged` and `cleared` are independent flags.
//! - **Hold-down**: a raise opens an alert only when it has lasted the rule's hold-down; a
//!   device that flaps faster than that opens nothing.
//! - **Maintenance**: an alert whose originator is under a maintenance window is recorded but
//!   silenced: no escalation.
//! - **Inhibition**: while a gateway is offline, its devices' alerts are inhibited by the
//!   gateway's alert (their own silence is a consequence, not news).
//! - **Escalation**: an alert nobody acknowledged is escalated to the on-duty person of its
//!   grid station after the first delay, then of the command centre after the second.
//! - Every change is in the alert's audit trail, with who and when.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Minor,
    Major,
    Critical,
}

/// What the rules make of one incoming fact.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// `<gateway>` or `<gateway>/<device kind>/<device id>`.
    pub originator: String,
    pub gateway: String,
    pub rule: String,
    pub raised: bool,
    pub severity: Severity,
    pub title: String,
    pub detail: serde_json::Value,
    /// How long the condition must last before the alert opens.
    pub hold_down: Duration,
}

impl Observation {
    pub fn key(&self) -> String {
        format!("{}#{}", self.originator, self.rule)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub by: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: u64,
    pub key: String,
    pub originator: String,
    pub gateway: String,
    pub rule: String,
    pub severity: Severity,
    pub title: String,
    pub detail: serde_json::Value,
    /// Times the condition was raised while this alert was open.
    pub count: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub opened: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_raised: OffsetDateTime,
    pub acknowledged: bool,
    pub cleared: bool,
    /// Closed by an operator: a later raise opens a new alert.
    pub resolved: bool,
    pub assignee: Option<String>,
    /// The maintenance window silencing it.
    pub silenced_by: Option<u64>,
    /// The gateway alert inhibiting it.
    pub inhibited_by: Option<u64>,
    /// 0: not escalated; 1: the station's on-duty person; 2: the command centre's.
    pub escalation: u8,
    pub notes: Vec<AuditEntry>,
    pub audit: Vec<AuditEntry>,
}

impl Alert {
    fn log(&mut self, at: OffsetDateTime, by: &str, action: impl Into<String>, note: &str) {
        self.audit.push(AuditEntry {
            at,
            by: by.to_owned(),
            action: action.into(),
            note: note.to_owned(),
        });
    }

    /// Whether it still wants someone's attention.
    pub fn active(&self) -> bool {
        !self.resolved
    }

    fn may_escalate(&self) -> bool {
        !self.resolved
            && !self.acknowledged
            && !self.cleared
            && self.silenced_by.is_none()
            && self.inhibited_by.is_none()
    }
}

/// A time when a gateway or one device is being worked on: its alerts are silenced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Maintenance {
    pub id: u64,
    /// A gateway (`gw-1`, and so all its devices) or one device (`gw-1/camera/hall`).
    pub scope: String,
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
    pub reason: String,
    pub by: String,
}

impl Maintenance {
    fn in_scope(&self, originator: &str) -> bool {
        originator == self.scope
            || originator
                .strip_prefix(self.scope.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }

    fn covers(&self, originator: &str, now: OffsetDateTime) -> bool {
        (self.from..self.until).contains(&now) && self.in_scope(originator)
    }
}

/// Who is on duty: for one grid station (a gateway) or the command centre (`scope` = `command`),
/// between two times of day (UTC offset of the street applied by the caller).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Duty {
    pub scope: String,
    pub name: String,
    pub phone: String,
    /// Minutes after midnight; `from > until` runs over midnight; equal: all day.
    pub from_minute: u16,
    pub until_minute: u16,
}

impl Duty {
    fn on(&self, minute: u16) -> bool {
        match self.from_minute.cmp(&self.until_minute) {
            std::cmp::Ordering::Equal => true,
            std::cmp::Ordering::Less => (self.from_minute..self.until_minute).contains(&minute),
            std::cmp::Ordering::Greater => minute >= self.from_minute || minute < self.until_minute,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Unacknowledged this long: the station's on-duty person; then this long more: the
    /// command centre's.
    pub escalate_after: [Duration; 2],
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            escalate_after: [Duration::from_secs(300), Duration::from_secs(600)],
        }
    }
}

/// What changed, for the console's live feed and for notifications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    Opened {
        id: u64,
    },
    Repeated {
        id: u64,
    },
    Cleared {
        id: u64,
    },
    Reopened {
        id: u64,
    },
    Escalated {
        id: u64,
        level: u8,
        to: Option<String>,
    },
    Updated {
        id: u64,
    },
}

impl Change {
    pub fn id(&self) -> u64 {
        match self {
            Change::Opened { id }
            | Change::Repeated { id }
            | Change::Cleared { id }
            | Change::Reopened { id }
            | Change::Escalated { id, .. }
            | Change::Updated { id } => *id,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AlertError {
    #[error("no alert {0}")]
    NoSuchAlert(u64),
    #[error("alert {0} is resolved")]
    Resolved(u64),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone)]
struct Pending {
    since: OffsetDateTime,
    observation: Observation,
}

/// Where new alert and window ids come from when several replicas make them (a database
/// sequence); without one, the engine counts from the highest it holds.
pub type IdSource = Arc<dyn Fn() -> Option<u64> + Send + Sync>;

/// Whether this replica does a gateway's timed work (escalations, the end of maintenance);
/// without one, every gateway's.
pub type OwnerCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The engine's links to other replicas, both absent on one central.
#[derive(Default, Clone)]
struct Shared {
    ids: Option<IdSource>,
    owner: Option<OwnerCheck>,
}

impl Shared {
    fn owns(&self, gateway: &str) -> bool {
        self.owner.as_ref().is_none_or(|o| o(gateway))
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("ids", &self.ids.is_some())
            .field("owner", &self.owner.is_some())
            .finish()
    }
}

#[derive(Debug, Default)]
pub struct Engine {
    policy: Policy,
    shared: Shared,
    alerts: BTreeMap<u64, Alert>,
    /// key → the open (unresolved) alert.
    open: HashMap<String, u64>,
    /// Raises waiting out their hold-down, by key.
    pending: HashMap<String, Pending>,
    maintenance: Vec<Maintenance>,
    roster: Vec<Duty>,
    next_id: u64,
    /// Raises dropped because they cleared within their hold-down.
    pub held_down: u64,
}

const SYSTEM: &str = "system";
const GATEWAY_OFFLINE: &str = "gateway.offline";

impl Engine {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            next_id: 1,
            ..Self::default()
        }
    }

    /// Rebuilds from stored alerts and windows.
    pub fn restore(
        policy: Policy,
        alerts: Vec<Alert>,
        maintenance: Vec<Maintenance>,
        roster: Vec<Duty>,
    ) -> Self {
        let mut e = Self::new(policy);
        for a in alerts {
            e.next_id = e.next_id.max(a.id + 1);
            if a.active() {
                e.open.insert(a.key.clone(), a.id);
            }
            e.alerts.insert(a.id, a);
        }
        e.next_id = e
            .next_id
            .max(maintenance.iter().map(|m| m.id + 1).max().unwrap_or(1));
        e.maintenance = maintenance;
        e.roster = roster;
        e
    }

    /// Takes ids from `ids` and does timed work only for gateways `owner` accepts: one of
    /// several replicas.
    pub fn share(&mut self, ids: IdSource, owner: OwnerCheck) {
        self.shared = Shared {
            ids: Some(ids),
            owner: Some(owner),
        };
    }

    fn take_id(&mut self) -> u64 {
        let shared = self.shared.ids.as_ref().and_then(|ids| ids());
        let id = shared.unwrap_or(self.next_id);
        self.next_id = self.next_id.max(id + 1);
        id
    }

    pub fn owns(&self, gateway: &str) -> bool {
        self.shared.owns(gateway)
    }

    /// An alert as another replica stored it: taken as it is. Returns the change it makes
    /// here (opened when it is new to this replica), none when it holds it already.
    pub fn upsert(&mut self, a: Alert) -> Option<Change> {
        let id = a.id;
        let known = match self.alerts.get(&id) {
            Some(held) if *held == a => return None,
            held => held.is_some(),
        };
        if a.active() {
            self.open.insert(a.key.clone(), id);
        } else if self.open.get(&a.key) == Some(&id) {
            self.open.remove(&a.key);
        }
        self.next_id = self.next_id.max(id + 1);
        self.alerts.insert(id, a);
        Some(if known {
            Change::Updated { id }
        } else {
            Change::Opened { id }
        })
    }

    /// Whether an alert with this key is open (not resolved).
    pub fn is_open(&self, key: &str) -> bool {
        self.open.contains_key(key)
    }

    pub fn get(&self, id: u64) -> Option<&Alert> {
        self.alerts.get(&id)
    }

    /// Alerts, newest first.
    pub fn list(&self, include_resolved: bool) -> Vec<&Alert> {
        self.alerts
            .values()
            .rev()
            .filter(|a| include_resolved || a.active())
            .collect()
    }

    pub fn maintenance(&self) -> &[Maintenance] {
        &self.maintenance
    }

    pub fn roster(&self) -> &[Duty] {
        &self.roster
    }

    /// Maintenance windows as another replica stored them.
    pub fn set_maintenance(&mut self, maintenance: Vec<Maintenance>) {
        self.next_id = self
            .next_id
            .max(maintenance.iter().map(|m| m.id + 1).max().unwrap_or(1));
        self.maintenance = maintenance;
    }

    pub fn set_roster(&mut self, roster: Vec<Duty>) {
        self.roster = roster;
    }

    /// One fact from the rules.
    pub fn observe(&mut self, o: Observation, now: OffsetDateTime) -> Vec<Change> {
        let key = o.key();
        if let Some(&id) = self.open.get(&key) {
            return self.touch(id, &o, now);
        }
        if !o.raised {
            if self.pending.remove(&key).is_some() {
                self.held_down += 1;
            }
            return Vec::new();
        }
        if o.hold_down.is_zero() {
            return self.open_alert(o, now);
        }
        self.pending.entry(key).or_insert(Pending {
            since: now,
            observation: o,
        });
        Vec::new()
    }

    /// An observation for an open alert: a repeat, a clear or a return.
    fn touch(&mut self, id: u64, o: &Observation, now: OffsetDateTime) -> Vec<Change> {
        let Some(a) = self.alerts.get_mut(&id) else {
            return Vec::new();
        };
        let mut changes = Vec::new();
        if o.raised {
            a.count += 1;
            a.last_raised = now;
            a.detail = o.detail.clone();
            if a.cleared {
                a.cleared = false;
                a.log(now, SYSTEM, "raised again", "");
                changes.push(Change::Reopened { id });
            } else {
                changes.push(Change::Repeated { id });
            }
        } else if !a.cleared {
            a.cleared = true;
            a.log(now, SYSTEM, "cleared", "");
            changes.push(Change::Cleared { id });
        }
        if o.rule == GATEWAY_OFFLINE {
            changes.extend(self.inhibit_devices(o, id, now));
        }
        changes
    }

    fn open_alert(&mut self, o: Observation, now: OffsetDateTime) -> Vec<Change> {
        let id = self.take_id();
        let silenced_by = self
            .maintenance
            .iter()
            .find(|m| m.covers(&o.originator, now))
            .map(|m| m.id);
        let inhibited_by = if o.originator != o.gateway {
            self.open
                .get(&format!("{}#{GATEWAY_OFFLINE}", o.gateway))
                .copied()
                .filter(|g| self.alerts.get(g).is_some_and(|a| !a.cleared))
        } else {
            None
        };
        let mut a = Alert {
            id,
            key: o.key(),
            originator: o.originator.clone(),
            gateway: o.gateway.clone(),
            rule: o.rule.clone(),
            severity: o.severity,
            title: o.title.clone(),
            detail: o.detail.clone(),
            count: 1,
            opened: now,
            last_raised: now,
            acknowledged: false,
            cleared: false,
            resolved: false,
            assignee: None,
            silenced_by,
            inhibited_by,
            escalation: 0,
            notes: Vec::new(),
            audit: Vec::new(),
        };
        let why = match (silenced_by, inhibited_by) {
            (Some(m), _) => format!("silenced by maintenance window {m}"),
            (None, Some(g)) => format!("inhibited by gateway alert {g}"),
            _ => String::new(),
        };
        a.log(now, SYSTEM, "opened", &why);
        self.open.insert(a.key.clone(), id);
        self.alerts.insert(id, a);
        let mut changes = vec![Change::Opened { id }];
        if o.rule == GATEWAY_OFFLINE {
            changes.extend(self.inhibit_devices(&o, id, now));
        }
        changes
    }

    /// The gateway's alert `gw_alert` changed: its devices' open alerts follow it (inhibited
    /// while it is not cleared, released when it is).
    fn inhibit_devices(
        &mut self,
        o: &Observation,
        gw_alert: u64,
        now: OffsetDateTime,
    ) -> Vec<Change> {
        let down = self.alerts.get(&gw_alert).is_some_and(|a| !a.cleared);
        let prefix = format!("{}/", o.gateway);
        let mut changes = Vec::new();
        for a in self.alerts.values_mut() {
            if !a.active() || !a.originator.starts_with(&prefix) {
                continue;
            }
            match (down, a.inhibited_by) {
                (true, None) => {
                    a.inhibited_by = Some(gw_alert);
                    a.log(
                        now,
                        SYSTEM,
                        "inhibited",
                        &format!("gateway alert {gw_alert}"),
                    );
                    changes.push(Change::Updated { id: a.id });
                }
                (false, Some(g)) if g == gw_alert => {
                    a.inhibited_by = None;
                    // Escalation counts from now: the gateway's outage was not this alert's.
                    a.opened = a.opened.max(now);
                    a.log(now, SYSTEM, "released", "its gateway is back");
                    changes.push(Change::Updated { id: a.id });
                }
                _ => {}
            }
        }
        changes
    }

    /// Time passes: held-down raises that lasted open, unacknowledged alerts escalate,
    /// maintenance windows end. `minute_of_day` is the street's local time, for the roster.
    pub fn tick(&mut self, now: OffsetDateTime, minute_of_day: u16) -> Vec<Change> {
        let mut changes = Vec::new();
        let ripe: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| now - p.since >= p.observation.hold_down)
            .map(|(k, _)| k.clone())
            .collect();
        for key in ripe {
            if let Some(p) = self.pending.remove(&key) {
                changes.extend(self.open_alert(p.observation, p.since));
            }
        }
        self.maintenance.retain(|m| m.until > now);
        for a in self.alerts.values_mut() {
            // Another replica's gateway: its owner escalates it.
            if !self.shared.owns(&a.gateway) {
                continue;
            }
            if a.silenced_by
                .is_some_and(|m| !self.maintenance.iter().any(|w| w.id == m))
            {
                a.silenced_by = None;
                a.opened = a.opened.max(now);
                a.log(now, SYSTEM, "maintenance over", "");
                changes.push(Change::Updated { id: a.id });
            }
            if !a.may_escalate() || a.escalation >= 2 {
                continue;
            }
            let due = self.policy.escalate_after[..=a.escalation as usize]
                .iter()
                .sum::<Duration>();
            if now - a.opened < due {
                continue;
            }
            a.escalation += 1;
            let scope = if a.escalation == 1 {
                a.gateway.as_str()
            } else {
                "command"
            };
            let duty = self
                .roster
                .iter()
                .find(|d| d.scope == scope && d.on(minute_of_day));
            let to = duty.map(|d| format!("{} {}", d.name, d.phone));
            let whom = if a.escalation == 1 {
                "the grid station's on-duty person"
            } else {
                "the command centre's on-duty person"
            };
            let note = to
                .clone()
                .unwrap_or_else(|| "nobody on the roster".to_owned());
            a.log(now, SYSTEM, format!("escalated to {whom}"), &note);
            changes.push(Change::Escalated {
                id: a.id,
                level: a.escalation,
                to,
            });
        }
        changes
    }

    fn alert_mut(&mut self, id: u64) -> Result<&mut Alert, AlertError> {
        let a = self
            .alerts
            .get_mut(&id)
            .ok_or(AlertError::NoSuchAlert(id))?;
        if a.resolved {
            return Err(AlertError::Resolved(id));
        }
        Ok(a)
    }

    pub fn acknowledge(
        &mut self,
        id: u64,
        by: &str,
        now: OffsetDateTime,
    ) -> Result<Change, AlertError> {
        let a = self.alert_mut(id)?;
        if !a.acknowledged {
            a.acknowledged = true;
            a.log(now, by, "acknowledged", "");
        }
        Ok(Change::Updated { id })
    }

    pub fn assign(
        &mut self,
        id: u64,
        to: &str,
        by: &str,
        now: OffsetDateTime,
    ) -> Result<Change, AlertError> {
        let to = to.trim();
        if to.is_empty() || to.chars().count() > 64 {
            return Err(AlertError::Invalid("assignee: 1 to 64 characters".into()));
        }
        let a = self.alert_mut(id)?;
        a.assignee = Some(to.to_owned());
        a.log(now, by, format!("assigned to {to}"), "");
        Ok(Change::Updated { id })
    }

    pub fn note(
        &mut self,
        id: u64,
        text: &str,
        by: &str,
        now: OffsetDateTime,
    ) -> Result<Change, AlertError> {
        let text = text.trim();
        if text.is_empty() || text.chars().count() > 2000 {
            return Err(AlertError::Invalid("note: 1 to 2000 characters".into()));
        }
        let a = self
            .alerts
            .get_mut(&id)
            .ok_or(AlertError::NoSuchAlert(id))?;
        let entry = AuditEntry {
            at: now,
            by: by.to_owned(),
            action: "note".into(),
            note: text.to_owned(),
        };
        a.notes.push(entry.clone());
        a.audit.push(entry);
        Ok(Change::Updated { id })
    }

    /// Closed by an operator; the next raise of its condition opens a new alert.
    pub fn resolve(
        &mut self,
        id: u64,
        by: &str,
        note: &str,
        now: OffsetDateTime,
    ) -> Result<Change, AlertError> {
        let a = self.alert_mut(id)?;
        a.resolved = true;
        a.log(now, by, "resolved", note);
        let key = a.key.clone();
        self.open.remove(&key);
        Ok(Change::Updated { id })
    }

    pub fn add_maintenance(
        &mut self,
        scope: &str,
        from: OffsetDateTime,
        until: OffsetDateTime,
        reason: &str,
        by: &str,
    ) -> Result<Maintenance, AlertError> {
        let scope = scope.trim().trim_end_matches('/');
        if scope.is_empty() || scope.len() > 200 {
            return Err(AlertError::Invalid(
                "scope: a gateway or gateway/kind/device".into(),
            ));
        }
        if until <= from {
            return Err(AlertError::Invalid("until must come after from".into()));
        }
        let m = Maintenance {
            id: self.take_id(),
            scope: scope.to_owned(),
            from,
            until,
            reason: reason.trim().to_owned(),
            by: by.to_owned(),
        };
        self.maintenance.push(m.clone());
        // Alerts already open under it are silenced too.
        for a in self.alerts.values_mut() {
            if a.active() && a.silenced_by.is_none() && m.in_scope(&a.originator) {
                a.silenced_by = Some(m.id);
                a.log(
                    from,
                    by,
                    "silenced",
                    &format!("maintenance window {}", m.id),
                );
            }
        }
        Ok(m)
    }

    pub fn end_maintenance(&mut self, id: u64) -> bool {
        let before = self.maintenance.len();
        self.maintenance.retain(|m| m.id != id);
        before != self.maintenance.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }
    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }
    fn cam(raised: bool) -> Observation {
        Observation {
            originator: "gw-1/camera/hall".into(),
            gateway: "gw-1".into(),
            rule: "camera.offline".into(),
            raised,
            severity: Severity::Major,
            title: "摄像头离线 hall".into(),
            detail: json!({}),
            hold_down: secs(10),
        }
    }
    fn gateway(raised: bool) -> Observation {
        Observation {
            originator: "gw-1".into(),
            gateway: "gw-1".into(),
            rule: GATEWAY_OFFLINE.into(),
            raised,
            severity: Severity::Critical,
            title: "网关离线".into(),
            detail: json!({}),
            hold_down: Duration::ZERO,
        }
    }
    fn opened(changes: &[Change]) -> Vec<u64> {
        changes
            .iter()
            .filter_map(|c| match c {
                Change::Opened { id } => Some(*id),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn repeats_raise_the_count_and_clear_and_ack_are_independent() {
        let mut e = Engine::new(Policy::default());
        let mut o = cam(true);
        o.hold_down = Duration::ZERO;
        let id = opened(&e.observe(o.clone(), t0()))[0];
        assert_eq!(
            e.observe(o.clone(), t0() + secs(5)),
            vec![Change::Repeated { id }]
        );
        assert_eq!(e.get(id).unwrap().count, 2);
        e.acknowledge(id, "op-li", t0() + secs(6)).unwrap();
        let mut clear = o.clone();
        clear.raised = false;
        assert_eq!(
            e.observe(clear, t0() + secs(7)),
            vec![Change::Cleared { id }]
        );
        let a = e.get(id).unwrap();
        assert!(a.acknowledged && a.cleared && !a.resolved);
        // Back again: the same alert, not a new one.
        assert_eq!(
            e.observe(o.clone(), t0() + secs(8)),
            vec![Change::Reopened { id }]
        );
        assert_eq!(e.list(false).len(), 1);
        // Resolved, the next raise is a new alert.
        e.resolve(id, "op-li", "换了网线", t0() + secs(9)).unwrap();
        let id2 = opened(&e.observe(o, t0() + secs(10)))[0];
        assert_ne!(id, id2);
        let actions: Vec<&str> = e
            .get(id)
            .unwrap()
            .audit
            .iter()
            .map(|a| a.action.as_str())
            .collect();
        assert_eq!(
            actions,
            [
                "opened",
                "acknowledged",
                "cleared",
                "raised again",
                "resolved"
            ]
        );
        assert_eq!(e.get(id).unwrap().audit[4].by, "op-li");
    }

    #[test]
    fn a_flapping_condition_is_held_down() {
        let mut e = Engine::new(Policy::default());
        // Offline and back every 4 s, with a 10 s hold-down: nothing opens.
        for i in 0..20 {
            let at = t0() + secs(i * 4);
            e.observe(cam(i % 2 == 0), at);
            assert!(opened(&e.tick(at, 600)).is_empty());
        }
        assert_eq!(e.list(true).len(), 0);
        assert_eq!(e.held_down, 10);
        // Offline for good: it opens once the hold-down has passed, dated when it began.
        e.observe(cam(true), t0() + secs(100));
        assert!(e.tick(t0() + secs(105), 600).is_empty());
        let ids = opened(&e.tick(t0() + secs(110), 600));
        assert_eq!(ids.len(), 1);
        assert_eq!(e.get(ids[0]).unwrap().opened, t0() + secs(100));
    }

    #[test]
    fn maintenance_silences_a_centre_and_ends() {
        let mut e = Engine::new(Policy::default());
        let m = e
            .add_maintenance("gw-1", t0(), t0() + secs(3600), "机房改造", "admin")
            .unwrap();
        let mut o = cam(true);
        o.hold_down = Duration::ZERO;
        let id = opened(&e.observe(o, t0() + secs(60)))[0];
        assert_eq!(e.get(id).unwrap().silenced_by, Some(m.id));
        // Silenced: never escalated during the window.
        assert!(e.tick(t0() + secs(3000), 600).is_empty());
        assert_eq!(e.get(id).unwrap().escalation, 0);
        // The window over, it counts from then on.
        let c = e.tick(t0() + secs(3600), 600);
        assert_eq!(c, vec![Change::Updated { id }]);
        assert!(e.tick(t0() + secs(3600 + 299), 600).is_empty());
        assert_eq!(e.tick(t0() + secs(3600 + 300), 600).len(), 1);
        // Another centre is not silenced.
        let mut other = cam(true);
        other.originator = "gw-2/camera/hall".into();
        other.gateway = "gw-2".into();
        other.hold_down = Duration::ZERO;
        let id2 = opened(&e.observe(other, t0() + secs(60)))[0];
        assert_eq!(e.get(id2).unwrap().silenced_by, None);
    }

    #[test]
    fn a_gateway_offline_inhibits_its_devices_and_releases_them() {
        let mut e = Engine::new(Policy::default());
        let mut o = cam(true);
        o.hold_down = Duration::ZERO;
        let cam_id = opened(&e.observe(o.clone(), t0()))[0];
        let gw_id = opened(&e.observe(gateway(true), t0() + secs(1)))[0];
        assert_eq!(e.get(cam_id).unwrap().inhibited_by, Some(gw_id));
        // A device alert while the gateway is down is inhibited from the start.
        let mut t = o.clone();
        t.originator = "gw-1/terminal/kiosk-1".into();
        t.rule = "terminal.offline".into();
        let t_id = opened(&e.observe(t, t0() + secs(2)))[0];
        assert_eq!(e.get(t_id).unwrap().inhibited_by, Some(gw_id));
        // Only the gateway escalates.
        let c = e.tick(t0() + secs(400), 600);
        assert_eq!(c.iter().map(Change::id).collect::<Vec<_>>(), vec![gw_id]);
        // The gateway back: its devices are released and count from then.
        e.observe(gateway(false), t0() + secs(500));
        assert_eq!(e.get(cam_id).unwrap().inhibited_by, None);
        assert_eq!(e.get(cam_id).unwrap().opened, t0() + secs(500));
        assert!(e.tick(t0() + secs(799), 600).is_empty());
    }

    #[test]
    fn unacknowledged_alerts_escalate_to_the_station_then_the_command_centre() {
        let mut e = Engine::new(Policy {
            escalate_after: [secs(300), secs(600)],
        });
        e.set_roster(vec![
            Duty {
                scope: "gw-1".into(),
                name: "王站长".into(),
                phone: "13800000001".into(),
                from_minute: 8 * 60,
                until_minute: 20 * 60,
            },
            Duty {
                scope: "gw-1".into(),
                name: "夜班李".into(),
                phone: "13800000002".into(),
                from_minute: 20 * 60,
                until_minute: 8 * 60,
            },
            Duty {
                scope: "command".into(),
                name: "指挥中心值班".into(),
                phone: "010-12345678".into(),
                from_minute: 0,
                until_minute: 0,
            },
        ]);
        let mut o = cam(true);
        o.hold_down = Duration::ZERO;
        let id = opened(&e.observe(o.clone(), t0()))[0];
        assert!(e.tick(t0() + secs(299), 22 * 60).is_empty());
        // At night: the night shift of the station.
        assert_eq!(
            e.tick(t0() + secs(300), 22 * 60),
            vec![Change::Escalated {
                id,
                level: 1,
                to: Some("夜班李 13800000002".into())
            }]
        );
        assert!(e.tick(t0() + secs(899), 22 * 60).is_empty());
        assert_eq!(
            e.tick(t0() + secs(900), 22 * 60),
            vec![Change::Escalated {
                id,
                level: 2,
                to: Some("指挥中心值班 010-12345678".into())
            }]
        );
        assert!(
            e.tick(t0() + secs(9000), 22 * 60).is_empty(),
            "two levels, then no more"
        );
        // Acknowledged in time: no escalation.
        let mut o2 = o;
        o2.rule = "camera.unauthorized".into();
        let id2 = opened(&e.observe(o2, t0()))[0];
        e.acknowledge(id2, "op", t0() + secs(10)).unwrap();
        assert!(e
            .tick(t0() + secs(10_000), 600)
            .iter()
            .all(|c| c.id() != id2));
    }

    #[test]
    fn operators_get_clear_errors_and_a_restore_keeps_everything() {
        let mut e = Engine::new(Policy::default());
        assert_eq!(
            e.acknowledge(9, "op", t0()),
            Err(AlertError::NoSuchAlert(9))
        );
        let mut o = cam(true);
        o.hold_down = Duration::ZERO;
        let id = opened(&e.observe(o.clone(), t0()))[0];
        assert!(matches!(
            e.assign(id, " ", "op", t0()),
            Err(AlertError::Invalid(_))
        ));
        e.assign(id, "张网格员", "op", t0()).unwrap();
        e.note(id, "已电话联系", "op", t0()).unwrap();
        e.resolve(id, "op", "", t0()).unwrap();
        assert_eq!(e.acknowledge(id, "op", t0()), Err(AlertError::Resolved(id)));
        let id2 = opened(&e.observe(o.clone(), t0() + secs(1)))[0];
        let r = Engine::restore(
            Policy::default(),
            e.list(true).into_iter().cloned().collect(),
            Vec::new(),
            Vec::new(),
        );
        assert_eq!(r.get(id).unwrap().assignee.as_deref(), Some("张网格员"));
        assert_eq!(r.get(id).unwrap().notes[0].note, "已电话联系");
        // The open one is still the one a repeat lands on.
        let mut r = r;
        assert_eq!(
            r.observe(o, t0() + secs(2)),
            vec![Change::Repeated { id: id2 }]
        );
    }

    /// Two replicas' engines: ids come from the shared source, each escalates only the
    /// gateways it owns, and one takes the other's alerts as stored without escalating them.
    #[test]
    fn replicas_take_ids_from_one_source_and_escalate_only_their_own_gateways() {
        let policy = Policy {
            escalate_after: [secs(600), secs(1800)],
        };
        let counter = Arc::new(std::sync::atomic::AtomicU64::new(100));
        let ids: IdSource = {
            let c = counter.clone();
            Arc::new(move || Some(c.fetch_add(1, std::sync::atomic::Ordering::SeqCst)))
        };
        let (mut a, mut b) = (Engine::new(policy.clone()), Engine::new(policy));
        a.share(ids.clone(), Arc::new(|g: &str| g == "gw-1"));
        b.share(ids, Arc::new(|g: &str| g == "gw-2"));
        let mut on_2 = gateway(true);
        on_2.originator = "gw-2".into();
        on_2.gateway = "gw-2".into();
        let id_a = opened(&a.observe(gateway(true), t0()))[0];
        let id_b = opened(&b.observe(on_2, t0()))[0];
        assert_eq!((id_a, id_b), (100, 101), "one sequence, no id twice");
        // Each takes the other's as stored: new to it, then already held.
        let from_b = b.get(id_b).unwrap().clone();
        assert_eq!(a.upsert(from_b.clone()), Some(Change::Opened { id: id_b }));
        assert_eq!(a.upsert(from_b), None);
        assert!(a.is_open("gw-2#gateway.offline"));
        // Past the first escalation: a escalates its own alone.
        let changes = a.tick(t0() + secs(601), 600);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(matches!(changes[0], Change::Escalated { id, level: 1, .. } if id == id_a));
        assert_eq!(a.get(id_b).unwrap().escalation, 0);
        // b's own, resolved there, reaches a: no longer open on a.
        b.resolve(id_b, "op", "fixed", t0() + secs(700)).unwrap();
        a.upsert(b.get(id_b).unwrap().clone());
        assert!(!a.is_open("gw-2#gateway.offline"));
    }
}
