//! The GridEdge gateway: the edge service of one community service centre.
//!
//! It watches the centre's cameras and terminals, keeps every event on local disk until central
//! has stored it, and serves the centre's kiosks and security room on the LAN, also when the WAN
//! is down. [`start`] runs it in-process (as the tests do); `main.rs` wraps it as a binary.

pub mod api;
pub mod camera;
pub mod commands;
pub mod metrics;
pub mod outbox;
pub mod uplink;
pub mod video;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use firmware_config::config::GatewayConfig;
use firmware_config::ids::GatewayId;
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
    #[error("a gateway task failed: {0}")]
    Task(String),
}

/// What every part of a running gateway shares.
pub struct Shared {
    pub config: GatewayConfig,
    pub gateway_id: GatewayId,
    pub metrics: Metrics,
    pub outbox: outbox::Outbox,
    pub cameras: camera::Cameras,
    /// Snapshots and sensing per enabled camera.
    pub analyses: std::collections::BTreeMap<String, Arc<camera::Analysis>>,
    /// Live video per enabled camera.
    pub lives: std::collections::BTreeMap<String, video::Live>,
    /// Video pushed to central's relay.
    pub upstreams: video::upstream::Upstreams,
    /// Stops everything the gateway started, pushes included.
    pub token: CancellationToken,
    pub tokens: api::auth::DeviceTokens,
    pub started: Instant,
}

/// A gateway running in this process.
pub struct RunningGateway {
    /// Where its HTTP API listens (the real port when the config asked for port 0).
    pub http_addr: SocketAddr,
    pub shared: Arc<Shared>,
    parts: Parts<GatewayError>,
}

/// Starts a gateway: checks its storage, binds its HTTP port and connects its uplink. Returns
/// once it serves HTTP; the uplink connects in the background (the edge works offline).
pub async fn start(
    config: GatewayConfig,
    token: CancellationToken,
) -> Result<RunningGateway, GatewayError> {
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
    )?;
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
        let alert = outbox::NewEvent {
            class: firmware_config::wire::EventClass::Alert,
            kind: "gateway.outbox_quarantined".to_owned(),
            payload: serde_json::value::to_raw_value(&payload)
                .map_err(|e| GatewayError::Task(e.to_string()))?,
            time_ms: None,
        };
        outbox.append(vec![alert]).await?;
    }
    let tokens = api::auth::DeviceTokens::from_config(&config);
    let cameras = camera::Cameras::new(&config, outbox.clone());
    metrics.register_cameras(cameras.clone());
    let offset = firmware_config::config::gateway::parse_utc_offset(&config.site.utc_offset)
        .unwrap_or(time::UtcOffset::UTC);
    let enabled: Vec<_> = config
        .cameras
        .iter()
        .filter(|c| c.enabled)
        .cloned()
        .collect();
    let analyses: std::collections::BTreeMap<_, _> = enabled
        .iter()
        .map(|c| {
            (
                c.id.clone(),
                camera::Analysis::new(c, cameras.clone(), offset),
            )
        })
        .collect();
    let decoders = if enabled.is_empty() {
        None
    } else {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(4)
            .min(enabled.len());
        match camera::Decoders::start(threads, enabled.len()) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::error!(error = %e, "no snapshots or sensing: the decoders did not start");
                None
            }
        }
    };
    let listener = runtime::bind_http(config.http.listen)
        .await
        .map_err(GatewayError::Http)?;
    let http_addr = listener.local_addr().map_err(GatewayError::Http)?;
    let uplink = uplink::Uplink::new(&config, gateway_id.clone())?;
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
        config,
        gateway_id,
        metrics,
        outbox,
        cameras,
        lives: enabled
            .iter()
            .map(|c| (c.id.clone(), video::Live::new()))
            .collect(),
        analyses,
        upstreams: video::upstream::Upstreams::new(push_tls),
        token: token.clone(),
        tokens,
        started: Instant::now(),
    });

    let mut parts = Parts::new("gateway", token);
    let tls = runtime::http_tls(&shared.config.http).map_err(GatewayError::Http)?;
    parts.spawn_http(
        listener,
        api::router(shared.clone()),
        tls,
        GatewayError::Http,
    );
    let (s, t) = (shared.clone(), parts.token().clone());
    parts.spawn(async move {
        uplink.run(s, t).await;
        Ok(())
    });
    for cam in enabled {
        let Some(analysis) = shared.analyses.get(&cam.id).cloned() else {
            continue;
        };
        let Some(live) = shared.lives.get(&cam.id).cloned() else {
            continue;
        };
        let session = camera::CameraSession::new(
            cam,
            shared.cameras.clone(),
            analysis,
            decoders.clone(),
            live,
        );
        let t = parts.token().clone();
        parts.spawn(async move {
            session.run(t).await;
            Ok(())
        });
    }
    tracing::info!(gateway = %shared.gateway_id, site = %shared.config.site.id, %http_addr, "gateway started");
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
