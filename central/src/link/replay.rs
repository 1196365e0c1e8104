//! Replayed status and health: a gateway numbers every message it sends (its envelope `seq`
//! only grows, across restarts too), so a status or health report numbered at or below the
//! last one central accepted from that gateway is a replay — or the last will of a session
//! that has already been replaced — and is refused. A health report is also refused when it
//! is older than `identity.message_max_age`: stale news.
//!
//! The one message that is legitimately older than what came after it is the last will: it
//! is made (and signed) when a session starts. The birth message names its session's will
//! (`will_seq`), and that `offline`, and only it, is accepted later.
//!
//! Kept in memory: after central restarts, the first message of each gateway is taken as it
//! comes (a retained status may be days old and still right).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use firmware_config::ids::GatewayId;
use firmware_config::wire::{LinkState, Status};
use time::OffsetDateTime;

#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    status: u64,
    /// The will of the session whose birth was last accepted.
    will: Option<u64>,
    health: u64,
}

/// The last status and health accepted from each gateway.
#[derive(Default)]
pub struct UplinkReplay {
    seen: Mutex<HashMap<GatewayId, Seen>>,
}

impl UplinkReplay {
    fn with<T>(&self, gateway: &GatewayId, f: impl FnOnce(&mut Seen) -> T) -> T {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        f(seen.entry(gateway.clone()).or_default())
    }

    /// Whether a status numbered `seq` is news; the refusal's reason otherwise.
    pub fn status(&self, gateway: &GatewayId, seq: u64, s: &Status) -> Result<(), &'static str> {
        self.with(gateway, |seen| {
            if seq > seen.status {
                seen.status = seq;
                if s.state == LinkState::Online {
                    seen.will = s.will_seq;
                }
                Ok(())
            } else if s.state == LinkState::Offline && seen.will == Some(seq) {
                seen.will = None;
                Ok(())
            } else {
                Err("replayed_status")
            }
        })
    }

    /// Whether a health report numbered `seq`, made at `time`, is news at `now`.
    pub fn health(
        &self,
        gateway: &GatewayId,
        seq: u64,
        time: OffsetDateTime,
        now: OffsetDateTime,
        max_age: Duration,
    ) -> Result<(), &'static str> {
        if now - time > max_age {
            return Err("stale_health");
        }
        self.with(gateway, |seen| {
            if seq > seen.health {
                seen.health = seq;
                Ok(())
            } else {
                Err("replayed_health")
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: LinkState, will_seq: Option<u64>) -> Status {
        Status {
            state,
            version: "0".into(),
            site: "s".into(),
            will_seq,
        }
    }

    #[test]
    fn a_status_is_accepted_once_and_in_order_but_the_sessions_own_will_later() {
        let r = UplinkReplay::default();
        let gw = GatewayId::new("gw-1").unwrap();
        let online = status(LinkState::Online, Some(100));
        let will = status(LinkState::Offline, None);
        assert_eq!(r.status(&gw, 101, &online), Ok(()));
        assert!(r.status(&gw, 101, &online).is_err(), "the same birth again");
        assert!(r.status(&gw, 50, &will).is_err(), "an older session's will");
        assert_eq!(r.status(&gw, 100, &will), Ok(()), "this session's will");
        assert!(r.status(&gw, 100, &will).is_err(), "that will once only");
        // A new session: a new will, numbered above everything before.
        assert_eq!(
            r.status(&gw, 200, &status(LinkState::Online, Some(199))),
            Ok(())
        );
        assert!(r.status(&gw, 100, &will).is_err(), "the old will, replayed");
        assert!(
            r.status(&gw, 101, &online).is_err(),
            "the old birth, replayed"
        );
        // Another gateway has its own numbers.
        let other = GatewayId::new("gw-2").unwrap();
        assert_eq!(r.status(&other, 1, &online), Ok(()));
    }

    #[test]
    fn health_must_be_newer_than_the_last_and_not_stale() {
        let r = UplinkReplay::default();
        let gw = GatewayId::new("gw-1").unwrap();
        let now = OffsetDateTime::now_utc();
        let max = Duration::from_secs(900);
        assert_eq!(r.health(&gw, 10, now, now, max), Ok(()));
        assert_eq!(r.health(&gw, 10, now, now, max), Err("replayed_health"));
        assert_eq!(r.health(&gw, 9, now, now, max), Err("replayed_health"));
        let old = now - time::Duration::seconds(901);
        assert_eq!(r.health(&gw, 11, old, now, max), Err("stale_health"));
        assert_eq!(r.health(&gw, 11, now, now, max), Ok(()));
    }
}
