//! The event kinds GridEdge knows, in one place both services use: the gateway names what it
//! sends with [`Kind`], central reads what it stored with [`Kind::parse`], and [`CATALOGUE`]
//! says of each kind its class, who may originate it and what its payload carries.
//!
//! Kinds a source posts (`door.forced`, `sensor.state`) are free text, [`Kind::Other`]; the
//! families of the gateway's own kinds ([`GATEWAY_KIND_FAMILIES`]) no source may use.

use std::fmt;

use serde::Serialize;

use crate::wire::EventClass;

/// A camera's state, as the gateway reports it (`camera.<state>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CameraState {
    /// Opening an RTSP session.
    Connecting,
    /// Frames arrive.
    Streaming,
    /// The session was up but no frame came for the stall timeout; reconnecting.
    Stalled,
    /// Cannot connect, or the stream ended.
    Offline,
    /// The camera refused the credentials (retried slowly).
    Unauthorized,
    /// The camera offers no H.264/H.265 video.
    Unsupported,
    /// Disabled in the config.
    Disabled,
}

impl CameraState {
    pub const ALL: [CameraState; 7] = [
        CameraState::Connecting,
        CameraState::Streaming,
        CameraState::Stalled,
        CameraState::Offline,
        CameraState::Unauthorized,
        CameraState::Unsupported,
        CameraState::Disabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CameraState::Connecting => "connecting",
            CameraState::Streaming => "streaming",
            CameraState::Stalled => "stalled",
            CameraState::Offline => "offline",
            CameraState::Unauthorized => "unauthorized",
            CameraState::Unsupported => "unsupported",
            CameraState::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// States worth telling central about (connecting is a passing step).
    pub fn reportable(self) -> bool {
        !matches!(self, CameraState::Connecting)
    }

    /// States that raise an alert rather than a health event.
    pub fn alarming(self) -> bool {
        matches!(
            self,
            CameraState::Offline | CameraState::Unauthorized | CameraState::Stalled
        )
    }
}

/// A terminal's health state (`terminal.<state>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminalState {
    Unknown,
    Online,
    Degraded,
    Offline,
}

impl TerminalState {
    pub const ALL: [TerminalState; 4] = [
        TerminalState::Unknown,
        TerminalState::Online,
        TerminalState::Degraded,
        TerminalState::Offline,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TerminalState::Unknown => "unknown",
            TerminalState::Online => "online",
            TerminalState::Degraded => "degraded",
            TerminalState::Offline => "offline",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// States that are alerts at central.
    pub fn alarming(self) -> bool {
        matches!(self, TerminalState::Degraded | TerminalState::Offline)
    }
}

/// What the gateway's sensing watches a camera's picture for (`camera.<rule>`, and
/// `camera.<rule>.cleared` when it is over).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SensingRule {
    Covered,
    Frozen,
    Moved,
    Motion,
}

