//! A TCP fault proxy on 127.0.0.1: forwards to a target until told to cut the line, as a WAN
//! outage would (open connections are dropped, new ones are refused), and restores it on
//! demand.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::Result;

pub struct FaultProxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts forwarding from a free port to `target`.
    pub async fn start(target: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", crate::free_port())).await?;
        let addr = listener.local_addr()?;
        let up = Arc::new(AtomicBool::new(true));
        let (generation, _) = watch::channel(0u64);
        let (up2, gen2) = (up.clone(), generation.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut cut = gen2.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut c, mut s) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut c, &mut s) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Ok(Self {
            addr,
            up,
            generation,
            task,
        })
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

/// `(topic, payload)` of every PUBLISH seen, in order.
pub type Seen = Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// A man in the middle of an MQTT connection on the plain listener: forwards both ways, keeps a
/// copy of every PUBLISH the broker sends the client, and writes packets of its own to the
/// client between the broker's — what an attacker on the network path could do to a gateway
/// that is not on TLS.
pub struct MqttTap {
    pub addr: SocketAddr,
    /// `(topic, payload)` of every PUBLISH towards the client, in order.
    pub seen: Seen,
    inject: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    task: tokio::task::JoinHandle<()>,
}

/// The length of the first whole MQTT packet in `buf`, if it holds one.
fn packet_len(buf: &[u8]) -> Option<usize> {
    let mut len = 0usize;
    for (i, b) in buf.iter().skip(1).take(4).enumerate() {
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let total = 1 + i + 1 + len;
            return (buf.len() >= total).then_some(total);
        }
    }
    None
}

/// `(topic, payload)` of a PUBLISH packet.
fn publish_parts(p: &[u8]) -> Option<(String, Vec<u8>)> {
    if p.first()? >> 4 != 3 {
        return None;
    }
    let qos = (p[0] >> 1) & 3;
    let mut at = 1;
    while p.get(at)? & 0x80 != 0 {
        at += 1;
    }
    at += 1;
    let tlen = usize::from(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]));
    let topic = String::from_utf8(p.get(at + 2..at + 2 + tlen)?.to_vec()).ok()?;
    let body = at + 2 + tlen + if qos > 0 { 2 } else { 0 };
    Some((topic, p.get(body..)?.to_vec()))
}

/// A QoS 0 PUBLISH packet (no packet id: the client owes nobody an acknowledgement).
pub fn mqtt_publish(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(topic.len() + payload.len() + 2);
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(payload);
    let mut out = vec![0x30];
    let mut n = body.len();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&body);
    out
}

impl MqttTap {
    /// Listens on a free port and taps every connection made to it, towards `target`.
    pub async fn start(target: SocketAddr) -> Result<Self> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind(("127.0.0.1", crate::free_port())).await?;
        let addr = listener.local_addr()?;
        let seen: Seen = Arc::default();
        let (inject, injected) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        let injected = Arc::new(tokio::sync::Mutex::new(injected));
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                let (seen, injected) = (seen2.clone(), injected.clone());
                tokio::spawn(async move {
                    let mut injected = injected.lock().await;
                    let mut buf = Vec::new();
                    let mut chunk = vec![0u8; 64 * 1024];
                    loop {
                        tokio::select! {
                            n = sr.read(&mut chunk) => {
                                let Ok(n) = n else { return };
                                if n == 0 {
                                    return;
                                }
                                buf.extend_from_slice(&chunk[..n]);
                                while let Some(len) = packet_len(&buf) {
                                    let p: Vec<u8> = buf.drain(..len).collect();
                                    if let Some(parts) = publish_parts(&p) {
                                        if let Ok(mut s) = seen.lock() {
                                            s.push(parts);
                                        }
                                    }
                                    if cw.write_all(&p).await.is_err() {
                                        return;
                                    }
                                }
                            }
                            // Only between the broker's packets: the stream stays well framed.
                            Some(p) = injected.recv(), if buf.is_empty() => {
                                if cw.write_all(&p).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        Ok(Self {
            addr,
            seen,
            inject,
            task,
        })
    }

    /// Writes `packet` to the client, between the broker's packets.
    pub fn inject(&self, packet: Vec<u8>) {
        let _ = self.inject.send(packet);
    }

    /// The publishes seen towards the client on `topic`.
    pub fn seen_on(&self, topic: &str) -> Vec<Vec<u8>> {
        self.seen
            .lock()
            .map(|s| {
                s.iter()
                    .filter(|(t, _)| t == topic)
                    .map(|(_, p)| p.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for MqttTap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_are_framed_and_publishes_read_back() {
        let p = mqtt_publish("a/b", &[7u8; 300]);
        assert_eq!(packet_len(&p), Some(p.len()));
        assert_eq!(packet_len(&p[..p.len() - 1]), None);
        assert_eq!(publish_parts(&p), Some(("a/b".to_owned(), vec![7u8; 300])));
        // A QoS 1 publish carries a packet id after the topic.
        let mut q1 = vec![0x32, 9, 0, 3, b'a', b'/', b'b', 0, 1, b'h', b'i'];
        assert_eq!(packet_len(&q1), Some(11));
        assert_eq!(publish_parts(&q1), Some(("a/b".to_owned(), b"hi".to_vec())));
        q1[0] = 0x40;
        assert_eq!(publish_parts(&q1), None, "a PUBACK is no publish");
    }
}
