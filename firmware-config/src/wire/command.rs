//! Commands central sends a gateway (`cmd`), their replies (`reply`), and the meeting
//! invitation a `meeting.invite` command carries.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A meeting as one invited terminal sees it: sent by central in a `meeting.invite` command to
/// the terminal's gateway, again on every change (a higher `revision`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    pub meeting: String,
    pub revision: u32,
    pub terminal: String,
    /// `petition` (remote petition reception), `inspection`, `dispatch`, `other`.
    pub kind: String,
    pub title: String,
    #[serde(with = "time::serde::rfc3339")]
    pub starts: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub ends: OffsetDateTime,
    /// The conference room or join link of the conferencing system.
    pub room: String,
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
