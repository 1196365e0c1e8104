//! How a case moves: each action an operator takes, from which statuses, what it requires and
//! who may take it. Reports and disputes go registered → assigned → accepted → handling →
//! resolved → closed (a dispute through mediation, an agreement or a referral, and a follow-up
//! visit); applications follow the catalogue's steps 受理 → 审查 → 决定 → 送达. Any open case
//! may be transferred to a department or reported up to the street, and supervised (督办).

use serde::Deserialize;
use serde_json::{json, Value};

use crate::operators::{Role, Signed};

use super::{Case, Category};

/// An operator's action on a case, as the API takes it (`{"action": "assign", …}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// To a grid station (a base grid's code) and a person there.
    Assign {
        station: String,
        person: String,
        #[serde(default)]
        note: String,
    },
    /// The assignee takes it on (接单).
    Accept {
        #[serde(default)]
        note: String,
    },
    /// Progress in handling it.
    Handle {
        note: String,
    },
    /// A dispute's mediation session (调解).
    Mediate {
        note: String,
        #[serde(default)]
        parties: Vec<String>,
    },
    /// The dispute's parties agreed (调解协议).
    Agree {
        note: String,
    },
    /// The dispute goes to another body (人民调解委员会, 派出所, 法院 …).
    Refer {
        to: String,
        note: String,
    },
    /// The follow-up visit after a dispute is resolved (回访).
    Visit {
        note: String,
    },
    Resolve {
        note: String,
    },
    Close {
        #[serde(default)]
        note: String,
    },
    /// To a department outside the grid (转办).
    Transfer {
        department: String,
        note: String,
    },
    /// Up to the street (上报): only the street works it from then on.
    ReportUp {
        note: String,
    },
    /// A supervisor presses the case (督办): recorded, and its assignee is told.
    Supervise {
        note: String,
    },
    /// A remark in the case's history; the resident is not told.
    Note {
        note: String,
    },
    /// An application: 受理.
    Receive {
        #[serde(default)]
        note: String,
    },
    /// An application: 审查.
    Review {
        #[serde(default)]
        note: String,
    },
    /// An application: 决定, with the reason when refused.
    Decide {
        approved: bool,
        #[serde(default)]
        reason: String,
    },
    /// An application: 送达.
    Deliver {
        #[serde(default)]
        note: String,
    },
}

/// Why an action was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The request is wrong (a field, or the action in this status); the text says which.
    Invalid(String),
    /// The operator may not take it.
    Forbidden(String),
}

/// What an action did: the case's new status and what the history keeps of it.
#[derive(Debug, Clone)]
pub struct Step {
    pub action: &'static str,
    pub status: String,
    pub note: String,
    pub details: Value,
    /// Whether the resident is told (a status they can follow on the kiosk).
    pub tell_resident: bool,
}

