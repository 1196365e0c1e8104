//! A gateway's birth and last will, retained on its `status` topic.

use serde::{Deserialize, Serialize};

/// Birth and last-will message of a gateway, retained on its status topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub state: LinkState,
    /// Software version of the gateway.
    pub version: String,
    pub site: String,
    /// On `online`: the envelope sequence number of this session's last will — the one
    /// `offline` that central accepts although it is older than the birth message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub will_seq: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    Online,
    Offline,
}
