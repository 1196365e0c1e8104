//! Meetings dispatched to centres' terminals (remote petition reception, online inspection,
//! command dispatch): booked at central, sent to each invited terminal's gateway as a
//! `meeting.invite` command (queued by the broker while the gateway is away), sent again on
//! every change, and followed by the terminals' answers (`meeting.answer` events).

use std::sync::Arc;

use firmware_config::ids::GatewayId;
use firmware_config::topics::Channel;
use firmware_config::wire::{
    Command, Event, Invitation, MeetingAnswer, MeetingKind, MeetingPlan, Message,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::state::{StateError, StateStore, Table};
use crate::Shared;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitee {
    pub gateway: String,
    pub terminal: String,
    /// `invited`, then the terminal's answer: `accepted`, `declined`, `joined`, `left`.
    pub state: String,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub answered: Option<OffsetDateTime>,
    /// Whether it joined at some point (the roll call).
    #[serde(default)]
    pub attended: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meeting {
    pub id: String,
    #[serde(flatten)]
    pub plan: MeetingPlan,
    pub invitees: Vec<Invitee>,
    pub revision: u32,
    pub cancelled: bool,
    pub history: Vec<crate::alerts::engine::AuditEntry>,
}

/// A booking, as the API takes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Booking {
    pub kind: String,
    pub title: String,
    #[serde(with = "time::serde::rfc3339")]
    pub starts: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub ends: OffsetDateTime,
    pub room: String,
    pub invitees: Vec<InviteeRef>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InviteeRef {
    pub gateway: String,
    pub terminal: String,
}

pub struct Meetings {
    tree: std::sync::Arc<dyn Table>,
    lock: std::sync::Mutex<()>,
}

/// Why a booking or a change was not taken.
#[derive(Debug, thiserror::Error)]
pub enum MeetingError {
    /// A field of the request is wrong; the message names it.
    #[error("{0}")]
    Invalid(String),
    #[error("no meeting {0:?}")]
    NotFound(String),
    #[error("meeting {0:?} was cancelled")]
    Cancelled(String),
    #[error("meetings store: {0}")]
    Store(#[from] StateError),
    #[error("meetings store: {0}")]
    Encode(#[from] serde_json::Error),
}

fn invalid(m: impl Into<String>) -> MeetingError {
    MeetingError::Invalid(m.into())
}

fn check_times(
    starts: OffsetDateTime,
    ends: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<(), MeetingError> {
    if ends <= starts {
        return Err(invalid("ends must come after starts"));
    }
    if ends <= now {
        return Err(invalid("the meeting would already be over"));
    }
    if ends - starts > time::Duration::hours(24) {
        return Err(invalid("a meeting lasts at most 24 hours"));
    }
    Ok(())
}

impl Meetings {
    pub fn open(state: &dyn StateStore) -> Result<Self, MeetingError> {
        Ok(Self {
            tree: state.table("meetings")?,
            lock: std::sync::Mutex::new(()),
        })
    }

    pub fn get(&self, id: &str) -> Option<Meeting> {
        serde_json::from_slice(&self.tree.get(id.as_bytes()).ok()??).ok()
    }

    /// Every meeting, soonest first.
    pub fn list(&self) -> Vec<Meeting> {
        let mut v: Vec<Meeting> = self
            .tree
            .scan(b"")
            .filter_map(|e| e.ok().and_then(|(_, v)| serde_json::from_slice(&v).ok()))
            .collect();
        v.sort_by_key(|m| m.plan.starts);
        v
    }

    fn put(&self, m: &Meeting) -> Result<(), MeetingError> {
        self.tree.insert(m.id.as_bytes(), serde_json::to_vec(m)?)?;
        self.tree.flush()?;
        Ok(())
    }

    /// Checks and stores a booking; blocking.
    pub fn book(&self, b: Booking, by: &str, now: OffsetDateTime) -> Result<Meeting, MeetingError> {
        if MeetingKind::parse(&b.kind).is_none() {
            let kinds: Vec<&str> = MeetingKind::ALL.iter().map(|k| k.as_str()).collect();
            return Err(invalid(format!(
                "kind: {:?} is not one of {}",
                b.kind,
                kinds.join(", ")
            )));
        }
        let title = b.title.trim();
        if title.is_empty() || title.chars().count() > 100 {
            return Err(invalid("title: 1 to 100 characters"));
        }
        if b.room.trim().is_empty() || b.room.len() > 500 {
            return Err(invalid(
                "room: the conference room or join link, 1 to 500 bytes",
            ));
        }
        check_times(b.starts, b.ends, now)?;
        if b.invitees.is_empty() || b.invitees.len() > 500 {
            return Err(invalid("invitees: 1 to 500 terminals"));
        }
        let mut invitees: Vec<Invitee> = Vec::new();
        for (i, r) in b.invitees.iter().enumerate() {
            if GatewayId::new(r.gateway.clone()).is_err() || r.terminal.trim().is_empty() {
                return Err(invalid(format!(
                    "invitees[{i}]: a gateway id and a terminal id"
                )));
            }
            if invitees
                .iter()
                .any(|x| x.gateway == r.gateway && x.terminal == r.terminal)
            {
                return Err(invalid(format!(
                    "invitees[{i}]: {}/{} twice",
                    r.gateway, r.terminal
                )));
            }
            invitees.push(Invitee {
                gateway: r.gateway.clone(),
                terminal: r.terminal.clone(),
                state: "invited".into(),
                answered: None,
                attended: false,
            });
        }
        let _one = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let id = format!("m{}", now.unix_timestamp_nanos() / 1_000_000);
        let id = if self.get(&id).is_some() {
            format!("{id}-{}", self.tree.len())
        } else {
            id
        };
        let m = Meeting {
            id,
            plan: MeetingPlan {
                kind: b.kind,
                title: title.to_owned(),
                starts: b.starts,
                ends: b.ends,
                room: b.room.trim().to_owned(),
            },
            invitees,
            revision: 1,
            cancelled: false,
            history: vec![entry(now, by, "booked", "")],
        };
        self.put(&m)?;
        Ok(m)
    }

    /// Moves a meeting (and/or its room), or cancels it; blocking.
    pub fn change(
        &self,
        id: &str,
        by: &str,
        f: impl FnOnce(&mut Meeting) -> Result<String, MeetingError>,
        now: OffsetDateTime,
    ) -> Result<Meeting, MeetingError> {
        let _one = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut m = self
            .get(id)
            .ok_or_else(|| MeetingError::NotFound(id.to_owned()))?;
        if m.cancelled {
            return Err(MeetingError::Cancelled(id.to_owned()));
        }
        let what = f(&mut m)?;
        m.revision += 1;
        m.history.push(entry(now, by, &what, ""));
        self.put(&m)?;
        Ok(m)
    }

    /// A terminal's answer, from its gateway's event.
    pub fn answered(&self, gateway: &str, e: &Event) -> Option<Meeting> {
        let p: serde_json::Value = serde_json::from_str(e.payload.get()).ok()?;
        let (meeting, terminal, answer) = (
            p.get("meeting")?.as_str()?,
            p.get("terminal")?.as_str()?,
            p.get("answer")?.as_str()?,
        );
        let _one = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut m = self.get(meeting)?;
        let inv = m
            .invitees
            .iter_mut()
            .find(|i| i.gateway == gateway && i.terminal == terminal)?;
        // Answers may arrive out of order after an outage: the newest wins.
        if inv.answered.is_some_and(|at| at > e.time) {
            return None;
        }
        inv.state = answer.to_owned();
        inv.answered = Some(e.time);
        inv.attended |= MeetingAnswer::parse(answer) == Some(MeetingAnswer::Joined);
        m.history
            .push(entry(e.time, &format!("{gateway}/{terminal}"), answer, ""));
        self.put(&m).ok()?;
        Some(m)
    }
}

fn entry(
    at: OffsetDateTime,
    by: &str,
    action: &str,
    note: &str,
) -> crate::alerts::engine::AuditEntry {
    crate::alerts::engine::AuditEntry {
        at,
        by: by.to_owned(),
        action: action.to_owned(),
        note: note.to_owned(),
    }
}

/// Sends the meeting as it is now to every invited terminal's gateway.
pub fn dispatch(shared: &Arc<Shared>, m: &Meeting) {
    for i in &m.invitees {
        let Ok(gw) = GatewayId::new(i.gateway.clone()) else {
            continue;
        };
        let inv = Invitation {
            meeting: m.id.clone(),
            revision: m.revision,
            terminal: i.terminal.clone(),
            plan: m.plan.clone(),
            cancelled: m.cancelled,
        };
        let Ok(args) = serde_json::to_value(&inv) else {
            continue;
        };
        let command = Message::Command(Command {
            id: format!("{}-{}-{}", m.id, m.revision, i.terminal),
            name: "meeting.invite".to_owned(),
            args,
        });
        if let Err(e) = shared.commands.publish(&gw, Channel::Cmd, command) {
            tracing::warn!(meeting = %m.id, gateway = %i.gateway, error = %e, "cannot send an invitation");
        }
    }
}

/// Checks new times for a meeting.
pub fn reschedule(
    m: &mut Meeting,
    starts: OffsetDateTime,
    ends: OffsetDateTime,
    room: Option<String>,
    now: OffsetDateTime,
) -> Result<String, MeetingError> {
    check_times(starts, ends, now)?;
    m.plan.starts = starts;
    m.plan.ends = ends;
    if let Some(r) = room.filter(|r| !r.trim().is_empty()) {
        m.plan.room = r.trim().to_owned();
    }
    Ok("rescheduled".into())
}
