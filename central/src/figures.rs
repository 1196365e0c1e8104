//! Figures for the street office: residents' cases by category, grid and period, how long
//! they took, the share finished late, and each centre's uptime and its devices' by period —
//! all from what central already keeps (cases with their history, alerts with their audit
//! trail), counted in the street's time zone.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use time::{Date, OffsetDateTime, UtcOffset};

use crate::alerts::Alert;
use crate::cases::{workflow, Case};

/// How the window is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    Week,
    Month,
}

/// Days `from` to `to` (both included) in the street's time zone, cut by `period`.
#[derive(Debug, Clone)]
pub struct Window {
    pub from: Date,
    pub to: Date,
    pub period: Period,
    pub offset: UtcOffset,
}

/// The longest window figured at once, and the most buckets: a year by day.
pub const MAX_DAYS: i64 = 366;

/// One bucket of a window: its label and its half-open span.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    pub label: String,
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
}

impl Window {
    /// The window's buckets, in order; the first and last cut at the window's ends.
    pub fn buckets(&self) -> Vec<Bucket> {
        let mut out = Vec::new();
        let mut day = self.from;
        while day <= self.to && out.len() <= MAX_DAYS as usize {
            let next = match self.period {
                Period::Day => day.next_day(),
                // To the next Monday.
                Period::Week => day.checked_add(time::Duration::days(
                    7 - i64::from(day.weekday().number_days_from_monday()),
                )),
                Period::Month => {
                    let (y, m) = (day.year(), day.month());
                    let (y, m) = if m == time::Month::December {
                        (y + 1, time::Month::January)
                    } else {
                        (y, m.next())
                    };
                    Date::from_calendar_date(y, m, 1).ok()
                }
            };
            let Some(next) = next else { break };
            let end_day = next.min(self.to.next_day().unwrap_or(self.to));
            let label = match self.period {
                Period::Day => day.to_string(),
                Period::Week => format!("{day}~"),
                Period::Month => format!("{}-{:02}", day.year(), u8::from(day.month())),
            };
            out.push(Bucket {
                label,
                start: day.midnight().assume_offset(self.offset),
                end: end_day.midnight().assume_offset(self.offset),
            });
            day = end_day;
        }
        out
    }

    pub fn start(&self) -> OffsetDateTime {
        self.from.midnight().assume_offset(self.offset)
    }

    pub fn end(&self) -> OffsetDateTime {
        self.to
            .next_day()
            .unwrap_or(self.to)
            .midnight()
            .assume_offset(self.offset)
    }
}

/// Cases counted for one category, grid or period.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CaseRow {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Registered in the window (for a period: in that period).
    pub registered: usize,
    /// Finished (resolved, delivered or closed) in the window or period.
    pub finished: usize,
    /// Of those registered, still open now.
    pub open: usize,
    /// Of those registered, finished after their deadline or open past it.
    pub late: usize,
    /// Mean hours from registration to finish, of those registered and finished.
    pub mean_hours: Option<f64>,
}

/// How long cases registered in the window took, of those finished.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TimeToFinish {
    pub finished: usize,
    pub mean_hours: Option<f64>,
    pub p50_hours: Option<f64>,
    pub p90_hours: Option<f64>,
}

/// A centre's uptime and its devices', in percent per period.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UptimeRow {
    pub gateway: String,
    pub uptime_pct: Vec<f64>,
    pub device_uptime_pct: Vec<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CaseFigures {
    pub by_category: Vec<CaseRow>,
    pub by_grid: Vec<CaseRow>,
    pub by_period: Vec<CaseRow>,
    pub time_to_finish: TimeToFinish,
    /// `late / registered` of the window's cases (0 when none).
    pub late_share: f64,
    pub registered: usize,
    pub late: usize,
}

/// When a case stopped being open, if it did: its first step to a status that is not.
pub fn finished_at(c: &Case) -> Option<OffsetDateTime> {
    let category = c.category();
    c.history
        .iter()
        .find(|h| !workflow::is_open_status(category, &h.status))
        .map(|h| h.at)
}

fn hours(d: time::Duration) -> f64 {
    (d.as_seconds_f64() / 3600.0 * 100.0).round() / 100.0
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted.get(i).copied()
}

