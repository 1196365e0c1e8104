//! An in-process MQTT link: the client end is a [`Transport`], the other end a
//! [`MemoryBroker`] a test reads, writes, cuts and restores.
//!
//! It behaves as a broker with a persistent session would where the uplink can tell:
//! messages for the client wait while it is away; a cut connection publishes the last will;
//! what the client publishes while cut is lost (as rumqttc's in-memory queue is on a crash).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use super::{Incoming, Publisher, Receipt, Sending, Transport, TransportError};

/// One message the client published (or its last will, fired by a cut).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub topic: String,
    pub retain: bool,
    pub payload: Vec<u8>,
    /// The broker sent it as the client's last will.
    pub will: bool,
}

#[derive(Debug, Default)]
struct State {
    /// The link works: connects succeed and messages pass.
    up: bool,
    /// The client has a session open.
    connected: bool,
    connects: u64,
    to_broker: VecDeque<Published>,
    to_client: VecDeque<(String, Vec<u8>)>,
    will: Option<(String, Vec<u8>)>,
    subscriptions: Vec<String>,
    /// Messages the client published while it had no session.
    lost: u64,
    /// Messages delivered to the client, and those it acknowledged.
    delivered: u16,
    acked: u64,
}

#[derive(Debug, Default)]
struct Link {
    state: Mutex<State>,
    /// Wakes the client's poll.
    client: Notify,
    /// Wakes a test waiting for what the client published.
    broker: Notify,
}

impl Link {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the client publishes reaches the broker while it has a session; else it is lost.
    fn publish(&self, topic: String, retain: bool, payload: Vec<u8>) {
        let mut s = self.state();
        if s.connected && s.up {
            s.to_broker.push_back(Published {
                topic,
                retain,
                payload,
                will: false,
            });
            drop(s);
            self.broker.notify_one();
        } else {
            s.lost += 1;
        }
    }
}

impl Publisher for Link {
    fn try_publish(
        &self,
        topic: String,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), TransportError> {
        Link::publish(self, topic, retain, payload);
        Ok(())
    }

    fn publish(&self, topic: String, retain: bool, payload: Vec<u8>) -> Sending<'_> {
        Link::publish(self, topic, retain, payload);
        Box::pin(async { Ok(()) })
    }

    fn subscribe_many(&self, filters: Vec<String>) -> Sending<'_> {
        let mut s = self.state();
        for f in filters {
            if !s.subscriptions.contains(&f) {
                s.subscriptions.push(f);
            }
        }
        Box::pin(async { Ok(()) })
    }

    fn unsubscribe(&self, filter: String) -> Sending<'_> {
        self.state().subscriptions.retain(|f| *f != filter);
        Box::pin(async { Ok(()) })
    }
}

/// A link that is up; the client connects at its first poll.
pub fn link() -> (MemoryTransport, MemoryBroker) {
    let link = Arc::new(Link::default());
    link.state().up = true;
    (
        MemoryTransport { link: link.clone() },
        MemoryBroker { link },
    )
}

/// The client's end.
#[derive(Debug)]
pub struct MemoryTransport {
    link: Arc<Link>,
}

/// The broker's end, held by a test.
#[derive(Debug, Clone)]
pub struct MemoryBroker {
    link: Arc<Link>,
}

impl Transport for MemoryTransport {
    fn set_last_will(&mut self, topic: String, payload: Vec<u8>) {
        self.link.state().will = Some((topic, payload));
    }

    fn subscribe(&mut self, filter: String) -> Result<(), TransportError> {
        let mut s = self.link.state();
        if !s.subscriptions.contains(&filter) {
            s.subscriptions.push(filter);
        }
        Ok(())
    }

    fn unsubscribe(&mut self, filter: String) -> Result<(), TransportError> {
        self.link.state().subscriptions.retain(|f| *f != filter);
        Ok(())
    }

    fn publish(
        &mut self,
        topic: String,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), TransportError> {
        self.link.publish(topic, retain, payload);
        Ok(())
    }

