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

impl Ack {
    /// An ack of no batch and no events: a central replica that has just taken the gateway
    /// over asks it to send everything pending again (what the last owner had in hand may be
    /// lost). A gateway that predates it refuses it as an ack of no batch, and resends after
    /// its ack timeout instead.
    pub fn resend_request(watermark: u64) -> Self {
        Self {
            watermark,
            ranges: Vec::new(),
            batch: None,
        }
    }

    pub fn is_resend_request(&self) -> bool {
        self.batch.is_none() && self.ranges.is_empty()
    }
}
