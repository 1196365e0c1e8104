//! Configuration of a gateway and of the devices of its community service centre.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Http, SecretRef, TlsFiles};
use crate::config::units::ByteSize;

mod validate;

/// A gateway's config file (`gateway.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub site: Site,
    pub gateway: GatewayIdentity,
    pub uplink: Uplink,
    pub storage: Storage,
    /// Default: listen on `0.0.0.0:8080`.
    #[serde(default = "default_http")]
    pub http: Http,
    #[serde(default)]
    pub cameras: Vec<Camera>,
    #[serde(default)]
    pub terminals: Vec<Terminal>,
    /// Other systems of the centre that hand events to the gateway (door access, smoke sensors).
    #[serde(default)]
    pub sources: Vec<EventSource>,
    /// When a terminal is degraded, and how flapping is told apart from real changes.
    #[serde(default)]
    pub terminal_health: TerminalPolicy,
    /// How much each kiosk may ask of the kiosk API.
    #[serde(default)]
    pub kiosk: KioskLimits,
    /// Alert clips: each camera's last seconds kept as they came, written out around an alert.
    #[serde(default)]
    pub clips: ClipPolicy,
    /// Live video for players that cannot decode a camera's codec.
    #[serde(default)]
    pub video: VideoPolicy,
    /// Signed configuration bundles from central; without this table every bundle is refused.
    #[serde(default)]
    pub bundles: Option<BundleTrust>,
    /// The folder the config was read from; relative paths in bundles resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// Thresholds and flapping detection for every terminal of the gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminalPolicy {
    /// A terminal reporting less free disk is degraded. Default 500 MB.
    #[serde(default = "default_min_free_disk")]
    pub min_free_disk: ByteSize,
    /// A terminal reporting a higher temperature (°C) is degraded. Default 75.
    #[serde(default = "default_max_temperature")]
    pub max_temperature_c: f64,
    /// A terminal that changes state `flap_changes` times within `flap_window` is flapping:
    /// one alert, and its changes are held back until it is steady for a whole window.
    /// Default 10 min.
    #[serde(default = "default_flap_window", with = "humantime_serde")]
    pub flap_window: Duration,
    /// Default 4.
    #[serde(default = "default_flap_changes")]
    pub flap_changes: u32,
}

impl Default for TerminalPolicy {
    fn default() -> Self {
        Self {
            min_free_disk: default_min_free_disk(),
            max_temperature_c: default_max_temperature(),
            flap_window: default_flap_window(),
            flap_changes: default_flap_changes(),
        }
    }
}

fn default_min_free_disk() -> ByteSize {
    ByteSize(500 * 1000 * 1000)
}
fn default_max_temperature() -> f64 {
    75.0
}
fn default_flap_window() -> Duration {
    Duration::from_secs(600)
}
fn default_flap_changes() -> u32 {
    4
}

/// Per-terminal limits of the kiosk API: a faulty or hijacked kiosk cannot starve the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KioskLimits {
    /// Requests per second each terminal may make on average. Default 20; 0.1 to 1,000,000.
    #[serde(default = "default_kiosk_rate")]
    pub requests_per_second: f64,
    /// Requests a terminal may make at once above its rate. Default 40; 1 to 1,000,000.
    #[serde(default = "default_kiosk_burst")]
    pub burst: u32,
    /// Submissions each terminal may make per hour. Default 120; 1 to 100,000.
    #[serde(default = "default_kiosk_submissions")]
    pub submissions_per_hour: u32,
}

impl Default for KioskLimits {
    fn default() -> Self {
        Self {
            requests_per_second: default_kiosk_rate(),
            burst: default_kiosk_burst(),
            submissions_per_hour: default_kiosk_submissions(),
        }
    }
}

fn default_kiosk_rate() -> f64 {
    20.0
}
fn default_kiosk_burst() -> u32 {
    40
}
fn default_kiosk_submissions() -> u32 {
    120
}

