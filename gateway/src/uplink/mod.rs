//! The `Uplink`: the gateway's MQTT session to central.
//!
//! It announces the gateway with a retained `online` birth message and leaves a retained
//! `offline` last will, reports the gateway's health periodically, and reconnects with
//! exponential backoff and jitter (rumqttc itself would reconnect at once, in a tight loop).
//! The outbox will send its batches through here.

mod backoff;

use std::sync::Arc;
use std::time::Duration;

use firmware_config::config::GatewayConfig;
use firmware_config::ids::GatewayId;
use firmware_config::runtime::mqtt::{client_options, MqttSetupError};
use firmware_config::topics::{Channel, Topic};
use firmware_config::wire::{Envelope, GatewayHealth, LinkState, Message, Status};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, Packet, QoS};
use tokio_util::sync::CancellationToken;

pub use backoff::Backoff;

use crate::metrics::KindLabel;
use crate::Shared;

pub struct Uplink {
    client: AsyncClient,
    eventloop: EventLoop,
    gateway: GatewayId,
    backoff: Backoff,
    seq: u64,
}

impl Uplink {
    pub fn new(config: &GatewayConfig, gateway: GatewayId) -> Result<Self, MqttSetupError> {
        let u = &config.uplink;
        let mut opts = client_options(&u.broker, u.tls.as_ref(), gateway.as_str(), u.keep_alive)?;
        // A persistent session: the broker keeps our subscriptions and queued commands while away.
        opts.set_clean_session(false);
        let will = status_message(&gateway, config, LinkState::Offline, 0);
        opts.set_last_will(LastWill::new(
            Topic::gateway(&gateway, Channel::Status).path(),
            will,
            QoS::AtLeastOnce,
            true,
        ));
        let (client, eventloop) = AsyncClient::new(opts, 64);
        Ok(Self {
            client,
            eventloop,
            gateway,
            backoff: Backoff::new(u.reconnect_min, u.reconnect_max),
            seq: 0,
        })
    }

    /// Runs the session until `token` is cancelled; then says goodbye (retained `offline`).
    pub async fn run(mut self, shared: Arc<Shared>, token: CancellationToken) {
        let m = &shared.metrics;
        let mut health = tokio::time::interval(shared.config.uplink.health_interval);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sessions = 0u64;
        loop {
            tokio::select! {
                _ = token.cancelled() => break,
                _ = health.tick() => {
                    if m.uplink_connected.get() == 1 {
                        self.publish_health(&shared);
                    }
                }
                event = self.eventloop.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        sessions += 1;
                        if sessions > 1 {
                            m.uplink_reconnects.inc();
                        }
                        m.uplink_connected.set(1);
                        self.backoff.reset();
                        tracing::info!(gateway = %self.gateway, session_present = ack.session_present, "uplink connected");
                        self.publish_status(&shared, LinkState::Online);
                        self.publish_health(&shared);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        m.uplink_errors.inc();
                        if m.uplink_connected.get() == 1 {
                            tracing::warn!(gateway = %self.gateway, error = %e, "uplink lost");
                        }
                        m.uplink_connected.set(0);
                        let wait = self.backoff.next_wait();
                        tracing::info!(gateway = %self.gateway, error = %e, wait_ms = wait.as_millis() as u64, "uplink reconnecting after backoff");
                        tokio::select! {
                            _ = token.cancelled() => break,
                            _ = tokio::time::sleep(wait) => {}
                        }
                    }
                },
            }
        }
        self.goodbye(&shared).await;
    }

    /// Publishes a retained `offline` (a clean disconnect does not fire the last will) and
    /// disconnects, within a bounded time.
    async fn goodbye(&mut self, shared: &Shared) {
        if shared.metrics.uplink_connected.get() != 1 {
            return;
        }
        self.publish_status(shared, LinkState::Offline);
        let _ = self.client.disconnect().await;
        let drain = async {
            while let Ok(ev) = self.eventloop.poll().await {
                if let Event::Outgoing(rumqttc::Outgoing::Disconnect) = ev {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
        shared.metrics.uplink_connected.set(0);
        tracing::info!(gateway = %self.gateway, "uplink closed");
    }

    fn publish_status(&mut self, shared: &Shared, state: LinkState) {
        self.seq += 1;
        let payload = status_message(&self.gateway, &shared.config, state, self.seq);
        self.publish(shared, Channel::Status, "status", payload, true);
    }

    fn publish_health(&mut self, shared: &Shared) {
        self.seq += 1;
        let msg = Message::Health(GatewayHealth {
            version: crate::VERSION.to_owned(),
            site: shared.config.site.id.clone(),
            uptime_secs: shared.started.elapsed().as_secs(),
            cameras_configured: shared.config.cameras.len() as u32,
            terminals_configured: shared.config.terminals.len() as u32,
        });
        match Envelope::new(self.gateway.clone(), self.seq, msg).encode() {
            Ok(payload) => self.publish(shared, Channel::Health, "health", payload, false),
            Err(e) => tracing::error!(error = %e, "cannot encode health"),
        }
    }

    fn publish(
        &self,
        shared: &Shared,
        channel: Channel,
        kind: &str,
        payload: Vec<u8>,
        retain: bool,
    ) {
        let topic = Topic::gateway(&self.gateway, channel).path();
        // try_publish: never block the session loop on a full request queue; health is periodic.
        match self
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
        {
            Ok(()) => shared
                .metrics
                .uplink_published
                .get_or_create(&KindLabel {
                    kind: kind.to_owned(),
                })
                .inc(),
            Err(e) => {
                tracing::warn!(kind, error = %e, "cannot queue message for central");
                0
            }
        };
    }
}

fn status_message(
    gateway: &GatewayId,
    config: &GatewayConfig,
    state: LinkState,
    seq: u64,
) -> Vec<u8> {
    let msg = Message::Status(Status {
        state,
        version: crate::VERSION.to_owned(),
        site: config.site.id.clone(),
    });
    // Encoding a struct of strings cannot fail; an empty payload would only clear the retained
    // status, which central treats as unknown.
    Envelope::new(gateway.clone(), seq, msg)
        .encode()
        .unwrap_or_default()
}