    async fn poll(&mut self) -> Result<Incoming, TransportError> {
        loop {
            let woken = self.link.client.notified();
            {
                let mut s = self.link.state();
                if !s.up {
                    if !s.connected {
                        return Err(TransportError::Connection("the link is down".into()));
                    }
                    s.connected = false;
                    if let Some((topic, payload)) = s.will.clone() {
                        s.to_broker.push_back(Published {
                            topic,
                            retain: true,
                            payload,
                            will: true,
                        });
                        self.link.broker.notify_one();
                    }
                    return Err(TransportError::Connection("the link was cut".into()));
                }
                if !s.connected {
                    s.connected = true;
                    s.connects += 1;
                    return Ok(Incoming::Connected {
                        session_present: s.connects > 1,
                    });
                }
                if let Some((topic, payload)) = s.to_client.pop_front() {
                    s.delivered = s.delivered.wrapping_add(1);
                    let receipt = Receipt {
                        qos: rumqttc::QoS::AtLeastOnce,
                        pkid: s.delivered,
                    };
                    return Ok(Incoming::Message {
                        topic,
                        payload: payload.into(),
                        receipt,
                    });
                }
            }
            woken.await;
        }
    }

    async fn disconnect(&mut self) {
        self.link.state().connected = false;
    }

    fn renew_tls(&mut self, _tls: rustls::ClientConfig) {}

    fn ack(&mut self, _receipt: Receipt) -> Result<(), TransportError> {
        self.link.state().acked += 1;
        Ok(())
    }

    fn publisher(&self) -> std::sync::Arc<dyn Publisher> {
        self.link.clone()
    }
}

impl MemoryBroker {
    /// Cuts the link: the open session is lost (its last will fires) and connects fail.
    pub fn cut(&self) {
        self.link.state().up = false;
        self.link.client.notify_one();
    }

    /// Lets connects succeed again.
    pub fn restore(&self) {
        self.link.state().up = true;
        self.link.client.notify_one();
    }

    /// Sends the client a message (kept until it has a session).
    pub fn deliver(&self, topic: impl Into<String>, payload: Vec<u8>) {
        self.link
            .state()
            .to_client
            .push_back((topic.into(), payload));
        self.link.client.notify_one();
    }

    /// The next message the client published, when there is one.
    pub fn try_next(&self) -> Option<Published> {
        self.link.state().to_broker.pop_front()
    }

    /// Waits for the next message the client publishes.
    pub async fn next(&self) -> Published {
        loop {
            let woken = self.link.broker.notified();
            if let Some(p) = self.try_next() {
                return p;
            }
            woken.await;
        }
    }

    /// The client has a session open.
    pub fn connected(&self) -> bool {
        self.link.state().connected
    }

    /// How many sessions the client has opened.
    pub fn connects(&self) -> u64 {
        self.link.state().connects
    }

    /// What the client subscribed to.
    pub fn subscriptions(&self) -> Vec<String> {
        self.link.state().subscriptions.clone()
    }

    /// Messages the client published while it had no session.
    pub fn lost(&self) -> u64 {
        self.link.state().lost
    }

    /// Messages the client acknowledged (with manual acknowledgement).
    pub fn acked(&self) -> u64 {
        self.link.state().acked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cut_fires_the_will_loses_what_is_published_and_keeps_what_waits_for_the_client() {
        let (mut client, broker) = link();
        client.set_last_will("gw/a/status".into(), b"offline".to_vec());
        assert_eq!(
            client.poll().await.unwrap(),
            Incoming::Connected {
                session_present: false
            }
        );
        client
            .publish("gw/a/events".into(), false, b"1".to_vec())
            .unwrap();
        assert_eq!(broker.next().await.payload, b"1");
        broker.cut();
        assert!(client.poll().await.is_err());
        let will = broker.next().await;
        assert!(will.will && will.retain);
        assert_eq!(will.payload, b"offline");
        client
            .publish("gw/a/events".into(), false, b"2".to_vec())
            .unwrap();
        broker.deliver("gw/a/ack", b"for later".to_vec());
        assert!(client.poll().await.is_err(), "connects fail while cut");
        broker.restore();
        assert_eq!(
            client.poll().await.unwrap(),
            Incoming::Connected {
                session_present: true
            }
        );
        assert_eq!(
            client.poll().await.unwrap(),
            Incoming::Message {
                topic: "gw/a/ack".into(),
                payload: bytes::Bytes::from_static(b"for later"),
                receipt: Receipt {
                    qos: rumqttc::QoS::AtLeastOnce,
                    pkid: 1
                }
            }
        );
        assert_eq!(broker.lost(), 1);
        assert_eq!(broker.try_next(), None);
        client.disconnect().await;
        assert!(!broker.connected());
        assert_eq!(broker.try_next(), None, "a clean goodbye fires no will");
    }
}
