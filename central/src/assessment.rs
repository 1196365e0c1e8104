//! Assessment of each centre (its gateway and grid stations) over a period, computed from what
//! central already keeps — alerts with their audit trail, cases with their history — into
//! points, with the evidence behind every deduction.
//!
//! Points (100 at most): 40 × the share of alerts acknowledged within target, 30 × resolved
//! within target, 20 × cases handled within their limit, 10 × the gateway's uptime. A share
//! with nothing to count is full. Alerts silenced or inhibited from their opening do not count.

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
    pub points: f64,
    pub evidence: Evidence,
}

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

/// Scores per gateway for alerts opened and cases created in `[since, now]`.
pub fn assess(
    alerts: &[Alert],
    cases: &[Case],
    since: OffsetDateTime,
    now: OffsetDateTime,
    t: Targets,
) -> Vec<Score> {
    let mut scores: BTreeMap<String, Score> = BTreeMap::new();
    let mut acks: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut resolves: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut downtime: BTreeMap<String, time::Duration> = BTreeMap::new();
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
        let handled = c
            .history
            .iter()
            .find(|h| h.status == "resolved" || h.status == "closed")
            .map(|h| h.at);
        let due = t.case_limit;
        let late = match handled {
            Some(at) => at - c.created > due,
            None => now - c.created > due,
        };
        s.cases += 1;
        if late {
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
        s.uptime_pct = (uptime * 1000.0).round() / 10.0;
        s.mean_ack_secs = mean(acks.get(gw));
        s.mean_resolve_secs = mean(resolves.get(gw));
        let points = 40.0 * share(s.acked_in_time, s.alerts)
            + 30.0 * share(s.resolved_in_time, s.alerts)
            + 20.0 * share(s.cases_in_time, s.cases)
            + 10.0 * uptime;
        s.points = (points * 10.0).round() / 10.0;
    }
    scores.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::engine::{Engine, Observation, Policy, Severity};

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }
    fn mins(n: i64) -> time::Duration {
        time::Duration::minutes(n)
    }
    fn obs(originator: &str, rule: &str, raised: bool) -> Observation {
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
            receipt: receipt.into(),
            gateway: "gw-1".into(),
            submission: serde_json::json!({"category": "report"}),
            status: if handled_after.is_some() {
                "resolved"
            } else {
                "routed"
            }
            .into(),
            station: None,
            station_name: None,
            assignee: None,
            created: t0(),
            history: handled_after
                .map(|m| crate::cases::HistoryEntry {
                    status: "resolved".into(),
                    by: "op".into(),
                    note: String::new(),
                    at: t0() + mins(m),
                })
                .into_iter()
                .collect(),
        };
        let cases = vec![case("gw-1-000001", Some(60)), case("gw-1-000002", None)];
        let targets = Targets {
            ack_within: Duration::from_secs(15 * 60),
            resolve_within: Duration::from_secs(24 * 3600),
            case_limit: Duration::from_secs(72 * 3600),
        };
        let now = t0() + time::Duration::days(1) + mins(1);
        let s = &assess(&alerts, &cases, t0(), now, targets)[0];
        assert_eq!((s.alerts, s.acked_in_time, s.resolved_in_time), (3, 2, 2));
        assert_eq!(s.evidence.late_acks, [2]);
        assert_eq!(s.evidence.late_resolutions, [2]);
        assert_eq!(s.evidence.outages, [3]);
        assert_eq!(s.uptime_pct, 90.0);
        // The open case is not yet due (72 h): in time so far.
        assert_eq!((s.cases, s.cases_in_time), (2, 2));
        // 40·2/3 + 30·2/3 + 20 + 10·0.9
        assert_eq!(s.points, 75.7);
        assert_eq!(s.mean_ack_secs, Some((300 + 2400 + 60) / 3));
        // Four days on, the open case is late.
        let later = assess(
            &alerts,
            &cases,
            t0(),
            t0() + time::Duration::days(4),
            targets,
        );
        assert_eq!(later[0].evidence.late_cases, ["gw-1-000002"]);
    }
}
