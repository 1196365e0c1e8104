//! The rules a data set must keep before it is published. Every problem is reported, each
//! naming the file, the row (by its code) and the field.
//!
//! Codes (the street's agreed formats):
//! - street: 12 digits (the statistical division code of the street, e.g. `110199001000`);
//! - area: its street's code and 2 digits; base grid: its area's code and 3 digits;
//! - party organisation: `DW` and 8 to 16 digits;
//! - service item: department letters, the 6-digit county code, `-` and 4 digits
//!   (`MZ110199-0001`);
//! - content: lower-case letters, digits and `-`.

use std::collections::{BTreeMap, BTreeSet};

use super::{Dataset, Level, Problem, CHANNELS, PARTY_KINDS, STEPS};

fn digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

fn item_code(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 13
        && b[..2].iter().all(u8::is_ascii_uppercase)
        && b[2..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'-'
        && b[9..].iter().all(u8::is_ascii_digit)
}

fn party_code(s: &str) -> bool {
    s.strip_prefix("DW")
        .is_some_and(|d| (8..=16).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
}

fn phone(s: &str) -> bool {
    let mobile = digits(s, 11) && s.starts_with('1');
    let landline = s.starts_with('0') && {
        let d: String = s.chars().filter(|c| *c != '-').collect();
        (10..=12).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit())
    };
    mobile || landline
}

struct Report<'a> {
    file: &'static str,
    code: &'a str,
    out: &'a mut Vec<Problem>,
}

impl Report<'_> {
    fn bad(&mut self, field: &str, message: impl Into<String>) {
        self.out.push(Problem {
            file: self.file.to_owned(),
            line: None,
            field: if self.code.is_empty() {
                field.to_owned()
            } else {
                format!("{} {field}", self.code)
            },
            message: message.into(),
        });
    }
}

fn text(r: &mut Report<'_>, field: &str, value: &str, max: usize) {
    if value.trim().is_empty() {
        r.bad(field, "must not be empty");
    } else if value.chars().count() > max {
        r.bad(field, format!("at most {max} characters"));
    }
}

/// Every problem in `d`; empty when it may be published.
pub fn validate(d: &Dataset) -> Vec<Problem> {
    let mut out = Vec::new();
    grids(d, &mut out);
    overlapping_addresses(d, &mut out);
    party(d, &mut out);
    items(d, &mut out);
    content(d, &mut out);
    case_rules(d, &mut out);
    out
}

fn duplicates<'a>(
    codes: impl Iterator<Item = &'a str>,
    file: &'static str,
    out: &mut Vec<Problem>,
) {
    let mut seen = BTreeSet::new();
    for c in codes {
        if !seen.insert(c) {
            out.push(Problem {
                file: file.to_owned(),
                line: None,
                field: format!("{c} code"),
                message: "duplicate code".to_owned(),
            });
        }
    }
}

