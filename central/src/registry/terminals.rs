//! The `TerminalBoard`: every terminal of every gateway and its last known health.
//!
//! Two sources feed it: `terminal.*` events (each change, as it happens) and the compact summary
//! in every gateway health report (all terminals, periodically) — so a change whose event was
//! evicted at the edge still shows within one report. Whichever is newer wins.

use firmware_config::kinds::Kind;
use std::collections::BTreeMap;

use firmware_config::wire::{Event, TerminalsSummary};
use serde::Serialize;
use time::OffsetDateTime;

#[derive(Debug, Clone, Serialize)]
pub struct TerminalEntry {
    pub gateway: String,
    pub terminal: String,
    pub name: Option<String>,
    pub kind: Option<String>,
    pub state: String,
    pub flapping: bool,
    pub reasons: Vec<String>,
    /// When the gateway observed this.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// `event` or `summary`.
    pub source: &'static str,
}

/// By gateway, then terminal: a gateway's summary touches its own terminals only.
#[derive(Debug, Default)]
pub struct TerminalBoard {
    gateways: BTreeMap<String, BTreeMap<String, TerminalEntry>>,
}

impl TerminalBoard {
    /// A stored event; those that are not about terminals are ignored.
    pub fn observe_event(&mut self, gateway: &str, e: &Event) {
        if !e.kind.starts_with("terminal.") {
            return;
        }
        let Ok(p) = serde_json::from_str::<serde_json::Value>(e.payload.get()) else {
            return;
        };
        let Some(id) = p.get("terminal").and_then(|v| v.as_str()) else {
            return;
        };
        let text = |k: &str| p.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let entries = self.gateways.entry(gateway.to_owned()).or_default();
        let old = entries.get(id);
        if old.is_some_and(|o| o.at > e.time) {
            return;
        }
        let flapping = match Kind::parse(&e.kind) {
            Kind::TerminalFlapping { cleared } => !cleared,
            _ => old.is_some_and(|o| o.flapping),
        };
        let reasons = p
            .get("reasons")
            .and_then(|r| serde_json::from_value(r.clone()).ok())
            .unwrap_or_default();
        entries.insert(
            id.to_owned(),
            TerminalEntry {
                gateway: gateway.to_owned(),
                terminal: id.to_owned(),
                name: text("name"),
                kind: text("kind"),
                state: text("state").unwrap_or_else(|| "unknown".to_owned()),
                flapping,
                reasons,
                at: e.time,
                source: "event",
            },
        );
    }

    /// A gateway's summary of all its terminals at `at`; terminals it no longer lists are
    /// forgotten.
    pub fn observe_summary(&mut self, gateway: &str, s: &TerminalsSummary, at: OffsetDateTime) {
        let mut listed = std::collections::HashSet::new();
        let entries = self.gateways.entry(gateway.to_owned()).or_default();
        let lists = [
            ("online", &s.online),
            ("degraded", &s.degraded),
            ("offline", &s.offline),
            ("unknown", &s.unknown),
        ];
        for (state, ids) in lists {
            for id in ids {
                listed.insert(id.as_str());
                let flapping = s.flapping.contains(id);
                match entries.get_mut(id) {
                    Some(old) if old.at > at => {}
                    Some(old) => {
                        if old.state != state {
                            old.reasons.clear();
                        }
                        old.state = state.to_owned();
                        old.flapping = flapping;
                        old.at = at;
                        old.source = "summary";
                    }
                    None => {
                        entries.insert(
                            id.clone(),
                            TerminalEntry {
                                gateway: gateway.to_owned(),
                                terminal: id.clone(),
                                name: None,
                                kind: None,
                                state: state.to_owned(),
                                flapping,
                                reasons: Vec::new(),
                                at,
                                source: "summary",
                            },
                        );
                    }
                }
            }
        }
        entries.retain(|t, _| listed.contains(t.as_str()));
    }

    /// The entries of one gateway, or of all.
    fn entries<'a>(&'a self, gateway: Option<&'a str>) -> impl Iterator<Item = &'a TerminalEntry> {
        self.gateways
            .iter()
            .filter(move |(g, _)| gateway.is_none_or(|w| w == g.as_str()))
            .flat_map(|(_, t)| t.values())
    }

    pub fn list(&self, gateway: Option<&str>, state: Option<&str>) -> Vec<TerminalEntry> {
        self.entries(gateway)
            .filter(|e| state.is_none_or(|s| e.state == s))
            .cloned()
            .collect()
    }

    /// Terminals per state.
    pub fn counts(&self, gateway: Option<&str>) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for e in self.entries(gateway) {
            *m.entry(e.state.clone()).or_default() += 1;
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_config::wire::EventClass;

    fn event(kind: &str, state: &str, at: i64) -> Event {
        Event {
            seq: 1,
            class: EventClass::Alert,
            kind: kind.to_owned(),
            time: OffsetDateTime::from_unix_timestamp(at).unwrap(),
            payload: serde_json::value::to_raw_value(&serde_json::json!({
                "terminal": "k1", "name": "Kiosk", "kind": "kiosk", "state": state, "reasons": ["no heartbeat"]
            }))
            .unwrap(),
            source: None,
        }
    }

    #[test]
    fn newer_wins_between_events_and_summaries() {
        let mut b = TerminalBoard::default();
        b.observe_event("gw", &event("terminal.offline", "offline", 100));
        assert_eq!(b.list(None, Some("offline")).len(), 1);
        // An older summary does not undo the event.
        let s = TerminalsSummary {
            online: vec!["k1".into(), "k2".into()],
            ..Default::default()
        };
        b.observe_summary("gw", &s, OffsetDateTime::from_unix_timestamp(90).unwrap());
        assert_eq!(b.list(Some("gw"), None).len(), 2);
        assert_eq!(b.list(None, Some("offline"))[0].terminal, "k1");
        // A newer one does (the online event was evicted at the edge).
        b.observe_summary("gw", &s, OffsetDateTime::from_unix_timestamp(200).unwrap());
        assert_eq!(b.counts(None).get("online"), Some(&2));
        b.observe_event("gw", &event("terminal.flapping", "online", 300));
        assert!(b.list(None, None).iter().any(|e| e.flapping));
        // A terminal no longer listed is forgotten.
        let s = TerminalsSummary {
            online: vec!["k1".into()],
            flapping: vec!["k1".into()],
            ..Default::default()
        };
        b.observe_summary("gw", &s, OffsetDateTime::from_unix_timestamp(400).unwrap());
        assert_eq!(b.list(None, None).len(), 1);
        assert!(b.list(None, None)[0].flapping);
    }
}