/// Counts `cases` (those the operator reaches) over `w`; `grid_name` names a station.
pub fn cases(
    cases: &[Case],
    w: &Window,
    now: OffsetDateTime,
    fallback: Duration,
    grid_name: impl Fn(&str) -> Option<String>,
) -> CaseFigures {
    let (start, end) = (w.start(), w.end());
    let buckets = w.buckets();
    let mut by_category: BTreeMap<String, (CaseRow, Vec<f64>)> = BTreeMap::new();
    let mut by_grid: BTreeMap<String, (CaseRow, Vec<f64>)> = BTreeMap::new();
    let mut by_period: Vec<(CaseRow, Vec<f64>)> = buckets
        .iter()
        .map(|b| {
            (
                CaseRow {
                    key: b.label.clone(),
                    ..CaseRow::default()
                },
                Vec::new(),
            )
        })
        .collect();
    let bucket_of = |t: OffsetDateTime| buckets.iter().position(|b| t >= b.start && t < b.end);
    let mut took = Vec::new();
    let (mut registered, mut late) = (0, 0);
    for c in cases {
        let done = finished_at(c);
        if let Some(i) = done.and_then(bucket_of) {
            by_period[i].0.finished += 1;
        }
        if c.created < start || c.created >= end {
            // Finished in the window, registered before it: counted as finished where it was.
            if done.is_some_and(|d| d >= start && d < end) {
                by_category
                    .entry(c.category().as_str().to_owned())
                    .or_default()
                    .0
                    .finished += 1;
                by_grid
                    .entry(c.station.clone().unwrap_or_default())
                    .or_default()
                    .0
                    .finished += 1;
            }
            continue;
        }
        let is_late = match done {
            Some(d) => d > c.deadline(fallback),
            None => now > c.deadline(fallback),
        };
        let spent = done.map(|d| hours(d - c.created));
        registered += 1;
        late += usize::from(is_late);
        if let Some(h) = spent {
            took.push(h);
        }
        let rows = [
            by_category
                .entry(c.category().as_str().to_owned())
                .or_default(),
            by_grid
                .entry(c.station.clone().unwrap_or_default())
                .or_default(),
        ];
        for (row, spans) in rows {
            row.registered += 1;
            row.finished += usize::from(done.is_some_and(|d| d >= start && d < end));
            row.open += usize::from(done.is_none() && c.is_open());
            row.late += usize::from(is_late);
            spans.extend(spent);
        }
        if let Some(i) = bucket_of(c.created) {
            let (row, spans) = &mut by_period[i];
            row.registered += 1;
            row.open += usize::from(done.is_none() && c.is_open());
            row.late += usize::from(is_late);
            spans.extend(spent);
        }
    }
    let close = |(mut row, spans): (CaseRow, Vec<f64>)| {
        row.mean_hours = (!spans.is_empty())
            .then(|| (spans.iter().sum::<f64>() / spans.len() as f64 * 100.0).round() / 100.0);
        row
    };
    took.sort_by(f64::total_cmp);
    CaseFigures {
        by_category: by_category
            .into_iter()
            .map(|(k, (row, spans))| close((CaseRow { key: k, ..row }, spans)))
            .collect(),
        by_grid: by_grid
            .into_iter()
            .map(|(k, (row, spans))| {
                let name = grid_name(&k);
                close((
                    CaseRow {
                        key: k,
                        name,
                        ..row
                    },
                    spans,
                ))
            })
            .collect(),
        by_period: by_period.into_iter().map(close).collect(),
        time_to_finish: TimeToFinish {
            finished: took.len(),
            mean_hours: (!took.is_empty())
                .then(|| (took.iter().sum::<f64>() / took.len() as f64 * 100.0).round() / 100.0),
            p50_hours: percentile(&took, 0.5),
            p90_hours: percentile(&took, 0.9),
        },
        late_share: if registered == 0 {
            0.0
        } else {
            (late as f64 / registered as f64 * 10_000.0).round() / 10_000.0
        },
        registered,
        late,
    }
}

/// The rules whose alerts mean a device was down.
const DEVICE_DOWN: [&str; 2] = ["camera.offline", "terminal.offline"];

fn when(a: &Alert, action: &str) -> Option<OffsetDateTime> {
    a.audit.iter().find(|e| e.action == action).map(|e| e.at)
}

/// Whether `a` is an outage `uptime` counts in `w`: a centre's or a device's offline alert
/// that overlaps the window. What figures copy out of the alert engine, of all it keeps.
pub fn is_outage_in(a: &Alert, w: &Window) -> bool {
    let outage = a.rule == "gateway.offline" || DEVICE_DOWN.contains(&a.rule.as_str());
    let end = when(a, "cleared").or_else(|| when(a, "resolved"));
    outage && a.opened < w.end() && end.is_none_or(|e| e > w.start())
}