const OPEN_REPORT: [&str; 6] = [
    "registered",
    "assigned",
    "accepted",
    "handling",
    "transferred",
    "reported",
];

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Assign { .. } => "assign",
            Action::Accept { .. } => "accept",
            Action::Handle { .. } => "handle",
            Action::Mediate { .. } => "mediate",
            Action::Agree { .. } => "agree",
            Action::Refer { .. } => "refer",
            Action::Visit { .. } => "visit",
            Action::Resolve { .. } => "resolve",
            Action::Close { .. } => "close",
            Action::Transfer { .. } => "transfer",
            Action::ReportUp { .. } => "report_up",
            Action::Supervise { .. } => "supervise",
            Action::Note { .. } => "note",
            Action::Receive { .. } => "receive",
            Action::Review { .. } => "review",
            Action::Decide { .. } => "decide",
            Action::Deliver { .. } => "deliver",
        }
    }

    /// Checks the action against the case and the operator and applies it to `c` (not yet
    /// stored); `places` answers which grids lie within which.
    pub fn apply(
        &self,
        c: &mut Case,
        who: &Signed,
        places: &dyn super::scope::Places,
    ) -> Result<Step, Refusal> {
        let invalid = |m: String| Err(Refusal::Invalid(m));
        let status = c.status.clone();
        let open = c.is_open();
        let category = c.category();
        let needs = |from: &[&str]| -> Result<(), Refusal> {
            if from.contains(&status.as_str()) {
                Ok(())
            } else {
                Err(Refusal::Invalid(format!(
                    "{}: not while the case is {status:?} (from {})",
                    self.name(),
                    from.join(", ")
                )))
            }
        };
        let text = |field: &str, v: &str, max: usize| -> Result<String, Refusal> {
            let v = v.trim();
            if v.is_empty() {
                Err(Refusal::Invalid(format!("{field}: required")))
            } else if v.chars().count() > max {
                Err(Refusal::Invalid(format!(
                    "{field}: at most {max} characters"
                )))
            } else {
                Ok(v.to_owned())
            }
        };
        let optional = |v: &str| -> Result<String, Refusal> {
            if v.chars().count() > 2000 {
                Err(Refusal::Invalid("note: at most 2000 characters".into()))
            } else {
                Ok(v.trim().to_owned())
            }
        };
        // Who may: the case within reach, supervisors for what only they do, and the street
        // alone once a case is reported up to it.
        if !places.reaches(who.scope.as_deref(), c.station.as_deref()) {
            return Err(Refusal::Forbidden("the case is outside your scope".into()));
        }
        let supervisor_only = matches!(self, Action::Assign { .. } | Action::Supervise { .. });
        if supervisor_only && who.role < Role::Supervisor {
            return Err(Refusal::Forbidden(format!(
                "{}: supervisors only",
                self.name()
            )));
        }
        if c.at_street
            && !places.is_street(who.scope.as_deref())
            && !matches!(self, Action::Note { .. })
        {
            return Err(Refusal::Forbidden(
                "the case was reported up to the street: the street works it now".into(),
            ));
        }
        let is_dispute = category == Category::Dispute;
        let is_application = category == Category::Application;
        let step = |action, status: &str, note: String, details: Value, tell: bool| Step {
            action,
            status: status.to_owned(),
            note,
            details,
            tell_resident: tell,
        };
        match self {
            Action::Assign {
                station,
                person,
                note,
            } => {
                if !open {
                    return invalid(format!("assign: the case is {status:?}"));
                }
                let station = text("station", station, 32)?;
                let person = text("person", person, 64)?;
                let Some(name) = places.base_grid_name(&station) else {
                    return invalid(format!("station: {station:?} is not a base grid"));
                };
                if !places.reaches(who.scope.as_deref(), Some(&station)) {
                    return Err(Refusal::Forbidden(format!(
                        "station: {station:?} is outside your scope"
                    )));
                }
                c.station = Some(station.clone());
                c.station_name = Some(name);
                c.assignee = Some(person.clone());
                c.at_street = false;
                // An application keeps its step; a report or dispute starts over with its
                // new assignee.
                let next = if is_application && status != "registered" {
                    status.as_str()
                } else {
                    "assigned"
                };
                Ok(step(
                    "assign",
                    next,
                    optional(note)?,
                    json!({"station": station, "person": person}),
                    true,
                ))
            }
            Action::Accept { note } if !is_application => {
                needs(&["assigned"])?;
                Ok(step(
                    "accept",
                    "accepted",
                    optional(note)?,
                    Value::Null,
                    true,
                ))
            }
            Action::Handle { note } if !is_application => {
                needs(&["accepted", "handling", "in_progress"])?;
                Ok(step(
                    "handle",
                    "handling",
                    text("note", note, 2000)?,
                    Value::Null,
                    true,
                ))
            }
            Action::Mediate { note, parties } if is_dispute => {
                needs(&["accepted", "handling"])?;
                if parties.len() > 20 || parties.iter().any(|p| p.chars().count() > 64) {
                    return invalid("parties: at most 20 names of 64 characters".into());
                }
                c.mediations += 1;
                Ok(step(
                    "mediate",
                    "handling",
                    text("note", note, 2000)?,
                    json!({"session": c.mediations, "parties": parties}),
                    true,
                ))
            }
            Action::Agree { note } if is_dispute => {
                needs(&["handling"])?;
                if c.mediations == 0 {
                    return invalid("agree: record a mediation session first".into());
                }
                c.outcome = Some("agreement".into());
                Ok(step(
                    "agree",
                    "handling",
                    text("note", note, 2000)?,
                    Value::Null,
                    true,
                ))
            }
            Action::Refer { to, note } if is_dispute => {
                needs(&["accepted", "handling"])?;
                let to = text("to", to, 64)?;
                c.outcome = Some(format!("referral: {to}"));
                Ok(step(
                    "refer",
                    "handling",
                    text("note", note, 2000)?,
                    json!({"to": to}),
                    true,
                ))
            }
            Action::Resolve { note } if !is_application => {
                needs(&[
                    "accepted",
                    "handling",
                    "transferred",
                    "reported",
                    "in_progress",
                ])?;
                if is_dispute && c.outcome.is_none() {
                    return invalid(
                        "resolve: a dispute needs an agreement or a referral first".into(),
                    );
                }
                Ok(step(
                    "resolve",
                    "resolved",
                    text("note", note, 2000)?,
                    Value::Null,
                    true,
                ))
            }
            Action::Visit { note } if is_dispute => {
                needs(&["resolved"])?;
                c.visited = true;
                Ok(step(
                    "visit",
                    "resolved",
                    text("note", note, 2000)?,
                    Value::Null,
                    true,
                ))
            }
            Action::Close { note } => {
                if is_application {
                    needs(&["delivered"])?;
                } else {
                    needs(&["resolved"])?;
                    if is_dispute && !c.visited {
                        return invalid("close: a dispute needs its follow-up visit first".into());
                    }
                }
                Ok(step("close", "closed", optional(note)?, Value::Null, true))
            }
            Action::Transfer { department, note } => {
                if !open || status == "transferred" {
                    return invalid(format!("transfer: not while the case is {status:?}"));
                }
                let department = text("department", department, 64)?;
                c.department = Some(department.clone());
                Ok(step(
                    "transfer",
                    "transferred",
                    text("note", note, 2000)?,
                    json!({"department": department}),
                    true,
                ))
            }
            Action::ReportUp { note } => {
                if !open || c.at_street {
                    return invalid(format!("report_up: not while the case is {status:?}"));
                }
                c.at_street = true;
                Ok(step(
                    "report_up",
                    "reported",
                    text("note", note, 2000)?,
                    Value::Null,
                    true,
                ))
            }
            Action::Supervise { note } => {
                if !open {
                    return invalid(format!("supervise: the case is {status:?}"));
                }
                c.supervised += 1;
                Ok(step(
                    "supervise",
                    &status,
                    text("note", note, 2000)?,
                    json!({"times": c.supervised}),
                    false,
                ))
            }
            Action::Note { note } => Ok(step(
                "note",
                &status,
                text("note", note, 2000)?,
                Value::Null,
                false,
            )),
            Action::Receive { note } if is_application => {
                needs(&["registered", "assigned", "transferred", "reported"])?;
                Ok(step(
                    "receive",
                    "received",
                    optional(note)?,
                    Value::Null,
                    true,
                ))
            }
            Action::Review { note } if is_application => {
                needs(&["received"])?;
                Ok(step(
                    "review",
                    "reviewing",
                    optional(note)?,
                    Value::Null,
                    true,
                ))
            }
            Action::Decide { approved, reason } if is_application => {
                needs(&["reviewing"])?;
                let reason = if *approved {
                    optional(reason)?
                } else {
                    text("reason", reason, 2000)?
                };
                c.outcome = Some(if *approved { "approved" } else { "refused" }.into());
                Ok(step(
                    "decide",
                    "decided",
                    reason,
                    json!({"approved": approved}),
                    true,
                ))
            }
            Action::Deliver { note } if is_application => {
                needs(&["decided"])?;
                Ok(step(
                    "deliver",
                    "delivered",
                    optional(note)?,
                    Value::Null,
                    true,
                ))
            }
            other => invalid(format!(
                "{}: not an action for {}",
                other.name(),
                category.as_str()
            )),
        }
    }
}

