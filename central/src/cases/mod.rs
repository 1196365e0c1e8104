//! Cases made from residents' submissions. Each `submission.created` event central stores
//! becomes a case (once: its receipt `<gateway>-<seq>-<check>` is the event's identity, the
//! check code coming from the event), routed to the
//! grid it concerns — to the grid's station and its grid leader (网格长) when the master data
//! knows them, else to the street. Every status change goes back to the gateway, where the
//! kiosk can ask for it by receipt.

pub mod deadline;
pub mod index;
pub mod scope;
pub mod workflow;

use std::sync::Arc;
use std::time::Duration;

use firmware_config::ids::GatewayId;
use firmware_config::masterdata::Dataset;
use firmware_config::runtime::clock::Clock;
use firmware_config::topics::Channel;
use firmware_config::wire::{Command, Event, Message};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::{OffsetDateTime, UtcOffset};

use crate::masterdata::MasterData;
use crate::operators::Signed;
use crate::state::{StateError, StateStore, Table};

pub use workflow::{Action, Refusal};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    Report,
    Dispute,
    Application,
}

impl Category {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "report" => Some(Category::Report),
            "dispute" => Some(Category::Dispute),
            "application" => Some(Category::Application),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Report => "report",
            Category::Dispute => "dispute",
            Category::Application => "application",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub status: String,
    pub by: String,
    pub note: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// What was done (`assign`, `mediate`, …; `register` and `remind` are central's own).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub action: String,
    /// The action's own fields (a station and person, a department, a decision).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub details: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Case {
    pub receipt: String,
    pub gateway: String,
    pub submission: Value,
    pub status: String,
    /// The base grid it is assigned to (a grid station), and who answers for it there.
    pub station: Option<String>,
    pub station_name: Option<String>,
    pub assignee: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// When it must be done by, in working days from its registration (none: its category
    /// has no limit in the master data; the `[alerts] case_limit` holds it then).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub due: Option<OffsetDateTime>,
    /// When the assignee is reminded of the deadline, and whether it was.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub remind_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub reminded: bool,
    /// The department it was transferred to (转办).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// Reported up to the street (上报): the street works it.
    #[serde(default)]
    pub at_street: bool,
    /// Times a supervisor pressed it (督办).
    #[serde(default)]
    pub supervised: u32,
    /// A dispute's mediation sessions.
    #[serde(default)]
    pub mediations: u32,
    /// A dispute's follow-up visit was made (回访).
    #[serde(default)]
    pub visited: bool,
    /// `agreement` or `referral: …` for a dispute; `approved` or `refused` for an application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    pub history: Vec<HistoryEntry>,
}

impl HistoryEntry {
    /// An entry of `status` by `by` at `at`, no action named.
    pub fn new(status: &str, by: &str, note: &str, at: OffsetDateTime) -> Self {
        Self {
            status: status.to_owned(),
            by: by.to_owned(),
            note: note.to_owned(),
            at,
            action: String::new(),
            details: Value::Null,
        }
    }
}

impl Case {
    /// A case just registered, routed nowhere yet, with no deadline of its own.
    pub fn registered(receipt: &str, gateway: &str, submission: Value, at: OffsetDateTime) -> Self {
        Self {
            receipt: receipt.to_owned(),
            gateway: gateway.to_owned(),
            submission,
            status: "registered".to_owned(),
            station: None,
            station_name: None,
            assignee: None,
            created: at,
            due: None,
            remind_at: None,
            reminded: false,
            department: None,
            at_street: false,
            supervised: 0,
            mediations: 0,
            visited: false,
            outcome: None,
            history: Vec::new(),
        }
    }

    pub fn category(&self) -> Category {
        self.submission["category"]
            .as_str()
            .and_then(Category::parse)
            .unwrap_or(Category::Report)
    }

    pub fn is_open(&self) -> bool {
        workflow::is_open_status(self.category(), &self.status)
    }

    /// Its deadline: the one it was given, else its creation plus `fallback`.
    pub fn deadline(&self, fallback: Duration) -> OffsetDateTime {
        self.due.unwrap_or(self.created + fallback)
    }

    pub fn is_overdue(&self, fallback: Duration, now: OffsetDateTime) -> bool {
        self.is_open() && now > self.deadline(fallback)
    }
}

/// What a case queue shows: every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub status: Option<String>,
    /// A grid at any level: its cases and those of the grids below it.
    pub grid: Option<String>,
    pub category: Option<String>,
    /// Only overdue (true) or only those within their time (false).
    pub overdue: Option<bool>,
    /// Newest first from this receipt on (paging): those created before it.
    pub before: Option<String>,
    /// At most this many (default 100, at most 1,000).
    pub limit: Option<usize>,
}

pub struct Cases {
    tree: Arc<dyn Table>,
    /// Stamps cases and their history.
    clock: Clock,
    /// The street's time zone, for working days.
    offset: UtcOffset,
    /// A case whose category has no limit in the master data is due this long after it came.
    fallback: Duration,
    /// Every case's entry, for the queue, the map and the reminders.
    index: std::sync::RwLock<index::Index>,
    /// Tells other replicas which case changed (with PostgreSQL).
    announcer: std::sync::OnceLock<crate::pg::feed::Announcer>,
}

