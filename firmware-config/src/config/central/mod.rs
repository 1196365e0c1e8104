//! Configuration of central, the hub in the street command centre.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Http, TlsFiles};

mod validate;

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
    #[serde(default)]
    pub retention: Retention,
    /// Who may log in to the operator console.
    #[serde(default)]
    pub operators: Vec<OperatorAccount>,
    /// Keys for scripts and tools on central's API (`Authorization: Bearer …`), such as
    /// `central data push`.
    #[serde(default)]
    pub api_tokens: Vec<ApiToken>,
    /// Where notices leave the system (a signed webhook). None: notices are not sent.
    #[serde(default, skip_serializing_if = "Notify::is_default")]
    pub notify: Notify,
    /// The console's map: drawn from the master data's vectors; a tile layer under them only
    /// when configured.
    #[serde(default, skip_serializing_if = "MapSettings::is_default")]
    pub map: MapSettings,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapSettings {
    /// A tile server's URL template (`https://…/{z}/{x}/{y}.png`), for the browser to fetch
    /// under the grids. None: no tiles, the grids alone (no server needed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiles: Option<String>,
    /// The tiles' attribution, shown on the map.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub attribution: String,
}

impl MapSettings {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Notices out: case steps a resident follows, supervision, deadline reminders, alert
/// escalations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Webhook>,
    /// Text messages through the deployment's SMS provider: a case's steps to the resident,
    /// 督办 and deadline reminders to its assignee.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms: Option<Sms>,
    /// Attempts at one notice before it is given up as failed (and shown so). Default 12.
    #[serde(default = "default_notify_attempts")]
    pub max_attempts: u32,
    /// The wait after the first failure, doubled after each (at most 10 min). Default 5 s.
    #[serde(default = "default_notify_retry", with = "humantime_serde")]
    pub retry_after: Duration,
}

impl Default for Notify {
    fn default() -> Self {
        Self {
            webhook: None,
            sms: None,
            max_attempts: default_notify_attempts(),
            retry_after: default_notify_retry(),
        }
    }
}

impl Notify {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

fn default_notify_attempts() -> u32 {
    12
}

fn default_notify_retry() -> Duration {
    Duration::from_secs(5)
}

/// A receiver of signed JSON notices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `http://` or `https://`.
    pub url: String,
    /// The key of each notice's HMAC-SHA256 signature (`X-GridEdge-Signature`).
    pub secret: crate::config::secret::SecretRef,
}

/// An SMS provider's HTTP API, as the common ones shape it: a sign name (短信签名), a template
/// per notice kind (短信模板, approved with the provider) and its parameters, the phone numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sms {
    pub provider: SmsProvider,
    /// The provider's endpoint, e.g. `https://dysmsapi.aliyuncs.com/`.
    pub url: String,
    /// The account's key id (`aliyun`: AccessKeyId).
    #[serde(default)]
    pub access_key_id: String,
    /// The key that signs each request (`aliyun`: AccessKeySecret).
    pub secret: crate::config::secret::SecretRef,
    /// 短信签名, as approved with the provider.
    pub sign_name: String,
    /// Template code per notice kind (`case.status`, `case.supervised`, `case.reminder`); a
    /// kind without one sends no message.
    pub templates: std::collections::BTreeMap<String, String>,
    /// `aliyun`: the region id. Default `cn-hangzhou`.
    #[serde(default = "default_sms_region")]
    pub region: String,
}

