//! What central has stored of a gateway's events (`ack`).

use serde::{Deserialize, Serialize};

/// What central has stored of a gateway's events. `ranges` (inclusive) name the sequence
/// numbers of the acknowledged batch that are stored now (new or duplicate); the gateway deletes
/// exactly those, so eviction gaps and per-class order never stall it. `watermark` is the
/// highest sequence number central has stored for the gateway, for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub watermark: u64,
    #[serde(default)]
    pub ranges: Vec<(u64, u64)>,
    /// The envelope `seq` of the batch this acknowledges.
    #[serde(default)]
    pub batch: Option<u64>,
}
