//! Meeting invitations for the centre's terminals. Central sends each invitation (and each
//! change of it) in a `meeting.invite` command; the gateway keeps it on disk until the meeting
//! has ended, so a terminal that was off gets it when it asks again, and an expired one never.
//! Terminals long-poll for them and answer (accepted, declined, joined, left); answers go to
//! central as `meeting.answer` events through the outbox.

use std::sync::atomic::{AtomicU64, Ordering};

use firmware_config::wire::Invitation;
use time::OffsetDateTime;
use tokio::sync::watch;

pub struct Meetings {
    tree: sled::Tree,
    /// Held while an invitation is written and the version bumped, and while a terminal's
    /// list is read with its version: a version always names exactly what was read.
    consistent: std::sync::Mutex<()>,
    /// Bumped on every change, for long polls.
    version: AtomicU64,
    changed: watch::Sender<u64>,
}

fn key(terminal: &str, meeting: &str) -> Vec<u8> {
    format!("{terminal}\0{meeting}").into_bytes()
}

/// Why an invitation could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum MeetingStoreError {
    #[error("meetings store: {0}")]
    Store(#[from] sled::Error),
    #[error("meetings store: {0}")]
    Encode(#[from] serde_json::Error),
}

impl Meetings {
    pub fn open(db: &sled::Db) -> Result<Self, sled::Error> {
        let (changed, _) = watch::channel(1);
        Ok(Self {
            tree: db.open_tree("meetings")?,
            consistent: std::sync::Mutex::new(()),
            version: AtomicU64::new(1),
            changed,
        })
    }

    /// Keeps an invitation unless the gateway already has a newer revision of it; drops the
    /// ones that have ended. Blocking (it flushes).
    pub fn put(&self, inv: &Invitation, now: OffsetDateTime) -> Result<bool, MeetingStoreError> {
        if inv.plan.ends <= now {
            return Ok(false);
        }
        let k = key(&inv.terminal, &inv.meeting);
        let _consistent = self
            .consistent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(old) = self.tree.get(&k)? {
            if let Ok(old) = serde_json::from_slice::<Invitation>(&old) {
                if old.revision >= inv.revision {
                    return Ok(false);
                }
            }
        }
        self.tree.insert(k, serde_json::to_vec(inv)?)?;
        self.tree.flush()?;
        self.expire(now);
        let n = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        self.changed.send_replace(n);
        Ok(true)
    }

    fn expire(&self, now: OffsetDateTime) {
        for (k, v) in self.tree.iter().flatten() {
            if serde_json::from_slice::<Invitation>(&v).is_ok_and(|i| i.plan.ends <= now) {
                let _ = self.tree.remove(k);
            }
        }
    }

    /// The version and, as of it, the terminal's invitations that have not ended.
    pub fn snapshot(&self, terminal: &str, now: OffsetDateTime) -> (u64, Vec<Invitation>) {
        let _consistent = self
            .consistent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (self.version(), self.for_terminal(terminal, now))
    }

    /// The terminal's invitations that have not ended, soonest first.
    pub fn for_terminal(&self, terminal: &str, now: OffsetDateTime) -> Vec<Invitation> {
        let mut v: Vec<Invitation> = self
            .tree
            .scan_prefix(format!("{terminal}\0").as_bytes())
            .values()
            .filter_map(|v| v.ok().and_then(|v| serde_json::from_slice(&v).ok()))
            .filter(|i: &Invitation| i.plan.ends > now)
            .collect();
        v.sort_by_key(|i| i.plan.starts);
        v
    }

    pub fn get(&self, terminal: &str, meeting: &str) -> Option<Invitation> {
        let v = self.tree.get(key(terminal, meeting)).ok()??;
        serde_json::from_slice(&v).ok()
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    /// Waits until the version passes `since` (or `wait` passes).
    pub async fn wait_past(&self, since: u64, wait: std::time::Duration) {
        let mut rx = self.changed.subscribe();
        let _ = tokio::time::timeout(wait, rx.wait_for(|v| *v > since)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_config::wire::MeetingPlan;

    fn inv(meeting: &str, revision: u32, ends_in: i64) -> Invitation {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        Invitation {
            meeting: meeting.into(),
            revision,
            terminal: "vt-1".into(),
            plan: MeetingPlan {
                kind: "petition".into(),
                title: "远程接访".into(),
                starts: now,
                ends: now + time::Duration::seconds(ends_in),
                room: "https://meet.example/r/1".into(),
            },
            cancelled: false,
        }
    }

    #[test]
    fn newer_revisions_win_and_ended_meetings_are_never_kept() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let m = Meetings::open(&db).unwrap();
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        assert!(m.put(&inv("m1", 1, 3600), now).unwrap());
        assert!(
            !m.put(&inv("m1", 1, 3600), now).unwrap(),
            "the same revision again"
        );
        let mut moved = inv("m1", 2, 7200);
        moved.plan.title = "改期".into();
        assert!(m.put(&moved, now).unwrap());
        assert!(
            !m.put(&inv("m1", 1, 3600), now).unwrap(),
            "an older one late"
        );
        assert_eq!(m.for_terminal("vt-1", now)[0].plan.title, "改期");
        assert!(!m.put(&inv("m2", 1, -5), now).unwrap(), "already over");
        assert_eq!(m.for_terminal("vt-1", now).len(), 1);
        assert!(m
            .for_terminal("vt-1", now + time::Duration::hours(3))
            .is_empty());
        assert!(m.for_terminal("vt-2", now).is_empty());
    }
}
