//! Configuration of central, the hub in the street command centre.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Document, Http, TlsFiles, Validator};

/// Central's config file (`central.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CentralConfig {
    pub central: CentralIdentity,
    pub broker: Broker,
    pub storage: CentralStorage,
    /// Default: listen on `0.0.0.0:8090`.
    #[serde(default = "default_http")]
    pub http: Http,
    #[serde(default)]
    pub health: HealthPolicy,
    #[serde(default)]
    pub identity: Identity,
    #[serde(default)]
    pub relay: Relay,
    #[serde(default)]
    pub alerts: AlertPolicy,
    /// Who may log in to the operator console.
    #[serde(default)]
    pub operators: Vec<OperatorAccount>,
    /// Keys for scripts and tools on central's API (`Authorization: Bearer …`), such as
    /// `central data push`.
    #[serde(default)]
    pub api_tokens: Vec<ApiToken>,
}

/// A machine's key to central's API, with the role it acts in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// Who it is, as the audit trail names it.
    pub name: String,
    /// `operator`, `supervisor` or `administrator`.
    pub role: String,
    /// SHA-256 of the token in hex, as `central operator token` prints it; never the token.
    pub token_sha256: String,
}

/// Operator roles, each allowed what the one before is and more.
pub const OPERATOR_ROLES: [&str; 3] = ["operator", "supervisor", "administrator"];

/// One login of the operator console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorAccount {
    /// The login name.
    pub name: String,
    /// `operator` (sees everything, handles alerts), `supervisor` (also maintenance, the duty
    /// roster, meetings), `administrator` (everything).
    pub role: String,
    /// Argon2id PHC string, as `central operator hash` prints it; never the password itself.
    pub password_hash: String,
}

/// When unacknowledged alerts are escalated, and the street's clock for the duty roster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertPolicy {
    /// Unacknowledged this long: the grid station's on-duty person is told. Default 5 min.
    #[serde(default = "default_escalate_to_station", with = "humantime_serde")]
    pub escalate_to_station: Duration,
    /// Then this long more: the command centre's on-duty person. Default 10 min.
    #[serde(default = "default_escalate_to_command", with = "humantime_serde")]
    pub escalate_to_command: Duration,
    /// The street's offset from UTC, for the roster's hours. Default `+08:00`.
    #[serde(default = "default_street_offset")]
    pub utc_offset: String,
    /// A resident's report or dispute not resolved or closed within this is an alert (an
    /// application has its service item's own time limit). Default 72 h.
    #[serde(default = "default_case_limit", with = "humantime_serde")]
    pub case_limit: Duration,
    /// Assessment target: an alert acknowledged within this. Default 15 min.
    #[serde(default = "default_ack_within", with = "humantime_serde")]
    pub ack_within: Duration,
    /// Assessment target: an alert resolved within this. Default 24 h.
    #[serde(default = "default_resolve_within", with = "humantime_serde")]
    pub resolve_within: Duration,
}

fn default_ack_within() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_resolve_within() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_case_limit() -> Duration {
    Duration::from_secs(72 * 3600)
}

impl Default for AlertPolicy {
    fn default() -> Self {
        Self {
            escalate_to_station: default_escalate_to_station(),
            escalate_to_command: default_escalate_to_command(),
            utc_offset: default_street_offset(),
            case_limit: default_case_limit(),
            ack_within: default_ack_within(),
            resolve_within: default_resolve_within(),
        }
    }
}

fn default_escalate_to_station() -> Duration {
    Duration::from_secs(300)
}
fn default_escalate_to_command() -> Duration {
    Duration::from_secs(600)
}
fn default_street_offset() -> String {
    "+08:00".to_owned()
}

/// Video sharing: gateways push a shared camera's video to central, which fans it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Relay {
    /// Where gateways reach central's HTTP API to push video (`http://` or `https://`).
    /// Default: `http://` and the `[http] listen` address (127.0.0.1 when it listens on all).
    #[serde(default)]
    pub public_url: Option<String>,
    /// Longest share an operator may grant. Default 4 h.
    #[serde(default = "default_max_share", with = "humantime_serde")]
    pub max_share: std::time::Duration,
}

impl Default for Relay {
    fn default() -> Self {
        Self {
            public_url: None,
            max_share: default_max_share(),
        }
    }
}

fn default_max_share() -> std::time::Duration {
    std::time::Duration::from_secs(4 * 3600)
}

