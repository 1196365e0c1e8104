//! The `GatewayLink`: central's own MQTT session, on which it hears every gateway.
//!
//! It subscribes to every gateway's status, health and events, checks each message's topic and
//! envelope (a gateway may speak only for itself), stores event batches durably and only then
//! acknowledges them to their gateway. Everything else — the registry, boards, alerts, cases,
//! master data offers — is done by the [`observers`] with what the link hands them. One central
//! takes every gateway's batches; each of several replicas takes those of the gateways whose
//! lease it holds ([`crate::ownership`]). The broker's PUBACK to central is sent only after the
//! batch is stored (manual acks), so a central that dies mid-batch gets it again from the
//! broker.

use std::sync::Arc;
use std::time::Duration;

use firmware_config::config::TlsFiles;
use firmware_config::ids::GatewayId;
use firmware_config::runtime::clock::Instant;
use firmware_config::runtime::mqtt::{client_options, MqttSetupError};
use firmware_config::runtime::transport::{Incoming, MqttTransport, Receipt, Transport};
use firmware_config::topics::{all_gateways, Channel, Topic};
use firmware_config::wire::{self, Ack, Message};
use futures::FutureExt;
use tokio_util::sync::CancellationToken;

pub mod clocks;
pub mod commands;
pub mod downlink;
pub mod observers;
pub mod replay;

use crate::metrics::{KindLabel, Metrics};

/// What the link checks, stores and acknowledges with, and nothing more: built in `lib.rs`.
pub struct Ingest {
    pub metrics: Arc<Metrics>,
    /// Checks gateways' signatures (when central knows the CA of their certificates).
    pub verifier: Option<Arc<firmware_config::runtime::signing::Verifier>>,
    /// The last status and health accepted from each gateway, against replays.
    pub replay: Arc<replay::UplinkReplay>,
    /// Each gateway's clock offset, from its messages.
    pub clocks: Arc<clocks::GatewayClocks>,
    /// `[identity] message_max_age`: an older health report is stale.
    pub message_max_age: Duration,
    pub clock: firmware_config::runtime::clock::Clock,
    /// Where batches are stored: sled, or PostgreSQL shared with other replicas.
    pub events: crate::store::EventBackend,
    /// Seals acks and content pieces for their gateway.
    pub downlink: Arc<downlink::Downlink>,
    /// Waiting commands, completed by their replies.
    pub commands: Arc<commands::Commands>,
    /// Content files, for gateways' fetches.
    pub masterdata: Arc<crate::masterdata::MasterData>,
    /// With replicas: the gateways this one holds, whose batches and fetches it takes.
    pub owned: Option<Arc<crate::pg::leases::Leases>>,
}

/// Central's session on a [`Transport`]: rumqttc on the broker, or an in-memory link in tests.
pub struct GatewayLink<T: Transport = MqttTransport> {
    transport: T,
}

/// One message from a gateway, to be acknowledged to the broker once handled.
pub struct Delivery {
    pub topic: String,
    pub payload: bytes::Bytes,
    receipt: Receipt,
}

impl GatewayLink<MqttTransport> {
    /// A session to the broker at `url`; `login` is central's user and password on the
    /// embedded broker.
    pub fn new(
        url: &str,
        tls: Option<&TlsFiles>,
        central_id: &str,
        login: Option<(&str, &str)>,
    ) -> Result<Self, MqttSetupError> {
        let mut opts = client_options(url, tls, central_id, Duration::from_secs(30))?;
        if let Some((user, password)) = login {
            opts.set_credentials(user, password);
        }
        opts.set_clean_session(false);
        opts.set_manual_acks(true);
        Ok(Self::on(MqttTransport::new(opts, 1024)))
    }
}

impl<T: Transport> GatewayLink<T> {
    /// The link on `transport`, which must acknowledge manually (the link acks each message
    /// to the broker only once it is handled).
    pub fn on(transport: T) -> Self {
        Self { transport }
    }

    /// A handle that sends commands on this link, sealed by `downlink`.
    pub fn commands(&self, downlink: Arc<downlink::Downlink>) -> commands::Commands {
        commands::Commands::new(self.transport.publisher(), downlink)
    }

