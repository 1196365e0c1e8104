//! The embedded MQTT broker (rumqttd), so that one command runs everything.
//!
//! rumqttd runs on threads of its own and has no shutdown call: the broker lives as long as the
//! process. Its ports are checked before it starts, so that a busy port is a clear error here
//! instead of a log line from a broker thread.
//!
//! Who may do what is decided here ([`acl`]), with the vendored rumqttd's authorization hook:
//! a gateway is the common name of its verified client certificate and may use only its own
//! topics; central's own session uses the plain loopback listener with a password made at each
//! start.

pub mod acl;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use firmware_config::config::central::EmbeddedBroker;
use firmware_config::revocation::Revocations;
use firmware_config::wire::MAX_MESSAGE_BYTES;

pub use acl::{BrokerPolicy, CENTRAL_USER};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the broker thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// The running embedded broker.
#[derive(Debug, Clone)]
pub struct BrokerHandle {
    /// The plain listener, as bound (port 0 in the config becomes a real port).
    pub local_addr: SocketAddr,
    /// Where central's own session connects: the plain listener, or with
    /// `allow_plain_gateways` a loopback listener of its own.
    pub central_addr: SocketAddr,
    /// The TLS listener for gateways, when configured.
    pub tls_addr: Option<SocketAddr>,
    /// The password of central's own session (user [`CENTRAL_USER`]).
    pub central_password: String,
}

/// How often a connected client's identity is checked again (a certificate revoked or expired
/// since it connected is cut off within this).
const REAUTHORIZE_MS: u64 = 10_000;

/// Most connections of one listener that may be between accept and their CONNECT at once.
const MAX_PENDING: usize = 1024;

/// How long a new connection may take over its TLS handshake, and again over its CONNECT.
const CONNECT_TIMEOUT_MS: u16 = 5_000;

/// Starts the broker. Its ports are bound by its own threads a moment later; clients retry.
pub async fn start(
    cfg: &EmbeddedBroker,
    central_id: &str,
    revocations: Arc<Revocations>,
    refusals: acl::Refusals,
) -> Result<BrokerHandle, BrokerError> {
    let local_addr = reserve(cfg.listen)?;
    let tls_addr = cfg.tls_listen.map(reserve).transpose()?;
    let central_password = acl::new_password();
    let policy = Arc::new(BrokerPolicy::new(
        cfg.allow_plain_gateways,
        central_id,
        revocations,
        refusals,
    ));
    // Central's own listener: a password nobody else has.
    let central_only = |name: &str, addr: SocketAddr| {
        let mut s = server(name, addr, None, policy.clone());
        s.connections.auth = Some(HashMap::from([(
            CENTRAL_USER.to_owned(),
            central_password.clone(),
        )]));
        s
    };
    let mut v4 = HashMap::new();
    let central_addr = if cfg.allow_plain_gateways {
        // The plain listener is open to gateways (known by their client ids); central gets a
        // loopback listener of its own.
        let addr = reserve(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        v4.insert(acl::CENTRAL.to_owned(), central_only(acl::CENTRAL, addr));
        v4.insert(
            acl::PLAIN.to_owned(),
            server(acl::PLAIN, local_addr, None, policy.clone()),
        );
        addr
    } else {
        v4.insert(acl::PLAIN.to_owned(), central_only(acl::PLAIN, local_addr));
        local_addr
    };
    if let (Some(addr), Some(files)) = (tls_addr, &cfg.tls) {
        let tls = rumqttd::TlsConfig::Rustls {
            capath: Some(files.ca_file.display().to_string()),
            certpath: files.cert_file.display().to_string(),
            keypath: files.key_file.display().to_string(),
        };
        v4.insert(
            acl::TLS.to_owned(),
            server(acl::TLS, addr, Some(tls), policy.clone()),
        );
    }
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: cfg.max_connections,
            max_outgoing_packet_count: 200,
            max_segment_size: 4 << 20,
            max_segment_count: 2,
            custom_segment: Some(retention()),
            ..Default::default()
        },
        v4: Some(v4),
        ..Default::default()
    };
    let name = format!("broker-{central_id}");
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })
        .map_err(BrokerError::Thread)?;
    tracing::info!(%local_addr, ?tls_addr, plain_gateways = cfg.allow_plain_gateways, "embedded broker listening");
    Ok(BrokerHandle {
        local_addr,
        central_addr,
        tls_addr,
        central_password,
    })
}

/// How much each subscription's in-memory log keeps. rumqttd keeps every message a filter
/// matched until its log rotates, whoever has read it, so these sizes are central's memory:
/// one log per gateway per downlink channel (1,000 gateways at the old 16 MiB × 10 would have
/// been allowed 480 GiB), and one for each uplink channel shared by all gateways. A message
/// that falls off the end before its reader took it is not lost: the gateway resends an
/// unacknowledged batch, and central repeats an unanswered command or fetch.
fn retention() -> HashMap<String, rumqttd::SegmentConfig> {
    use firmware_config::topics::{all_gateways, Channel};
    let segments = |size: usize, count: usize| rumqttd::SegmentConfig {
        max_segment_size: size,
        max_segment_count: count,
    };
    let mut m = HashMap::new();
    // Downlink to one gateway: acks, commands, data pieces — read at once. A message counts
    // its ~500 bytes in memory against the size (vendor/README.md), so 16 KiB holds a few
    // dozen acks, several times a gateway's window of batches in flight; a segment always
    // holds at least one message (a content piece).
    for ch in [Channel::Ack, Channel::Cmd, Channel::Data] {
        m.insert(all_gateways(ch), segments(16 << 10, 2));
    }
    // Every gateway's event batches, waiting for central's store: room for a burst of
    // ~250,000 events.
    m.insert(all_gateways(Channel::Events), segments(16 << 20, 4));
    m
}

fn server(
    name: &str,
    listen: SocketAddr,
    tls: Option<rumqttd::TlsConfig>,
    policy: Arc<BrokerPolicy>,
) -> rumqttd::ServerSettings {
    let mut connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: CONNECT_TIMEOUT_MS,
        max_payload_size: MAX_MESSAGE_BYTES + 4096,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
        acl: None,
        reauthorize_interval_ms: REAUTHORIZE_MS,
        max_pending_connections: MAX_PENDING,
    };
    connections.set_acl_handler(move |identity, action| policy.allows(identity, action));
    rumqttd::ServerSettings {
        name: name.to_owned(),
        listen,
        tls,
        next_connection_delay_ms: 1,
        connections,
    }
}

/// Checks that `addr` can be bound and turns port 0 into a concrete free port.
fn reserve(addr: SocketAddr) -> Result<SocketAddr, BrokerError> {
    let l =
        std::net::TcpListener::bind(addr).map_err(|source| BrokerError::Bind { addr, source })?;
    l.local_addr()
        .map_err(|source| BrokerError::Bind { addr, source })
}
