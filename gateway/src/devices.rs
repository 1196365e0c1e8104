//! The devices the gateway runs right now: one task per enabled camera and per probed
//! terminal, started from the config in force and changed when a bundle changes it — without a
//! restart, and without touching the devices whose settings did not change.
//!
//! Applying a config is all or nothing up to the swap: every secret it names is read first
//! (device tokens, camera passwords); when one cannot be read, the apply fails and nothing has
//! changed. Only then are the config, the tokens, the terminals and the tasks switched over.

use std::sync::Arc;

use firmware_config::config::gateway::Camera;
use firmware_config::config::GatewayConfig;
use firmware_config::runtime::clock::Instant;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::api::auth::DeviceTokens;
use crate::camera::source::CameraSource;
use crate::camera::{Analysis, CameraSession, Decoders};
use crate::supervise::TaskSet;
use crate::terminals::probe::{self, Probe};
use crate::Shared;

struct Request {
    config: Arc<GatewayConfig>,
    done: oneshot::Sender<Result<(), DevicesError>>,
}

/// Why a config could not be applied (then nothing changed).
#[derive(Debug, thiserror::Error)]
pub enum DevicesError {
    /// Secrets the config names that cannot be read, each with its place in the config.
    #[error("{}", .0.join("; "))]
    Secrets(Vec<String>),
    #[error("the gateway is stopping")]
    Stopping,
}

/// Hands configs to the devices task.
pub struct Devices {
    tx: mpsc::Sender<Request>,
}

impl Devices {
    pub fn new() -> (Self, DeviceRequests) {
        let (tx, rx) = mpsc::channel(4);
        (Self { tx }, DeviceRequests(rx))
    }

    /// Switches the gateway to `config`; returns once its devices run under it, or why it
    /// could not (then nothing changed).
    pub async fn apply(&self, config: Arc<GatewayConfig>) -> Result<(), DevicesError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Request { config, done })
            .await
            .map_err(|_| DevicesError::Stopping)?;
        rx.await.map_err(|_| DevicesError::Stopping)?
    }
}

/// The receiving end, for [`run`].
pub struct DeviceRequests(mpsc::Receiver<Request>);

/// What a bundle cannot change while the gateway runs: it is refused, naming them.
pub fn restart_only_changes(current: &GatewayConfig, new: &GatewayConfig) -> Vec<&'static str> {
    let mut out = Vec::new();
    if current.site != new.site {
        out.push("site");
    }
    if current.gateway != new.gateway {
        out.push("gateway");
    }
    let mut uplink = new.uplink.clone();
    uplink.health_interval = current.uplink.health_interval;
    if current.uplink != uplink {
        out.push("uplink (except health_interval)");
    }
    if current.storage != new.storage {
        out.push("storage");
    }
    if current.http != new.http {
        out.push("http");
    }
    if current.bundles != new.bundles {
        out.push("bundles");
    }
    out
}

/// Reads every secret `config` names; the error lists each one that cannot be read.
fn prepare(config: &GatewayConfig) -> Result<DeviceTokens, DevicesError> {
    let mut problems = Vec::new();
    for (i, c) in config.cameras.iter().enumerate() {
        if let (true, Some(cred)) = (c.enabled, &c.credentials) {
            if let Err(e) = cred.password.read() {
                problems.push(format!("cameras[{i}] ({}) password: {e}", c.id));
            }
        }
    }
    let tokens = DeviceTokens::try_from_config(config).map_err(|mut e| {
        problems.append(&mut e);
        DevicesError::Secrets(std::mem::take(&mut problems))
    })?;
    if problems.is_empty() {
        Ok(tokens)
    } else {
        Err(DevicesError::Secrets(problems))
    }
}