    /// Runs the session until `token` is cancelled, handing what it takes in to `observers`.
    pub async fn run(
        mut self,
        shared: Ingest,
        observers: observers::Observers,
        token: CancellationToken,
    ) {
        let shared = Arc::new(shared);
        let m = shared.metrics.clone();
        let depth = match &shared.events {
            // One flush at a time: the next group gathers while it runs.
            crate::store::EventBackend::Sled(_) => 1,
            // Each group waits on round trips and a commit, not on this machine: several in
            // flight keep both busy. The gateways' rows in the database keep each gateway's
            // batches in order.
            crate::store::EventBackend::Postgres(_) => PG_GROUPS_IN_FLIGHT,
        };
        let mut wait = Duration::from_millis(100);
        let mut replies = std::collections::VecDeque::new();
        let mut in_flight: std::collections::VecDeque<InFlight> = Default::default();
        // Which broker session the link is in: a group taken in an earlier one is not
        // PUBACKed in this one (the broker sends it again).
        let mut session = 0u64;
        // An event polled while gathering a group, handled next.
        let mut carried = None;
        let (observers, observing) = observers::spawn(observers);
        loop {
            self.send_replies(&mut replies, &m);
            let event = match carried.take() {
                Some(e) => e,
                None => tokio::select! {
                    biased;
                    _ = token.cancelled() => break,
                    stored = stored_front(&mut in_flight), if !in_flight.is_empty() => {
                        if let Some(group) = in_flight.pop_front() {
                            group.finish(stored, session, &mut replies, &observers, &m).await;
                        }
                        continue;
                    }
                    // Cancel-safe: the transport's events wait in a channel.
                    e = self.transport.poll(), if in_flight.len() < depth => e,
                },
            };
            match event {
                Ok(Incoming::Connected { .. }) => {
                    m.link_connected.set(1);
                    wait = Duration::from_millis(100);
                    tracing::info!("central connected to the broker");
                    self.subscribe(&shared, &mut replies);
                }
                Ok(Incoming::Message {
                    topic,
                    payload,
                    receipt,
                }) => {
                    // What the client already holds joins the group: one disk flush for all.
                    let mut group = vec![Delivery {
                        topic,
                        payload,
                        receipt,
                    }];
                    // Bounded: each poll may also write one queued reply.
                    let mut polls = 0;
                    while group.len() < GROUP_MAX && polls < 4 * GROUP_MAX {
                        polls += 1;
                        match self.transport.poll().now_or_never() {
                            Some(Ok(Incoming::Message {
                                topic,
                                payload,
                                receipt,
                            })) => group.push(Delivery {
                                topic,
                                payload,
                                receipt,
                            }),
                            // A reply of the last group going out: the group goes on.
                            Some(Ok(Incoming::Other)) => {}
                            Some(other) => {
                                carried = Some(other);
                                break;
                            }
                            None => break,
                        }
                    }
                    in_flight.push_back(InFlight::start(&shared, group, session));
                }
                Ok(Incoming::Other) => {}
                Err(e) => {
                    // The new session gets everything unacknowledged again from the broker.
                    replies.clear();
                    session += 1;
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
        // What is being stored is acknowledged and observed before the link is done.
        while let Some(mut group) = in_flight.pop_front() {
            let stored = group.stored().await;
            group
                .finish(stored, session, &mut replies, &observers, &m)
                .await;
        }
        self.send_replies(&mut replies, &m);
        self.transport.disconnect().await;
        m.link_connected.set(0);
        drop(observers);
        let _ = observing.await;
    }
}

/// What the link owes the broker for one incoming message, in order.
enum Reply {
    /// An acknowledgement (or a content piece) to publish to a gateway.
    Ack(String, Vec<u8>),
    /// The PUBACK of a message that has been handled.
    PubAck(Receipt),
}

impl<T: Transport> GatewayLink<T> {
    /// Subscribes a new session: to every gateway, or (a replica) to the gateways it holds,
    /// which are asked to send everything pending again (the last session's may be lost).
    fn subscribe(&mut self, shared: &Ingest, replies: &mut std::collections::VecDeque<Reply>) {
        let filters: Vec<String> = match &shared.owned {
            None => [
                Channel::Status,
                Channel::Health,
                Channel::Events,
                Channel::Reply,
                Channel::Fetch,
            ]
            .into_iter()
            .map(all_gateways)
            .collect(),
            Some(leases) => {
                let owned: Vec<GatewayId> = leases
                    .held_set()
                    .iter()
                    .filter_map(|g| GatewayId::new(g).ok())
                    .collect();
                for gw in &owned {
                    if let Some((topic, payload)) =
                        crate::ownership::resend_request(&shared.downlink, gw)
                    {
                        replies.push_back(Reply::Ack(topic, payload));
                    }
                }
                crate::ownership::shared_filters()
                    .into_iter()
                    .chain(owned.iter().flat_map(crate::ownership::owned_filters))
                    .collect()
            }
        };
        // Before the resend requests: subscriptions leave first.
        for chunk in filters.chunks(128) {
            if let Err(e) = self.transport.subscribe_many(chunk.to_vec()) {
                tracing::error!(error = %e, "cannot subscribe");
            }
        }
    }

    /// A handle that publishes and subscribes on this session from other tasks.
    pub fn publisher(&self) -> Arc<dyn firmware_config::runtime::transport::Publisher> {
        self.transport.publisher()
    }

    /// Hands queued replies to the client while its request queue has room. The queue fills
    /// when a broker sends more at once than it holds (Mosquitto sends up to its
    /// `max_inflight_messages`), because rumqttc drains requests only between reads: dropping
    /// the overflow would leave gateways waiting out their ack timeout.
    fn send_replies(
        &mut self,
        replies: &mut std::collections::VecDeque<Reply>,
        m: &crate::metrics::Metrics,
    ) {
        while let Some(r) = replies.front() {
            let sent = match r {
                Reply::Ack(topic, payload) => self
                    .transport
                    .publish(topic.clone(), false, payload.clone())
                    .map(|()| m.acks_sent.inc())
                    .is_ok(),
                Reply::PubAck(receipt) => self.transport.ack(*receipt).is_ok(),
            };
            if !sent {
                return;
            }
            replies.pop_front();
        }
    }
}

/// Most messages handled as one group (one flush for their event batches).
const GROUP_MAX: usize = 256;

/// An event batch waiting for the group's store.
struct Batch {
    gateway: GatewayId,
    seq: u64,
    events: Vec<wire::Event>,
    raw: Vec<u8>,
}

/// What to publish in answer to a message: topic and payload.
type Answer = Option<(String, Vec<u8>)>;

/// Groups stored at once on PostgreSQL: each is one transaction on its own connection.
const PG_GROUPS_IN_FLIGHT: usize = 4;

/// What storing a group's batches gave: each batch's ack and what it added.
type StoredGroup = (Vec<Answer>, Vec<Option<observers::Fresh>>);

/// A group checked in arrival order, its batches being stored; finished (acknowledged and
/// observed) in arrival order too.
struct InFlight {
    receipts: Vec<Receipt>,
    answers: Vec<Answer>,
    observed: Vec<Option<observers::Observed>>,
    /// The group's index of each batch being stored.
    batches: Vec<usize>,
    storing: Option<tokio::task::JoinHandle<StoredGroup>>,
    session: u64,
}

impl InFlight {
    /// Checks each message of `group` in order and starts storing its event batches.
    fn start(shared: &Arc<Ingest>, group: Vec<Delivery>, session: u64) -> Self {
        let mut receipts = Vec::with_capacity(group.len());
        let mut answers: Vec<Answer> = Vec::with_capacity(group.len());
        let mut observed = Vec::with_capacity(group.len());
        let mut index = Vec::new();
        let mut batches = Vec::new();
        for (i, p) in group.iter().enumerate() {
            receipts.push(p.receipt);
            let (answer, seen) = match handle(shared, p) {
                Handled::Answer(a) => (a, None),
                Handled::Observe(o) => (None, Some(o)),
                Handled::Store(b) => {
                    index.push(i);
                    batches.push(b);
                    (None, None)
                }
            };
            answers.push(answer);
            observed.push(seen);
        }
        let storing =
            (!batches.is_empty()).then(|| tokio::spawn(store_and_ack(shared.clone(), batches)));
        Self {
            receipts,
            answers,
            observed,
            batches: index,
            storing,
            session,
        }
    }

    /// Waits for the group's batches to be stored (cancel-safe).
    async fn stored(&mut self) -> StoredGroup {
        let n = self.batches.len();
        match &mut self.storing {
            None => (Vec::new(), Vec::new()),
            Some(task) => task.await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "store task failed");
                (vec![None; n], (0..n).map(|_| None).collect())
            }),
        }
    }