/// Whether configuration bundles from central may change this gateway and its terminals.
/// Bundles are checked with central's key (`uplink.central_key_file`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleTrust {
    /// No longer read: central's key is `uplink.central_key_file`, which checks every message
    /// from central, bundles included. Kept only to say so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_file: Option<PathBuf>,
    /// After applying a bundle, central must acknowledge the gateway's report of it within this
    /// time, or the gateway goes back to the last good configuration. Default 5 min.
    #[serde(default = "default_confirm_within", with = "humantime_serde")]
    pub confirm_within: Duration,
    /// A bundle issued longer ago than this is refused (a replay of an old one). Default 7
    /// days.
    #[serde(default = "default_bundle_max_age", with = "humantime_serde")]
    pub max_age: Duration,
}

fn default_bundle_max_age() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

fn default_confirm_within() -> Duration {
    Duration::from_secs(300)
}

/// A system allowed to `POST /api/v1/events` with its token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSource {
    /// Unique id among sources, e.g. `door-access`.
    pub id: String,
    /// Human name.
    pub name: String,
    /// Its bearer token.
    pub token: SecretRef,
    /// The event kinds it may post: exact kinds (`door.forced`) or a family (`door.*`). Empty
    /// or absent: any kind that is not the gateway's own (`camera.*`, `terminal.*`,
    /// `config.*`, `submission.*`, `meeting.*`, `gateway.*`, `video.*`, `kiosk.*`,
    /// `content.*`), which no source may post.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Most bytes of this source's alerts and submissions waiting in the outbox for central;
    /// beyond it the source's own are refused (507) and nothing else is. Default: an eighth
    /// of `storage.disk_budget`. All sources together never hold more than half the budget.
    #[serde(default)]
    pub max_pending: Option<ByteSize>,
    /// Cameras whose clip this source's alerts take: an `alert` event naming one of them in
    /// `payload.camera` (a door forced at the hall's door, `"camera": "hall"`) gets a clip as
    /// sensing alerts do. Empty: none (a source cannot fill the clips' disk with others').
    #[serde(default)]
    pub cameras: Vec<String>,
}

impl EventSource {
    /// Whether this source may post an event of `kind`.
    pub fn may_post(&self, kind: &str) -> bool {
        if crate::kinds::is_gateway_kind(kind) {
            return false;
        }
        self.kinds.is_empty()
            || self.kinds.iter().any(|k| match k.strip_suffix(".*") {
                Some(family) => kind
                    .strip_prefix(family)
                    .is_some_and(|rest| rest.starts_with('.')),
                None => k == kind,
            })
    }
}

fn default_http() -> Http {
    Http {
        listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
        tls: None,
        max_connections: 1024,
    }
}

/// The community service centre (or grid station) this gateway serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// Unique id of the site, e.g. `hongxing-community`.
    pub id: String,
    /// Human name, shown to operators.
    pub name: String,
    /// The site's offset from UTC, `+HH:MM`, for schedules and local times. Default `+08:00`.
    #[serde(default = "default_utc_offset")]
    pub utc_offset: String,
    /// Grid area codes (片区) the centre serves: the master data replica holds these, their base
    /// grids and the street. Empty: the whole street.
    #[serde(default)]
    pub areas: Vec<String>,
}

fn default_utc_offset() -> String {
    "+08:00".to_owned()
}

