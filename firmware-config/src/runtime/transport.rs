//! `Transport`: the MQTT session under the gateway's uplink and central's link, as a seam.
//!
//! The uplink and the link decide what to send and what to believe; a transport only carries
//! messages. [`MqttTransport`] is rumqttc on a real broker; [`memory::MemoryTransport`] is an
//! in-process link a test holds the other end of, cuts and restores, so windowing, rewind,
//! acknowledgement and dispatch run in unit tests without a broker (and under tokio's paused
//! time, days of outage in seconds).

pub mod memory;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS};

/// What the session brings in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// The broker accepted the connection.
    Connected { session_present: bool },
    /// A message on a subscribed topic; with manual acknowledgement, [`Transport::ack`] its
    /// receipt once it is handled.
    Message {
        topic: String,
        /// As the client read it, not copied.
        payload: bytes::Bytes,
        receipt: Receipt,
    },
    /// Protocol traffic the caller need not see (pings, acks of its own publishes).
    Other,
}

/// What acknowledges one incoming message to the broker (its packet id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    qos: QoS,
    pkid: u16,
}

/// A future a [`Publisher`] returns.
pub type Sending<'a> = Pin<Box<dyn Future<Output = Result<(), TransportError>> + Send + 'a>>;

/// Publishes on a transport's session from any task (central's commands, say).
pub trait Publisher: Send + Sync + 'static {
    /// Queues a message; never waits.
    fn try_publish(
        &self,
        topic: String,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), TransportError>;
    /// Queues a message, waiting while the queue is full.
    fn publish(&self, topic: String, retain: bool, payload: Vec<u8>) -> Sending<'_>;
    /// Subscribes the session to several filters in one request, waiting while the queue is
    /// full. Requests go out in the order they were made: a message published after this call
    /// leaves after the subscription.
    fn subscribe_many(&self, filters: Vec<String>) -> Sending<'_>;
    /// Ends a subscription of the session, waiting while the queue is full.
    fn unsubscribe(&self, filter: String) -> Sending<'_>;
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The connection failed or was lost; the next poll connects again.
    #[error("connection: {0}")]
    Connection(String),
    /// The outgoing queue is full; try again later.
    #[error("the outgoing queue is full")]
    Full,
}

/// An MQTT session to one broker, reconnecting on the next poll after a failure. Every
/// message is sent at QoS 1.
pub trait Transport: Send + 'static {
    /// The retained message the broker publishes when the session ends without a goodbye;
    /// taken at the next connect.
    fn set_last_will(&mut self, topic: String, payload: Vec<u8>);
    /// Subscribes for this session.
    fn subscribe(&mut self, filter: String) -> Result<(), TransportError>;
    /// Subscribes to several filters in one request (one queue slot however many).
    fn subscribe_many(&mut self, filters: Vec<String>) -> Result<(), TransportError> {
        filters.into_iter().try_for_each(|f| self.subscribe(f))
    }
    /// Ends a subscription of this session.
    fn unsubscribe(&mut self, filter: String) -> Result<(), TransportError>;
    /// Queues a message; never waits.
    fn publish(
        &mut self,
        topic: String,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), TransportError>;
    /// Drives the session until something comes in or it fails.
    fn poll(&mut self) -> impl Future<Output = Result<Incoming, TransportError>> + Send;
    /// Disconnects cleanly (no last will), within a bounded time.
    fn disconnect(&mut self) -> impl Future<Output = ()> + Send;
    /// Presents this TLS configuration (a renewed client certificate) from the next connect.
    fn renew_tls(&mut self, tls: rustls::ClientConfig);
    /// Acknowledges a message to the broker (sessions with manual acknowledgement).
    fn ack(&mut self, receipt: Receipt) -> Result<(), TransportError>;
    /// A handle that publishes on this session from other tasks.
    fn publisher(&self) -> Arc<dyn Publisher>;
}

/// rumqttc on a real broker.
///
/// rumqttc's `EventLoop::poll` is not cancel-safe: dropped while it writes a request it has
/// taken (a PUBACK, an ack), that request is lost. The event loop therefore runs in a task of
/// its own that always polls to the end, and [`Transport::poll`] reads what it produced from a
/// channel, which is safe to drop in a `select!` and to try with `now_or_never`.
pub struct MqttTransport {
    client: AsyncClient,
    pump: Pump,
}

