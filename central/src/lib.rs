//! GridEdge central: the hub in the street command centre.
//!
//! It runs (or connects to) the MQTT broker that every gateway talks to, keeps the registry of
//! gateways and their health, and serves operators over HTTP. [`start`] runs it in-process (as
//! the tests do); `main.rs` wraps it as a binary.

pub mod alerts;
pub mod api;
pub mod assessment;
pub mod broker;
pub mod bundles;
pub mod cases;
pub mod link;
pub mod masterdata;
pub mod meetings;
pub mod metrics;
pub mod operators;
pub mod registry;
pub mod replication;
pub mod share;
pub mod store;
pub mod terminals;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use firmware_config::config::central::BrokerChoice;
use firmware_config::config::CentralConfig;
use firmware_config::runtime::{self, mqtt::MqttSetupError, Parts};
use tokio_util::sync::CancellationToken;

pub use metrics::Metrics;
pub use registry::GatewayRegistry;

/// Software version, shown in `/healthz` and `/metrics`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Why central could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum CentralError {
    #[error("bundles: {0}")]
    Bundles(String),
    #[error("master data: {0}")]
    MasterData(String),
    #[error("config has no broker")]
    NoBroker,
    #[error("storage folder {path}: {source}")]
    Storage {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("embedded broker: {0}")]
    Broker(#[from] broker::BrokerError),
    #[error("HTTP: {0}")]
    Http(#[source] std::io::Error),
    #[error("MQTT client: {0}")]
    Mqtt(#[from] MqttSetupError),
    #[error("{0}")]
    Store(#[from] store::StoreError),
    #[error("identity: {0}")]
    Identity(#[from] firmware_config::runtime::signing::SigningError),
    #[error("a central task failed: {0}")]
    Task(String),
}

/// What every part of a running central shares.
pub struct Shared {
    pub config: CentralConfig,
    pub metrics: Metrics,
    pub registry: Mutex<GatewayRegistry>,
    pub store: Arc<store::EventStore>,
    /// Checks gateways' signatures when `[identity] gateway_ca_file` is set.
    pub verifier: Option<firmware_config::runtime::signing::Verifier>,
    /// Commands to gateways, sent on central's MQTT session.
    pub commands: link::commands::Commands,
    /// Video sharing: grants, relays, audit.
    pub shares: share::Shares,
    /// Every terminal's last known health.
    pub terminals: Mutex<terminals::TerminalBoard>,
    /// Configuration bundles sent to gateways.
    pub bundles: bundles::Bundles,
    /// The street's master data, by version.
    pub masterdata: masterdata::MasterData,
    /// Cases from residents' submissions.
    pub cases: cases::Cases,
    /// What each gateway's replica was last sent.
    pub replication: replication::Replication,
    /// Sensing alerts.
    pub alerts: alerts::Alerts,
    /// Console logins, sessions and their audit trail.
    pub operators: operators::Operators,
    /// Meetings dispatched to terminals.
    pub meetings: meetings::Meetings,
    /// Cameras, and the recent changes of every device.
    pub devices: Mutex<registry::devices::DeviceBoard>,
    /// Per gateway, for the outbox rules: evictions last reported, and when central last
    /// stored something of it.
    pub outbox_seen: Mutex<std::collections::HashMap<String, (u64, Instant)>>,
    /// Stops everything central started.
    pub token: CancellationToken,
    pub started: Instant,
}

impl Shared {
    pub fn terminal_board(&self) -> std::sync::MutexGuard<'_, terminals::TerminalBoard> {
        self.terminals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The registry; a panic elsewhere while it was held leaves it usable, not poisoned.
    pub fn registry(&self) -> std::sync::MutexGuard<'_, GatewayRegistry> {
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A central running in this process.
pub struct RunningCentral {
    pub http_addr: SocketAddr,
    /// Where the embedded broker's plain listener accepts connections, when it runs one.
    pub broker_addr: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    parts: Parts<CentralError>,
}

/// Starts central: its broker (when embedded), its MQTT session, and its HTTP API.
pub async fn start(
    config: CentralConfig,
    token: CancellationToken,
) -> Result<RunningCentral, CentralError> {
    std::fs::create_dir_all(&config.storage.dir).map_err(|source| CentralError::Storage {
        path: config.storage.dir.display().to_string(),
        source,
    })?;
    let store = Arc::new(store::EventStore::open(&config.storage.dir, 64 << 20)?);
    let verifier = match &config.identity.gateway_ca_file {
        Some(ca) => Some(firmware_config::runtime::signing::Verifier::from_ca_file(
            ca,
        )?),
        None => None,
    };
    let (broker_addr, link) = match config.broker.choice().ok_or(CentralError::NoBroker)? {
        BrokerChoice::Embedded(e) => {
            let handle = broker::start(e, &config.central.id).await?;
            let url = format!("mqtt://{}", handle.local_addr);
            (
                Some(handle.local_addr),
                link::GatewayLink::new(&url, None, &config.central.id)?,
            )
        }
        BrokerChoice::External(x) => (
            None,
            link::GatewayLink::new(&x.url, x.tls.as_ref(), &config.central.id)?,
        ),
    };
    let listener = runtime::bind_http(config.http.listen)
        .await
        .map_err(CentralError::Http)?;
    let http_addr = listener.local_addr().map_err(CentralError::Http)?;
    let shares = share::Shares::open(
        &config.storage.dir,
        config.relay_url(http_addr),
        config.relay.max_share,
    )
    .map_err(|source| CentralError::Storage {
        path: config.storage.dir.display().to_string(),
        source,
    })?;
    let bundles = bundles::Bundles::open(
        store.db(),
        config.identity.bundle_signing_key_file.as_deref(),
    )
    .map_err(CentralError::Bundles)?;
    let masterdata = masterdata::MasterData::open(store.db()).map_err(CentralError::MasterData)?;
    let shared = Arc::new(Shared {
        terminals: Mutex::default(),
        masterdata,
        replication: replication::Replication::default(),
        alerts: alerts::Alerts::open(
            store.db(),
            alerts::Policy {
                escalate_after: [
                    config.alerts.escalate_to_station,
                    config.alerts.escalate_to_command,
                ],
            },
        )
        .map_err(CentralError::MasterData)?,
        outbox_seen: Mutex::default(),
        devices: Mutex::default(),
        meetings: meetings::Meetings::open(store.db()).map_err(CentralError::MasterData)?,
        operators: operators::Operators::new(&config.operators, &config.api_tokens, store.db())
            .map_err(CentralError::MasterData)?,
        cases: cases::Cases::open(store.db()).map_err(CentralError::MasterData)?,
        bundles,
        metrics: Metrics::new(&config),
        registry: Mutex::new(GatewayRegistry::new(config.health.gateway_silence)),
        config,
        store,
        verifier,
        commands: link.commands(),
        shares,
        token: token.clone(),
        started: Instant::now(),
    });
    let mut parts = Parts::new("central", token);
    let tls = runtime::http_tls(&shared.config.http).map_err(CentralError::Http)?;
    parts.spawn_http(
        listener,
        api::router(shared.clone()),
        tls,
        CentralError::Http,
    );
    let (s, t) = (shared.clone(), parts.token().clone());
    parts.spawn(async move {
        link.run(s, t).await;
        Ok(())
    });
    let (s, t) = (shared.clone(), parts.token().clone());
    parts.spawn(async move {
        alerts::watch(s, t).await;
        Ok(())
    });
    tracing::info!(central = %shared.config.central.id, %http_addr, ?broker_addr, "central started");
    Ok(RunningCentral {
        http_addr,
        broker_addr,
        shared,
        parts,
    })
}

impl RunningCentral {
    /// Asks every part to stop.
    pub fn shutdown(&self) {
        self.parts.token().cancel();
    }

    /// Waits until every part has stopped; when one fails, the others are stopped too.
    pub async fn wait(self) -> Result<(), CentralError> {
        self.parts.wait(CentralError::Task).await
    }
}
