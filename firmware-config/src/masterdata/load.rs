//! Reading a data set from the files a street office produces. Parsing problems (a bad number,
//! a missing column, malformed JSON) are collected like validation problems, so one run names
//! them all.

use std::collections::BTreeMap;
use std::path::Path;

use super::address;
use super::csv::Table;
use super::geo::Polygon;
use super::{
    sha256_hex, CalendarDay, CaseLimit, ContentFile, ContentKind, Dataset, DayKind, Faq, GridUnit,
    Level, PartyOrg, Problem, ServiceItem, Staff, Step, STEPS,
};

/// The files of a data set, by name (`grids.csv`, `grid_staff.csv`, `boundaries.geojson`,
/// `party.csv`, `service_items.json` or `service_items.csv`, `content.csv`, `calendar.csv`,
/// `case_limits.csv`, `places.geojson`), and the content
/// files' bytes by their path as `content.csv` names them.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    pub texts: BTreeMap<String, String>,
    pub blobs: BTreeMap<String, Vec<u8>>,
}

/// Files a data set may have; `grids.csv` and a catalogue are required.
pub const FILES: [&str; 10] = [
    "grids.csv",
    "grid_staff.csv",
    "boundaries.geojson",
    "party.csv",
    "service_items.json",
    "service_items.csv",
    "content.csv",
    "calendar.csv",
    "places.geojson",
    "case_limits.csv",
];

