//! `Transport`: the MQTT session under the gateway's uplink, as a seam.
//!
//! The uplink decides what to send and what to believe; a transport only carries messages.
//! [`MqttTransport`] is rumqttc on a real broker; [`memory::MemoryTransport`] is an in-process
//! link a test holds the other end of, cuts and restores, so windowing, rewind,
//! acknowledgement and dispatch run in unit tests without a broker (and under tokio's paused
//! time, days of outage in seconds).

pub mod memory;

use std::future::Future;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS};

/// What the session brings in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// The broker accepted the connection.
    Connected { session_present: bool },
    /// A message on a subscribed topic.
    Message { topic: String, payload: Vec<u8> },
    /// Protocol traffic the caller need not see (pings, acks of its own publishes).
    Other,
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
}

/// rumqttc on a real broker.
pub struct MqttTransport {
    client: AsyncClient,
    eventloop: EventLoop,
}

impl MqttTransport {
    /// A session with `options`; it connects at the first poll.
    pub fn new(options: MqttOptions, queue: usize) -> Self {
        let (client, mut eventloop) = AsyncClient::new(options, queue);
        super::mqtt::send_at_once(&mut eventloop);
        Self { client, eventloop }
    }
}

impl Transport for MqttTransport {
    fn set_last_will(&mut self, topic: String, payload: Vec<u8>) {
        self.eventloop.mqtt_options.set_last_will(LastWill::new(
            topic,
            payload,
            QoS::AtLeastOnce,
            true,
        ));
    }

    fn subscribe(&mut self, filter: String) -> Result<(), TransportError> {
        self.client
            .try_subscribe(filter, QoS::AtLeastOnce)
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
        match self.eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => Ok(Incoming::Connected {
                session_present: ack.session_present,
            }),
            Ok(Event::Incoming(Packet::Publish(p))) => Ok(Incoming::Message {
                topic: p.topic,
                payload: p.payload.to_vec(),
            }),
            Ok(_) => Ok(Incoming::Other),
            Err(e) => Err(TransportError::Connection(e.to_string())),
        }
    }

    async fn disconnect(&mut self) {
        let _ = self.client.disconnect().await;
        let drain = async {
            while let Ok(ev) = self.eventloop.poll().await {
                if let Event::Outgoing(rumqttc::Outgoing::Disconnect) = ev {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    }

    fn renew_tls(&mut self, tls: rustls::ClientConfig) {
        self.eventloop
            .mqtt_options
            .set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(std::sync::Arc::new(tls)),
            ));
    }
}