impl SensingRule {
    pub const ALL: [SensingRule; 4] = [
        SensingRule::Covered,
        SensingRule::Frozen,
        SensingRule::Moved,
        SensingRule::Motion,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SensingRule::Covered => "covered",
            SensingRule::Frozen => "frozen",
            SensingRule::Moved => "moved",
            SensingRule::Motion => "motion",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// An event kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `camera.<state>`.
    Camera(CameraState),
    /// `camera.<rule>`, or `camera.<rule>.cleared`.
    Sensing { rule: SensingRule, cleared: bool },
    /// `terminal.<state>`.
    Terminal(TerminalState),
    /// `terminal.flapping`, or `terminal.flapping.cleared`.
    TerminalFlapping { cleared: bool },
    /// `config.applied`: a signed bundle in force.
    ConfigApplied,
    /// `config.refused`: a bundle refused, and why.
    ConfigRefused,
    /// `config.rolled_back`: a gateway bundle central did not confirm in time, undone.
    ConfigRolledBack,
    /// `gateway.outbox_quarantined`: a damaged outbox moved aside at start.
    OutboxQuarantined,
    /// `submission.created`: a resident's submission taken at a kiosk.
    SubmissionCreated,
    /// `meeting.answer`: a terminal's answer to an invitation.
    MeetingAnswer,
    /// Anything else: a kind a source posts, or one this build does not know.
    Other(String),
}

impl Kind {
    /// The kind `name` stands for.
    pub fn parse(name: &str) -> Kind {
        let known = match name {
            "terminal.flapping" => Some(Kind::TerminalFlapping { cleared: false }),
            "terminal.flapping.cleared" => Some(Kind::TerminalFlapping { cleared: true }),
            "config.applied" => Some(Kind::ConfigApplied),
            "config.refused" => Some(Kind::ConfigRefused),
            "config.rolled_back" => Some(Kind::ConfigRolledBack),
            "gateway.outbox_quarantined" => Some(Kind::OutboxQuarantined),
            "submission.created" => Some(Kind::SubmissionCreated),
            "meeting.answer" => Some(Kind::MeetingAnswer),
            _ => None,
        };
        if let Some(k) = known {
            return k;
        }
        if let Some(what) = name.strip_prefix("camera.") {
            if let Some(state) = CameraState::parse(what) {
                return Kind::Camera(state);
            }
            let (rule, cleared) = match what.strip_suffix(".cleared") {
                Some(r) => (r, true),
                None => (what, false),
            };
            if let Some(rule) = SensingRule::parse(rule) {
                return Kind::Sensing { rule, cleared };
            }
        }
        if let Some(state) = name
            .strip_prefix("terminal.")
            .and_then(TerminalState::parse)
        {
            return Kind::Terminal(state);
        }
        Kind::Other(name.to_owned())
    }

    /// The class an event of this kind goes in; `None` for [`Kind::Other`] (its sender says).
    pub fn class(&self) -> Option<EventClass> {
        Some(match self {
            Kind::Camera(s) if s.alarming() => EventClass::Alert,
            Kind::Camera(_) => EventClass::Health,
            Kind::Sensing { cleared, .. } | Kind::TerminalFlapping { cleared } => {
                if *cleared {
                    EventClass::Health
                } else {
                    EventClass::Alert
                }
            }
            Kind::Terminal(s) if s.alarming() => EventClass::Alert,
            Kind::Terminal(_) => EventClass::Health,
            Kind::ConfigApplied
            | Kind::ConfigRefused
            | Kind::ConfigRolledBack
            | Kind::OutboxQuarantined => EventClass::Alert,
            Kind::SubmissionCreated => EventClass::Submission,
            Kind::MeetingAnswer => EventClass::Health,
            Kind::Other(_) => return None,
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Camera(s) => write!(f, "camera.{}", s.as_str()),
            Kind::Sensing { rule, cleared } => {
                write!(f, "camera.{}", rule.as_str())?;
                if *cleared {
                    f.write_str(".cleared")?;
                }
                Ok(())
            }
            Kind::Terminal(s) => write!(f, "terminal.{}", s.as_str()),
            Kind::TerminalFlapping { cleared: false } => f.write_str("terminal.flapping"),
            Kind::TerminalFlapping { cleared: true } => f.write_str("terminal.flapping.cleared"),
            Kind::ConfigApplied => f.write_str("config.applied"),
            Kind::ConfigRefused => f.write_str("config.refused"),
            Kind::ConfigRolledBack => f.write_str("config.rolled_back"),
            Kind::OutboxQuarantined => f.write_str("gateway.outbox_quarantined"),
            Kind::SubmissionCreated => f.write_str("submission.created"),
            Kind::MeetingAnswer => f.write_str("meeting.answer"),
            Kind::Other(s) => f.write_str(s),
        }
    }
}

/// Who may originate an event of a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Originator {
    /// The gateway itself: no source may post it, and central believes it only from the
    /// gateway.
    Gateway,
    /// Any event source of the gateway (`[[sources]]`, within the kinds it names).
    Source,
}

/// One entry of the catalogue: a kind (with `<state>`/`<rule>` standing for each value), its
/// class, who may originate it and what its payload carries.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub kind: &'static str,
    pub class: &'static str,
    pub origin: Originator,
    pub payload: &'static str,
}

