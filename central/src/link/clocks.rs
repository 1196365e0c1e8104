//! Each gateway's clock, as its messages show it ([`PeerClock`]): shown in the health view, an
//! alert past `health.max_clock_offset`, and the clock a health report's age is judged on (a
//! gateway hours off is still heard; an old report is still stale).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use firmware_config::ids::GatewayId;
use firmware_config::runtime::clock::PeerClock;
use time::OffsetDateTime;

#[derive(Default)]
pub struct GatewayClocks {
    clocks: Mutex<HashMap<GatewayId, PeerClock>>,
}

impl GatewayClocks {
    /// Records a message `gateway` made at `sent`, received at `now`.
    pub fn observe(&self, gateway: &GatewayId, sent: OffsetDateTime, now: OffsetDateTime) {
        let mut all = self.clocks.lock().unwrap_or_else(PoisonError::into_inner);
        all.entry(gateway.clone()).or_default().observe(sent, now);
    }

    /// The gateway's clock minus central's, in milliseconds; None before its first message.
    pub fn offset_ms(&self, gateway: &str) -> Option<i64> {
        let all = self.clocks.lock().unwrap_or_else(PoisonError::into_inner);
        all.get(gateway).and_then(PeerClock::offset_ms)
    }

    /// The time on `gateway`'s clock at central's `now`.
    pub fn gateway_now(&self, gateway: &GatewayId, now: OffsetDateTime) -> OffsetDateTime {
        let all = self.clocks.lock().unwrap_or_else(PoisonError::into_inner);
        all.get(gateway).map_or(now, |c| c.their_now(now))
    }
}