/// The event loop: held until the first poll (options may still change), then run by its task.
enum Pump {
    Idle(Box<EventLoop>),
    Running {
        events: tokio::sync::mpsc::Receiver<Result<Event, rumqttc::ConnectionError>>,
        /// Options for the next connect, taken by the task before each poll.
        changes: Arc<std::sync::Mutex<OptionChanges>>,
        /// Lets the task connect again after a failure: the caller decides when (backoff).
        resume: Arc<tokio::sync::Notify>,
        /// The last event read was a failure: the next poll resumes the task.
        failed: bool,
    },
    /// Between states, only while switching.
    Gone,
}

/// What changed in the options since the task took them.
#[derive(Default)]
struct OptionChanges {
    last_will: Option<LastWill>,
    tls: Option<rustls::ClientConfig>,
}

impl OptionChanges {
    fn apply(&mut self, options: &mut MqttOptions) {
        if let Some(will) = self.last_will.take() {
            options.set_last_will(will);
        }
        if let Some(tls) = self.tls.take() {
            options.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(Arc::new(tls)),
            ));
        }
    }
}

/// Events the task may run ahead of the caller: enough to read a burst in one go.
const PUMP_AHEAD: usize = 256;

impl MqttTransport {
    /// A session with `options`; it connects at the first poll.
    pub fn new(options: MqttOptions, queue: usize) -> Self {
        let (client, mut eventloop) = AsyncClient::new(options, queue);
        super::mqtt::send_at_once(&mut eventloop);
        Self {
            client,
            pump: Pump::Idle(Box::new(eventloop)),
        }
    }

    /// Changes options: at once before the first poll, else for the task's next connect.
    fn change(&mut self, f: impl FnOnce(&mut OptionChanges)) {
        match &mut self.pump {
            Pump::Idle(eventloop) => {
                let mut c = OptionChanges::default();
                f(&mut c);
                c.apply(&mut eventloop.mqtt_options);
            }
            Pump::Running { changes, .. } => f(&mut changes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)),
            Pump::Gone => {}
        }
    }

    /// The next event of the running task, starting it on the first call.
    async fn next_event(&mut self) -> Result<Event, rumqttc::ConnectionError> {
        if let Pump::Idle(_) = self.pump {
            let Pump::Idle(eventloop) = std::mem::replace(&mut self.pump, Pump::Gone) else {
                unreachable!("matched above")
            };
            self.pump = start_pump(*eventloop);
        }
        let Pump::Running {
            events,
            resume,
            failed,
            ..
        } = &mut self.pump
        else {
            return Err(rumqttc::ConnectionError::RequestsDone);
        };
        if std::mem::take(failed) {
            resume.notify_one();
        }
        // Cancel-safe: an event not yet taken stays in the channel.
        let event = events
            .recv()
            .await
            .unwrap_or(Err(rumqttc::ConnectionError::RequestsDone));
        *failed = event.is_err();
        event
    }
}

/// Starts the task that drives `eventloop`; it ends when the transport is dropped.
fn start_pump(mut eventloop: EventLoop) -> Pump {
    let (tx, events) = tokio::sync::mpsc::channel(PUMP_AHEAD);
    let changes = Arc::new(std::sync::Mutex::new(OptionChanges::default()));
    let resume = Arc::new(tokio::sync::Notify::new());
    let (task_changes, task_resume) = (changes.clone(), resume.clone());
    tokio::spawn(async move {
        loop {
            task_changes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .apply(&mut eventloop.mqtt_options);
            let event = tokio::select! {
                _ = tx.closed() => return,
                event = eventloop.poll() => event,
            };
            let failed = event.is_err();
            if tx.send(event).await.is_err() {
                return;
            }
            if failed {
                // rumqttc would connect again at once; the caller backs off first.
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = task_resume.notified() => {}
                }
            }
        }
    });
    Pump::Running {
        events,
        changes,
        resume,
        failed: false,
    }
}

impl Transport for MqttTransport {
    fn set_last_will(&mut self, topic: String, payload: Vec<u8>) {
        let will = LastWill::new(topic, payload, QoS::AtLeastOnce, true);
        self.change(|c| c.last_will = Some(will));
    }

