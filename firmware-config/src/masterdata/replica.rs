//! Replicating master data to gateways: what each centre needs (its scope), snapshots and
//! deltas between versions, signed by central, and applying them at the edge so that the
//! replica is always a whole, checked version.
//!
//! An update is `{"key","body","sig"}` where `body` is the JSON text of an [`Update`] and the
//! signature (central's bundle key, Ed25519) covers `gridedge-data-v1\0` + body. A delta names
//! the version it applies to and the hash the result must have: a replica that is not at that
//! version has a gap and must ask for a snapshot; a result with another hash means the delta or
//! the replica is damaged, and the replica keeps its previous version.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{ContentFile, Dataset, GridUnit, Level, PartyOrg, ServiceItem};
use crate::bundle::{BundleError, SigningKey, VerifyingKey};

const CONTEXT: &[u8] = b"gridedge-data-v1\0";
/// Larger updates are refused before they are parsed.
pub const MAX_UPDATE_BYTES: usize = 900 * 1024;

/// Changes to one list: whole entries to insert or replace, and codes to remove.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListDelta<T> {
    pub upsert: Vec<T>,
    pub remove: Vec<String>,
}

impl<T> Default for ListDelta<T> {
    fn default() -> Self {
        Self {
            upsert: Vec::new(),
            remove: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Update {
    /// The whole (scoped) data set of `version`.
    Snapshot {
        version: u64,
        hash: String,
        /// The grid areas it was scoped for (empty: the whole street).
        #[serde(default)]
        areas: Vec<String>,
        dataset: Dataset,
    },
    /// From `from` to `to`; the result must hash to `hash`.
    Delta {
        from: u64,
        to: u64,
        hash: String,
        /// The grid areas it was scoped for (empty: the whole street).
        #[serde(default)]
        areas: Vec<String>,
        grids: ListDelta<GridUnit>,
        party: ListDelta<PartyOrg>,
        items: ListDelta<ServiceItem>,
        content: ListDelta<ContentFile>,
    },
}

impl Update {
    pub fn target_version(&self) -> u64 {
        match self {
            Update::Snapshot { version, .. } => *version,
            Update::Delta { to, .. } => *to,
        }
    }

    /// The grid areas the update was scoped for.
    pub fn areas(&self) -> &[String] {
        match self {
            Update::Snapshot { areas, .. } | Update::Delta { areas, .. } => areas,
        }
    }

    /// The update, marked as scoped for `areas`.
    pub fn scoped_to(mut self, scope: &[String]) -> Self {
        let mut scope = scope.to_vec();
        scope.sort();
        scope.dedup();
        match &mut self {
            Update::Snapshot { areas, .. } | Update::Delta { areas, .. } => *areas = scope,
        }
        self
    }

    /// Whether it was scoped for exactly `scope` (in any order).
    pub fn is_for(&self, scope: &[String]) -> bool {
        let mut want = scope.to_vec();
        want.sort();
        want.dedup();
        self.areas() == want.as_slice()
    }
}

/// The highest version a replica takes: JSON numbers above it lose precision in browsers and
/// many tools, and a version at the top of `u64` would leave no room for the next one.
pub const MAX_VERSION: u64 = (1 << 53) - 1;

/// An update as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedUpdate {
    pub key: String,
    pub body: String,
    pub sig: String,
}

impl SignedUpdate {
    pub fn sign(key: &SigningKey, update: &Update) -> Result<Self, serde_json::Error> {
        let body = serde_json::to_string(update)?;
        Ok(Self {
            key: key.id().to_owned(),
            sig: key.sign_text(CONTEXT, &body),
            body,
        })
    }

    /// Checks the signature, then reads the update.
    pub fn open(&self, trusted: &VerifyingKey) -> Result<Update, ApplyError> {
        trusted
            .verify_text(CONTEXT, &self.key, &self.body, &self.sig)
            .map_err(ApplyError::Signature)?;
        serde_json::from_str(&self.body).map_err(|e| ApplyError::Format(e.to_string()))
    }
}

/// Why an update was not applied; the replica is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("not signed by central: {0}")]
    Signature(BundleError),
    #[error("not an update: {0}")]
    Format(String),
    #[error("version {0} is not newer than the replica's {1}")]
    Stale(u64, u64),
    #[error("version {0} is beyond the highest a replica takes ({MAX_VERSION})")]
    VersionTooLarge(u64),
    #[error("scoped for areas {got:?}, this centre serves {want:?}")]
    OtherAreas { got: Vec<String>, want: Vec<String> },
    #[error(
        "gap: the delta applies to version {from}, the replica has {have}; a snapshot is needed"
    )]
    Gap { from: u64, have: u64 },
    #[error("the result hashes to {got}, not {want}: damaged; a snapshot is needed")]
    HashMismatch { got: String, want: String },
}

impl ApplyError {
    /// Whether only a snapshot can bring the replica back.
    pub fn needs_snapshot(&self) -> bool {
        matches!(
            self,
            ApplyError::Gap { .. } | ApplyError::HashMismatch { .. }
        )
    }
}

