//! Configuration bundles from central: built, signed with central's bundle key, sent to the
//! gateway on its command topic, and recorded with what the gateway answered.
//!
//! Versions go up per target: a new bundle gets one more than the highest version central has
//! sent to that target or seen it report. History is kept in the state store (`bundles` table).

use std::sync::Arc;
use std::time::Duration;

use firmware_config::bundle::{BundleBody, Content, SignedBundle, SigningKey, Target};
use firmware_config::config::TerminalSettings;
use firmware_config::ids::GatewayId;
use firmware_config::runtime::clock::Clock;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::link::commands::{CommandError, Commands};
use crate::state::{StateError, StateStore, Table};

/// How long central waits for a gateway to apply a bundle (it may stop cameras first).
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum BundleSendError {
    #[error("central has no [identity] bundle_signing_key_file; it cannot sign bundles")]
    NoKey,
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Command(#[from] CommandError),
    #[error("store: {0}")]
    Store(#[from] StateError),
    #[error("store: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Why central's bundle history could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BundlesOpenError {
    #[error("bundle signing key: {0}")]
    Key(#[source] firmware_config::bundle::BundleError),
    #[error("bundle store: {0}")]
    Store(#[from] StateError),
}

/// One bundle sent, and how it went.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sent {
    pub target: Target,
    pub version: u64,
    pub note: String,
    #[serde(with = "time::serde::rfc3339")]
    pub sent: OffsetDateTime,
    /// `applied`, `refused` or `no_answer`.
    pub outcome: String,
    pub message: String,
    /// Whether central built and signed it (false: forwarded as signed by hand).
    pub signed_here: bool,
}

pub struct Bundles {
    key: Option<SigningKey>,
    tree: Arc<dyn Table>,
    /// Dates bundles (gateways refuse one issued longer ago than their `max_age`).
    clock: Clock,
}

fn target_key(t: &Target) -> String {
    match &t.terminal {
        Some(term) => format!("{}/{term}", t.gateway),
        None => t.gateway.clone(),
    }
}

impl Bundles {
    pub fn open(
        state: &dyn StateStore,
        key_file: Option<&std::path::Path>,
        clock: Clock,
    ) -> Result<Self, BundlesOpenError> {
        let key = match key_file {
            Some(k) => Some(SigningKey::load(k).map_err(BundlesOpenError::Key)?),
            None => None,
        };
        let tree = state.table("bundles")?;
        Ok(Self { key, tree, clock })
    }

    /// Central's signing key (it also signs master data updates).
    pub fn signing_key(&self) -> Option<&SigningKey> {
        self.key.as_ref()
    }

    /// The highest version central has sent to `target`.
    fn last_version(&self, target: &Target) -> u64 {
        let prefix = format!("{}\0", target_key(target));
        self.tree
            .scan(prefix.as_bytes())
            .filter_map(Result::ok)
            .filter_map(|(_, v)| serde_json::from_slice::<Sent>(&v).ok())
            .map(|s| s.version)
            .max()
            .unwrap_or(0)
    }

    fn record(&self, s: &Sent) -> Result<(), BundleSendError> {
        let key = format!("{}\0{:020}", target_key(&s.target), s.version);
        self.tree.insert(key.as_bytes(), serde_json::to_vec(s)?)?;
        self.tree.flush()?;
        Ok(())
    }

    /// Every bundle sent, newest first.
    pub fn history(&self) -> Vec<Sent> {
        let mut all: Vec<Sent> = self
            .tree
            .scan(b"")
            .filter_map(Result::ok)
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect();
        all.sort_by_key(|s| std::cmp::Reverse(s.sent));
        all
    }

    /// Builds and signs a bundle; `reported` is the version the target says it runs.
    pub fn build(
        &self,
        target: Target,
        content: Content,
        note: String,
        version: Option<u64>,
        reported: u64,
    ) -> Result<SignedBundle, BundleSendError> {
        let key = self.key.as_ref().ok_or(BundleSendError::NoKey)?;
        let version = version.unwrap_or_else(|| self.last_version(&target).max(reported) + 1);
        let body = BundleBody {
            target,
            version,
            issued: self.clock.now_utc(),
            note,
            content,
        };
        // Central checks what it can; the gateway checks again, with its own files.
        body.check(std::path::Path::new("/"), false)
            .map_err(|issues| BundleSendError::Invalid(issues.join("; ")))?;
        key.sign(&body)
            .map_err(|e| BundleSendError::Invalid(e.to_string()))
    }

    /// Sends a signed bundle to its gateway and records the answer.
    pub async fn send(
        &self,
        commands: &Commands,
        gateway: &GatewayId,
        bundle: SignedBundle,
        signed_here: bool,
    ) -> Result<Sent, BundleSendError> {
        let body = bundle.unverified_body().ok_or_else(|| {
            BundleSendError::Invalid("the bundle's body is not a bundle body".to_owned())
        })?;
        let args = serde_json::json!({ "bundle": bundle });
        let result = commands
            .send(gateway, "config.bundle", args, APPLY_TIMEOUT)
            .await;
        let (outcome, message) = match &result {
            Ok(_) => ("applied", String::new()),
            Err(CommandError::Refused { message, .. }) => ("refused", message.clone()),
            Err(e) => ("no_answer", e.to_string()),
        };
        let sent = Sent {
            target: body.target,
            version: body.version,
            note: body.note,
            sent: self.clock.now_utc(),
            outcome: outcome.to_owned(),
            message,
            signed_here,
        };
        // A forwarded bundle names its own target; record it under the gateway it went to.
        if sent.target.gateway == gateway.as_str() {
            self.record(&sent)?;
        }
        tracing::info!(%gateway, version = sent.version, outcome, message = %sent.message, "bundle sent");
        result?;
        Ok(sent)
    }
}

/// `POST /api/v1/bundles`: what an installer sends to change a configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleRequest {
    pub gateway: String,
    #[serde(default)]
    pub terminal: Option<String>,
    /// A whole gateway.toml (for the gateway).
    #[serde(default)]
    pub toml: Option<String>,
    /// A terminal's settings.
    #[serde(default)]
    pub settings: Option<TerminalSettings>,
    #[serde(default)]
    pub note: String,
    /// Default: one more than the last.
    #[serde(default)]
    pub version: Option<u64>,
}

impl BundleRequest {
    pub fn content(&self) -> Result<(Target, Content), BundleSendError> {
        let target = Target {
            gateway: self.gateway.clone(),
            terminal: self.terminal.clone(),
        };
        match (&self.terminal, &self.toml, &self.settings) {
            (None, Some(toml), None) => Ok((target, Content::Gateway { toml: toml.clone() })),
            (Some(_), None, Some(s)) => Ok((
                target,
                Content::Terminal {
                    settings: s.clone(),
                },
            )),
            (None, _, _) => Err(BundleSendError::Invalid(
                "a gateway bundle needs `toml` (a whole gateway.toml) and no `settings`".to_owned(),
            )),
            (Some(_), _, _) => Err(BundleSendError::Invalid(
                "a terminal bundle needs `settings` and no `toml`".to_owned(),
            )),
        }
    }
}

pub type SharedBundles = Arc<Bundles>;
