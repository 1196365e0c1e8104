//! Signed configuration bundles from central, for the gateway itself and for its terminals.
//!
//! A bundle is checked before anything else — signature, target, version, schema, and for the
//! gateway that it changes only what can change live — and refused with a reason that goes back
//! to central (the command's reply and a `config.refused` alert); a refused bundle changes
//! nothing. An accepted gateway bundle is staged on disk, applied by the devices task (cameras,
//! terminals, sources, thresholds, the health interval — no restart), and kept as the bundle in
//! force; the one before it is kept as the last good one.
//!
//! "Commit confirmed": the gateway reports the applied bundle in a `config.applied` event. When
//! central has not acknowledged that event within `confirm_within` — the new configuration cost
//! the gateway its link — the gateway goes back to the last good configuration by itself.
//!
//! Replays and rollbacks: a bundle is taken only when its version is above every version
//! ever applied to its target — also after an automatic rollback, so the bundle that was
//! rolled back (or any older one) is never applied again — when it was issued within
//! `[bundles] max_age` on central's clock (as its signed messages show it, so a gateway whose
//! own clock is hours off still judges rightly), and when its version is at most
//! `MAX_VERSION`.
//!
//! Files in `<storage>/bundles/`: `gateway.json` (in force), `gateway.previous.json` (last
//! good), `gateway.confirmed` (the version central confirmed), `terminal-<id>.json`,
//! `staged.json` (while applying), `highest.json` (the highest version ever applied, per
//! target).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use firmware_config::bundle::{BundleBody, Checked, SignedBundle, VerifyingKey};
use firmware_config::config::GatewayConfig;
use firmware_config::durable;
use firmware_config::ids::GatewayId;
use firmware_config::kinds::Kind;
use firmware_config::runtime::clock::{Clock, Instant};
use firmware_config::wire::{ConfigVersions, EventClass};
use serde_json::{json, Value};

use crate::outbox::{NewEvent, Outbox};
use crate::GatewayError;

/// What taking a bundle needs of the running gateway, and nothing more: `lib.rs` lets the
/// gateway's shared state provide it; a test may provide a stand-in.
pub trait Host: Send + Sync {
    fn gateway_id(&self) -> &GatewayId;
    /// The config in force.
    fn config(&self) -> Arc<GatewayConfig>;
    fn outbox(&self) -> &Outbox;
    fn clock(&self) -> Clock;
    /// The time on central's clock now (as its signed messages show it; this gateway's own
    /// before central is heard): a bundle's issue time is central's, judged against it.
    fn central_now(&self) -> time::OffsetDateTime;
    fn metrics(&self) -> &crate::Metrics;
    fn terminals(&self) -> &crate::terminals::Terminals;
    /// Switches the devices to `config` (all or nothing).
    fn apply_config(
        &self,
        config: Arc<GatewayConfig>,
    ) -> impl std::future::Future<Output = Result<(), crate::devices::DevicesError>> + Send;
}

/// A terminal's settings bundle as held for it.
#[derive(Debug, Clone)]
pub struct TerminalBundle {
    pub version: u64,
    /// The signed bundle, as the terminal fetches it (it may verify it too).
    pub json: Arc<str>,
    pub etag: String,
}

struct Pending {
    version: u64,
    /// The `config.applied` event central must acknowledge.
    seq: u64,
    deadline: Instant,
}

struct State {
    /// The gateway bundle in force (0: none, the file rules).
    version: u64,
    confirmed: bool,
    /// What to go back to, and its version.
    last_good: Arc<GatewayConfig>,
    last_good_version: u64,
    pending: Option<Pending>,
    terminals: BTreeMap<String, TerminalBundle>,
}

/// The highest bundle version taken: bounded like master data versions, so that JSON keeps it
/// exact and a forged or mistaken huge version cannot leave no room for the next.
pub const MAX_VERSION: u64 = firmware_config::masterdata::replica::MAX_VERSION;

/// The highest version ever applied per target (`gateway`, or a terminal id).
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
struct Highest {
    gateway: u64,
    #[serde(default)]
    terminals: BTreeMap<String, u64>,
}

