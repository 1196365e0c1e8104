//! The street's master data that kiosks answer from: the grid (street → area → base grid, with
//! boundaries and grid staff), the party organisation tree, the public service items and the
//! learning content.
//!
//! Central imports it from files a street office can produce (`load_dir`: CSV tables, GeoJSON
//! boundaries, the catalogue as JSON or CSV), checks everything (`validate`), and publishes it
//! as versions; gateways keep a replica. Nothing partial is ever accepted: a data set with one
//! bad row is refused, with every problem named by file, line and field.

pub mod address;
pub mod csv;
pub mod geo;
mod load;
pub mod replica;
mod validate;

pub use validate::calendar_date;

use serde::{Deserialize, Serialize};

pub use load::{load_dir, Sources};
pub use validate::validate;

/// What is wrong with one piece of master data (a CSV file, an address, a boundary), in
/// words that name it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

impl From<Malformed> for String {
    fn from(m: Malformed) -> Self {
        m.0
    }
}

/// One problem in the input, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub file: String,
    /// 1-based line (CSV) or position (JSON array index + 1, GeoJSON feature index + 1).
    pub line: Option<usize>,
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.file)?;
        if let Some(l) = self.line {
            write!(f, " line {l}")?;
        }
        if !self.field.is_empty() {
            write!(f, ", {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Street,
    Area,
    Base,
}

impl Level {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "street" | "街道" => Some(Level::Street),
            "area" | "片区" => Some(Level::Area),
            "base" | "基础网格" => Some(Level::Base),
            _ => None,
        }
    }
}

/// A grid unit at any level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridUnit {
    pub code: String,
    pub name: String,
    pub level: Level,
    pub parent: Option<String>,
    /// Households (base grids: 300–500 by the street's plan).
    pub households: Option<u32>,
    pub boundary: Option<geo::Polygon>,
    pub staff: Vec<Staff>,
    /// The roads and house numbers or places a base grid covers (`address` syntax), so a
    /// resident can find their grid by their address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staff {
    pub name: String,
    /// 网格长, 专职网格员, 兼职网格员, …
    pub role: String,
    pub duty_phone: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartyOrg {
    pub code: String,
    pub name: String,
    /// 党工委, 党委, 党总支 or 党支部.
    pub kind: String,
    pub parent: Option<String>,
    /// Grid units it covers.
    pub grids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// One of 申请, 受理, 审查, 决定, 送达, in that order.
    pub name: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faq {
    pub q: String,
    pub a: String,
}

/// A public service item: one code across the street.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceItem {
    pub code: String,
    pub name: String,
    pub department: String,
    /// 窗口, 网上, 自助终端.
    pub channel: Vec<String>,
    pub materials: Vec<String>,
    /// The legal time limit, in working days.
    pub time_limit_days: u32,
    /// What the street promises (at most the legal limit).
    #[serde(default)]
    pub promised_days: Option<u32>,
    pub steps: Vec<Step>,
    #[serde(default)]
    pub fees: String,
    #[serde(default)]
    pub faq: Vec<Faq>,
    /// Life events it belongs to (生育, 养老, 就业创业, …), for browsing.
    #[serde(default)]
    pub life_events: Vec<String>,
    #[serde(default)]
    pub keywords: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentKind {
    Document,
    Audio,
    Video,
}

/// A learning-content file: described here, its bytes fetched by hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentFile {
    pub id: String,
    pub kind: ContentKind,
    pub title: String,
    /// Its name for downloads.
    pub file_name: String,
    /// SHA-256 of its bytes, lower-case hex.
    pub sha256: String,
    pub bytes: u64,
}

/// One complete, checked data set. Lists are sorted by code (id), so the same data always
/// serialises — and hashes — the same, whatever the row order of the files.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    pub grids: Vec<GridUnit>,
    pub party: Vec<PartyOrg>,
    pub items: Vec<ServiceItem>,
    pub content: Vec<ContentFile>,
    /// Central's own: never sent to gateways (see [`Dataset::scoped`]). Absent from the JSON
    /// when empty, so data sets without it hash as they always did.
    #[serde(default, skip_serializing_if = "CaseRules::is_empty")]
    pub cases: CaseRules,
    /// Where centres and their devices stand, for central's map. Central's own, like the case
    /// rules: a camera's position is not a kiosk's business.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub places: Vec<Place>,
}