/// Each gateway's uptime and its devices' per bucket of `w`: the time its offline alerts (and
/// its cameras' and terminals') overlap each bucket, against the bucket's length (up to now).
/// `devices` is how many devices each gateway reports; `gateways` those to figure.
pub fn uptime(
    alerts: &[Alert],
    devices: &BTreeMap<String, u32>,
    gateways: &[String],
    w: &Window,
    now: OffsetDateTime,
) -> Vec<UptimeRow> {
    let buckets = w.buckets();
    let overlap = |from: OffsetDateTime, to: OffsetDateTime, b: &Bucket| {
        let (s, e) = (from.max(b.start), to.min(b.end).min(now));
        (e - s).max(time::Duration::ZERO)
    };
    gateways
        .iter()
        .map(|gw| {
            let mine: Vec<&Alert> = alerts.iter().filter(|a| &a.gateway == gw).collect();
            let mut down_gw = vec![time::Duration::ZERO; buckets.len()];
            let mut down_dev = vec![time::Duration::ZERO; buckets.len()];
            let mut down_devices = std::collections::BTreeSet::new();
            for a in &mine {
                let end = when(a, "cleared")
                    .or_else(|| when(a, "resolved"))
                    .unwrap_or(now);
                let into = if a.rule == "gateway.offline" {
                    &mut down_gw
                } else if DEVICE_DOWN.contains(&a.rule.as_str()) {
                    down_devices.insert(a.originator.as_str());
                    &mut down_dev
                } else {
                    continue;
                };
                for (i, b) in buckets.iter().enumerate() {
                    into[i] += overlap(a.opened, end, b);
                }
            }
            let n = devices
                .get(gw)
                .copied()
                .unwrap_or(0)
                .max(down_devices.len() as u32);
            let pct = |down: time::Duration, b: &Bucket, count: u32| {
                let span = (b.end.min(now) - b.start).max(time::Duration::ZERO) * count.max(1);
                if span.is_zero() {
                    100.0
                } else {
                    ((1.0 - down / span).clamp(0.0, 1.0) * 10_000.0).round() / 100.0
                }
            };
            UptimeRow {
                gateway: gw.clone(),
                uptime_pct: buckets
                    .iter()
                    .zip(&down_gw)
                    .map(|(b, d)| pct(*d, b, 1))
                    .collect(),
                device_uptime_pct: buckets
                    .iter()
                    .zip(&down_dev)
                    .map(|(b, d)| if n == 0 { 100.0 } else { pct(*d, b, n) })
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::engine::{Engine, Policy};
    use crate::assessment::tests::obs;
    use crate::cases::HistoryEntry;
    use time::macros::{date, datetime, offset};

    fn window(from: Date, to: Date, period: Period) -> Window {
        Window {
            from,
            to,
            period,
            offset: offset!(+8),
        }
    }

    #[test]
    fn a_window_is_cut_by_day_week_and_month_in_the_streets_time_zone() {
        let labels = |w: &Window| w.buckets().into_iter().map(|b| b.label).collect::<Vec<_>>();
        let m = window(date!(2026 - 11 - 15), date!(2026 - 12 - 10), Period::Month);
        assert_eq!(labels(&m), ["2026-11", "2026-12"]);
        let b = m.buckets();
        assert_eq!(b[0].start, datetime!(2026-11-15 0:00 +8));
        assert_eq!(b[0].end, datetime!(2026-12-01 0:00 +8));
        assert_eq!(b[1].end, datetime!(2026-12-11 0:00 +8));
        // 2026-11-25 is a Wednesday: weeks start on Mondays after the first.
        let w = window(date!(2026 - 11 - 25), date!(2026 - 12 - 08), Period::Week);
        assert_eq!(labels(&w), ["2026-11-25~", "2026-11-30~", "2026-12-07~"]);
        let d = window(date!(2026 - 12 - 01), date!(2026 - 12 - 03), Period::Day);
        assert_eq!(labels(&d), ["2026-12-01", "2026-12-02", "2026-12-03"]);
        assert_eq!(d.end(), datetime!(2026-12-04 0:00 +8));
        // A window backwards has nothing in it.
        assert!(
            window(date!(2026 - 12 - 03), date!(2026 - 12 - 01), Period::Day)
                .buckets()
                .is_empty()
        );
    }

    fn case(receipt: &str, category: &str, station: &str, created: OffsetDateTime) -> Case {
        Case {
            station: Some(station.into()),
            due: Some(created + time::Duration::days(3)),
            ..Case::registered(
                receipt,
                "gw-1",
                serde_json::json!({"category": category}),
                created,
            )
        }
    }

    fn finished(mut c: Case, status: &str, at: OffsetDateTime) -> Case {
        c.history
            .push(HistoryEntry::new("accepted", "op", "", c.created));
        c.history.push(HistoryEntry::new(status, "op", "", at));
        c.status = status.into();
        c
    }

    #[test]
    fn cases_are_counted_by_category_grid_and_period_with_their_time_and_lateness() {
        let w = window(date!(2026 - 12 - 01), date!(2026 - 12 - 02), Period::Day);
        let day1 = datetime!(2026-12-01 9:00 +8);
        let now = datetime!(2026-12-06 9:00 +8);
        let cases = [
            // Resolved 10 h later: in time.
            finished(
                case("r1", "dispute", "B1", day1),
                "resolved",
                day1 + time::Duration::hours(10),
            ),
            // Open past its 3 days: late.
            case("r2", "report", "B2", day1 + time::Duration::days(1)),
            // Registered before the window, delivered in it: finished, not registered.
            finished(
                case("r3", "application", "B1", day1 - time::Duration::days(5)),
                "delivered",
                day1 + time::Duration::hours(1),
            ),
            // After the window: not counted.
            case("r4", "report", "B1", day1 + time::Duration::days(3)),
        ];
        let f = super::cases(&cases, &w, now, Duration::from_secs(72 * 3600), |g| {
            Some(format!("网格{g}"))
        });
        assert_eq!((f.registered, f.late, f.late_share), (2, 1, 0.5));
        assert_eq!(f.time_to_finish.finished, 1);
        assert_eq!(f.time_to_finish.mean_hours, Some(10.0));
        assert_eq!(f.time_to_finish.p90_hours, Some(10.0));
        let cat: Vec<_> = f
            .by_category
            .iter()
            .map(|r| (r.key.as_str(), r.registered, r.finished, r.open, r.late))
            .collect();
        assert_eq!(
            cat,
            [
                ("application", 0, 1, 0, 0),
                ("dispute", 1, 1, 0, 0),
                ("report", 1, 0, 1, 1)
            ]
        );
        let b1 = &f.by_grid[0];
        assert_eq!(
            (b1.key.as_str(), b1.name.as_deref()),
            ("B1", Some("网格B1"))
        );
        assert_eq!(
            (b1.registered, b1.finished, b1.mean_hours),
            (1, 2, Some(10.0))
        );
        let per_day: Vec<_> = f
            .by_period
            .iter()
            .map(|r| (r.key.as_str(), r.registered, r.finished, r.late))
            .collect();
        assert_eq!(per_day, [("2026-12-01", 1, 2, 0), ("2026-12-02", 1, 0, 1)]);
    }

    #[test]
    fn uptime_counts_each_outage_in_the_periods_it_overlaps() {
        let w = window(date!(2026 - 12 - 01), date!(2026 - 12 - 03), Period::Day);
        let mut e = Engine::new(Policy::default());
        // The gateway down from noon of the 1st to noon of the 2nd.
        e.observe(
            obs("gw-1", "gateway.offline", true),
            datetime!(2026-12-01 12:00 +8),
        );
        e.observe(
            obs("gw-1", "gateway.offline", false),
            datetime!(2026-12-02 12:00 +8),
        );
        // One of its 4 cameras down all of the 3rd, and still (now is the 3rd's end).
        e.observe(
            obs("gw-1/camera/a", "camera.offline", true),
            datetime!(2026-12-03 0:00 +8),
        );
        let alerts: Vec<Alert> = e.list(true).into_iter().cloned().collect();
        let devices = BTreeMap::from([("gw-1".to_owned(), 4)]);
        let now = datetime!(2026-12-04 0:00 +8);
        let rows = uptime(&alerts, &devices, &["gw-1".into(), "gw-2".into()], &w, now);
        assert_eq!(rows[0].uptime_pct, [50.0, 50.0, 100.0]);
        assert_eq!(rows[0].device_uptime_pct, [100.0, 100.0, 75.0]);
        assert_eq!(rows[1].uptime_pct, [100.0, 100.0, 100.0], "never down");
        // Up to now only: half of the 3rd gone, the camera down all of it.
        let rows = uptime(
            &alerts,
            &devices,
            &["gw-1".into()],
            &w,
            datetime!(2026-12-03 12:00 +8),
        );
        assert_eq!(rows[0].device_uptime_pct[2], 75.0);
        // What is copied out for it: the outages that overlap the window, nothing else.
        let outages = |w: &Window| alerts.iter().filter(|a| is_outage_in(a, w)).count();
        assert_eq!(outages(&w), 2);
        let after = window(date!(2026 - 12 - 03), date!(2026 - 12 - 03), Period::Day);
        assert_eq!(outages(&after), 1, "the gateway was back by then");
        let before = window(date!(2026 - 11 - 01), date!(2026 - 11 - 30), Period::Day);
        assert_eq!(outages(&before), 0);
        e.observe(
            obs("gw-1/case/gw-1-000001-ABCD", "case.overdue", true),
            datetime!(2026-12-03 1:00 +8),
        );
        let late = e.list(false).into_iter().find(|a| a.rule == "case.overdue");
        assert!(!is_outage_in(late.expect("the case's alert"), &after));
    }
}