/// Every kind the gateway originates, as docs/topics.md lists them.
pub const CATALOGUE: &[Entry] = &[
    Entry {
        kind: "camera.<state>",
        class: "alert (stalled, offline, unauthorized) or health",
        origin: Originator::Gateway,
        payload: "camera, name, state, previous, error",
    },
    Entry {
        kind: "camera.<rule>[.cleared]",
        class: "alert when raised, health when cleared",
        origin: Originator::Gateway,
        payload: "camera, name, rule, zone, state, at, measure, snapshot, snapshot_path",
    },
    Entry {
        kind: "terminal.<state>",
        class: "alert (degraded, offline) or health",
        origin: Originator::Gateway,
        payload: "terminal, name, kind, state, previous, reasons",
    },
    Entry {
        kind: "terminal.flapping[.cleared]",
        class: "alert when raised, health when cleared",
        origin: Originator::Gateway,
        payload: "terminal, name, kind, state, changes or reasons",
    },
    Entry {
        kind: "config.applied",
        class: "alert",
        origin: Originator::Gateway,
        payload: "target, version, note",
    },
    Entry {
        kind: "config.refused",
        class: "alert",
        origin: Originator::Gateway,
        payload: "reason, claimed_target, claimed_version",
    },
    Entry {
        kind: "config.rolled_back",
        class: "alert",
        origin: Originator::Gateway,
        payload: "target, version, back_to, reason, failed",
    },
    Entry {
        kind: "gateway.outbox_quarantined",
        class: "alert",
        origin: Originator::Gateway,
        payload: "moved_to, reason, salvaged",
    },
    Entry {
        kind: "submission.created",
        class: "submission",
        origin: Originator::Gateway,
        payload: "the submission (category, title, description, contact, item_code, grid, location), terminal, check",
    },
    Entry {
        kind: "meeting.answer",
        class: "health",
        origin: Originator::Gateway,
        payload: "meeting, revision, terminal, answer",
    },
    Entry {
        kind: "any other (e.g. door.forced, sensor.state)",
        class: "as posted",
        origin: Originator::Source,
        payload: "as posted",
    },
];

/// The families of event kinds only the gateway itself originates: no event source may post
/// them, and central believes them only from the gateway.
pub const GATEWAY_KIND_FAMILIES: [&str; 9] = [
    "camera.",
    "terminal.",
    "config.",
    "submission.",
    "meeting.",
    "gateway.",
    "video.",
    "kiosk.",
    "content.",
];

/// Whether `kind` is one of the gateway's own (see [`GATEWAY_KIND_FAMILIES`]).
pub fn is_gateway_kind(kind: &str) -> bool {
    GATEWAY_KIND_FAMILIES.iter().any(|f| kind.starts_with(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_known_kind() -> Vec<Kind> {
        let mut all: Vec<Kind> = CameraState::ALL.into_iter().map(Kind::Camera).collect();
        for rule in SensingRule::ALL {
            for cleared in [false, true] {
                all.push(Kind::Sensing { rule, cleared });
            }
        }
        all.extend(TerminalState::ALL.into_iter().map(Kind::Terminal));
        all.extend([
            Kind::TerminalFlapping { cleared: false },
            Kind::TerminalFlapping { cleared: true },
            Kind::ConfigApplied,
            Kind::ConfigRefused,
            Kind::ConfigRolledBack,
            Kind::OutboxQuarantined,
            Kind::SubmissionCreated,
            Kind::MeetingAnswer,
        ]);
        all
    }

    #[test]
    fn every_kind_reads_back_as_itself_and_is_the_gateways_own() {
        for k in every_known_kind() {
            let name = k.to_string();
            assert_eq!(Kind::parse(&name), k, "{name}");
            assert!(is_gateway_kind(&name), "{name}");
            assert!(k.class().is_some(), "{name}");
        }
        // A source's kinds stay as they are, and are not the gateway's.
        for name in ["door.forced", "sensor.state", "camera", "camera.exploded"] {
            assert_eq!(Kind::parse(name), Kind::Other(name.to_owned()));
        }
        assert!(!is_gateway_kind("door.forced"));
    }

    #[test]
    fn the_catalogue_names_every_family_the_gateway_sends() {
        for k in every_known_kind() {
            let name = k.to_string();
            let family = name.split('.').next().unwrap_or_default();
            assert!(
                CATALOGUE
                    .iter()
                    .any(|e| e.origin == Originator::Gateway && e.kind.starts_with(family)),
                "{name}"
            );
        }
    }
}
