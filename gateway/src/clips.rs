//! Alert clips: when an alert fires on a camera (motion, a covered lens, a source's event that
//! names the camera, an operator's request) the camera's ring ([`crate::video::ring`]) gives
//! the stream from `clips.pre` before it, the next `clips.post` is added, and the whole is
//! written as an MP4 (never re-encoded) under `storage.dir/clips/<camera>/<id>.mp4`, with
//! what it is of beside it (`<id>.json`). The oldest clips go when the disk budget is reached,
//! and any older than `clips.keep`.
//!
//! A clip is named when it is asked for (its id is in the alert's event at once) and can be
//! fetched once written, `post` later.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use firmware_config::config::gateway::ClipPolicy;
use serde::{Deserialize, Serialize};

use crate::video::Live;

/// What a clip is of, kept beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipInfo {
    pub id: u64,
    pub camera: String,
    /// What asked for it: `camera.motion`, `camera.covered`, `door.forced`, `operator`…
    pub reason: String,
    /// When the alert fired, and the span asked for (Unix ms).
    pub at_ms: i64,
    pub from_ms: i64,
    pub until_ms: i64,
    /// `recording` until written, then `ready` (or `failed`, with `error`).
    pub state: String,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub frames: usize,
    /// From the first frame's arrival, and how long it plays.
    #[serde(default)]
    pub starts_ms: i64,
    #[serde(default)]
    pub duration_ms: u64,
    /// The stream stopped or changed before the clip's end.
    #[serde(default)]
    pub cut_short: bool,
    /// The stream had not run `pre` yet (the camera had just connected): the clip starts later.
    #[serde(default)]
    pub late_start: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ClipInfo {
    /// Where the gateway serves it.
    pub fn path(&self) -> String {
        format!("/api/v1/cameras/{}/clips/{}.mp4", self.camera, self.id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error("clips are off (clips.pre = 0s)")]
    Off,
    #[error("camera {0:?} is not running")]
    NoCamera(String),
    #[error("the alert's time is {0} ms ago, past what a clip of it could hold")]
    Past(i64),
    #[error("camera {0:?}: {1}")]
    Ring(String, crate::video::ring::RingError),
}

/// The live streams of the running cameras, by id (shared with the video API).
#[derive(Clone, Default)]
pub struct Lives(Arc<RwLock<BTreeMap<String, Live>>>);

impl Lives {
    pub fn get(&self, camera: &str) -> Option<Live> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(camera)
            .cloned()
    }

    pub fn set(&self, camera: &str, live: Option<Live>) {
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        match live {
            Some(l) => map.insert(camera.to_owned(), l),
            None => map.remove(camera),
        };
    }
}

struct Inner {
    dir: PathBuf,
    policy: ClipPolicy,
    lives: Lives,
    /// Every clip known, by camera then id.
    known: Mutex<BTreeMap<(String, u64), ClipInfo>>,
    runtime: Option<tokio::runtime::Handle>,
}

/// The clips of every camera; cheap to clone.
#[derive(Clone)]
pub struct Clips(Arc<Inner>);

