//! The `Uplink`: the gateway's MQTT session to central.
//!
//! - Announces the gateway with a retained `online` birth message and leaves a retained
//!   `offline` last will; reports health (with the outbox's state) periodically.
//! - Sends the outbox to central in batches, most urgent class first and in order within a
//!   class, with a bounded window of batches awaiting central's acknowledgement. Records are
//!   deleted only when central's ack names them — never on the broker's PUBACK.
//! - After a reconnect, when an ack is overdue, or when central asks (a replica that has just
//!   taken the gateway over), it rewinds and resends everything still pending (central
//!   deduplicates on `(gateway, seq)`).
//! - Reconnects with exponential backoff and jitter (rumqttc alone would retry at once).
//! - Carries nothing itself: a [`Transport`] does (rumqttc on a broker, or an in-memory link
//!   in tests), and a [`Clock`] tells it the time.
//! - Signs everything it sends with its certificate's key, and believes nothing from central
//!   that central did not sign for it, now (`downlink`); an ack deletes only events of a
//!   batch it actually sent (`batches`).
//! - Numbers its messages from a floor kept on disk (`uplink.seq`), so that a restart — even
//!   with the clock set back — never reuses a number central has seen: central refuses a
//!   status or health report numbered below the last as a replay.

mod backoff;
mod batches;
pub mod downlink;

use std::sync::Arc;
use std::time::Duration;

use firmware_config::config::GatewayConfig;
use firmware_config::ids::GatewayId;
use firmware_config::runtime::clock::{Clock, Instant};
use firmware_config::runtime::mqtt::client_options;
use firmware_config::runtime::transport::{Incoming, MqttTransport, Transport};
use firmware_config::topics::{Channel, Topic};
use firmware_config::wire::{self, Envelope, GatewayHealth, LinkState, Message, Status};
use tokio_util::sync::CancellationToken;

pub use backoff::Backoff;
pub use batches::{AckRefusal, BatchPlan, Window};
use downlink::{DownlinkGuard, Refusal};

use crate::metrics::KindLabel;
use crate::outbox::Outbox;

/// What the uplink needs of the rest of the gateway, and nothing more: what to report, where
/// central's messages go. `lib.rs` lets the gateway's shared state provide it; the uplink only
/// carries.
pub trait Gateway: Send + Sync + 'static {
    /// The config in force (a bundle may change the health interval).
    fn config(&self) -> Arc<GatewayConfig>;
    fn outbox(&self) -> &Outbox;
    fn metrics(&self) -> &crate::Metrics;
    /// Notified when a health report should go at once (the replica changed).
    fn report_now(&self) -> &tokio::sync::Notify;
    /// The uplink is up again (a content fetch waiting for it may go on).
    fn connected(&self);
    /// The health report, but for what the uplink knows itself (its certificate's expiry).
    fn health(&self) -> GatewayHealth;
    /// Hands a checked message from central to the part it is for; returns the reply to send
    /// at once, if any.
    fn deliver(
        self: &Arc<Self>,
        channel: Channel,
        message: Message,
    ) -> Result<Option<wire::CommandReply>, crate::dispatch::Misplaced>;
}

/// How long a batch may wait for central's ack before everything pending is resent.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(15);

/// How often the downlink guard's numbers are written (when they changed).
const PERSIST_EVERY: Duration = Duration::from_secs(5);

pub struct Uplink<T: Transport = MqttTransport> {
    transport: T,
    clock: Clock,
    gateway: GatewayId,
    backoff: Backoff,
    /// Envelope sequence numbers: from the clock or the floor on disk, whichever is higher,
    /// so that they never repeat (an ack names the batch it answers by this number, and
    /// central refuses a status or health numbered below the last).
    seq: u64,
    floor: crate::outbox::SeqFloor,
    window: Window,
    connected: bool,
    /// Signs every message with the key of the gateway's certificate (when it has one).
    signer: Option<firmware_config::runtime::signing::Signer>,
    /// Checks every message from central.
    guard: DownlinkGuard,
    /// When the guard's numbers were last written.
    persisted: Instant,
    /// The number of this session's last will.
    will_seq: u64,
    /// The client certificate's files and when they last changed: a renewed certificate is
    /// taken without a restart.
    certificate: Option<(
        firmware_config::config::TlsFiles,
        Option<std::time::SystemTime>,
    )>,
    certificate_checked: Instant,
}