    fn subscribe(&mut self, filter: String) -> Result<(), TransportError> {
        self.client
            .try_subscribe(filter, QoS::AtLeastOnce)
            .map_err(|_| TransportError::Full)
    }

    fn subscribe_many(&mut self, filters: Vec<String>) -> Result<(), TransportError> {
        if filters.is_empty() {
            return Ok(());
        }
        let filters = filters
            .into_iter()
            .map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtLeastOnce));
        self.client
            .try_subscribe_many(filters)
            .map_err(|_| TransportError::Full)
    }

    fn unsubscribe(&mut self, filter: String) -> Result<(), TransportError> {
        self.client
            .try_unsubscribe(filter)
            .map_err(|_| TransportError::Full)
    }

    fn publish(
        &mut self,
        topic: String,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), TransportError> {
        self.client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
            .map_err(|_| TransportError::Full)
    }

    async fn poll(&mut self) -> Result<Incoming, TransportError> {
        match self.next_event().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => Ok(Incoming::Connected {
                session_present: ack.session_present,
            }),
            Ok(Event::Incoming(Packet::Publish(p))) => Ok(Incoming::Message {
                receipt: Receipt {
                    qos: p.qos,
                    pkid: p.pkid,
                },
                topic: p.topic,
                payload: p.payload,
            }),
            Ok(_) => Ok(Incoming::Other),
            Err(e) => Err(TransportError::Connection(e.to_string())),
        }
    }

    async fn disconnect(&mut self) {
        // Bounded as a whole: a full request queue would hold even the DISCONNECT back.
        let goodbye = async {
            let _ = self.client.disconnect().await;
            // Until the broker closes the connection, not merely until the DISCONNECT is
            // written (`Outgoing::Disconnect`): written is only in this host's socket buffer,
            // with the acknowledgements and publishes queued before it. MQTT 3.1.1 does not
            // acknowledge a DISCONNECT, but the broker reads a connection in order and closes
            // it once it has read the DISCONNECT, so the close proves it took everything
            // before. Returning earlier lets the next session with this client id overtake
            // the old connection: Mosquitto then takes the session over ("already connected,
            // closing old connection") without reading what is left on the old one, and
            // sends again every message whose PUBACK it did not read.
            while self.next_event().await.is_ok() {}
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), goodbye).await;
    }

    fn renew_tls(&mut self, tls: rustls::ClientConfig) {
        self.change(|c| c.tls = Some(tls));
    }

    fn ack(&mut self, receipt: Receipt) -> Result<(), TransportError> {
        // rumqttc acknowledges by packet id and QoS; topic and payload are not read.
        let mut p = rumqttc::Publish::new("", receipt.qos, Vec::new());
        p.pkid = receipt.pkid;
        self.client.try_ack(&p).map_err(|_| TransportError::Full)
    }

    fn publisher(&self) -> Arc<dyn Publisher> {
        Arc::new(self.client.clone())
    }
}

impl Publisher for AsyncClient {
    fn try_publish(
        &self,
        topic: String,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), TransportError> {
        AsyncClient::try_publish(self, topic, QoS::AtLeastOnce, retain, payload)
            .map_err(|_| TransportError::Full)
    }

    fn publish(&self, topic: String, retain: bool, payload: Vec<u8>) -> Sending<'_> {
        Box::pin(async move {
            AsyncClient::publish(self, topic, QoS::AtLeastOnce, retain, payload)
                .await
                .map_err(|e| TransportError::Connection(e.to_string()))
        })
    }

    fn subscribe_many(&self, filters: Vec<String>) -> Sending<'_> {
        Box::pin(async move {
            if filters.is_empty() {
                return Ok(());
            }
            let filters = filters
                .into_iter()
                .map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtLeastOnce));
            AsyncClient::subscribe_many(self, filters)
                .await
                .map_err(|e| TransportError::Connection(e.to_string()))
        })
    }

    fn unsubscribe(&self, filter: String) -> Sending<'_> {
        Box::pin(async move {
            AsyncClient::unsubscribe(self, filter)
                .await
                .map_err(|e| TransportError::Connection(e.to_string()))
        })
    }
}
