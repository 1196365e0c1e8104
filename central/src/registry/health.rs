//! The operators' health view: every gateway, camera and terminal with its state, rolled up per
//! centre, per area and for the street. A device of a gateway that is offline or silent is
//! shown as `unknown` with its last known state — its gateway's silence says nothing about it,
//! so it is not counted offline one by one.

use std::collections::BTreeMap;

use serde::Serialize;

use super::devices::CameraEntry;
use super::{GatewayView, Presence};
use crate::registry::terminals::TerminalEntry;

pub type Counts = BTreeMap<String, usize>;

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Rollup {
    pub gateways: Counts,
    pub cameras: Counts,
    pub terminals: Counts,
}

impl Rollup {
    fn add(&mut self, other: &Rollup) {
        for (mine, theirs) in [
            (&mut self.gateways, &other.gateways),
            (&mut self.cameras, &other.cameras),
            (&mut self.terminals, &other.terminals),
        ] {
            for (k, v) in theirs {
                *mine.entry(k.clone()).or_default() += v;
            }
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceView {
    pub id: String,
    pub name: Option<String>,
    /// What operators see: the device's state, or `unknown` while its gateway is not online.
    pub state: String,
    /// The state last reported, when `state` is `unknown` by inference.
    pub last_known: Option<String>,
    /// Sensing conditions (cameras), or the reasons of a degraded terminal.
    pub notes: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub since: time::OffsetDateTime,
    pub source: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct CentreView {
    pub gateway: String,
    pub site: String,
    pub presence: Presence,
    pub last_heard_secs_ago: u64,
    /// The gateway's clock minus central's, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<i64>,
    pub areas: Vec<String>,
    pub counts: Rollup,
    pub cameras: Vec<DeviceView>,
    pub terminals: Vec<DeviceView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AreaView {
    pub code: String,
    pub name: Option<String>,
    pub centres: Vec<String>,
    pub counts: Rollup,
}

#[derive(Debug, Clone, Serialize)]
pub struct HealthView {
    pub street: Rollup,
    pub areas: Vec<AreaView>,
    pub centres: Vec<CentreView>,
}

fn presence_name(p: Presence) -> &'static str {
    match p {
        Presence::Online => "online",
        Presence::Silent => "silent",
        Presence::Offline => "offline",
    }
}

/// Builds the view; `area_names` names the areas of the master data.
pub fn view(
    gateways: Vec<GatewayView>,
    cameras: &[CameraEntry],
    terminals: &[TerminalEntry],
    area_names: &BTreeMap<String, String>,
) -> HealthView {
    let mut centres = Vec::new();
    for g in gateways {
        let up = g.presence == Presence::Online;
        let infer = |state: &str| -> (String, Option<String>) {
            if up {
                (state.to_owned(), None)
            } else {
                ("unknown".to_owned(), Some(state.to_owned()))
            }
        };
        let cams: Vec<DeviceView> = cameras
            .iter()
            .filter(|c| c.gateway == g.id)
            .map(|c| {
                let (state, last_known) = infer(&c.state);
                DeviceView {
                    id: c.camera.clone(),
                    name: c.name.clone(),
                    state,
                    last_known,
                    notes: c.sensing.clone(),
                    since: c.at,
                    source: "event",
                }
            })
            .collect();
        let terms: Vec<DeviceView> = terminals
            .iter()
            .filter(|t| t.gateway == g.id)
            .map(|t| {
                let (state, last_known) = infer(&t.state);
                DeviceView {
                    id: t.terminal.clone(),
                    name: t.name.clone(),
                    state,
                    last_known,
                    notes: t.reasons.clone(),
                    since: t.at,
                    source: t.source,
                }
            })
            .collect();
        let mut counts = Rollup::default();
        counts
            .gateways
            .insert(presence_name(g.presence).to_owned(), 1);
        for c in &cams {
            *counts.cameras.entry(c.state.clone()).or_default() += 1;
        }
        for t in &terms {
            *counts.terminals.entry(t.state.clone()).or_default() += 1;
        }
        let areas = g
            .health
            .as_ref()
            .and_then(|h| h.masterdata.as_ref())
            .map(|m| m.areas.clone())
            .unwrap_or_default();
        centres.push(CentreView {
            gateway: g.id,
            site: g.site,
            presence: g.presence,
            last_heard_secs_ago: g.last_heard_secs_ago,
            clock_offset_ms: g.clock_offset_ms,
            areas,
            counts,
            cameras: cams,
            terminals: terms,
        });
    }
    let mut street = Rollup::default();
    let mut areas: BTreeMap<String, AreaView> = BTreeMap::new();
    for c in &centres {
        street.add(&c.counts);
        for a in &c.areas {
            let v = areas.entry(a.clone()).or_insert_with(|| AreaView {
                code: a.clone(),
                name: area_names.get(a).cloned(),
                centres: Vec::new(),
                counts: Rollup::default(),
            });
            v.centres.push(c.gateway.clone());
            v.counts.add(&c.counts);
        }
    }
    HealthView {
        street,
        areas: areas.into_values().collect(),
        centres,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_config::wire::{GatewayHealth, ReplicaReport};
    use time::OffsetDateTime;

    fn gateway(id: &str, presence: Presence, area: &str) -> GatewayView {
        GatewayView {
            id: id.into(),
            site: format!("site-{id}"),
            version: "0.1".into(),
            presence,
            last_heard_secs_ago: 1,
            clock_offset_ms: None,
            health: Some(GatewayHealth {
                version: "0.1".into(),
                site: format!("site-{id}"),
                uptime_secs: 1,
                cameras_configured: 1,
                terminals_configured: 1,
                outbox: None,
                terminals: None,
                config: None,
                masterdata: Some(ReplicaReport {
                    areas: vec![area.into()],
                    ..ReplicaReport::default()
                }),
                certificate_expires: None,
            }),
        }
    }

    fn camera(gw: &str, id: &str, state: &str) -> CameraEntry {
        CameraEntry {
            gateway: gw.into(),
            camera: id.into(),
            name: None,
            state: state.into(),
            sensing: Vec::new(),
            at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn an_offline_gateways_devices_are_unknown_not_offline_and_roll_up() {
        let names = BTreeMap::from([("A1".to_owned(), "红星社区片区".to_owned())]);
        let v = view(
            vec![
                gateway("gw-1", Presence::Online, "A1"),
                gateway("gw-2", Presence::Offline, "A1"),
                gateway("gw-3", Presence::Online, "A2"),
            ],
            &[
                camera("gw-1", "hall", "streaming"),
                camera("gw-1", "door", "offline"),
                camera("gw-2", "hall", "streaming"),
                camera("gw-3", "hall", "streaming"),
            ],
            &[],
            &names,
        );
        let gw2 = &v.centres[1];
        assert_eq!(gw2.cameras[0].state, "unknown");
        assert_eq!(gw2.cameras[0].last_known.as_deref(), Some("streaming"));
        assert_eq!(v.street.cameras["streaming"], 2);
        assert_eq!(v.street.cameras["offline"], 1);
        assert_eq!(v.street.cameras["unknown"], 1);
        assert_eq!(v.street.gateways["offline"], 1);
        let a1 = &v.areas[0];
        assert_eq!(
            (a1.code.as_str(), a1.name.as_deref()),
            ("A1", Some("红星社区片区"))
        );
        assert_eq!(a1.centres, ["gw-1", "gw-2"]);
        assert_eq!(a1.counts.cameras.values().sum::<usize>(), 3);
        assert_eq!(v.areas[1].counts.cameras["streaming"], 1);
    }
}