/// How often the certificate files are looked at for a renewal.
const CERTIFICATE_EVERY: Duration = Duration::from_secs(60);

/// When a certificate's files last changed.
fn files_changed(files: &firmware_config::config::TlsFiles) -> Option<std::time::SystemTime> {
    [&files.cert_file, &files.key_file]
        .iter()
        .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .max()
}

/// Envelope numbers reserved per write of `uplink.seq`.
const SEQ_BLOCK: u64 = 1 << 20;

/// The MQTT session to the broker in `config`; it connects when the uplink first polls it.
pub fn mqtt_transport(
    config: &GatewayConfig,
) -> Result<MqttTransport, firmware_config::runtime::mqtt::MqttSetupError> {
    let u = &config.uplink;
    let mut opts = client_options(&u.broker, u.tls.as_ref(), &config.gateway.id, u.keep_alive)?;
    // A persistent session: the broker keeps our subscriptions and the acks and commands
    // queued for us while we are away.
    opts.set_clean_session(false);
    Ok(MqttTransport::new(opts, 128))
}

impl<T: Transport> Uplink<T> {
    /// Central's clock as its signed messages show it (for times judged inside them).
    pub fn central_clock(&self) -> downlink::CentralClock {
        self.guard.central_clock()
    }

    pub fn new(
        config: &GatewayConfig,
        gateway: GatewayId,
        clock: Clock,
        mut transport: T,
    ) -> Result<Self, crate::GatewayError> {
        let u = &config.uplink;
        let signer = match &u.tls {
            Some(files) => Some(firmware_config::runtime::signing::Signer::from_files(
                files,
            )?),
            None => None,
        };
        let central = firmware_config::bundle::VerifyingKey::load(&u.central_key_file)
            .map_err(crate::GatewayError::CentralKey)?;
        let guard = DownlinkGuard::open(
            &config.storage.dir,
            gateway.clone(),
            firmware_config::runtime::signing::DownlinkVerifier::new(central),
            u.downlink_max_age,
        );
        let mut floor =
            crate::outbox::SeqFloor::named(&config.storage.dir, "uplink.seq", SEQ_BLOCK);
        let seq = clock.unix_micros().max(floor.floor());
        floor
            .reserve(seq + 1)
            .map_err(|source| crate::GatewayError::Storage {
                path: config.storage.dir.join("uplink.seq").display().to_string(),
                source,
            })?;
        // The last will is made now and sent with every connect: its number is this
        // session's first, and the birth message names it.
        let will = status_message(
            &gateway,
            config,
            LinkState::Offline,
            (seq, clock.now_utc()),
            None,
            signer.as_ref(),
        );
        transport.set_last_will(Topic::gateway(&gateway, Channel::Status).path(), will);
        Ok(Self {
            transport,
            clock,
            gateway,
            backoff: Backoff::new(u.reconnect_min, u.reconnect_max),
            seq,
            floor,
            window: Window::new(BatchPlan::default()),
            connected: false,
            signer,
            guard,
            persisted: clock.instant(),
            will_seq: seq,
            certificate: u.tls.as_ref().map(|f| (f.clone(), files_changed(f))),
            certificate_checked: clock.instant(),
        })
    }

