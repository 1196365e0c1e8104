//! Cameras of the centre: one [`CameraSession`] task per enabled camera, and the health of
//! every camera, kept current and told to central on every change (offline, stalled and
//! unauthorized as alerts).
//!
//! A camera that does not answer, answers garbage or restarts only affects its own task.

mod analysis;
pub(crate) mod annexb;
mod decode;
mod health;
pub mod sensing;
mod session;
pub mod source;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use firmware_config::config::gateway::Camera;
use firmware_config::config::GatewayConfig;
use firmware_config::kinds::Kind;
use firmware_config::runtime::clock::Instant;
use time::UtcOffset;

pub use analysis::{Analysis, Decoders, Snapshot};
pub use decode::{DecodeError, VideoCodec};
pub use health::{CameraHealth, CameraState};
pub use session::CameraSession;

use crate::outbox::{NewEvent, Outbox};
use sensing::Finding;

/// The health of every camera; cheap to clone.
#[derive(Clone)]
pub struct Cameras {
    health: Arc<RwLock<BTreeMap<String, CameraHealth>>>,
    /// The state last told to central, per camera.
    last_reported: Arc<std::sync::Mutex<BTreeMap<String, CameraState>>>,
    outbox: Outbox,
    /// Where events recorded from decoder threads are appended.
    runtime: Option<tokio::runtime::Handle>,
    /// Clips of the alerts sensing raises (none: no clips).
    clips: Option<crate::clips::Clips>,
}

impl Cameras {
    pub fn new(config: &GatewayConfig, outbox: Outbox) -> Self {
        let health = config
            .cameras
            .iter()
            .map(|c| (c.id.clone(), CameraHealth::new(&c.id, &c.name, c.enabled)))
            .collect();
        Self {
            health: Arc::new(RwLock::new(health)),
            last_reported: Default::default(),
            outbox,
            runtime: tokio::runtime::Handle::try_current().ok(),
            clips: None,
        }
    }

    /// Takes a clip of each alert sensing raises on a camera.
    pub fn with_clips(mut self, clips: crate::clips::Clips) -> Self {
        self.clips = Some(clips);
        self
    }

    /// Follows a new config: cameras added start connecting (or disabled), removed ones are
    /// forgotten, and a camera switched on or off starts afresh.
    pub fn reconfigure(&self, config: &GatewayConfig) {
        let mut map = self
            .health
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|id, _| config.cameras.iter().any(|c| &c.id == id));
        for c in &config.cameras {
            let fresh = || CameraHealth::new(&c.id, &c.name, c.enabled);
            match map.get_mut(&c.id) {
                Some(h) if (h.state == CameraState::Disabled) == c.enabled => *h = fresh(),
                Some(h) => h.name.clone_from(&c.name),
                None => {
                    map.insert(c.id.clone(), fresh());
                }
            }
        }
        drop(map);
        self.last_reported
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|id, _| config.cameras.iter().any(|c| &c.id == id));
    }

    /// Every camera's health, ages computed now.
    pub fn snapshot(&self) -> Vec<CameraHealth> {
        let now = Instant::now();
        match self.health.read() {
            Ok(h) => h.values().map(|c| c.at(now)).collect(),
            Err(p) => p.into_inner().values().map(|c| c.at(now)).collect(),
        }
    }

    pub(crate) fn update(&self, id: &str, f: impl FnOnce(&mut CameraHealth)) {
        let mut map = self
            .health
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(h) = map.get_mut(id) {
            f(h);
        }
    }

    /// Sets a camera's state; a change between reportable states goes to the outbox.
    pub(crate) fn set_state(&self, id: &str, state: CameraState, error: Option<String>) {
        let mut change = None;
        self.update(id, |h| {
            if state != CameraState::Connecting {
                h.last_error = error.clone();
            }
            if h.state != state {
                tracing::info!(
                    camera = id,
                    from = h.state.as_str(),
                    to = state.as_str(),
                    "camera state"
                );
                if state.reportable() {
                    change = Some((h.name.clone(), h.state));
                }
                h.state = state;
            }
        });
        // Connecting is passing; report against the last reportable state so that a camera
        // retrying offline → connecting → offline raises one alert, not one per attempt.
        let Some((name, _)) = change else { return };
        let mut last = self
            .last_reported
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.get(id) == Some(&state) {
            return;
        }
        let previous = last.insert(id.to_owned(), state);
        drop(last);
        let payload = serde_json::json!({
            "camera": id,
            "name": name,
            "state": state.as_str(),
            "previous": previous.map(CameraState::as_str),
            "error": error,
        });
        self.record(Kind::Camera(state), &payload, None);
    }

    /// Records a sensing condition raised or cleared on `camera`'s picture received at
    /// `received`; `evidence` is the snapshot taken of that picture.
    pub(crate) fn sensed(
        &self,
        camera: &Camera,
        finding: &Finding,
        received: SystemTime,
        offset: UtcOffset,
        evidence: Option<u64>,
    ) {
        let label = match &finding.zone {
            Some(zone) => format!("{}:{zone}", finding.rule.as_str()),
            None => finding.rule.as_str().to_owned(),
        };
        self.update(&camera.id, |h| {
            h.sensing.retain(|s| *s != label);
            if finding.raised {
                h.sensing.push(label.clone());
            }
        });
        let at = time::OffsetDateTime::from(received).to_offset(offset);
        tracing::info!(camera = %camera.id, condition = %label, raised = finding.raised, measure = finding.measure, "sensing");
        // What led up to it, and what followed: a clip of each raised condition.
        let clip = match (&self.clips, finding.raised) {
            (Some(clips), true) => {
                match clips.take(&camera.id, &format!("camera.{label}"), received) {
                    Ok(c) => Some(c),
                    Err(crate::clips::ClipError::Off) => None,
                    Err(e) => {
                        tracing::warn!(camera = %camera.id, error = %e, "no clip of the alert");
                        None
                    }
                }
            }
            _ => None,
        };
        let payload = serde_json::json!({
            "camera": camera.id,
            "name": camera.name,
            "rule": finding.rule.as_str(),
            "zone": finding.zone,
            "state": if finding.raised { "raised" } else { "cleared" },
            "at": at.format(&time::format_description::well_known::Rfc3339).ok(),
            "measure": finding.measure,
            "snapshot": evidence.map(|id| format!("{}/{id}", camera.id)),
            "snapshot_path": evidence.map(|id| format!("/api/v1/cameras/{}/snapshots/{id}.jpg", camera.id)),
            "clip": clip.as_ref().map(|c| format!("{}/{}", camera.id, c.id)),
            "clip_path": clip.as_ref().map(crate::clips::ClipInfo::path),
        });
        let kind = Kind::Sensing {
            rule: finding.rule,
            cleared: !finding.raised,
        };
        self.record(kind, &payload, Some(unix_ms(received) as i64));
    }

    fn record(&self, kind: Kind, payload: &serde_json::Value, time_ms: Option<i64>) {
        let event = match NewEvent::own(kind, payload) {
            Ok(e) => match time_ms {
                Some(ms) => e.at(ms),
                None => e,
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot record a camera event");
                return;
            }
        };
        let outbox = self.outbox.clone();
        let append = async move {
            if let Err(e) = outbox.append(vec![event]).await {
                tracing::error!(error = %e, "cannot record a camera event");
            }
        };
        // Decoder threads are outside the runtime; they block on the append instead.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(append);
            }
            Err(_) => match &self.runtime {
                Some(handle) => {
                    handle.spawn(append);
                }
                None => tracing::error!("no runtime to record a camera event"),
            },
        }
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
