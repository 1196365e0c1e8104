//! The street's master data at central: imported whole, checked, and kept as numbered
//! versions. A data set with any problem is refused as a whole (nothing partial is published);
//! importing the same data again makes no new version. Content files are kept once, by hash.
//!
//! State tables: `md_versions` (version, big-endian → [`Version`] as JSON), `md_blobs`
//! (SHA-256 hex → bytes). Each import is flushed before it is answered.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, PoisonError, RwLock};

use firmware_config::masterdata::replica::Update;
use firmware_config::masterdata::{self, Dataset, Problem, Sources};
use firmware_config::runtime::clock::Clock;
use firmware_config::wire::ReplicaReport;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::state::{StateError, StateStore, Table};

/// Why master data could not be opened or imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{} problem(s) in the data set", .0.len())]
    Invalid(Vec<Problem>),
    #[error("store: {0}")]
    Store(#[from] StateError),
    #[error("a stored master data version: {0}")]
    Json(#[from] serde_json::Error),
}

/// What changed from the previous version, per list: codes added, changed, removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

/// What a version is, without its data (for listings).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: u64,
    pub hash: String,
    /// The hash of what a gateway serving the whole street holds of it (without central's
    /// case rules): what its replica reports once current.
    #[serde(default)]
    pub gateway_hash: String,
    #[serde(with = "time::serde::rfc3339")]
    pub published: OffsetDateTime,
    pub by: String,
    pub note: String,
    pub summary: String,
    /// Per list (`grids`, `party`, `items`, `content`).
    pub changes: BTreeMap<String, Changes>,
}

/// A published version: what it is, and its data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Version {
    #[serde(flatten)]
    pub info: VersionInfo,
    pub dataset: Dataset,
}

/// The result of an import.
#[derive(Debug, Clone, Serialize)]
pub struct Imported {
    /// False when the data equalled the current version (no new version).
    pub new: bool,
    #[serde(flatten)]
    pub info: VersionInfo,
}

pub struct MasterData {
    versions: Arc<dyn Table>,
    blobs: Arc<dyn Table>,
    current: RwLock<Option<Arc<Version>>>,
    /// With other replicas: who to tell of a new version.
    announcer: std::sync::OnceLock<crate::pg::feed::Announcer>,
    /// Dates versions.
    clock: Clock,
    /// One import at a time, so versions are numbered without gaps or races.
    importing: std::sync::Mutex<()>,
}

fn diff<T: Serialize>(old: &[T], new: &[T], key: impl Fn(&T) -> &str) -> Changes {
    let index = |list: &[T]| -> BTreeMap<String, String> {
        list.iter()
            .map(|x| {
                (
                    key(x).to_owned(),
                    serde_json::to_string(x).unwrap_or_default(),
                )
            })
            .collect()
    };
    let (a, b) = (index(old), index(new));
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut c = Changes::default();
    for k in keys {
        match (a.get(k), b.get(k)) {
            (None, Some(_)) => c.added.push(k.clone()),
            (Some(_), None) => c.removed.push(k.clone()),
            (Some(x), Some(y)) if x != y => c.changed.push(k.clone()),
            _ => {}
        }
    }
    c
}

fn changes(old: Option<&Dataset>, new: &Dataset) -> BTreeMap<String, Changes> {
    let empty = Dataset::default();
    let old = old.unwrap_or(&empty);
    BTreeMap::from([
        (
            "grids".to_owned(),
            diff(&old.grids, &new.grids, |g| &g.code),
        ),
        (
            "party".to_owned(),
            diff(&old.party, &new.party, |p| &p.code),
        ),
        (
            "items".to_owned(),
            diff(&old.items, &new.items, |i| &i.code),
        ),
        (
            "content".to_owned(),
            diff(&old.content, &new.content, |c| &c.id),
        ),
    ])
}

impl MasterData {
    pub fn open(state: &dyn StateStore, clock: Clock) -> Result<Self, ImportError> {
        let versions = state.table("md_versions")?;
        let blobs = state.table("md_blobs")?;
        let current = match versions.last()? {
            Some((_, v)) => Some(Arc::new(serde_json::from_slice::<Version>(&v)?)),
            None => None,
        };
        Ok(Self {
            versions,
            blobs,
            current: RwLock::new(current),
            clock,
            importing: std::sync::Mutex::new(()),
            announcer: Default::default(),
        })
    }

    /// One of several replicas: each version this one publishes is announced to the others.
    pub fn share(&self, announcer: crate::pg::feed::Announcer) {
        let _ = self.announcer.set(announcer);
    }

