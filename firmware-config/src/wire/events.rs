//! Events: what a gateway forwards from its outbox (`events`) and their classes (the kinds
//! are in `crate::kinds`).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Priority class of an event: decides what is evicted first when the disk budget is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventClass {
    /// Evicted first.
    Telemetry,
    Health,
    Submission,
    /// Evicted last.
    Alert,
}

/// One event from a gateway's outbox. The payload is kept as raw JSON text: the gateway stores
/// and forwards it without parsing it again, and central stores it as it came.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub class: EventClass,
    /// What happened, e.g. `camera.offline`, `kiosk.report`.
    pub kind: String,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub payload: Box<serde_json::value::RawValue>,
    /// Who handed it to the gateway: one of its `[[sources]]` (by id). Absent when the gateway
    /// itself originated it — the only case in which central believes a device kind
    /// (`camera.*`, `terminal.*`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
            && self.class == other.class
            && self.kind == other.kind
            && self.time == other.time
            && self.payload.get() == other.payload.get()
            && self.source == other.source
    }
}

impl Event {
    /// True when the gateway itself originated the event (not one of its sources).
    pub fn from_gateway(&self) -> bool {
        self.source.is_none()
    }
}

impl EventClass {
    /// Every class, first evicted first: the order of [`EventClass::index`].
    pub const ALL: [EventClass; 4] = [
        EventClass::Telemetry,
        EventClass::Health,
        EventClass::Submission,
        EventClass::Alert,
    ];

    /// Its place in [`EventClass::ALL`]: per-class arrays, and stores keyed by class (never
    /// renumber).
    pub const fn index(self) -> usize {
        match self {
            EventClass::Telemetry => 0,
            EventClass::Health => 1,
            EventClass::Submission => 2,
            EventClass::Alert => 3,
        }
    }

    /// Every class, in the order the uplink sends them (most urgent first).
    pub const BY_URGENCY: [EventClass; 4] = [
        EventClass::Alert,
        EventClass::Submission,
        EventClass::Health,
        EventClass::Telemetry,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventClass::Telemetry => "telemetry",
            EventClass::Health => "health",
            EventClass::Submission => "submission",
            EventClass::Alert => "alert",
        }
    }

    /// True for the classes the outbox may drop when its disk budget is full.
    pub fn evictable(self) -> bool {
        matches!(self, EventClass::Telemetry | EventClass::Health)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBatch {
    pub events: Vec<Event>,
}