pub struct Bundles {
    dir: PathBuf,
    /// Central's key; bundles are taken only with a `[bundles]` table (`enabled`).
    key: Option<VerifyingKey>,
    enabled: bool,
    confirm_within: Duration,
    /// Bundles issued longer ago are refused.
    max_age: Duration,
    /// The config file as read at start: the base every bundle's live settings go on.
    file: Arc<GatewayConfig>,
    state: Mutex<State>,
    /// One bundle at a time.
    busy: tokio::sync::Mutex<()>,
}

/// The file's config with the settings a bundle may change taken from `from`.
pub fn with_live_settings(base: &GatewayConfig, from: &GatewayConfig) -> GatewayConfig {
    let mut c = base.clone();
    c.cameras.clone_from(&from.cameras);
    c.terminals.clone_from(&from.terminals);
    c.sources.clone_from(&from.sources);
    c.terminal_health = from.terminal_health.clone();
    c.uplink.health_interval = from.uplink.health_interval;
    c
}

fn etag(b: &SignedBundle, version: u64) -> String {
    let d = fnv1a(b.sig.as_bytes());
    format!("\"v{version}-{d:016x}\"")
}

/// FNV-1a: the ETag only has to change when the signature does.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// How far in the future a bundle's issue time may be (clocks differ a little).
const FUTURE_SLACK: time::Duration = time::Duration::minutes(10);

