//! The gateway's replica of the street's master data, what kiosks answer from when the WAN is
//! down. Updates come from central on the gateway's `data` topic, signed with central's key
//! (the bundle key); each is applied whole or not at all and stored before it is used.
//!
//! Stored in its own small sled database (`<storage>/replica`) as one value, so a version is
//! replaced atomically; its hash is checked again when the gateway starts, and a damaged
//! replica is dropped and a snapshot asked for.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use firmware_config::bundle::VerifyingKey;
use firmware_config::masterdata::replica::{ApplyError, Replica, SignedUpdate};
use firmware_config::wire::ReplicaReport;

const KEY: &[u8] = b"replica";
/// The highest version ever applied: kept apart from the replica, so that a replica dropped as
/// damaged still refuses versions older than one it had.
const HIGHEST: &[u8] = b"replica.highest";

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("replica store: {0}")]
    Store(#[from] sled::Error),
}

pub struct Replicas {
    db: sled::Db,
    key: Option<VerifyingKey>,
    areas: Vec<String>,
    current: RwLock<Arc<Replica>>,
    need_snapshot: Mutex<bool>,
    /// The kiosk index of the replica in force.
    catalogue: RwLock<Arc<crate::kiosk::Catalogue>>,
    /// How the replica last changed (`snapshot` or `delta`), for operators and tests.
    last_update: Mutex<Option<&'static str>>,
}

/// What happened to an update.
#[derive(Debug)]
pub enum Received {
    Applied {
        version: u64,
    },
    Refused(ApplyError),
    /// No key to check it with.
    Untrusted,
}

impl Replicas {
    pub fn open(
        dir: &Path,
        key: Option<VerifyingKey>,
        areas: Vec<String>,
    ) -> Result<Self, ReplicaError> {
        let db = firmware_config::runtime::sled_store::open(
            &sled::Config::new()
                .path(dir.join("replica"))
                .cache_capacity(4 << 20)
                .flush_every_ms(None),
        )?;
        let mut need_snapshot = false;
        let replica = match db.get(KEY)? {
            None => Replica::default(),
            Some(bytes) => {
                match serde_json::from_slice::<Replica>(&bytes) {
                    Ok(r) if r.dataset.hash() == r.hash => r,
                    _ => {
                        tracing::error!("the master data replica is damaged; dropped, a snapshot will be asked for");
                        need_snapshot = true;
                        Replica::default()
                    }
                }
            }
        };
        if replica.version > 0 {
            tracing::info!(version = replica.version, summary = %replica.dataset.summary(), "master data replica");
        }
        Ok(Self {
            db,
            key,
            areas,
            catalogue: RwLock::new(crate::kiosk::Catalogue::build(
                replica.version,
                replica.dataset.clone(),
            )),
            current: RwLock::new(Arc::new(replica)),
            need_snapshot: Mutex::new(need_snapshot),
            last_update: Mutex::new(None),
        })
    }

    /// The replica's database, for the other small stores of the kiosk side.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    pub fn current(&self) -> Arc<Replica> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn catalogue(&self) -> Arc<crate::kiosk::Catalogue> {
        self.catalogue
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn last_update(&self) -> Option<&'static str> {
        *self
            .last_update
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn report(&self) -> ReplicaReport {
        let r = self.current();
        ReplicaReport {
            version: r.version,
            hash: r.hash.clone(),
            areas: self.areas.clone(),
            need_snapshot: *self
                .need_snapshot
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        }
    }

    /// Checks, applies and stores an update; blocking (it flushes).
    pub fn receive(&self, update: &SignedUpdate) -> Result<Received, ReplicaError> {
        let Some(key) = &self.key else {
            return Ok(Received::Untrusted);
        };
        let update = match update.open(key) {
            Ok(u) => u,
            Err(e) => return Ok(Received::Refused(e)),
        };
        let kind = match update {
            firmware_config::masterdata::replica::Update::Snapshot { .. } => "snapshot",
            firmware_config::masterdata::replica::Update::Delta { .. } => "delta",
        };
        if !update.is_for(&self.areas) {
            return Ok(Received::Refused(ApplyError::OtherAreas {
                got: update.areas().to_vec(),
                want: self.areas.clone(),
            }));
        }
        let highest = self
            .db
            .get(HIGHEST)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes);
        if update.target_version() < highest {
            return Ok(Received::Refused(ApplyError::Stale(
                update.target_version(),
                highest,
            )));
        }
        let current = self.current();
        let next = match current.apply(&update) {
            Ok(next) => next,
            Err(e) => {
                if e.needs_snapshot() {
                    *self
                        .need_snapshot
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = true;
                }
                return Ok(Received::Refused(e));
            }
        };
        let bytes = serde_json::to_vec(&next).unwrap_or_default();
        self.db.insert(KEY, bytes)?;
        self.db
            .insert(HIGHEST, &next.version.max(highest).to_be_bytes())?;
        self.db.flush()?;
        let version = next.version;
        let catalogue = crate::kiosk::Catalogue::build(version, next.dataset.clone());
        // How it changed is noted first: whoever sees the new version sees how it came.
        *self
            .last_update
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(kind);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
        *self
            .catalogue
            .write()
            .unwrap_or_else(PoisonError::into_inner) = catalogue;
        *self
            .need_snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = false;
        Ok(Received::Applied { version })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_config::bundle::SigningKey;
    use firmware_config::masterdata::replica::{Update, MAX_VERSION};

    fn sample() -> firmware_config::masterdata::Dataset {
        let dir =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/sample-data");
        firmware_config::masterdata::load_dir(&dir)
            .unwrap()
            .read()
            .unwrap()
    }

    fn snapshot(key: &SigningKey, version: u64, areas: &[String]) -> SignedUpdate {
        let dataset = sample().scoped(areas);
        let update = Update::Snapshot {
            version,
            hash: dataset.hash(),
            areas: Vec::new(),
            dataset,
        }
        .scoped_to(areas);
        SignedUpdate::sign(key, &update).unwrap()
    }

    fn refused(r: Received) -> ApplyError {
        match r {
            Received::Refused(e) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn data_for_other_areas_or_older_than_ever_applied_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = SigningKey::generate().unwrap();
        let public = VerifyingKey::from_pem(&key.public_pem()).unwrap();
        let mine = vec!["11019900100001".to_owned()];
        let other = vec!["11019900100002".to_owned()];
        {
            let r = Replicas::open(dir.path(), Some(public.clone()), mine.clone()).unwrap();
            let e = refused(r.receive(&snapshot(&key, 1, &other)).unwrap());
            assert!(matches!(e, ApplyError::OtherAreas { .. }), "{e}");
            let e = refused(r.receive(&snapshot(&key, MAX_VERSION + 1, &mine)).unwrap());
            assert!(matches!(e, ApplyError::VersionTooLarge(_)), "{e}");
            assert!(matches!(
                r.receive(&snapshot(&key, 5, &mine)).unwrap(),
                Received::Applied { version: 5 }
            ));
            // The replica is damaged and dropped; the highest version stays.
            r.db().remove(KEY).unwrap();
            r.db().flush().unwrap();
        }
        let r = Replicas::open(dir.path(), Some(public), mine.clone()).unwrap();
        assert_eq!(r.current().version, 0);
        let e = refused(r.receive(&snapshot(&key, 3, &mine)).unwrap());
        assert!(matches!(e, ApplyError::Stale(3, 5)), "{e}");
        // The version it had, again, is taken (the snapshot a damaged replica asks for).
        assert!(matches!(
            r.receive(&snapshot(&key, 5, &mine)).unwrap(),
            Received::Applied { version: 5 }
        ));
    }
}
