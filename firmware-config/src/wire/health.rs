//! A gateway's periodic report on itself (`health`).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A gateway's periodic report on itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayHealth {
    pub version: String,
    pub site: String,
    pub uptime_secs: u64,
    pub cameras_configured: u32,
    pub terminals_configured: u32,
    /// The state of the gateway's outbox, including what it had to evict.
    #[serde(default)]
    pub outbox: Option<OutboxReport>,
    /// Every terminal by state: a compact summary, so that central sees all of them even when
    /// a state change was evicted from the outbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminals: Option<TerminalsSummary>,
    /// The configuration bundles in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigVersions>,
    /// The master data replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masterdata: Option<ReplicaReport>,
    /// When the gateway's client certificate expires (so that central warns before it does).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub certificate_expires: Option<OffsetDateTime>,
}

/// What a gateway's master data replica holds, so that central knows what to send.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaReport {
    /// 0: nothing yet.
    pub version: u64,
    pub hash: String,
    /// The grid areas the centre serves (its scope; empty: the whole street).
    #[serde(default)]
    pub areas: Vec<String>,
    /// Set after a gap or damage: only a snapshot will do.
    #[serde(default)]
    pub need_snapshot: bool,
}

/// Terminal ids by health state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalsSummary {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub online: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub degraded: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offline: Vec<String>,
    /// Not heard from since the gateway started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown: Vec<String>,
    /// Flapping terminals (also listed under their current state).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flapping: Vec<String>,
}

/// Versions of the signed bundles a gateway has applied (0: none, the config file rules).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigVersions {
    pub gateway: u64,
    /// Whether central has confirmed the gateway's bundle (until then it may roll back).
    #[serde(default)]
    pub confirmed: bool,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub terminals: std::collections::BTreeMap<String, u64>,
}

/// What a gateway's outbox holds and what it dropped, as reported to central.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxReport {
    pub pending: u64,
    pub pending_bytes: u64,
    /// Events evicted to keep the disk budget, by class name, since the store was created.
    pub evicted: std::collections::BTreeMap<String, u64>,
    /// Events refused because only alerts and submissions were left.
    pub refused: u64,
    /// Stored records that failed their checksum.
    pub corrupt: u64,
    /// The disk under the store (absent from gateways that do not report it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskReport>,
}

/// The disk under a gateway's store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskReport {
    pub free_bytes: u64,
    pub total_bytes: u64,
    /// The disk is (nearly) full: the store takes more only as central acknowledges, and
    /// refuses alerts and submissions it has no room for.
    pub full: bool,
    /// A write met the full disk: the gateway restarts its store.
    #[serde(default)]
    pub store_stopped: bool,
}
