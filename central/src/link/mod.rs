//! The `GatewayLink`: central's own MQTT session, on which it hears every gateway.
//!
//! It subscribes to every gateway's status and health, checks each message's topic and envelope
//! (a gateway may speak only for itself), and feeds the registry. It reconnects with a bounded
//! backoff; central's session is persistent so nothing queued for it is lost while it is away.

use std::sync::Arc;
use std::time::{Duration, Instant};

use firmware_config::config::TlsFiles;
use firmware_config::runtime::mqtt::{client_options, MqttSetupError};
use firmware_config::topics::{all_gateways, Channel, Topic};
use firmware_config::wire::{self, Message};
use rumqttc::{AsyncClient, Event, EventLoop, Packet, Publish, QoS};
use tokio_util::sync::CancellationToken;

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
        let (client, eventloop) = AsyncClient::new(opts, 256);
        Ok(Self { client, eventloop })
    }

    pub async fn run(mut self, shared: Arc<Shared>, token: CancellationToken) {
        let m = &shared.metrics;
        let mut wait = Duration::from_millis(100);
        loop {
            let event = tokio::select! {
                _ = token.cancelled() => break,
                e = self.eventloop.poll() => e,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    m.link_connected.set(1);
                    wait = Duration::from_millis(100);
                    tracing::info!("central connected to the broker");
                    for ch in [Channel::Status, Channel::Health] {
                        if let Err(e) = self
                            .client
                            .try_subscribe(all_gateways(ch), QoS::AtLeastOnce)
                        {
                            tracing::error!(error = %e, "cannot subscribe");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => handle(&shared, &p),
                Ok(_) => {}
                Err(e) => {
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

/// Checks one message and applies it to the registry.
fn handle(shared: &Shared, p: &Publish) {
    let m = &shared.metrics;
    let Ok(Topic::Gateway { gateway, channel }) = Topic::parse(&p.topic) else {
        m.reject("bad_topic");
        return;
    };
    if p.payload.is_empty() {
        // A cleared retained message: nothing to learn.
        return;
    }
    let env = match wire::decode(&p.payload) {
        Ok(env) => env,
        Err(e) => {
            tracing::warn!(%gateway, channel = channel.as_str(), error = %e, "rejected message");
            m.reject("bad_envelope");
            return;
        }
    };
    if env.gateway != gateway {
        tracing::warn!(topic = %p.topic, claimed = %env.gateway, "gateway spoke for another gateway");
        m.reject("gateway_mismatch");
        return;
    }
    m.messages_received
        .get_or_create(&KindLabel {
            kind: env.message.kind().to_owned(),
        })
        .inc();
    let now = Instant::now();
    let mut registry = shared.registry();
    match (channel, env.message) {
        (Channel::Status, Message::Status(s)) => {
            tracing::info!(%gateway, state = ?s.state, site = %s.site, "gateway status");
            registry.observe_status(&gateway, s.state, &s.site, &s.version, now);
        }
        (Channel::Health, Message::Health(h)) => registry.observe_health(&gateway, h, now),
        (ch, msg) => {
            tracing::warn!(%gateway, channel = ch.as_str(), kind = msg.kind(), "message of the wrong kind for its topic");
            m.reject("kind_mismatch");
        }
    }
}