fn grids(d: &Dataset, out: &mut Vec<Problem>) {
    duplicates(d.grids.iter().map(|g| g.code.as_str()), "grids.csv", out);
    let by_code: BTreeMap<&str, _> = d.grids.iter().map(|g| (g.code.as_str(), g)).collect();
    let streets = d.grids.iter().filter(|g| g.level == Level::Street).count();
    if streets != 1 {
        out.push(Problem {
            file: "grids.csv".into(),
            line: None,
            field: "level".into(),
            message: format!("{streets} street(s); a data set is one street's"),
        });
    }
    for g in &d.grids {
        let mut r = Report {
            file: "grids.csv",
            code: &g.code,
            out,
        };
        text(&mut r, "name", &g.name, 64);
        let parent = g.parent.as_deref().and_then(|p| by_code.get(p));
        match (g.level, &g.parent, parent) {
            (Level::Street, None, _) => {
                if !digits(&g.code, 12) {
                    r.bad("code", "a street's code is 12 digits");
                }
            }
            (Level::Street, Some(_), _) => r.bad("parent", "a street has no parent"),
            (_, None, _) => r.bad("parent", "required for an area or a base grid"),
            (_, Some(p), None) => r.bad("parent", format!("{p:?} is not a grid code")),
            (level, Some(p), Some(parent)) => {
                let (want, extra) = match level {
                    Level::Area => (Level::Street, 2),
                    _ => (Level::Area, 3),
                };
                if parent.level != want {
                    r.bad(
                        "parent",
                        format!(
                            "{p} is a {:?}; the parent of a {level:?} must be a {want:?}",
                            parent.level
                        )
                        .to_lowercase(),
                    );
                }
                let ok = g
                    .code
                    .strip_prefix(p.as_str())
                    .is_some_and(|rest| digits(rest, extra));
                if !ok {
                    r.bad(
                        "code",
                        format!("must be its parent's code {p} and {extra} digits"),
                    );
                }
            }
        }
        match (g.level, g.households) {
            (Level::Base, None) => r.bad("households", "required for a base grid"),
            (Level::Base, Some(n)) if !(1..=5000).contains(&n) => {
                r.bad("households", format!("{n} is out of range 1 to 5000"))
            }
            _ => {}
        }
        for a in &g.addresses {
            if let Err(e) = super::address::parse(a) {
                r.bad("addresses", e);
            }
        }
        match &g.boundary {
            None if g.level == Level::Base => r.bad(
                "boundary",
                "a base grid needs its boundary in boundaries.geojson",
            ),
            Some(b) => {
                if let Err(e) = b.check() {
                    r.bad("boundary", e);
                }
            }
            None => {}
        }
        for (i, s) in g.staff.iter().enumerate() {
            let f = |what: &str| format!("staff[{}].{what}", i + 1);
            let mut r = Report {
                file: "grid_staff.csv",
                code: &g.code,
                out: r.out,
            };
            text(&mut r, &f("name"), &s.name, 32);
            text(&mut r, &f("role"), &s.role, 32);
            if !phone(&s.duty_phone) {
                r.bad(
                    &f("duty_phone"),
                    format!(
                        "{:?} is not a phone number (11-digit mobile or 0… landline)",
                        s.duty_phone
                    ),
                );
            }
        }
    }
}

/// Two grids must not both cover a house: a resident's address would have two grids.
fn overlapping_addresses(d: &Dataset, out: &mut Vec<Problem>) {
    use super::address::{parse, Covered, Side};
    let mut ranges: Vec<(&str, String, u32, u32, Side, &str)> = Vec::new();
    for g in &d.grids {
        for a in &g.addresses {
            if let Ok(Covered::Numbers {
                road,
                from,
                to,
                side,
            }) = parse(a)
            {
                ranges.push((g.code.as_str(), road, from, to, side, a.as_str()));
            }
        }
    }
    for (i, a) in ranges.iter().enumerate() {
        for b in &ranges[i + 1..] {
            let same_side = a.4 == b.4 || a.4 == Side::Both || b.4 == Side::Both;
            if a.0 != b.0 && a.1 == b.1 && same_side && a.2 <= b.3 && b.2 <= a.3 {
                out.push(Problem {
                    file: "grids.csv".to_owned(),
                    line: None,
                    field: format!("{} addresses", b.0),
                    message: format!("{} overlaps {} of grid {}", b.5, a.5, a.0),
                });
            }
        }
    }
}

