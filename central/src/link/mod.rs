//! The `GatewayLink`: central's own MQTT session, on which it hears every gateway.
//!
//! It subscribes to every gateway's status, health and events, checks each message's topic and
//! envelope (a gateway may speak only for itself), feeds the registry, stores event batches
//! durably and only then acknowledges them to their gateway. Events come through a shared
//! subscription (`$share/gridedge-central/…`), so several central replicas on one broker share
//! the load. The broker's PUBACK to central is sent only after the batch is stored (manual acks),
//! so a central that dies mid-batch gets it again from the broker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use firmware_config::config::TlsFiles;
use firmware_config::ids::GatewayId;
use firmware_config::runtime::mqtt::{client_options, MqttSetupError};
use firmware_config::topics::{all_gateways, Channel, Topic};
use firmware_config::wire::{self, Ack, Envelope, Message};
use rumqttc::{AsyncClient, Event, EventLoop, Packet, Publish, QoS};
use tokio_util::sync::CancellationToken;

pub mod commands;

use crate::metrics::KindLabel;
use crate::Shared;

pub struct GatewayLink {
    client: AsyncClient,
    eventloop: EventLoop,
}

impl GatewayLink {
    pub fn new(
        url: &str,
        tls: Option<&TlsFiles>,
        central_id: &str,
    ) -> Result<Self, MqttSetupError> {
        let mut opts = client_options(url, tls, central_id, Duration::from_secs(30))?;
        opts.set_clean_session(false);
        opts.set_manual_acks(true);
        let (client, mut eventloop) = AsyncClient::new(opts, 1024);
        firmware_config::runtime::mqtt::send_at_once(&mut eventloop);
        Ok(Self { client, eventloop })
    }

    /// A handle that sends commands on this link.
    pub fn commands(&self) -> commands::Commands {
        commands::Commands::new(self.client.clone())
    }

