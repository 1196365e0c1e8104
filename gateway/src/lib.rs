//! The GridEdge gateway: the edge service of one community service centre.
//!
//! It watches the centre's cameras and terminals, keeps every event on local disk until central
//! has stored it, and serves the centre's kiosks and security room on the LAN, also when the WAN
//! is down. [`start`] runs it in-process (as the tests do); `main.rs` wraps it as a binary.

pub mod api;
pub mod bundles;
pub mod camera;
pub mod clips;
pub mod commands;
pub mod devices;
pub mod dispatch;
pub mod kiosk;
pub mod meetings;
pub mod metrics;
pub mod outbox;
pub mod supervise;
pub mod terminals;
pub mod uplink;
pub mod video;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};

use firmware_config::config::GatewayConfig;
use firmware_config::ids::GatewayId;
use firmware_config::kinds::Kind;
use firmware_config::runtime::clock::{Clock, Instant};
use firmware_config::runtime::transport::Transport;
use firmware_config::runtime::{self, mqtt::MqttSetupError, Parts};
use tokio_util::sync::CancellationToken;

pub use metrics::Metrics;

/// Software version reported to central and in `/metrics`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("gateway.id {0:?} is not a valid id")]
    Identity(String),
    #[error("storage folder {path}: {source}")]
    Storage {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP: {0}")]
    Http(#[source] std::io::Error),
    #[error("uplink: {0}")]
    Uplink(#[from] MqttSetupError),
    #[error("outbox: {0}")]
    Outbox(#[from] outbox::OutboxError),
    #[error("uplink identity: {0}")]
    Signing(#[from] firmware_config::runtime::signing::SigningError),
    #[error("uplink.central_key_file: {0}")]
    CentralKey(#[source] firmware_config::bundle::BundleError),
    #[error("master data replica: {0}")]
    Replica(#[from] kiosk::replica::ReplicaError),
    #[error("submission statuses: {0}")]
    Statuses(#[source] sled::Error),
    #[error("meetings: {0}")]
    Meetings(#[source] sled::Error),
    #[error("content store: {0}")]
    Content(#[source] std::io::Error),
    #[error("the alert of a quarantined outbox: {0}")]
    QuarantineAlert(#[source] outbox::OutboxError),
    #[error("a gateway task failed: {0}")]
    Task(String),
}

/// What every part of a running gateway shares. What a bundle may change while the gateway
/// runs (the config, cameras, device tokens) sits behind locks and is read through methods.
pub struct Shared {
    config: RwLock<Arc<GatewayConfig>>,
    pub gateway_id: GatewayId,
    pub metrics: Metrics,
    pub outbox: outbox::Outbox,
    pub cameras: camera::Cameras,
    /// Snapshots and sensing per running camera.
    analyses: RwLock<BTreeMap<String, Arc<camera::Analysis>>>,
    /// Live video per running camera.
    lives: clips::Lives,
    /// Alert clips of every camera.
    pub clips: clips::Clips,
    /// Video pushed to central's relay.
    pub upstreams: video::upstream::Upstreams,
    pub terminals: terminals::Terminals,
    pub devices: devices::Devices,
    pub bundles: bundles::Bundles,
    /// The street's master data, for kiosks.
    pub replica: Arc<kiosk::replica::Replicas>,
    /// Submission statuses, for kiosks.
    pub statuses: kiosk::submissions::Statuses,
    /// Learning-content files, fetched from central for kiosks.
    pub content: Arc<kiosk::content::ContentStore>,
    /// Meeting invitations for the terminals.
    pub meetings: meetings::Meetings,
    /// Kiosk API requests and submissions, per terminal.
    pub kiosk_requests: kiosk::ratelimit::RateLimits,
    pub kiosk_submissions: kiosk::ratelimit::RateLimits,
    /// Asks the uplink for a health report now (after the replica changed).
    pub report_now: tokio::sync::Notify,
    /// Replies to commands that finish after the uplink loop has moved on.
    pub replies: tokio::sync::mpsc::UnboundedSender<firmware_config::wire::CommandReply>,
    /// Stops everything the gateway started, pushes included.
    pub token: CancellationToken,
    tokens: RwLock<Arc<api::auth::DeviceTokens>>,
    /// Terminals' browser sessions (the key their cookies are signed with).
    pub device_sessions: api::device_session::DeviceSessions,
    pub started: Instant,
    /// The time of day for every part (the system's, or a test's).
    pub clock: Clock,
    /// Central's clock, as its signed messages show it: what times central wrote are judged on.
    pub central_clock: uplink::downlink::CentralClock,
}

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read().unwrap_or_else(PoisonError::into_inner).clone()
}

impl Shared {
    /// The config in force (the file's, or the last bundle applied).
    pub fn config(&self) -> Arc<GatewayConfig> {
        read(&self.config)
    }

    pub fn tokens(&self) -> Arc<api::auth::DeviceTokens> {
        read(&self.tokens)
    }

    pub fn analysis(&self, camera: &str) -> Option<Arc<camera::Analysis>> {
        self.analyses
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(camera)
            .cloned()
    }

    pub fn live(&self, camera: &str) -> Option<video::Live> {
        self.lives.get(camera)
    }

    pub(crate) fn set_config(&self, config: Arc<GatewayConfig>, tokens: api::auth::DeviceTokens) {
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = config;
        *self.tokens.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(tokens);
    }

    pub(crate) fn set_camera(
        &self,
        id: &str,
        running: Option<(Arc<camera::Analysis>, video::Live)>,
    ) {
        let mut a = self
            .analyses
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match running {
            Some((analysis, live)) => {
                a.insert(id.to_owned(), analysis);
                self.lives.set(id, Some(live));
            }
            None => {
                a.remove(id);
                self.lives.set(id, None);
            }
        }
    }
}

/// Bundles see the gateway through the few things they use.
impl bundles::Host for Shared {
    fn gateway_id(&self) -> &GatewayId {
        &self.gateway_id
    }
    fn config(&self) -> Arc<GatewayConfig> {
        Shared::config(self)
    }
    fn outbox(&self) -> &outbox::Outbox {
        &self.outbox
    }
    fn clock(&self) -> Clock {
        self.clock
    }
    fn central_now(&self) -> time::OffsetDateTime {
        let now = self.clock.now_utc();
        self.central_clock.lock().map_or(now, |c| c.their_now(now))
    }
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    fn terminals(&self) -> &terminals::Terminals {
        &self.terminals
    }
    async fn apply_config(&self, config: Arc<GatewayConfig>) -> Result<(), devices::DevicesError> {
        self.devices.apply(config).await
    }
}

/// The uplink sees the gateway through what it reports and where central's messages go.
impl uplink::Gateway for Shared {
    fn config(&self) -> Arc<GatewayConfig> {
        Shared::config(self)
    }
    fn outbox(&self) -> &outbox::Outbox {
        &self.outbox
    }
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    fn report_now(&self) -> &tokio::sync::Notify {
        &self.report_now
    }
    fn connected(&self) {
        self.content.wake.notify_one();
    }
    fn health(&self) -> firmware_config::wire::GatewayHealth {
        let config = Shared::config(self);
        firmware_config::wire::GatewayHealth {
            version: VERSION.to_owned(),
            site: config.site.id.clone(),
            uptime_secs: self.clock.since(self.started).as_secs(),
            cameras_configured: config.cameras.len() as u32,
            terminals_configured: config.terminals.len() as u32,
            outbox: Some(self.outbox.summary()),
            terminals: Some(self.terminals.summary()),
            config: Some(self.bundles.versions()),
            masterdata: Some(self.replica.report()),
            certificate_expires: None,
        }
    }
    fn deliver(
        self: &Arc<Self>,
        channel: firmware_config::topics::Channel,
        message: firmware_config::wire::Message,
    ) -> Result<Option<firmware_config::wire::CommandReply>, dispatch::Misplaced> {
        dispatch::deliver(self, channel, message)
    }
}

/// A gateway running in this process.
pub struct RunningGateway {
    /// Where its HTTP API listens (the real port when the config asked for port 0).
    pub http_addr: SocketAddr,
    pub shared: Arc<Shared>,
    parts: Parts<GatewayError>,
}

/// What a gateway runs on that a test may replace: its clock, its link to central and
/// where its cameras' frames come from.
pub struct Seams<T: Transport> {
    pub clock: Clock,
    pub transport: T,
    pub cameras: Arc<dyn camera::source::CameraSource>,
}

/// Starts a gateway: checks its storage, binds its HTTP port and connects its uplink. Returns
/// once it serves HTTP; the uplink connects in the background (the edge works offline).
pub async fn start(
    config: GatewayConfig,
    token: CancellationToken,
) -> Result<RunningGateway, GatewayError> {
    let transport = uplink::mqtt_transport(&config)?;
    let seams = Seams {
        clock: Clock::system(),
        transport,
        cameras: Arc::new(camera::source::Rtsp),
    };
    start_with(config, token, seams).await
}

/// [`start`], on the given clock and transport.
pub async fn start_with<T: Transport>(
    config: GatewayConfig,
    token: CancellationToken,
    seams: Seams<T>,
) -> Result<RunningGateway, GatewayError> {
    let Seams {
        clock,
        transport,
        cameras: camera_source,
    } = seams;
    let gateway_id = GatewayId::new(config.gateway.id.clone())
        .map_err(|_| GatewayError::Identity(config.gateway.id.clone()))?;
    std::fs::create_dir_all(&config.storage.dir).map_err(|source| GatewayError::Storage {
        path: config.storage.dir.display().to_string(),
        source,
    })?;
    let mut metrics = Metrics::new(&config);
    let (outbox, report) = outbox::Outbox::open(
        &config.storage.dir,
        config.storage.disk_budget.bytes(),
        config.storage.cache_size.bytes(),
        config.storage.disk_reserve.bytes(),
    )?;
    let outbox = outbox.with_clock(clock);
    metrics.register_outbox(outbox.clone());
    tracing::info!(
        next_seq = report.next_seq,
        pending = report.pending,
        "outbox open"
    );
    if let Some(q) = &report.quarantined {
        // Central learns of it once the uplink is up: the alert waits in the fresh outbox.
        let payload = serde_json::json!({
            "moved_to": q.moved_to.display().to_string(),
            "reason": q.reason,
            "salvaged": q.salvaged,
        });
        let alert = outbox::NewEvent::own(Kind::OutboxQuarantined, &payload)
            .map_err(GatewayError::QuarantineAlert)?;
        outbox.append(vec![alert]).await?;
    }
    // A bundle applied earlier rules over the file for what bundles may change.
    let (bundles, config) = bundles::Bundles::open(config)?;
    let tokens = api::auth::DeviceTokens::from_config(&config);
    let lives = clips::Lives::default();
    let clip_dir = config.storage.dir.join("clips");
    let clips =
        clips::Clips::open(&clip_dir, config.clips.clone(), lives.clone()).map_err(|source| {
            GatewayError::Storage {
                path: clip_dir.display().to_string(),
                source,
            }
        })?;
    clips.prune(std::time::SystemTime::now());
    let cameras = camera::Cameras::new(&config, outbox.clone()).with_clips(clips.clone());
    metrics.register_cameras(cameras.clone());
    let (terminals, terminal_events) = terminals::Terminals::new(&config, clock.instant());
    metrics.register_terminals(terminals.clone());
    for (id, version, required) in bundles.terminal_requirements() {
        terminals.set_bundle(&id, version, required);
    }
    metrics
        .config_version
        .set(bundles.versions().gateway as i64);
    let replica = kiosk::replica::Replicas::open(
        &config.storage.dir,
        bundles.key(),
        config.site.areas.clone(),
    )?;
    let statuses =
        kiosk::submissions::Statuses::open(replica.db()).map_err(GatewayError::Statuses)?;
    let meetings = meetings::Meetings::open(replica.db()).map_err(GatewayError::Meetings)?;
    let (content, content_ports, fetch_rx) =
        kiosk::content::ContentStore::open(&config.storage.dir).map_err(GatewayError::Content)?;
    let (devices, device_requests) = devices::Devices::new();
    let (replies, reply_rx) = tokio::sync::mpsc::unbounded_channel();
    let listener = runtime::bind_http(config.http.listen)
        .await
        .map_err(GatewayError::Http)?;
    let http_addr = listener.local_addr().map_err(GatewayError::Http)?;
    let uplink = uplink::Uplink::new(&config, gateway_id.clone(), clock, transport)?;
    let device_sessions =
        api::device_session::DeviceSessions::open(&config.storage.dir, config.http.tls.is_some())
            .map_err(|source| GatewayError::Storage {
            path: config
                .storage
                .dir
                .join("device-sessions.key")
                .display()
                .to_string(),
            source,
        })?;
    // Video pushes to an https:// relay trust central the way the uplink does.
    let push_tls = match &config.uplink.tls {
        Some(files) => match runtime::mqtt::client_tls(files) {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                tracing::warn!(error = %e, "no TLS for video pushes");
                None
            }
        },
        None => None,
    };
    let shared = Arc::new(Shared {
        config: RwLock::new(config.clone()),
        gateway_id,
        metrics,
        outbox,
        cameras,
        analyses: RwLock::default(),
        lives,
        clips,
        upstreams: video::upstream::Upstreams::new(push_tls),
        terminals,
        devices,
        bundles,
        replica: Arc::new(replica),
        statuses,
        content: Arc::new(content),
        meetings,
        kiosk_requests: kiosk::ratelimit::RateLimits::default(),
        kiosk_submissions: kiosk::ratelimit::RateLimits::default(),
        report_now: tokio::sync::Notify::new(),
        replies,
        token: token.clone(),
        tokens: RwLock::new(Arc::new(tokens)),
        device_sessions,
        started: clock.instant(),
        clock,
        central_clock: uplink.central_clock(),
    });

    shared.bundles.resume(&shared.outbox).await;
    let mut parts = Parts::new("gateway", token);
    let tls = runtime::http_tls(&shared.config().http).map_err(GatewayError::Http)?;
    parts.spawn_http(
        listener,
        api::router(shared.clone()),
        tls,
        shared.config().http.max_connections,
        GatewayError::Http,
    );
    let (s, t) = (shared.clone(), parts.token().clone());
    parts.spawn(async move {
        uplink.run(s, reply_rx, fetch_rx, t).await;
        Ok(())
    });
    // Cameras and probes start (and later change) under the devices task.
    let (s, t) = (shared.clone(), parts.token().clone());
    parts.spawn(async move {
        devices::run(s, device_requests, camera_source, t).await;
        Ok(())
    });
    let (o, t) = (shared.outbox.clone(), parts.token().clone());
    parts.spawn(async move {
        terminals::write_events(terminal_events, o, t).await;
        Ok(())
    });
    let fetcher = kiosk::content::Fetcher {
        store: shared.content.clone(),
        replica: shared.replica.clone(),
        uplink_connected: shared.metrics.uplink_connected.clone(),
        files_fetched: shared.metrics.content_files_fetched.clone(),
        bytes_fetched: shared.metrics.content_bytes_fetched.clone(),
        fetch_errors: shared.metrics.content_fetch_errors.clone(),
    };
    let t = parts.token().clone();
    parts.spawn(async move {
        kiosk::content::run(fetcher, content_ports, t).await;
        Ok(())
    });
    let (tm, t) = (shared.terminals.clone(), parts.token().clone());
    parts.spawn(async move {
        terminals::watch(tm, t).await;
        Ok(())
    });
    // sled cannot write again after the disk refused it a write: stop the whole gateway, so
    // that its service manager starts it again on the reserve it gave back.
    let (o, t) = (shared.outbox.clone(), parts.token().clone());
    parts.spawn(async move {
        tokio::select! {
            _ = o.stopped() => Err(GatewayError::Outbox(outbox::OutboxError::Stopped)),
            _ = t.cancelled() => Ok(()),
        }
    });
    tracing::info!(gateway = %shared.gateway_id, site = %shared.config().site.id, %http_addr, "gateway started");
    Ok(RunningGateway {
        http_addr,
        shared,
        parts,
    })
}

impl RunningGateway {
    /// Asks every part to stop.
    pub fn shutdown(&self) {
        self.parts.token().cancel();
    }

    /// Waits until every part has stopped; when one fails, the others are stopped too.
    pub async fn wait(self) -> Result<(), GatewayError> {
        let RunningGateway { shared, parts, .. } = self;
        let result = parts.wait(GatewayError::Task).await;
        // Every part has stopped: nothing appends any more. Close the store so that the same
        // folder can be opened again at once (by a restart in this process).
        let outbox = shared.outbox.clone();
        drop(shared);
        if let Err(e) = outbox.close().await {
            tracing::error!(error = %e, "cannot flush the outbox at shutdown");
        }
        result
    }
}
