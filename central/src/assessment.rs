//! Assessment of each centre (its gateway and grid stations) over a period, computed from what
//! central already keeps — alerts with their audit trail, cases with their history — into
//! points, with the evidence behind every deduction.
//!
//! Points (100 at most): 40 × the share of alerts acknowledged within target, 30 × resolved
//! within target, 20 × cases handled within their limit, 5 × the gateway's uptime and 5 × its
//! devices' uptime (camera and terminal offline alerts against the devices it reports). A share
//! with nothing to count is full. Alerts silenced or inhibited from their opening do not count.
//!
//! Grid stations are scored on what they answer for: the cases routed to them, handled within
//! their limit ([`assess_stations`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use crate::alerts::Alert;
use crate::cases::Case;

#[derive(Debug, Clone, Copy)]
pub struct Targets {
    pub ack_within: Duration,
    pub resolve_within: Duration,
    pub case_limit: Duration,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Evidence {
    /// Alerts acknowledged late, or not yet and past the target.
    pub late_acks: Vec<u64>,
    pub late_resolutions: Vec<u64>,
    /// Cases handled late, or not yet and past their limit.
    pub late_cases: Vec<String>,
    /// The gateway's offline alerts in the period.
    pub outages: Vec<u64>,
    /// Its cameras' and terminals' offline alerts in the period.
    pub device_outages: Vec<u64>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Score {
    pub gateway: String,
    pub alerts: usize,
    pub acked_in_time: usize,
    pub resolved_in_time: usize,
    pub mean_ack_secs: Option<u64>,
    pub mean_resolve_secs: Option<u64>,
    pub cases: usize,
    pub cases_in_time: usize,
    pub uptime_pct: f64,
    /// Of its devices' time in the period, the share they were not offline.
    pub device_uptime_pct: f64,
    pub points: f64,
    pub evidence: Evidence,
}

/// A grid station's score: the cases routed to it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct StationScore {
    pub station: String,
    pub station_name: Option<String>,
    pub gateway: String,
    pub cases: usize,
    pub cases_in_time: usize,
    /// Mean time to resolve or close, of those handled.
    pub mean_handle_secs: Option<u64>,
    /// 100 × the share handled in time.
    pub points: f64,
    /// Cases handled late, or not yet and past their limit.
    pub late_cases: Vec<String>,
}

/// The rules whose alerts mean a device was down.
const DEVICE_DOWN: [&str; 2] = ["camera.offline", "terminal.offline"];

fn when(a: &Alert, action: &str) -> Option<OffsetDateTime> {
    a.audit.iter().find(|e| e.action == action).map(|e| e.at)
}

fn share(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        1.0
    } else {
        part as f64 / whole as f64
    }
}

fn secs(d: time::Duration) -> u64 {
    d.whole_seconds().max(0) as u64
}

/// When a case was resolved or closed, if it was.
fn handled(c: &Case) -> Option<OffsetDateTime> {
    c.history
        .iter()
        .find(|h| h.status == "resolved" || h.status == "closed")
        .map(|h| h.at)
}

fn late(c: &Case, now: OffsetDateTime, t: Targets) -> bool {
    handled(c).unwrap_or(now) - c.created > t.case_limit
}