/// Runs the devices under the config in force, then under each config applied, until
/// cancelled; then stops them all (cameras say TEARDOWN) before returning.
pub async fn run(
    shared: Arc<Shared>,
    requests: DeviceRequests,
    source: Arc<dyn CameraSource>,
    token: CancellationToken,
) {
    let mut rx = requests.0;
    let mut runner = Runner {
        source,
        cameras: TaskSet::new(token.clone()),
        probes: TaskSet::new(token.clone()),
        decoders: None,
        client: probe::client(),
    };
    runner.sync(&shared).await;
    let mut confirm = tokio::time::interval(std::time::Duration::from_secs(1));
    confirm.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            req = rx.recv() => {
                let Some(req) = req else { break };
                let result = runner.apply(&shared, req.config).await;
                let _ = req.done.send(result);
            }
            _ = confirm.tick() => {
                // A bundle central has not confirmed in time is rolled back here, in the same
                // task that applies configs, so the two never interleave.
                if let Some(last_good) = shared.bundles.overdue(&shared.outbox, Instant::now()) {
                    match runner.apply(&shared, last_good.clone()).await {
                        Ok(()) => shared.bundles.rolled_back(&*shared, None).await,
                        Err(e) => shared.bundles.rolled_back(&*shared, Some(e.to_string())).await,
                    }
                }
            }
        }
    }
    runner.cameras.stop_all().await;
    runner.probes.stop_all().await;
}

struct Runner {
    /// Where camera sessions get their frames (RTSP, or a recording in tests).
    source: Arc<dyn CameraSource>,
    cameras: TaskSet<Camera>,
    probes: TaskSet<Probe>,
    decoders: Option<Decoders>,
    client: reqwest::Client,
}

impl Runner {
    async fn apply(
        &mut self,
        shared: &Arc<Shared>,
        config: Arc<GatewayConfig>,
    ) -> Result<(), DevicesError> {
        let tokens = prepare(&config)?;
        let now = Instant::now();
        shared.set_config(config.clone(), tokens);
        shared.cameras.reconfigure(&config);
        shared.terminals.reconfigure(&config, now);
        shared.metrics.set_configured(&config);
        self.sync(shared).await;
        tracing::info!(
            cameras = config.cameras.len(),
            terminals = config.terminals.len(),
            "config applied"
        );
        Ok(())
    }

    /// Makes the running tasks match the config in force.
    async fn sync(&mut self, shared: &Arc<Shared>) {
        let config = shared.config();
        let desired: Vec<(String, Camera)> = config
            .cameras
            .iter()
            .filter(|c| c.enabled)
            .map(|c| (c.id.clone(), c.clone()))
            .collect();
        let before: Vec<String> = self.cameras.ids().cloned().collect();
        let start = self.cameras.stop_changed(&desired).await;
        for id in before {
            if !self.cameras.ids().any(|r| *r == id) {
                shared.set_camera(&id, None);
                // A push to central's relay would go on sending a hub nothing feeds; ending it
                // makes central ask again, for the restarted camera, while viewers remain.
                shared.upstreams.stop(&id);
            }
        }
        if !start.is_empty() && self.decoders.is_none() {
            let threads = std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(4);
            // Room for a keyframe from every camera a gateway may run.
            match Decoders::start(threads, 64) {
                Ok(d) => self.decoders = Some(d),
                Err(e) => {
                    tracing::error!(error = %e, "no snapshots or sensing: the decoders did not start")
                }
            }
        }
        let offset = firmware_config::config::gateway::parse_utc_offset(&config.site.utc_offset)
            .unwrap_or(time::UtcOffset::UTC);
        for (id, cam) in start {
            let analysis = Analysis::new(&cam, shared.cameras.clone(), offset, shared.clock);
            let live = crate::video::Live::with_ring(config.clips.pre);
            shared.set_camera(&id, Some((analysis.clone(), live.clone())));
            let session = CameraSession::new(
                cam.clone(),
                &*self.source,
                shared.cameras.clone(),
                analysis,
                self.decoders.clone(),
                live,
            );
            self.cameras
                .start(id, cam, |t| async move { session.run(t).await });
        }

        let desired: Vec<(String, Probe)> = config
            .terminals
            .iter()
            .filter_map(|t| Probe::of(t).map(|p| (t.id.clone(), p)))
            .collect();
        for (id, probe) in self.probes.stop_changed(&desired).await {
            let (terminals, client) = (shared.terminals.clone(), self.client.clone());
            let task_id = id.clone();
            self.probes.start(id, probe.clone(), move |t| {
                probe::run(task_id, probe, terminals, client, t)
            });
        }
    }
}