impl CentralConfig {
    /// The base URL gateways push video to; `bound` is where the HTTP API really listens.
    pub fn relay_url(&self, bound: std::net::SocketAddr) -> String {
        match &self.relay.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => {
                let mut addr = bound;
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                let scheme = if self.http.tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{addr}")
            }
        }
    }
}

/// How central knows who a message is from, and how gateways know a message is central's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// CA that issues gateway certificates. Central accepts only messages signed with the key
    /// of a certificate from this CA — not expired, not revoked — whose common name is the
    /// sending gateway's id: identity that holds on any broker. Default: the CA of the
    /// broker's TLS files (`[broker.embedded.tls]` or `[broker.external.tls]`); with neither
    /// (gateways on a plain development listener) messages are not checked.
    #[serde(default)]
    pub gateway_ca_file: Option<PathBuf>,
    /// The CA's certificate revocation list (PEM or DER), as `fwcfg certs revoke` writes it.
    /// Read again within seconds of a change: a revoked gateway is refused by the embedded
    /// broker (cut off if connected) and by central's checks, without a restart.
    #[serde(default)]
    pub crl_file: Option<PathBuf>,
    /// Central's Ed25519 signing key (PKCS#8 PEM): signs every message to gateways (acks,
    /// commands, master data) and configuration bundles; gateways trust its public half
    /// (`uplink.central_key_file`). Default: `central-signing.key` in the storage folder,
    /// made at the first start with `central-signing.pub` beside it.
    #[serde(default, alias = "bundle_signing_key_file")]
    pub signing_key_file: Option<PathBuf>,
    /// A gateway's health report older than this (by the time it signed into it) is refused
    /// as stale or replayed. Default 15 min.
    #[serde(default = "default_message_max_age", with = "humantime_serde")]
    pub message_max_age: Duration,
}

impl Default for Identity {
    fn default() -> Self {
        Self {
            gateway_ca_file: None,
            crl_file: None,
            signing_key_file: None,
            message_max_age: default_message_max_age(),
        }
    }
}

fn default_message_max_age() -> Duration {
    Duration::from_secs(15 * 60)
}

impl CentralConfig {
    /// The CA whose gateway certificates central trusts: `[identity] gateway_ca_file`, else
    /// the broker's TLS CA.
    pub fn gateway_ca(&self) -> Option<&Path> {
        self.identity.gateway_ca_file.as_deref().or_else(|| {
            match (&self.broker.embedded, &self.broker.external) {
                (Some(e), _) => e.tls.as_ref().map(|t| t.ca_file.as_path()),
                (None, Some(x)) => x.tls.as_ref().map(|t| t.ca_file.as_path()),
                (None, None) => None,
            }
        })
    }

    /// Central's signing key file: the configured one, or the one made in the storage folder.
    pub fn signing_key_file(&self) -> PathBuf {
        self.identity
            .signing_key_file
            .clone()
            .unwrap_or_else(|| self.storage.dir.join("central-signing.key"))
    }
}

fn default_http() -> Http {
    Http {
        listen: SocketAddr::from(([0, 0, 0, 0], 8090)),
        tls: None,
        max_connections: 1024,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CentralIdentity {
    /// Unique id of this central, e.g. `street-command`; also its MQTT client id.
    pub id: String,
    /// Human name, shown in the operator console.
    pub name: String,
}

/// The MQTT broker: exactly one of `[broker.embedded]` or `[broker.external]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Broker {
    #[serde(default)]
    pub embedded: Option<EmbeddedBroker>,
    #[serde(default)]
    pub external: Option<ExternalBroker>,
}

/// Which broker central uses, once validated.
#[derive(Debug, Clone, Copy)]
pub enum BrokerChoice<'a> {
    Embedded(&'a EmbeddedBroker),
    External(&'a ExternalBroker),
}

impl Broker {
    /// The broker to use. Validation guarantees exactly one is set; embedded wins otherwise.
    pub fn choice(&self) -> Option<BrokerChoice<'_>> {
        match (&self.embedded, &self.external) {
            (Some(e), _) => Some(BrokerChoice::Embedded(e)),
            (None, Some(x)) => Some(BrokerChoice::External(x)),
            (None, None) => None,
        }
    }
}

/// The broker central runs inside its own process (rumqttd).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedBroker {
    /// Plain MQTT listener. Keep it on loopback in production. Default `127.0.0.1:1883`.
    #[serde(default = "default_plain_listen")]
    pub listen: SocketAddr,
    /// TLS listener for gateways, requiring client certificates; absent means none.
    #[serde(default)]
    pub tls_listen: Option<SocketAddr>,
    /// Server certificate, key and the CA that signs gateway certificates; required with
    /// `tls_listen`.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// Most client connections at once. Default 10000.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Development only: gateways may connect to the plain listener too, without a
    /// certificate, each known only by the client id it gives (the broker still keeps it to
    /// that id's topics), and the plain listener may then listen beyond loopback. Default
    /// false: the plain listener is for central's own session, with a password made at each
    /// start.
    #[serde(default)]
    pub allow_plain_gateways: bool,
}