/// Parses `+HH:MM` / `-HH:MM` (up to ±14:00).
pub fn parse_utc_offset(s: &str) -> Option<time::UtcOffset> {
    let sign = match s.as_bytes().first()? {
        b'+' => 1i8,
        b'-' => -1i8,
        _ => return None,
    };
    let minutes = parse_hhmm(&s[1..])?;
    if minutes > 14 * 60 {
        return None;
    }
    time::UtcOffset::from_hms(sign * (minutes / 60) as i8, sign * (minutes % 60) as i8, 0).ok()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayIdentity {
    /// Unique id of this gateway; must match the common name of its TLS client certificate.
    pub id: String,
}

/// The connection to central's MQTT broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Uplink {
    /// `mqtts://host:port` (TLS with a client certificate, production) or `mqtt://host:port`
    /// (plain, for a broker on the same host only).
    pub broker: String,
    /// TLS files; required for `mqtts://`.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// MQTT keep-alive. Default 30 s; 5 s to 18 h.
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    /// How often the gateway reports its own health to central. Default 30 s.
    #[serde(default = "default_health_interval", with = "humantime_serde")]
    pub health_interval: Duration,
    /// First wait before reconnecting; doubles (with jitter) up to `reconnect_max`. Default 1 s.
    #[serde(default = "default_reconnect_min", with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Longest wait between reconnect attempts. Default 60 s.
    #[serde(default = "default_reconnect_max", with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// Central's public signing key (PEM), as central writes it (`central-signing.pub` in its
    /// storage folder, or `fwcfg certs signing-key`). Every message central sends — acks,
    /// commands, master data, configuration bundles — must carry central's signature by it.
    pub central_key_file: PathBuf,
    /// A message from central older than this (by the time central signed into it) is refused
    /// as a replay. The broker keeps messages for an offline gateway, so this bounds how long
    /// an outage may be and still deliver what central sent meanwhile. Default 7 days.
    #[serde(default = "default_downlink_max_age", with = "humantime_serde")]
    pub downlink_max_age: Duration,
}

fn default_downlink_max_age() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
fn default_health_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_reconnect_min() -> Duration {
    Duration::from_secs(1)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(60)
}

/// Alert clips: a ring of each camera's compressed stream keeps the last `pre`; an alert (motion,
/// a covered camera, a source's event naming the camera, an operator's request) writes an MP4
/// from `pre` before it to `post` after, never re-encoded, into `storage.dir/clips`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipPolicy {
    /// Stream kept before an alert. Default 10 s; `0s` keeps no ring and writes no clips.
    #[serde(default = "default_clip_pre", with = "humantime_serde")]
    pub pre: Duration,
    /// Stream taken after it. Default 10 s; at most 5 min.
    #[serde(default = "default_clip_post", with = "humantime_serde")]
    pub post: Duration,
    /// Most disk the clips may use; the oldest go first. Default 2 GiB.
    #[serde(default = "default_clip_budget")]
    pub disk_budget: ByteSize,
    /// Clips older than this are deleted. Default 30 days.
    #[serde(default = "default_clip_keep", with = "humantime_serde")]
    pub keep: Duration,
}

impl Default for ClipPolicy {
    fn default() -> Self {
        Self {
            pre: default_clip_pre(),
            post: default_clip_post(),
            disk_budget: default_clip_budget(),
            keep: default_clip_keep(),
        }
    }
}

fn default_clip_pre() -> Duration {
    Duration::from_secs(10)
}
fn default_clip_post() -> Duration {
    Duration::from_secs(10)
}
fn default_clip_budget() -> ByteSize {
    ByteSize::gib(2)
}
fn default_clip_keep() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}

/// Live video for players that cannot decode H.265: the camera's stream transcoded to H.264
/// (one transcode per camera, shared by its viewers, while any watch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoPolicy {
    /// Width of the H.264 made of an H.265 camera (its aspect kept; never wider than the
    /// camera's). Default 1280.
    #[serde(default = "default_transcode_width")]
    pub transcode_width: u32,
}

impl Default for VideoPolicy {
    fn default() -> Self {
        Self {
            transcode_width: default_transcode_width(),
        }
    }
}

fn default_transcode_width() -> u32 {
    1280
}

/// Where the gateway keeps its outbox and caches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// Folder of the gateway's store; created if missing. Relative to the config file.
    pub dir: PathBuf,
    /// Most disk the store may use. Default 1 GiB; at least 16 MiB.
    #[serde(default = "default_disk_budget")]
    pub disk_budget: ByteSize,
    /// Memory for the store's page cache. Default 16 MiB; at least 1 MiB.
    #[serde(default = "default_cache_size")]
    pub cache_size: ByteSize,
    /// Disk set aside in a reserve file, given back to the store when the disk fills (so it
    /// can still shed acknowledged events, and open after a restart). Default 64 MiB, never
    /// more than an eighth of the filesystem; `0 B` keeps none.
    #[serde(default = "default_disk_reserve")]
    pub disk_reserve: ByteSize,
}