/// Whether a status leaves the case open (to be worked, counted against its time).
pub fn is_open_status(category: Category, status: &str) -> bool {
    match category {
        Category::Application => !matches!(status, "closed" | "delivered"),
        _ => OPEN_REPORT.contains(&status) || matches!(status, "routed" | "in_progress"),
    }
}

/// The actions `who` may take on `c` now, by name, so that a console offers only those. Each
/// is tried on a copy with placeholder fields: the one table of rules above decides, and the
/// console never keeps a second copy of them.
pub fn available(c: &Case, who: &Signed, places: &dyn super::scope::Places) -> Vec<&'static str> {
    let filled = || "·".to_owned();
    let probes = [
        Action::Assign {
            station: c.station.clone().unwrap_or_default(),
            person: filled(),
            note: String::new(),
        },
        Action::Accept {
            note: String::new(),
        },
        Action::Handle { note: filled() },
        Action::Mediate {
            note: filled(),
            parties: Vec::new(),
        },
        Action::Agree { note: filled() },
        Action::Refer {
            to: filled(),
            note: filled(),
        },
        Action::Resolve { note: filled() },
        Action::Visit { note: filled() },
        Action::Close {
            note: String::new(),
        },
        Action::Transfer {
            department: filled(),
            note: filled(),
        },
        Action::ReportUp { note: filled() },
        Action::Supervise { note: filled() },
        Action::Note { note: filled() },
        Action::Receive {
            note: String::new(),
        },
        Action::Review {
            note: String::new(),
        },
        Action::Decide {
            approved: true,
            reason: String::new(),
        },
        Action::Deliver {
            note: String::new(),
        },
    ];
    probes
        .iter()
        .filter(|a| match a.apply(&mut c.clone(), who, places) {
            Ok(_) => true,
            // A case not yet routed to a station: a supervisor who reaches it picks one.
            Err(Refusal::Invalid(m)) => {
                matches!(a, Action::Assign { .. })
                    && c.station.is_none()
                    && m.starts_with("station")
            }
            Err(Refusal::Forbidden(_)) => false,
        })
        .map(Action::name)
        .collect()
}