    /// Reads the current version again (another replica published one).
    pub fn reload(&self) {
        match self.versions.last() {
            Ok(Some((_, v))) => match serde_json::from_slice::<Version>(&v) {
                Ok(v) => {
                    *self.current.write().unwrap_or_else(PoisonError::into_inner) =
                        Some(Arc::new(v));
                }
                Err(e) => tracing::error!(error = %e, "cannot read the current master data"),
            },
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "cannot read the current master data"),
        }
    }

    pub fn current(&self) -> Option<Arc<Version>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn version(&self, n: u64) -> Option<Version> {
        let v = self.versions.get(&n.to_be_bytes()).ok()??;
        serde_json::from_slice(&v).ok()
    }

    pub fn versions(&self) -> Vec<VersionInfo> {
        self.versions
            .scan_rev(b"")
            .filter_map(Result::ok)
            .filter_map(|(_, v)| serde_json::from_slice::<Version>(&v).ok())
            .map(|v| v.info)
            .collect()
    }

    /// What a gateway reporting `report` needs to reach the current version: a delta from
    /// its version when central still has that version and the gateway's copy of it is
    /// intact (same hash), else a snapshot; nothing when it is current.
    pub fn update_for(&self, report: &ReplicaReport) -> Option<Update> {
        let cur = self.current()?;
        if report.version >= cur.info.version && !report.need_snapshot {
            return None;
        }
        let target = cur.dataset.scoped(&report.areas);
        if !report.need_snapshot && report.version > 0 {
            if let Some(old) = self.version(report.version) {
                let old = old.dataset.scoped(&report.areas);
                if old.hash() == report.hash {
                    return Some(
                        target
                            .delta_from(&old, report.version, cur.info.version)
                            .scoped_to(&report.areas),
                    );
                }
            }
        }
        Some(
            Update::Snapshot {
                version: cur.info.version,
                hash: target.hash(),
                areas: Vec::new(),
                dataset: target,
            }
            .scoped_to(&report.areas),
        )
    }

    /// A content file's bytes by its SHA-256.
    pub fn blob(&self, sha256: &str) -> Option<Vec<u8>> {
        self.blobs.get(sha256.as_bytes()).ok()?
    }

    /// `len` bytes (or fewer, at the end) of a content file from `offset`, and the file's size.
    pub fn blob_piece(&self, sha256: &str, offset: u64, len: u64) -> Option<(u64, Vec<u8>)> {
        let blob = self.blobs.get(sha256.as_bytes()).ok()??;
        let total = blob.len() as u64;
        let start = offset.min(total) as usize;
        let end = offset.saturating_add(len).min(total) as usize;
        Some((total, blob[start..end].to_vec()))
    }

    /// Reads, checks and publishes a data set; blocking (the store flushes), so call it off the
    /// async workers.
    pub fn import(&self, sources: &Sources, by: &str, note: &str) -> Result<Imported, ImportError> {
        let dataset = sources.read().map_err(ImportError::Invalid)?;
        let problems = masterdata::validate(&dataset);
        if !problems.is_empty() {
            return Err(ImportError::Invalid(problems));
        }
        let _one = self
            .importing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let hash = dataset.hash();
        let current = self.current();
        if let Some(cur) = current.as_ref().filter(|c| c.info.hash == hash) {
            return Ok(Imported {
                new: false,
                info: cur.info.clone(),
            });
        }
        for bytes in sources.blobs.values() {
            let sha = masterdata::sha256_hex(bytes);
            if dataset.content.iter().any(|c| c.sha256 == sha) {
                self.blobs.insert(sha.as_bytes(), bytes.clone())?;
            }
        }
        let info = VersionInfo {
            version: current.as_ref().map_or(1, |c| c.info.version + 1),
            hash,
            gateway_hash: dataset.scoped(&[]).hash(),
            published: self.clock.now_utc(),
            by: by.to_owned(),
            note: note.to_owned(),
            summary: dataset.summary(),
            changes: changes(current.as_ref().map(|c| &c.dataset), &dataset),
        };
        let version = Version { info, dataset };
        let json = serde_json::to_vec(&version)?;
        self.versions
            .insert(&version.info.version.to_be_bytes(), json)?;
        self.versions.flush()?;
        self.blobs.flush()?;
        let i = &version.info;
        tracing::info!(version = i.version, hash = %i.hash, summary = %i.summary, "master data published");
        let info = version.info.clone();
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(version));
        if let Some(a) = self.announcer.get() {
            a.send(crate::pg::feed::Note::MasterData);
        }
        Ok(Imported { new: true, info })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Sources {
        let dir =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/sample-data");
        masterdata::load_dir(&dir).unwrap()
    }

    #[test]
    fn versions_only_for_changes_and_nothing_partial() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::state::SledState::new(sled::Config::new().path(dir.path()).open().unwrap());
        let md = MasterData::open(&db, Clock::system()).unwrap();
        let first = md.import(&sample(), "test", "first").unwrap();
        assert!(first.new);
        assert_eq!(first.info.version, 1);
        assert_eq!(first.info.changes["items"].added.len(), 32);
        let again = md.import(&sample(), "test", "same").unwrap();
        assert!(!again.new);
        assert_eq!(again.info.version, 1);

        let mut bad = sample();
        let grids =
            bad.texts["grids.csv"].clone() + "11019900100001001,重复,base,11019900100001,400,\n";
        bad.texts.insert("grids.csv".into(), grids);
        assert!(matches!(
            md.import(&bad, "test", "bad"),
            Err(ImportError::Invalid(_))
        ));
        assert_eq!(md.current().unwrap().info.version, 1);

        let mut changed = sample();
        let items = changed.texts["service_items.json"].replacen(
            "最低生活保障申请",
            "最低生活保障（低保）申请",
            1,
        );
        changed.texts.insert("service_items.json".into(), items);
        let second = md.import(&changed, "test", "renamed").unwrap();
        assert_eq!(second.info.version, 2);
        assert_eq!(second.info.changes["items"].changed, ["MZ110199-0001"]);
        assert!(second.info.changes["grids"].changed.is_empty());
        let sha = &md.current().unwrap().dataset.content[0].sha256;
        assert!(md.blob(sha).is_some());
        drop(md);
        // Reopened, the current version is the last one.
        let md = MasterData::open(&db, Clock::system()).unwrap();
        assert_eq!(md.current().unwrap().info.version, 2);
        assert_eq!(md.versions().len(), 2);
    }
}
