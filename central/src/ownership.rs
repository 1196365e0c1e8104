//! Which gateways this replica works for, when several central replicas share PostgreSQL.
//!
//! Each gateway's lease (`pg::leases`) names one live replica. That replica alone subscribes
//! to the gateway's batches and fetches (a subscription per gateway, not one for all: every
//! broker has plain subscriptions, not every one shares them), stores and acknowledges its
//! events, raises its alerts and escalates them. Statuses, health reports and command replies
//! still reach every replica, so each one's boards show every gateway.
//!
//! Every [`RENEW`] the keeper renews this replica's leases and takes those of gateways nobody
//! holds. A gateway it takes is subscribed to, its alerts read again from the database, and
//! then asked to send everything pending again: what the last owner had in hand when it died
//! is not waited for until the gateway's ack timeout. A replica that dies loses its gateways
//! to the others within [`TTL`] plus one [`RENEW`]; one that stops cleanly gives them back at
//! once.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use firmware_config::ids::GatewayId;
use firmware_config::runtime::transport::Publisher;
use firmware_config::topics::{Channel, Topic};
use firmware_config::wire::{Ack, Message};
use tokio_util::sync::CancellationToken;

use crate::alerts::Alerts;
use crate::link::downlink::Downlink;
use crate::metrics::Metrics;
use crate::pg::leases::Leases;
use crate::GatewayRegistry;

/// How long a lease lasts after its last renewal.
pub const TTL: Duration = Duration::from_secs(6);
/// How often the keeper renews and takes leases.
pub const RENEW: Duration = Duration::from_secs(2);

/// Gateways per SUBSCRIBE request.
const PER_REQUEST: usize = 64;

/// The topics a gateway's owner subscribes to, and no other replica.
pub fn owned_filters(gateway: &GatewayId) -> [String; 2] {
    [
        Topic::gateway(gateway, Channel::Events).path(),
        Topic::gateway(gateway, Channel::Fetch).path(),
    ]
}

/// The topics every replica subscribes to.
pub fn shared_filters() -> [String; 3] {
    use firmware_config::topics::all_gateways;
    [
        all_gateways(Channel::Status),
        all_gateways(Channel::Health),
        all_gateways(Channel::Reply),
    ]
}

/// A gateway's request to send everything pending again, sealed for it: topic and payload.
pub fn resend_request(downlink: &Downlink, gateway: &GatewayId) -> Option<(String, Vec<u8>)> {
    let topic = Topic::gateway(gateway, Channel::Ack).path();
    match downlink.seal(gateway, Channel::Ack, Message::Ack(Ack::resend_request(0))) {
        Ok(payload) => Some((topic, payload)),
        Err(e) => {
            tracing::error!(%gateway, error = %e, "cannot seal a resend request");
            None
        }
    }
}

/// What the keeper works with: built in `lib.rs`.
pub struct Keeper {
    pub leases: Arc<Leases>,
    pub registry: Arc<Mutex<GatewayRegistry>>,
    /// Central's session: subscriptions and resend requests go out on it.
    pub publisher: Arc<dyn Publisher>,
    pub downlink: Arc<Downlink>,
    pub alerts: Arc<Alerts>,
    pub metrics: Arc<Metrics>,
}

/// Keeps this replica's leases until `token` is cancelled, then gives them back.
pub async fn keep(k: Keeper, token: CancellationToken) {
    let mut mine: BTreeSet<String> = BTreeSet::new();
    let mut every = tokio::time::interval(RENEW);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            _ = every.tick() => {}
        }
        let known = k
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ids();
        if let Err(e) = k.leases.refresh(&known).await {
            // Those held run out by themselves: another replica takes them once they have.
            tracing::warn!(error = %e, "cannot renew this replica's leases");
        }
        let now = k.leases.held_set();
        let given: Vec<String> = mine.difference(&now).cloned().collect();
        let taken: Vec<String> = now.difference(&mine).cloned().collect();
        mine = now;
        k.metrics.leases_held.set(mine.len() as i64);
        if !given.is_empty() {
            tracing::warn!(gateways = given.len(), "this replica lost gateways' leases");
            give(&k, &given).await;
        }
        if !taken.is_empty() {
            tracing::info!(gateways = taken.len(), "this replica took gateways over");
            k.metrics.leases_taken.inc_by(taken.len() as u64);
            take(&k, &taken).await;
        }
    }
    if let Err(e) = k.leases.release_all().await {
        tracing::warn!(error = %e, "cannot give this replica's leases back; they run out");
    }
}

