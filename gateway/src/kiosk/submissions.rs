//! Residents' submissions taken at kiosks — reports, disputes (矛盾纠纷), applications. A
//! submission is accepted only once it is durable in the outbox (class `submission`, never
//! evicted); its receipt is `<gateway>-<sequence number>-<check>` (see
//! `firmware_config::wire::receipt`), which central also derives from the event, so no number
//! is ever issued twice or lost, and the random check code makes it unguessable: a status is
//! readable only with the whole receipt. The status central sends back is kept here, so a
//! kiosk can answer "where is my case" with the WAN down.
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
    /// `submitted` (on the gateway), then what central says: `registered`, `assigned`,
    /// `accepted`, `handling`, … `resolved`, `closed` (an application: `received`,
    /// `reviewing`, `decided`, `delivered`, `closed`).
    pub status: String,
    #[serde(default)]
    pub station: Option<String>,
    #[serde(default)]
    pub note: String,
    pub category: Category,
    pub title: String,
    #[serde(with = "time::serde::rfc3339")]
    pub updated: time::OffsetDateTime,
    /// Central's count of the case's changes; 0 for the gateway's own `submitted`. Orders
    /// statuses that may be stored out of turn.
    #[serde(default)]
    pub version: u64,
}

fn phone_ok(s: &str) -> bool {
    let mobile = s.len() == 11 && s.starts_with('1') && s.bytes().all(|b| b.is_ascii_digit());
    let d: String = s.chars().filter(|c| *c != '-').collect();
    let landline =
        s.starts_with('0') && (10..=12).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit());
    mobile || landline
}

/// Why a resident's submission was refused; the text names the field.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SubmissionRefused(String);

fn refused(m: impl Into<String>) -> SubmissionRefused {
    SubmissionRefused(m.into())
}

impl NewSubmission {
    /// Parses and checks a body against the replica; the error names the field.
    pub fn parse(body: &[u8], catalogue: &Catalogue) -> Result<Self, SubmissionRefused> {
        let mut de = serde_json::Deserializer::from_slice(body);
        let mut s: Self = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                refused(e.into_inner().to_string())
            } else {
                refused(format!("{path}: {}", e.into_inner()))
            }
        })?;
        let len = |v: &str| v.trim().chars().count();
        if !(1..=64).contains(&len(&s.title)) {
            return Err(refused("title: 1 to 64 characters"));
        }
        if s.description.chars().count() > 2000 {
            return Err(refused("description: at most 2000 characters"));
        }
        if !(1..=32).contains(&len(&s.contact.name)) {
            return Err(refused("contact.name: 1 to 32 characters"));
        }
        if !phone_ok(&s.contact.phone) {
            return Err(refused(format!(
                "contact.phone: {:?} is not a phone number (11-digit mobile or 0… landline)",
                s.contact.phone
            )));
        }
        let have_data = catalogue.version > 0;
        match (&s.category, &s.item_code) {
            (Category::Application, None) => {
                return Err(refused("item_code: required for an application"))
            }
            (_, Some(code)) if have_data && catalogue.item(code).is_none() => {
                return Err(refused(format!("item_code: no service item {code:?}")))
            }
            _ => {}
        }
        if let Some(p) = &s.location {
            if !(-180.0..=180.0).contains(&p.lon) || !(-90.0..=90.0).contains(&p.lat) {
                return Err(refused("location: not a longitude and latitude"));
            }
        }
        match (&s.grid, &s.location) {
            (Some(g), _) if have_data && catalogue.grid(g).is_none() => {
                return Err(refused(format!("grid: no grid {g:?} in this centre")))
            }
            (None, Some(p)) => s.grid = catalogue.grid_at([p.lon, p.lat]).map(|g| g.code.clone()),
            _ => {}
        }
        Ok(s)
    }
}

/// A new random check code for a receipt.
pub fn new_check() -> String {
    use firmware_config::wire::{RECEIPT_CHECK_ALPHABET, RECEIPT_CHECK_LEN};
    let bytes: [u8; RECEIPT_CHECK_LEN] = rand::random();
    bytes
        .iter()
        .map(|b| RECEIPT_CHECK_ALPHABET[usize::from(b & 31)] as char)
        .collect()
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

    /// Stores a status unless a later one is already there, and flushes; blocking. Central
    /// can answer before the kiosk's own `submitted` is written, and its commands are stored
    /// on separate threads: the version keeps the latest, whatever the order of arrival.
    /// Returns whether `s` was kept.
    pub fn put(&self, s: &Status) -> Result<bool, sled::Error> {
        let v = serde_json::to_vec(s).unwrap_or_default();
        let mut kept = false;
        self.tree.fetch_and_update(s.receipt.as_bytes(), |old| {
            let newer = old
                .and_then(|o| serde_json::from_slice::<Status>(o).ok())
                .is_none_or(|o| s.version > o.version);
            kept = newer;
            if newer {
                Some(v.clone())
            } else {
                old.map(<[u8]>::to_vec)
            }
        })?;
        self.tree.flush()?;
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: &str, version: u64) -> Status {
        Status {
            receipt: "gw-1-000007-K7Q2XM9P".to_owned(),
            status: status.to_owned(),
            station: None,
            note: String::new(),
            category: Category::Report,
            title: "路灯".to_owned(),
            updated: time::OffsetDateTime::now_utc(),
            version,
        }
    }

    fn statuses() -> (tempfile::TempDir, Statuses) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        (dir, Statuses::open(&db).unwrap())
    }

    #[test]
    fn the_latest_status_stays_whatever_the_order_of_arrival() {
        let (_dir, st) = statuses();
        // Central's answer is stored before the kiosk's own receipt.
        assert!(st.put(&status("routed", 1)).unwrap());
        assert!(!st.put(&status("submitted", 0)).unwrap());
        assert_eq!(st.get("gw-1-000007-K7Q2XM9P").unwrap().status, "routed");
        // A later change wins; an earlier one arriving late does not undo it.
        assert!(st.put(&status("resolved", 3)).unwrap());
        assert!(!st.put(&status("in_progress", 2)).unwrap());
        assert_eq!(st.get("gw-1-000007-K7Q2XM9P").unwrap().status, "resolved");
    }

    #[test]
    fn the_kiosks_receipt_is_kept_when_it_comes_first() {
        let (_dir, st) = statuses();
        assert!(st.put(&status("submitted", 0)).unwrap());
        assert!(st.put(&status("routed", 1)).unwrap());
        assert_eq!(st.get("gw-1-000007-K7Q2XM9P").unwrap().status, "routed");
        // Without its check code, a receipt reads nothing.
        assert!(st.get("gw-1-000007").is_none());
    }

    #[test]
    fn check_codes_are_random_and_well_formed() {
        let a = new_check();
        assert!(firmware_config::wire::is_receipt_check(&a), "{a}");
        assert_ne!(a, new_check());
    }
}