fn default_disk_reserve() -> ByteSize {
    ByteSize::mib(64)
}

fn default_disk_budget() -> ByteSize {
    ByteSize::gib(1)
}
fn default_cache_size() -> ByteSize {
    ByteSize::mib(16)
}

/// An IP camera of the centre.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Camera {
    /// Unique id within the gateway, e.g. `hall-entrance`.
    pub id: String,
    /// Human name, shown on the video wall.
    pub name: String,
    /// `rtsp://host[:port]/path`, without credentials (see `credentials`).
    pub url: String,
    /// RTSP login; the password comes from the environment or a file, never from this file.
    #[serde(default)]
    pub credentials: Option<CameraCredentials>,
    /// `tcp` (RTP interleaved in the RTSP connection, default) or `udp`.
    #[serde(default)]
    pub transport: Transport,
    /// No frame for this long means the stream is stalled and is reconnected. Default 10 s.
    #[serde(default = "default_stall_timeout", with = "humantime_serde")]
    pub stall_timeout: Duration,
    /// A disabled camera is kept in the config but not connected. Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub snapshot: Snapshot,
    #[serde(default)]
    pub sensing: Sensing,
}

fn default_stall_timeout() -> Duration {
    Duration::from_secs(10)
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraCredentials {
    pub username: String,
    pub password: SecretRef,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Tcp,
    Udp,
}

/// The latest picture kept per camera.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// How often a fresh snapshot is decoded (from the next keyframe). Default 10 s.
    #[serde(default = "default_snapshot_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Width of the JPEG in pixels; the height keeps the aspect ratio. Default 640; 16 to 7680.
    #[serde(default = "default_snapshot_width")]
    pub width: u32,
    /// JPEG quality, 1 to 100. Default 80.
    #[serde(default = "default_snapshot_quality")]
    pub quality: u8,
}

impl Default for Snapshot {
    fn default() -> Self {
        Self {
            interval: default_snapshot_interval(),
            width: default_snapshot_width(),
            quality: default_snapshot_quality(),
        }
    }
}

fn default_snapshot_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_snapshot_width() -> u32 {
    640
}
fn default_snapshot_quality() -> u8 {
    80
}

/// Sensing rules run on decoded keyframes (or a low, bounded frame rate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sensing {
    /// Alert when the lens is covered or the picture is black. Default true.
    #[serde(default = "yes")]
    pub covered: bool,
    /// Alert when the stream runs but the picture does not change. Default true.
    #[serde(default = "yes")]
    pub frozen: bool,
    /// Alert when the scene changes as if the camera was moved. Default true.
    #[serde(default = "yes")]
    pub moved: bool,
    /// A tamper condition must hold this long before it is raised, and be gone this long
    /// before it is cleared; motion is raised at once and cleared after this long without.
    /// Default 30 s.
    #[serde(default = "default_hold_down", with = "humantime_serde")]
    pub hold_down: Duration,
    /// Most keyframes per second decoded for sensing (only keyframes are ever decoded).
    /// Default 2; 0.1 to 10.
    #[serde(default = "default_max_decode_fps")]
    pub max_decode_fps: f64,
    /// Zones watched for motion.
    #[serde(default)]
    pub motion_zones: Vec<MotionZone>,
}

impl Default for Sensing {
    fn default() -> Self {
        Self {
            covered: true,
            frozen: true,
            moved: true,
            hold_down: default_hold_down(),
            max_decode_fps: default_max_decode_fps(),
            motion_zones: Vec::new(),
        }
    }
}

fn default_hold_down() -> Duration {
    Duration::from_secs(30)
}
fn default_max_decode_fps() -> f64 {
    2.0
}

/// A polygon of the picture watched for motion, optionally only at certain times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MotionZone {
    /// Unique name within the camera, e.g. `archive-door`.
    pub name: String,
    /// Corners as `[x, y]` fractions of the width and height (0.0 to 1.0); at least 3.
    pub polygon: Vec<[f64; 2]>,
    /// Fraction of the zone that must change to count as motion, 0.0 to 1.0. Default 0.02.
    #[serde(default = "default_motion_threshold")]
    pub threshold: f64,
    /// When the zone is watched; always when absent.
    #[serde(default)]
    pub schedule: Option<Schedule>,
}