/// Why an operator's change of a case was not taken.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    /// A field of the request is wrong; the message names it.
    #[error("{0}")]
    Invalid(String),
    /// Outside the operator's scope or role.
    #[error("{0}")]
    Forbidden(String),
    #[error("no case {0:?}")]
    NotFound(String),
    /// Others kept changing it at the same moment; try again.
    #[error("the case {0:?} changed meanwhile; try again")]
    Busy(String),
    #[error("cases store: {0}")]
    Store(#[from] StateError),
    #[error("cases store: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Attempts at an action against others' changes of the same case.
const ATTEMPTS: usize = 8;

impl Cases {
    pub fn open(state: &dyn StateStore, clock: Clock) -> Result<Self, CaseError> {
        let cases = Self {
            tree: state.table("cases")?,
            clock,
            offset: time::macros::offset!(+8),
            fallback: Duration::from_secs(72 * 3600),
            index: Default::default(),
            announcer: Default::default(),
        };
        cases.reload();
        Ok(cases)
    }

    /// Reads every case into the index again (at start, and when notes may have been missed).
    pub fn reload(&self) {
        let mut fresh = index::Index::default();
        for c in self.list(None) {
            fresh.put(index::Entry::of(&c));
        }
        *self
            .index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
    }

    /// Another replica changed case `receipt`: its entry is read again.
    pub fn mirror(&self, receipt: &str) {
        let c = self.get(receipt);
        let mut i = self
            .index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match c {
            Some(c) => i.put(index::Entry::of(&c)),
            None => i.remove(receipt),
        }
    }

    /// Tells other replicas of each case this one writes.
    pub fn share(&self, announcer: crate::pg::feed::Announcer) {
        let _ = self.announcer.set(announcer);
    }

    /// Keeps `c`'s entry and tells the other replicas (after the write).
    fn indexed(&self, c: &Case) {
        self.index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .put(index::Entry::of(c));
        if let Some(a) = self.announcer.get() {
            a.send(crate::pg::feed::Note::Case {
                receipt: c.receipt.clone(),
            });
        }
    }

    /// The cases registered at or after `since`, newest first: read through the index, so
    /// that a week's assessment does not read every case ever kept. Blocking.
    pub fn created_since(&self, since: OffsetDateTime) -> Vec<Case> {
        let receipts: Vec<String> = self
            .index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .take_while(|e| e.created >= since)
            .map(|e| e.receipt.clone())
            .collect();
        receipts.iter().filter_map(|r| self.get(r)).collect()
    }

    /// The cases registered in `[start, end)` or finished in it, of the stations `keep` takes
    /// (None: a case with no station): what figures over that window count. Read through the
    /// index, so that a week's figures do not read every case ever kept. Blocking.
    pub fn registered_or_finished_in(
        &self,
        start: OffsetDateTime,
        end: OffsetDateTime,
        keep: impl Fn(Option<&str>) -> bool,
    ) -> Vec<Case> {
        let within = |t: OffsetDateTime| t >= start && t < end;
        let receipts: Vec<String> = self
            .index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|e| within(e.created) || e.finished.is_some_and(within))
            .filter(|e| keep(e.station.as_deref()))
            .map(|e| e.receipt.clone())
            .collect();
        receipts.iter().filter_map(|r| self.get(r)).collect()
    }

    /// The receipts of the cases whose station `keep` takes (None: a case with no station).
    pub fn receipts_of_stations(
        &self,
        keep: impl Fn(Option<&str>) -> bool,
    ) -> std::collections::HashSet<String> {
        self.index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .receipts_of_stations(keep)
    }

    /// Open cases and how many are overdue, by station, of those `keep` takes.
    pub fn open_counts(
        &self,
        keep: impl Fn(&index::Entry) -> bool,
    ) -> std::collections::BTreeMap<String, (usize, usize)> {
        self.index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .counts_by_station(self.fallback, self.clock.now_utc(), keep)
    }

    /// Deadlines in the street's time zone; `fallback` for categories without a limit.
    pub fn with_policy(mut self, offset: UtcOffset, fallback: Duration) -> Self {
        self.offset = offset;
        self.fallback = fallback;
        self
    }

    pub fn fallback(&self) -> Duration {
        self.fallback
    }

    pub fn get(&self, receipt: &str) -> Option<Case> {
        serde_json::from_slice(&self.tree.get(receipt.as_bytes()).ok()??).ok()
    }

    pub fn list(&self, status: Option<&str>) -> Vec<Case> {
        self.tree
            .scan(b"")
            .filter_map(Result::ok)
            .filter_map(|(_, v)| serde_json::from_slice::<Case>(&v).ok())
            .filter(|c| status.is_none_or(|s| c.status == s))
            .collect()
    }

    /// The cases an operator reaches that match `f`, newest first; and how many matched.
    pub fn query(
        &self,
        f: &Filter,
        who: &Signed,
        places: &scope::GridTree,
    ) -> Result<(Vec<Case>, usize), CaseError> {
        use scope::Places;
        if let Some(c) = &f.category {
            if Category::parse(c).is_none() {
                return Err(CaseError::Invalid(format!(
                    "category: {c:?}; use report, dispute or application"
                )));
            }
        }
        let limit = f.limit.unwrap_or(100).clamp(1, 1000);
        let now = self.clock.now_utc();
        let keep = |e: &index::Entry| {
            f.status.as_deref().is_none_or(|s| e.status == s)
                && places.reaches(who.scope.as_deref(), e.station.as_deref())
                && f.grid.as_deref().is_none_or(|g| {
                    e.station
                        .as_deref()
                        .is_some_and(|st| places.ancestry(st).any(|a| a == g))
                })
                && f.category
                    .as_deref()
                    .is_none_or(|k| e.category.as_str() == k)
                && f.overdue
                    .is_none_or(|o| e.is_overdue(self.fallback, now) == o)
        };
        // A scope below the street, or a grid asked for, names the stations to read: only
        // their cases are looked at. Otherwise every case is.
        let mut stations: Option<std::collections::HashSet<&str>> = None;
        for g in [
            who.scope.as_deref().filter(|s| !places.is_street(Some(s))),
            f.grid.as_deref(),
        ]
        .into_iter()
        .flatten()
        {
            let under = places.stations_under(g);
            stations = Some(match stations {
                Some(s) => s.intersection(&under).copied().collect(),
                None => under,
            });
        }
        // The page's receipts and the whole count from the index; the page's cases from the
        // table.
        let (page, total) = {
            let i = self
                .index
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let page_of = |it: &mut dyn Iterator<Item = &index::Entry>| {
                let (mut total, mut page) = (0, Vec::new());
                // Paging: the page starts after `before` (from the top when it is not held).
                let mut started =
                    f.before.is_none() || f.before.as_deref().is_some_and(|b| !i.contains(b));
                for e in it {
                    if !keep(e) {
                        if !started {
                            started = f.before.as_deref() == Some(e.receipt.as_str());
                        }
                        continue;
                    }
                    total += 1;
                    if started && page.len() < limit {
                        page.push(e.receipt.clone());
                    }
                    if !started {
                        started = f.before.as_deref() == Some(e.receipt.as_str());
                    }
                }
                (page, total)
            };
            match &stations {
                Some(set) => page_of(&mut i.of_stations(set.iter().copied()).into_iter()),
                None => page_of(&mut i.iter()),
            }
        };
        let found = page.iter().filter_map(|r| self.get(r)).collect();
        Ok((found, total))
    }

    fn put(&self, c: &Case) -> Result<(), CaseError> {
        self.tree
            .insert(c.receipt.as_bytes(), serde_json::to_vec(c)?)?;
        self.tree.flush()?;
        self.indexed(c);
        Ok(())
    }

    /// Takes cases kept elsewhere (a previous system, a test bed) as they are: stored with one
    /// flush, then indexed. Blocking.
    pub fn import(&self, cases: impl IntoIterator<Item = Case>) -> Result<usize, CaseError> {
        let mut n = 0;
        let mut entries = Vec::new();
        for c in cases {
            self.tree
                .insert(c.receipt.as_bytes(), serde_json::to_vec(&c)?)?;
            entries.push(index::Entry::of(&c));
            n += 1;
        }
        self.tree.flush()?;
        let mut i = self
            .index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for e in entries {
            i.put(e);
        }
        Ok(n)
    }

    /// Changes a case with `f` unless someone changed it meanwhile (then reads it again and
    /// tries again): two operators on two replicas never lose each other's step.
    fn change<T>(
        &self,
        receipt: &str,
        mut f: impl FnMut(&mut Case) -> Result<T, CaseError>,
    ) -> Result<(Case, T), CaseError> {
        for _ in 0..ATTEMPTS {
            let held = self
                .tree
                .get(receipt.as_bytes())?
                .ok_or_else(|| CaseError::NotFound(receipt.to_owned()))?;
            let mut c: Case = serde_json::from_slice(&held)?;
            let out = f(&mut c)?;
            if self
                .tree
                .replace_if(receipt.as_bytes(), &held, serde_json::to_vec(&c)?)?
            {
                self.tree.flush()?;
                self.indexed(&c);
                return Ok((c, out));
            }
        }
        Err(CaseError::Busy(receipt.to_owned()))
    }

    /// An operator's action on a case, checked against its status and their scope and role,
    /// and recorded in its history under `author`; returns the case and what it did. Blocking.
    pub fn act(
        &self,
        receipt: &str,
        action: &Action,
        who: &Signed,
        author: &str,
        places: &scope::GridTree,
    ) -> Result<(Case, workflow::Step), CaseError> {
        let now = self.clock.now_utc();
        self.change(receipt, |c| {
            let step = action.apply(c, who, places).map_err(|r| match r {
                Refusal::Invalid(m) => CaseError::Invalid(m),
                Refusal::Forbidden(m) => CaseError::Forbidden(m),
            })?;
            c.status = step.status.clone();
            c.history.push(HistoryEntry {
                status: step.status.clone(),
                by: author.to_owned(),
                note: step.note.clone(),
                at: now,
                action: step.action.to_owned(),
                details: step.details.clone(),
            });
            Ok(step.clone())
        })
    }

    /// The deadline of a case registered `at`: the service item's working days for an
    /// application, else its category's from the master data.
    fn deadline_for(
        &self,
        data: Option<&Dataset>,
        category: Category,
        item: Option<&str>,
        at: OffsetDateTime,
    ) -> (Option<OffsetDateTime>, Option<OffsetDateTime>) {
        let Some(d) = data else { return (None, None) };
        let limit = d
            .cases
            .limits
            .iter()
            .find(|l| l.category == category.as_str());
        let item_days = item
            .filter(|_| category == Category::Application)
            .and_then(|code| d.items.iter().find(|i| i.code == code))
            .map(|i| i.promised_days.unwrap_or(i.time_limit_days))
            .filter(|days| *days > 0);
        let Some(days) = item_days.or(limit.map(|l| l.working_days)) else {
            return (None, None);
        };
        let calendar = deadline::Calendar::new(&d.cases, self.offset);
        let due = calendar.due(at, days);
        let remind = limit
            .map_or(0, |l| l.remind_days)
            .min(days.saturating_sub(1));
        (Some(due), Some(calendar.remind_at(due, remind)))
    }

    /// Makes cases of the submissions among stored events (again: nothing), routed by the
    /// grids of `masterdata`; returns the new ones. Blocking.
    pub fn observe(&self, masterdata: &MasterData, gateway: &str, events: &[Event]) -> Vec<Case> {
        let mut new = Vec::new();
        let data = masterdata.current();
        for e in events.iter().filter(|e| e.kind == "submission.created") {
            let submission: Value = serde_json::from_str(e.payload.get()).unwrap_or(Value::Null);
            // A submission taken before receipts had check codes keeps the receipt it was
            // given then.
            let receipt = match submission["check"]
                .as_str()
                .filter(|c| firmware_config::wire::is_receipt_check(c))
            {
                Some(check) => firmware_config::wire::receipt(gateway, e.seq, check),
                None => format!("{gateway}-{:06}", e.seq),
            };
            if self.get(&receipt).is_some() {
                continue;
            }
            let station = submission["grid"].as_str().map(str::to_owned);
            let grid = station.as_deref().and_then(|g| {
                data.as_ref()
                    .and_then(|v| v.dataset.grids.iter().find(|x| x.code == g).cloned())
            });
            let assignee = grid.as_ref().and_then(|g| {
                g.staff
                    .iter()
                    .find(|s| s.role == "网格长")
                    .or(g.staff.first())
                    .map(|s| format!("{} ({}, {})", s.name, s.role, s.duty_phone))
            });
            let category = submission["category"]
                .as_str()
                .and_then(Category::parse)
                .unwrap_or(Category::Report);
            let now = self.clock.now_utc();
            let (due, remind_at) = self.deadline_for(
                data.as_ref().map(|v| &v.dataset),
                category,
                submission["item_code"].as_str(),
                now,
            );
            let mut history = HistoryEntry::new(
                "registered",
                "central",
                "received and routed to the grid's station",
                now,
            );
            history.action = "register".to_owned();
            let case = Case {
                station_name: grid.as_ref().map(|g| g.name.clone()),
                station,
                assignee,
                due,
                remind_at,
                history: vec![history],
                ..Case::registered(&receipt, gateway, submission, now)
            };
            match self.put(&case) {
                Ok(()) => new.push(case),
                Err(e) => tracing::error!(%receipt, error = %e, "cannot store a case"),
            }
        }
        new
    }

    /// Open cases whose reminder time has come, of the gateways `owned` says: each is marked
    /// reminded (once, whichever replica gets there first) and returned. Blocking.
    /// The cases whose overdue alert may change: open and overdue but not `flagged`, or no
    /// longer open and `flagged` (a receipt with an overdue alert). Read through the index, so
    /// that the alert watch reads only those, not every case, every few seconds. Blocking.
    pub fn overdue_changes(
        &self,
        now: OffsetDateTime,
        flagged: impl Fn(&str) -> bool,
    ) -> Vec<Case> {
        let receipts: Vec<String> = self
            .index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|e| {
                if e.open {
                    e.is_overdue(self.fallback, now) && !flagged(&e.receipt)
                } else {
                    flagged(&e.receipt)
                }
            })
            .map(|e| e.receipt.clone())
            .collect();
        receipts.iter().filter_map(|r| self.get(r)).collect()
    }

    pub fn remind(&self, now: OffsetDateTime, owned: impl Fn(&str) -> bool) -> Vec<Case> {
        let due: Vec<String> = self
            .index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|e| e.open && !e.reminded && owned(&e.gateway))
            .filter(|e| e.remind_at.is_some_and(|r| now >= r))
            .map(|e| e.receipt.clone())
            .collect();
        let mut out = Vec::new();
        for receipt in due {
            let changed = self.change(&receipt, |c| {
                if c.reminded {
                    return Ok(false);
                }
                c.reminded = true;
                c.history.push(HistoryEntry {
                    status: c.status.clone(),
                    by: "central".to_owned(),
                    note: "the deadline is near".to_owned(),
                    at: now,
                    action: "remind".to_owned(),
                    details: json!({"due": c.due.map(|d| d.unix_timestamp())}),
                });
                Ok(true)
            });
            match changed {
                Ok((c, true)) => out.push(c),
                Ok(_) => {}
                Err(e) => tracing::warn!(%receipt, error = %e, "cannot mark a case reminded"),
            }
        }
        out
    }
}