fn list_delta<T: Clone + Serialize>(
    old: &[T],
    new: &[T],
    key: impl Fn(&T) -> &str,
) -> ListDelta<T> {
    let old: BTreeMap<&str, String> = old
        .iter()
        .map(|x| (key(x), serde_json::to_string(x).unwrap_or_default()))
        .collect();
    let mut d = ListDelta::default();
    let mut seen = BTreeSet::new();
    for x in new {
        let k = key(x);
        seen.insert(k);
        if old.get(k) != Some(&serde_json::to_string(x).unwrap_or_default()) {
            d.upsert.push(x.clone());
        }
    }
    d.remove = old
        .keys()
        .filter(|k| !seen.contains(*k))
        .map(|k| (*k).to_owned())
        .collect();
    d
}

fn apply_list<T: Clone>(list: &mut Vec<T>, d: &ListDelta<T>, key: impl Fn(&T) -> &str) {
    list.retain(|x| !d.remove.iter().any(|r| r == key(x)));
    for u in &d.upsert {
        match list.iter_mut().find(|x| key(x) == key(u)) {
            Some(x) => *x = u.clone(),
            None => list.push(u.clone()),
        }
    }
}

impl Dataset {
    /// What a centre serving the grid areas `areas` needs: the street, those areas and their
    /// base grids; the party organisations covering them (and the ones above those); every
    /// service item and content file (the catalogue is street-wide). Empty `areas`: all. Never
    /// the case rules or the places of devices: they are central's.
    pub fn scoped(&self, areas: &[String]) -> Dataset {
        if areas.is_empty() {
            return Dataset {
                cases: Default::default(),
                places: Vec::new(),
                ..self.clone()
            };
        }
        let keep = |g: &GridUnit| match g.level {
            Level::Street => true,
            Level::Area => areas.contains(&g.code),
            Level::Base => g.parent.as_ref().is_some_and(|p| areas.contains(p)),
        };
        let grids: Vec<GridUnit> = self.grids.iter().filter(|g| keep(g)).cloned().collect();
        let codes: BTreeSet<&str> = grids.iter().map(|g| g.code.as_str()).collect();
        let parents: BTreeMap<&str, Option<&str>> = self
            .party
            .iter()
            .map(|p| (p.code.as_str(), p.parent.as_deref()))
            .collect();
        let mut wanted = BTreeSet::new();
        for p in &self.party {
            if p.grids.iter().any(|g| codes.contains(g.as_str())) {
                let mut at = Some(p.code.as_str());
                while let Some(c) = at {
                    if !wanted.insert(c) {
                        break;
                    }
                    at = parents.get(c).copied().flatten();
                }
            }
        }
        let mut d = Dataset {
            grids,
            party: self
                .party
                .iter()
                .filter(|p| wanted.contains(p.code.as_str()))
                .cloned()
                .collect(),
            items: self.items.clone(),
            content: self.content.clone(),
            // Central's own.
            cases: Default::default(),
            places: Vec::new(),
        };
        d.sort();
        d
    }

    /// The delta from `old` (version `from`) to this data set (version `to`).
    pub fn delta_from(&self, old: &Dataset, from: u64, to: u64) -> Update {
        Update::Delta {
            from,
            to,
            hash: self.hash(),
            areas: Vec::new(),
            grids: list_delta(&old.grids, &self.grids, |g| &g.code),
            party: list_delta(&old.party, &self.party, |p| &p.code),
            items: list_delta(&old.items, &self.items, |i| &i.code),
            content: list_delta(&old.content, &self.content, |c| &c.id),
        }
    }
}

/// A replica's state: its version (0: none yet) and data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Replica {
    pub version: u64,
    pub hash: String,
    pub dataset: Dataset,
}

