//! Residents' submissions taken at kiosks — reports, disputes (矛盾纠纷), applications. A
//! submission is accepted only once it is durable in the outbox (class `submission`, never
//! evicted); its receipt number is `<gateway>-<sequence number>`, which central also derives
//! from the event, so no number is ever issued twice or lost. The status central sends back
//! is kept here, so a kiosk can answer "where is my case" with the WAN down.
//!
//! Personal data is kept to what the case needs: a name and a phone number.

use serde::{Deserialize, Serialize};

use crate::kiosk::Catalogue;

pub const MAX_BODY_BYTES: usize = 32 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// A problem in the neighbourhood.
    Report,
    /// A dispute to mediate (矛盾纠纷).
    Dispute,
    /// An application for a service item.
    Application,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    pub name: String,
    pub phone: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Point {
    pub lon: f64,
    pub lat: f64,
}

/// `POST /api/v1/kiosk/submissions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSubmission {
    pub category: Category,
    /// Required for an application: the service item applied for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_code: Option<String>,
    /// The base grid it concerns; found from `location` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Point>,
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub contact: Contact,
}

/// What a kiosk is told about a submission.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub receipt: String,
    /// `submitted` (on the gateway), then what central says: `routed`, `in_progress`,
    /// `resolved`, `closed`.
    pub status: String,
    #[serde(default)]
    pub station: Option<String>,
    #[serde(default)]
    pub note: String,
    pub category: Category,
    pub title: String,
    #[serde(with = "time::serde::rfc3339")]
    pub updated: time::OffsetDateTime,
}

fn phone_ok(s: &str) -> bool {
    let mobile = s.len() == 11 && s.starts_with('1') && s.bytes().all(|b| b.is_ascii_digit());
    let d: String = s.chars().filter(|c| *c != '-').collect();
    let landline =
        s.starts_with('0') && (10..=12).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit());
    mobile || landline
}

impl NewSubmission {
    /// Parses and checks a body against the replica; the error names the field.
    pub fn parse(body: &[u8], catalogue: &Catalogue) -> Result<Self, String> {
        let mut de = serde_json::Deserializer::from_slice(body);
        let mut s: Self = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                e.into_inner().to_string()
            } else {
                format!("{path}: {}", e.into_inner())
            }
        })?;
        let len = |v: &str| v.trim().chars().count();
        if !(1..=64).contains(&len(&s.title)) {
            return Err("title: 1 to 64 characters".into());
        }
        if s.description.chars().count() > 2000 {
            return Err("description: at most 2000 characters".into());
        }
        if !(1..=32).contains(&len(&s.contact.name)) {
            return Err("contact.name: 1 to 32 characters".into());
        }
        if !phone_ok(&s.contact.phone) {
            return Err(format!(
                "contact.phone: {:?} is not a phone number (11-digit mobile or 0… landline)",
                s.contact.phone
            ));
        }
        let have_data = catalogue.version > 0;
        match (&s.category, &s.item_code) {
            (Category::Application, None) => {
                return Err("item_code: required for an application".into())
            }
            (_, Some(code)) if have_data && catalogue.item(code).is_none() => {
                return Err(format!("item_code: no service item {code:?}"))
            }
            _ => {}
        }
        if let Some(p) = &s.location {
            if !(-180.0..=180.0).contains(&p.lon) || !(-90.0..=90.0).contains(&p.lat) {
                return Err("location: not a longitude and latitude".into());
            }
        }
        match (&s.grid, &s.location) {
            (Some(g), _) if have_data && catalogue.grid(g).is_none() => {
                return Err(format!("grid: no grid {g:?} in this centre"))
            }
            (None, Some(p)) => s.grid = catalogue.grid_at([p.lon, p.lat]).map(|g| g.code.clone()),
            _ => {}
        }
        Ok(s)
    }
}

/// The receipt number of the submission stored as outbox event `seq`.
pub fn receipt(gateway: &str, seq: u64) -> String {
    format!("{gateway}-{seq:06}")
}

/// Submission statuses kept on the gateway (in the replica's database).
pub struct Statuses {
    tree: sled::Tree,
}

impl Statuses {
    pub fn open(db: &sled::Db) -> Result<Self, sled::Error> {
        Ok(Self {
            tree: db.open_tree("submissions")?,
        })
    }

    pub fn get(&self, receipt: &str) -> Option<Status> {
        let v = self.tree.get(receipt.as_bytes()).ok()??;
        serde_json::from_slice(&v).ok()
    }

    /// Stores a status and flushes; blocking.
    pub fn put(&self, s: &Status) -> Result<(), sled::Error> {
        let v = serde_json::to_vec(s).unwrap_or_default();
        self.tree.insert(s.receipt.as_bytes(), v)?;
        self.tree.flush()?;
        Ok(())
    }
}