fn default_plain_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1883))
}
fn default_max_connections() -> usize {
    10_000
}

/// An external broker (Mosquitto, EMQX) that central connects to as a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalBroker {
    /// `mqtts://host:port` or `mqtt://host:port`.
    pub url: String,
    /// TLS files; required for `mqtts://`.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CentralStorage {
    /// Folder of central's store; created if missing. Relative to the config file.
    pub dir: PathBuf,
}

/// When central considers a device gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthPolicy {
    /// A gateway silent for this long is shown as offline even without its last will. Default 90 s.
    #[serde(default = "default_gateway_silence", with = "humantime_serde")]
    pub gateway_silence: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            gateway_silence: default_gateway_silence(),
        }
    }
}

fn default_gateway_silence() -> Duration {
    Duration::from_secs(90)
}

impl Document for CentralConfig {
    fn warnings(&self) -> Vec<super::Issue> {
        let mut out = Vec::new();
        self.http.warnings(&mut out);
        if let Some(e) = &self.broker.embedded {
            if e.allow_plain_gateways {
                out.push(super::Issue {
                    path: "broker.embedded.allow_plain_gateways".to_owned(),
                    message: format!(
                        "gateways may connect to {} without a certificate, each known only by the client id it claims: for development only",
                        e.listen
                    ),
                });
            }
        }
        if let Some(x) = &self.broker.external {
            super::plain_broker_warning("broker.external.url", &x.url, &mut out);
        }
        out
    }

    fn resolve_paths(&mut self, base: &Path) {
        self.storage.dir = super::resolve(base, &self.storage.dir);
        self.http.resolve_paths(base);
        let tls = [
            self.broker.embedded.as_mut().and_then(|e| e.tls.as_mut()),
            self.broker.external.as_mut().and_then(|e| e.tls.as_mut()),
        ];
        for t in tls.into_iter().flatten() {
            t.resolve_paths(base);
        }
        if let Some(ca) = &mut self.identity.gateway_ca_file {
            *ca = super::resolve(base, ca);
        }
        if let Some(k) = &mut self.identity.signing_key_file {
            *k = super::resolve(base, k);
        }
        if let Some(c) = &mut self.identity.crl_file {
            *c = super::resolve(base, c);
        }
    }