/// Largest input file accepted.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Reads the data set's files from `dir` (content files relative to it).
pub fn load_dir(dir: &Path) -> Result<Sources, Vec<Problem>> {
    let mut s = Sources::default();
    let mut problems = Vec::new();
    let read = |rel: &str, problems: &mut Vec<Problem>| -> Option<Vec<u8>> {
        let path = dir.join(rel);
        match std::fs::metadata(&path) {
            Ok(m) if m.len() > MAX_FILE_BYTES => {
                problems.push(problem(
                    rel,
                    None,
                    "",
                    format!("{} bytes; at most {MAX_FILE_BYTES}", m.len()),
                ));
                None
            }
            Ok(_) => match std::fs::read(&path) {
                Ok(b) => Some(b),
                Err(e) => {
                    problems.push(problem(rel, None, "", format!("cannot read: {e}")));
                    None
                }
            },
            Err(_) => None,
        }
    };
    for name in FILES {
        if let Some(bytes) = read(name, &mut problems) {
            match String::from_utf8(bytes) {
                Ok(t) => {
                    s.texts.insert(name.to_owned(), t);
                }
                Err(_) => {
                    problems.push(problem(name, None, "", "not UTF-8 text; save it as UTF-8"))
                }
            }
        }
    }
    if let Some(content) = s.texts.get("content.csv").cloned() {
        if let Ok(t) = Table::parse(&content, &["file"]) {
            for (_, row) in &t.rows {
                let rel = t.get(row, "file").to_owned();
                if rel.is_empty() || rel.contains("..") || Path::new(&rel).is_absolute() {
                    continue;
                }
                if let Some(b) = read(&rel, &mut problems) {
                    s.blobs.insert(rel, b);
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(s)
    } else {
        Err(problems)
    }
}

fn problem(file: &str, line: Option<usize>, field: &str, message: impl Into<String>) -> Problem {
    Problem {
        file: file.to_owned(),
        line,
        field: field.to_owned(),
        message: message.into(),
    }
}

fn opt(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn list(s: &str) -> Vec<String> {
    s.split([';', '；'])
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Sources {
    /// Builds the data set; every problem found while reading is returned (validation of the
    /// whole comes after, in [`super::validate`]).
    pub fn read(&self) -> Result<Dataset, Vec<Problem>> {
        let mut p = Vec::new();
        let mut d = Dataset::default();
        self.grids(&mut d, &mut p);
        self.staff(&mut d, &mut p);
        self.boundaries(&mut d, &mut p);
        self.party(&mut d, &mut p);
        self.items(&mut d, &mut p);
        self.content(&mut d, &mut p);
        self.calendar(&mut d, &mut p);
        self.case_limits(&mut d, &mut p);
        self.places(&mut d, &mut p);
        d.sort();
        if p.is_empty() {
            Ok(d)
        } else {
            Err(p)
        }
    }

    fn table(&self, name: &str, required: &[&str], p: &mut Vec<Problem>) -> Option<Table> {
        let text = self.texts.get(name)?;
        match Table::parse(text, required) {
            Ok(t) => Some(t),
            Err(e) => {
                p.push(problem(name, None, "", e));
                None
            }
        }
    }

    fn grids(&self, d: &mut Dataset, p: &mut Vec<Problem>) {
        const F: &str = "grids.csv";
        if !self.texts.contains_key(F) {
            p.push(problem(
                F,
                None,
                "",
                "required: the grid units (code,name,level,parent,households)",
            ));
            return;
        }
        let Some(t) = self.table(F, &["code", "name", "level", "parent", "households"], p) else {
            return;
        };
        for (line, row) in &t.rows {
            let level = t.get(row, "level");
            let Some(level) = Level::parse(level) else {
                p.push(problem(
                    F,
                    Some(*line),
                    "level",
                    format!("{level:?} is not a level; use street, area or base"),
                ));
                continue;
            };
            let households = match t.get(row, "households") {
                "" => None,
                h => match h.parse::<u32>() {
                    Ok(n) => Some(n),
                    Err(_) => {
                        p.push(problem(
                            F,
                            Some(*line),
                            "households",
                            format!("{h:?} is not a whole number"),
                        ));
                        continue;
                    }
                },
            };
            d.grids.push(GridUnit {
                code: t.get(row, "code").to_owned(),
                name: t.get(row, "name").to_owned(),
                level,
                parent: opt(t.get(row, "parent")),
                households,
                boundary: None,
                staff: Vec::new(),
                addresses: address::entries(t.get(row, "addresses"))
                    .map(str::to_owned)
                    .collect(),
            });
        }
    }

    fn staff(&self, d: &mut Dataset, p: &mut Vec<Problem>) {
        const F: &str = "grid_staff.csv";
        let Some(t) = self.table(F, &["grid", "name", "role", "duty_phone"], p) else {
            return;
        };
        for (line, row) in &t.rows {
            let grid = t.get(row, "grid");
            let Some(g) = d.grids.iter_mut().find(|g| g.code == grid) else {
                p.push(problem(
                    F,
                    Some(*line),
                    "grid",
                    format!("{grid:?} is not a grid code in grids.csv"),
                ));
                continue;
            };
            g.staff.push(Staff {
                name: t.get(row, "name").to_owned(),
                role: t.get(row, "role").to_owned(),
                duty_phone: t.get(row, "duty_phone").to_owned(),
            });
        }
    }

    fn boundaries(&self, d: &mut Dataset, p: &mut Vec<Problem>) {
        const F: &str = "boundaries.geojson";
        let Some(features) = self.features(F, p) else {
            return;
        };
        for (i, f) in features.iter().enumerate() {
            let at = Some(i + 1);
            let Some(code) = f["properties"]["code"].as_str() else {
                p.push(problem(
                    F,
                    at,
                    "properties.code",
                    "required: the grid code this boundary is for",
                ));
                continue;
            };
            if f["geometry"]["type"] != "Polygon" {
                p.push(problem(
                    F,
                    at,
                    "geometry.type",
                    format!("{} for {code}: must be Polygon", f["geometry"]["type"]),
                ));
                continue;
            }
            let rings: Result<Vec<Vec<[f64; 2]>>, _> =
                serde_json::from_value(f["geometry"]["coordinates"].clone());
            let Ok(rings) = rings else {
                p.push(problem(
                    F,
                    at,
                    "geometry.coordinates",
                    format!("for {code}: must be rings of [longitude, latitude]"),
                ));
                continue;
            };
            match d.grids.iter_mut().find(|g| g.code == code) {
                Some(g) if g.boundary.is_some() => p.push(problem(
                    F,
                    at,
                    "properties.code",
                    format!("{code}: a second boundary"),
                )),
                Some(g) => g.boundary = Some(Polygon { rings }),
                None => p.push(problem(
                    F,
                    at,
                    "properties.code",
                    format!("{code:?} is not a grid code in grids.csv"),
                )),
            }
        }
    }

    /// A GeoJSON file's features: none when the file is absent, or (said in `p`) when it is
    /// not a FeatureCollection.
    fn features(&self, file: &str, p: &mut Vec<Problem>) -> Option<Vec<serde_json::Value>> {
        let text = self.texts.get(file)?;
        let mut v: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                p.push(problem(file, None, "", format!("not JSON: {e}")));
                return None;
            }
        };
        match (v["type"] == "FeatureCollection", v["features"].take()) {
            (true, serde_json::Value::Array(features)) => Some(features),
            _ => {
                p.push(problem(
                    file,
                    None,
                    "type",
                    "must be a GeoJSON FeatureCollection with features",
                ));
                None
            }
        }
    }

    /// `places.geojson`: Point features, `properties.gateway` and, for a device,
    /// `properties.device` (`camera/<id>`, `terminal/<id>`, `source/<id>`).
    fn places(&self, d: &mut Dataset, p: &mut Vec<Problem>) {
        const F: &str = "places.geojson";
        let Some(features) = self.features(F, p) else {
            return;
        };
        let mut seen = std::collections::BTreeSet::new();
        for (i, f) in features.iter().enumerate() {
            let at = Some(i + 1);
            let props = &f["properties"];
            let gateway = props["gateway"].as_str().unwrap_or_default();
            if crate::ids::GatewayId::new(gateway).is_err() {
                p.push(problem(
                    F,
                    at,
                    "properties.gateway",
                    format!("{gateway:?}: required, a gateway id"),
                ));
                continue;
            }
            let device = props["device"].as_str().map(str::to_owned);
            if let Some(dev) = &device {
                let good = dev.split_once('/').is_some_and(|(kind, id)| {
                    super::PLACE_KINDS.contains(&kind) && !id.is_empty() && id.len() <= 64
                });
                if !good {
                    p.push(problem(
                        F,
                        at,
                        "properties.device",
                        format!("{dev:?}: camera/<id>, terminal/<id> or source/<id>"),
                    ));
                    continue;
                }
            }
            let point: Option<[f64; 2]> = (f["geometry"]["type"] == "Point")
                .then(|| serde_json::from_value(f["geometry"]["coordinates"].clone()).ok())
                .flatten();
            let Some([lon, lat]) = point.filter(|[lon, lat]| {
                lon.is_finite() && lat.is_finite() && lon.abs() <= 180.0 && lat.abs() <= 90.0
            }) else {
                p.push(problem(
                    F,
                    at,
                    "geometry",
                    "must be a Point at [longitude, latitude]",
                ));
                continue;
            };
            if !seen.insert((gateway.to_owned(), device.clone())) {
                p.push(problem(
                    F,
                    at,
                    "properties",
                    format!(
                        "{gateway} {}: placed twice",
                        device.as_deref().unwrap_or("(the centre)")
                    ),
                ));
                continue;
            }
            d.places.push(super::Place {
                gateway: gateway.to_owned(),
                device,
                name: props["name"].as_str().unwrap_or_default().to_owned(),
                at: [lon, lat],
            });
        }
    }

    fn party(&self, d: &mut Dataset, p: &mut Vec<Problem>) {
        let Some(t) = self.table("party.csv", &["code", "name", "kind", "parent", "grids"], p)
        else {
            return;
        };
        for (_, row) in &t.rows {
            d.party.push(PartyOrg {
                code: t.get(row, "code").to_owned(),
                name: t.get(row, "name").to_owned(),
                kind: t.get(row, "kind").to_owned(),
                parent: opt(t.get(row, "parent")),
                grids: list(t.get(row, "grids")),
            });
        }
    }

    fn items(&self, d: &mut Dataset, p: &mut Vec<Problem>) {
        match (
            self.texts.get("service_items.json"),
            self.texts.get("service_items.csv"),
        ) {
            (Some(_), Some(_)) => p.push(problem(
                "service_items.csv",
                None,
                "",
                "give the catalogue once: service_items.json or service_items.csv",
            )),
            (Some(json), None) => {
                let mut de = serde_json::Deserializer::from_str(json);
                match serde_path_to_error::deserialize::<_, Vec<ServiceItem>>(&mut de) {
                    Ok(items) => d.items = items,
                    Err(e) => {
                        let path = e.path().to_string();
                        // `[3].materials` → item 4, field materials.
                        let (line, field) = path
                            .strip_prefix('[')
                            .and_then(|r| r.split_once(']'))
                            .and_then(|(i, rest)| {
                                Some((
                                    i.parse::<usize>().ok()? + 1,
                                    rest.trim_start_matches('.').to_owned(),
                                ))
                            })
                            .map_or((None, path.clone()), |(i, f)| (Some(i), f));
                        p.push(problem(
                            "service_items.json",
                            line,
                            &field,
                            e.into_inner().to_string(),
                        ));
                    }
                }
            }
            (None, Some(_)) => self.items_csv(d, p),
            (None, None) => p.push(problem(
                "service_items.json",
                None,
                "",
                "required: the service catalogue (service_items.json or service_items.csv)",
            )),
        }
    }

    fn items_csv(&self, d: &mut Dataset, p: &mut Vec<Problem>) {
        const F: &str = "service_items.csv";
        let cols = [
            "code",
            "name",
            "department",
            "channel",
            "materials",
            "time_limit_days",
        ];
        let Some(t) = self.table(F, &cols, p) else {
            return;
        };
        for (line, row) in &t.rows {
            let days = |col: &str, p: &mut Vec<Problem>| match t.get(row, col) {
                "" => None,
                v => match v.parse::<u32>() {
                    Ok(n) => Some(n),
                    Err(_) => {
                        p.push(problem(
                            F,
                            Some(*line),
                            col,
                            format!("{v:?} is not a whole number of days"),
                        ));
                        None
                    }
                },
            };
            let Some(limit) = days("time_limit_days", p) else {
                if t.get(row, "time_limit_days").is_empty() {
                    p.push(problem(F, Some(*line), "time_limit_days", "required"));
                }
                continue;
            };
            let steps = match t.get(row, "steps") {
                "" => STEPS
                    .iter()
                    .map(|s| Step {
                        name: (*s).to_owned(),
                        description: String::new(),
                    })
                    .collect(),
                s => list(s)
                    .into_iter()
                    .map(|name| Step {
                        name,
                        description: String::new(),
                    })
                    .collect(),
            };
            let faq = list(t.get(row, "faq"))
                .into_iter()
                .filter_map(|qa| {
                    qa.split_once('|').map(|(q, a)| Faq {
                        q: q.trim().to_owned(),
                        a: a.trim().to_owned(),
                    })
                })
                .collect();
            d.items.push(ServiceItem {
                code: t.get(row, "code").to_owned(),
                name: t.get(row, "name").to_owned(),
                department: t.get(row, "department").to_owned(),
                channel: list(t.get(row, "channel")),
                materials: list(t.get(row, "materials")),
                time_limit_days: limit,
                promised_days: days("promised_days", p),
                steps,
                fees: t.get(row, "fees").to_owned(),
                faq,
                life_events: list(t.get(row, "life_events")),
                keywords: list(t.get(row, "keywords")),
            });
        }
    }

    fn content(&self, d: &mut Dataset, p: &mut Vec<Problem>) {
        const F: &str = "content.csv";
        let Some(t) = self.table(F, &["id", "kind", "title", "file"], p) else {
            return;
        };
        for (line, row) in &t.rows {
            let kind = match t.get(row, "kind") {
                "document" => ContentKind::Document,
                "audio" => ContentKind::Audio,
                "video" => ContentKind::Video,
                k => {
                    p.push(problem(
                        F,
                        Some(*line),
                        "kind",
                        format!("{k:?} is not a kind; use document, audio or video"),
                    ));
                    continue;
                }
            };
            let rel = t.get(row, "file");
            let Some(bytes) = self.blobs.get(rel) else {
                p.push(problem(
                    F,
                    Some(*line),
                    "file",
                    format!("{rel:?} is not there"),
                ));
                continue;
            };
            let sha = sha256_hex(bytes);
            let given = t.get(row, "sha256").to_ascii_lowercase();
            if !given.is_empty() && given != sha {
                p.push(problem(
                    F,
                    Some(*line),
                    "sha256",
                    format!("{given} does not match the file ({sha})"),
                ));
                continue;
            }
            d.content.push(ContentFile {
                id: t.get(row, "id").to_owned(),
                kind,
                title: t.get(row, "title").to_owned(),
                file_name: Path::new(rel)
                    .file_name()
                    .map_or_else(|| rel.to_owned(), |n| n.to_string_lossy().into_owned()),
                sha256: sha,
                bytes: bytes.len() as u64,
            });
        }
    }

    /// `calendar.csv`: `date,kind,name`, a holiday (节假日) or a worked weekend day (调休上班).
    fn calendar(&self, d: &mut Dataset, p: &mut Vec<Problem>) {
        const F: &str = "calendar.csv";
        let Some(t) = self.table(F, &["date", "kind"], p) else {
            return;
        };
        for (line, row) in &t.rows {
            let kind = t.get(row, "kind");
            let Some(kind) = DayKind::parse(kind) else {
                p.push(problem(
                    F,
                    Some(*line),
                    "kind",
                    format!("{kind:?} is not a kind; use holiday (节假日) or workday (调休上班)"),
                ));
                continue;
            };
            d.cases.calendar.push(CalendarDay {
                date: t.get(row, "date").to_owned(),
                kind,
                name: t.get(row, "name").to_owned(),
            });
        }
    }

    /// `case_limits.csv`: `category,working_days,remind_days`.
    fn case_limits(&self, d: &mut Dataset, p: &mut Vec<Problem>) {
        const F: &str = "case_limits.csv";
        let Some(t) = self.table(F, &["category", "working_days"], p) else {
            return;
        };
        for (line, row) in &t.rows {
            let number = |field: &str, p: &mut Vec<Problem>| -> Option<u32> {
                let v = t.get(row, field);
                if v.is_empty() {
                    return Some(0);
                }
                v.parse()
                    .map_err(|_| {
                        p.push(problem(
                            F,
                            Some(*line),
                            field,
                            format!("{v:?} is not a number of days"),
                        ))
                    })
                    .ok()
            };
            let (Some(working_days), Some(remind_days)) =
                (number("working_days", p), number("remind_days", p))
            else {
                continue;
            };
            d.cases.limits.push(CaseLimit {
                category: t.get(row, "category").to_owned(),
                working_days,
                remind_days,
            });
        }
    }
}