/// Scores per gateway for alerts opened and cases created in `[since, now]`; `devices` is the
/// number of cameras and terminals each gateway reports.
pub fn assess(
    alerts: &[Alert],
    cases: &[Case],
    devices: &BTreeMap<String, u32>,
    since: OffsetDateTime,
    now: OffsetDateTime,
    t: Targets,
) -> Vec<Score> {
    let mut scores: BTreeMap<String, Score> = BTreeMap::new();
    let mut acks: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut resolves: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut downtime: BTreeMap<String, time::Duration> = BTreeMap::new();
    let mut device_downtime: BTreeMap<String, time::Duration> = BTreeMap::new();
    let mut devices_down: BTreeMap<String, std::collections::BTreeSet<&str>> = BTreeMap::new();
    for a in alerts
        .iter()
        .filter(|a| a.opened >= since && a.opened <= now)
    {
        let s = scores.entry(a.gateway.clone()).or_insert_with(|| Score {
            gateway: a.gateway.clone(),
            ..Score::default()
        });
        if a.rule == "gateway.offline" {
            let end = when(a, "cleared").unwrap_or(now).min(now);
            *downtime.entry(a.gateway.clone()).or_default() += end - a.opened;
            s.evidence.outages.push(a.id);
        }
        if DEVICE_DOWN.contains(&a.rule.as_str()) {
            let end = when(a, "cleared")
                .or_else(|| when(a, "resolved"))
                .unwrap_or(now)
                .min(now);
            *device_downtime.entry(a.gateway.clone()).or_default() += end - a.opened;
            devices_down
                .entry(a.gateway.clone())
                .or_default()
                .insert(&a.originator);
            s.evidence.device_outages.push(a.id);
        }
        // Silenced or inhibited when it opened: nobody was expected to act on it. (One that
        // was inhibited later, after waiting, still counts.)
        let excused = a
            .audit
            .first()
            .is_some_and(|e| e.action == "opened" && !e.note.is_empty());
        if excused {
            continue;
        }
        s.alerts += 1;
        match when(a, "acknowledged") {
            Some(at) if at - a.opened <= t.ack_within => {
                s.acked_in_time += 1;
                acks.entry(a.gateway.clone())
                    .or_default()
                    .push(secs(at - a.opened));
            }
            Some(at) => {
                s.evidence.late_acks.push(a.id);
                acks.entry(a.gateway.clone())
                    .or_default()
                    .push(secs(at - a.opened));
            }
            None if now - a.opened > t.ack_within => s.evidence.late_acks.push(a.id),
            // Not yet due: counted as in time until it is.
            None => s.acked_in_time += 1,
        }
        match when(a, "resolved") {
            Some(at) if at - a.opened <= t.resolve_within => {
                s.resolved_in_time += 1;
                resolves
                    .entry(a.gateway.clone())
                    .or_default()
                    .push(secs(at - a.opened));
            }
            Some(at) => {
                s.evidence.late_resolutions.push(a.id);
                resolves
                    .entry(a.gateway.clone())
                    .or_default()
                    .push(secs(at - a.opened));
            }
            None if now - a.opened > t.resolve_within => s.evidence.late_resolutions.push(a.id),
            None => s.resolved_in_time += 1,
        }
    }
    for c in cases
        .iter()
        .filter(|c| c.created >= since && c.created <= now)
    {
        let s = scores.entry(c.gateway.clone()).or_insert_with(|| Score {
            gateway: c.gateway.clone(),
            ..Score::default()
        });
        s.cases += 1;
        if late(c, now, t) {
            s.evidence.late_cases.push(c.receipt.clone());
        } else {
            s.cases_in_time += 1;
        }
    }
    let period = (now - since).max(time::Duration::SECOND);
    let mean = |v: Option<&Vec<u64>>| {
        v.filter(|v| !v.is_empty())
            .map(|v| v.iter().sum::<u64>() / v.len() as u64)
    };
    for (gw, s) in scores.iter_mut() {
        let down = downtime.get(gw).copied().unwrap_or_default();
        let uptime = (1.0 - down / period).clamp(0.0, 1.0);
        // Two decimals: a minute down in a week is 99.99 %, not 100.
        s.uptime_pct = (uptime * 10_000.0).round() / 100.0;
        // Devices: those it reports, or at least those that were down.
        let n = devices
            .get(gw)
            .copied()
            .unwrap_or(0)
            .max(devices_down.get(gw).map_or(0, |d| d.len() as u32));
        let device_uptime = if n == 0 {
            1.0
        } else {
            let down = device_downtime.get(gw).copied().unwrap_or_default();
            (1.0 - down / (period * n)).clamp(0.0, 1.0)
        };
        s.device_uptime_pct = (device_uptime * 10_000.0).round() / 100.0;
        s.mean_ack_secs = mean(acks.get(gw));
        s.mean_resolve_secs = mean(resolves.get(gw));
        let points = 40.0 * share(s.acked_in_time, s.alerts)
            + 30.0 * share(s.resolved_in_time, s.alerts)
            + 20.0 * share(s.cases_in_time, s.cases)
            + 5.0 * uptime
            + 5.0 * device_uptime;
        s.points = (points * 10.0).round() / 10.0;
    }
    scores.into_values().collect()
}

