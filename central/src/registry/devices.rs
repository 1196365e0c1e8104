//! Cameras as central knows them from their gateways' events, and the recent history of every
//! device's state (cameras and terminals), for the operators' health view.

use firmware_config::kinds::{CameraState, TerminalState};
use std::collections::{BTreeMap, VecDeque};

use firmware_config::wire::Event;
use serde::Serialize;
use time::OffsetDateTime;

/// Changes kept per device.
const HISTORY: usize = 20;

#[derive(Debug, Clone, Serialize)]
pub struct Change {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub state: String,
    /// The event kind that said so.
    pub source: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CameraEntry {
    pub gateway: String,
    pub camera: String,
    pub name: Option<String>,
    pub state: String,
    /// Sensing conditions raised now (`covered`, `motion:counter`, …).
    pub sensing: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

#[derive(Debug, Default)]
pub struct DeviceBoard {
    cameras: BTreeMap<(String, String), CameraEntry>,
    /// (gateway, kind, id) → its last changes, oldest first.
    history: BTreeMap<(String, String, String), VecDeque<Change>>,
}

impl DeviceBoard {
    /// A stored event; those not about cameras or terminals are ignored. True when it changed
    /// what operators see (a device's state or sensing, a new device), not when a device said
    /// again what it said before.
    pub fn observe_event(&mut self, gateway: &str, e: &Event) -> bool {
        let Some((family, what)) = e.kind.split_once('.') else {
            return false;
        };
        if family != "camera" && family != "terminal" {
            return false;
        }
        let Ok(p) = serde_json::from_str::<serde_json::Value>(e.payload.get()) else {
            return false;
        };
        let Some(id) = p.get(family).and_then(|v| v.as_str()) else {
            return false;
        };
        let mut changed = false;
        let name = p.get("name").and_then(|v| v.as_str()).map(str::to_owned);
        let is_state = match family {
            "camera" => CameraState::parse(what).is_some_and(CameraState::reportable),
            _ => TerminalState::parse(what).is_some_and(|t| t != TerminalState::Unknown),
        };
        if family == "camera" {
            let key = (gateway.to_owned(), id.to_owned());
            changed |= !self.cameras.contains_key(&key);
            let c = self.cameras.entry(key).or_insert_with(|| CameraEntry {
                gateway: gateway.to_owned(),
                camera: id.to_owned(),
                name: None,
                state: "unknown".into(),
                sensing: Vec::new(),
                at: e.time,
            });
            if name.is_some() && c.name != name {
                c.name = name;
                changed = true;
            }
            if is_state && e.time >= c.at {
                c.state = what.to_owned();
                c.at = e.time;
            } else if !is_state {
                let (rule, raised) = match what.strip_suffix(".cleared") {
                    Some(r) => (r, false),
                    None => (what, true),
                };
                let label = match p.get("zone").and_then(|z| z.as_str()) {
                    Some(z) => format!("{rule}:{z}"),
                    None => rule.to_owned(),
                };
                c.sensing.retain(|s| *s != label);
                if raised {
                    c.sensing.push(label);
                }
                changed = true;
            }
        }
        if is_state {
            let h = self
                .history
                .entry((gateway.to_owned(), family.to_owned(), id.to_owned()))
                .or_default();
            // Changes only: a device reporting the same state every 10 s has no new history.
            if h.back().is_some_and(|c| c.state == what) {
                return changed;
            }
            changed = true;
            h.push_back(Change {
                at: e.time,
                state: what.to_owned(),
                source: e.kind.clone(),
            });
            while h.len() > HISTORY {
                h.pop_front();
            }
        }
        changed
    }

    pub fn cameras(&self) -> Vec<CameraEntry> {
        self.cameras.values().cloned().collect()
    }

    pub fn history(&self, gateway: &str, kind: &str, id: &str) -> Vec<Change> {
        self.history
            .get(&(gateway.to_owned(), kind.to_owned(), id.to_owned()))
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_config::wire::EventClass;
    use serde_json::json;

    fn event(kind: &str, secs: i64, p: serde_json::Value) -> Event {
        Event {
            seq: 1,
            class: EventClass::Health,
            kind: kind.into(),
            time: OffsetDateTime::from_unix_timestamp(1_800_000_000 + secs).unwrap(),
            payload: serde_json::value::to_raw_value(&p).unwrap(),
            source: None,
        }
    }

    #[test]
    fn cameras_follow_their_newest_state_and_sensing_with_history() {
        let mut b = DeviceBoard::default();
        b.observe_event(
            "gw-1",
            &event(
                "camera.streaming",
                0,
                json!({"camera": "hall", "name": "大厅"}),
            ),
        );
        b.observe_event(
            "gw-1",
            &event(
                "camera.motion",
                5,
                json!({"camera": "hall", "zone": "counter"}),
            ),
        );
        b.observe_event(
            "gw-1",
            &event("camera.offline", 10, json!({"camera": "hall"})),
        );
        // An older event delivered late does not win.
        b.observe_event(
            "gw-1",
            &event("camera.streaming", 3, json!({"camera": "hall"})),
        );
        let c = &b.cameras()[0];
        assert_eq!(
            (c.state.as_str(), c.name.as_deref()),
            ("offline", Some("大厅"))
        );
        assert_eq!(c.sensing, ["motion:counter"]);
        b.observe_event(
            "gw-1",
            &event(
                "camera.motion.cleared",
                12,
                json!({"camera": "hall", "zone": "counter"}),
            ),
        );
        assert!(b.cameras()[0].sensing.is_empty());
        let h = b.history("gw-1", "camera", "hall");
        assert_eq!(h.len(), 3);
        // The same state reported again is no new history, and no change to tell.
        assert!(!b.observe_event(
            "gw-1",
            &event("camera.streaming", 20, json!({"camera": "hall"})),
        ));
        assert!(b.observe_event(
            "gw-1",
            &event("camera.offline", 21, json!({"camera": "hall"})),
        ));
        assert_eq!(b.history("gw-1", "camera", "hall").len(), 4);
        b.observe_event(
            "gw-1",
            &event("terminal.offline", 1, json!({"terminal": "kiosk-1"})),
        );
        assert_eq!(b.history("gw-1", "terminal", "kiosk-1")[0].state, "offline");
        assert_eq!(b.cameras().len(), 1);
    }
}