fn default_sms_region() -> String {
    "cn-hangzhou".to_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmsProvider {
    /// Alibaba Cloud SMS `SendSms` (RPC style: a query signed with HMAC-SHA1).
    Aliyun,
    /// A JSON post `{"phone","sign_name","template","params"}` signed as the webhook's are
    /// (`X-GridEdge-Signature`), for a provider's relay or an aggregator.
    SignedJson,
}

/// The kinds of notice that may go out as text messages.
pub const SMS_KINDS: [&str; 3] = ["case.status", "case.supervised", "case.reminder"];

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
    /// As an operator account's: the grid whose cases it reaches. None: the whole street.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
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
    /// The grid (any level of the master data's) whose residents' cases the account sees and
    /// works, with those below it: a grid station's staff name their base grid, a community's
    /// supervisor its area. None: the whole street.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
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
    /// A case whose category has no working-day limit in the master data and is still open
    /// this long after it came is an alert (one with a limit is held to that). Default 72 h.
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
    /// This replica's name, when several centrals share one PostgreSQL and one broker: each
    /// needs a broker session of its own (client id `<id>-<replica>`). Absent: one central.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

impl CentralIdentity {
    /// The MQTT client id of this central (or replica).
    pub fn client_id(&self) -> String {
        match &self.replica {
            Some(r) => format!("{}-{r}", self.id),
            None => self.id.clone(),
        }
    }
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
    /// Disk set aside in a reserve file, given back to the store when the disk fills (room
    /// for central's own state and to open after a restart). Default 64 MiB, never more than
    /// an eighth of the filesystem; `0 B` keeps none.
    #[serde(default = "default_disk_reserve")]
    pub disk_reserve: crate::config::units::ByteSize,
    /// PostgreSQL, where central replicas keep what they share. Absent: everything is in
    /// `dir` (sled), for central on one machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresStorage>,
}

/// How central reaches PostgreSQL.
/// In TOML: `postgres = { url = { env = "GRIDEDGE_PG_URL" }, ca_file = "pg-ca.pem" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresStorage {
    /// The connection string (`postgresql://user:password@host:port/db` or `key=value`
    /// pairs): a secret, as it may hold the password.
    pub url: crate::config::secret::SecretRef,
    /// CA certificate(s) to verify the server with; given, every connection uses TLS.
    /// Relative to the config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Connections each replica keeps at most. Default 16.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
}

fn default_pool_size() -> usize {
    16
}

fn default_disk_reserve() -> crate::config::units::ByteSize {
    crate::config::units::ByteSize::mib(64)
}

/// How long central keeps each class of event, counted from when it received the event, and
/// where what it prunes goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Default 7 days.
    #[serde(default = "default_keep_telemetry", with = "humantime_serde")]
    pub telemetry: Duration,
    /// Default 30 days.
    #[serde(default = "default_keep_health", with = "humantime_serde")]
    pub health: Duration,
    /// Residents' submissions. Default 365 days.
    #[serde(default = "default_keep_long", with = "humantime_serde")]
    pub submission: Duration,
    /// Default 365 days.
    #[serde(default = "default_keep_long", with = "humantime_serde")]
    pub alert: Duration,
    /// How often the pruner looks for events past their time. Default 1 min.
    #[serde(default = "default_prune_every", with = "humantime_serde")]
    pub prune_every: Duration,
    /// Where pruned events are written before they are deleted (gzip'd JSON lines, under
    /// `class/date/` folders). Relative to the config file. Absent: pruned events are
    /// discarded.
    #[serde(default)]
    pub archive_dir: Option<PathBuf>,
}

impl Retention {
    /// How long events of `class` are kept.
    pub fn keep(&self, class: crate::wire::EventClass) -> Duration {
        use crate::wire::EventClass::*;
        match class {
            Telemetry => self.telemetry,
            Health => self.health,
            Submission => self.submission,
            Alert => self.alert,
        }
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            telemetry: default_keep_telemetry(),
            health: default_keep_health(),
            submission: default_keep_long(),
            alert: default_keep_long(),
            prune_every: default_prune_every(),
            archive_dir: None,
        }
    }
}

const DAY: u64 = 86_400;
fn default_keep_telemetry() -> Duration {
    Duration::from_secs(7 * DAY)
}
fn default_keep_health() -> Duration {
    Duration::from_secs(30 * DAY)
}
fn default_keep_long() -> Duration {
    Duration::from_secs(365 * DAY)
}
fn default_prune_every() -> Duration {
    Duration::from_secs(60)
}

/// When central considers a device gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthPolicy {
    /// A gateway silent for this long is shown as offline even without its last will. Default 90 s.
    #[serde(default = "default_gateway_silence", with = "humantime_serde")]
    pub gateway_silence: Duration,
    /// A gateway whose clock is further than this from central's (either way, as its messages
    /// show it) is an alert. Default 2 min.
    #[serde(default = "default_max_clock_offset", with = "humantime_serde")]
    pub max_clock_offset: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            gateway_silence: default_gateway_silence(),
            max_clock_offset: default_max_clock_offset(),
        }
    }
}

fn default_max_clock_offset() -> Duration {
    Duration::from_secs(120)
}

fn default_gateway_silence() -> Duration {
    Duration::from_secs(90)
}
