//! Cases made from residents' submissions. Each `submission.created` event central stores
//! becomes a case (once: its receipt `<gateway>-<seq>-<check>` is the event's identity, the
//! check code coming from the event), routed to the
//! grid it concerns — to the grid's station and its grid leader (网格长) when the master data
//! knows them, else to the street. Every status change goes back to the gateway, where the
//! kiosk can ask for it by receipt.

use std::sync::Arc;

use firmware_config::ids::GatewayId;
use firmware_config::runtime::clock::Clock;
use firmware_config::topics::Channel;
use firmware_config::wire::{Command, Event, Message};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::masterdata::MasterData;
use crate::state::{StateError, StateStore, Table};

/// Statuses an operator may set.
pub const STATUSES: [&str; 3] = ["in_progress", "resolved", "closed"];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub status: String,
    pub by: String,
    pub note: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Case {
    pub receipt: String,
    pub gateway: String,
    pub submission: Value,
    pub status: String,
    /// The grid it was routed to, and who answers for it there.
    pub station: Option<String>,
    pub station_name: Option<String>,
    pub assignee: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    pub history: Vec<HistoryEntry>,
}

pub struct Cases {
    tree: Arc<dyn Table>,
    /// Stamps cases and their history.
    clock: Clock,
}

/// Why an operator's change of a case was not taken.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    /// A field of the request is wrong; the message names it.
    #[error("{0}")]
    Invalid(String),
    #[error("no case {0:?}")]
    NotFound(String),
    #[error("cases store: {0}")]
    Store(#[from] StateError),
    #[error("cases store: {0}")]
    Encode(#[from] serde_json::Error),
}

impl Cases {
    pub fn open(state: &dyn StateStore, clock: Clock) -> Result<Self, CaseError> {
        Ok(Self {
            tree: state.table("cases")?,
            clock,
        })
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

    fn put(&self, c: &Case) -> Result<(), CaseError> {
        self.tree
            .insert(c.receipt.as_bytes(), serde_json::to_vec(c)?)?;
        self.tree.flush()?;
        Ok(())
    }

    /// Makes cases of the submissions among stored events (again: nothing), routed by the
    /// grids of `masterdata`; returns the new ones. Blocking.
    pub fn observe(&self, masterdata: &MasterData, gateway: &str, events: &[Event]) -> Vec<Case> {
        let mut new = Vec::new();
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
                masterdata
                    .current()
                    .and_then(|v| v.dataset.grids.iter().find(|x| x.code == g).cloned())
            });
            let assignee = grid.as_ref().and_then(|g| {
                g.staff
                    .iter()
                    .find(|s| s.role == "网格长")
                    .or(g.staff.first())
                    .map(|s| format!("{} ({}, {})", s.name, s.role, s.duty_phone))
            });
            let case = Case {
                receipt: receipt.clone(),
                gateway: gateway.to_owned(),
                status: "routed".to_owned(),
                station_name: grid.as_ref().map(|g| g.name.clone()),
                station,
                assignee,
                created: self.clock.now_utc(),
                history: vec![HistoryEntry {
                    status: "routed".to_owned(),
                    by: "central".to_owned(),
                    note: "received and routed to the grid's station".to_owned(),
                    at: self.clock.now_utc(),
                }],
                submission,
            };
            match self.put(&case) {
                Ok(()) => new.push(case),
                Err(e) => tracing::error!(%receipt, error = %e, "cannot store a case"),
            }
        }
        new
    }

    /// An operator's change of status; returns the case.
    pub fn set_status(
        &self,
        receipt: &str,
        status: &str,
        by: &str,
        note: &str,
    ) -> Result<Case, CaseError> {
        if !STATUSES.contains(&status) {
            return Err(CaseError::Invalid(format!(
                "status: {status:?}; use {}",
                STATUSES.join(", ")
            )));
        }
        let mut c = self
            .get(receipt)
            .ok_or_else(|| CaseError::NotFound(receipt.to_owned()))?;
        c.status = status.to_owned();
        c.history.push(HistoryEntry {
            status: status.to_owned(),
            by: by.to_owned(),
            note: note.to_owned(),
            at: self.clock.now_utc(),
        });
        self.put(&c)?;
        Ok(c)
    }
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
        "category": c.submission["category"],
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