    /// Queues the group's answers (an event batch's ack once it is stored) and, in the
    /// session it came in, its PUBACKs in order; hands what it said to the observers.
    async fn finish(
        self,
        (acks, fresh): StoredGroup,
        session: u64,
        replies: &mut std::collections::VecDeque<Reply>,
        observers: &tokio::sync::mpsc::Sender<Vec<observers::Observed>>,
        m: &Metrics,
    ) {
        let Self {
            receipts,
            mut answers,
            mut observed,
            batches,
            ..
        } = self;
        for ((i, ack), fresh) in batches.into_iter().zip(acks).zip(fresh) {
            answers[i] = ack;
            observed[i] = fresh.map(observers::Observed::Stored);
        }
        let observed: Vec<observers::Observed> = observed.into_iter().flatten().collect();
        if !observed.is_empty() {
            if observers.send(observed).await.is_err() {
                tracing::error!("the observers stopped; registry, alerts and boards miss a group");
            }
            let waiting = observers.max_capacity() - observers.capacity();
            m.observer_backlog.set(waiting as i64);
        }
        for (receipt, answer) in receipts.into_iter().zip(answers) {
            if let Some((topic, payload)) = answer {
                replies.push_back(Reply::Ack(topic, payload));
            }
            // PUBACK to the broker only now, in order: the batch is stored (or was refused).
            if self.session == session {
                replies.push_back(Reply::PubAck(receipt));
            }
        }
    }
}