fn ids(names: &[String]) -> Vec<GatewayId> {
    names
        .iter()
        .filter_map(|n| GatewayId::new(n).ok())
        .collect()
}

async fn give(k: &Keeper, gateways: &[String]) {
    for gw in ids(gateways) {
        for f in owned_filters(&gw) {
            if let Err(e) = k.publisher.unsubscribe(f).await {
                tracing::warn!(%gw, error = %e, "cannot unsubscribe");
            }
        }
    }
}

async fn take(k: &Keeper, gateways: &[String]) {
    let gws = ids(gateways);
    for chunk in gws.chunks(PER_REQUEST) {
        let filters = chunk.iter().flat_map(owned_filters).collect();
        if let Err(e) = k.publisher.subscribe_many(filters).await {
            // The link subscribes again to every owned gateway when it reconnects.
            tracing::warn!(error = %e, "cannot subscribe to gateways taken over");
        }
    }
    let set: HashSet<String> = gateways.iter().cloned().collect();
    let alerts = k.alerts.clone();
    let _ = tokio::task::spawn_blocking(move || alerts.reload(Some(&set))).await;
    // After the subscriptions: the resent batches find this replica subscribed.
    for gw in &gws {
        if let Some((topic, payload)) = resend_request(&k.downlink, gw) {
            if let Err(e) = k.publisher.publish(topic, false, payload).await {
                tracing::warn!(%gw, error = %e, "cannot ask a gateway to resend");
            }
        }
    }
}

/// Another replica's gateway's device events, read from the database into this one's boards
/// (called off the async workers, inside the runtime).
fn devices(s: &crate::Shared, gateway: &str, seqs: &[u64]) {
    let crate::store::EventBackend::Postgres(pg) = &s.events else {
        return;
    };
    let Ok(gw) = GatewayId::new(gateway) else {
        return;
    };
    let read = tokio::runtime::Handle::current().block_on(pg.events_by_seq(&gw, seqs));
    let events = match read {
        Ok(events) => events,
        Err(e) => {
            tracing::warn!(%gateway, error = %e, "cannot read another replica's device events");
            return;
        }
    };
    let mut devices = s.devices.lock().unwrap_or_else(PoisonError::into_inner);
    let mut terminals = s.terminals.lock().unwrap_or_else(PoisonError::into_inner);
    for stored in &events {
        let e = &stored.event;
        if !crate::link::observers::is_device_kind(&e.kind) {
            continue;
        }
        devices.observe_event(gateway, e);
        if e.kind.starts_with("terminal.") {
            terminals.observe_event(gateway, e);
        }
    }
}

/// Takes other replicas' notes into this one's memory: their alerts, alert settings, master
/// data versions and share revocations.
pub struct Mirror {
    pub shared: Arc<crate::Shared>,
}

impl crate::pg::feed::Receiver for Mirror {
    fn changed(&self, note: crate::pg::feed::Note) {
        use crate::pg::feed::Note;
        let s = &self.shared;
        match note {
            Note::Alert { id } => s.alerts.mirror(id),
            Note::AlertSettings => s.alerts.reload_settings(),
            Note::MasterData => s.masterdata.reload(),
            Note::ShareRevoked { id } => s.shares.revoked_elsewhere(&id),
            Note::Case { receipt } => s.cases.mirror(&receipt),
            Note::Devices { gateway, seqs } => devices(s, &gateway, &seqs),
        }
    }

    fn resync(&self) {
        let s = &self.shared;
        s.alerts.reload(None);
        s.alerts.reload_settings();
        s.masterdata.reload();
        s.cases.reload();
    }
}
