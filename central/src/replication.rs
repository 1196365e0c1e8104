//! Sending master data to gateways: each gateway's health report says which version its
//! replica holds (and for which areas); central answers with what it lacks — a delta, or a
//! snapshot after a gap or damage — signed with its key, on the gateway's `data` topic. A new
//! version is offered to every gateway at once. Resends to one gateway are spaced, so a
//! gateway that cannot apply an update is not flooded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use firmware_config::bundle::SigningKey;
use firmware_config::ids::GatewayId;
use firmware_config::masterdata::replica::SignedUpdate;
use firmware_config::runtime::clock::Instant;
use firmware_config::topics::Channel;
use firmware_config::wire::{ContentChunk, ContentFetch, Message, ReplicaReport, MAX_CHUNK_BYTES};

use crate::link::commands::Commands;
use crate::masterdata::MasterData;
use crate::GatewayRegistry;

/// How long before the same version is offered to the same gateway again.
pub const RESEND_AFTER: Duration = Duration::from_secs(15);

/// (central's version, the gateway's version, whether it asked for a snapshot).
type Offer = (u64, u64, bool);

pub struct Replication {
    masterdata: Arc<MasterData>,
    /// Central's signing key: gateways believe only updates it signed.
    key: SigningKey,
    commands: Arc<Commands>,
    /// Which gateways to offer a new version to, and what their replicas hold.
    registry: Arc<Mutex<GatewayRegistry>>,
    /// Per gateway: the last offer (current version, the gateway's version, snapshot asked),
    /// and when.
    sent: Mutex<HashMap<String, (Offer, Instant)>>,
}

impl Replication {
    pub fn new(
        masterdata: Arc<MasterData>,
        key: SigningKey,
        commands: Arc<Commands>,
        registry: Arc<Mutex<GatewayRegistry>>,
    ) -> Self {
        Self {
            masterdata,
            key,
            commands,
            registry,
            sent: Mutex::default(),
        }
    }

    /// Offers `gateway` what it lacks, given its report. The same offer (same current version
    /// for the same report) is not made again within [`RESEND_AFTER`], and is not even computed.
    pub fn offer(&self, gateway: &GatewayId, report: &ReplicaReport) {
        let Some(current) = self.masterdata.current().map(|c| c.info.version) else {
            return;
        };
        if report.version >= current && !report.need_snapshot {
            return;
        }
        let offer = (current, report.version, report.need_snapshot);
        {
            let mut sent = self.sent.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((o, at)) = sent.get(gateway.as_str()) {
                if *o == offer && at.elapsed() < RESEND_AFTER {
                    return;
                }
            }
            sent.insert(gateway.as_str().to_owned(), (offer, Instant::now()));
        }
        let Some(update) = self.masterdata.update_for(report) else {
            return;
        };
        let snapshot = matches!(
            update,
            firmware_config::masterdata::replica::Update::Snapshot { .. }
        );
        let version = update.target_version();
        let signed = match SignedUpdate::sign(&self.key, &update) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot sign a master data update");
                return;
            }
        };
        let bytes = signed.body.len();
        match self
            .commands
            .publish(gateway, Channel::Data, Message::Data(signed))
        {
            Ok(()) => {
                tracing::info!(%gateway, from = report.version, to = version, snapshot, bytes, "master data sent")
            }
            Err(e) => tracing::warn!(%gateway, error = %e, "cannot send master data"),
        }
    }

    /// Offers a new version to every gateway that has reported its replica.
    pub fn offer_all(&self) {
        let views = self
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .views(Instant::now());
        for v in views {
            let (Ok(id), Some(report)) = (
                GatewayId::new(v.id.clone()),
                v.health.and_then(|h| h.masterdata),
            ) else {
                continue;
            };
            self.offer(&id, &report);
        }
    }
}

/// Answers a gateway's request for a piece of a content file. Any file central holds may be
/// asked for by its hash; the piece carries its own hash, the file's size, or why there is none.
pub fn serve_fetch(
    masterdata: &MasterData,
    metrics: &crate::Metrics,
    gateway: &GatewayId,
    fetch: &ContentFetch,
) -> ContentChunk {
    let mut chunk = ContentChunk {
        sha256: fetch.sha256.clone(),
        offset: fetch.offset,
        total: 0,
        chunk_sha256: String::new(),
        data: String::new(),
        error: None,
    };
    let len = fetch.len.min(MAX_CHUNK_BYTES);
    match masterdata.blob_piece(&fetch.sha256, fetch.offset, len) {
        None => {
            tracing::warn!(%gateway, sha256 = %fetch.sha256, "a gateway asked for a content file central does not hold");
            chunk.error = Some("no such content file".into());
        }
        Some((total, _)) if fetch.offset > total || len == 0 => {
            chunk.total = total;
            chunk.error = Some(format!(
                "offset {} and length {} do not fit a file of {total} bytes",
                fetch.offset, fetch.len
            ));
        }
        Some((total, bytes)) => {
            use base64::Engine as _;
            chunk.total = total;
            chunk.chunk_sha256 = firmware_config::masterdata::sha256_hex(&bytes);
            chunk.data = base64::engine::general_purpose::STANDARD.encode(&bytes);
            metrics.content_bytes_sent.inc_by(bytes.len() as u64);
        }
    }
    chunk
}