/// The first group in flight, once stored.
async fn stored_front(in_flight: &mut std::collections::VecDeque<InFlight>) -> StoredGroup {
    match in_flight.front_mut() {
        Some(group) => group.stored().await,
        None => std::future::pending().await,
    }
}

enum Handled {
    Answer(Answer),
    /// Checked, for the observers.
    Observe(observers::Observed),
    /// An event batch, to store before it is acknowledged.
    Store(Batch),
}

/// Checks one message and applies it; an event batch comes back to be stored.
fn handle(shared: &Ingest, p: &Delivery) -> Handled {
    const NONE: Handled = Handled::Answer(None);
    let m = &shared.metrics;
    let Ok(Topic::Gateway { gateway, channel }) = Topic::parse(&p.topic) else {
        m.reject("bad_topic");
        return NONE;
    };
    if p.payload.is_empty() {
        // A cleared retained message: nothing to learn.
        return NONE;
    }
    let env = match wire::decode(&p.payload) {
        Ok(env) => env,
        Err(e) => {
            tracing::warn!(%gateway, channel = channel.as_str(), error = %e, "rejected message");
            m.reject("bad_envelope");
            return NONE;
        }
    };
    if env.gateway != gateway {
        tracing::warn!(topic = %p.topic, claimed = %env.gateway, "gateway spoke for another gateway");
        m.reject("gateway_mismatch");
        return NONE;
    }
    if let Some(v) = &shared.verifier {
        if let Err(e) = v.verify(channel, &env) {
            tracing::warn!(%gateway, channel = channel.as_str(), error = %e, "refused a message without a valid signature");
            m.reject(match e {
                firmware_config::runtime::signing::SigningError::Revoked(_) => "revoked",
                firmware_config::runtime::signing::SigningError::Expired(_) => "expired",
                _ => "bad_signature",
            });
            return NONE;
        }
    }
    // Every signed message says what the gateway's clock read (but a last will, made when
    // its session began).
    let now = shared.clock.now_utc();
    if !matches!(&env.message, Message::Status(s) if s.state == wire::LinkState::Offline) {
        shared.clocks.observe(&gateway, env.time, now);
    }
    // A status or health report older than what central already heard: a replay. A health
    // report's age is judged on the gateway's own clock: one hours off is still heard.
    let fresh = match &env.message {
        Message::Status(s) => shared.replay.status(&gateway, env.seq, s),
        Message::Health(_) => shared.replay.health(
            &gateway,
            env.seq,
            env.time,
            shared.clocks.gateway_now(&gateway, now),
            shared.message_max_age,
        ),
        _ => Ok(()),
    };
    if let Err(reason) = fresh {
        tracing::warn!(%gateway, channel = channel.as_str(), seq = env.seq, reason, "refused a replayed or stale message");
        m.reject(reason);
        return NONE;
    }
    m.messages_received
        .get_or_create(&KindLabel {
            kind: env.message.kind().to_owned(),
        })
        .inc();
    let at = Instant::now();
    match (channel, env.message) {
        (Channel::Status, Message::Status(status)) => {
            Handled::Observe(observers::Observed::Status {
                gateway,
                status,
                at,
            })
        }
        (Channel::Health, Message::Health(health)) => {
            Handled::Observe(observers::Observed::Health {
                gateway,
                health: Box::new(health),
                sent: env.time,
                at,
            })
        }
        (Channel::Events, Message::Events(batch)) => Handled::Store(Batch {
            gateway,
            seq: env.seq,
            events: batch.events,
            raw: env.raw_payload,
        }),
        (Channel::Reply, Message::Reply(reply)) => {
            shared.commands.complete(&gateway, reply);
            NONE
        }
        (Channel::Fetch, Message::Fetch(fetch)) => {
            // Reads one piece from the state store: small and quick, no need to leave the loop.
            let chunk = crate::replication::serve_fetch(
                &shared.masterdata,
                &shared.metrics,
                &gateway,
                &fetch,
            );
            let topic = Topic::gateway(&gateway, Channel::Data).path();
            match shared
                .downlink
                .seal(&gateway, Channel::Data, Message::Chunk(chunk))
            {
                Ok(payload) => Handled::Answer(Some((topic, payload))),
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode a content piece");
                    NONE
                }
            }
        }
        (ch, msg) => {
            tracing::warn!(%gateway, channel = ch.as_str(), kind = msg.kind(), "message of the wrong kind for its topic");
            m.reject("kind_mismatch");
            NONE
        }
    }
}