impl Replica {
    /// The replica after `update`, or why not (then the replica stays as it is).
    pub fn apply(&self, update: &Update) -> Result<Replica, ApplyError> {
        let target = update.target_version();
        if target > MAX_VERSION {
            return Err(ApplyError::VersionTooLarge(target));
        }
        if target <= self.version {
            return Err(ApplyError::Stale(target, self.version));
        }
        let (dataset, want) = match update {
            Update::Snapshot { dataset, hash, .. } => (dataset.clone(), hash),
            Update::Delta {
                from,
                hash,
                grids,
                party,
                items,
                content,
                ..
            } => {
                if *from != self.version {
                    return Err(ApplyError::Gap {
                        from: *from,
                        have: self.version,
                    });
                }
                let mut d = self.dataset.clone();
                apply_list(&mut d.grids, grids, |g| &g.code);
                apply_list(&mut d.party, party, |p| &p.code);
                apply_list(&mut d.items, items, |i| &i.code);
                apply_list(&mut d.content, content, |c| &c.id);
                d.sort();
                (d, hash)
            }
        };
        let got = dataset.hash();
        if &got != want {
            return Err(ApplyError::HashMismatch {
                got,
                want: want.clone(),
            });
        }
        Ok(Replica {
            version: target,
            hash: got,
            dataset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::masterdata::load_dir;

    fn v1() -> Dataset {
        let dir =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/sample-data");
        load_dir(&dir).unwrap().read().unwrap()
    }

    fn v2() -> Dataset {
        let mut d = v1();
        d.items[0].name.push_str("（新）");
        d.items.pop();
        d.grids[3].staff.clear();
        d
    }

    #[test]
    fn snapshot_then_delta_and_twice_changes_nothing() {
        let (a, b) = (v1(), v2());
        let r0 = Replica::default();
        let snap = Update::Snapshot {
            version: 1,
            hash: a.hash(),
            areas: Vec::new(),
            dataset: a.clone(),
        };
        let r1 = r0.apply(&snap).unwrap();
        let delta = b.delta_from(&a, 1, 2);
        if let Update::Delta { items, .. } = &delta {
            assert_eq!(items.upsert.len(), 1);
            assert_eq!(items.remove.len(), 1);
        }
        let r2 = r1.apply(&delta).unwrap();
        assert_eq!(r2.dataset, b);
        assert_eq!(r2.version, 2);
        // The same delta again is stale: nothing changes.
        assert!(matches!(r2.apply(&delta), Err(ApplyError::Stale(2, 2))));
    }

    #[test]
    fn a_gap_or_damage_needs_a_snapshot_and_leaves_the_replica() {
        let (a, b) = (v1(), v2());
        let r1 = Replica::default()
            .apply(&Update::Snapshot {
                version: 1,
                hash: a.hash(),
                areas: Vec::new(),
                dataset: a.clone(),
            })
            .unwrap();
        let gap = b.delta_from(&a, 5, 6);
        let e = r1.apply(&gap).unwrap_err();
        assert!(e.needs_snapshot(), "{e}");
        let mut damaged = b.delta_from(&a, 1, 2);
        if let Update::Delta { items, .. } = &mut damaged {
            items.upsert[0].name = "篡改".into();
        }
        let e = r1.apply(&damaged).unwrap_err();
        assert!(matches!(e, ApplyError::HashMismatch { .. }), "{e}");
    }

    #[test]
    fn an_update_says_whom_it_is_for_and_a_version_past_the_limit_is_refused() {
        let d = v1();
        let snap = Update::Snapshot {
            version: MAX_VERSION + 1,
            hash: d.hash(),
            areas: Vec::new(),
            dataset: d.clone(),
        };
        assert!(matches!(
            Replica::default().apply(&snap),
            Err(ApplyError::VersionTooLarge(_))
        ));
        let scoped = Update::Snapshot {
            version: 1,
            hash: d.hash(),
            areas: Vec::new(),
            dataset: d,
        }
        .scoped_to(&["b".into(), "a".into(), "a".into()]);
        assert_eq!(scoped.areas(), ["a", "b"]);
        assert!(scoped.is_for(&["b".into(), "a".into()]));
        assert!(!scoped.is_for(&["a".into()]));
        assert!(!scoped.is_for(&[]));
        // Scoping is part of what central signs.
        let json = serde_json::to_string(&scoped).unwrap();
        assert!(json.contains("\"areas\":[\"a\",\"b\"]"), "{json}");
    }

    #[test]
    fn only_central_signs_updates() {
        let (key, _) = SigningKey::generate().unwrap();
        let trusted = VerifyingKey::from_pem(&key.public_pem()).unwrap();
        let a = v1();
        let signed = SignedUpdate::sign(
            &key,
            &Update::Snapshot {
                version: 1,
                hash: a.hash(),
                areas: Vec::new(),
                dataset: a,
            },
        )
        .unwrap();
        assert!(signed.open(&trusted).is_ok());
        let mut forged = signed.clone();
        forged.body = forged.body.replacen("红星", "黑星", 1);
        assert!(matches!(
            forged.open(&trusted),
            Err(ApplyError::Signature(_))
        ));
        let (other, _) = SigningKey::generate().unwrap();
        let foreign = SignedUpdate::sign(
            &other,
            &Update::Snapshot {
                version: 1,
                hash: String::new(),
                areas: Vec::new(),
                dataset: Dataset::default(),
            },
        )
        .unwrap();
        assert!(matches!(
            foreign.open(&trusted),
            Err(ApplyError::Signature(_))
        ));
    }

    #[test]
    fn a_centre_gets_its_area_the_street_and_the_whole_catalogue() {
        let d = v1();
        let s = d.scoped(&["11019900100002".to_owned()]);
        assert_eq!(s.grids.iter().filter(|g| g.level == Level::Base).count(), 3);
        assert!(s.grids.iter().any(|g| g.level == Level::Street));
        assert_eq!(s.items.len(), d.items.len());
        // Its grid party branches, its community's committee, and the street's working committee.
        assert_eq!(
            s.party.len(),
            5,
            "{:?}",
            s.party.iter().map(|p| &p.name).collect::<Vec<_>>()
        );
        // Everything but central's case rules and places, which never reach a gateway.
        assert!(!d.cases.is_empty() && s.cases.is_empty());
        assert!(!d.places.is_empty() && s.places.is_empty());
        assert_eq!(
            d.scoped(&[]),
            Dataset {
                cases: Default::default(),
                places: Vec::new(),
                ..d.clone()
            }
        );
    }
}