/// Where a centre or one of its devices stands (`places.geojson`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Place {
    pub gateway: String,
    /// `camera/<id>`, `terminal/<id>` or `source/<id>` (as alerts name their originator);
    /// none: the centre itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// `[longitude, latitude]`, WGS 84.
    pub at: [f64; 2],
}

/// The kinds of device a place may name.
pub const PLACE_KINDS: [&str; 3] = ["camera", "terminal", "source"];

/// What holds residents' cases to their time: the working-day calendar and each category's
/// limit (`calendar.csv`, `case_limits.csv`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseRules {
    /// Holidays on what would be working days, and weekend days that are worked (调休).
    #[serde(default)]
    pub calendar: Vec<CalendarDay>,
    /// Working days allowed by category; an application takes its service item's instead.
    #[serde(default)]
    pub limits: Vec<CaseLimit>,
}

impl CaseRules {
    pub fn is_empty(&self) -> bool {
        self.calendar.is_empty() && self.limits.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarDay {
    /// `YYYY-MM-DD`.
    pub date: String,
    pub kind: DayKind,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DayKind {
    /// Off work (法定节假日).
    Holiday,
    /// Worked although a weekend day (调休上班).
    Workday,
}

impl DayKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "holiday" | "节假日" | "休" => Some(DayKind::Holiday),
            "workday" | "调休上班" | "班" => Some(DayKind::Workday),
            _ => None,
        }
    }
}

/// Case categories a limit may name.
pub const CASE_CATEGORIES: [&str; 3] = ["report", "dispute", "application"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseLimit {
    /// `report`, `dispute` or `application` (for items without a limit of their own).
    pub category: String,
    pub working_days: u32,
    /// Working days before the limit when the assignee is reminded (0: on the last day).
    #[serde(default)]
    pub remind_days: u32,
}

/// The step names, in their order.
pub const STEPS: [&str; 5] = ["申请", "受理", "审查", "决定", "送达"];
pub const CHANNELS: [&str; 3] = ["窗口", "网上", "自助终端"];
pub const PARTY_KINDS: [&str; 4] = ["党工委", "党委", "党总支", "党支部"];

impl Dataset {
    pub fn sort(&mut self) {
        self.grids.sort_by(|a, b| a.code.cmp(&b.code));
        self.party.sort_by(|a, b| a.code.cmp(&b.code));
        self.items.sort_by(|a, b| a.code.cmp(&b.code));
        self.content.sort_by(|a, b| a.id.cmp(&b.id));
        self.cases.calendar.sort_by(|a, b| a.date.cmp(&b.date));
        self.cases
            .limits
            .sort_by(|a, b| a.category.cmp(&b.category));
        self.places
            .sort_by(|a, b| (&a.gateway, &a.device).cmp(&(&b.gateway, &b.device)));
    }

    /// SHA-256 of the data set's canonical JSON, hex.
    pub fn hash(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        hex(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref())
    }

    /// A one-line summary for people.
    pub fn summary(&self) -> String {
        let count = |l: Level| self.grids.iter().filter(|g| g.level == l).count();
        format!(
            "{} street(s), {} area(s), {} base grid(s), {} staff, {} party organisation(s), {} service item(s), {} content file(s)",
            count(Level::Street),
            count(Level::Area),
            count(Level::Base),
            self.grids.iter().map(|g| g.staff.len()).sum::<usize>(),
            self.party.len(),
            self.items.len(),
            self.content.len()
        )
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// SHA-256 of everything `reader` yields, lower-case hex (files too large to hold whole).
pub fn sha256_hex_of(mut reader: impl std::io::Read) -> std::io::Result<String> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(hex(ctx.finish().as_ref()));
        }
        ctx.update(&buf[..n]);
    }
}