fn party(d: &Dataset, out: &mut Vec<Problem>) {
    duplicates(d.party.iter().map(|p| p.code.as_str()), "party.csv", out);
    let parents: BTreeMap<&str, Option<&str>> = d
        .party
        .iter()
        .map(|p| (p.code.as_str(), p.parent.as_deref()))
        .collect();
    let grid_codes: BTreeSet<&str> = d.grids.iter().map(|g| g.code.as_str()).collect();
    for o in &d.party {
        let mut r = Report {
            file: "party.csv",
            code: &o.code,
            out,
        };
        if !party_code(&o.code) {
            r.bad(
                "code",
                "a party organisation's code is DW and 8 to 16 digits",
            );
        }
        text(&mut r, "name", &o.name, 64);
        if !PARTY_KINDS.contains(&o.kind.as_str()) {
            r.bad(
                "kind",
                format!("{:?} is not a kind; use {}", o.kind, PARTY_KINDS.join(", ")),
            );
        }
        if let Some(p) = &o.parent {
            if !parents.contains_key(p.as_str()) {
                r.bad("parent", format!("{p:?} is not a party organisation code"));
            }
        }
        // Walk up: a cycle comes back to where it started (or loops above it).
        let mut seen = BTreeSet::from([o.code.as_str()]);
        let mut at = o.parent.as_deref();
        while let Some(c) = at {
            if !seen.insert(c) {
                r.bad("parent", format!("the parents form a cycle through {c}"));
                break;
            }
            at = parents.get(c).copied().flatten();
        }
        for g in &o.grids {
            if !grid_codes.contains(g.as_str()) {
                r.bad("grids", format!("{g:?} is not a grid code"));
            }
        }
    }
}

fn items(d: &Dataset, out: &mut Vec<Problem>) {
    const F: &str = "service_items";
    duplicates(d.items.iter().map(|i| i.code.as_str()), F, out);
    for i in &d.items {
        let mut r = Report {
            file: F,
            code: &i.code,
            out,
        };
        if !item_code(&i.code) {
            r.bad("code", "an item's code is 2 capital letters, the 6-digit county code, '-' and 4 digits (MZ110199-0001)");
        }
        text(&mut r, "name", &i.name, 64);
        text(&mut r, "department", &i.department, 64);
        if i.channel.is_empty() {
            r.bad(
                "channel",
                format!("at least one of {}", CHANNELS.join(", ")),
            );
        }
        for c in &i.channel {
            if !CHANNELS.contains(&c.as_str()) {
                r.bad(
                    "channel",
                    format!("{c:?} is not a channel; use {}", CHANNELS.join(", ")),
                );
            }
        }
        if i.materials.is_empty() {
            r.bad("materials", "list what the resident must bring");
        }
        for m in &i.materials {
            text(&mut r, "materials", m, 100);
        }
        if !(1..=365).contains(&i.time_limit_days) {
            r.bad(
                "time_limit_days",
                format!("{} is out of range 1 to 365", i.time_limit_days),
            );
        }
        if let Some(p) = i.promised_days {
            if p == 0 || p > i.time_limit_days {
                r.bad(
                    "promised_days",
                    format!("{p}: must be 1 to the legal limit {}", i.time_limit_days),
                );
            }
        }
        let order: Vec<Option<usize>> = i
            .steps
            .iter()
            .map(|s| STEPS.iter().position(|n| *n == s.name))
            .collect();
        if let Some(k) = order.iter().position(Option::is_none) {
            r.bad(
                "steps",
                format!(
                    "{:?} is not a step; use {}",
                    i.steps[k].name,
                    STEPS.join("、")
                ),
            );
        } else if !order.windows(2).all(|w| w[0] < w[1]) {
            r.bad(
                "steps",
                format!(
                    "out of order or repeated; the order is {}",
                    STEPS.join("、")
                ),
            );
        } else if !i.steps.iter().any(|s| s.name == "申请")
            || !i.steps.iter().any(|s| s.name == "决定")
        {
            r.bad("steps", "must include 申请 and 决定");
        }
        for f in &i.faq {
            if f.q.trim().is_empty() || f.a.trim().is_empty() {
                r.bad("faq", "every question needs its answer");
            }
        }
    }
}

fn content(d: &Dataset, out: &mut Vec<Problem>) {
    duplicates(d.content.iter().map(|c| c.id.as_str()), "content.csv", out);
    for c in &d.content {
        let mut r = Report {
            file: "content.csv",
            code: &c.id,
            out,
        };
        let ok = !c.id.is_empty()
            && c.id.len() <= 64
            && c.id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            r.bad("id", "lower-case letters, digits and '-', at most 64");
        }
        text(&mut r, "title", &c.title, 100);
    }
}