impl Clips {
    /// Opens `dir` (created if missing) and reads what is there.
    pub fn open(dir: &Path, policy: ClipPolicy, lives: Lives) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut known = BTreeMap::new();
        for cam in std::fs::read_dir(dir)?.filter_map(Result::ok) {
            let Ok(files) = std::fs::read_dir(cam.path()) else {
                continue;
            };
            for f in files.filter_map(Result::ok) {
                let p = f.path();
                if p.extension().is_some_and(|e| e == "tmp") {
                    // A write a stop cut off.
                    let _ = std::fs::remove_file(&p);
                    continue;
                }
                if p.extension().is_none_or(|e| e != "json") {
                    continue;
                }
                let info = std::fs::read(&p)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<ClipInfo>(&b).ok());
                match info {
                    // One the gateway stopped while recording never will be.
                    Some(mut i) if i.state == "recording" => {
                        i.state = "failed".into();
                        i.error = Some("the gateway stopped while it was recorded".into());
                        known.insert((i.camera.clone(), i.id), i);
                    }
                    Some(i) => {
                        known.insert((i.camera.clone(), i.id), i);
                    }
                    None => tracing::warn!(path = %p.display(), "unreadable clip record"),
                }
            }
        }
        Ok(Self(Arc::new(Inner {
            dir: dir.to_owned(),
            policy,
            lives,
            known: Mutex::new(known),
            runtime: tokio::runtime::Handle::try_current().ok(),
        })))
    }

    pub fn policy(&self) -> &ClipPolicy {
        &self.0.policy
    }

    fn known(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, u64), ClipInfo>> {
        self.0.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks for a clip of `camera` around `at`: named now, written `post` later.
    pub fn take(&self, camera: &str, reason: &str, at: SystemTime) -> Result<ClipInfo, ClipError> {
        let p = &self.0.policy;
        if p.pre.is_zero() {
            return Err(ClipError::Off);
        }
        let live = self
            .0
            .lives
            .get(camera)
            .ok_or_else(|| ClipError::NoCamera(camera.to_owned()))?;
        // A time ahead of the gateway's clock is taken as now.
        let now_ms = unix_ms(SystemTime::now());
        let at_ms = unix_ms(at).min(now_ms);
        let from_ms = at_ms - p.pre.as_millis() as i64;
        let until_ms = at_ms + p.post.as_millis() as i64;
        if until_ms < now_ms {
            return Err(ClipError::Past(now_ms - at_ms));
        }
        // An alert within a clip being recorded is in that clip: a storm of alerts (motion
        // flickering, a door banging) is one clip per `post`, not one each.
        let recording = self
            .known()
            .range((camera.to_owned(), 0)..=(camera.to_owned(), u64::MAX))
            .map(|(_, i)| i)
            .find(|i| i.state == "recording" && i.from_ms <= at_ms && at_ms <= i.until_ms)
            .cloned();
        if let Some(clip) = recording {
            tracing::debug!(
                camera,
                reason,
                clip = clip.id,
                "the alert is within a clip being recorded"
            );
            return Ok(clip);
        }
        let taken = live
            .record(from_ms, until_ms)
            .map_err(|e| ClipError::Ring(camera.to_owned(), e))?;
        let info = {
            let mut known = self.known();
            // Ids are the time asked, made unique per camera.
            let mut id = at_ms.max(0) as u64;
            while known.contains_key(&(camera.to_owned(), id)) {
                id += 1;
            }
            let info = ClipInfo {
                id,
                camera: camera.to_owned(),
                reason: reason.to_owned(),
                at_ms,
                from_ms,
                until_ms,
                state: "recording".into(),
                bytes: 0,
                frames: 0,
                starts_ms: 0,
                duration_ms: 0,
                cut_short: false,
                late_start: false,
                error: None,
            };
            known.insert((camera.to_owned(), id), info.clone());
            info
        };
        tracing::info!(camera, reason, clip = info.id, "clip asked for");
        let me = self.clone();
        let asked = info.clone();
        let write = async move {
            let outcome = taken.await;
            let me2 = me.clone();
            let written = tokio::task::spawn_blocking(move || match outcome {
                Ok(t) => me2.write(asked, &t),
                Err(_) => me2.failed(asked, "the camera's stream went away"),
            })
            .await;
            if let Err(e) = written {
                tracing::error!(error = %e, "a clip's writer failed");
            }
        };
        match tokio::runtime::Handle::try_current()
            .ok()
            .or(self.0.runtime.clone())
        {
            Some(h) => {
                h.spawn(write);
            }
            None => tracing::error!("no runtime to write a clip"),
        }
        Ok(info)
    }

    fn camera_dir(&self, camera: &str) -> PathBuf {
        self.0.dir.join(camera)
    }

    /// Writes the clip and its record (each through a temporary file, then renamed), then
    /// keeps the clips within their budget. Blocking.
    fn write(&self, mut info: ClipInfo, t: &crate::video::ring::Taken) {
        if t.frames.is_empty() {
            return self.failed(info, "no frame in the clip's span");
        }
        info.frames = t.frames.len();
        info.starts_ms = t.frames.first().map_or(0, |f| f.wall_ms);
        info.duration_ms = crate::video::clip::duration_ms(t);
        info.cut_short = t.cut_short;
        info.late_start = info.starts_ms > info.from_ms;
        info.state = "ready".into();
        let dir = self.camera_dir(&info.camera);
        let stored = std::fs::create_dir_all(&dir)
            .and_then(|()| {
                write_atomically_with(&dir.join(format!("{}.mp4", info.id)), |f| {
                    crate::video::clip::write_mp4(t, f)
                })
            })
            .and_then(|bytes| {
                info.bytes = bytes;
                self.record(&info)
            });
        match stored {
            Ok(()) => {
                tracing::info!(camera = %info.camera, clip = info.id, bytes = info.bytes, frames = info.frames, cut_short = info.cut_short, "clip written");
                self.known().insert((info.camera.clone(), info.id), info);
                self.prune(SystemTime::now());
            }
            Err(e) => {
                let _ = std::fs::remove_file(dir.join(format!("{}.mp4", info.id)));
                let _ = std::fs::remove_file(dir.join(format!("{}.mp4.tmp", info.id)));
                self.failed(info, &e.to_string());
            }
        }
    }

    fn record(&self, info: &ClipInfo) -> std::io::Result<()> {
        let dir = self.camera_dir(&info.camera);
        std::fs::create_dir_all(&dir)?;
        let json = serde_json::to_vec_pretty(info).map_err(std::io::Error::other)?;
        write_atomically(&dir.join(format!("{}.json", info.id)), &json)
    }

    fn failed(&self, mut info: ClipInfo, why: &str) {
        tracing::warn!(camera = %info.camera, clip = info.id, error = why, "clip not written");
        info.state = "failed".into();
        info.error = Some(why.to_owned());
        if let Err(e) = self.record(&info) {
            tracing::warn!(error = %e, "cannot keep a failed clip's record");
        }
        self.known().insert((info.camera.clone(), info.id), info);
    }

    /// A camera's clips, newest first.
    pub fn list(&self, camera: &str) -> Vec<ClipInfo> {
        self.known()
            .range((camera.to_owned(), 0)..=(camera.to_owned(), u64::MAX))
            .rev()
            .map(|(_, i)| i.clone())
            .collect()
    }

    pub fn get(&self, camera: &str, id: u64) -> Option<ClipInfo> {
        self.known().get(&(camera.to_owned(), id)).cloned()
    }

    /// The file of a written clip.
    pub fn file(&self, camera: &str, id: u64) -> Option<PathBuf> {
        let info = self.get(camera, id)?;
        (info.state == "ready").then(|| self.camera_dir(camera).join(format!("{id}.mp4")))
    }

    /// Deletes clips older than `keep`, then the oldest until the rest fit the budget.
    pub fn prune(&self, now: SystemTime) {
        let p = &self.0.policy;
        let oldest_kept = unix_ms(now) - p.keep.as_millis() as i64;
        let mut known = self.known();
        let mut by_age: Vec<(i64, (String, u64), u64)> = known
            .iter()
            .filter(|(_, i)| i.state != "recording")
            .map(|(k, i)| (i.at_ms, k.clone(), i.bytes))
            .collect();
        by_age.sort();
        let mut total: u64 = by_age.iter().map(|(_, _, b)| b).sum();
        for (at, key, bytes) in by_age {
            if at >= oldest_kept && total <= p.disk_budget.0 {
                break;
            }
            let dir = self.camera_dir(&key.0);
            for ext in ["mp4", "json"] {
                let _ = std::fs::remove_file(dir.join(format!("{}.{ext}", key.1)));
            }
            known.remove(&key);
            total -= bytes;
            tracing::info!(camera = %key.0, clip = key.1, "clip deleted (budget or age)");
        }
    }

    /// Bytes of the written clips.
    pub fn bytes(&self) -> u64 {
        self.known().values().map(|i| i.bytes).sum()
    }

    /// How long after asking a clip is written: its `post`, and a little for the writing.
    pub fn ready_within(&self) -> Duration {
        self.0.policy.post + Duration::from_secs(5)
    }
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomically_with(path, |f| {
        std::io::Write::write_all(f, bytes)?;
        Ok(bytes.len() as u64)
    })
    .map(|_| ())
}

