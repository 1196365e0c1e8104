//! Cameras of the centre: one [`CameraSession`] task per enabled camera, and the health of
//! every camera, kept current and told to central on every change (offline, stalled and
//! unauthorized as alerts).
//!
//! A camera that does not answer, answers garbage or restarts only affects its own task.

mod health;
mod session;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use firmware_config::config::GatewayConfig;
use firmware_config::wire::EventClass;

pub use health::{CameraHealth, CameraState};
pub use session::CameraSession;

use crate::outbox::{NewEvent, Outbox};

/// The health of every camera; cheap to clone.
#[derive(Clone)]
pub struct Cameras {
    health: Arc<RwLock<BTreeMap<String, CameraHealth>>>,
    /// The state last told to central, per camera.
    last_reported: Arc<std::sync::Mutex<BTreeMap<String, CameraState>>>,
    outbox: Outbox,
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
        }
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
        let Ok(payload) = serde_json::value::to_raw_value(&payload) else {
            return;
        };
        let event = NewEvent {
            class: if state.alarming() {
                EventClass::Alert
            } else {
                EventClass::Health
            },
            kind: format!("camera.{}", state.as_str()),
            payload,
            time_ms: None,
        };
        let outbox = self.outbox.clone();
        tokio::spawn(async move {
            if let Err(e) = outbox.append(vec![event]).await {
                tracing::error!(error = %e, "cannot record a camera state change");
            }
        });
    }
}