fn default_motion_threshold() -> f64 {
    0.02
}

/// A daily time window in the gateway's local time; `from` after `to` spans midnight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Start, `HH:MM`.
    pub from: String,
    /// End, `HH:MM`.
    pub to: String,
    /// Days it applies: `mon` … `sun`. Default every day.
    #[serde(default = "every_day")]
    pub days: Vec<String>,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn every_day() -> Vec<String> {
    DAYS.iter().map(|d| (*d).to_owned()).collect()
}

/// Parses `HH:MM` into minutes after midnight (`24:00` allowed as the end of a day).
pub fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
}

/// A kiosk, video terminal or screen of the centre.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Terminal {
    /// Unique id within the gateway, e.g. `kiosk-hall-1`.
    pub id: String,
    /// Human name, shown to operators.
    pub name: String,
    pub kind: TerminalKind,
    /// Where the terminal is reached (for meeting dispatch), e.g. `http://192.0.2.21:8080/`.
    #[serde(default)]
    pub address: Option<String>,
    /// How the gateway learns the terminal's health.
    pub health: HealthSource,
    /// The terminal's token for the gateway API (heartbeats, kiosk data); required for
    /// `heartbeat` health.
    #[serde(default)]
    pub token: Option<SecretRef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminalKind {
    /// Self-service kiosk in the service hall.
    Kiosk,
    /// Video-conference terminal (remote reception, inspection, dispatch).
    VideoTerminal,
    /// Information screen.
    Screen,
}

/// How a terminal's health is learned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum HealthSource {
    /// The terminal pushes heartbeats to the gateway.
    Heartbeat {
        /// Expected time between heartbeats. Default 10 s.
        #[serde(default = "default_heartbeat_interval", with = "humantime_serde")]
        interval: Duration,
        /// Heartbeats missed in a row before the terminal is offline. Default 3.
        #[serde(default = "default_misses")]
        misses_before_offline: u32,
        /// Successes in a row before an offline terminal is online again. Default 2.
        #[serde(default = "default_successes")]
        successes_before_online: u32,
    },
    /// The gateway sends an HTTP GET and expects a status.
    HttpProbe {
        /// `http://` or `https://` URL to GET.
        url: String,
        /// Status that means healthy. Default 200.
        #[serde(default = "default_expect_status")]
        expect_status: u16,
        /// Time between probes. Default 30 s.
        #[serde(default = "default_probe_interval", with = "humantime_serde")]
        interval: Duration,
        /// Time a probe may take. Default 5 s; less than `interval`.
        #[serde(default = "default_probe_timeout", with = "humantime_serde")]
        timeout: Duration,
        /// Failed probes in a row before the terminal is offline. Default 3.
        #[serde(default = "default_misses")]
        misses_before_offline: u32,
        /// Successes in a row before an offline terminal is online again. Default 2.
        #[serde(default = "default_successes")]
        successes_before_online: u32,
    },
    /// The gateway opens a TCP connection.
    TcpProbe {
        /// `host:port` to connect to.
        address: String,
        /// Time between probes. Default 30 s.
        #[serde(default = "default_probe_interval", with = "humantime_serde")]
        interval: Duration,
        /// Time a probe may take. Default 5 s; less than `interval`.
        #[serde(default = "default_probe_timeout", with = "humantime_serde")]
        timeout: Duration,
        /// Failed probes in a row before the terminal is offline. Default 3.
        #[serde(default = "default_misses")]
        misses_before_offline: u32,
        /// Successes in a row before an offline terminal is online again. Default 2.
        #[serde(default = "default_successes")]
        successes_before_online: u32,
    },
}

fn default_heartbeat_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_misses() -> u32 {
    3
}
fn default_successes() -> u32 {
    2
}
fn default_expect_status() -> u16 {
    200
}
fn default_probe_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_probe_timeout() -> Duration {
    Duration::from_secs(5)
}