    pub async fn run(mut self, shared: Arc<Shared>, token: CancellationToken) {
        let m = &shared.metrics;
        let mut wait = Duration::from_millis(100);
        let mut replies = std::collections::VecDeque::new();
        loop {
            self.send_replies(&mut replies, m);
            let event = tokio::select! {
                _ = token.cancelled() => break,
                e = self.eventloop.poll() => e,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    m.link_connected.set(1);
                    wait = Duration::from_millis(100);
                    tracing::info!("central connected to the broker");
                    let filters = [
                        all_gateways(Channel::Status),
                        all_gateways(Channel::Health),
                        format!("{SHARE}/{}", all_gateways(Channel::Events)),
                        all_gateways(Channel::Reply),
                        all_gateways(Channel::Fetch),
                    ];
                    for f in filters {
                        if let Err(e) = self.client.try_subscribe(f, QoS::AtLeastOnce) {
                            tracing::error!(error = %e, "cannot subscribe");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Some((topic, payload)) = handle(&shared, &p).await {
                        replies.push_back(Reply::Ack(topic, payload));
                    }
                    // PUBACK to the broker only now: the batch is stored (or was refused).
                    replies.push_back(Reply::PubAck(p));
                }
                Ok(_) => {}
                Err(e) => {
                    // The new session gets everything unacknowledged again from the broker.
                    replies.clear();
                    if m.link_connected.get() == 1 {
                        tracing::warn!(error = %e, "central lost the broker");
                    }
                    m.link_connected.set(0);
                    tokio::select! {
                        _ = token.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
        let _ = self.client.try_disconnect();
        m.link_connected.set(0);
    }
}

/// What the link owes the broker for one incoming message, in order.
enum Reply {
    /// An acknowledgement (or a content piece) to publish to a gateway.
    Ack(String, Vec<u8>),
    /// The PUBACK of a message that has been handled.
    PubAck(Publish),
}

impl GatewayLink {
    /// Hands queued replies to the client while its request queue has room. The queue fills
    /// when a broker sends more at once than it holds (Mosquitto sends up to its
    /// `max_inflight_messages`), because rumqttc drains requests only between reads: dropping
    /// the overflow would leave gateways waiting out their ack timeout.
    fn send_replies(
        &self,
        replies: &mut std::collections::VecDeque<Reply>,
        m: &crate::metrics::Metrics,
    ) {
        while let Some(r) = replies.front() {
            let sent = match r {
                Reply::Ack(topic, payload) => self
                    .client
                    .try_publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
                    .map(|()| m.acks_sent.inc())
                    .is_ok(),
                Reply::PubAck(p) => self.client.try_ack(p).is_ok(),
            };
            if !sent {
                return;
            }
            replies.pop_front();
        }
    }
}

/// The consumer group of central replicas for event batches.
pub const SHARE: &str = "$share/gridedge-central";

/// Checks one message and applies it; for an event batch, returns the ack to publish (topic,
/// payload) once the batch is stored.
async fn handle(shared: &Arc<Shared>, p: &Publish) -> Option<(String, Vec<u8>)> {
    let m = &shared.metrics;
    let Ok(Topic::Gateway { gateway, channel }) = Topic::parse(&p.topic) else {
        m.reject("bad_topic");
        return None;
    };
    if p.payload.is_empty() {
        // A cleared retained message: nothing to learn.
        return None;
    }
    let env = match wire::decode(&p.payload) {
        Ok(env) => env,
        Err(e) => {
            tracing::warn!(%gateway, channel = channel.as_str(), error = %e, "rejected message");
            m.reject("bad_envelope");
            return None;
        }
    };
    if env.gateway != gateway {
        tracing::warn!(topic = %p.topic, claimed = %env.gateway, "gateway spoke for another gateway");
        m.reject("gateway_mismatch");
        return None;
    }
    if let Some(v) = &shared.verifier {
        if let Err(e) = v.verify(&gateway, env.seq, &env.raw_payload, env.sig.as_ref()) {
            tracing::warn!(%gateway, channel = channel.as_str(), error = %e, "refused a message without a valid signature");
            m.reject("bad_signature");
            return None;
        }
    }
    m.messages_received
        .get_or_create(&KindLabel {
            kind: env.message.kind().to_owned(),
        })
        .inc();
    let now = Instant::now();
    match (channel, env.message) {
        (Channel::Status, Message::Status(s)) => {
            tracing::info!(%gateway, state = ?s.state, site = %s.site, "gateway status");
            shared
                .registry()
                .observe_status(&gateway, s.state, &s.site, &s.version, now);
            None
        }
        (Channel::Health, Message::Health(h)) => {
            if let Some(t) = &h.terminals {
                shared
                    .terminal_board()
                    .observe_summary(gateway.as_str(), t, env.time);
            }
            if let Some(report) = &h.masterdata {
                shared.replication.offer(shared, &gateway, report);
            }
            if let Some(o) = &h.outbox {
                outbox_alerts(shared, gateway.as_str(), o, now);
            }
            shared.registry().observe_health(&gateway, h, now);
            None
        }
        (Channel::Events, Message::Events(batch)) => {
            if batch.events.iter().any(|e| e.kind.starts_with("terminal.")) {
                let mut board = shared.terminal_board();
                for e in &batch.events {
                    board.observe_event(gateway.as_str(), e);
                }
            }
            store_and_ack(shared, gateway, env.seq, batch.events, env.raw_payload).await
        }
        (Channel::Reply, Message::Reply(reply)) => {
            shared.commands.complete(&gateway, reply);
            None
        }
        (Channel::Fetch, Message::Fetch(fetch)) => {
            // Reads one piece from sled: small and quick, no need to leave the loop.
            let chunk = crate::replication::serve_fetch(shared, &gateway, &fetch);
            let topic = Topic::gateway(&gateway, Channel::Data).path();
            match Envelope::new(gateway, env.seq, Message::Chunk(chunk)).encode() {
                Ok(payload) => Some((topic, payload)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode a content piece");
                    None
                }
            }
        }
        (ch, msg) => {
            tracing::warn!(%gateway, channel = ch.as_str(), kind = msg.kind(), "message of the wrong kind for its topic");
            m.reject("kind_mismatch");
            None
        }
    }
}

/// The outbox rules on a health report: evictions since the last one, a stalled backlog.
fn outbox_alerts(shared: &Shared, gateway: &str, o: &wire::OutboxReport, now: Instant) {
    let evicted: u64 = o.evicted.values().sum();
    let (before, stalled_for) = {
        let mut seen = shared
            .outbox_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let e = seen.entry(gateway.to_owned()).or_insert((evicted, now));
        let before = e.0;
        e.0 = evicted;
        if o.pending == 0 {
            e.1 = now;
        }
        (before, now.saturating_duration_since(e.1))
    };
    let observations = crate::alerts::rules::outbox(gateway, o, before, stalled_for);
    shared
        .alerts
        .observe(observations, time::OffsetDateTime::now_utc());
}

async fn store_and_ack(
    shared: &Arc<Shared>,
    gateway: GatewayId,
    batch: u64,
    events: Vec<wire::Event>,
    raw: Vec<u8>,
) -> Option<(String, Vec<u8>)> {
    let m = &shared.metrics;
    let store = shared.store.clone();
    let gw = gateway.clone();
    let submissions: Vec<wire::Event> = events
        .iter()
        .filter(|e| e.kind == "submission.created")
        .cloned()
        .collect();
    // What the alert rules may act on (telemetry never is).
    let alert_candidates: Vec<wire::Event> = events
        .iter()
        .filter(|e| e.class != wire::EventClass::Telemetry && e.kind != "submission.created")
        .cloned()
        .collect();
    let stored =
        tokio::task::spawn_blocking(move || store.store_batch_raw(&gw, &events, Some(&raw))).await;
    if !submissions.is_empty() && matches!(stored, Ok(Ok(_))) {
        // Stored first: a case is made only of what central holds (and again: nothing).
        let (s, gw) = (shared.clone(), gateway.as_str().to_owned());
        let made =
            tokio::task::spawn_blocking(move || s.cases.observe(&s, &gw, &submissions)).await;
        for case in made.unwrap_or_default() {
            tracing::info!(receipt = %case.receipt, station = ?case.station, "case routed");
            crate::cases::tell_gateway(shared, &case);
        }
    }
    let stored = match stored {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            // Not acknowledged: the gateway resends after its ack timeout.
            tracing::error!(%gateway, error = %e, "cannot store a batch");
            m.reject("store_failed");
            return None;
        }
        Err(e) => {
            tracing::error!(%gateway, error = %e, "store task failed");
            return None;
        }
    };
    m.events_stored.inc_by(stored.new);
    if stored.new > 0 {
        if let Ok(mut seen) = shared.outbox_seen.lock() {
            if let Some(e) = seen.get_mut(gateway.as_str()) {
                e.1 = Instant::now();
            }
        }
    }
    let fresh: std::collections::HashSet<u64> = stored.fresh.iter().copied().collect();
    let fresh_events: Vec<&wire::Event> = alert_candidates
        .iter()
        .filter(|e| fresh.contains(&e.seq))
        .collect();
    if !fresh_events.is_empty() {
        let mut devices = shared
            .devices
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for e in &fresh_events {
            devices.observe_event(gateway.as_str(), e);
        }
    }
    for e in fresh_events.iter().filter(|e| e.kind == "meeting.answer") {
        if let Some(m) = shared.meetings.answered(gateway.as_str(), e) {
            tracing::info!(meeting = %m.id, %gateway, "meeting answer");
        }
    }
    let observations: Vec<_> = fresh_events
        .iter()
        .flat_map(|e| crate::alerts::rules::from_event(gateway.as_str(), e))
        .collect();
    shared
        .alerts
        .observe(observations, time::OffsetDateTime::now_utc());
    m.events_duplicate.inc_by(stored.duplicates);
    m.batches.inc();
    let ack = Message::Ack(Ack {
        watermark: stored.high,
        ranges: stored.ranges,
        batch: Some(batch),
    });
    let topic = Topic::gateway(&gateway, Channel::Ack).path();
    match Envelope::new(gateway, batch, ack).encode() {
        Ok(payload) => Some((topic, payload)),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode an ack");
            None
        }
    }
}