/// A date of the calendar as `time` reads it.
pub fn calendar_date(s: &str) -> Option<time::Date> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, fmt).ok()
}

fn case_rules(d: &Dataset, out: &mut Vec<Problem>) {
    duplicates(
        d.cases.calendar.iter().map(|c| c.date.as_str()),
        "calendar.csv",
        out,
    );
    for c in &d.cases.calendar {
        let mut r = Report {
            file: "calendar.csv",
            code: &c.date,
            out,
        };
        match calendar_date(&c.date) {
            None => r.bad("date", "not a date; write YYYY-MM-DD"),
            Some(date) => {
                let weekend = matches!(
                    date.weekday(),
                    time::Weekday::Saturday | time::Weekday::Sunday
                );
                if c.kind == super::DayKind::Workday && !weekend {
                    r.bad(
                        "kind",
                        "a worked day (调休上班) must be a Saturday or Sunday",
                    );
                }
            }
        }
        if c.name.chars().count() > 32 {
            r.bad("name", "at most 32 characters");
        }
    }
    duplicates(
        d.cases.limits.iter().map(|l| l.category.as_str()),
        "case_limits.csv",
        out,
    );
    for l in &d.cases.limits {
        let mut r = Report {
            file: "case_limits.csv",
            code: &l.category,
            out,
        };
        if !super::CASE_CATEGORIES.contains(&l.category.as_str()) {
            r.bad(
                "category",
                format!("use one of {}", super::CASE_CATEGORIES.join(", ")),
            );
        }
        if !(1..=365).contains(&l.working_days) {
            r.bad("working_days", "1 to 365");
        }
        if l.remind_days >= l.working_days.max(1) {
            r.bad("remind_days", "fewer than working_days");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::masterdata::load_dir;
    use std::path::PathBuf;

    fn sample() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/sample-data")
    }

    #[test]
    fn the_sample_data_set_is_valid_and_hashes_the_same_whatever_the_row_order() {
        let src = load_dir(&sample()).unwrap();
        let d = src.read().unwrap();
        assert_eq!(validate(&d), vec![], "{}", d.summary());
        assert!(d.items.len() >= 30);
        assert_eq!(
            d.grids.iter().filter(|g| g.level == Level::Base).count(),
            10
        );
        // Reversing the rows of grids.csv changes nothing.
        let mut shuffled = src.clone();
        let text = &src.texts["grids.csv"];
        let mut lines: Vec<&str> = text.lines().collect();
        lines[1..].reverse();
        shuffled.texts.insert("grids.csv".into(), lines.join("\n"));
        assert_eq!(shuffled.read().unwrap().hash(), d.hash());
    }

    #[test]
    fn every_bad_row_and_field_is_named() {
        let mut src = load_dir(&sample()).unwrap();
        let grids = src.texts["grids.csv"].clone()
            // a duplicate, an unknown parent, a code not under its parent, a bad level
            + "11019900100001001,重复网格,base,11019900100001,400,\n"
            + "11019900100009001,孤儿网格,base,11019900100009,400,\n"
            + "1101990010000200,短码网格,base,11019900100002,400,\n"
            // an address range another grid covers, and one not in the agreed form
            + "11019900100001009,重叠网格,base,11019900100001,400,红星路50-70号双;红星路1-9\n";
        src.texts.insert("grids.csv".into(), grids);
        let party = src.texts["party.csv"].clone()
            + "DW11019900109901,甲支部,党支部,DW11019900109902,\n"
            + "DW11019900109902,乙支部,党支部,DW11019900109901,\n";
        src.texts.insert("party.csv".into(), party);
        let calendar = src.texts["calendar.csv"].clone()
            // a bad date, a worked Wednesday, a date twice
            + "2026-02-30,holiday,\n"
            + "2026-10-14,workday,\n"
            + "2026-10-01,holiday,国庆节\n";
        src.texts.insert("calendar.csv".into(), calendar);
        src.texts.insert(
            "case_limits.csv".into(),
            "category,working_days,remind_days\nreport,0,\nchat,5,1\ndispute,3,3\n".into(),
        );
        let d = src.read().unwrap();
        let problems: Vec<String> = validate(&d).iter().map(ToString::to_string).collect();
        let all = problems.join("\n");
        for want in [
            "calendar.csv, 2026-02-30 date: not a date; write YYYY-MM-DD",
            "calendar.csv, 2026-10-14 kind: a worked day (调休上班) must be a Saturday or Sunday",
            "calendar.csv, 2026-10-01 code: duplicate code",
            "case_limits.csv, report working_days: 1 to 365",
            "case_limits.csv, chat category: use one of report, dispute, application",
            "case_limits.csv, dispute remind_days: fewer than working_days",
            "11019900100001001 code: duplicate code",
            "11019900100009001 parent: \"11019900100009\" is not a grid code",
            "1101990010000200 code: must be its parent's code 11019900100002 and 3 digits",
            "1101990010000200 boundary: a base grid needs its boundary",
            "DW11019900109901 parent: the parents form a cycle",
            "11019900100001009 addresses: 红星路50-70号双 overlaps 红星路2-60号双 of grid 11019900100001001",
            "11019900100001009 addresses: \"红星路1-9\": house numbers end with 号",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
    }

    #[test]
    fn places_are_points_of_a_centre_or_its_devices_and_stay_at_central() {
        let mut src = load_dir(&sample()).unwrap();
        let d = src.read().unwrap();
        assert!(d
            .places
            .iter()
            .any(|p| p.device.as_deref() == Some("camera/hall-entrance")));
        assert!(d.places.iter().any(|p| p.device.is_none()), "the centre");
        assert!(d.scoped(&[]).places.is_empty(), "never sent to a gateway");
        assert!(d.scoped(&["11019900100001".into()]).places.is_empty());
        let point = |props: &str, at: &str| {
            format!(
                r#"{{"type":"Feature","properties":{props},"geometry":{{"type":"Point","coordinates":{at}}}}}"#
            )
        };
        let features = [
            point(r#"{"gateway":"gw 1"}"#, "[120,30]"),
            point(r#"{"gateway":"gw-1","device":"printer/x"}"#, "[120,30]"),
            point(r#"{"gateway":"gw-1"}"#, "[200,30]"),
            point(r#"{"gateway":"gw-1","device":"camera/a"}"#, "[120,30]"),
            point(r#"{"gateway":"gw-1","device":"camera/a"}"#, "[120.1,30]"),
            point(r#"{"gateway":"gw-1","device":"camera/b"}"#, r#""here""#),
        ];
        src.texts.insert(
            "places.geojson".into(),
            format!(
                r#"{{"type":"FeatureCollection","features":[{}]}}"#,
                features.join(",")
            ),
        );
        let all = src
            .read()
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        for want in [
            "places.geojson line 1, properties.gateway: \"gw 1\"",
            "places.geojson line 2, properties.device: \"printer/x\"",
            "places.geojson line 3, geometry: must be a Point",
            "places.geojson line 5, properties: gw-1 camera/a: placed twice",
            "places.geojson line 6, geometry",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
        assert!(!all.contains("line 4"), "{all}");
    }

    #[test]
    fn reading_problems_name_file_line_and_field() {
        let mut src = load_dir(&sample()).unwrap();
        let grids = src.texts["grids.csv"].clone() + "110199001000999,x,county,110199001000,,\n";
        src.texts.insert("grids.csv".into(), grids);
        let items = src.texts["service_items.json"].replacen(
            "\"time_limit_days\": 30",
            "\"time_limit_days\": \"thirty\"",
            1,
        );
        src.texts.insert("service_items.json".into(), items);
        let problems: Vec<String> = src
            .read()
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        let all = problems.join("\n");
        assert!(
            all.contains("grids.csv line 16, level: \"county\" is not a level"),
            "{all}"
        );
        assert!(
            all.contains("service_items.json line 1, time_limit_days"),
            "{all}"
        );
    }
}
