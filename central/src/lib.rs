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
pub mod disk;
pub mod figures;
pub mod link;
pub mod logins;
pub mod map;
pub mod masterdata;
pub mod meetings;
pub mod metrics;
pub mod notify;
pub mod operators;
pub mod ownership;
pub mod pg;
pub mod registry;
pub mod replication;
pub mod retention;
pub mod share;
pub mod sms;
pub mod state;
pub mod store;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use firmware_config::config::central::BrokerChoice;
use firmware_config::config::CentralConfig;
use firmware_config::runtime::clock::Clock;
use firmware_config::runtime::clock::Instant;
use firmware_config::runtime::transport::{MqttTransport, Transport};
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
    Bundles(#[from] bundles::BundlesOpenError),
    #[error("master data: {0}")]
    MasterData(#[from] masterdata::ImportError),
    #[error("alerts: {0}")]
    Alerts(#[source] state::StateError),
    #[error("meetings: {0}")]
    Meetings(#[from] meetings::MeetingError),
    #[error("operators: {0}")]
    Operators(#[from] operators::OperatorsError),
    #[error("cases: {0}")]
    Cases(#[from] cases::CaseError),
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
    #[error("{0}")]
    Postgres(#[from] pg::PgError),
    #[error("{0}")]
    State(#[source] state::StateError),
    #[error("storage.postgres.url: {0}")]
    PostgresUrl(#[source] firmware_config::config::secret::SecretError),
    #[error("identity: {0}")]
    Identity(#[from] firmware_config::runtime::signing::SigningError),
    #[error("signing key: {0}")]
    SigningKey(#[source] firmware_config::bundle::BundleError),
    #[error("cannot make central's signing key: {0}")]
    MakeSigningKey(#[source] firmware_config::certs::CertError),
    #[error("revocation list: {0}")]
    Revocations(#[from] firmware_config::revocation::RevocationError),
    #[error("a central task failed: {0}")]
    Task(String),
}

/// What every part of a running central shares.
pub struct Shared {
    pub config: CentralConfig,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Mutex<GatewayRegistry>>,
    /// Central's own store on this machine (sled): the events unless they are in PostgreSQL,
    /// and the disk it watches.
    pub store: Arc<store::EventStore>,
    /// Where gateways' events are kept.
    pub events: store::EventBackend,
    /// Checks gateways' signatures (when central knows the CA of their certificates).
    pub verifier: Option<Arc<firmware_config::runtime::signing::Verifier>>,
    /// Certificates revoked by the CA (`[identity] crl_file`), read again when it changes.
    pub revocations: Arc<firmware_config::revocation::Revocations>,
    /// Seals every message to gateways with central's signature.
    pub downlink: Arc<link::downlink::Downlink>,
    /// The last status and health accepted from each gateway, against replays.
    pub replay: Arc<link::replay::UplinkReplay>,
    /// Each gateway's clock offset, from its messages.
    pub clocks: Arc<link::clocks::GatewayClocks>,
    /// Commands to gateways, sent on central's MQTT session.
    pub commands: Arc<link::commands::Commands>,
    /// Video sharing: grants, relays, audit.
    pub shares: share::Shares,
    /// With replicas: the leases of this one, which say which gateways it holds.
    pub leases: std::sync::OnceLock<Arc<pg::leases::Leases>>,
    /// Every terminal's last known health.
    pub terminals: Arc<Mutex<registry::terminals::TerminalBoard>>,
    /// Configuration bundles sent to gateways.
    pub bundles: bundles::Bundles,
    /// The street's master data, by version.
    pub masterdata: Arc<masterdata::MasterData>,
    /// Cases from residents' submissions.
    pub cases: Arc<cases::Cases>,
    /// Notices out (the webhook).
    pub notifier: Arc<notify::Notifier>,
    /// What each gateway's replica was last sent.
    pub replication: Arc<replication::Replication>,
    /// Sensing alerts.
    pub alerts: Arc<alerts::Alerts>,
    /// Console logins, sessions and their audit trail.
    pub operators: operators::Operators,
    /// Throttling of console logins, and the few password checks that may run at once.
    pub logins: logins::LoginGuard,
    /// Meetings dispatched to terminals.
    pub meetings: Arc<meetings::Meetings>,
    /// Cameras, and the recent changes of every device.
    pub devices: Arc<Mutex<registry::devices::DeviceBoard>>,
    /// Per gateway, for the outbox rules: evictions last reported, and when central last
    /// stored something of it.
    pub outbox_seen: link::observers::OutboxSeen,
    /// Stops everything central started.
    pub token: CancellationToken,
    pub started: Instant,
    /// The time of day for every part (the system's, or a test's).
    pub clock: Clock,
}

impl Shared {
    pub fn terminal_board(&self) -> std::sync::MutexGuard<'_, registry::terminals::TerminalBoard> {
        self.terminals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The registry; a panic elsewhere while it was held leaves it usable, not poisoned.
    /// Every gateway as the registry sees it, with its clock offset.
    pub fn gateway_views(
        &self,
        now: firmware_config::runtime::clock::Instant,
    ) -> Vec<registry::GatewayView> {
        let mut views = self.registry().views(now);
        for v in &mut views {
            v.clock_offset_ms = self.clocks.offset_ms(&v.id);
        }
        views
    }

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

/// What central runs on that a test may replace: its clock, and its MQTT session.
pub struct Seams<T: Transport = MqttTransport> {
    pub clock: Clock,
    /// Central's session to gateways; `None`: to the broker the config names. With one, an
    /// embedded broker the config asks for still runs, unused by central.
    pub transport: Option<T>,
}

impl Default for Seams {
    fn default() -> Self {
        Self {
            clock: Clock::system(),
            transport: None,
        }
    }
}

/// Starts central: its broker (when embedded), its MQTT session, and its HTTP API.
pub async fn start(
    config: CentralConfig,
    token: CancellationToken,
) -> Result<RunningCentral, CentralError> {
    start_with(config, token, Seams::default()).await
}

/// [`start`], on the given clock and transport.
pub async fn start_with<T: Transport>(
    config: CentralConfig,
    token: CancellationToken,
    seams: Seams<T>,
) -> Result<RunningCentral, CentralError> {
    let Seams { clock, transport } = seams;
    runtime::release_large_allocations();
    std::fs::create_dir_all(&config.storage.dir).map_err(|source| CentralError::Storage {
        path: config.storage.dir.display().to_string(),
        source,
    })?;
    let store = Arc::new(
        store::EventStore::open(
            &config.storage.dir,
            64 << 20,
            config.storage.disk_reserve.bytes(),
            store::BucketWidths::for_retention(&config.retention),
        )?
        .with_clock(clock),
    );
    // On PostgreSQL, the events and every state table are there; otherwise all is in sled.
    let mut on_postgres = None;
    let (events, state): (store::EventBackend, Box<dyn state::StateStore>) = match &config
        .storage
        .postgres
    {
        None => (
            store::EventBackend::Sled(store.clone()),
            Box::new(state::SledState::new(store.db().clone())),
        ),
        Some(pg) => {
            let (connect, events, tables) = connect_postgres(pg, &token).await?;
            on_postgres = Some((connect, events.clone()));
            (
                store::EventBackend::Postgres(Arc::new(pg::events::PgEvents::new(events, clock))),
                Box::new(pg::state::PgState::new(tables).map_err(CentralError::State)?),
            )
        }
    };
    let key_file = signing_key(&config)?;
    let load_key =
        || firmware_config::bundle::SigningKey::load(&key_file).map_err(CentralError::SigningKey);
    let downlink = Arc::new(link::downlink::Downlink::new(load_key()?, clock));
    let revocations = Arc::new(match (&config.identity.crl_file, config.gateway_ca()) {
        (Some(crl), Some(ca)) => firmware_config::revocation::Revocations::from_crl_file(crl, ca)?,
        _ => firmware_config::revocation::Revocations::none(),
    });
    let verifier = match config.gateway_ca() {
        Some(ca) => Some(Arc::new(
            firmware_config::runtime::signing::Verifier::from_ca_file(ca, revocations.clone())?,
        )),
        None => {
            tracing::warn!("no CA for gateway certificates (plain development broker): messages are not checked for their sender");
            None
        }
    };
    let metrics = Arc::new(Metrics::new(&config));
    metrics.certificates_revoked.set(revocations.len() as i64);
    let (broker_addr, mqtt) = match config.broker.choice().ok_or(CentralError::NoBroker)? {
        BrokerChoice::Embedded(e) => {
            let refusals = broker::acl::Refusals::counted_in(metrics.broker_refused.clone());
            let handle =
                broker::start(e, &config.central.id, revocations.clone(), refusals).await?;
            let url = format!("mqtt://{}", handle.central_addr);
            (
                Some(handle.local_addr),
                link::GatewayLink::new(
                    &url,
                    None,
                    &config.central.id,
                    Some((broker::CENTRAL_USER, &handle.central_password)),
                )?,
            )
        }
        BrokerChoice::External(x) => (
            None,
            link::GatewayLink::new(&x.url, x.tls.as_ref(), &config.central.client_id(), None)?,
        ),
    };
    let link = match transport {
        Some(t) => Link::Given(link::GatewayLink::on(t)),
        None => Link::Mqtt(Box::new(mqtt)),
    };
    let listener = runtime::bind_http(config.http.listen)
        .await
        .map_err(CentralError::Http)?;
    let http_addr = listener.local_addr().map_err(CentralError::Http)?;
    let mut shares = share::Shares::open(
        &config.storage.dir,
        config.relay_url(http_addr),
        config.relay.max_share,
    )
    .map_err(|source| CentralError::Storage {
        path: config.storage.dir.display().to_string(),
        source,
    })?;
    // Everything else central keeps, in tables beside the events; each part opens its own.
    let state = state.as_ref();
    // On PostgreSQL, shares are granted for every replica: one key, the grants in a table.
    if config.storage.postgres.is_some() {
        shares
            .keep_in(state.table("shares").map_err(CentralError::State)?)
            .map_err(CentralError::State)?;
    }
    let bundles = bundles::Bundles::open(state, Some(&key_file), clock)?;
    let masterdata = Arc::new(masterdata::MasterData::open(state, clock)?);
    let directory = masterdata.clone();
    let registry = Arc::new(Mutex::new(GatewayRegistry::new(
        config.health.gateway_silence,
    )));
    let commands = Arc::new(link.commands(downlink.clone()));
    let publisher = link.publisher();
    let replication = replication::Replication::new(
        masterdata.clone(),
        load_key()?,
        commands.clone(),
        registry.clone(),
    );
    let shared = Arc::new(Shared {
        terminals: Arc::default(),
        masterdata,
        replication: Arc::new(replication),
        alerts: Arc::new(
            alerts::Alerts::open(
                state,
                alerts::Policy {
                    escalate_after: [
                        config.alerts.escalate_to_station,
                        config.alerts.escalate_to_command,
                    ],
                },
            )
            .map_err(CentralError::Alerts)?,
        ),
        outbox_seen: Arc::default(),
        devices: Arc::default(),
        meetings: Arc::new(meetings::Meetings::open(state)?),
        operators: {
            let mut o =
                operators::Operators::new(&config.operators, &config.api_tokens, state, clock)?;
            if config.storage.postgres.is_some() {
                o.share_sessions(state.table("sessions").map_err(CentralError::State)?);
            }
            o
        },
        cases: Arc::new(
            cases::Cases::open(state, clock)?.with_policy(
                firmware_config::config::gateway::parse_utc_offset(&config.alerts.utc_offset)
                    .unwrap_or(time::UtcOffset::UTC),
                config.alerts.case_limit,
            ),
        ),
        logins: logins::LoginGuard::default(),
        bundles,
        notifier: Arc::new(
            notify::Notifier::open(
                state,
                clock,
                config.notify.clone(),
                config.central.client_id(),
                metrics.clone(),
            )
            .map_err(CentralError::State)?
            .with_directory(directory),
        ),
        metrics,
        registry,
        config,
        store,
        events,
        verifier,
        revocations,
        commands,
        downlink,
        replay: Arc::default(),
        clocks: Arc::default(),
        shares,
        leases: Default::default(),
        token: token.clone(),
        started: clock.instant(),
        clock,
    });
    let mut parts = Parts::new("central", token);
    // One of several replicas: leases say which gateways are this one's; alerts are told
    // between replicas.
    let (owned, announcer) = match (&shared.config.central.replica, on_postgres) {
        (Some(_), Some((connect, pool))) => {
            let name = shared.config.central.client_id();
            let leases = Arc::new(
                pg::leases::Leases::new(pool.clone(), &name, ownership::TTL)
                    .with_relay_url(&shared.shares.relay_url),
            );
            let _ = shared.leases.set(leases.clone());
            let owner: alerts::OwnerCheck = {
                let l = leases.clone();
                Arc::new(move |g: &str| l.owns(g).is_some())
            };
            let announcer = pg::feed::start(
                pool,
                connect,
                &name,
                Arc::new(ownership::Mirror {
                    shared: shared.clone(),
                }),
                parts.token().clone(),
            );
            shared.masterdata.share(announcer.clone());
            shared.shares.share(announcer.clone());
            shared.cases.share(announcer.clone());
            if let Some(ids) = state.ids("alert_ids") {
                shared.alerts.share(ids, owner, announcer.clone());
            }
            let keeper = ownership::Keeper {
                leases: leases.clone(),
                registry: shared.registry.clone(),
                publisher,
                downlink: shared.downlink.clone(),
                alerts: shared.alerts.clone(),
                metrics: shared.metrics.clone(),
            };
            let t = parts.token().clone();
            parts.spawn(async move {
                ownership::keep(keeper, t).await;
                Ok(())
            });
            (Some(leases), Some(announcer))
        }
        _ => (None, None),
    };
    let tls = runtime::http_tls(&shared.config.http).map_err(CentralError::Http)?;
    parts.spawn_http(
        listener,
        api::router(shared.clone()),
        tls,
        shared.config.http.max_connections,
        CentralError::Http,
    );
    let observers = link::observers::Observers {
        registry: shared.registry.clone(),
        terminals: shared.terminals.clone(),
        devices: shared.devices.clone(),
        meetings: shared.meetings.clone(),
        alerts: shared.alerts.clone(),
        replication: shared.replication.clone(),
        cases: shared.cases.clone(),
        masterdata: shared.masterdata.clone(),
        commands: shared.commands.clone(),
        outbox_seen: shared.outbox_seen.clone(),
        clocks: shared.clocks.clone(),
        max_clock_offset: shared.config.health.max_clock_offset,
        backlog: shared.metrics.observer_backlog.clone(),
        announcer,
        clock: shared.clock,
    };
    let ingest = link::Ingest {
        metrics: shared.metrics.clone(),
        verifier: shared.verifier.clone(),
        replay: shared.replay.clone(),
        clocks: shared.clocks.clone(),
        message_max_age: shared.config.identity.message_max_age,
        clock: shared.clock,
        events: shared.events.clone(),
        downlink: shared.downlink.clone(),
        commands: shared.commands.clone(),
        masterdata: shared.masterdata.clone(),
        owned,
    };
    let (store, alerts, id, clock, t) = (
        shared.store.clone(),
        shared.alerts.clone(),
        shared.config.central.id.clone(),
        shared.clock,
        parts.token().clone(),
    );
    parts.spawn(async move { Ok(disk::watch(store, alerts, id, clock, t).await?) });
    let (store, settings, metrics, t) = (
        shared.events.clone(),
        shared.config.retention.clone(),
        shared.metrics.clone(),
        parts.token().clone(),
    );
    parts.spawn(async move { Ok(retention::run(store, settings, metrics, clock, t).await?) });
    let t = parts.token().clone();
    parts.spawn(async move {
        match link {
            Link::Mqtt(l) => l.run(ingest, observers, t).await,
            Link::Given(l) => l.run(ingest, observers, t).await,
        }
        Ok(())
    });
    let (n, t) = (shared.notifier.clone(), parts.token().clone());
    parts.spawn(async move {
        n.run(t).await;
        Ok(())
    });
    let (s, t) = (shared.clone(), parts.token().clone());
    parts.spawn(async move {
        notify_escalations(s, t).await;
        Ok(())
    });
    let watch = alerts::Watch {
        registry: shared.registry.clone(),
        alerts: shared.alerts.clone(),
        cases: shared.cases.clone(),
        notifier: shared.notifier.clone(),
        masterdata: shared.masterdata.clone(),
        clock: shared.clock,
        settings: shared.config.alerts.clone(),
    };
    let t = parts.token().clone();
    parts.spawn(async move {
        alerts::watch(watch, t).await;
        Ok(())
    });
    let (s, t) = (shared.clone(), parts.token().clone());
    parts.spawn(async move {
        watch_revocations(s, t).await;
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

/// Central's session: on the broker of the config, or on a transport a test gave.
enum Link<T: Transport> {
    Mqtt(Box<link::GatewayLink>),
    Given(link::GatewayLink<T>),
}

impl<T: Transport> Link<T> {
    fn commands(&self, downlink: Arc<link::downlink::Downlink>) -> link::commands::Commands {
        match self {
            Link::Mqtt(l) => l.commands(downlink),
            Link::Given(l) => l.commands(downlink),
        }
    }

    fn publisher(&self) -> Arc<dyn firmware_config::runtime::transport::Publisher> {
        match self {
            Link::Mqtt(l) => l.publisher(),
            Link::Given(l) => l.publisher(),
        }
    }
}

/// Central's signing key: the configured file, or one made in the storage folder at the first
/// start (with its public half beside it, for gateways).
fn signing_key(config: &CentralConfig) -> Result<std::path::PathBuf, CentralError> {
    let file = config.signing_key_file();
    if config.identity.signing_key_file.is_none() && !file.exists() {
        let dir = &config.storage.dir;
        let (key, public) = firmware_config::bundle::create_key_files(dir, "central-signing")
            .map_err(CentralError::MakeSigningKey)?;
        tracing::warn!(key = %key.display(), public = %public.display(), "made central's signing key: give every gateway the public half (uplink.central_key_file)");
    }
    Ok(file)
}

/// How often the revocation list file is looked at for changes.
const REVOCATIONS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads the revocation list again whenever its file changes.
async fn watch_revocations(shared: Arc<Shared>, token: CancellationToken) {
    if shared.config.identity.crl_file.is_none() {
        return;
    }
    let mut every = tokio::time::interval(REVOCATIONS_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = every.tick() => {}
        }
        let r = shared.revocations.clone();
        match tokio::task::spawn_blocking(move || r.refresh()).await {
            Ok(Ok(true)) => {
                let n = shared.revocations.len();
                shared.metrics.certificates_revoked.set(n as i64);
                tracing::info!(revoked = n, "revocation list changed; in force now");
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot read the revocation list; the one read before stays in force")
            }
            Err(e) => tracing::error!(error = %e, "revocation list task failed"),
        }
    }
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

/// How to reach PostgreSQL, and two pools of connections to it (the events', and the state
/// tables' on their own runtime: see `pg::state`), the schema brought up to date. Waits for the database
/// (a replica may start before it, or while it restarts), trying again with a growing pause
/// until `token` is cancelled; a schema newer than this central, or a step that fails, stops
/// it at once.
async fn connect_postgres(
    settings: &firmware_config::config::central::PostgresStorage,
    token: &CancellationToken,
) -> Result<(pg::feed::Connect, pg::Pool, pg::Pool), CentralError> {
    let url = settings.url.read().map_err(CentralError::PostgresUrl)?;
    let connect = pg::connect(&url, settings.ca_file.as_deref())?;
    let pool = pg::pool(&connect, settings.pool_size)?;
    let tables = pg::pool(&connect, 4)?;
    let mut pause = std::time::Duration::from_millis(200);
    loop {
        match pg::migrate(&pool).await {
            Ok(applied) => {
                tracing::info!(applied, "postgres ready");
                return Ok((connect, pool, tables));
            }
            Err(e @ (pg::PgError::SchemaTooNew { .. } | pg::PgError::Migration { .. })) => {
                return Err(e.into())
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?pause, "postgres not reachable yet");
                tokio::select! {
                    _ = token.cancelled() => return Err(e.into()),
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
}

/// Escalations this replica made (a mirror of another's never says escalated) go out as
/// notices to whom the roster names.
async fn notify_escalations(shared: Arc<Shared>, token: tokio_util::sync::CancellationToken) {
    let mut changes = shared.alerts.changes.subscribe();
    loop {
        let change = tokio::select! {
            _ = token.cancelled() => return,
            c = changes.recv() => c,
        };
        match change {
            Ok(alerts::engine::Change::Escalated { id, level, to }) => {
                let alert = shared.alerts.engine().get(id).map(|a| {
                    serde_json::json!({
                        "title": a.title, "gateway": a.gateway, "severity": a.severity,
                        "rule": a.rule,
                    })
                });
                shared.notifier.notify(
                    "alert.escalated",
                    serde_json::json!({"alert": id, "level": level, "to": to, "detail": alert}),
                );
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "escalation notices fell behind the alert feed")
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}