/// What a notice says of a case: enough for its assignee and for the resident's message.
pub fn notice(c: &Case, note: &str) -> Value {
    json!({
        "receipt": c.receipt,
        "status": c.status,
        "category": c.category().as_str(),
        "title": c.submission["title"],
        "station": c.station,
        "station_name": c.station_name,
        "assignee": c.assignee,
        "due": c.due.map(|d| d.unix_timestamp()),
        "supervised": c.supervised,
        "resident_phone": c.submission["contact"]["phone"],
        "note": note,
    })
}

/// Tells the case's gateway its status (queued by the broker while the gateway is away).
pub fn tell_gateway(commands: &crate::link::commands::Commands, c: &Case) {
    let Ok(gw) = GatewayId::new(c.gateway.clone()) else {
        return;
    };
    let note = c.history.last().map(|h| h.note.clone()).unwrap_or_default();
    let args = json!({
        "receipt": c.receipt,
        "status": c.status,
        "station": c.station_name.clone().or(c.station.clone()),
        "note": note,
        "category": c.category().as_str(),
        "title": c.submission["title"],
        // When it last changed: the newest entry of its history.
        "updated": c.history.last().map_or(c.created, |h| h.at).format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        // Orders this status after the earlier ones, whatever order the gateway stores them in.
        "version": c.history.len(),
    });
    let command = Message::Command(Command {
        id: format!("case-{}-{}", c.receipt, c.history.len()),
        name: "submission.status".to_owned(),
        args,
    });
    if let Err(e) = commands.publish(&gw, Channel::Cmd, command) {
        tracing::warn!(receipt = %c.receipt, error = %e, "cannot tell the gateway a case's status");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::Role;
    use crate::state::MemoryState;
    use firmware_config::masterdata::Level;
    use scope::tests::grid;

    fn places() -> scope::GridTree {
        scope::GridTree::new(&Dataset {
            grids: vec![
                grid("S", Level::Street, None),
                grid("A1", Level::Area, Some("S")),
                grid("B11", Level::Base, Some("A1")),
                grid("B12", Level::Base, Some("A1")),
            ],
            ..Default::default()
        })
    }

    fn who(name: &str, role: Role, scope: Option<&str>) -> Signed {
        Signed {
            name: name.into(),
            role,
            csrf: String::new(),
            scope: scope.map(Into::into),
        }
    }

    fn with_case(category: &str) -> (Cases, String) {
        let cases = Cases::open(&MemoryState::default(), Clock::system()).unwrap();
        let c = Case {
            station: Some("B11".into()),
            ..Case::registered(
                "gw-1-000001-ABCD",
                "gw-1",
                json!({"category": category, "title": "楼上漏水"}),
                OffsetDateTime::now_utc(),
            )
        };
        cases.put(&c).unwrap();
        (cases, c.receipt)
    }

    fn act(cases: &Cases, r: &str, a: Value, w: &Signed) -> Result<Case, CaseError> {
        let a: Action = serde_json::from_value(a).unwrap();
        cases.act(r, &a, w, &w.name, &places()).map(|(c, _)| c)
    }

    #[test]
    fn a_window_holds_the_cases_registered_or_finished_in_it_of_the_stations_asked() {
        let cases = Cases::open(&MemoryState::default(), Clock::system()).unwrap();
        let t = |d: i64| OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000 + d);
        let case =
            |n: u32, station: &str, created: OffsetDateTime, closed: Option<OffsetDateTime>| {
                let mut c = Case::registered(
                    &format!("gw-1-{n:06}-ABCD"),
                    "gw-1",
                    json!({"category": "report", "title": "路灯不亮"}),
                    created,
                );
                c.station = Some(station.into());
                if let Some(at) = closed {
                    c.status = "closed".into();
                    c.history
                        .push(HistoryEntry::new("resolved", "网格员", "", at));
                    c.history
                        .push(HistoryEntry::new("closed", "网格员", "", at));
                }
                c
            };
        cases
            .import([
                case(1, "B11", t(0), Some(t(12))),  // before, finished in it
                case(2, "B11", t(11), None),        // registered in it
                case(3, "B11", t(0), None),         // before, still open
                case(4, "B11", t(0), Some(t(5))),   // before, finished before
                case(5, "B12", t(11), None),        // another station's
                case(6, "B11", t(20), Some(t(21))), // after
            ])
            .unwrap();
        let got: Vec<String> = cases
            .registered_or_finished_in(t(10), t(15), |st| st == Some("B11"))
            .into_iter()
            .map(|c| c.receipt)
            .collect();
        assert_eq!(got, ["gw-1-000002-ABCD", "gw-1-000001-ABCD"]);
    }

    #[test]
    fn only_cases_whose_overdue_alert_may_change_are_read() {
        let cases = Cases::open(&MemoryState::default(), Clock::system())
            .unwrap()
            .with_policy(UtcOffset::UTC, Duration::from_secs(3600));
        let now = OffsetDateTime::now_utc();
        let case = |n: u32, age_hours: i64, closed: bool| {
            let mut c = Case::registered(
                &format!("gw-1-{n:06}-ABCD"),
                "gw-1",
                json!({"category": "report", "title": "井盖缺失"}),
                now - time::Duration::hours(age_hours),
            );
            if closed {
                c.status = "closed".into();
                c.history
                    .push(HistoryEntry::new("closed", "网格员", "", now));
            }
            c
        };
        cases
            .import([
                case(1, 5, false), // overdue, not yet known
                case(2, 5, false), // overdue, known
                case(3, 5, true),  // closed while known overdue
                case(4, 5, true),  // closed, never overdue as far as the watch knows
                case(5, 0, false), // within its time
            ])
            .unwrap();
        let known = ["gw-1-000002-ABCD", "gw-1-000003-ABCD"];
        let mut got: Vec<String> = cases
            .overdue_changes(now, |r| known.contains(&r))
            .into_iter()
            .map(|c| c.receipt)
            .collect();
        got.sort();
        assert_eq!(got, ["gw-1-000001-ABCD", "gw-1-000003-ABCD"]);
    }

    #[test]
    fn a_dispute_is_worked_to_the_end_in_order_and_every_step_is_recorded() {
        let (cases, r) = with_case("dispute");
        let boss = who("主任", Role::Supervisor, None);
        let staff = who("网格员李", Role::Operator, Some("B11"));
        let resolve = json!({"action": "resolve", "note": "已处理"});
        assert!(
            matches!(act(&cases, &r, resolve.clone(), &boss), Err(CaseError::Invalid(m)) if m.contains("registered")),
            "not before it is worked"
        );
        act(
            &cases,
            &r,
            json!({"action": "assign", "station": "B11", "person": "网格员李"}),
            &boss,
        )
        .unwrap();
        act(&cases, &r, json!({"action": "accept"}), &staff).unwrap();
        assert!(
            matches!(
                act(&cases, &r, json!({"action": "agree", "note": "x"}), &staff),
                Err(CaseError::Invalid(_))
            ),
            "an agreement needs a mediation first"
        );
        act(
            &cases,
            &r,
            json!({"action": "mediate", "note": "双方到场", "parties": ["张", "王"]}),
            &staff,
        )
        .unwrap();
        act(
            &cases,
            &r,
            json!({"action": "agree", "note": "签订调解协议"}),
            &staff,
        )
        .unwrap();
        act(&cases, &r, resolve, &staff).unwrap();
        assert!(
            matches!(act(&cases, &r, json!({"action": "close"}), &staff), Err(CaseError::Invalid(m)) if m.contains("visit")),
            "a dispute closes only after its follow-up visit"
        );
        act(
            &cases,
            &r,
            json!({"action": "visit", "note": "回访满意"}),
            &staff,
        )
        .unwrap();
        let c = act(&cases, &r, json!({"action": "close"}), &staff).unwrap();
        assert_eq!(c.status, "closed");
        assert_eq!(c.outcome.as_deref(), Some("agreement"));
        let steps: Vec<(&str, &str)> = c
            .history
            .iter()
            .map(|h| (h.action.as_str(), h.by.as_str()))
            .collect();
        assert_eq!(
            steps,
            [
                ("assign", "主任"),
                ("accept", "网格员李"),
                ("mediate", "网格员李"),
                ("agree", "网格员李"),
                ("resolve", "网格员李"),
                ("visit", "网格员李"),
                ("close", "网格员李"),
            ]
        );
        assert!(!c.is_open());
    }

    #[test]
    fn the_queue_reads_the_index_and_another_replicas_step_arrives_with_its_note() {
        // Two replicas on one shared state: each with its own index.
        let state = MemoryState::default();
        let a = Cases::open(&state, Clock::system()).unwrap();
        let at = OffsetDateTime::now_utc();
        let cases: Vec<Case> = (0..250)
            .map(|i| Case {
                station: Some(if i % 2 == 0 { "B11" } else { "B12" }.into()),
                ..Case::registered(
                    &format!("gw-1-{i:06}-AB"),
                    "gw-1",
                    json!({"category": if i % 5 == 0 { "dispute" } else { "report" }}),
                    at + time::Duration::seconds(i),
                )
            })
            .collect();
        assert_eq!(a.import(cases).unwrap(), 250);
        let b = Cases::open(&state, Clock::system()).unwrap();
        let boss = who("主任", Role::Supervisor, None);
        let staff = who("网格员李", Role::Operator, Some("B11"));
        let f = |v: Value| serde_json::from_value::<Filter>(v).unwrap();
        let (page, total) = b.query(&f(json!({"limit": 10})), &boss, &places()).unwrap();
        assert_eq!(total, 250);
        assert_eq!(page[0].receipt, "gw-1-000249-AB", "newest first");
        let (next, _) = b
            .query(
                &f(json!({"limit": 10, "before": "gw-1-000240-AB"})),
                &boss,
                &places(),
            )
            .unwrap();
        assert_eq!(next[0].receipt, "gw-1-000239-AB", "the page after");
        let (_, mine) = b.query(&f(json!({})), &staff, &places()).unwrap();
        assert_eq!(mine, 125, "a station's own only");
        let (_, disputes) = b
            .query(
                &f(json!({"category": "dispute", "grid": "B11"})),
                &boss,
                &places(),
            )
            .unwrap();
        assert_eq!(disputes, 25);
        // Replica a assigns one; b's queue has it once b reads the note.
        act(
            &a,
            "gw-1-000010-AB",
            json!({"action": "assign", "station": "B11", "person": "网格员李"}),
            &boss,
        )
        .unwrap();
        let assigned = |c: &Cases| {
            c.query(&f(json!({"status": "assigned"})), &boss, &places())
                .unwrap()
                .1
        };
        assert_eq!((assigned(&a), assigned(&b)), (1, 0), "b has not heard yet");
        b.mirror("gw-1-000010-AB");
        assert_eq!(assigned(&b), 1);
    }

    #[test]
    fn the_actions_offered_follow_the_status_the_role_and_the_scope() {
        let (cases, r) = with_case("dispute");
        let boss = who("主任", Role::Supervisor, None);
        let staff = who("网格员李", Role::Operator, Some("B11"));
        let other = who("网格员王", Role::Operator, Some("B12"));
        let offered = |w: &Signed| workflow::available(&cases.get(&r).unwrap(), w, &places());
        let boss_sees = offered(&boss);
        assert!(
            boss_sees.contains(&"assign") && boss_sees.contains(&"supervise"),
            "{boss_sees:?}"
        );
        assert!(
            !boss_sees.contains(&"resolve") && !boss_sees.contains(&"receive"),
            "{boss_sees:?}"
        );
        let staff_sees = offered(&staff);
        assert!(
            !staff_sees.contains(&"assign") && !staff_sees.contains(&"accept"),
            "{staff_sees:?}"
        );
        assert!(
            staff_sees.contains(&"transfer") && staff_sees.contains(&"note"),
            "{staff_sees:?}"
        );
        assert!(
            offered(&other).is_empty(),
            "another station is offered nothing"
        );
        act(
            &cases,
            &r,
            json!({"action": "assign", "station": "B11", "person": "网格员李"}),
            &boss,
        )
        .unwrap();
        assert!(offered(&staff).contains(&"accept"));
        act(&cases, &r, json!({"action": "accept"}), &staff).unwrap();
        let now = offered(&staff);
        assert!(
            now.contains(&"mediate") && now.contains(&"refer"),
            "{now:?}"
        );
        assert!(
            !now.contains(&"agree") && !now.contains(&"resolve"),
            "{now:?}"
        );
        // Every action offered is taken when asked for with its fields.
        for name in now {
            let mut c = cases.get(&r).unwrap();
            let a: Action = serde_json::from_value(
                json!({"action": name, "note": "x", "to": "派出所", "department": "城管"}),
            )
            .unwrap();
            assert!(a.apply(&mut c, &staff, &places()).is_ok(), "{name}");
        }
    }

    #[test]
    fn an_application_follows_the_catalogues_steps_and_a_refusal_needs_a_reason() {
        let (cases, r) = with_case("application");
        let op = who("窗口", Role::Operator, Some("A1"));
        assert!(matches!(
            act(&cases, &r, json!({"action": "accept"}), &op),
            Err(CaseError::Invalid(m)) if m.contains("not an action for application")
        ));
        act(&cases, &r, json!({"action": "receive"}), &op).unwrap();
        act(
            &cases,
            &r,
            json!({"action": "review", "note": "材料齐全"}),
            &op,
        )
        .unwrap();
        assert!(matches!(
            act(&cases, &r, json!({"action": "decide", "approved": false}), &op),
            Err(CaseError::Invalid(m)) if m.contains("reason")
        ));
        let c = act(
            &cases,
            &r,
            json!({"action": "decide", "approved": false, "reason": "不符合条件"}),
            &op,
        )
        .unwrap();
        assert_eq!(
            (c.status.as_str(), c.outcome.as_deref()),
            ("decided", Some("refused"))
        );
        assert!(c.is_open(), "decided is not yet delivered");
        act(&cases, &r, json!({"action": "deliver"}), &op).unwrap();
        assert_eq!(
            act(&cases, &r, json!({"action": "close"}), &op)
                .unwrap()
                .status,
            "closed"
        );
    }

    #[test]
    fn scope_and_role_hold_an_operator_to_their_own() {
        let (cases, r) = with_case("report");
        let other_station = who("别站", Role::Supervisor, Some("B12"));
        let staff = who("本站", Role::Operator, Some("B11"));
        let unknown = who("无名", Role::Administrator, Some("nowhere"));
        assert!(matches!(
            act(
                &cases,
                &r,
                json!({"action": "note", "note": "看看"}),
                &other_station
            ),
            Err(CaseError::Forbidden(_))
        ));
        assert!(matches!(
            act(
                &cases,
                &r,
                json!({"action": "note", "note": "看看"}),
                &unknown
            ),
            Err(CaseError::Forbidden(_))
        ));
        assert!(
            matches!(
                act(&cases, &r, json!({"action": "assign", "station": "B11", "person": "我"}), &staff),
                Err(CaseError::Forbidden(m)) if m.contains("supervisors")
            ),
            "station staff do not assign"
        );
        let community = who("社区", Role::Supervisor, Some("A1"));
        assert!(
            matches!(
                act(&cases, &r, json!({"action": "assign", "station": "S", "person": "x"}), &community),
                Err(CaseError::Invalid(m)) if m.contains("not a base grid")
            ),
            "only a base grid is a station"
        );
        act(
            &cases,
            &r,
            json!({"action": "assign", "station": "B12", "person": "x"}),
            &community,
        )
        .unwrap();
        assert!(
            matches!(
                act(&cases, &r, json!({"action": "accept"}), &staff),
                Err(CaseError::Forbidden(_))
            ),
            "reassigned away from the station: out of its reach"
        );
        let b12 = who("B12站", Role::Operator, Some("B12"));
        act(
            &cases,
            &r,
            json!({"action": "report_up", "note": "需街道协调"}),
            &b12,
        )
        .unwrap();
        assert!(
            matches!(
                act(&cases, &r, json!({"action": "accept"}), &b12),
                Err(CaseError::Forbidden(m)) if m.contains("street")
            ),
            "the street works a case reported up"
        );
        let street = who("街道", Role::Supervisor, Some("S"));
        let c = act(
            &cases,
            &r,
            json!({"action": "supervise", "note": "限期办结"}),
            &street,
        )
        .unwrap();
        assert_eq!((c.status.as_str(), c.supervised), ("reported", 1));
        assert!(cases.get(&r).unwrap().at_street);
        let bad: Result<Action, _> = serde_json::from_value(json!({"action": "delete"}));
        assert!(bad.is_err(), "no such action");
    }

    #[test]
    fn two_operators_acting_at_once_lose_neither_step() {
        let (cases, r) = with_case("report");
        let cases = Arc::new(cases);
        let boss = who("主任", Role::Supervisor, None);
        act(
            &cases,
            &r,
            json!({"action": "assign", "station": "B11", "person": "李"}),
            &boss,
        )
        .unwrap();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (cases, r, boss) = (cases.clone(), r.clone(), boss.clone());
                std::thread::spawn(move || {
                    for j in 0..10 {
                        let a = json!({"action": "note", "note": format!("{i}-{j}")});
                        loop {
                            match act(&cases, &r, a.clone(), &boss) {
                                Ok(_) => break,
                                Err(CaseError::Busy(_)) => continue,
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(cases.get(&r).unwrap().history.len(), 1 + 80);
    }

    #[test]
    fn a_reminder_goes_once_and_only_for_owned_gateways() {
        let (cases, r) = with_case("report");
        let mut c = cases.get(&r).unwrap();
        let now = OffsetDateTime::now_utc();
        c.remind_at = Some(now - time::Duration::minutes(1));
        c.due = Some(now + time::Duration::hours(8));
        cases.put(&c).unwrap();
        assert!(cases.remind(now, |_| false).is_empty(), "another replica's");
        assert_eq!(cases.remind(now, |_| true).len(), 1);
        assert!(cases.remind(now, |_| true).is_empty(), "once");
        let c = cases.get(&r).unwrap();
        assert_eq!(c.history.last().unwrap().action, "remind");
        assert!(!c.is_overdue(cases.fallback(), now));
        assert!(c.is_overdue(cases.fallback(), now + time::Duration::hours(9)));
    }

    #[test]
    fn a_case_gets_its_deadline_in_working_days_from_the_master_data() {
        use firmware_config::masterdata::{CaseLimit, CaseRules};
        let cases = Cases::open(&MemoryState::default(), Clock::system())
            .unwrap()
            .with_policy(time::macros::offset!(+8), Duration::from_secs(3600));
        let data = Dataset {
            cases: CaseRules {
                calendar: Vec::new(),
                limits: vec![CaseLimit {
                    category: "dispute".into(),
                    working_days: 10,
                    remind_days: 2,
                }],
            },
            ..Default::default()
        };
        // Monday 9:00 in the street: ten working days end on the Monday two weeks on.
        let at = time::macros::datetime!(2026-11-02 09:00 +8);
        let (due, remind) = cases.deadline_for(Some(&data), Category::Dispute, None, at);
        assert_eq!(due, Some(time::macros::datetime!(2026-11-17 00:00 +8)));
        assert_eq!(remind, Some(time::macros::datetime!(2026-11-12 00:00 +8)));
        let (due, _) = cases.deadline_for(Some(&data), Category::Report, None, at);
        assert_eq!(due, None, "no limit for reports: the fallback holds");
    }
}