/// Stores a group's batches with one flush; returns each batch's ack (none for a batch that
/// could not be stored: its gateway sends it again) and what it added, for the observers.
async fn store_and_ack(shared: Arc<Ingest>, batches: Vec<Batch>) -> StoredGroup {
    let n = batches.len();
    let downlink = shared.downlink.clone();
    let stored = match &shared.events {
        // The batches go to the blocking thread and come back with their results and their
        // acks, signed there too: signing a group's acks one by one would hold the link's task.
        crate::store::EventBackend::Sled(store) => {
            let store = store.clone();
            tokio::task::spawn_blocking(move || {
                let results = store.store_batches(&inputs(&batches));
                let acks = sealed_acks(&downlink, &batches, &results);
                (batches, results, acks)
            })
            .await
        }
        crate::store::EventBackend::Postgres(pg) => {
            let results = pg.store_batches(&inputs(&batches)).await;
            tokio::task::spawn_blocking(move || {
                let acks = sealed_acks(&downlink, &batches, &results);
                (batches, results, acks)
            })
            .await
        }
    };
    let (batches, results, acks) = match stored {
        Ok(done) => done,
        Err(e) => {
            tracing::error!(error = %e, "store task failed");
            return (vec![None; n], (0..n).map(|_| None).collect());
        }
    };
    let fresh = batches
        .into_iter()
        .zip(results)
        .map(|(b, r)| after_store(&shared, b, r))
        .collect();
    (acks, fresh)
}