/// Why a bundle was refused (its text goes back to central and into the `config.refused`
/// alert).
#[derive(Debug, thiserror::Error)]
pub enum BundleRefusal {
    #[error("args.bundle is not a bundle ({{bundle, key, body, sig}})")]
    NotABundle,
    #[error("this gateway has no [bundles] table, so it accepts no bundles")]
    Disabled,
    #[error("this gateway has no central key to check bundles with")]
    NoKey,
    #[error("{0}")]
    Signature(#[source] firmware_config::bundle::BundleError),
    #[error("wrong target: the bundle is for gateway {bundle:?}, this is {this:?}")]
    OtherGateway { bundle: String, this: String },
    #[error("wrong target: this gateway has no terminal {0:?}")]
    NoTerminal(String),
    #[error("version {version} is not newer than version {held}, the highest applied to {target} (a replay or rollback)")]
    NotNewer {
        version: u64,
        held: u64,
        target: String,
    },
    #[error("version {0} is beyond the highest a bundle may have ({MAX_VERSION})")]
    TooLarge(u64),
    #[error("issued {} ago, more than [bundles] max_age ({}) allows: a replay", humantime::format_duration(*.age), humantime::format_duration(*.max_age))]
    TooOld { age: Duration, max_age: Duration },
    #[error("issued {} in the future: central's clock or this gateway's is wrong", humantime::format_duration(*.0))]
    FromTheFuture(Duration),
    #[error("invalid content: {}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error("changes {}, which need a restart; a bundle may change cameras, terminals, sources, terminal_health and uplink.health_interval", .0.join(", "))]
    NeedsRestart(Vec<&'static str>),
    #[error("cannot note the version: {0}")]
    NoteVersion(#[source] std::io::Error),
    #[error("cannot store the bundle: {0}")]
    Store(#[source] std::io::Error),
    #[error("cannot stage: {0}")]
    Stage(#[source] std::io::Error),
    #[error("apply failed, rolled back to version {version}: {source}")]
    RolledBack {
        version: u64,
        #[source]
        source: crate::devices::DevicesError,
    },
}

fn write_synced(path: &Path, text: &str) -> std::io::Result<()> {
    durable::write(path, text.as_bytes(), durable::Access::Default)
}

impl Bundles {
    /// Opens the bundle folder; returns the config in force: the file's, with the live
    /// settings of the gateway bundle in force when there is a valid one.
    pub fn open(file: GatewayConfig) -> Result<(Self, Arc<GatewayConfig>), GatewayError> {
        let dir = file.storage.dir.join("bundles");
        std::fs::create_dir_all(&dir).map_err(|source| GatewayError::Storage {
            path: dir.display().to_string(),
            source,
        })?;
        let key = Some(
            VerifyingKey::load(&file.uplink.central_key_file).map_err(GatewayError::CentralKey)?,
        );
        let enabled = file.bundles.is_some();
        let confirm_within = file
            .bundles
            .as_ref()
            .map_or(Duration::from_secs(300), |b| b.confirm_within);
        let max_age = file
            .bundles
            .as_ref()
            .map_or(Duration::from_secs(7 * 24 * 3600), |b| b.max_age);
        let file = Arc::new(file);
        let mut bundles = Self {
            dir,
            key,
            enabled,
            confirm_within,
            max_age,
            file: file.clone(),
            state: Mutex::new(State {
                version: 0,
                confirmed: true,
                last_good: file.clone(),
                last_good_version: 0,
                pending: None,
                terminals: BTreeMap::new(),
            }),
            busy: tokio::sync::Mutex::new(()),
        };
        let effective = bundles.load_held();
        Ok((bundles, effective))
    }

    /// The highest versions ever applied (`highest.json`; none when it cannot be read: the
    /// versions in force still count).
    fn highest(&self) -> Highest {
        std::fs::read(self.dir.join("highest.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Notes that `version` was applied to `terminal` (None: the gateway), before it takes
    /// effect: written and synced, so that no crash can let it be applied twice.
    fn raise_highest(&self, terminal: Option<&str>, version: u64) -> Result<(), BundleRefusal> {
        let mut h = self.highest();
        let slot = match terminal {
            None => &mut h.gateway,
            Some(t) => h.terminals.entry(t.to_owned()).or_default(),
        };
        *slot = (*slot).max(version);
        let text = serde_json::to_string(&h)
            .map_err(|e| BundleRefusal::NoteVersion(std::io::Error::other(e)))?;
        write_synced(&self.dir.join("highest.json"), &text).map_err(BundleRefusal::NoteVersion)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A stored bundle, verified and checked again (the disk is not trusted either).
    fn load_file(&self, name: &str) -> Option<(BundleBody, Checked, SignedBundle)> {
        let path = self.dir.join(name);
        let bytes = std::fs::read(&path).ok()?;
        let key = self.key.as_ref()?;
        let checked =
            SignedBundle::parse(&bytes).and_then(|b| key.verify(&b).map(|body| (body, b)));
        match checked {
            Ok((body, signed)) if body.target.gateway == self.file.gateway.id => {
                match body.check(&self.file.base_dir, true) {
                    Ok(c) => Some((body, c, signed)),
                    Err(issues) => {
                        tracing::warn!(file = %path.display(), ?issues, "stored bundle no longer valid; ignored");
                        None
                    }
                }
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "stored bundle refused; ignored");
                None
            }
        }
    }

    fn load_held(&mut self) -> Arc<GatewayConfig> {
        // Without a bundle in force, the file's config is shared, not copied (it may hold
        // thousands of terminals).
        let mut effective = self.file.clone();
        let held = self.load_file("gateway.json");
        let previous = self.load_file("gateway.previous.json");
        let confirmed_version: Option<u64> =
            std::fs::read_to_string(self.dir.join("gateway.confirmed"))
                .ok()
                .and_then(|s| s.trim().parse().ok());
        let mut terminals = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !(name.starts_with("terminal-") && name.ends_with(".json")) {
                    continue;
                }
                if let Some((body, Checked::Terminal(_), signed)) = self.load_file(&name) {
                    if let Some(t) = body.target.terminal.clone() {
                        terminals.insert(
                            t,
                            TerminalBundle {
                                version: body.version,
                                etag: etag(&signed, body.version),
                                json: signed.to_json().into(),
                            },
                        );
                    }
                }
            }
        }
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        state.terminals = terminals;
        if let Some((body, Checked::Gateway(cfg), _)) = held {
            effective = Arc::new(with_live_settings(&self.file, &cfg));
            state.version = body.version;
            state.confirmed = confirmed_version == Some(body.version);
            if let Some((pbody, Checked::Gateway(pcfg), _)) = previous {
                state.last_good = Arc::new(with_live_settings(&self.file, &pcfg));
                state.last_good_version = pbody.version;
            }
            tracing::info!(
                version = body.version,
                confirmed = state.confirmed,
                "gateway bundle in force"
            );
        }
        effective
    }

    /// After a restart with a bundle central had not confirmed: report it again and start its
    /// confirmation window anew.
    pub async fn resume(&self, outbox: &Outbox) {
        let version = {
            let s = self.lock();
            if s.confirmed || s.version == 0 {
                return;
            }
            s.version
        };
        let payload = json!({ "target": { "gateway": self.file.gateway.id }, "version": version, "after_restart": true });
        if let Some(seq) = record(outbox, Kind::ConfigApplied, payload).await {
            self.lock().pending = Some(Pending {
                version,
                seq,
                deadline: Instant::now() + self.confirm_within,
            });
        }
    }

    /// Central's key, which also signs master data updates.
    pub fn key(&self) -> Option<VerifyingKey> {
        self.key.clone()
    }

    /// The versions in force, for the health report.
    pub fn versions(&self) -> ConfigVersions {
        let s = self.lock();
        ConfigVersions {
            gateway: s.version,
            confirmed: s.confirmed,
            terminals: s
                .terminals
                .iter()
                .map(|(id, t)| (id.clone(), t.version))
                .collect(),
        }
    }

    pub fn terminal(&self, id: &str) -> Option<TerminalBundle> {
        self.lock().terminals.get(id).cloned()
    }

    /// Terminal bundles held, for the terminal registry at start.
    pub fn terminal_requirements(&self) -> Vec<(String, u64, Vec<String>)> {
        self.lock()
            .terminals
            .iter()
            .filter_map(|(id, t)| {
                let b = SignedBundle::parse(t.json.as_bytes())
                    .ok()?
                    .unverified_body()?;
                match b.content {
                    firmware_config::bundle::Content::Terminal { settings } => {
                        Some((id.clone(), t.version, settings.required_peripherals))
                    }
                    _ => None,
                }
            })
            .collect()
    }

    /// Handles a `config.bundle` command: `{"bundle": <signed bundle>}`.
    pub async fn receive(&self, host: &impl Host, args: &Value) -> Result<Value, BundleRefusal> {
        let _one = self.busy.lock().await;
        let signed: Option<SignedBundle> = args
            .get("bundle")
            .and_then(|b| serde_json::from_value(b.clone()).ok());
        let claimed = signed.as_ref().and_then(SignedBundle::unverified_body);
        match self.accept(host, signed).await {
            Ok(data) => {
                host.metrics().count_bundle("applied");
                Ok(data)
            }
            Err(reason) => {
                host.metrics().count_bundle("refused");
                tracing::warn!(%reason, "bundle refused");
                let payload = json!({
                    "reason": reason.to_string(),
                    "claimed_target": claimed.as_ref().map(|b| &b.target),
                    "claimed_version": claimed.as_ref().map(|b| b.version),
                });
                record(host.outbox(), Kind::ConfigRefused, payload).await;
                Err(reason)
            }
        }
    }

    async fn accept(
        &self,
        host: &impl Host,
        signed: Option<SignedBundle>,
    ) -> Result<Value, BundleRefusal> {
        let signed = signed.ok_or(BundleRefusal::NotABundle)?;
        if !self.enabled {
            return Err(BundleRefusal::Disabled);
        }
        let key = self.key.as_ref().ok_or(BundleRefusal::NoKey)?;
        let body = key.verify(&signed).map_err(BundleRefusal::Signature)?;
        if body.target.gateway != host.gateway_id().as_str() {
            return Err(BundleRefusal::OtherGateway {
                bundle: body.target.gateway.clone(),
                this: host.gateway_id().as_str().to_owned(),
            });
        }
        let highest = self.highest();
        let held = match &body.target.terminal {
            None => self.lock().version.max(highest.gateway),
            Some(t) => {
                if !host.config().terminals.iter().any(|c| &c.id == t) {
                    return Err(BundleRefusal::NoTerminal(t.clone()));
                }
                let in_force = self.lock().terminals.get(t).map_or(0, |b| b.version);
                in_force.max(highest.terminals.get(t).copied().unwrap_or(0))
            }
        };
        if body.version <= held {
            return Err(BundleRefusal::NotNewer {
                version: body.version,
                held,
                target: body.target.to_string(),
            });
        }
        if body.version > MAX_VERSION {
            return Err(BundleRefusal::TooLarge(body.version));
        }
        // Central's clock, not this gateway's: a gateway booted without its clock, or stepped
        // by hours, still takes a fresh bundle and still refuses an old one.
        let now = host.central_now();
        let max_age = self.max_age;
        if now - body.issued > max_age {
            return Err(BundleRefusal::TooOld {
                age: (now - body.issued).unsigned_abs(),
                max_age,
            });
        }
        if body.issued - now > FUTURE_SLACK {
            return Err(BundleRefusal::FromTheFuture(
                (body.issued - now).unsigned_abs(),
            ));
        }
        let checked = body
            .check(&self.file.base_dir, true)
            .map_err(BundleRefusal::Invalid)?;
        match checked {
            Checked::Gateway(cfg) => self.apply_gateway(host, body, *cfg, &signed).await,
            Checked::Terminal(settings) => {
                let terminal = body.target.terminal.clone().unwrap_or_default();
                self.raise_highest(Some(&terminal), body.version)?;
                let path = self.dir.join(format!("terminal-{terminal}.json"));
                write_synced(&path, &signed.to_json()).map_err(BundleRefusal::Store)?;
                self.lock().terminals.insert(
                    terminal.clone(),
                    TerminalBundle {
                        version: body.version,
                        etag: etag(&signed, body.version),
                        json: signed.to_json().into(),
                    },
                );
                host.terminals()
                    .set_bundle(&terminal, body.version, settings.required_peripherals);
                let payload =
                    json!({ "target": body.target, "version": body.version, "note": body.note });
                record(host.outbox(), Kind::ConfigApplied, payload).await;
                tracing::info!(%terminal, version = body.version, "terminal bundle stored");
                Ok(json!({ "target": body.target, "version": body.version }))
            }
        }
    }

    async fn apply_gateway(
        &self,
        host: &impl Host,
        body: BundleBody,
        cfg: GatewayConfig,
        signed: &SignedBundle,
    ) -> Result<Value, BundleRefusal> {
        let current = host.config();
        let new = Arc::new(with_live_settings(&self.file, &cfg));
        let fixed = crate::devices::restart_only_changes(&current, &cfg);
        if !fixed.is_empty() {
            return Err(BundleRefusal::NeedsRestart(fixed));
        }
        // Once tried, a version is used up: applied, rolled back or failed, it never comes
        // back.
        self.raise_highest(None, body.version)?;
        let staged = self.dir.join("staged.json");
        write_synced(&staged, &signed.to_json()).map_err(BundleRefusal::Stage)?;
        if let Err(e) = host.apply_config(new).await {
            // Nothing was switched: the devices still run the config in force.
            let _ = std::fs::remove_file(&staged);
            host.metrics().count_bundle("rolled_back");
            let version = self.lock().version;
            let payload = json!({
                "target": body.target, "version": body.version, "reason": format!("apply failed: {e}"),
                "back_to": version,
            });
            record(host.outbox(), Kind::ConfigRolledBack, payload).await;
            return Err(BundleRefusal::RolledBack { version, source: e });
        }
        let (cur, prev) = (
            self.dir.join("gateway.json"),
            self.dir.join("gateway.previous.json"),
        );
        let moved = (|| -> std::io::Result<()> {
            if cur.exists() {
                std::fs::rename(&cur, &prev)?;
            } else if prev.exists() {
                std::fs::remove_file(&prev)?;
            }
            std::fs::rename(&staged, &cur)?;
            std::fs::File::open(&self.dir)?.sync_all()
        })();
        if let Err(e) = moved {
            tracing::error!(error = %e, "bundle applied but not stored; it lasts until a restart");
        }
        let _ = std::fs::remove_file(self.dir.join("gateway.confirmed"));
        {
            let mut s = self.lock();
            s.last_good = current;
            s.last_good_version = s.version;
            s.version = body.version;
            s.confirmed = false;
        }
        host.metrics().config_version.set(body.version as i64);
        let payload = json!({ "target": body.target, "version": body.version, "note": body.note });
        if let Some(seq) = record(host.outbox(), Kind::ConfigApplied, payload).await {
            self.lock().pending = Some(Pending {
                version: body.version,
                seq,
                deadline: host.clock().instant() + self.confirm_within,
            });
        }
        tracing::info!(version = body.version, note = %body.note, "gateway bundle applied; awaiting central's confirmation");
        Ok(json!({
            "target": body.target,
            "version": body.version,
            "confirm_within_secs": self.confirm_within.as_secs(),
        }))
    }

    /// Checks the bundle awaiting confirmation: confirmed once central acknowledged its
    /// `config.applied` event; when the deadline passed first, returns the last good config to
    /// go back to.
    pub fn overdue(&self, outbox: &Outbox, now: Instant) -> Option<Arc<GatewayConfig>> {
        let mut s = self.lock();
        let p = s.pending.as_ref()?;
        let still_pending = outbox
            .pending(EventClass::Alert, p.seq.saturating_sub(1), 1)
            .first()
            .is_some_and(|e| e.seq == p.seq);
        if !still_pending {
            let version = p.version;
            s.pending = None;
            s.confirmed = true;
            drop(s);
            if let Err(e) = write_synced(&self.dir.join("gateway.confirmed"), &version.to_string())
            {
                tracing::warn!(error = %e, "cannot note the confirmation");
            }
            tracing::info!(version, "central confirmed the gateway bundle");
            return None;
        }
        (now >= p.deadline).then(|| s.last_good.clone())
    }

    /// The last good config is back in force (or could not be, `failed`).
    pub async fn rolled_back(&self, host: &impl Host, failed: Option<String>) {
        let (from, to) = {
            let mut s = self.lock();
            s.pending = None;
            let from = s.version;
            if failed.is_none() {
                s.version = s.last_good_version;
                s.confirmed = true;
            }
            (from, s.last_good_version)
        };
        if failed.is_none() {
            let (cur, prev) = (
                self.dir.join("gateway.json"),
                self.dir.join("gateway.previous.json"),
            );
            let moved = if prev.exists() {
                std::fs::rename(&prev, &cur)
            } else {
                std::fs::remove_file(&cur)
            };
            if let Err(e) = moved {
                tracing::error!(error = %e, "rolled back, but the bundle files could not follow");
            }
            let _ = write_synced(&self.dir.join("gateway.confirmed"), &to.to_string());
            host.metrics().config_version.set(to as i64);
        }
        host.metrics().count_bundle("rolled_back");
        let reason = format!(
            "central did not confirm version {from} within {}",
            humantime::format_duration(self.confirm_within)
        );
        tracing::warn!(%reason, back_to = to, ?failed, "gateway bundle rolled back");
        let payload = json!({
            "target": { "gateway": self.file.gateway.id }, "version": from, "back_to": to,
            "reason": reason, "failed": failed,
        });
        record(host.outbox(), Kind::ConfigRolledBack, payload).await;
    }
}

async fn record(outbox: &Outbox, kind: Kind, payload: Value) -> Option<u64> {
    let appended = match NewEvent::own(kind.clone(), &payload) {
        Ok(event) => outbox.append(vec![event]).await,
        Err(e) => Err(e),
    };
    match appended {
        Ok(seqs) => seqs.first().copied(),
        Err(e) => {
            tracing::error!(error = %e, %kind, "cannot record a bundle event");
            None
        }
    }
}
