//! The `GatewayRegistry`: every gateway central has heard of, and whether it is reachable.
//!
//! Pure state: callers pass the time in, so tests decide what "now" is.

pub mod devices;
pub mod health;
pub mod terminals;

use std::collections::BTreeMap;
use std::time::Duration;

use firmware_config::ids::GatewayId;
use firmware_config::runtime::clock::Instant;
use firmware_config::wire::{GatewayHealth, LinkState};
use serde::Serialize;

#[derive(Debug, Clone)]
struct Entry {
    link: LinkState,
    site: String,
    version: String,
    last_heard: Instant,
    health: Option<GatewayHealth>,
}

/// How a gateway looks to an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    Online,
    /// Said it was online but has been silent longer than the configured silence.
    Silent,
    Offline,
}

#[derive(Debug, Clone, Serialize)]
pub struct GatewayView {
    pub id: String,
    pub site: String,
    pub version: String,
    pub presence: Presence,
    pub last_heard_secs_ago: u64,
    pub health: Option<GatewayHealth>,
    /// The gateway's clock minus central's, in milliseconds, as its messages show it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<i64>,
}

#[derive(Debug)]
pub struct GatewayRegistry {
    silence: Duration,
    gateways: BTreeMap<GatewayId, Entry>,
}

impl GatewayRegistry {
    pub fn new(silence: Duration) -> Self {
        Self {
            silence,
            gateways: BTreeMap::new(),
        }
    }

    /// A birth (`online`) or last-will/goodbye (`offline`) message.
    pub fn observe_status(
        &mut self,
        id: &GatewayId,
        link: LinkState,
        site: &str,
        version: &str,
        now: Instant,
    ) {
        let e = self.entry(id, now);
        e.link = link;
        e.site = site.to_owned();
        e.version = version.to_owned();
        e.last_heard = now;
    }

    /// A periodic health report; hearing from a gateway also means it is online.
    pub fn observe_health(&mut self, id: &GatewayId, health: GatewayHealth, now: Instant) {
        let e = self.entry(id, now);
        e.link = LinkState::Online;
        e.site.clone_from(&health.site);
        e.version.clone_from(&health.version);
        e.last_heard = now;
        e.health = Some(health);
    }

    fn entry(&mut self, id: &GatewayId, now: Instant) -> &mut Entry {
        self.gateways.entry(id.clone()).or_insert_with(|| Entry {
            link: LinkState::Offline,
            site: String::new(),
            version: String::new(),
            last_heard: now,
            health: None,
        })
    }

    pub fn presence_of(&self, id: &GatewayId, now: Instant) -> Option<Presence> {
        self.gateways.get(id).map(|e| self.presence(e, now))
    }

    fn presence(&self, e: &Entry, now: Instant) -> Presence {
        match e.link {
            LinkState::Offline => Presence::Offline,
            LinkState::Online if now.saturating_duration_since(e.last_heard) > self.silence => {
                Presence::Silent
            }
            LinkState::Online => Presence::Online,
        }
    }

    /// Every gateway heard of.
    pub fn ids(&self) -> Vec<String> {
        self.gateways.keys().map(|id| id.to_string()).collect()
    }

    pub fn views(&self, now: Instant) -> Vec<GatewayView> {
        self.gateways
            .iter()
            .map(|(id, e)| GatewayView {
                id: id.to_string(),
                site: e.site.clone(),
                version: e.version.clone(),
                presence: self.presence(e, now),
                last_heard_secs_ago: now.saturating_duration_since(e.last_heard).as_secs(),
                health: e.health.clone(),
                clock_offset_ms: None,
            })
            .collect()
    }

    /// Count of gateways per presence: (online, silent, offline).
    pub fn counts(&self, now: Instant) -> (usize, usize, usize) {
        self.gateways
            .values()
            .fold((0, 0, 0), |(on, si, off), e| match self.presence(e, now) {
                Presence::Online => (on + 1, si, off),
                Presence::Silent => (on, si + 1, off),
                Presence::Offline => (on, si, off + 1),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw(s: &str) -> GatewayId {
        GatewayId::new(s).unwrap()
    }

    #[test]
    fn birth_then_silence_then_will() {
        let t0 = Instant::now();
        let mut r = GatewayRegistry::new(Duration::from_secs(90));
        r.observe_status(&gw("a"), LinkState::Online, "s", "0.1", t0);
        assert_eq!(
            r.presence_of(&gw("a"), t0 + Duration::from_secs(90)),
            Some(Presence::Online)
        );
        assert_eq!(
            r.presence_of(&gw("a"), t0 + Duration::from_secs(91)),
            Some(Presence::Silent)
        );
        r.observe_status(
            &gw("a"),
            LinkState::Offline,
            "s",
            "0.1",
            t0 + Duration::from_secs(100),
        );
        assert_eq!(
            r.presence_of(&gw("a"), t0 + Duration::from_secs(100)),
            Some(Presence::Offline)
        );
        assert_eq!(r.counts(t0 + Duration::from_secs(100)), (0, 0, 1));
    }

    #[test]
    fn health_report_revives_a_silent_gateway() {
        let t0 = Instant::now();
        let mut r = GatewayRegistry::new(Duration::from_secs(10));
        r.observe_status(&gw("a"), LinkState::Online, "s", "0.1", t0);
        let later = t0 + Duration::from_secs(60);
        assert_eq!(r.presence_of(&gw("a"), later), Some(Presence::Silent));
        let h = GatewayHealth {
            version: "0.2".into(),
            site: "s".into(),
            uptime_secs: 60,
            cameras_configured: 1,
            terminals_configured: 0,
            outbox: None,
            terminals: None,
            config: None,
            masterdata: None,
            certificate_expires: None,
        };
        r.observe_health(&gw("a"), h, later);
        assert_eq!(r.presence_of(&gw("a"), later), Some(Presence::Online));
        assert_eq!(r.views(later)[0].version, "0.2");
        assert_eq!(r.presence_of(&gw("b"), later), None);
    }
}