/// A group's batches as the store takes them.
fn inputs(batches: &[Batch]) -> Vec<crate::store::BatchIn<'_>> {
    batches
        .iter()
        .map(|b| (&b.gateway, b.events.as_slice(), Some(b.raw.as_slice())))
        .collect()
}

/// The ack of each stored batch (none for one that failed).
fn sealed_acks(
    downlink: &downlink::Downlink,
    batches: &[Batch],
    results: &[Result<crate::store::Stored, crate::store::StoreError>],
) -> Vec<Answer> {
    batches
        .iter()
        .zip(results)
        .map(|(b, r)| sealed_ack(downlink, b, r.as_ref().ok()?))
        .collect()
}

/// The ack of a stored batch, sealed for its gateway: its topic and payload.
fn sealed_ack(downlink: &downlink::Downlink, b: &Batch, stored: &crate::store::Stored) -> Answer {
    let ack = Message::Ack(Ack {
        watermark: stored.high,
        ranges: stored.ranges.clone(),
        batch: Some(b.seq),
    });
    let topic = Topic::gateway(&b.gateway, Channel::Ack).path();
    match downlink.seal(&b.gateway, Channel::Ack, ack) {
        Ok(payload) => Some((topic, payload)),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode an ack");
            None
        }
    }
}

/// What a stored batch added, for the observers.
fn after_store(
    shared: &Ingest,
    b: Batch,
    stored: Result<crate::store::Stored, crate::store::StoreError>,
) -> Option<observers::Fresh> {
    let m = &shared.metrics;
    let Batch {
        gateway, events, ..
    } = b;
    let stored = match stored {
        Ok(s) => s,
        Err(crate::store::StoreError::DiskFull) => {
            // Not acknowledged: the gateway keeps it and resends (the disk watch has said so).
            m.reject("disk_full");
            return None;
        }
        Err(e) => {
            // Not acknowledged: the gateway resends after its ack timeout.
            tracing::error!(%gateway, error = %e, "cannot store a batch");
            m.reject("store_failed");
            return None;
        }
    };
    // The gateway's own kinds are believed only from the gateway itself: one a source claims
    // is stored (the gateway accepted it) but makes no case, board change or alert. A current
    // gateway never forwards one; this holds against one that does.
    let believed =
        |e: &wire::Event| e.from_gateway() || !firmware_config::kinds::is_gateway_kind(&e.kind);
    let disbelieved = events.iter().filter(|e| !believed(e)).count();
    if disbelieved > 0 {
        tracing::warn!(%gateway, events = disbelieved, "a source's events claim the gateway's own kinds; stored, not acted on");
        m.messages_rejected
            .get_or_create(&crate::metrics::ReasonLabel {
                reason: "source_device_kind".to_owned(),
            })
            .inc_by(disbelieved as u64);
    }
    m.events_stored.inc_by(stored.new);
    // What the observers act on: new events, never telemetry.
    let all_fresh = stored.new as usize == events.len();
    let fresh: std::collections::HashSet<u64> = if all_fresh {
        Default::default()
    } else {
        stored.fresh.iter().copied().collect()
    };
    // Every submission of the batch, new or not: a case is made only once, and one the last
    // attempt did not make (central stopped between store and case) is made now.
    let submissions: Vec<wire::Event> = events
        .iter()
        .filter(|e| e.kind == "submission.created" && e.from_gateway())
        .cloned()
        .collect();
    let fresh_events: Vec<wire::Event> = events
        .into_iter()
        .filter(|e| e.class != wire::EventClass::Telemetry && e.kind != "submission.created")
        .filter(believed)
        .filter(|e| all_fresh || fresh.contains(&e.seq))
        .collect();
    let observe = (stored.new > 0 || !submissions.is_empty()).then(|| observers::Fresh {
        gateway: gateway.clone(),
        events: fresh_events,
        submissions,
        new: stored.new,
    });
    m.events_duplicate.inc_by(stored.duplicates);
    m.batches.inc();
    observe
}