    /// Takes a renewed client certificate (its files changed): it signs from now on, and the
    /// next connection presents it. The connection open now goes on with the old one until
    /// it drops (the broker cuts it when the old one expires or is revoked).
    fn reload_certificate(&mut self) {
        self.certificate_checked = self.clock.instant();
        let Some((files, stamp)) = &self.certificate else {
            return;
        };
        let now = files_changed(files);
        if now == *stamp {
            return;
        }
        let loaded = firmware_config::runtime::signing::Signer::from_files(files)
            .map_err(|e| e.to_string())
            .and_then(|signer| {
                firmware_config::runtime::mqtt::client_tls(files)
                    .map(|tls| (signer, tls))
                    .map_err(|e| e.to_string())
            });
        match loaded {
            Ok((signer, tls)) => {
                tracing::info!(expires = ?signer.not_after(), "client certificate renewed; signing with it, presenting it at the next connection");
                self.signer = Some(signer);
                self.transport.renew_tls(tls);
                if let Some((_, s)) = &mut self.certificate {
                    *s = now;
                }
            }
            // Half-copied files, say: the old certificate stays until the new one reads.
            Err(e) => {
                tracing::warn!(error = %e, "client certificate files changed but cannot be read; keeping the one in use")
            }
        }
    }

    /// The next envelope number, reserved on disk first when a block runs out.
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        if let Err(e) = self.floor.reserve(self.seq + 1) {
            tracing::error!(error = %e, "cannot write uplink.seq; numbers may repeat after a restart");
        }
        self.seq
    }

    /// A message in an envelope with the next number, stamped by the clock.
    fn envelope(&mut self, message: Message) -> Envelope {
        let seq = self.next_seq();
        Envelope::new(self.gateway.clone(), seq, message).at(self.clock.now_utc())
    }

    /// Runs the session until `token` is cancelled; then says goodbye (retained `offline`).
    pub async fn run<G: Gateway>(
        mut self,
        shared: Arc<G>,
        mut replies: tokio::sync::mpsc::UnboundedReceiver<wire::CommandReply>,
        mut fetches: tokio::sync::mpsc::UnboundedReceiver<wire::ContentFetch>,
        token: CancellationToken,
    ) {
        let m = &shared.metrics();
        let mut every = shared.config().uplink.health_interval;
        let mut health = tokio::time::interval(every);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sessions = 0u64;
        let appended = shared.outbox().appended.clone();
        loop {
            tokio::select! {
                _ = token.cancelled() => break,
                _ = appended.notified(), if self.connected && self.window.has_room() => self.send_pending(&*shared),
                _ = shared.report_now().notified() => {
                    if self.connected {
                        self.publish_health(&*shared);
                    }
                }
                Some(fetch) = fetches.recv() => {
                    // While disconnected the request is dropped; the fetcher asks again after
                    // its timeout, from where its file ends.
                    if self.connected {
                        let env = self.envelope(Message::Fetch(fetch));
                        if let Ok(payload) = self.encode(Channel::Fetch, &env) {
                            self.publish(&*shared, Channel::Fetch, "fetch", payload, false);
                        }
                    }
                }
                Some(reply) = replies.recv() => {
                    // A late reply while disconnected is lost; central's wait times out and
                    // the gateway's events still tell what happened.
                    self.send_reply(&*shared, reply);
                }
                _ = tick.tick() => {
                    // A bundle may have changed the health interval.
                    let now_every = shared.config().uplink.health_interval;
                    if now_every != every {
                        every = now_every;
                        health = tokio::time::interval(every);
                        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    }
                    if self.clock.since(self.persisted) >= PERSIST_EVERY {
                        self.persist_guard();
                    }
                    if self.clock.since(self.certificate_checked) >= CERTIFICATE_EVERY {
                        self.reload_certificate();
                    }
                    if self.connected {
                        if self.window.overdue(self.clock.instant(), ACK_TIMEOUT) {
                            tracing::warn!(gateway = %self.gateway, "central's ack is overdue; resending what is pending");
                            m.uplink_rewinds.inc();
                            self.window.rewind();
                        }
                        self.send_pending(&*shared);
                    }
                }
                _ = health.tick() => {
                    if self.connected {
                        self.publish_health(&*shared);
                    }
                }
                event = self.transport.poll() => match event {
                    Ok(Incoming::Connected { session_present }) => {
                        sessions += 1;
                        if sessions > 1 {
                            m.uplink_reconnects.inc();
                        }
                        self.connected = true;
                        m.uplink_connected.set(1);
                        self.backoff.reset();
                        tracing::info!(gateway = %self.gateway, session_present, "uplink connected");
                        for ch in [Channel::Ack, Channel::Cmd, Channel::Data] {
                            let topic = Topic::gateway(&self.gateway, ch).path();
                            if let Err(e) = self.transport.subscribe(topic) {
                                tracing::error!(error = %e, "cannot subscribe");
                            }
                        }
                        self.publish_status(&*shared, LinkState::Online);
                        self.publish_health(&*shared);
                        shared.connected();
                        // Whatever was in flight before may be lost: send it all again.
                        self.window.rewind();
                        self.send_pending(&*shared);
                    }
                    Ok(Incoming::Message { topic, payload, .. }) => {
                        self.handle_downlink(&shared, &topic, &payload);
                        self.send_pending(&*shared);
                    }
                    Ok(Incoming::Other) => {}
                    Err(e) => {
                        m.uplink_errors.inc();
                        if self.connected {
                            tracing::warn!(gateway = %self.gateway, error = %e, "uplink lost");
                        }
                        self.connected = false;
                        m.uplink_connected.set(0);
                        // A broker refusing an expired or revoked certificate: a renewed one
                        // may be on disk already.
                        self.reload_certificate();
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
        self.goodbye(&*shared).await;
        self.persist_guard();
    }

    fn persist_guard(&mut self) {
        self.persisted = self.clock.instant();
        if let Err(e) = self.guard.persist() {
            tracing::warn!(error = %e, "cannot write downlink.seq");
        }
    }

    /// Fills the window with batches of pending events.
    fn send_pending<G: Gateway>(&mut self, shared: &G) {
        while self.window.has_room() {
            let events = self.window.next_batch(shared.outbox());
            if events.is_empty() {
                return;
            }
            let n = events.len() as u64;
            let env = self.envelope(Message::Events(wire::EventBatch { events }));
            let batch_id = env.seq;
            let payload = match self.encode(Channel::Events, &env) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode batch");
                    return;
                }
            };
            let Message::Events(batch) = env.message else {
                return;
            };
            let topic = Topic::gateway(&self.gateway, Channel::Events).path();
            match self.transport.publish(topic, false, payload) {
                Ok(()) => {
                    self.window
                        .sent(batch_id, &batch.events, self.clock.instant());
                    shared.metrics().uplink_events_sent.inc_by(n);
                    count(shared.metrics(), "events");
                }
                // The request queue is full: try again on the next tick.
                Err(_) => return,
            }
        }
    }

    fn handle_downlink<G: Gateway>(&mut self, shared: &Arc<G>, topic: &str, payload: &[u8]) {
        let m = &shared.metrics();
        let refuse = |reason: Refusal, why: &dyn std::fmt::Display| {
            tracing::warn!(%topic, reason = reason.as_str(), %why, "refused a message from central");
            m.refuse_downlink(reason.as_str());
        };
        let channel = match Topic::parse(topic) {
            Ok(Topic::Gateway { gateway, channel }) if gateway == self.gateway => channel,
            _ => return refuse(Refusal::WrongKind, &"not one of this gateway's topics"),
        };
        let env = match wire::decode(payload) {
            Ok(env) => env,
            Err(e) => return refuse(Refusal::WrongKind, &e),
        };
        if let Err(r) = self.guard.check(channel, &env, self.clock.now_utc()) {
            return refuse(r, &format_args!("{} seq {}", env.message.kind(), env.seq));
        }
        match (channel, env.message) {
            (Channel::Ack, Message::Ack(ack)) if ack.is_resend_request() => {
                // A central replica that has just taken this gateway over: what the last one
                // had in hand may be lost, so everything pending goes again now rather than
                // after the ack timeout.
                tracing::info!(gateway = %self.gateway, "central asks for everything pending again");
                m.uplink_rewinds.inc();
                self.window.rewind();
            }
            (Channel::Ack, Message::Ack(ack)) => match self.window.acked(ack.batch, &ack.ranges) {
                Ok(by_class) => {
                    for (class, ranges) in by_class {
                        let events: u64 = ranges
                            .iter()
                            .map(|(a, b)| b.saturating_sub(*a).saturating_add(1))
                            .sum();
                        m.uplink_events_acked.inc_by(events);
                        shared.outbox().acknowledge_class(class, ranges);
                    }
                }
                Err(e) => refuse(Refusal::BadAck, &format_args!("{e:?}")),
            },
            (channel, message) => match shared.deliver(channel, message) {
                Ok(Some(reply)) => self.send_reply(&**shared, reply),
                Ok(None) => {}
                Err(misplaced) => refuse(Refusal::WrongKind, &misplaced),
            },
        }
    }

    fn send_reply<G: Gateway>(&mut self, shared: &G, reply: wire::CommandReply) {
        let env = self.envelope(Message::Reply(reply));
        if let Ok(payload) = self.encode(Channel::Reply, &env) {
            self.publish(shared, Channel::Reply, "reply", payload, false);
        }
    }

    /// Publishes a retained `offline` (a clean disconnect does not fire the last will) and
    /// disconnects, within a bounded time.
    async fn goodbye<G: Gateway>(&mut self, shared: &G) {
        if !self.connected {
            return;
        }
        self.publish_status(shared, LinkState::Offline);
        self.transport.disconnect().await;
        self.connected = false;
        shared.metrics().uplink_connected.set(0);
        tracing::info!(gateway = %self.gateway, "uplink closed");
    }

    fn publish_status<G: Gateway>(&mut self, shared: &G, state: LinkState) {
        let will = (state == LinkState::Online).then_some(self.will_seq);
        let numbered = (self.next_seq(), self.clock.now_utc());
        let payload = status_message(
            &self.gateway,
            &shared.config(),
            state,
            numbered,
            will,
            self.signer.as_ref(),
        );
        self.publish(shared, Channel::Status, "status", payload, true);
    }

    fn publish_health<G: Gateway>(&mut self, shared: &G) {
        let mut health = shared.health();
        health.certificate_expires = self.signer.as_ref().and_then(|s| s.not_after());
        let msg = Message::Health(health);
        let env = self.envelope(msg);
        match self.encode(Channel::Health, &env) {
            Ok(payload) => self.publish(shared, Channel::Health, "health", payload, false),
            Err(e) => tracing::error!(error = %e, "cannot encode health"),
        }
    }

    /// Encodes a message for `channel`, signed when the gateway has a certificate.
    fn encode(&self, channel: Channel, env: &Envelope) -> Result<Vec<u8>, wire::WireError> {
        sign_and_encode(channel, env, self.signer.as_ref())
    }

    fn publish<G: Gateway>(
        &mut self,
        shared: &G,
        channel: Channel,
        kind: &str,
        payload: Vec<u8>,
        retain: bool,
    ) {
        let topic = Topic::gateway(&self.gateway, channel).path();
        // try_publish: never block the session loop on a full request queue; health is periodic.
        match self.transport.publish(topic, retain, payload) {
            Ok(()) => count(shared.metrics(), kind),
            Err(e) => tracing::warn!(kind, error = %e, "cannot queue message for central"),
        }
    }
}

fn count(metrics: &crate::Metrics, kind: &str) {
    metrics
        .uplink_published
        .get_or_create(&KindLabel {
            kind: kind.to_owned(),
        })
        .inc();
}

fn sign_and_encode(
    channel: Channel,
    env: &Envelope,
    signer: Option<&firmware_config::runtime::signing::Signer>,
) -> Result<Vec<u8>, wire::WireError> {
    env.encode_signed(|payload| signer.map(|s| s.sign(channel, env, payload)))
}

fn status_message(
    gateway: &GatewayId,
    config: &GatewayConfig,
    state: LinkState,
    (seq, time): (u64, time::OffsetDateTime),
    will_seq: Option<u64>,
    signer: Option<&firmware_config::runtime::signing::Signer>,
) -> Vec<u8> {
    let msg = Message::Status(Status {
        state,
        version: crate::VERSION.to_owned(),
        site: config.site.id.clone(),
        will_seq,
    });
    // Encoding a struct of strings cannot fail; an empty payload would only clear the retained
    // status, which central treats as unknown.
    let env = Envelope::new(gateway.clone(), seq, msg).at(time);
    sign_and_encode(Channel::Status, &env, signer).unwrap_or_default()
}