    fn validate(&self, v: &mut Validator) {
        v.id("central.id", &self.central.id);
        v.non_empty("central.name", &self.central.name);
        self.http.validate(v);
        if let Some(u) = &self.relay.public_url {
            match url::Url::parse(u) {
                Ok(p) if matches!(p.scheme(), "http" | "https") => {}
                Ok(p) => v.error(
                    "relay.public_url",
                    format!("scheme must be http or https, not {}", p.scheme()),
                ),
                Err(e) => v.error("relay.public_url", format!("{u:?} is not a URL: {e}")),
            }
        }
        v.positive("relay.max_share", self.relay.max_share);
        for (field, d) in [
            (
                "alerts.escalate_to_station",
                self.alerts.escalate_to_station,
            ),
            (
                "alerts.escalate_to_command",
                self.alerts.escalate_to_command,
            ),
            ("alerts.case_limit", self.alerts.case_limit),
            ("alerts.ack_within", self.alerts.ack_within),
            ("alerts.resolve_within", self.alerts.resolve_within),
        ] {
            v.duration_within(
                field,
                d,
                Duration::from_secs(1),
                Duration::from_secs(7 * 24 * 3600),
            );
        }
        v.unique_ids("operators", self.operators.iter().map(|o| o.name.as_str()));
        for (i, o) in self.operators.iter().enumerate() {
            v.id(&format!("operators[{i}].name"), &o.name);
            if !OPERATOR_ROLES.contains(&o.role.as_str()) {
                v.error(
                    &format!("operators[{i}].role"),
                    format!(
                        "{:?} is not a role; use operator, supervisor or administrator",
                        o.role
                    ),
                );
            }
            if !o.password_hash.starts_with("$argon2id$") {
                v.error(
                    &format!("operators[{i}].password_hash"),
                    "an Argon2id hash ($argon2id$…) from `central operator hash`, not a password",
                );
            }
        }
        v.unique_ids(
            "api_tokens",
            self.api_tokens.iter().map(|t| t.name.as_str()),
        );
        for (i, t) in self.api_tokens.iter().enumerate() {
            v.id(&format!("api_tokens[{i}].name"), &t.name);
            if !OPERATOR_ROLES.contains(&t.role.as_str()) {
                v.error(
                    &format!("api_tokens[{i}].role"),
                    format!(
                        "{:?} is not a role; use operator, supervisor or administrator",
                        t.role
                    ),
                );
            }
            if t.token_sha256.len() != 64 || !t.token_sha256.bytes().all(|b| b.is_ascii_hexdigit())
            {
                v.error(
                    &format!("api_tokens[{i}].token_sha256"),
                    "64 hex digits (the SHA-256 `central operator token` prints), not the token",
                );
            }
        }
        if super::gateway::parse_utc_offset(&self.alerts.utc_offset).is_none() {
            v.error(
                "alerts.utc_offset",
                format!(
                    "{:?} is not an offset such as +08:00",
                    self.alerts.utc_offset
                ),
            );
        }
        if let Some(k) = &self.identity.signing_key_file {
            v.file_exists("identity.signing_key_file", k);
        }
        if let Some(c) = &self.identity.gateway_ca_file {
            v.file_exists("identity.gateway_ca_file", c);
        }
        if let Some(c) = &self.identity.crl_file {
            v.file_exists("identity.crl_file", c);
            if self.gateway_ca().is_none() {
                v.error(
                    "identity.crl_file",
                    "needs the CA that signed it: identity.gateway_ca_file or the broker's TLS files",
                );
            }
        }
        v.duration_within(
            "identity.message_max_age",
            self.identity.message_max_age,
            Duration::from_secs(30),
            Duration::from_secs(7 * 24 * 3600),
        );
        match (&self.broker.embedded, &self.broker.external) {
            (Some(_), Some(_)) => v.error(
                "broker",
                "give either [broker.embedded] or [broker.external], not both",
            ),
            (None, None) => v.error("broker", "give [broker.embedded] or [broker.external]"),
            _ => {}
        }
        if let Some(e) = &self.broker.embedded {
            match (&e.tls_listen, &e.tls) {
                (Some(_), None) => v.error("broker.embedded.tls", "required with tls_listen"),
                (None, Some(_)) => v.error("broker.embedded.tls_listen", "required with tls"),
                _ => {}
            }
            if !e.listen.ip().is_loopback() && !e.allow_plain_gateways {
                v.error(
                    "broker.embedded.listen",
                    format!("{} is not a loopback address; the plain listener is for this host only — gateways use tls_listen", e.listen),
                );
            }
            if e.tls_listen == Some(e.listen) {
                v.error("broker.embedded.tls_listen", "must differ from listen");
            }
            if let Some(t) = &e.tls {
                t.validate("broker.embedded.tls", v);
            }
            if e.max_connections == 0 {
                v.error(
                    "broker.embedded.max_connections",
                    "must be greater than zero",
                );
            }
        }
        if let Some(x) = &self.broker.external {
            if let Some(url) = v.broker_url("broker.external.url", &x.url) {
                match (url.scheme(), &x.tls) {
                    ("mqtts", None) => {
                        v.error("broker.external.tls", "required for an mqtts:// broker")
                    }
                    ("mqtt", Some(_)) => v.error(
                        "broker.external.tls",
                        "given, but the broker URL is mqtt:// (plain); use mqtts://",
                    ),
                    _ => {}
                }
            }
            if let Some(t) = &x.tls {
                t.validate("broker.external.tls", v);
            }
        }
        if self.storage.dir.exists() && !self.storage.dir.is_dir() {
            v.error(
                "storage.dir",
                format!("{} exists and is not a folder", self.storage.dir.display()),
            );
        }
        v.duration_within(
            "health.gateway_silence",
            self.health.gateway_silence,
            Duration::from_secs(5),
            Duration::from_secs(86_400),
        );
    }
}
