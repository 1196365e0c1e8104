//! Commands central sends a gateway (`cmd`), their replies (`reply`), and the meeting
//! invitation a `meeting.invite` command carries.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// What a meeting is for. Carried as its name (`Invitation::kind`), so that a gateway takes an
/// invitation of a kind newer than itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeetingKind {
    /// Remote petition reception (远程接访).
    Petition,
    /// Online inspection.
    Inspection,
    /// Command dispatch.
    Dispatch,
    Other,
}

impl MeetingKind {
    pub const ALL: [MeetingKind; 4] = [
        MeetingKind::Petition,
        MeetingKind::Inspection,
        MeetingKind::Dispatch,
        MeetingKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MeetingKind::Petition => "petition",
            MeetingKind::Inspection => "inspection",
            MeetingKind::Dispatch => "dispatch",
            MeetingKind::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A terminal's answer to an invitation (`meeting.answer` events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeetingAnswer {
    Accepted,
    Declined,
    /// In the meeting now: counts for the roll call.
    Joined,
    Left,
}

impl MeetingAnswer {
    pub const ALL: [MeetingAnswer; 4] = [
        MeetingAnswer::Accepted,
        MeetingAnswer::Declined,
        MeetingAnswer::Joined,
        MeetingAnswer::Left,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MeetingAnswer::Accepted => "accepted",
            MeetingAnswer::Declined => "declined",
            MeetingAnswer::Joined => "joined",
            MeetingAnswer::Left => "left",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// What a meeting is and when: the same at central (the booking kept) and at every invited
/// terminal (its invitation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingPlan {
    /// `petition` (remote petition reception), `inspection`, `dispatch`, `other`: a
    /// [`MeetingKind`] by name, so that a gateway takes a kind newer than itself.
    pub kind: String,
    pub title: String,
    #[serde(with = "time::serde::rfc3339")]
    pub starts: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub ends: OffsetDateTime,
    /// The conference room or join link of the conferencing system.
    pub room: String,
}

/// A meeting as one invited terminal sees it: sent by central in a `meeting.invite` command to
/// the terminal's gateway, again on every change (a higher `revision`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    pub meeting: String,
    pub revision: u32,
    pub terminal: String,
    #[serde(flatten)]
    pub plan: MeetingPlan,
    pub cancelled: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Unique id; the reply names it.
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub args: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandReply {
    pub id: String,
    pub ok: bool,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub data: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meeting_kinds_and_answers_read_back_by_name_and_nothing_else() {
        for k in MeetingKind::ALL {
            assert_eq!(MeetingKind::parse(k.as_str()), Some(k));
        }
        for a in MeetingAnswer::ALL {
            assert_eq!(MeetingAnswer::parse(a.as_str()), Some(a));
        }
        assert_eq!(MeetingKind::parse("party"), None);
        assert_eq!(MeetingAnswer::parse("Joined"), None);
    }
}