/// Scores per grid station for the cases routed to it and created in `[since, now]`.
pub fn assess_stations(
    cases: &[Case],
    since: OffsetDateTime,
    now: OffsetDateTime,
    t: Targets,
) -> Vec<StationScore> {
    let mut stations: BTreeMap<&str, (StationScore, Vec<u64>)> = BTreeMap::new();
    for c in cases
        .iter()
        .filter(|c| c.created >= since && c.created <= now)
    {
        let Some(station) = c.station.as_deref() else {
            continue;
        };
        let (s, handle_secs) = stations.entry(station).or_insert_with(|| {
            (
                StationScore {
                    station: station.to_owned(),
                    station_name: c.station_name.clone(),
                    gateway: c.gateway.clone(),
                    ..StationScore::default()
                },
                Vec::new(),
            )
        });
        s.cases += 1;
        if let Some(at) = handled(c) {
            handle_secs.push(secs(at - c.created));
        }
        if late(c, now, t) {
            s.late_cases.push(c.receipt.clone());
        } else {
            s.cases_in_time += 1;
        }
    }
    stations
        .into_values()
        .map(|(mut s, handle_secs)| {
            s.mean_handle_secs = (!handle_secs.is_empty())
                .then(|| handle_secs.iter().sum::<u64>() / handle_secs.len() as u64);
            s.points = (1000.0 * share(s.cases_in_time, s.cases)).round() / 10.0;
            s
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::alerts::engine::{Engine, Observation, Policy, Severity};

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }
    fn mins(n: i64) -> time::Duration {
        time::Duration::minutes(n)
    }
    /// An observation of `gw-1`'s, raised or cleared.
    pub(crate) fn obs(originator: &str, rule: &str, raised: bool) -> Observation {
        Observation {
            originator: originator.into(),
            gateway: "gw-1".into(),
            rule: rule.into(),
            raised,
            severity: Severity::Major,
            title: rule.into(),
            detail: serde_json::Value::Null,
            hold_down: Duration::ZERO,
        }
    }

    #[test]
    fn points_follow_response_resolution_cases_and_uptime_with_evidence() {
        let mut e = Engine::new(Policy::default());
        // Acknowledged in 5 min and resolved in 2 h: in time.
        e.observe(obs("gw-1/camera/a", "camera.offline", true), t0());
        e.acknowledge(1, "op", t0() + mins(5)).unwrap();
        e.resolve(1, "op", "", t0() + mins(120)).unwrap();
        // Acknowledged after 40 min: late; never resolved and past 24 h: late.
        e.observe(obs("gw-1/camera/b", "camera.covered", true), t0());
        e.acknowledge(2, "op", t0() + mins(40)).unwrap();
        // The gateway offline for 144 min of the day (10 %).
        e.observe(obs("gw-1", "gateway.offline", true), t0() + mins(600));
        e.acknowledge(3, "op", t0() + mins(601)).unwrap();
        e.resolve(3, "op", "", t0() + mins(700)).unwrap();
        let mut alerts: Vec<Alert> = e.list(true).into_iter().cloned().collect();
        // Its clearing, as the engine records it.
        for a in alerts.iter_mut().filter(|a| a.id == 3) {
            a.audit.push(crate::alerts::engine::AuditEntry {
                at: t0() + mins(744),
                by: "system".into(),
                action: "cleared".into(),
                note: String::new(),
            });
        }
        let case = |receipt: &str, handled_after: Option<i64>| Case {
            status: if handled_after.is_some() {
                "resolved"
            } else {
                "registered"
            }
            .into(),
            history: handled_after
                .map(|m| crate::cases::HistoryEntry::new("resolved", "op", "", t0() + mins(m)))
                .into_iter()
                .collect(),
            ..Case::registered(
                receipt,
                "gw-1",
                serde_json::json!({"category": "report"}),
                t0(),
            )
        };
        let cases = vec![case("gw-1-000001", Some(60)), case("gw-1-000002", None)];
        let targets = Targets {
            ack_within: Duration::from_secs(15 * 60),
            resolve_within: Duration::from_secs(24 * 3600),
            case_limit: Duration::from_secs(72 * 3600),
        };
        let now = t0() + time::Duration::days(1) + mins(1);
        let devices = BTreeMap::from([("gw-1".to_owned(), 10)]);
        let s = &assess(&alerts, &cases, &devices, t0(), now, targets)[0];
        assert_eq!((s.alerts, s.acked_in_time, s.resolved_in_time), (3, 2, 2));
        assert_eq!(s.evidence.late_acks, [2]);
        assert_eq!(s.evidence.late_resolutions, [2]);
        assert_eq!(s.evidence.outages, [3]);
        // 144 min down of the 1,441 assessed.
        assert_eq!(s.uptime_pct, 90.01);
        // Camera a was offline for 2 h (until resolved) of ten devices' 1,441 min each.
        assert_eq!(s.evidence.device_outages, [1]);
        assert_eq!(s.device_uptime_pct, 99.17);
        // The open case is not yet due (72 h): in time so far.
        assert_eq!((s.cases, s.cases_in_time), (2, 2));
        // 40·2/3 + 30·2/3 + 20 + 5·0.9 + 5·(1 − 120/14410)
        assert_eq!(s.points, 76.1);
        assert_eq!(s.mean_ack_secs, Some((300 + 2400 + 60) / 3));
        // Four days on, the open case is late.
        let later = assess(
            &alerts,
            &cases,
            &devices,
            t0(),
            t0() + time::Duration::days(4),
            targets,
        );
        assert_eq!(later[0].evidence.late_cases, ["gw-1-000002"]);
    }

    #[test]
    fn stations_are_scored_on_the_cases_routed_to_them() {
        let case = |receipt: &str, station: Option<&str>, handled_after: Option<i64>| Case {
            station: station.map(str::to_owned),
            station_name: station.map(|s| format!("{s} 网格站")),
            history: handled_after
                .map(|m| crate::cases::HistoryEntry::new("closed", "op", "", t0() + mins(m)))
                .into_iter()
                .collect(),
            ..Case::registered(
                receipt,
                "gw-1",
                serde_json::json!({"category": "report"}),
                t0(),
            )
        };
        let cases = vec![
            case("r-1", Some("g-01"), Some(30)),
            case("r-2", Some("g-01"), None),
            case("r-3", Some("g-02"), Some(90)),
            case("r-4", None, None),
        ];
        let targets = Targets {
            ack_within: Duration::from_secs(900),
            resolve_within: Duration::from_secs(3600),
            case_limit: Duration::from_secs(3600),
        };
        let s = assess_stations(&cases, t0(), t0() + mins(120), targets);
        assert_eq!(s.len(), 2, "a case routed nowhere belongs to no station");
        assert_eq!(
            (s[0].station.as_str(), s[0].cases, s[0].cases_in_time),
            ("g-01", 2, 1)
        );
        assert_eq!(s[0].late_cases, ["r-2"]);
        assert_eq!((s[0].points, s[0].mean_handle_secs), (50.0, Some(1800)));
        assert_eq!(s[0].station_name.as_deref(), Some("g-01 网格站"));
        assert_eq!(
            (s[1].late_cases.clone(), s[1].points),
            (vec!["r-3".to_owned()], 0.0)
        );
    }
}