/// Writes `path` through a temporary file beside it (`write` fills it), made durable, then
/// renamed: a stop midway leaves the temporary file (removed at the next start), never half a
/// clip under its name.
pub fn write_atomically_with<T>(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<T>,
) -> std::io::Result<T> {
    use std::io::Write;
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let mut f = std::io::BufWriter::with_capacity(256 * 1024, std::fs::File::create(&tmp)?);
    let out = write(&mut f)?;
    f.flush()?;
    f.get_ref().sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(budget: u64) -> ClipPolicy {
        ClipPolicy {
            disk_budget: firmware_config::config::units::ByteSize(budget),
            ..ClipPolicy::default()
        }
    }

    /// A clip on disk as the writer leaves it: `bytes` of MP4 and its record.
    fn put(dir: &Path, camera: &str, id: u64, at_ms: i64, bytes: usize, state: &str) {
        let d = dir.join(camera);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("{id}.mp4")), vec![0u8; bytes]).unwrap();
        let info = ClipInfo {
            id,
            camera: camera.into(),
            reason: "camera.motion".into(),
            at_ms,
            from_ms: at_ms - 10_000,
            until_ms: at_ms + 10_000,
            state: state.into(),
            bytes: bytes as u64,
            frames: 1,
            starts_ms: at_ms - 10_000,
            duration_ms: 20_000,
            cut_short: false,
            late_start: false,
            error: None,
        };
        std::fs::write(
            d.join(format!("{id}.json")),
            serde_json::to_vec(&info).unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn clips_are_read_back_and_the_oldest_go_past_the_budget_or_their_age() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let ms = unix_ms(now);
        let day = 24 * 3600 * 1000;
        put(dir.path(), "hall", 1, ms - 40 * day, 100, "ready"); // past 30 days
        put(dir.path(), "hall", 2, ms - 3 * day, 400, "ready");
        put(dir.path(), "yard", 3, ms - 2 * day, 400, "ready");
        put(dir.path(), "yard", 4, ms - day, 400, "ready");
        put(dir.path(), "yard", 5, ms, 0, "recording"); // a stop cut it off
        std::fs::write(dir.path().join("yard/6.mp4.tmp"), b"half").unwrap();
        let clips = Clips::open(dir.path(), policy(1000), Lives::default()).unwrap();
        assert_eq!(clips.get("yard", 5).unwrap().state, "failed");
        assert!(!dir.path().join("yard/6.mp4.tmp").exists());
        assert_eq!(
            clips.list("yard").iter().map(|c| c.id).collect::<Vec<_>>(),
            [5, 4, 3]
        );
        assert!(clips.file("yard", 5).is_none(), "a failed clip has no file");

        clips.prune(now);
        // Too old: 1. Then over 1000 bytes: 2 (the oldest left) goes, 3 and 4 fit.
        assert!(clips.get("hall", 1).is_none());
        assert!(clips.get("hall", 2).is_none());
        assert!(!dir.path().join("hall/2.mp4").exists());
        assert!(!dir.path().join("hall/2.json").exists());
        assert_eq!(clips.bytes(), 800);
        assert!(clips.file("yard", 3).is_some_and(|p| p.exists()));
    }

    /// A camera's live stream that has received two seconds of the test keyframe.
    fn streaming() -> Live {
        use crate::camera::source::{OwnedParameterSets, StreamParameters};
        let data = include_bytes!("camera/testdata/key264.h264");
        let nal = |t: u8| {
            crate::camera::annexb::nals(data)
                .find(|n| n[0] & 0x1F == t)
                .unwrap()
                .to_vec()
        };
        let live = Live::with_ring(Duration::from_secs(10));
        let params = StreamParameters {
            sets: OwnedParameterSets::H264 {
                sps: nal(7),
                pps: nal(8),
            },
            width: 320,
            height: 240,
            rfc6381_codec: "avc1.42c01e".into(),
            frame_rate: Some((25, 1)),
        };
        live.set_parameters(&params, false);
        for i in 0..50 {
            live.frame(i * 3600, i % 25 == 0, data.to_vec());
        }
        live
    }

    #[tokio::test]
    async fn alerts_within_a_clip_being_recorded_are_that_clip() {
        let dir = tempfile::tempdir().unwrap();
        let lives = Lives::default();
        lives.set("hall", Some(streaming()));
        let policy = ClipPolicy {
            post: Duration::from_secs(30),
            ..ClipPolicy::default()
        };
        let clips = Clips::open(dir.path(), policy, lives).unwrap();
        let now = SystemTime::now();
        let secs = Duration::from_secs;
        // Spanning 15 s ago to 25 s from now.
        let first = clips
            .take("hall", "camera.motion:door", now - secs(5))
            .unwrap();
        assert_eq!(first.state, "recording");
        let again = clips.take("hall", "door.forced", now - secs(1)).unwrap();
        assert_eq!(again.id, first.id, "within it");
        let ahead = clips.take("hall", "door.forced", now + secs(60)).unwrap();
        assert_eq!(ahead.id, first.id, "a time ahead of the clock is now");
        let earlier = clips
            .take("hall", "camera.motion:door", now - secs(20))
            .unwrap();
        assert_ne!(earlier.id, first.id, "before its span: another clip");
        assert_eq!(clips.list("hall").len(), 2);
        assert!(matches!(
            clips.take("hall", "door.forced", now - secs(120)),
            Err(ClipError::Past(_))
        ));
    }

    #[test]
    fn a_clip_needs_clips_on_and_a_running_camera() {
        let dir = tempfile::tempdir().unwrap();
        let off = ClipPolicy {
            pre: Duration::ZERO,
            ..ClipPolicy::default()
        };
        let clips = Clips::open(dir.path(), off, Lives::default()).unwrap();
        assert!(matches!(
            clips.take("hall", "operator", SystemTime::now()),
            Err(ClipError::Off)
        ));
        let lives = Lives::default();
        let clips = Clips::open(dir.path(), ClipPolicy::default(), lives.clone()).unwrap();
        assert!(matches!(
            clips.take("hall", "operator", SystemTime::now()),
            Err(ClipError::NoCamera(_))
        ));
        // Running, but nothing received yet.
        lives.set("hall", Some(Live::with_ring(Duration::from_secs(10))));
        assert!(matches!(
            clips.take("hall", "operator", SystemTime::now()),
            Err(ClipError::Ring(..))
        ));
    }
}
